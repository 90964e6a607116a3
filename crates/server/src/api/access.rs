//! The admin API of access: control-plane tokens, function API keys, the control-plane
//! audit log, and extending a function's lifespan.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::response::Response;
use http::StatusCode;
use runway_access::{Rate, Role};
use runway_manifest::Expiry;
use runway_store::{ApiKeyRecord, ControlAuditRecord, TokenRecord};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::api::auth::{AuditNote, Caller, noted};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{Path, Query};
use crate::api::{blocking, json_body};
use crate::environments::Environment;
use crate::now_ms;
use crate::services::api_keys::{ApiKeys, NewApiKey};
use crate::services::tokens::{NewToken, Tokens, manages};

/// A token as listed: never its secret or hash.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// Public id.
    pub id: String,
    /// Role.
    pub role: Role,
    /// Environment scope; `None` is every environment.
    pub environment: Option<String>,
    /// What it is for.
    pub label: String,
    /// Created, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Expires, ms since the Unix epoch.
    pub expires_at_ms: Option<i64>,
    /// Revoked, ms since the Unix epoch.
    pub revoked_at_ms: Option<i64>,
    /// The token that created it.
    pub created_by: String,
}

impl From<TokenRecord> for TokenInfo {
    fn from(t: TokenRecord) -> TokenInfo {
        TokenInfo {
            id: t.id,
            role: t.role,
            environment: t.environment,
            label: t.label,
            created_at_ms: t.created_at_ms,
            expires_at_ms: t.expires_at_ms,
            revoked_at_ms: t.revoked_at_ms,
            created_by: t.created_by,
        }
    }
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Role of the new token.
    pub role: Role,
    /// Environment scope.
    #[serde(default)]
    pub environment: Option<String>,
    /// Lifetime (`30d`); default 30 days.
    #[serde(default)]
    pub ttl: Option<String>,
    /// What it is for.
    #[serde(default)]
    pub label: Option<String>,
}

/// A created credential: shown once.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// The token.
    pub token: TokenInfo,
    /// The secret to present; it cannot be shown again.
    pub secret: String,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &self.token)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &self.key)
            .field("secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Creates a control-plane token; its secret is shown once.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "access",
    request_body = CreateTokenRequest,
    responses(
        (status = 201, description = "The token and its secret.", body = CreatedToken),
        (status = 400, description = "`invalid_ttl`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: a scoped admin asked for another scope.", body = ErrorBody),
        (status = 404, description = "`no_such_environment`: the scope does not exist.", body = ErrorBody),
    ),
)]
pub(crate) async fn create_token(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    request: Result<Json<CreateTokenRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = json_body(request, "token")?;
    let (record, secret) = blocking(move || {
        let actor = caller.actor();
        let new = NewToken {
            role: request.role,
            environment: request.environment,
            ttl: request.ttl,
            label: request.label,
        };
        Ok(
            Tokens::new(shared.store.as_ref(), &shared.access_lock).create(
                &actor,
                new,
                now_ms(),
            )?,
        )
    })
    .await?;
    let detail = format!(
        "role {} scope {} expires {}",
        record.role,
        record.environment.as_deref().unwrap_or("*"),
        crate::lifespan::format_ms(record.expires_at_ms.unwrap_or_default())
    );
    let id = record.id.clone();
    Ok(noted(
        (
            StatusCode::CREATED,
            Json(CreatedToken {
                token: record.into(),
                secret,
            }),
        ),
        AuditNote::new(id, detail),
    ))
}

/// The tokens the caller manages (never their secrets or hashes).
#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "access",
    responses((status = 200, description = "The tokens.", body = Vec<TokenInfo>)),
)]
pub(crate) async fn list_tokens(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    let tokens = blocking(move || Ok(shared.store.tokens()?)).await?;
    Ok(Json(
        tokens
            .into_iter()
            .filter(|t| {
                let actor = caller.actor();
                manages(&actor, t)
            })
            .map(TokenInfo::from)
            .collect(),
    ))
}

/// Revokes a control-plane token.
#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    tag = "access",
    params(("id" = String, Path, description = "The token's id (`t-…`).")),
    responses(
        (status = 200, description = "Revoked.", body = Revoked),
        (status = 404, description = "`no_such_token`.", body = ErrorBody),
        (status = 409, description = "`last_admin_token`, `already_revoked`.", body = ErrorBody),
    ),
)]
pub(crate) async fn revoke_token(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    {
        let id = id.clone();
        blocking(move || {
            let actor = caller.actor();
            let tokens = Tokens::new(shared.store.as_ref(), &shared.access_lock);
            Ok(tokens.revoke(&actor, &id, now_ms())?)
        })
        .await?;
    }
    Ok(noted(
        Json(Revoked {
            revoked: id.clone(),
        }),
        AuditNote::new(id, "revoked"),
    ))
}

/// An API key as listed: never its secret or hash.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiKeyInfo {
    /// Public id.
    pub id: String,
    /// The function it may invoke.
    pub function: String,
    /// Who holds it.
    pub label: String,
    /// Request rate.
    pub rate: Option<Rate>,
    /// Created, ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Expires, ms since the Unix epoch.
    pub expires_at_ms: Option<i64>,
    /// Revoked, ms since the Unix epoch.
    pub revoked_at_ms: Option<i64>,
}

impl From<ApiKeyRecord> for ApiKeyInfo {
    fn from(k: ApiKeyRecord) -> ApiKeyInfo {
        ApiKeyInfo {
            id: k.id,
            function: k.function,
            label: k.label,
            rate: k.rate,
            created_at_ms: k.created_at_ms,
            expires_at_ms: k.expires_at_ms,
            revoked_at_ms: k.revoked_at_ms,
        }
    }
}

/// `POST /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// The function it may invoke.
    pub function: String,
    /// Lifetime; default 90 days.
    #[serde(default)]
    pub ttl: Option<String>,
    /// Request rate (`100/s`); default unlimited.
    #[serde(default)]
    pub rate: Option<String>,
    /// Who holds it.
    #[serde(default)]
    pub label: Option<String>,
}

/// A created API key: shown once.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The key.
    pub key: ApiKeyInfo,
    /// The secret to present as `Authorization: Bearer …`; it cannot be shown again.
    pub secret: String,
    /// Set when no route of the function checks API keys yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Creates an API key for a function; its secret is shown once.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "access",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "The key and its secret.", body = CreatedKey),
        (status = 400, description = "`invalid_ttl`, `invalid_rate`.", body = ErrorBody),
        (status = 404, description = "`no_such_function`.", body = ErrorBody),
    ),
)]
pub(crate) async fn create_key(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Extension(caller): Extension<Caller>,
    request: Result<Json<CreateKeyRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = json_body(request, "API key")?;
    let live = env.function(&request.function)?;
    let created = {
        let (shared, env) = (shared.clone(), env.clone());
        let caller = caller.id.clone();
        blocking(move || {
            let keys = ApiKeys::new(shared.store.as_ref(), &shared.access_lock, &shared.cluster);
            let new = NewApiKey {
                function: request.function,
                ttl: request.ttl,
                rate: request.rate,
                label: request.label,
            };
            Ok(keys.create(&env, &caller, new, now_ms())?)
        })
        .await?
    };
    let (record, secret) = (created.record, created.secret);
    let checks_keys = live
        .release
        .config
        .http
        .iter()
        .any(|t| t.auth == runway_manifest::InvocationAuth::ApiKey);
    let warning = (!checks_keys).then(|| {
        format!(
            "no route of function `{}` has auth = \"api-key\" yet, so this key is not needed until one does",
            record.function
        )
    });
    let detail = format!(
        "function {} rate {} expires {}",
        record.function,
        record
            .rate
            .map_or_else(|| "unlimited".to_owned(), |r| r.to_string()),
        crate::lifespan::format_ms(record.expires_at_ms.unwrap_or_default())
    );
    let id = record.id.clone();
    Ok(noted(
        (
            StatusCode::CREATED,
            Json(CreatedKey {
                key: record.into(),
                secret,
                warning,
            }),
        ),
        AuditNote::new(id, detail),
    ))
}

/// The environment's API keys (never their secrets or hashes).
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "access",
    responses((status = 200, description = "The keys.", body = Vec<ApiKeyInfo>)),
)]
pub(crate) async fn list_keys(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
) -> Result<Json<Vec<ApiKeyInfo>>, ApiError> {
    let keys = blocking(move || Ok(shared.store.api_keys(&env.name)?)).await?;
    Ok(Json(keys.into_iter().map(ApiKeyInfo::from).collect()))
}

/// Revokes an API key.
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    tag = "access",
    params(("id" = String, Path, description = "The key's id.")),
    responses(
        (status = 200, description = "Revoked.", body = Revoked),
        (status = 404, description = "`no_such_key`: none unrevoked of that id here.", body = ErrorBody),
    ),
)]
pub(crate) async fn revoke_key(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    {
        let (shared, id) = (shared.clone(), id.clone());
        blocking(move || {
            let keys = ApiKeys::new(shared.store.as_ref(), &shared.access_lock, &shared.cluster);
            Ok(keys.revoke(&env, &id, now_ms())?)
        })
        .await?;
    }
    Ok(noted(
        Json(Revoked {
            revoked: id.clone(),
        }),
        AuditNote::new(id, "revoked"),
    ))
}

/// A page of the control-plane audit log.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ControlAuditResponse {
    /// Records, oldest first.
    pub records: Vec<ControlAuditRecord>,
    /// Pass as `after` to get the records that follow.
    pub next_after: i64,
}

/// A page of an audit log.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageQuery {
    /// Records after this id (`next_after` of the previous page).
    after: Option<i64>,
    /// Records at most (default 1,000, at most 10,000).
    limit: Option<u32>,
}

/// What a revocation did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revoked {
    /// The id revoked.
    pub revoked: String,
}

/// A page of the control-plane audit log: who did what, to what, when, and how it ended.
#[utoipa::path(
    get,
    path = "/v1/audit/control",
    tag = "access",
    params(PageQuery),
    responses((status = 200, description = "Records, oldest first.", body = ControlAuditResponse)),
)]
pub(crate) async fn control_audit(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Query(query): Query<PageQuery>,
) -> Result<Json<ControlAuditResponse>, ApiError> {
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(1000).min(10_000);
    let records =
        blocking(move || Ok(shared.store.control_audit(&env.name, after, limit)?)).await?;
    let next_after = records.last().map_or(after, |r| r.id);
    Ok(Json(ControlAuditResponse {
        records,
        next_after,
    }))
}

/// `POST /v1/functions/{name}/extend`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    /// The new expiry: a date (through its end, UTC) or an RFC 3339 time.
    pub until: String,
}

/// Moves a function's expiry, as a new release.
#[utoipa::path(
    post,
    path = "/v1/functions/{name}/extend",
    tag = "functions",
    params(("name" = String, Path, description = "The function.", example = "hello")),
    request_body = ExtendRequest,
    responses(
        (status = 200, description = "The new release.", body = crate::services::releases::DeployResponse),
        (status = 400, description = "`invalid_until`.", body = ErrorBody),
        (status = 404, description = "`no_such_function`.", body = ErrorBody),
        (status = 409, description = "`release_changed`: another deploy changed the function meanwhile.", body = ErrorBody),
        (status = 422, description = "`until_in_the_past`, `invalid_configuration`, `vetting_failed`.", body = ErrorBody),
    ),
)]
pub(crate) async fn extend(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    request: Result<Json<ExtendRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = json_body(request, "extend")?;
    // A function that is not there is the first thing to say, as before any parsing.
    env.function(&name)?;
    let until: Expiry = request
        .until
        .parse()
        .map_err(|message| ApiError::bad_request("invalid_until", message))?;
    let changed =
        crate::services::releases::extend(shared, &caller.actor(), &env, &name, until).await?;
    Ok(noted(
        Json(changed.response),
        AuditNote::new(name, changed.detail),
    ))
}
