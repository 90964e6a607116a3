//! The admin API of signed and revoked artifacts: uploading a signature for a stored
//! artifact, revoking an artifact, listing revoked ones. What they do is
//! `services::artifacts`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::response::Response;
use runway_store::{Digest, RevokedArtifact};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::api::auth::{AuditNote, Caller, noted};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{Body, Path};
use crate::api::{blocking, json_body};
use crate::now_ms;
use crate::services::artifacts::{self, RevokeResponse, SignatureResponse};

fn parse_digest(text: String) -> Result<Digest, ApiError> {
    Digest::try_from(text).map_err(|message| ApiError::bad_request("invalid_digest", message))
}

/// Stores a `runway sign` signature for a stored artifact.
#[utoipa::path(
    put,
    path = "/v1/artifacts/{digest}/signature",
    tag = "artifacts",
    params(("digest" = Digest, Path, description = "The artifact's SHA-256, hex.")),
    request_body(
        content = String,
        content_type = "text/plain",
        description = "A `runway sign` file (JSON), as written.",
    ),
    responses(
        (status = 200, description = "Stored.", body = SignatureResponse),
        (status = 400, description = "`invalid_digest`, `invalid_signature`, `signature_digest_mismatch`.", body = ErrorBody),
        (status = 404, description = "`artifact_missing`: upload the artifact first.", body = ErrorBody),
    ),
)]
pub(crate) async fn put_signature(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<crate::environments::Environment>>,
    Path(digest): Path<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let digest = parse_digest(digest)?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::bad_request(
            "invalid_signature",
            "the signature is not UTF-8 text".into(),
        )
    })?;
    let signed = artifacts::sign(&shared, &env, digest.clone(), text).await?;
    let detail = format!("signed by {}", signed.key_id);
    Ok(noted(Json(signed), AuditNote::new(digest.short(), detail)))
}

/// `POST /v1/artifacts/{digest}/revoke`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why (kept in the audit log and shown to callers).
    #[serde(default)]
    pub reason: Option<String>,
}

/// Revokes an artifact: every function serving it, in every environment, stops at once.
#[utoipa::path(
    post,
    path = "/v1/artifacts/{digest}/revoke",
    tag = "artifacts",
    params(("digest" = Digest, Path, description = "The artifact's SHA-256, hex.")),
    request_body = RevokeRequest,
    responses(
        (status = 200, description = "What stopped.", body = RevokeResponse),
        (status = 400, description = "`invalid_digest`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: needs a token for every environment.", body = ErrorBody),
        (status = 404, description = "`artifact_missing`.", body = ErrorBody),
        (status = 409, description = "`already_revoked`.", body = ErrorBody),
    ),
)]
pub(crate) async fn revoke(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(digest): Path<String>,
    request: Result<Json<RevokeRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let digest = parse_digest(digest)?;
    let request = json_body(request, "revoke")?;
    let reason = request.reason.unwrap_or_else(|| "no reason given".into());
    let revoked =
        artifacts::revoke(&shared, &caller.actor(), digest.clone(), &reason, now_ms()).await?;
    let stopped = if revoked.stopped.is_empty() {
        "none".to_owned()
    } else {
        revoked.stopped.join(",")
    };
    Ok(noted(
        Json(revoked),
        AuditNote::new(digest.short(), format!("{reason}; stopped: {stopped}")),
    ))
}

/// Revoked artifacts.
#[utoipa::path(
    get,
    path = "/v1/artifacts/revoked",
    tag = "artifacts",
    responses((status = 200, description = "Every revoked artifact.", body = Vec<RevokedArtifact>)),
)]
pub(crate) async fn list_revoked(
    State(shared): State<Arc<Shared>>,
) -> Result<Json<Vec<RevokedArtifact>>, ApiError> {
    Ok(Json(
        blocking(move || Ok(shared.store.revoked_artifacts()?)).await?,
    ))
}
