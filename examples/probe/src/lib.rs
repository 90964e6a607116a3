//! Shows what a function can reach from inside its sandbox. `GET /probe` answers one line
//! per check: its environment variables (only those configured in runway.toml), the host
//! filesystem (none), a TCP connection (refused), and outbound HTTP (denied).

use std::fmt::Write as _;

use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam, Scheme};

struct Probe;

fn report() -> String {
    let mut out = String::new();
    let mut vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    vars.sort();
    let _ = writeln!(out, "env: {}", vars.join(","));
    let fs = match std::fs::read_dir("/") {
        Ok(entries) => format!("visible ({} entries)", entries.count()),
        Err(err) => format!("denied ({err})"),
    };
    let _ = writeln!(out, "fs: {fs}");
    let tcp = match std::net::TcpStream::connect("127.0.0.1:22") {
        Ok(_) => "connected".to_owned(),
        Err(err) => format!("denied ({err})"),
    };
    let _ = writeln!(out, "tcp: {tcp}");
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some("127.0.0.1:9"));
    let _ = request.set_path_with_query(Some("/"));
    let http = match outgoing_handler::handle(request, None) {
        Ok(pending) => {
            pending.subscribe().block();
            match pending.get() {
                Some(Ok(Ok(_))) => "allowed".to_owned(),
                Some(Ok(Err(code))) => format!("denied ({code:?})"),
                other => format!("failed ({other:?})"),
            }
        }
        Err(code) => format!("denied ({code:?})"),
    };
    let _ = writeln!(out, "http: {http}");
    out
}

impl wasi::exports::http::incoming_handler::Guest for Probe {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let text = report();
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("stream is taken once");
        out.blocking_write_and_flush(text.as_bytes()).expect("write");
        drop(out);
        OutgoingBody::finish(body, None).expect("finish");
    }
}

wasi::http::proxy::export!(Probe);
