//! The public HTTP gateway: route → fresh instance → streamed response → meter.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{AUTHORIZATION, CONTENT_LENGTH, HOST, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use runway_manifest::InvocationAuth;
use runway_manifest::non_canonical_path as non_canonical;
use runway_runtime::ResponseBody;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::headers::{Credentials, is_removed, strip_caller_headers};
use crate::invocation;
use crate::live::{LiveFunction, RouteMatch};

pub use crate::execute::{API_KEY_ID_HEADER, REQUEST_ID_HEADER};
use crate::execute::{invoke, plain, refused};

/// Serves the gateway until `stop` is cancelled, then waits for open connections to finish
/// their requests.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: crate::listener::ConnectionLimits,
    stop: CancellationToken,
) {
    let metrics = shared.metrics.clone();
    crate::listener::serve(listener, "gateway", limits, metrics, stop, move |_peer| {
        let shared = shared.clone();
        hyper::service::service_fn(move |request| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(handle(&shared, request).await) }
        })
    })
    .await;
}

async fn handle(shared: &Arc<Shared>, mut request: Request<Incoming>) -> Response<ResponseBody> {
    if let Some(problem) = non_canonical(request.uri().path()) {
        // Routes (and their auth) match the path as sent; a guest router that normalises
        // `//admin` or `/%61dmin` to `/admin` must never see a path the gateway read otherwise.
        return plain(
            StatusCode::BAD_REQUEST,
            format!("the request path is not canonical ({problem}); send it normalised\n"),
        );
    }
    strip_caller_headers(request.headers_mut(), Credentials::Keep);
    let host = match request.headers().get(HOST).map(HeaderValue::to_str) {
        Some(Ok(host)) => Some(host),
        // The caller's mistake, answered before any function runs (wasi:http could not
        // hand such a host to a guest anyway).
        Some(Err(_)) => {
            return plain(
                StatusCode::BAD_REQUEST,
                "the Host header is not visible ASCII; send the host name as RFC 9110 \
                 requires\n"
                    .into(),
            );
        }
        None => request.uri().host(),
    };
    let environments = shared.environments.load();
    let env = match environments.for_host(host, &shared.env_domains) {
        crate::environments::HostMatch::Found(env) => env.clone(),
        crate::environments::HostMatch::Unknown(label) => {
            let (status, text) = crate::environments::unknown_host_answer(label);
            return plain(status, text);
        }
    };
    drop(environments);
    let routes = env.routes.load();
    let (function, auth) = match routes.lookup(request.method().as_str(), request.uri().path()) {
        RouteMatch::Found(function, auth) => (function.clone(), auth),
        RouteMatch::WrongMethod(allowed) => {
            let allow = allowed.join(", ");
            let mut response = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "method {} is not allowed here; allowed: {allow}\n",
                    request.method()
                ),
            );
            if let Ok(value) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(http::header::ALLOW, value);
            }
            return response;
        }
        RouteMatch::NotFound => {
            return plain(
                StatusCode::NOT_FOUND,
                format!("no function is routed at {}\n", request.uri().path()),
            );
        }
    };
    drop(routes);
    if auth != InvocationAuth::Public {
        let authorization = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let keys = env.api_keys.load();
        match invocation::check_caller(auth, &function, &keys, authorization, crate::now_ms()) {
            Err(refusal) => return refused(shared, &function, refusal),
            Ok(invocation::Admitted::ApiKey(id)) => {
                // The key is the platform's credential, not the function's: it gets the id.
                let headers = request.headers_mut();
                headers.remove(AUTHORIZATION);
                if let Ok(id) = HeaderValue::from_str(&id) {
                    headers.insert(API_KEY_ID_HEADER, id);
                }
            }
            Ok(invocation::Admitted::Jwt) => {}
        }
    }
    if function.release.config.queue.is_some() && prefers_async(request.headers()) {
        if let Err(refusal) = invocation::check_revoked(&function)
            .and_then(|()| invocation::check_expiry(&function, crate::now_ms()))
        {
            return refused(shared, &function, refusal);
        }
        return enqueue_request(shared, &function, request).await;
    }
    let limit = shared.max_request_body;
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return body_too_large(limit);
    }
    let (parts, body) = request.into_parts();
    if declared.is_none() && !http_body::Body::is_end_stream(&body) {
        // A body without a declared length (chunked) is read before the function starts,
        // within the function's timeout, so one past the limit is refused as the caller's
        // mistake (413, counted, never billed) instead of failing inside the function.
        let deadline = function.limits.timeout;
        let read = tokio::time::timeout(deadline, Limited::new(body, limit as usize).collect());
        let bytes = match read.await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
                return refused(
                    shared,
                    &function,
                    invocation::Refusal::caller(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        format!("request body is larger than this node's limit of {limit} bytes\n"),
                    ),
                );
            }
            Ok(Err(err)) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body failed: {err}\n"),
                );
            }
            Err(_) => {
                return refused(
                    shared,
                    &function,
                    invocation::Refusal::caller(
                        StatusCode::REQUEST_TIMEOUT,
                        "body_timeout",
                        format!(
                            "the request body did not arrive within the function's timeout of \
                             {deadline:?}\n"
                        ),
                    ),
                );
            }
        };
        let body =
            Full::new(bytes).map_err(|never| -> runway_runtime::BodyError { match never {} });
        return invoke(shared, function, Request::from_parts(parts, body), None).await;
    }
    let request = Request::from_parts(parts, body).map(|body| {
        Limited::new(body, limit as usize).map_err(move |err| {
            if err.downcast_ref::<LengthLimitError>().is_some() {
                runway_runtime::BodyError::HttpRequestBodySize(Some(limit))
            } else {
                match err.downcast::<hyper::Error>() {
                    Ok(hyper) => runway_runtime::BodyError::from(*hyper),
                    Err(_) => runway_runtime::BodyError::HttpRequestBodySize(Some(limit)),
                }
            }
        })
    });
    invoke(shared, function, request, None).await
}

fn body_too_large(limit: u64) -> Response<ResponseBody> {
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than this node's limit of {limit} bytes\n"),
    )
}

/// Whether the caller asked for `Prefer: respond-async` (RFC 7240). Honoured only by
/// functions with a queue trigger; others answer synchronously, as the RFC allows.
fn prefers_async(headers: &http::HeaderMap) -> bool {
    headers.get_all("prefer").iter().any(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
        })
    })
}

/// Largest body a job accepted through the gateway may carry (Lambda's asynchronous limit).
pub const ASYNC_BODY_LIMIT: usize = 256 << 10;

/// `Prefer: respond-async` on a route of a function with a queue trigger: the request is
/// stored as a job and answered 202 with its id; the function runs from the queue.
pub(crate) async fn enqueue_request(
    shared: &Arc<Shared>,
    function: &LiveFunction,
    request: http::Request<hyper::body::Incoming>,
) -> http::Response<runway_runtime::ResponseBody> {
    use crate::execute::plain;
    let (parts, body) = request.into_parts();
    let body = match http_body_util::Limited::new(body, ASYNC_BODY_LIMIT)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(err) => {
            let too_large = err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_large {
                plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "an asynchronous request body may be at most {ASYNC_BODY_LIMIT} bytes\n"
                    ),
                )
            } else {
                plain(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body failed: {err}\n"),
                )
            };
        }
    };
    // Credentials are not stored with the job: the caller was checked at the door, and a
    // bearer token at rest in the queue would outlive its purpose.
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| {
            !is_removed(name.as_str(), Credentials::Strip)
                || *name == crate::execute::API_KEY_ID_HEADER
        })
        .filter(|(name, _)| *name != "prefer")
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let job = crate::services::jobs::new_job(
        function,
        runway_store::JobSource::Queue,
        runway_store::JobRequest {
            method: parts.method.to_string(),
            path,
            headers,
            body: body.to_vec(),
        },
        None,
        crate::now_ms(),
    );
    let id = job.id.clone();
    let store = shared.store.clone();
    match tokio::task::spawn_blocking(move || store.enqueue_job(&job)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::error!(error = %err, "storing an asynchronous request failed");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the request could not be queued; try again\n".into(),
            );
        }
        Err(err) => {
            tracing::error!(error = %err, "the enqueue task failed");
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the request could not be queued; try again\n".into(),
            );
        }
    }
    shared.job_ready.notify_one();
    let mut response = plain(
        StatusCode::ACCEPTED,
        format!("{{\"id\":\"{id}\",\"state\":\"pending\"}}\n"),
    );
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "preference-applied",
        HeaderValue::from_static("respond-async"),
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert("x-runway-job-id", value);
    }
    response
}
