//! The admin API of least privilege: the audit log, secrets, the operator's SQL, and policy
//! suggestions from observed use.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use runway_policy::{Attempt, Capability, Policy, SecretName};
use runway_store::{AuditRecord, SecretInfo};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::api::blocking;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::{Body, Path, Query};
use crate::capabilities::store_secret;
use crate::environments::Environment;

/// A page of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditResponse {
    /// Records, oldest first.
    pub records: Vec<AuditRecord>,
    /// Pass as `after` to get the records that follow.
    pub next_after: i64,
}

/// The names of an environment's secrets.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecretsResponse {
    /// The environment.
    pub environment: String,
    /// Names and update times; never values.
    pub secrets: Vec<SecretInfo>,
}

/// A policy suggestion from what a function was observed attempting.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SuggestResponse {
    /// The function.
    pub function: String,
    /// Its current policy.
    pub current: Policy,
    /// The least policy covering the current grants and everything observed.
    pub suggested: Policy,
    /// `suggested` as a `[function.policy]` table.
    pub toml: String,
    /// Audit records the suggestion is based on.
    pub observed: usize,
    /// Observed attempts no grant can allow (PRAGMA, ATTACH, schema changes, internal
    /// addresses), which the function must stop making.
    pub never_grantable: Vec<Attempt>,
}

/// What applying SQL did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SqlApplied {
    /// The environment whose database it ran on.
    pub environment: String,
    /// Always true: a failure is an error.
    pub applied: bool,
}

/// Rows of an operator query.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SqlRowsResponse {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows as JSON values (blobs as arrays of bytes).
    pub rows: Vec<Vec<serde_json::Value>>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// Only this function's records.
    #[serde(default)]
    function: Option<String>,
    /// Records after this id (`next_after` of the previous page).
    #[serde(default)]
    after: Option<i64>,
    /// Records at most (default 1,000, at most 10,000).
    #[serde(default)]
    limit: Option<u32>,
}

/// A page of the capability audit log: refused (or, in audit mode, allowed) calls.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "policy",
    params(AuditQuery),
    responses((status = 200, description = "Records, oldest first.", body = AuditResponse)),
)]
pub(crate) async fn read_audit(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditResponse>, ApiError> {
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(1000).min(10_000);
    let records = blocking(move || {
        Ok(shared
            .store
            .audit(&env.name, query.function.as_deref(), after, limit)?)
    })
    .await?;
    let next_after = records.last().map_or(after, |r| r.id);
    Ok(Json(AuditResponse {
        records,
        next_after,
    }))
}

/// The names of the environment's secrets; values are never returned.
#[utoipa::path(
    get,
    path = "/v1/secrets",
    tag = "policy",
    responses((status = 200, description = "Names and update times.", body = SecretsResponse)),
)]
pub(crate) async fn list_secrets(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
) -> Result<Json<SecretsResponse>, ApiError> {
    let environment = env.name.clone();
    let env = environment.clone();
    let secrets = blocking(move || Ok(shared.store.secrets(&env)?)).await?;
    Ok(Json(SecretsResponse {
        environment,
        secrets,
    }))
}

/// Largest secret value accepted.
const MAX_SECRET_BYTES: usize = 64 << 10;

/// Sets a secret, sealed at rest.
#[utoipa::path(
    put,
    path = "/v1/secrets/{name}",
    tag = "policy",
    params(("name" = SecretName, Path, description = "The secret's name.")),
    request_body(content = String, content_type = "text/plain", description = "The value (UTF-8, at most 64 KiB)."),
    responses(
        (status = 200, description = "Stored.", body = SecretInfo),
        (status = 400, description = "`invalid_secret_name`, `secret_empty`, `secret_too_large`, `secret_not_text`.", body = ErrorBody),
    ),
)]
pub(crate) async fn set_secret(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Path(name): Path<String>,
    Body(body): Body,
) -> Result<Json<SecretInfo>, ApiError> {
    env.check_present()?;
    let environment = env.name.clone();
    let name = SecretName::parse(&name)
        .map_err(|err| ApiError::bad_request("invalid_secret_name", err.reason))?;
    if body.len() > MAX_SECRET_BYTES {
        return Err(ApiError::bad_request(
            "secret_too_large",
            format!(
                "the value of secret `{name}` is {} bytes; a secret may be at most {MAX_SECRET_BYTES} bytes",
                body.len()
            ),
        ));
    }
    let value = String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError::bad_request(
            "secret_not_text",
            format!("the value of secret `{name}` is not UTF-8 text"),
        )
    })?;
    if value.is_empty() {
        return Err(ApiError::bad_request(
            "secret_empty",
            format!("the value of secret `{name}` is empty"),
        ));
    }
    if value.len() < runway_cap_config::MIN_SECRET_BYTES {
        return Err(ApiError::bad_request(
            "secret_too_short",
            format!(
                "the value of secret `{name}` is {} bytes; a secret must be at least {} bytes \
                 (log redaction would reveal a shorter one)",
                value.len(),
                runway_cap_config::MIN_SECRET_BYTES
            ),
        ));
    }
    let info = blocking(move || {
        store_secret(
            shared.store.as_ref(),
            &shared.capabilities.vault,
            &environment,
            name.as_str(),
            &value,
        )?;
        let secrets = shared.store.secrets(&environment)?;
        secrets
            .into_iter()
            .find(|s| s.name == name.as_str())
            .ok_or_else(|| ApiError::internal(format!("secret `{name}` was not stored")))
    })
    .await?;
    Ok(Json(info))
}

/// Runs SQL on the environment's database, in one transaction.
#[utoipa::path(
    post,
    path = "/v1/sql/apply",
    tag = "policy",
    request_body(content = String, content_type = "text/plain", description = "SQL statements."),
    responses(
        (status = 200, description = "Applied.", body = SqlApplied),
        (status = 400, description = "`sql_not_text`.", body = ErrorBody),
        (status = 422, description = "`sql_failed`: SQLite's message; nothing was applied.", body = ErrorBody),
        (status = 501, description = "`sql_per_node`: the node shares a PostgreSQL store.", body = ErrorBody),
    ),
)]
pub(crate) async fn sql_apply(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Body(body): Body,
) -> Result<Json<SqlApplied>, ApiError> {
    env.check_present()?;
    per_node_sql(&shared)?;
    let environment = env.name.clone();
    let sql = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("sql_not_text", "the SQL is not UTF-8 text".into()))?;
    let env = environment.clone();
    blocking(move || {
        let db = shared
            .capabilities
            .sql_database(&env)
            .map_err(|err| ApiError::internal(err.to_string()))?;
        db.apply(&sql).map_err(|err| {
            ApiError::unprocessable(
                "sql_failed",
                format!("{err}; nothing was applied (the file runs in one transaction)"),
            )
        })
    })
    .await?;
    Ok(Json(SqlApplied {
        environment,
        applied: true,
    }))
}

/// Refuses the operator's SQL on a node sharing a store: the environment's database is still
/// a file of each node, so it would change (or read) one node's copy only.
fn per_node_sql(shared: &Shared) -> Result<(), ApiError> {
    if shared.store.is_shared() {
        return Err(ApiError {
            status: http::StatusCode::NOT_IMPLEMENTED,
            code: "sql_per_node",
            message: "the environment's SQL database is still a file of each node, so on nodes \
                      sharing a PostgreSQL store `runway sql` would reach one node's copy only; \
                      run it against a node with its own store"
                .into(),
        });
    }
    Ok(())
}

/// Runs one read-only SQL statement on the environment's database.
#[utoipa::path(
    post,
    path = "/v1/sql/query",
    tag = "policy",
    request_body(content = String, content_type = "text/plain", description = "One read-only SQL statement."),
    responses(
        (status = 200, description = "The rows.", body = SqlRowsResponse),
        (status = 400, description = "`sql_not_text`.", body = ErrorBody),
        (status = 422, description = "`sql_failed`: a write, or SQLite's error.", body = ErrorBody),
        (status = 501, description = "`sql_per_node`: the node shares a PostgreSQL store.", body = ErrorBody),
    ),
)]
pub(crate) async fn sql_query(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Body(body): Body,
) -> Result<Json<SqlRowsResponse>, ApiError> {
    env.check_present()?;
    per_node_sql(&shared)?;
    let environment = env.name.clone();
    let sql = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("sql_not_text", "the SQL is not UTF-8 text".into()))?;
    let rows = blocking(move || {
        let db = shared
            .capabilities
            .sql_database(&environment)
            .map_err(|err| ApiError::internal(err.to_string()))?;
        db.operator_query(&sql)
            .map_err(|err| ApiError::unprocessable("sql_failed", err.to_string()))
    })
    .await?;
    use runway_cap_sql::Value;
    Ok(Json(SqlRowsResponse {
        columns: rows.columns,
        rows: rows
            .rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|value| match value {
                        Value::Null => serde_json::Value::Null,
                        Value::Integer(i) => i.into(),
                        Value::Real(r) => r.into(),
                        Value::Text(t) => t.into(),
                        Value::Blob(b) => b.into(),
                    })
                    .collect()
            })
            .collect(),
    }))
}

/// The least policy covering a function's grants and everything it was observed attempting.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}/policy/suggest",
    tag = "policy",
    params(("name" = String, Path, description = "The function.", example = "hello")),
    responses(
        (status = 200, description = "The suggestion.", body = SuggestResponse),
        (status = 404, description = "`no_such_function`.", body = ErrorBody),
    ),
)]
pub(crate) async fn suggest_policy(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Path(name): Path<String>,
) -> Result<Json<SuggestResponse>, ApiError> {
    let live = env.function(&name)?;
    let current = live.release.config.policy.clone();
    let function = name.clone();
    let records = blocking(move || {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = shared
                .store
                .audit(&env.name, Some(&function), after, 10_000)?;
            let Some(last) = page.last() else { break };
            after = last.id;
            all.extend(page);
        }
        Ok(all)
    })
    .await?;
    let attempts: Vec<Attempt> = records
        .iter()
        .filter_map(|r| {
            Some(Attempt::new(
                Capability::parse(&r.capability)?,
                r.operation.clone(),
                r.target.clone(),
            ))
        })
        .collect();
    let (grantable, never_grantable): (Vec<Attempt>, Vec<Attempt>) = attempts
        .into_iter()
        .partition(|a| a.grant_hint().is_some() && a.operation != "connect");
    let mut never_grantable = never_grantable;
    never_grantable.sort();
    never_grantable.dedup();
    let suggested = runway_policy::suggest(&current, &grantable);
    Ok(Json(SuggestResponse {
        function: name,
        toml: suggested.to_toml(),
        current,
        suggested,
        observed: records.len(),
        never_grantable,
    }))
}
