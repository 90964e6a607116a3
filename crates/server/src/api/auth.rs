//! Control-plane access: every admin API call presents a token whose role and environment
//! scope allow it, and every change (or refusal) is written to the control-plane audit log.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use runway_access::{Role, SecretHash};
use runway_store::{ControlAuditRecord, ControlStore, StoreError, TokenRecord};

use crate::Shared;
use crate::api::error::ApiError;
use crate::now_ms;
use crate::services::audit;

/// Who is calling, once their token checked out.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The token id (`t-…`), or `anonymous` when authentication is off.
    pub(crate) id: String,
    /// The only environment the token may act on.
    pub(crate) environment: Option<String>,
}

impl Caller {
    /// The caller as the services see it: who acts, and within which scope.
    pub(crate) fn actor(&self) -> crate::services::tokens::Actor<'_> {
        crate::services::tokens::Actor {
            id: &self.id,
            scope: self.environment.as_deref(),
        }
    }
}

/// What a handler did, for the audit log: attached to its response.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuditNote {
    pub(crate) target: String,
    pub(crate) detail: String,
}

impl AuditNote {
    pub(crate) fn new(target: impl Into<String>, detail: impl Into<String>) -> AuditNote {
        AuditNote {
            target: target.into(),
            detail: detail.into(),
        }
    }
}

/// Attaches an audit note to a handler's answer.
pub(crate) fn noted(response: impl IntoResponse, note: AuditNote) -> Response {
    let mut response = response.into_response();
    response.extensions_mut().insert(note);
    response
}

/// A role requirement for a group of routes.
#[derive(Clone)]
pub(crate) struct Guarded {
    pub(crate) shared: Arc<Shared>,
    pub(crate) role: Role,
}

/// The stable name of an admin action, from the route it came through.
fn action_name(method: &Method, route: &str) -> String {
    let name = match (method.as_str(), route) {
        ("PUT", "/v1/artifacts/{digest}") => "artifact.upload",
        ("PUT", "/v1/artifacts/{digest}/signature") => "artifact.sign",
        ("POST", "/v1/artifacts/{digest}/revoke") => "artifact.revoke",
        ("POST", "/v1/deploy") => "deploy",
        ("POST", "/v1/functions/{name}/invoke") => "function.invoke",
        ("POST", "/v1/functions/{name}/enqueue") => "function.enqueue",
        ("POST", "/v1/functions/{name}/extend") => "function.extend",
        ("POST", "/v1/functions/{name}/rollback") => "function.rollback",
        ("PUT", "/v1/secrets/{name}") => "secret.set",
        ("POST", "/v1/sql/apply") => "sql.apply",
        ("POST", "/v1/sql/query") => "sql.query",
        ("POST", "/v1/tokens") => "token.create",
        ("DELETE", "/v1/tokens/{id}") => "token.revoke",
        ("POST", "/v1/keys") => "key.create",
        ("DELETE", "/v1/keys/{id}") => "key.revoke",
        ("POST", "/v1/jobs/{id}/retry") => "job.retry",
        ("POST", "/v1/functions/{name}/promote") => "function.promote",
        ("POST", "/v1/functions/{name}/configure") => "function.configure",
        ("POST", "/v1/envs") => "env.create",
        ("PUT", "/v1/budgets") => "budget.set",
        ("DELETE", "/v1/budgets/{id}") => "budget.remove",
        ("DELETE", "/v1/envs/{name}") => "env.remove",
        ("POST", "/v1/backup") => "backup",
        _ => return format!("{method} {route}"),
    };
    name.to_owned()
}

/// Why a presented token does not authenticate.
fn check_token(
    token: Option<&TokenRecord>,
    now_ms: i64,
) -> Result<&TokenRecord, (&'static str, String)> {
    let Some(token) = token else {
        return Err((
            "unknown_token",
            "the token is not known to this node; create one with `runway token create`".into(),
        ));
    };
    if let Some(at) = token.revoked_at_ms {
        return Err((
            "revoked_token",
            format!(
                "token {} was revoked at {}; ask an admin for a new one",
                token.id,
                crate::lifespan::format_ms(at)
            ),
        ));
    }
    if let Some(at) = token.expires_at_ms.filter(|at| *at <= now_ms) {
        return Err((
            "expired_token",
            format!(
                "token {} expired at {}; ask an admin for a new one",
                token.id,
                crate::lifespan::format_ms(at)
            ),
        ));
    }
    Ok(token)
}

/// The admin API's gate: authenticates, authorises, runs the handler, and audits.
pub(crate) async fn require(
    State(guard): State<Guarded>,
    mut request: Request,
    next: Next,
) -> Response {
    let shared = guard.shared.clone();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |m| m.as_str().to_owned(),
    );
    let path = request.uri().path().to_owned();
    let action = action_name(&method, &route);
    let env_name = take_environment(&mut request)
        .unwrap_or_else(|| shared.environments.load().home.name.clone());
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let caller = if shared.auth {
        // Environment routes name their environment in the path or body, and their handlers
        // check the caller's scope against it.
        let acts_on = (!route.starts_with("/v1/envs")).then_some(env_name.as_str());
        match authenticate(&shared, presented.as_deref(), guard.role, acts_on).await {
            Ok(caller) => caller,
            Err((actor, error)) => {
                let now = std::time::Instant::now();
                let client = request
                    .extensions()
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                    .map_or_else(|| "unknown".to_owned(), |info| info.0.ip().to_string());
                // A client refused again and again with the same credential (or none) is
                // answered 429 without another audit record until its budget refills; the
                // same client with a good token, and other clients, are unaffected.
                if let Err(wait) = shared
                    .refusals
                    .per_client
                    .try_acquire(&format!("{client} {actor}"), now)
                {
                    shared
                        .metrics
                        .admin_refused
                        .with_label_values(&["429"])
                        .inc();
                    shared.metrics.audit_refusals_sampled.inc();
                    let mut response = ApiError {
                        status: http::StatusCode::TOO_MANY_REQUESTS,
                        code: "too_many_refusals",
                        message: format!(
                            "too many refused calls from {client} with this credential; retry \
                             with a valid token in {} s",
                            wait.as_secs().max(1)
                        ),
                    }
                    .into_response();
                    response.headers_mut().insert(
                        http::header::RETRY_AFTER,
                        http::HeaderValue::from(wait.as_secs().max(1)),
                    );
                    return response;
                }
                shared
                    .metrics
                    .admin_refused
                    .with_label_values(&[error.status.as_str()])
                    .inc();
                let record = ControlAuditRecord::now(
                    &env_name,
                    actor,
                    action,
                    path,
                    error.status.as_u16(),
                    "denied",
                    format!("{} (client {client})", error.message),
                );
                // Refusals are recorded up to a rate per credential (all callers without a
                // known token share one), so neither a flood of guesses nor a leaked revoked
                // token can grow the database without bound; the metric above counts them all.
                let budget = if record.actor == "anonymous" {
                    shared.refusals.anonymous.try_acquire(now)
                } else {
                    shared.refusals.per_token.try_acquire(&record.actor, now)
                };
                if budget.is_ok() {
                    audit(&shared, record).await;
                } else {
                    shared.metrics.audit_refusals_sampled.inc();
                }
                let mut response = error.into_response();
                response.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer realm=\"runway-admin\""),
                );
                return response;
            }
        }
    } else {
        Caller {
            id: "anonymous".into(),
            environment: None,
        }
    };
    let actor = caller.id.clone();
    request.extensions_mut().insert(caller);
    let environment = shared.environments.load().get(&env_name).cloned();
    match environment {
        Some(env) => {
            request.extensions_mut().insert(env);
        }
        None if route.starts_with("/v1/envs") => {}
        None => {
            let error = crate::api::error::no_such_environment(&env_name);
            if method != Method::GET && method != Method::HEAD {
                let record = ControlAuditRecord::now(
                    &env_name,
                    actor,
                    action,
                    path,
                    error.status.as_u16(),
                    "refused",
                    error.message.clone(),
                );
                audit(&shared, record).await;
            }
            return error.into_response();
        }
    }
    // The handler and its audit record run in their own task: a client that disconnects
    // mid-call cannot stop the record from being written for a change that went through.
    let task = tokio::spawn(async move {
        let response = next.run(request).await;
        let reads = method == Method::GET || method == Method::HEAD;
        if !reads {
            let note = response.extensions().get::<AuditNote>().cloned();
            let status = response.status();
            let outcome = if status.is_success() {
                "ok"
            } else if status.is_client_error() {
                "refused"
            } else {
                "failed"
            };
            let (target, detail) = match note {
                Some(note) => (note.target, note.detail),
                None => (path, String::new()),
            };
            let record = ControlAuditRecord::now(
                &env_name,
                actor,
                action,
                target,
                status.as_u16(),
                outcome,
                detail,
            );
            audit(&shared, record).await;
        }
        response
    });
    task.await.unwrap_or_else(|err| {
        ApiError::internal(format!("an admin API handler failed: {err}")).into_response()
    })
}

/// Removes `env=NAME` from the request's query (handlers never see it) and returns NAME,
/// percent-decoded as any query value is.
fn take_environment(request: &mut Request) -> Option<String> {
    let query = request.uri().query()?;
    let mut found = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("env=") {
            Some(_) => {
                found = form_urlencoded::parse(pair.as_bytes())
                    .next()
                    .map(|(_, value)| value.into_owned());
                false
            }
            None => true,
        })
        .collect();
    found.as_ref()?;
    let path = request.uri().path();
    let rebuilt = if rest.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = rebuilt.parse().ok();
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    found
}

async fn authenticate(
    shared: &Arc<Shared>,
    presented: Option<&str>,
    required: Role,
    env_name: Option<&str>,
) -> Result<Caller, (String, ApiError)> {
    let unauthorized = |actor: String, code: &'static str, message: String| {
        (
            actor,
            ApiError {
                status: StatusCode::UNAUTHORIZED,
                code,
                message,
            },
        )
    };
    let Some(header) = presented else {
        return Err(unauthorized(
            "anonymous".into(),
            "missing_token",
            "this admin API needs a token: pass --token or set RUNWAY_TOKEN (the node printed \
             its bootstrap admin token when it first started)"
                .into(),
        ));
    };
    let Some(secret) = runway_access::bearer(header) else {
        return Err(unauthorized(
            "anonymous".into(),
            "malformed_authorization",
            "the Authorization header must be `Bearer <token>`".into(),
        ));
    };
    let hash = SecretHash::of(secret);
    let store = shared.store.clone();
    let found = tokio::task::spawn_blocking(move || store.token_by_hash(&hash.0))
        .await
        .map_err(|err| {
            (
                "anonymous".to_owned(),
                ApiError::internal(format!("token lookup failed: {err}")),
            )
        })?
        .map_err(|err| ("anonymous".to_owned(), ApiError::from(err)))?;
    let token = check_token(found.as_ref(), now_ms()).map_err(|(code, message)| {
        let actor = found.as_ref().map_or("anonymous", |t| t.id.as_str());
        unauthorized(actor.to_owned(), code, message)
    })?;
    let forbidden = |message: String| {
        (
            token.id.clone(),
            ApiError {
                status: StatusCode::FORBIDDEN,
                code: "forbidden",
                message,
            },
        )
    };
    if token.role < required {
        return Err(forbidden(format!(
            "token {} has role {}; this needs {} or above",
            token.id, token.role, required
        )));
    }
    if let (Some(scope), Some(env_name)) = (token.environment.as_deref(), env_name)
        && scope != env_name
    {
        return Err(forbidden(format!(
            "token {} is scoped to environment `{scope}` and cannot act on `{env_name}`",
            token.id
        )));
    }
    Ok(Caller {
        id: token.id.clone(),
        environment: token.environment.clone(),
    })
}

/// The bootstrap admin token this start created, if it created one.
#[derive(Clone)]
pub enum Bootstrap {
    /// Tokens already existed: nothing was created.
    Existing,
    /// Created from `RUNWAY_ADMIN_TOKEN`; the operator already knows it.
    FromEnvironment {
        /// Its id.
        id: String,
    },
    /// Generated now; shown once.
    Generated {
        /// Its id.
        id: String,
        /// The secret to print once.
        secret: String,
    },
    /// Authentication is off.
    Disabled,
    /// Tokens exist but no unscoped admin token is usable, and no RUNWAY_ADMIN_TOKEN was
    /// given to recover with.
    LockedOut,
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bootstrap::Existing => f.write_str("Existing"),
            Bootstrap::Disabled => f.write_str("Disabled"),
            Bootstrap::LockedOut => f.write_str("LockedOut"),
            Bootstrap::FromEnvironment { id } => write!(f, "FromEnvironment({id})"),
            Bootstrap::Generated { id, .. } => write!(f, "Generated({id}, [redacted])"),
        }
    }
}

/// Why the node cannot set up control-plane access.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `RUNWAY_ADMIN_TOKEN` is unusable.
    #[error("{0}")]
    BadBootstrapToken(String),
    /// Authentication off on a reachable address.
    #[error(
        "refusing to serve the admin API on {0} without authentication: anyone who can reach it \
         could deploy code; drop --no-auth or listen on a loopback address"
    )]
    InsecureAdmin(std::net::SocketAddr),
}

/// Creates the first admin token when the store has none.
pub(crate) fn bootstrap(
    store: &dyn ControlStore,
    environment: &str,
    chosen: Option<&str>,
) -> Result<Bootstrap, AccessError> {
    let tokens = store.tokens()?;
    let now = now_ms();
    // Recovery: when every unscoped admin token has expired or been revoked, nobody could
    // manage tokens again. Whoever starts the node owns its data folder, so a start with
    // RUNWAY_ADMIN_TOKEN stores a new admin token (audited as token.recover).
    let locked_out = !tokens.is_empty()
        && !tokens.iter().any(|t| {
            t.role == Role::Admin
                && t.environment.is_none()
                && t.revoked_at_ms.is_none()
                && t.expires_at_ms.is_none_or(|at| at > now)
        });
    let recovering = locked_out && chosen.is_some();
    if !tokens.is_empty() && !recovering {
        return Ok(if locked_out {
            Bootstrap::LockedOut
        } else {
            Bootstrap::Existing
        });
    }
    let minted = runway_access::mint_token();
    let (secret, hash, from_env) = match chosen {
        Some(chosen) => {
            runway_access::check_bootstrap_token(chosen).map_err(AccessError::BadBootstrapToken)?;
            (chosen.to_owned(), SecretHash::of(chosen), true)
        }
        None => (minted.secret, minted.hash, false),
    };
    store.create_token(&TokenRecord {
        id: minted.id.clone(),
        hash: hash.0,
        role: Role::Admin,
        environment: None,
        label: if locked_out {
            "recovery admin".into()
        } else {
            "bootstrap admin".into()
        },
        created_at_ms: now,
        expires_at_ms: None,
        revoked_at_ms: None,
        created_by: "system".into(),
    })?;
    store.append_control_audit(&ControlAuditRecord::now(
        environment,
        "system",
        if locked_out {
            "token.recover"
        } else {
            "token.bootstrap"
        },
        minted.id.clone(),
        201,
        "ok",
        if locked_out {
            "no unscoped admin token was usable: admin token from RUNWAY_ADMIN_TOKEN"
        } else if from_env {
            "bootstrap admin token from RUNWAY_ADMIN_TOKEN"
        } else {
            "bootstrap admin token generated and printed once"
        },
    ))?;
    Ok(if from_env {
        Bootstrap::FromEnvironment { id: minted.id }
    } else {
        Bootstrap::Generated {
            id: minted.id,
            secret,
        }
    })
}

/// Creates a token; returns its record and secret.
pub(crate) fn create_token(
    store: &dyn ControlStore,
    role: Role,
    environment: Option<String>,
    ttl: Duration,
    label: String,
    created_by: &str,
) -> Result<(TokenRecord, String), StoreError> {
    let minted = runway_access::mint_token();
    let now = now_ms();
    let record = TokenRecord {
        id: minted.id,
        hash: minted.hash.0,
        role,
        environment,
        label,
        created_at_ms: now,
        expires_at_ms: Some(now.saturating_add(ttl.as_millis() as i64)),
        revoked_at_ms: None,
        created_by: created_by.to_owned(),
    };
    store.create_token(&record)?;
    Ok((record, minted.secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(uri: &str) -> (Option<String>, String) {
        let mut request = Request::builder()
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let env = take_environment(&mut request);
        (env, request.uri().to_string())
    }

    #[test]
    fn the_environment_is_taken_from_the_query_and_percent_decoded() {
        assert_eq!(
            taken("/v1/functions?env=pr%2D42&limit=5"),
            (Some("pr-42".into()), "/v1/functions?limit=5".into())
        );
        assert_eq!(
            taken("/v1/functions?env=dev"),
            (Some("dev".into()), "/v1/functions".into())
        );
        assert_eq!(
            taken("/v1/functions?limit=5"),
            (None, "/v1/functions?limit=5".into())
        );
    }
}
