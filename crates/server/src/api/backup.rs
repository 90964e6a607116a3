//! `POST /v1/backup`: the whole node as a tar file, for an unscoped admin, one at a time.

use std::sync::Arc;

use crate::Shared;
use crate::api::auth::{AuditNote, Caller, noted};
use crate::api::error::{ApiError, ErrorBody};
use crate::backup;

/// `POST /v1/backup` (unscoped admin): streams a backup of the whole node as a tar file.
/// POST rather than GET so that every backup, which carries all data, is audited.
#[utoipa::path(
    post,
    path = "/v1/backup",
    tag = "node",
    responses(
        (
            status = 200,
            description = "A tar file: BACKUP.json, runway.db, envs/NAME/{sql,kv}.db and \
                           artifacts/DIGEST.wasm (never the secrets key).",
            body = Vec<u8>,
            content_type = "application/x-tar",
        ),
        (status = 403, description = "`forbidden`: a token scoped to one environment.", body = ErrorBody),
        (status = 409, description = "`backup_in_progress`: one backup at a time.", body = ErrorBody),
    ),
)]
pub(crate) async fn backup(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    axum::extract::Extension(caller): axum::extract::Extension<Caller>,
) -> Result<axum::response::Response, ApiError> {
    if let Some(scope) = &caller.environment {
        return Err(ApiError {
            status: http::StatusCode::FORBIDDEN,
            code: "forbidden",
            message: format!(
                "token {} is scoped to environment `{scope}`; a backup holds every environment \
                 and needs an unscoped admin token",
                caller.id
            ),
        });
    }
    // A backup copies every database and artifact: one at a time, so a flood of backup
    // calls costs one copy, not one each.
    let Ok(running) = shared.backup_slot.clone().try_acquire_owned() else {
        return Err(ApiError {
            status: http::StatusCode::CONFLICT,
            code: "backup_in_progress",
            message: "a backup of this node is already being written; wait for it to finish".into(),
        });
    };
    let (file, manifest) = tokio::task::spawn_blocking(move || {
        let _running = running;
        let staged = tempfile::Builder::new()
            .prefix(".backup-")
            .suffix(".tar")
            .tempfile_in(&shared.data_dir)
            .map_err(backup::io("create a backup file in", &shared.data_dir))?;
        let manifest = backup::write(&shared, staged.path())?;
        // Reopened, then the name is removed: the open file streams out and is gone after.
        let file = staged
            .reopen()
            .map_err(backup::io("reopen", staged.path()))?;
        Ok::<_, backup::BackupError>((file, manifest))
    })
    .await
    .map_err(|err| ApiError::internal(format!("the backup task failed: {err}")))?
    .map_err(|err| ApiError::internal(format!("backup failed: {err}")))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(file),
    ));
    let response = axum::response::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/x-tar")
        .header(http::header::CONTENT_LENGTH, size)
        .header(
            http::header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"runway-backup-{}.tar\"",
                manifest.created_at_ms
            ),
        )
        .body(body)
        .map_err(|err| ApiError::internal(format!("backup response: {err}")))?;
    Ok(noted(
        response,
        AuditNote::new(
            "node",
            format!(
                "{} environments, {} artifacts, {size} bytes",
                manifest.environments.len(),
                manifest.artifacts
            ),
        ),
    ))
}
