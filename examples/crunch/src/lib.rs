//! A CPU-bound function: `GET /crunch?n=N` counts the primes below N by trial division
//! (default 20,000) and answers `{"n":N,"primes":P}`. With CPU following memory it runs
//! faster the more memory it is given, which `runway tune` measures.

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Crunch;

/// The primes below `n`, counted the slow way on purpose: pure computation, no memory.
fn primes_below(n: u64) -> u64 {
    (2..n)
        .filter(|&candidate| (2..).take_while(|d| d * d <= candidate).all(|d| candidate % d != 0))
        .count() as u64
}

fn param(query: &str, name: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

impl wasi::exports::http::incoming_handler::Guest for Crunch {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let query = path.split_once('?').map_or("", |(_, q)| q);
        let n = param(query, "n").unwrap_or(20_000).min(50_000_000);
        let text = format!("{{\"n\":{n},\"primes\":{}}}\n", primes_below(n));
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"application/json".to_vec()]);
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("stream is taken once");
        out.blocking_write_and_flush(text.as_bytes()).expect("write");
        drop(out);
        OutgoingBody::finish(body, None).expect("finish");
    }
}

wasi::http::proxy::export!(Crunch);
