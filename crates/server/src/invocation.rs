//! Invocation access at the gateway: API keys and JWTs per route, per-key rates, the
//! concurrency limit and expiry. Every check runs before an instance exists, so a refused
//! caller costs nothing and is never metered.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::StatusCode;
use runway_access::{RateLimiter, SecretHash};
use runway_manifest::InvocationAuth;
use runway_store::{ApiKeyRecord, ControlStore, StoreError};

use crate::live::LiveFunction;

/// One API key as the gateway checks it.
pub(crate) struct ApiKeyEntry {
    pub(crate) record: ApiKeyRecord,
    /// This node's share of the key's rate (the whole rate on a single node).
    share: Option<runway_access::Rate>,
    limiter: Option<Arc<RateLimiter>>,
}

/// Every API key of the node's environment by hash; swapped whole when keys change.
#[derive(Default)]
pub(crate) struct ApiKeyTable {
    by_hash: HashMap<String, Arc<ApiKeyEntry>>,
}

impl ApiKeyTable {
    /// Loads the environment's keys; rate buckets of keys already loaded carry over. A key's
    /// rate is cluster-wide: this node enforces its share of it ([`crate::cluster::share`]).
    pub(crate) fn load(
        store: &dyn ControlStore,
        environment: &str,
        previous: &ApiKeyTable,
        cluster: &crate::cluster::ClusterView,
    ) -> Result<ApiKeyTable, StoreError> {
        let by_hash = store
            .api_keys(environment)?
            .into_iter()
            .map(|record| {
                let share = record.rate.map(|rate| runway_access::Rate {
                    count: cluster.share_of(rate.count),
                    per: rate.per,
                });
                let entry = match previous.by_hash.get(&record.hash) {
                    // The same bucket, not a refilled copy: a reload must not reset a rate.
                    Some(old) if old.share == share => Arc::new(ApiKeyEntry {
                        record,
                        share,
                        limiter: old.limiter.clone(),
                    }),
                    _ => Arc::new(ApiKeyEntry {
                        limiter: share.map(|rate| Arc::new(RateLimiter::new(rate))),
                        share,
                        record,
                    }),
                };
                (entry.record.hash.clone(), entry)
            })
            .collect();
        Ok(ApiKeyTable { by_hash })
    }

    /// Whether a key of this hash is loaded (revoked or not).
    #[cfg(test)]
    pub(crate) fn contains(&self, hash: &str) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// Whether a key of this hash is loaded and not revoked.
    #[cfg(test)]
    pub(crate) fn is_active(&self, hash: &str) -> bool {
        self.by_hash
            .get(hash)
            .is_some_and(|entry| entry.record.revoked_at_ms.is_none())
    }
}

/// Why the gateway refused a caller.
pub(crate) struct Refusal {
    pub(crate) status: StatusCode,
    /// Metric label.
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    /// Seconds to wait, for 429.
    pub(crate) retry_after: Option<u64>,
}

impl Refusal {
    /// A caller's mistake found before the function ran.
    pub(crate) fn caller(status: StatusCode, reason: &'static str, message: String) -> Refusal {
        Refusal {
            status,
            reason,
            message,
            retry_after: None,
        }
    }

    fn unauthenticated(message: String) -> Refusal {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            reason: "unauthenticated",
            message,
            retry_after: None,
        }
    }
}

/// Who the gateway let through on a protected route.
pub(crate) enum Admitted {
    /// An API key, by id (the key itself never reaches the function).
    ApiKey(String),
    /// A verified JWT (passed on to the function, which may read its claims).
    Jwt,
}

/// Checks the caller's credentials for a route with `auth` (not `public`).
pub(crate) fn check_caller(
    auth: InvocationAuth,
    function: &LiveFunction,
    keys: &ApiKeyTable,
    authorization: Option<&str>,
    now_ms: i64,
) -> Result<Admitted, Refusal> {
    let name = function.name();
    let Some(header) = authorization else {
        return Err(Refusal::unauthenticated(format!(
            "function {name} needs {}: send `Authorization: Bearer <{}>`\n",
            if auth == InvocationAuth::Jwt {
                "a JWT"
            } else {
                "an API key"
            },
            if auth == InvocationAuth::Jwt {
                "jwt"
            } else {
                "api key"
            },
        )));
    };
    let Some(credential) = runway_access::bearer(header) else {
        return Err(Refusal::unauthenticated(
            "the Authorization header must be `Bearer <credential>`\n".into(),
        ));
    };
    match auth {
        InvocationAuth::Public => Ok(Admitted::Jwt),
        InvocationAuth::ApiKey => {
            check_api_key(name, keys, credential, now_ms).map(Admitted::ApiKey)
        }
        InvocationAuth::Jwt => {
            let Some(verifier) = &function.jwt else {
                return Err(Refusal::unauthenticated(format!(
                    "function {name} has no usable JWT key set\n"
                )));
            };
            verifier
                .verify(credential)
                .map(|_| Admitted::Jwt)
                .map_err(|refusal| Refusal::unauthenticated(format!("{refusal}\n")))
        }
    }
}

fn check_api_key(
    function: &str,
    keys: &ApiKeyTable,
    credential: &str,
    now_ms: i64,
) -> Result<String, Refusal> {
    let hash = SecretHash::of(credential);
    let Some(entry) = keys.by_hash.get(&hash.0) else {
        return Err(Refusal::unauthenticated(
            "unknown API key; create one with `runway key create --function NAME`\n".into(),
        ));
    };
    let key = &entry.record;
    if key.revoked_at_ms.is_some() {
        return Err(Refusal::unauthenticated(format!(
            "API key {} was revoked\n",
            key.id
        )));
    }
    if key.expires_at_ms.is_some_and(|at| at <= now_ms) {
        return Err(Refusal::unauthenticated(format!(
            "API key {} expired at {}\n",
            key.id,
            crate::lifespan::format_ms(key.expires_at_ms.unwrap_or_default())
        )));
    }
    if key.function != function {
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            reason: "forbidden",
            message: format!(
                "API key {} is for function {}, not {function}\n",
                key.id, key.function
            ),
            retry_after: None,
        });
    }
    if let Some(limiter) = &entry.limiter
        && let Err(wait) = limiter.try_acquire(Instant::now())
    {
        return Err(Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            reason: "rate_limited",
            message: format!(
                "API key {} is over its rate of {}; retry later\n",
                key.id,
                limiter.rate()
            ),
            retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
        });
    }
    Ok(key.id.clone())
}

/// 410 Gone once the function's `expires` has passed.
pub(crate) fn check_expiry(function: &LiveFunction, now_ms: i64) -> Result<(), Refusal> {
    if let Some(at) = function.expires_at_ms
        && at <= now_ms
    {
        return Err(Refusal {
            status: StatusCode::GONE,
            reason: "expired",
            message: format!(
                "function {} expired at {} and is retired; `runway extend {} --until DATE` \
                 brings it back\n",
                function.name(),
                crate::lifespan::format_ms(at),
                function.name()
            ),
            retry_after: None,
        });
    }
    Ok(())
}

/// A slot under the function's concurrency limit, released when dropped.
pub(crate) struct Slot(Arc<LiveFunction>, u32);

impl Slot {
    /// Invocations of the function running when this one was admitted, itself included
    /// (what capacity planning reads as concurrency).
    pub(crate) fn concurrency(&self) -> u32 {
        self.1
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
        self.0.in_flight.dec();
    }
}

/// 503 once the function's artifact has been revoked.
pub(crate) fn check_revoked(function: &LiveFunction) -> Result<(), Refusal> {
    if function.revoked.load(Ordering::Acquire) {
        return Err(Refusal {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: "revoked",
            message: format!(
                "function {} cannot run: its artifact {} was revoked; deploy a fixed release\n",
                function.name(),
                function.release.digest.short()
            ),
            retry_after: None,
        });
    }
    Ok(())
}

/// Takes a slot: refused with 503 for a revoked artifact, 410 after expiry, and 429 beyond
/// `max_concurrency`.
///
/// `max_concurrency` is cluster-wide: this node admits its share of it
/// ([`crate::cluster::share`]).
pub(crate) fn admit(
    function: &Arc<LiveFunction>,
    now_ms: i64,
    cluster: &crate::cluster::ClusterView,
) -> Result<Slot, Refusal> {
    check_revoked(function)?;
    check_expiry(function, now_ms)?;
    let budget = function.budget.load(Ordering::Acquire);
    if budget == crate::services::budgets::STOPPED {
        return Err(Refusal {
            status: StatusCode::PAYMENT_REQUIRED,
            reason: "budget_spent",
            message: format!(
                "function {} has spent its monthly budget and is stopped until the month ends \
                 or the budget is raised (`runway budget ls`)\n",
                function.name()
            ),
            retry_after: None,
        });
    }
    // The counter is shared by every release of the function, so a deploy does not reset it.
    let running = function.running.fetch_add(1, Ordering::AcqRel) + 1;
    function.in_flight.inc();
    let slot = Slot(function.clone(), running);
    if budget == crate::services::budgets::THROTTLED && running > 1 {
        drop(slot);
        return Err(Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            reason: "budget_throttled",
            message: format!(
                "function {} has spent its monthly budget and runs one invocation at a time; \
                 retry shortly\n",
                function.name()
            ),
            retry_after: Some(1),
        });
    }
    if let Some(max) = function.release.config.max_concurrency
        && running > cluster.share_of(max)
    {
        drop(slot);
        let (live, _) = cluster.place();
        let across = if live > 1 {
            format!(
                " across {live} nodes (this node runs {})",
                cluster.share_of(max)
            )
        } else {
            String::new()
        };
        return Err(Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            reason: "concurrency_limit",
            message: format!(
                "function {} is running its maximum of {max} invocations at once{across}; retry shortly\n",
                function.name()
            ),
            retry_after: Some(1),
        });
    }
    Ok(slot)
}
