//! An orders API that uses every capability, each through a policy grant:
//!
//! - `GET /orders/{id}`: the order from SQL (`select:orders`), cached in key-value storage
//!   (`cache/*`), each view appended to `audit_log` (`insert:audit_log`), its currency from
//!   the function's configuration;
//! - `GET /orders/payments`: whether the PAYMENT_KEY secret is set (never its value);
//! - `GET /orders/rates`: exchange rates from the one outside API it may call.

use runway_sdk::{config, json_string, kv, sql};
use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};

struct Orders;

fn order(id: i64) -> Result<(u16, String, &'static str), String> {
    let cache_key = format!("cache/order/{id}");
    let cache = kv::Store::open().map_err(|e| e.to_string())?;
    if let Some(json) = cache.get_string(&cache_key).map_err(|e| e.to_string())? {
        return Ok((200, json, "hit"));
    }
    let rows = sql::query(
        "SELECT id, customer_id, total FROM orders WHERE id = ?",
        &[id.into()],
    )
    .map_err(|e| e.to_string())?;
    let Some(row) = rows.rows.first() else {
        return Ok((404, format!("{{\"error\":\"no order {id}\"}}"), "miss"));
    };
    let currency = config::get("CURRENCY")
        .map_err(|e| e.to_string())?
        .unwrap_or_else(|| "USD".into());
    let json = format!(
        "{{\"id\":{},\"customer_id\":{},\"total\":{},\"currency\":{}}}",
        row[0].to_json(),
        row[1].to_json(),
        row[2].to_json(),
        json_string(&currency)
    );
    cache.set(&cache_key, json.as_bytes()).map_err(|e| e.to_string())?;
    sql::execute(
        "INSERT INTO audit_log (msg) VALUES (?)",
        &[format!("viewed order {id}").into()],
    )
    .map_err(|e| e.to_string())?;
    Ok((200, json, "miss"))
}

fn payments() -> Result<(u16, String, &'static str), String> {
    let configured = config::get("PAYMENT_KEY").map_err(|e| e.to_string())?.is_some();
    Ok((200, format!("{{\"payment_key_configured\":{configured}}}"), "none"))
}

fn rates() -> Result<(u16, String, &'static str), String> {
    let url = config::get("RATES_URL")
        .map_err(|e| e.to_string())?
        .ok_or("RATES_URL is not configured")?;
    let rest = url.strip_prefix("https://").ok_or("RATES_URL must be https")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Https));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(if path.is_empty() { "/" } else { path }));
    let response = match outgoing_handler::handle(request, None) {
        Ok(pending) => {
            pending.subscribe().block();
            match pending.get() {
                Some(Ok(Ok(response))) => response,
                Some(Ok(Err(code))) => return Err(format!("rates unavailable: {code:?}")),
                other => return Err(format!("rates unavailable: {other:?}")),
            }
        }
        Err(code) => return Err(format!("rates unavailable: {code:?}")),
    };
    let body = response.consume().map_err(|()| "no body")?;
    let stream = body.stream().map_err(|()| "no stream")?;
    let mut bytes = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        bytes.extend(chunk);
    }
    Ok((response.status(), String::from_utf8_lossy(&bytes).into_owned(), "none"))
}

impl wasi::exports::http::incoming_handler::Guest for Orders {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split('?').next().unwrap_or("");
        let result = match path.trim_start_matches("/orders/") {
            "payments" => payments(),
            "rates" => rates(),
            id => match id.parse::<i64>() {
                Ok(id) => order(id),
                Err(_) => Ok((400, "{\"error\":\"expected /orders/{id}\"}".into(), "none")),
            },
        };
        let (status, body, cache) = result.unwrap_or_else(|err| {
            (502, format!("{{\"error\":{}}}", json_string(&err)), "none")
        });
        let headers = Fields::new();
        let _ = headers.set("content-type", &[b"application/json".to_vec()]);
        let _ = headers.set("x-cache", &[cache.as_bytes().to_vec()]);
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(status);
        let out_body = response.body().expect("body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let out = out_body.write().expect("stream is taken once");
        out.blocking_write_and_flush(body.as_bytes()).expect("write");
        drop(out);
        OutgoingBody::finish(out_body, None).expect("finish");
    }
}

wasi::http::proxy::export!(Orders);
