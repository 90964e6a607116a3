//! The smallest useful function: `GET /hello` answers `Hello, World!`.
//!
//! Run it: `cargo run --release -- up` from the repository root, then
//! `curl http://127.0.0.1:8080/hello`.

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[("content-type".into(), b"text/plain".to_vec())])
            .expect("valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("stream is taken once");
        out.blocking_write_and_flush(b"Hello, World!\n").expect("write");
        drop(out);
        OutgoingBody::finish(body, None).expect("finish");
    }
}

wasi::http::proxy::export!(Hello);
