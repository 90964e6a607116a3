//! A hostile function that never returns: it spins in a loop without calling the host.
//! Runway interrupts it at its timeout (HTTP 504, status `timeout`), and while it spins,
//! other functions keep answering.

use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Forever;

impl wasi::exports::http::incoming_handler::Guest for Forever {
    fn handle(_request: IncomingRequest, _response_out: ResponseOutparam) {
        let mut counter: u64 = 0;
        loop {
            counter = std::hint::black_box(counter.wrapping_add(1));
        }
    }
}

wasi::http::proxy::export!(Forever);
