//! Streams a large response: `GET /stream?mib=N` sends N MiB (default 100) in 64 KiB
//! chunks, written as the client reads them. Neither the function nor the node holds the
//! whole body in memory.

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Stream;

const CHUNK: usize = 64 * 1024;

fn requested_mib(path: &str) -> usize {
    path.split_once('?')
        .into_iter()
        .flat_map(|(_, query)| query.split('&'))
        .find_map(|pair| pair.strip_prefix("mib="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(100)
}

impl wasi::exports::http::incoming_handler::Guest for Stream {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let mib = requested_mib(&request.path_with_query().unwrap_or_default());
        let length = (mib * 1024 * 1024).to_string();
        let headers = Fields::from_list(&[
            ("content-type".into(), b"application/octet-stream".to_vec()),
            ("content-length".into(), length.into_bytes()),
        ])
        .expect("valid headers");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("stream is taken once");
        let chunk = vec![b'r'; CHUNK];
        for _ in 0..mib * (1024 * 1024 / CHUNK) {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let permitted = out.check_write().expect("client went away") as usize;
                if permitted == 0 {
                    out.subscribe().block();
                    continue;
                }
                let n = permitted.min(rest.len());
                out.write(&rest[..n]).expect("write");
                rest = &rest[n..];
            }
        }
        out.blocking_flush().expect("flush");
        drop(out);
        OutgoingBody::finish(body, None).expect("finish");
    }
}

wasi::http::proxy::export!(Stream);
