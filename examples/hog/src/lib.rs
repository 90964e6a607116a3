//! A hostile function that allocates without bound, touching every page. Runway refuses to
//! grow its memory past the function's memory size; the allocation fails, the function
//! aborts, and the caller gets HTTP 500 with status `out_of_memory`.

use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Hog;

impl wasi::exports::http::incoming_handler::Guest for Hog {
    fn handle(_request: IncomingRequest, _response_out: ResponseOutparam) {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let block = vec![0xA5u8; 1024 * 1024];
            hoard.push(std::hint::black_box(block));
        }
    }
}

wasi::http::proxy::export!(Hog);
