//! A background job. It "works" for `?ms=N` milliseconds (default 10), logs what started it
//! (a schedule tick, a queued job or a direct call), and answers 200 `done`; `?fail=1` makes
//! it answer 500 so retries and the dead-letter list can be watched.

use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Nightly;

fn query(path: &str, key: &str) -> Option<String> {
    let (_, query) = path.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| v.to_owned())
    })
}

fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

impl wasi::exports::http::incoming_handler::Guest for Nightly {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let ms: u64 = query(&path, "ms").and_then(|v| v.parse().ok()).unwrap_or(10);
        let fail = query(&path, "fail").is_some_and(|v| v == "1");
        let started_by = match (
            header(&request, "x-runway-scheduled-for"),
            header(&request, "x-runway-job-id"),
        ) {
            (Some(tick), _) => format!("schedule tick {tick}"),
            (None, Some(job)) => format!(
                "job {job} attempt {}",
                header(&request, "x-runway-attempt").unwrap_or_default()
            ),
            (None, None) => "a direct call".to_owned(),
        };
        println!("nightly: started by {started_by}; working {ms} ms");
        wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
        let (status, text) = if fail {
            eprintln!("nightly: failing as asked (?fail=1)");
            (500, "failed as asked\n")
        } else {
            (200, "done\n")
        };
        let response = OutgoingResponse::new(Fields::new());
        response.set_status_code(status).expect("valid status");
        let body = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("stream is taken once");
        out.blocking_write_and_flush(text.as_bytes()).expect("write");
        drop(out);
        OutgoingBody::finish(body, None).expect("finish");
    }
}

wasi::http::proxy::export!(Nightly);
