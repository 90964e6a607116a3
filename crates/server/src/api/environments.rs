//! The admin API of environments: `GET /v1/envs`, `POST /v1/envs`, `DELETE /v1/envs/{name}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::response::Response;
use http::StatusCode;

use crate::Shared;
use crate::api::auth::{AuditNote, Caller, noted};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::Path;
use crate::services::environments::{
    self, CreateEnvironmentRequest, CreatedEnvironment, EnvironmentInfo, RemovedEnvironment,
};

/// The environments the caller may act on.
#[utoipa::path(
    get,
    path = "/v1/envs",
    tag = "environments",
    operation_id = "list_environments",
    responses((status = 200, description = "The home environment first.", body = Vec<EnvironmentInfo>)),
)]
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<EnvironmentInfo>>, ApiError> {
    Ok(Json(environments::list(&shared, &caller.actor()).await?))
}

/// Creates an environment, empty or from another one.
#[utoipa::path(
    post,
    path = "/v1/envs",
    tag = "environments",
    operation_id = "create_environment",
    request_body = CreateEnvironmentRequest,
    responses(
        (status = 201, description = "Created.", body = CreatedEnvironment),
        (status = 400, description = "`invalid_name`, `invalid_ttl`, `nothing_to_copy`, `invalid_trusted_keys`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: needs a token for every environment.", body = ErrorBody),
        (status = 404, description = "`no_such_environment`: `from` does not exist.", body = ErrorBody),
        (status = 409, description = "`environment_exists`.", body = ErrorBody),
        (status = 422, description = "`vetting_failed`: the new rules refuse what `from` serves.", body = ErrorBody),
    ),
)]
pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    request: Result<Json<CreateEnvironmentRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = crate::api::json_body(request, "environment")?;
    let name = request.name.clone();
    let created = environments::create(&shared, &caller.actor(), request).await?;
    Ok(noted(
        (StatusCode::CREATED, Json(created.response)),
        AuditNote::new(name, created.detail),
    ))
}

/// Removes an environment with its functions, data, secrets, keys, tokens, jobs and logs.
#[utoipa::path(
    delete,
    path = "/v1/envs/{name}",
    tag = "environments",
    operation_id = "remove_environment",
    params(("name" = String, Path, description = "The environment.")),
    responses(
        (status = 200, description = "Removed, with its functions, data, secrets, keys, jobs and logs.", body = RemovedEnvironment),
        (status = 403, description = "`forbidden`: needs a token for every environment.", body = ErrorBody),
        (status = 404, description = "`no_such_environment`.", body = ErrorBody),
        (status = 409, description = "`home_environment`: the node's home environment is never removed.", body = ErrorBody),
    ),
)]
pub(crate) async fn remove(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let removed = environments::remove(&shared, &caller.actor(), &name).await?;
    let detail = format!("{} functions", removed.functions);
    Ok(noted(Json(removed), AuditNote::new(name, detail)))
}
