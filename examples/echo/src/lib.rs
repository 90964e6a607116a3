//! Echoes the request: the body comes back unchanged, with the method and path in
//! `x-echo-method` and `x-echo-path`. It also logs one line per request to stdout, which
//! `runway logs echo` shows next to the REPORT line. A path ending in `/panic` makes it
//! trap, to show what a crashing function looks like.

use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::StreamError;

struct Echo;

impl wasi::exports::http::incoming_handler::Guest for Echo {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let method = match request.method() {
            Method::Get => "GET".to_owned(),
            Method::Head => "HEAD".to_owned(),
            Method::Post => "POST".to_owned(),
            Method::Put => "PUT".to_owned(),
            Method::Delete => "DELETE".to_owned(),
            Method::Patch => "PATCH".to_owned(),
            Method::Options => "OPTIONS".to_owned(),
            Method::Connect => "CONNECT".to_owned(),
            Method::Trace => "TRACE".to_owned(),
            Method::Other(other) => other,
        };
        let path = request.path_with_query().unwrap_or_default();
        if path.ends_with("/panic") {
            // Demonstrates a trap: the caller gets HTTP 500 and the record says `error`.
            panic!("asked to panic by {path}");
        }
        let headers = Fields::from_list(&[
            ("x-echo-method".into(), method.clone().into_bytes()),
            ("x-echo-path".into(), path.clone().into_bytes()),
        ])
        .expect("valid headers");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("stream is taken once");

        let incoming = request.consume().expect("request body is taken once");
        let input = incoming.stream().expect("stream is taken once");
        let mut total = 0usize;
        loop {
            match input.blocking_read(64 * 1024) {
                Ok(chunk) => {
                    total += chunk.len();
                    // `blocking-write-and-flush` takes at most 4096 bytes per call.
                    for piece in chunk.chunks(4096) {
                        out.blocking_write_and_flush(piece).expect("write");
                    }
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(err)) => {
                    eprintln!("reading the request body failed: {}", err.to_debug_string());
                    break;
                }
            }
        }
        drop(input);
        IncomingBody::finish(incoming);
        println!("echo: {method} {path} {total} bytes");
        drop(out);
        OutgoingBody::finish(body, None).expect("finish");
    }
}

wasi::http::proxy::export!(Echo);
