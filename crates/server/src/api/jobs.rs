//! The admin API of jobs: enqueue an asynchronous invocation, list an environment's jobs,
//! show one, retry a dead-lettered one. What the jobs do is `services::jobs` and
//! `services::worker`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::response::Response;
use http::StatusCode;
use runway_store::{Job, JobRequest, JobState};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::api::auth::{AuditNote, noted};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{Path, Query};
use crate::api::{InvokeRequest, blocking};
use crate::environments::Environment;
use crate::headers::{Credentials, is_removed};
use crate::now_ms;
use crate::services::jobs::{Jobs as JobService, parse_states};

/// The answer to an enqueue: the job's id, at once.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnqueueResponse {
    /// The job id, for `runway queue show`.
    pub id: String,
    /// Its state (pending).
    pub state: JobState,
}

/// A page of jobs.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobsResponse {
    /// Jobs, newest first.
    pub jobs: Vec<Job>,
}

/// Stores an asynchronous invocation as a job, then answers 202 with its id.
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/enqueue",
    tag = "jobs",
    params(("name" = String, Path, description = "The function.", example = "hello")),
    request_body = InvokeRequest,
    responses(
        (status = 202, description = "Stored; it runs from the queue.", body = EnqueueResponse),
        (status = 400, description = "`invalid_request`: a header, the method or the path is not valid HTTP.", body = ErrorBody),
        (status = 404, description = "`no_such_function`.", body = ErrorBody),
        (status = 409, description = "`artifact_revoked`: its artifact was revoked.", body = ErrorBody),
        (status = 410, description = "`function_expired`.", body = ErrorBody),
        (status = 422, description = "`no_queue_trigger`: the function takes no asynchronous invocations.", body = ErrorBody),
    ),
)]
pub(crate) async fn enqueue(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Path(name): Path<String>,
    request: Result<Json<InvokeRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = crate::api::json_body(request, "enqueue")?;
    let live = env.function(&name)?;
    let (method, path) = crate::api::method_and_path(&live, &request);
    // Refused now, not dead-lettered later: the stored request must be valid HTTP.
    crate::api::build_request(&method, &path, &request, ())?;
    let job = JobRequest {
        method,
        path,
        headers: request
            .headers
            .into_iter()
            .filter(|(name, _)| !is_removed(name, Credentials::Strip))
            .collect(),
        body: request.body.unwrap_or_default().into_bytes(),
    };
    let id = {
        let shared = shared.clone();
        blocking(move || {
            Ok(JobService::new(shared.store.as_ref()).enqueue(&live, job, now_ms())?)
        })
        .await?
    };
    shared.job_ready.notify_one();
    Ok(noted(
        (
            StatusCode::ACCEPTED,
            Json(EnqueueResponse {
                id: id.clone(),
                state: JobState::Pending,
            }),
        ),
        AuditNote::new(name, format!("job {id}")),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct JobsQuery {
    /// Comma-separated states (`pending`, `running`, `succeeded`, `dead`); default
    /// `pending,running,dead`.
    state: Option<String>,
    /// Jobs at most (default 100, at most 10,000).
    limit: Option<u32>,
}

/// The environment's jobs, newest first.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    operation_id = "list_jobs",
    params(JobsQuery),
    responses(
        (status = 200, description = "Jobs, newest first.", body = JobsResponse),
        (status = 400, description = "`invalid_state`.", body = ErrorBody),
    ),
)]
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Query(query): Query<JobsQuery>,
) -> Result<Json<JobsResponse>, ApiError> {
    let states = parse_states(query.state.as_deref())?;
    let limit = query.limit.unwrap_or(100).min(10_000);
    let jobs = blocking(move || {
        Ok(JobService::new(shared.store.as_ref()).list(&env.name, &states, limit)?)
    })
    .await?;
    Ok(Json(JobsResponse { jobs }))
}

/// One job.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    operation_id = "show_job",
    params(("id" = String, Path, description = "The job's id (`j-…`).")),
    responses(
        (status = 200, description = "The job.", body = Job),
        (status = 404, description = "`no_such_job`.", body = ErrorBody),
    ),
)]
pub(crate) async fn show(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let job =
        blocking(move || Ok(JobService::new(shared.store.as_ref()).get(&env.name, &id)?)).await?;
    Ok(Json(job))
}

/// A dead-lettered job goes back to pending, with fresh attempts.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/retry",
    tag = "jobs",
    operation_id = "retry_job",
    params(("id" = String, Path, description = "The job's id (`j-…`).")),
    responses(
        (status = 200, description = "The job, pending again.", body = Job),
        (status = 404, description = "`no_such_job`.", body = ErrorBody),
        (status = 409, description = "`not_dead_lettered`: only dead-lettered jobs are retried.", body = ErrorBody),
    ),
)]
pub(crate) async fn retry(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = {
        let (shared, id) = (shared.clone(), id.clone());
        blocking(move || {
            Ok(JobService::new(shared.store.as_ref()).retry(&env.name, &id, now_ms())?)
        })
        .await?
    };
    shared.job_ready.notify_one();
    Ok(noted(Json(job), AuditNote::new(id, "back to pending")))
}
