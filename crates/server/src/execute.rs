//! Invoke and record: the one path by which a function runs, shared by the gateway, the
//! admin API's `invoke` and the job worker. It admits the call (revocation, expiry, budget,
//! cluster-wide concurrency), runs it in a fresh instance, and hands the invocation record
//! to the meter off the request path.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use runway_meter::InvocationRecord;
use runway_runtime::{Outcome, ResponseBody};

use crate::Shared;
use crate::invocation;
use crate::live::LiveFunction;

/// Header carrying the invocation's request id back to the caller.
pub const REQUEST_ID_HEADER: &str = "x-runway-request-id";

/// Header naming the API key a caller presented (the key itself is removed).
pub const API_KEY_ID_HEADER: &str = "x-runway-api-key-id";

/// Runs `function` for `request`; the record also goes to `reply` when given (admin invoke).
pub(crate) async fn invoke<B>(
    shared: &Arc<Shared>,
    function: Arc<LiveFunction>,
    mut request: Request<B>,
    reply: Option<tokio::sync::oneshot::Sender<InvocationRecord>>,
) -> Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<runway_runtime::BodyError>,
{
    if !request.headers().contains_key(HOST) {
        request
            .headers_mut()
            .insert(HOST, HeaderValue::from_static("localhost"));
    }
    let slot = match invocation::admit(&function, crate::now_ms(), &shared.cluster) {
        Ok(slot) => slot,
        Err(refusal) => return refused(shared, &function, refusal),
    };
    let request_id = shared.request_ids.next();
    let header_id = HeaderValue::from_str(&request_id).expect("request ids are ASCII");
    function.note_invocation();
    let drain = shared.in_flight.token();
    let on_done = {
        let shared = shared.clone();
        let function = function.clone();
        move |outcome: Outcome| {
            let concurrency = slot.concurrency();
            drop(slot);
            let mut record = record(&shared, &function, request_id, outcome);
            record.concurrency = concurrency;
            if let Some(reply) = reply {
                _ = reply.send(record.clone());
            }
            shared.meter.record(record);
            drop(drain);
        }
    };
    let result = shared
        .runtime
        .invoke(
            function.prepared.clone(),
            function.limits.clone(),
            request,
            on_done,
        )
        .await;
    let mut response = match result {
        Ok(response) => response,
        Err(failed) => {
            let status = StatusCode::from_u16(failed.http_status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            plain(
                status,
                format!(
                    "function {} failed: {} (see `runway logs {}`)\n",
                    function.name(),
                    failed.status.as_str(),
                    function.name()
                ),
            )
        }
    };
    response.headers_mut().insert(REQUEST_ID_HEADER, header_id);
    response
}

/// Answers a refused caller: the function never ran, so nothing is metered.
pub(crate) fn refused(
    shared: &Shared,
    function: &LiveFunction,
    refusal: invocation::Refusal,
) -> Response<ResponseBody> {
    shared
        .metrics
        .gateway_refused
        .with_label_values(&[
            function.name(),
            &function.release.environment,
            refusal.reason,
        ])
        .inc();
    let mut response = plain(refusal.status, refusal.message);
    let headers = response.headers_mut();
    if let Some(seconds) = refusal.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    if refusal.status == StatusCode::UNAUTHORIZED {
        headers.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"runway\", error=\"invalid_token\""),
        );
    }
    response
}

fn record(
    shared: &Shared,
    function: &LiveFunction,
    request_id: String,
    outcome: Outcome,
) -> InvocationRecord {
    let charge = shared.pricing.charge(function.memory_mb, outcome.duration);
    let mut error = outcome.error;
    if outcome.output_dropped > 0 {
        let note = format!(
            "{} bytes of output past the capture limit were dropped",
            outcome.output_dropped
        );
        error = Some(match error {
            Some(error) => format!("{error}; {note}"),
            None => note,
        });
    }
    InvocationRecord {
        request_id,
        environment: function.release.environment.clone(),
        function: function.name().to_owned(),
        release: function.release.number,
        started_at_ms: outcome
            .started_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        duration_us: outcome.duration.as_micros() as u64,
        billed_ms: charge.billed_ms,
        memory_mb: function.memory_mb,
        max_memory_bytes: outcome.max_memory_bytes,
        instantiate_us: outcome.instantiate.as_micros() as u64,
        status: outcome.status,
        http_status: outcome.http_status,
        gb_seconds: charge.gb_seconds,
        cost: charge.cost,
        stdout: outcome.stdout,
        stderr: outcome.stderr,
        error,
        cpu_throttled_us: outcome.cpu_throttled.as_micros() as u64,
        concurrency: 1,
    }
}

pub(crate) fn plain(status: StatusCode, text: String) -> Response<ResponseBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
