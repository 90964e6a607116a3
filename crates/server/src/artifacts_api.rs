//! Signed and revoked artifacts: uploading a signature for a stored artifact, and revoking
//! an artifact so that every release running it stops serving at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::response::Response;
use http::StatusCode;
use runway_signing::{TrustedKeys, Verdict};
use runway_store::{ArtifactSignature, Digest, RevokedArtifact};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::admin::{blocking, json_body};
use crate::auth::{AuditNote, Caller, noted, now_ms};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Body, Path};

/// The answer to a signature upload.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignatureResponse {
    /// The artifact.
    pub digest: String,
    /// The signing key's id.
    pub key_id: String,
    /// Whether the environment trusts that key (`None`: it requires no signatures).
    pub trusted: Option<bool>,
}

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
    let signature = runway_signing::parse_signature(text, "the uploaded signature")
        .map_err(|err| ApiError::bad_request("invalid_signature", err.to_string()))?;
    if signature.digest != digest.as_str() {
        return Err(ApiError::bad_request(
            "signature_digest_mismatch",
            format!(
                "the signature is for artifact {}, not {digest}; sign the file you deploy",
                signature.digest
            ),
        ));
    }
    let verifies = |keys: &TrustedKeys| {
        matches!(
            keys.check(digest.as_str(), std::slice::from_ref(&signature)),
            Verdict::Trusted(_)
        )
    };
    let trusted = env.rules.trusted_keys.as_ref().map(verifies);
    // A signature claiming a key some environment trusts must verify: otherwise it could
    // replace that key's good signature and block every later deploy of the artifact.
    let claims_trusted = shared.environments.load().all().any(|e| {
        e.rules
            .trusted_keys
            .as_ref()
            .is_some_and(|keys| keys.knows(&signature.key_id) && !verifies(keys))
    });
    if claims_trusted {
        return Err(ApiError::bad_request(
            "invalid_signature",
            format!(
                "the signature claims trusted key {} but does not verify for artifact {}",
                signature.key_id,
                digest.short()
            ),
        ));
    }
    let record = ArtifactSignature {
        digest: signature.digest.clone(),
        key_id: signature.key_id.clone(),
        signature: signature.signature,
    };
    {
        let shared = shared.clone();
        let digest = digest.clone();
        blocking(move || {
            if !shared.store.has_artifact(&digest)? {
                return Err(ApiError::not_found(
                    "artifact_missing",
                    format!("artifact {digest} is not stored; upload it first"),
                ));
            }
            Ok(shared.store.add_signature(&record)?)
        })
        .await?;
    }
    let key_id = signature.key_id;
    Ok(noted(
        Json(SignatureResponse {
            digest: digest.to_string(),
            key_id: key_id.clone(),
            trusted,
        }),
        AuditNote::new(digest.short(), format!("signed by {key_id}")),
    ))
}

/// `POST /v1/artifacts/{digest}/revoke`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Why (kept in the audit log and shown to callers).
    #[serde(default)]
    pub reason: Option<String>,
}

/// What a revocation did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevokeResponse {
    /// The artifact.
    pub digest: String,
    /// Functions (`environment/function`) that were serving it and now answer 503.
    pub stopped: Vec<String>,
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
    if let Some(scope) = &caller.environment {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: format!(
                "token {} is scoped to environment `{scope}`; revoking an artifact stops it in \
                 every environment and needs a token for every environment",
                caller.id
            ),
        });
    }
    // No deploy or rollback can bring the artifact in while it is being revoked.
    let _serialised = shared.deploy_lock.lock().await;
    let reason = request.reason.unwrap_or_else(|| "no reason given".into());
    let revoked = RevokedArtifact {
        digest: digest.to_string(),
        revoked_at_ms: now_ms(),
        actor: caller.id,
        reason: reason.clone(),
    };
    let newly = {
        let shared = shared.clone();
        blocking(move || {
            let digest = Digest::try_from(revoked.digest.clone()).expect("parsed above");
            if !shared.store.has_artifact(&digest)? {
                return Err(ApiError::not_found(
                    "artifact_missing",
                    format!("no artifact {digest} was ever uploaded here; check the digest (`runway releases NAME` shows it)"),
                ));
            }
            Ok(shared.store.revoke_artifact(&revoked)?)
        })
        .await?
    };
    if !newly {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "already_revoked",
            message: format!("artifact {digest} is already revoked"),
        });
    }
    // Every live release of the artifact stops at once: the flag is read on each request.
    let mut stopped = Vec::new();
    for env in shared.environments.load().all() {
        for function in env.routes.load().functions.values() {
            if function.release.digest == digest {
                function.revoked.store(true, Ordering::Release);
                stopped.push(format!("{}/{}", env.name, function.name()));
            }
        }
    }
    stopped.sort();
    Ok(noted(
        Json(RevokeResponse {
            digest: digest.to_string(),
            stopped: stopped.clone(),
        }),
        AuditNote::new(
            digest.short(),
            format!(
                "{reason}; stopped: {}",
                if stopped.is_empty() {
                    "none".to_owned()
                } else {
                    stopped.join(",")
                }
            ),
        ),
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

/// Why an artifact may not be deployed here, if it may not: revoked, or (when this node
/// requires signatures) not signed by a trusted key. On success, the trusted key's id.
pub(crate) fn admission(
    store: &dyn runway_store::ControlStore,
    trusted: Option<&TrustedKeys>,
    digest: &Digest,
) -> Result<Result<Option<String>, String>, ApiError> {
    if let Some(revoked) = store
        .revoked_artifacts()?
        .into_iter()
        .find(|r| r.digest == digest.as_str())
    {
        return Ok(Err(format!(
            "artifact {} was revoked ({}); build and deploy a fixed one",
            digest.short(),
            revoked.reason
        )));
    }
    let Some(trusted) = trusted else {
        return Ok(Ok(None));
    };
    let signatures: Vec<runway_signing::Signature> = store
        .signatures(digest.as_str())?
        .into_iter()
        .map(|s| runway_signing::Signature {
            digest: s.digest,
            key_id: s.key_id,
            signature: s.signature,
        })
        .collect();
    Ok(match trusted.check(digest.as_str(), &signatures) {
        Verdict::Trusted(key) => Ok(Some(key)),
        Verdict::Untrusted(why) => Err(format!(
            "artifact {} is refused: this node requires a signature by a trusted key ({}), and {why}; \
             sign it with `runway sign FILE --key KEY` and deploy again",
            digest.short(),
            trusted.ids().join(", ")
        )),
    })
}
