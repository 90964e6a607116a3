//! Attempts one operation per request and reports what the platform answered, as JSON
//! `{"outcome": "ok" | "denied" | "invalid" | "failed" | "error", "detail": ...}`.
//!
//! | path                   | query                       | does                                   |
//! |------------------------|-----------------------------|----------------------------------------|
//! | `/escalate/sql`        | `q=SQL`                     | `sql::query`                           |
//! | `/escalate/sql-exec`   | `q=SQL`                     | `sql::execute`                         |
//! | `/escalate/kv-get`     | `key=K`                     | key-value get                          |
//! | `/escalate/kv-set`     | `key=K&value=V`             | key-value set                          |
//! | `/escalate/kv-delete`  | `key=K`                     | key-value delete                       |
//! | `/escalate/kv-incr`    | `key=K`                     | key-value increment by 1               |
//! | `/escalate/kv-keys`    |                             | list the keys it may read              |
//! | `/escalate/config`     | `key=K&print=1`             | `wasi:config` get (optionally printed) |
//! | `/escalate/config-all` |                             | `wasi:config` get-all (names only)     |
//! | `/escalate/fetch`      | `url=U`                     | outbound GET, following redirects      |
//! | `/escalate/headers`    |                             | the names of the request's headers     |

use runway_sdk::{config, json_string, kv, sql};
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

struct Escalate;

fn outcome(kind: &str, detail: &str) -> String {
    format!("{{\"outcome\":\"{kind}\",\"detail\":{}}}", json_string(detail))
}

fn ok_json(detail_json: &str) -> String {
    format!("{{\"outcome\":\"ok\",\"detail\":{detail_json}}}")
}

fn sql_error(err: sql::Error) -> String {
    match err {
        sql::Error::Denied(m) => outcome("denied", &m),
        sql::Error::Invalid(m) => outcome("invalid", &m),
        sql::Error::Failed(m) => outcome("failed", &m),
    }
}

fn kv_error(err: kv::Error) -> String {
    match err {
        kv::Error::AccessDenied => outcome("denied", "access-denied"),
        other => outcome("failed", &other.to_string()),
    }
}

fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| decode(v))
    })
}

fn with_store(run: impl FnOnce(&kv::Store) -> Result<String, kv::Error>) -> String {
    match kv::Store::open().and_then(|store| run(&store)) {
        Ok(json) => ok_json(&json),
        Err(err) => kv_error(err),
    }
}

/// GET `url`, following up to five redirects; every hop is a new outbound request, which
/// the platform checks again.
fn fetch(url: &str) -> String {
    let mut url = url.to_owned();
    for _ in 0..5 {
        let Some((scheme, rest)) = url.split_once("://") else {
            return outcome("invalid", &format!("not an absolute URL: {url}"));
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let request = OutgoingRequest::new(Fields::new());
        let _ = request.set_method(&Method::Get);
        let _ = request.set_scheme(Some(&match scheme {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            other => Scheme::Other(other.to_owned()),
        }));
        let _ = request.set_authority(Some(authority));
        let _ = request.set_path_with_query(Some(path));
        let response = match outgoing_handler::handle(request, None) {
            Ok(pending) => {
                pending.subscribe().block();
                match pending.get() {
                    Some(Ok(Ok(response))) => response,
                    Some(Ok(Err(code))) => return refused(code),
                    other => return outcome("error", &format!("{other:?}")),
                }
            }
            Err(code) => return refused(code),
        };
        let status = response.status();
        if (300..400).contains(&status) {
            let location = response
                .headers()
                .get("location")
                .first()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            match location {
                Some(next) => {
                    url = next;
                    continue;
                }
                None => return outcome("error", "redirect without a location"),
            }
        }
        let body = response.consume().expect("body is consumed once");
        let stream = body.stream().expect("stream is taken once");
        let mut bytes = Vec::new();
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            bytes.extend(chunk);
        }
        let text = String::from_utf8_lossy(&bytes);
        return ok_json(&format!(
            "{{\"status\":{status},\"body\":{}}}",
            json_string(&text)
        ));
    }
    outcome("error", "too many redirects")
}

fn refused(code: ErrorCode) -> String {
    match code {
        ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => {
            outcome("denied", &format!("{code:?}"))
        }
        other => outcome("error", &format!("{other:?}")),
    }
}

fn run(path: &str, query: &str) -> String {
    let q = |name: &str| param(query, name).unwrap_or_default();
    match path {
        "/escalate/sql" => match sql::query(&q("q"), &[]) {
            Ok(rows) => ok_json(&rows.to_json()),
            Err(err) => sql_error(err),
        },
        "/escalate/sql-exec" => match sql::execute(&q("q"), &[]) {
            Ok(changed) => ok_json(&changed.to_string()),
            Err(err) => sql_error(err),
        },
        "/escalate/kv-get" => with_store(|s| {
            Ok(match s.get_string(&q("key"))? {
                Some(value) => json_string(&value),
                None => "null".into(),
            })
        }),
        "/escalate/kv-set" => with_store(|s| s.set(&q("key"), q("value").as_bytes()).map(|()| "true".into())),
        "/escalate/kv-delete" => with_store(|s| s.delete(&q("key")).map(|()| "true".into())),
        "/escalate/kv-incr" => with_store(|s| s.increment(&q("key"), 1).map(|n| n.to_string())),
        "/escalate/kv-keys" => with_store(|s| {
            let keys: Vec<String> = s.keys()?.iter().map(|k| json_string(k)).collect();
            Ok(format!("[{}]", keys.join(",")))
        }),
        "/escalate/config" => match config::get(&q("key")) {
            Ok(Some(value)) => {
                if q("print") == "1" {
                    // Printed on purpose: the platform redacts granted secrets from logs.
                    println!("the value is {value}");
                }
                ok_json(&format!("{{\"set\":true,\"length\":{}}}", value.len()))
            }
            Ok(None) => ok_json("{\"set\":false}"),
            Err(config::Error::Upstream(m)) => outcome("denied", &m),
            Err(err) => outcome("failed", &err.to_string()),
        },
        "/escalate/config-all" => match config::all() {
            Ok(pairs) => {
                let names: Vec<String> = pairs.iter().map(|(k, _)| json_string(k)).collect();
                ok_json(&format!("[{}]", names.join(",")))
            }
            Err(err) => outcome("failed", &err.to_string()),
        },
        "/escalate/fetch" => fetch(&q("url")),
        other => outcome("invalid", &format!("unknown path {other}")),
    }
}

impl wasi::exports::http::incoming_handler::Guest for Escalate {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let (path, query) = path_with_query
            .split_once('?')
            .unwrap_or((path_with_query.as_str(), ""));
        let text = if path == "/escalate/headers" {
            // What reached the function: the names of the request's headers.
            let names: Vec<String> = request
                .headers()
                .entries()
                .iter()
                .map(|(name, _)| json_string(name))
                .collect();
            ok_json(&format!("[{}]", names.join(",")))
        } else {
            run(path, query)
        };
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

wasi::http::proxy::export!(Escalate);
