//! The admin API: JSON under `/v1`, Prometheus text at `/metrics`. Handlers parse a request,
//! call a service (`crate::services`) and shape the answer; `error` maps every service's
//! error to a status and a stable code in one place. This module holds the router and the
//! handlers of functions (deploy, rollback, invoke, logs, cost); the others are by concern.
//! Nothing outside `api` imports it, but the node's start (`serve`, the bootstrap token).

pub(crate) mod access;
pub(crate) mod artifacts;
pub(crate) mod auth;
pub(crate) mod backup;
pub(crate) mod budgets;
pub(crate) mod environments;
pub(crate) mod error;
pub(crate) mod extract;
pub(crate) mod health;
pub(crate) mod jobs;
pub(crate) mod openapi;
pub(crate) mod policy;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::response::IntoResponse;
use axum::{Json, Router};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use runway_manifest::{ByteSize, HumanDuration};
use runway_meter::{InvocationRecord, PicoUsd};
use runway_policy::{Policy, PolicyMode, VettingReport};
use runway_store::{CostDimension, CostRow, Digest, LogEntry, Usage};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::api::auth::{AuditNote, Caller, Guarded, noted};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{Path, Query};
use crate::environments::Environment;
use crate::live::LiveFunction;
use crate::services::releases::{
    self, DeployRequest, DeployResponse, PromoteResponse, Provenance, RollbackResponse,
};
use runway_access::Role;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A function as `runway ls` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FunctionInfo {
    /// Name.
    pub name: String,
    /// Environment.
    pub environment: String,
    /// Release it serves.
    pub release: u32,
    /// Artifact digest of that release.
    pub digest: Digest,
    /// Memory size.
    pub memory: ByteSize,
    /// Timeout.
    pub timeout: HumanDuration,
    /// HTTP routes, with methods when restricted (`GET /hello`) and auth (`[jwt]`).
    pub routes: Vec<String>,
    /// Invocations recorded, all time.
    pub invocations: u64,
    /// Of which did not end `ok`.
    pub failures: u64,
    /// GB-seconds billed, all time.
    pub gb_seconds: f64,
    /// Cost, all time.
    pub cost: PicoUsd,
    /// `expires` as written in the manifest.
    #[serde(default)]
    pub expires: Option<String>,
    /// When it stops serving, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    /// Past its expiry: answers 410 Gone.
    #[serde(default)]
    pub retired: bool,
    /// Cron schedules (`0 3 * * * Europe/Paris`).
    #[serde(default)]
    pub schedules: Vec<String>,
    /// Accepts asynchronous invocations.
    #[serde(default)]
    pub queue: bool,
    /// Invocations allowed at once.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Its share of one core (1 = a full core: `cpu = "unthrottled"`, or memory at or past
    /// the node's full-core size).
    #[serde(default = "full_core")]
    pub cpu_share: f64,
    /// Its artifact was revoked: it answers 503.
    #[serde(default)]
    pub revoked: bool,
}

/// A release as `runway releases` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReleaseInfo {
    /// Release number.
    pub number: u32,
    /// Artifact digest.
    pub digest: Digest,
    /// Memory size.
    pub memory: ByteSize,
    /// Timeout.
    pub timeout: HumanDuration,
    /// HTTP routes.
    pub routes: Vec<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Whether the function serves this release now.
    pub current: bool,
    /// The release's policy.
    pub policy: Policy,
    /// Enforce or audit.
    pub policy_mode: PolicyMode,
    /// The deploy-time vetting report (releases made before vetting existed have none).
    pub vetting: Option<VettingReport>,
    /// Its artifact was revoked (`runway revoke`): it can never serve again.
    #[serde(default)]
    pub revoked: bool,
    /// Who made it (a token id).
    #[serde(default)]
    pub deployed_by: Option<String>,
    /// Where it came from when not a plain deploy (`promoted from staging release 3`).
    #[serde(default)]
    pub origin: Option<String>,
}

/// A request sent through `runway invoke`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvokeRequest {
    /// HTTP method; default GET, or POST when a body is given.
    #[serde(default)]
    pub method: Option<String>,
    /// Path and query; default the function's first route.
    #[serde(default)]
    pub path: Option<String>,
    /// Request body as text.
    #[serde(default)]
    pub body: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The function's response and its invocation record.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvokeResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body as text (lossy UTF-8), at most [`INVOKE_BODY_LIMIT`] bytes.
    pub body: String,
    /// Whether the body was cut at the limit.
    pub body_truncated: bool,
    /// The invocation record.
    pub record: InvocationRecord,
    /// The REPORT line.
    pub report: String,
}

/// Largest response body `runway invoke` returns.
pub const INVOKE_BODY_LIMIT: usize = 1 << 20;

/// A page of log lines.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogsResponse {
    /// Lines, oldest first.
    pub entries: Vec<LogEntry>,
    /// Pass as `after` to get the lines that follow.
    pub next_after: i64,
}

/// Usage per function since a point in time.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CostResponse {
    /// Start of the period, milliseconds since the Unix epoch.
    pub since_ms: i64,
    /// Per function.
    pub functions: Vec<Usage>,
    /// All functions together.
    pub total: Usage,
}

/// Serves the admin API until `stop` is cancelled. Each request carries its client's
/// address (`ConnectInfo`), which refusals are rate-limited by.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    limits: crate::listener::ConnectionLimits,
    stop: tokio_util::sync::CancellationToken,
) {
    let router = router(shared.clone());
    let metrics = shared.metrics.clone();
    crate::listener::serve(listener, "admin", limits, metrics, stop, move |peer| {
        let router = router.clone();
        hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            // A Router is always ready; each call gets its own cheap clone.
            tower_service::Service::call(&mut router.clone(), request.map(axum::body::Body::new))
        })
    })
    .await;
}

/// A group of admin routes with their documentation.
pub(crate) type ApiRouter = OpenApiRouter<Arc<Shared>>;

/// Every admin route with its documentation: the one table the node serves and the OpenAPI
/// document is generated from. `guard` puts the role check in front of a group (the document
/// only needs the role, so `openapi::document` passes the routes through).
pub(crate) fn api(guard: impl Fn(Role, ApiRouter) -> ApiRouter) -> ApiRouter {
    let viewer = OpenApiRouter::new()
        .routes(routes!(list_functions))
        .routes(routes!(show_function))
        .routes(routes!(list_releases))
        .routes(routes!(read_logs))
        .routes(routes!(policy::suggest_policy))
        .routes(routes!(cost))
        .routes(routes!(cost_breakdown))
        .routes(routes!(policy::read_audit))
        .routes(routes!(access::control_audit))
        .routes(routes!(policy::list_secrets))
        .routes(routes!(access::list_keys))
        .routes(routes!(artifacts::list_revoked))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::show))
        .routes(routes!(environments::list))
        .routes(routes!(budgets::list))
        .routes(routes!(budgets::capacity))
        .routes(routes!(health::nodes))
        .routes(routes!(metrics));
    let (schemas, paths, artifact) = routes!(upload_artifact, artifact_exists);
    // The handler enforces the node's limit itself, with a message that says so.
    let artifact = (schemas, paths, artifact.layer(DefaultBodyLimit::disable()));
    let deployer = OpenApiRouter::new()
        .routes(artifact)
        .routes(routes!(artifacts::put_signature))
        .routes(routes!(artifacts::revoke))
        .routes(routes!(deploy_functions))
        .routes(routes!(invoke_function))
        .routes(routes!(jobs::enqueue))
        .routes(routes!(access::extend))
        .routes(routes!(rollback_function))
        .routes(routes!(policy::set_secret))
        .routes(routes!(policy::sql_apply))
        .routes(routes!(policy::sql_query))
        .routes(routes!(access::create_key))
        .routes(routes!(access::revoke_key))
        .routes(routes!(jobs::retry))
        .routes(routes!(promote_function))
        .routes(routes!(configure_function))
        .routes(routes!(environments::create))
        .routes(routes!(budgets::set))
        .routes(routes!(budgets::remove))
        .routes(routes!(environments::remove));
    let admin = OpenApiRouter::new()
        .routes(routes!(access::list_tokens, access::create_token))
        .routes(routes!(access::revoke_token))
        .routes(routes!(backup::backup));
    let guarded =
        |role: Role, routes: ApiRouter| guard(role, crate::api::openapi::requires(role, routes));
    OpenApiRouter::with_openapi(crate::api::openapi::base())
        .routes(routes!(health))
        .routes(routes!(health::livez))
        .routes(routes!(health::readyz))
        .routes(routes!(crate::api::openapi::serve))
        .merge(guarded(Role::Viewer, viewer))
        .merge(guarded(Role::Deployer, deployer))
        .merge(guarded(Role::Admin, admin))
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let (router, _document) = api(|role, routes| {
        routes.route_layer(axum::middleware::from_fn_with_state(
            Guarded {
                shared: shared.clone(),
                role,
            },
            crate::api::auth::require,
        ))
    })
    .split_for_parts();
    router
        .fallback(no_such_endpoint)
        // After every route: it applies to the routes registered so far.
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(shared)
}

async fn no_such_endpoint() -> ApiError {
    ApiError::not_found(
        "no_such_endpoint",
        "no such admin API endpoint; see docs/API.md or GET /v1/openapi.json".into(),
    )
}

async fn method_not_allowed(method: http::Method, uri: http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: format!(
            "{} does not take {method}; the Allow header lists the methods it takes",
            uri.path()
        ),
    }
}

/// The node answers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// Whether the node is up (no token needed).
#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "node",
    responses((status = 200, description = "The node is up.", body = Health)),
)]
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

fn parse_digest(text: String) -> Result<Digest, ApiError> {
    Digest::try_from(text).map_err(|message| ApiError::bad_request("invalid_digest", message))
}

/// Whether an artifact is stored.
#[utoipa::path(
    head,
    path = "/v1/artifacts/{digest}",
    tag = "artifacts",
    params(("digest" = Digest, Path, description = "The artifact's SHA-256, hex.")),
    responses(
        (status = 200, description = "Stored."),
        (status = 404, description = "Not stored."),
        (status = 400, description = "`invalid_digest`: not 64 hex digits.", body = ErrorBody),
    ),
)]
async fn artifact_exists(
    State(shared): State<Arc<Shared>>,
    Path(digest): Path<String>,
) -> Result<StatusCode, ApiError> {
    let digest = parse_digest(digest)?;
    let found = blocking(move || Ok(shared.store.artifact_intact(&digest)?)).await?;
    Ok(if found {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    })
}

/// Uploads a component: checked, compiled and linked before it is stored.
#[utoipa::path(
    put,
    path = "/v1/artifacts/{digest}",
    tag = "artifacts",
    params(("digest" = Digest, Path, description = "The component's SHA-256, hex.")),
    request_body(
        content = String,
        content_type = "application/octet-stream",
        description = "The component's bytes.",
    ),
    responses(
        (status = 201, description = "Stored now.", body = Uploaded),
        (status = 200, description = "Already stored.", body = Uploaded),
        (status = 400, description = "`invalid_digest`, `digest_mismatch` (the bytes hash to another digest), `upload_failed`.", body = ErrorBody),
        (status = 413, description = "`artifact_too_large`: over the node's `--max-artifact-size`.", body = ErrorBody),
        (status = 422, description = "`invalid_artifact`: not a component this node can run; the message says why.", body = ErrorBody),
    ),
)]
async fn upload_artifact(
    State(shared): State<Arc<Shared>>,
    Path(digest): Path<String>,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<Uploaded>), ApiError> {
    let digest = parse_digest(digest)?;
    let limit = shared.runtime.config().max_artifact_bytes;
    let too_large = || ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "artifact_too_large",
        message: format!(
            "the component is over this node's limit of {limit} bytes (raise it with `--max-artifact-size`)"
        ),
    };
    // A declared length over the limit is refused before a byte of the body is read.
    if http_body::Body::size_hint(&body).lower() > limit {
        return Err(too_large());
    }
    let body = http_body_util::Limited::new(body, limit as usize)
        .collect()
        .await
        .map_err(|err| {
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large()
            } else {
                ApiError::bad_request(
                    "upload_failed",
                    format!("reading the uploaded component failed: {err}"),
                )
            }
        })?
        .to_bytes();
    let created = releases::upload(shared, digest.clone(), body).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(Uploaded { digest, created })))
}

/// What an upload did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Uploaded {
    /// The artifact.
    pub digest: Digest,
    /// Stored now (false: it was already stored).
    pub created: bool,
}

/// Deploys functions: every one listed switches together, or none does.
#[utoipa::path(
    post,
    path = "/v1/deploy",
    tag = "functions",
    request_body = DeployRequest,
    responses(
        (status = 200, description = "The releases now served.", body = DeployResponse),
        (status = 400, description = "`artifact_missing`: upload the artifact first.", body = ErrorBody),
        (status = 409, description = "`release_changed`: another deploy changed the function meanwhile.", body = ErrorBody),
        (status = 422, description = "`invalid_configuration`, `vetting_failed`, `empty_deploy`, `invalid_artifact`.", body = ErrorBody),
    ),
)]
async fn deploy_functions(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Extension(caller): Extension<Caller>,
    request: Result<Json<DeployRequest>, JsonRejection>,
) -> Result<axum::response::Response, ApiError> {
    let request = json_body(request, "deploy")?;
    let response =
        releases::deploy_over(shared, &env, request, None, Provenance::by(&caller.id)).await?;
    let target = response
        .functions
        .iter()
        .map(|r| r.release.config.name.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let detail = response
        .functions
        .iter()
        .map(|r| {
            format!(
                "{}@{} {}{}",
                r.release.config.name,
                r.release.number,
                r.release.digest.short(),
                if r.created { " (new)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    Ok(noted(Json(response), AuditNote::new(target, detail)))
}

/// `POST /v1/functions/{name}/rollback`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The release to serve; default the newest one older than the current.
    #[serde(default)]
    pub to: Option<u32>,
}

/// Serves an earlier release again, switched atomically; no release is created.
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/rollback",
    tag = "functions",
    params(("name" = String, Path, description = "The function.", example = "hello")),
    request_body = RollbackRequest,
    responses(
        (status = 200, description = "What it serves now.", body = RollbackResponse),
        (status = 404, description = "`no_such_function`, `no_such_release`.", body = ErrorBody),
        (status = 409, description = "`already_serving`: that release is the current one.", body = ErrorBody),
        (status = 422, description = "`no_earlier_release`, `invalid_configuration` (its routes conflict with functions deployed since, or it expired).", body = ErrorBody),
    ),
)]
async fn rollback_function(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Path(name): Path<String>,
    request: Result<Json<RollbackRequest>, JsonRejection>,
) -> Result<axum::response::Response, ApiError> {
    let request = json_body(request, "rollback")?;
    let response = releases::rollback(shared, &env, name.clone(), request.to).await?;
    let detail = format!(
        "release {} -> {} ({})",
        response.from,
        response.release.number,
        response.release.digest.short()
    );
    Ok(noted(Json(response), AuditNote::new(name, detail)))
}

/// `POST /v1/functions/{name}/configure`: the serving release again with another memory
/// size or timeout (what `runway tune --apply` deploys).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigureRequest {
    /// The new memory size.
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// The new timeout.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}

/// Deploys the serving release again with another memory size or timeout (what `runway tune
/// --apply` does).
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/configure",
    tag = "functions",
    params(("name" = String, Path, description = "The function.", example = "hello")),
    request_body = ConfigureRequest,
    responses(
        (status = 200, description = "The new release.", body = DeployResponse),
        (status = 400, description = "`nothing_to_configure`: give a memory size, a timeout or both.", body = ErrorBody),
        (status = 404, description = "`no_such_function`.", body = ErrorBody),
        (status = 409, description = "`release_changed`: another deploy changed the function meanwhile.", body = ErrorBody),
        (status = 422, description = "`invalid_configuration`, `vetting_failed`.", body = ErrorBody),
    ),
)]
async fn configure_function(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    request: Result<Json<ConfigureRequest>, JsonRejection>,
) -> Result<axum::response::Response, ApiError> {
    let request = json_body(request, "configure")?;
    let changed = releases::configure(
        shared,
        &caller.actor(),
        &env,
        &name,
        request.memory,
        request.timeout,
    )
    .await?;
    Ok(noted(
        Json(changed.response),
        AuditNote::new(name, changed.detail),
    ))
}

/// `POST /v1/functions/{name}/promote?env=TARGET`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// The environment whose serving release is deployed to the target.
    #[schema(example = "staging")]
    pub from: String,
}

/// Deploys to the target environment exactly the release the source serves (same digest,
/// same configuration), under the target's signing and vetting rules.
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/promote",
    tag = "functions",
    params(("name" = String, Path, description = "The function.", example = "hello")),
    request_body = PromoteRequest,
    responses(
        (status = 200, description = "What the promotion did.", body = PromoteResponse),
        (status = 403, description = "`forbidden`: the token may not read `from`.", body = ErrorBody),
        (status = 404, description = "`no_such_environment` (`from`), `no_such_function`.", body = ErrorBody),
        (status = 409, description = "`release_changed`: another deploy changed the function meanwhile.", body = ErrorBody),
        (status = 422, description = "`same_environment`, `vetting_failed`, `invalid_configuration`.", body = ErrorBody),
    ),
)]
async fn promote_function(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    request: Result<Json<PromoteRequest>, JsonRejection>,
) -> Result<axum::response::Response, ApiError> {
    let request = json_body(request, "promote")?;
    let response = releases::promote(shared, &caller.actor(), &env, &name, &request.from).await?;
    let detail = format!(
        "{}@{} -> {}@{} ({})",
        response.from,
        response.from_release,
        response.to,
        response.result.release.number,
        response.result.release.digest.short()
    );
    Ok(noted(Json(response), AuditNote::new(name, detail)))
}

/// The request's JSON body, or a 422 that says which request was malformed and how.
pub(crate) fn json_body<T>(
    request: Result<Json<T>, JsonRejection>,
    what: &str,
) -> Result<T, ApiError> {
    request.map(|Json(body)| body).map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return crate::api::extract::body_error(rejection.status(), rejection.body_text());
        }
        ApiError::unprocessable(
            "invalid_request",
            format!("the {what} request is not valid: {}", rejection.body_text()),
        )
    })
}

fn routes_of(config: &runway_manifest::FunctionConfig) -> Vec<String> {
    config
        .http
        .iter()
        .map(|t| {
            let auth = match t.auth {
                runway_manifest::InvocationAuth::Public => String::new(),
                other => format!(" [{}]", other.as_str()),
            };
            if t.methods.is_empty() {
                format!("{}{auth}", t.route)
            } else {
                let methods: Vec<&str> = t.methods.iter().map(|m| m.as_str()).collect();
                format!("{} {}{auth}", methods.join(","), t.route)
            }
        })
        .collect()
}

fn info(live: &LiveFunction, usage: Option<&Usage>) -> FunctionInfo {
    let release = &live.release;
    let usage = usage.cloned().unwrap_or_default();
    FunctionInfo {
        name: live.name().to_owned(),
        environment: release.environment.clone(),
        release: release.number,
        digest: release.digest.clone(),
        memory: release.config.memory,
        timeout: release.config.timeout,
        routes: routes_of(&release.config),
        invocations: usage.invocations,
        failures: usage.failures,
        gb_seconds: usage.gb_seconds,
        cost: usage.cost,
        expires: release
            .config
            .expires
            .as_ref()
            .map(|e| e.as_str().to_owned()),
        expires_at_ms: live.expires_at_ms,
        retired: live.expires_at_ms.is_some_and(|at| at <= crate::now_ms()),
        revoked: live.revoked.load(std::sync::atomic::Ordering::Acquire),
        schedules: release
            .config
            .schedules
            .iter()
            .map(|s| format!("{} {}", s.cron.as_str(), String::from(s.timezone)))
            .collect(),
        queue: release.config.queue.is_some(),
        max_concurrency: release.config.max_concurrency,
        cpu_share: match live.limits.cpu {
            runway_runtime::CpuShare::Fraction(share) => share,
            runway_runtime::CpuShare::Unthrottled => 1.0,
        },
    }
}

fn full_core() -> f64 {
    1.0
}

/// Usage since the environment was created (a removed environment of the same name may
/// have left invocation records: they are its bill, not this one's).
async fn all_time_usage(shared: &Arc<Shared>, env: &Environment) -> Result<Vec<Usage>, ApiError> {
    let (store, name, since) = (shared.store.clone(), env.name.clone(), env.billed_since());
    blocking(move || Ok(store.usage(&name, since)?)).await
}

/// The functions the environment serves, with their usage.
#[utoipa::path(
    get,
    path = "/v1/functions",
    tag = "functions",
    responses((status = 200, description = "Every function served.", body = Vec<FunctionInfo>)),
)]
async fn list_functions(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
) -> Result<Json<Vec<FunctionInfo>>, ApiError> {
    let usage = all_time_usage(&shared, &env).await?;
    let routes = env.routes.load();
    let list = routes
        .functions
        .values()
        .map(|live| info(live, usage.iter().find(|u| u.function == live.name())))
        .collect();
    Ok(Json(list))
}

/// One function, with its usage.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}",
    tag = "functions",
    params(("name" = String, Path, description = "The function.", example = "hello")),
    responses(
        (status = 200, description = "The function.", body = FunctionInfo),
        (status = 404, description = "`no_such_function`.", body = ErrorBody),
    ),
)]
async fn show_function(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Path(name): Path<String>,
) -> Result<Json<FunctionInfo>, ApiError> {
    let live = env.function(&name)?;
    let usage = all_time_usage(&shared, &env).await?;
    Ok(Json(info(&live, usage.iter().find(|u| u.function == name))))
}

/// A function's releases, newest first.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}/releases",
    tag = "functions",
    params(("name" = String, Path, description = "The function.", example = "hello")),
    responses(
        (status = 200, description = "Its releases.", body = Vec<ReleaseInfo>),
        (status = 404, description = "`no_such_function`: it has no releases.", body = ErrorBody),
    ),
)]
async fn list_releases(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ReleaseInfo>>, ApiError> {
    let current = env
        .routes
        .load()
        .functions
        .get(&name)
        .map(|live| live.release.number);
    let lookup = name.clone();
    let (releases, revoked) = {
        let (store, env) = (shared.store.clone(), env.name.clone());
        blocking(move || Ok((store.releases(&env, &lookup)?, store.revoked_artifacts()?))).await?
    };
    if releases.is_empty() {
        return Err(ApiError::not_found(
            "no_such_function",
            format!("function `{name}` has no releases"),
        ));
    }
    Ok(Json(
        releases
            .into_iter()
            .map(|r| ReleaseInfo {
                revoked: revoked.iter().any(|x| x.digest == r.digest.as_str()),
                number: r.number,
                routes: routes_of(&r.config),
                digest: r.digest,
                memory: r.config.memory,
                timeout: r.config.timeout,
                created_at_ms: r.created_at_ms,
                current: current == Some(r.number),
                policy: r.config.policy,
                policy_mode: r.config.policy_mode,
                vetting: r.vetting,
                deployed_by: r.deployed_by,
                origin: r.origin,
            })
            .collect(),
    ))
}

/// The request `request` describes, or a 400 naming what is not valid HTTP (a header name
/// or value, the method, the path).
pub(crate) fn build_request<B>(
    method: &str,
    path: &str,
    request: &InvokeRequest,
    body: B,
) -> Result<http::Request<B>, ApiError> {
    let mut builder = http::Request::builder().method(method).uri(path);
    for (key, value) in &request.headers {
        builder = builder.header(key, value);
    }
    builder.body(body).map_err(|err| {
        ApiError::bad_request(
            "invalid_request",
            format!("cannot build the request: {err}"),
        )
    })
}

/// The method and path an invoke or enqueue sends: as given, else the function's first route
/// with GET (POST when there is a body).
pub(crate) fn method_and_path(live: &LiveFunction, request: &InvokeRequest) -> (String, String) {
    let path = request.path.clone().unwrap_or_else(|| {
        live.release
            .config
            .http
            .first()
            .map_or_else(|| "/".to_owned(), |t| t.route.base().to_owned())
    });
    let method = request.method.clone().unwrap_or_else(|| {
        if request.body.is_some() {
            "POST"
        } else {
            "GET"
        }
        .to_owned()
    });
    (method, path)
}

/// Invokes a function and answers with its response and invocation record.
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/invoke",
    tag = "functions",
    params(("name" = String, Path, description = "The function.", example = "hello")),
    request_body = InvokeRequest,
    responses(
        (status = 200, description = "The function ran; its own status is in the body.", body = InvokeResponse),
        (status = 400, description = "`invalid_request`: the method, path or a header is not valid HTTP.", body = ErrorBody),
        (status = 402, description = "`not_admitted`: its budget stopped it.", body = ErrorBody),
        (status = 404, description = "`no_such_function`.", body = ErrorBody),
        (status = 409, description = "`artifact_revoked`: its artifact was revoked.", body = ErrorBody),
        (status = 410, description = "`function_expired`.", body = ErrorBody),
        (status = 429, description = "`not_admitted`: at its `max_concurrency`.", body = ErrorBody),
    ),
)]
async fn invoke_function(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Path(name): Path<String>,
    request: Result<Json<InvokeRequest>, JsonRejection>,
) -> Result<Json<InvokeResponse>, ApiError> {
    let request = json_body(request, "invoke")?;
    let live = env.function(&name)?;
    let (method, path) = method_and_path(&live, &request);
    let body = Full::new(Bytes::from(request.body.clone().unwrap_or_default()));
    let mut http_request = build_request(&method, &path, &request, body)?;
    crate::headers::strip_caller_headers(
        http_request.headers_mut(),
        crate::headers::Credentials::Strip,
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    let response = crate::execute::invoke(&shared, live, http_request, Some(tx)).await;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = response.into_body();
    let mut collected = Vec::new();
    let mut body_truncated = false;
    // Read to the end even past the limit: the invocation finishes (and is metered) only
    // when its body has been consumed.
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            let room = INVOKE_BODY_LIMIT - collected.len();
            if data.len() > room {
                body_truncated = true;
            }
            collected.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    drop(body);
    let Ok(record) = rx.await else {
        // Refused before it ran (expired, or over its concurrency limit): nothing to record.
        let message = String::from_utf8_lossy(&collected).trim_end().to_owned();
        let (status, code) = match status {
            410 => (StatusCode::GONE, "function_expired"),
            // The gateway's 503 for a revoked artifact: a state of the function, not a
            // failure of the node.
            503 => (StatusCode::CONFLICT, "artifact_revoked"),
            402 => (StatusCode::PAYMENT_REQUIRED, "not_admitted"),
            _ => (StatusCode::TOO_MANY_REQUESTS, "not_admitted"),
        };
        return Err(ApiError {
            status,
            code,
            message,
        });
    };
    Ok(Json(InvokeResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&collected).into_owned(),
        body_truncated,
        report: record.report_line(),
        record,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LogsQuery {
    /// Lines after this id (`next_after` of the previous page).
    #[serde(default)]
    after: i64,
    /// Lines at most (at most 10,000).
    #[serde(default = "default_log_limit")]
    limit: u32,
}

fn default_log_limit() -> u32 {
    1000
}

/// A page of a function's log lines.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}/logs",
    tag = "functions",
    params(("name" = String, Path, description = "The function.", example = "hello"), LogsQuery),
    responses(
        (status = 200, description = "Lines, oldest first.", body = LogsResponse),
        (status = 404, description = "`no_such_function`.", body = ErrorBody),
    ),
)]
async fn read_logs(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Path(name): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Json<LogsResponse>, ApiError> {
    env.function(&name)?;
    let entries = blocking(move || {
        Ok(shared
            .store
            .logs(&env.name, &name, query.after, query.limit.min(10_000))?)
    })
    .await?;
    let next_after = entries.last().map_or(query.after, |e| e.id);
    Ok(Json(LogsResponse {
        entries,
        next_after,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CostQuery {
    /// The period ending now (`24h`, `7d`); default 24 hours.
    since: Option<String>,
}

/// Usage and cost per function over a period.
#[utoipa::path(
    get,
    path = "/v1/cost",
    tag = "cost",
    params(CostQuery),
    responses(
        (status = 200, description = "Usage per function and in total.", body = CostResponse),
        (status = 400, description = "`invalid_since`.", body = ErrorBody),
    ),
)]
async fn cost(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Query(query): Query<CostQuery>,
) -> Result<Json<CostResponse>, ApiError> {
    let since_ms = parse_since(query.since.as_deref(), Duration::from_secs(24 * 3600))?
        .max(env.billed_since());
    let functions = blocking(move || Ok(shared.store.usage(&env.name, since_ms)?)).await?;
    let total = functions.iter().fold(
        Usage {
            function: "total".into(),
            ..Usage::default()
        },
        |mut total, u| {
            total.invocations += u.invocations;
            total.failures += u.failures;
            total.gb_seconds += u.gb_seconds;
            total.cost = total.cost + u.cost;
            total.duration_us += u.duration_us;
            total
        },
    );
    Ok(Json(CostResponse {
        since_ms,
        functions,
        total,
    }))
}

/// `GET /v1/cost/breakdown`: usage grouped by function, environment, release or owner.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CostBreakdown {
    /// Start of the period, milliseconds since the Unix epoch.
    pub since_ms: i64,
    /// The grouping.
    pub by: CostDimension,
    /// The environments covered: one, or every one the token may see.
    pub environments: Vec<String>,
    /// One row per group, most expensive first.
    pub rows: Vec<CostRow>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct BreakdownQuery {
    /// The grouping.
    by: CostDimension,
    /// The period ending now (`24h`, `7d`); default 7 days.
    #[serde(default)]
    since: Option<String>,
    /// `all` (every environment the token may see) or `env` (the requested one).
    #[serde(default)]
    scope: Option<String>,
}

/// The start of a `since` period (`24h`, `7d`) ending now, in milliseconds since the epoch.
pub(crate) fn parse_since(text: Option<&str>, default: Duration) -> Result<i64, ApiError> {
    let since = match text {
        None => default,
        Some(text) => humantime::parse_duration(text).map_err(|err| {
            ApiError::bad_request(
                "invalid_since",
                format!(
                    "invalid `since` value `{text}`: {err}; use a duration such as `24h` or `7d`"
                ),
            )
        })?,
    };
    let since_ms = i64::try_from(since.as_millis()).unwrap_or(i64::MAX);
    Ok(crate::now_ms().saturating_sub(since_ms))
}

/// Whether a report covers every environment (`scope=all`, the default, for an unscoped
/// token) or the requested one (`scope=env`, or any scoped token).
pub(crate) fn every_environment(scope: Option<&str>, caller: &Caller) -> Result<bool, ApiError> {
    match scope {
        None | Some("all") => Ok(caller.environment.is_none()),
        Some("env") => Ok(false),
        Some(other) => Err(ApiError::bad_request(
            "invalid_scope",
            format!("invalid scope `{other}`: use `all` or `env`"),
        )),
    }
}

/// Usage and cost grouped by function, environment, release or owner.
#[utoipa::path(
    get,
    path = "/v1/cost/breakdown",
    tag = "cost",
    params(BreakdownQuery),
    responses(
        (status = 200, description = "One row per group, most expensive first.", body = CostBreakdown),
        (status = 400, description = "`invalid_since`, `invalid_scope`.", body = ErrorBody),
    ),
)]
async fn cost_breakdown(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<BreakdownQuery>,
) -> Result<Json<CostBreakdown>, ApiError> {
    let since_ms = parse_since(query.since.as_deref(), Duration::from_secs(7 * 24 * 3600))?;
    let everywhere = every_environment(query.scope.as_deref(), &caller)?;
    let environments: Vec<String> = if everywhere {
        let mut names: Vec<String> = shared
            .environments
            .load()
            .all()
            .map(|e| e.name.clone())
            .collect();
        names.sort();
        names
    } else {
        vec![env.name.clone()]
    };
    let by = query.by;
    let store = shared.store.clone();
    let only = (!everywhere).then(|| env.name.clone());
    let listed = environments.clone();
    let rows = blocking(move || {
        let rows = store.cost_by(by, only.as_deref(), since_ms)?;
        // Removed environments keep their records (the bill), but are not listed by name.
        Ok(rows
            .into_iter()
            .filter(|r| {
                r.environment
                    .as_ref()
                    .is_none_or(|e| listed.iter().any(|l| l == e))
            })
            .collect())
    })
    .await?;
    Ok(Json(CostBreakdown {
        since_ms,
        by,
        environments,
        rows,
    }))
}

/// Prometheus metrics of the node.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "node",
    responses((
        status = 200,
        description = "Prometheus text exposition format.",
        body = String,
        content_type = "text/plain; version=0.0.4; charset=utf-8",
    )),
)]
async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    let store = shared.store.clone();
    let size = tokio::task::spawn_blocking(move || store.size_bytes())
        .await
        .unwrap_or(0);
    shared.metrics.store_bytes.set(size as i64);
    let stats = shared.meter.stats();
    shared
        .metrics
        .meter_backlog
        .set(stats.backlog.load(std::sync::atomic::Ordering::Relaxed) as i64);
    shared
        .metrics
        .meter_lost
        .set(stats.lost.load(std::sync::atomic::Ordering::Relaxed) as i64);
    (headers, shared.metrics.encode())
}

pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ApiError::internal(format!("a store task failed: {err}")))?
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_since;

    #[test]
    fn a_since_longer_than_the_clock_can_count_reaches_back_to_the_start() {
        let start = parse_since(Some("500000000years"), Duration::ZERO).unwrap();
        assert!(start < 0, "{start}");
        let day = parse_since(Some("24h"), Duration::ZERO).unwrap();
        assert!((crate::now_ms() - day - 86_400_000).abs() < 60_000);
    }
}
