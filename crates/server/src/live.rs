//! The functions a node serves now, and the route table the gateway reads lock-free.
//!
//! A deploy builds a complete new [`RouteTable`] and swaps it in atomically. A request
//! takes an `Arc` to the [`LiveFunction`] it matched, so it finishes on the release it
//! started on even if a deploy lands meanwhile, and no request ever sees half a deploy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use prometheus::{IntCounter, IntGauge};
use runway_access::JwtVerifier;
use runway_manifest::{HttpTrigger, InvocationAuth, RouteKind};
use runway_runtime::{Capabilities, Limits, Prepared};
use runway_store::Release;

use crate::metrics::Metrics;

/// One function's current release, ready to serve.
pub(crate) struct LiveFunction {
    pub(crate) release: Release,
    pub(crate) prepared: Arc<Prepared>,
    pub(crate) limits: Limits,
    pub(crate) memory_mb: u64,
    pub(crate) in_flight: IntGauge,
    /// Invocations running now across all releases of the function (for `max_concurrency`).
    pub(crate) running: Arc<AtomicU32>,
    /// Verifies bearer JWTs for `auth = "jwt"` routes.
    pub(crate) jwt: Option<JwtVerifier>,
    /// When the function stops serving, in milliseconds since the Unix epoch.
    pub(crate) expires_at_ms: Option<i64>,
    /// Its artifact was revoked: it answers 503 and never runs again.
    pub(crate) revoked: AtomicBool,
    /// Budget enforcement: 0 open, 1 throttled (one at a time), 2 stopped.
    pub(crate) budget: Arc<std::sync::atomic::AtomicU8>,
    coldstarts: IntCounter,
    warm: AtomicBool,
}

impl LiveFunction {
    pub(crate) fn new(
        release: Release,
        prepared: Arc<Prepared>,
        capabilities: Capabilities,
        runtime: &runway_runtime::Runtime,
        metrics: &Metrics,
    ) -> LiveFunction {
        let labels = [release.config.name.as_str(), release.environment.as_str()];
        metrics.register_function(labels[0], labels[1]);
        metrics
            .memory_size
            .with_label_values(&labels)
            .set(release.config.memory.bytes() as i64);
        let limits = Limits {
            memory_bytes: release.config.memory.bytes(),
            timeout: release.config.timeout.as_duration(),
            env: release
                .config
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            capabilities: Arc::new(capabilities),
            cpu: runtime.cpu_share(
                release.config.memory.bytes(),
                release.config.cpu == runway_manifest::Cpu::Unthrottled,
            ),
        };
        let jwt = release.config.jwt.as_ref().and_then(|settings| {
            JwtVerifier::new(settings)
                .inspect_err(|err| {
                    tracing::error!(function = labels[0], error = %err, "the function's JWT key set cannot be used; its jwt routes refuse every caller");
                })
                .ok()
        });
        let expires_at_ms = release.config.expires.as_ref().map(|e| e.at_ms());
        if let Some(at) = expires_at_ms {
            let left = at - crate::now_ms();
            metrics
                .expires_at
                .with_label_values(&labels)
                .set(at.div_euclid(1000));
            metrics
                .expiring_soon
                .with_label_values(&labels)
                .set(i64::from(
                    left <= crate::lifespan::EXPIRY_WARNING.as_millis() as i64,
                ));
            metrics
                .retired
                .with_label_values(&labels)
                .set(i64::from(left <= 0));
        }
        LiveFunction {
            revoked: AtomicBool::new(false),
            running: metrics.running(labels[0], labels[1]),
            budget: metrics.budget_state(labels[0], labels[1]),
            jwt,
            expires_at_ms,
            memory_mb: release.config.memory.mib_ceil(),
            limits,
            prepared,
            in_flight: metrics.in_flight.with_label_values(&labels),
            coldstarts: metrics.coldstarts.with_label_values(&labels),
            warm: AtomicBool::new(false),
            release,
        }
    }

    pub(crate) fn name(&self) -> &str {
        self.release.config.name.as_str()
    }

    /// Counts the first invocation of this release on this node as its cold start.
    pub(crate) fn note_invocation(&self) {
        if !self.warm.load(Ordering::Relaxed) && !self.warm.swap(true, Ordering::Relaxed) {
            self.coldstarts.inc();
        }
    }
}

/// What the gateway found for a request.
pub(crate) enum RouteMatch<'a> {
    /// The function and who may call it on this route.
    Found(&'a Arc<LiveFunction>, InvocationAuth),
    /// A route matched the path but not the method; these methods would be accepted.
    WrongMethod(Vec<&'a str>),
    NotFound,
}

/// An immutable snapshot of everything a node serves.
#[derive(Default)]
pub(crate) struct RouteTable {
    pub(crate) functions: BTreeMap<String, Arc<LiveFunction>>,
    /// Exact routes first, then prefixes from longest to shortest.
    routes: Vec<(HttpTrigger, Arc<LiveFunction>)>,
}

impl RouteTable {
    pub(crate) fn new(functions: BTreeMap<String, Arc<LiveFunction>>) -> RouteTable {
        let mut routes: Vec<(HttpTrigger, Arc<LiveFunction>)> = functions
            .values()
            .flat_map(|f| f.release.config.http.iter().map(|t| (t.clone(), f.clone())))
            .collect();
        routes.sort_by_key(|(trigger, _)| {
            let exact = trigger.route.kind() == RouteKind::Exact;
            (!exact, std::cmp::Reverse(trigger.route.base().len()))
        });
        RouteTable { functions, routes }
    }

    pub(crate) fn lookup(&self, method: &str, path: &str) -> RouteMatch<'_> {
        let mut allowed = Vec::new();
        for (trigger, function) in &self.routes {
            if !trigger.route.matches(path) {
                continue;
            }
            if trigger.methods.is_empty() || trigger.methods.iter().any(|m| m.as_str() == method) {
                return RouteMatch::Found(function, trigger.auth);
            }
            allowed.extend(trigger.methods.iter().map(|m| m.as_str()));
        }
        if allowed.is_empty() {
            RouteMatch::NotFound
        } else {
            RouteMatch::WrongMethod(allowed)
        }
    }
}
