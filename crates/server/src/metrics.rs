//! Prometheus metrics, named after OpenTelemetry's FaaS semantic conventions where one
//! exists. Labels are bounded: function, environment and status; never request ids.
//!
//! The `prometheus` crate writes the classic text format (0.0.4), which `promtool check
//! metrics` and every Prometheus version read without content negotiation.

use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};

use prometheus::{
    CounterVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use runway_meter::{InvocationRecord, InvocationStatus};

const FUNCTION: &[&str] = &["function", "environment"];
const FUNCTION_STATUS: &[&str] = &["function", "environment", "status"];

/// Every metric the node exports.
pub(crate) struct Metrics {
    registry: Registry,
    invocations: IntCounterVec,
    errors: IntCounterVec,
    timeouts: IntCounterVec,
    pub(crate) coldstarts: IntCounterVec,
    duration: HistogramVec,
    init_duration: HistogramVec,
    mem_usage: HistogramVec,
    gb_seconds: CounterVec,
    cost: CounterVec,
    pub(crate) in_flight: IntGaugeVec,
    pub(crate) memory_size: IntGaugeVec,
    pub(crate) functions: IntGauge,
    environments: IntGauge,
    pub(crate) deploys: IntCounter,
    pub(crate) compiles: IntCounterVec,
    pub(crate) integrity_failures: IntCounterVec,
    pub(crate) retention_pruned: IntCounterVec,
    pub(crate) accept_errors: IntCounterVec,
    pub(crate) open_connections: IntGaugeVec,
    pub(crate) store_bytes: IntGauge,
    /// Invocation records waiting in memory for the store.
    pub(crate) meter_backlog: IntGauge,
    /// Invocation records lost: the backlog was full, or the store kept refusing them.
    pub(crate) meter_lost: IntGauge,
    pub(crate) records_written: IntCounter,
    pub(crate) policy_denials: IntCounterVec,
    pub(crate) audit_dropped: IntCounter,
    pub(crate) policy_audit_only: IntCounterVec,
    pub(crate) gateway_refused: IntCounterVec,
    pub(crate) admin_refused: IntCounterVec,
    pub(crate) audit_refusals_sampled: IntCounter,
    pub(crate) expires_at: IntGaugeVec,
    pub(crate) expiring_soon: IntGaugeVec,
    pub(crate) retired: IntGaugeVec,
    pub(crate) jobs: IntCounterVec,
    pub(crate) schedule_ticks: IntCounterVec,
    running: Mutex<HashMap<(String, String), Arc<AtomicU32>>>,
    /// Budget enforcement per function, shared by all its releases (see `budgets`).
    budget_states: Mutex<HashMap<(String, String), Arc<std::sync::atomic::AtomicU8>>>,
    pub(crate) budget_used: prometheus::GaugeVec,
    pub(crate) budget_projected: prometheus::GaugeVec,
    pub(crate) budget_alerts: IntCounterVec,
}

const POLICY: &[&str] = &["capability", "environment", "function"];

const DURATION_BUCKETS: [f64; 20] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric =
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric name");
    metric
}

fn float_counter(registry: &Registry, name: &str, help: &str) -> CounterVec {
    let metric = CounterVec::new(Opts::new(name, help), FUNCTION).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric name");
    metric
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> HistogramVec {
    let metric = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), FUNCTION)
        .expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric name");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGaugeVec {
    let metric =
        IntGaugeVec::new(Opts::new(name, help), FUNCTION).expect("valid metric definition");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric name");
    metric
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let r = Registry::new();
        let functions = IntGauge::new(
            "runway_functions",
            "Functions served by this node, in every environment",
        )
        .expect("valid");
        let environments = IntGauge::new("runway_environments", "Environments served by this node")
            .expect("valid");
        let deploys = IntCounter::new("runway_deploys_total", "Deploys accepted by this node")
            .expect("valid");
        let records_written = IntCounter::new(
            "runway_meter_records_written_total",
            "Invocation records persisted by the meter writer",
        )
        .expect("valid");
        let audit_refusals_sampled = IntCounter::new(
            "runway_audit_refusals_unrecorded_total",
            "Admin API refusals of callers without a known token left out of the audit log \
             beyond 600 a minute (runway_admin_refused_total counts them all)",
        )
        .expect("valid");
        let audit_dropped = IntCounter::new(
            "runway_audit_dropped_total",
            "Audit records dropped because a flood of denials outran the audit writer",
        )
        .expect("valid");
        for metric in [
            Box::new(functions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(environments.clone()),
            Box::new(deploys.clone()),
            Box::new(records_written.clone()),
            Box::new(audit_dropped.clone()),
            Box::new(audit_refusals_sampled.clone()),
        ] {
            r.register(metric).expect("unique metric name");
        }
        Metrics {
            audit_refusals_sampled,
            running: Mutex::default(),
            budget_states: Mutex::default(),
            budget_used: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "runway_budget_used_ratio",
                        "Share of each monthly budget spent this calendar month (1 = all of it)",
                    ),
                    &["budget"],
                )
                .expect("valid metric definition");
                r.register(Box::new(g.clone())).expect("unique metric name");
                g
            },
            budget_projected: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "runway_budget_projected_ratio",
                        "Month-end cost at the current burn rate, as a share of each budget",
                    ),
                    &["budget"],
                )
                .expect("valid metric definition");
                r.register(Box::new(g.clone())).expect("unique metric name");
                g
            },
            budget_alerts: counter(
                &r,
                "runway_budget_alerts_total",
                "Budget alerts sent, by budget and threshold (50, 80, 100 percent)",
                &["budget", "threshold"],
            ),
            gateway_refused: counter(
                &r,
                "runway_gateway_refused_total",
                "Requests refused before the function ran, by reason (unauthenticated, forbidden, \
                 rate_limited, concurrency_limit, expired, revoked)",
                &["function", "environment", "reason"],
            ),
            admin_refused: counter(
                &r,
                "runway_admin_refused_total",
                "Admin API calls refused, by status (401 unauthenticated, 403 forbidden)",
                &["status"],
            ),
            expires_at: gauge(
                &r,
                "runway_function_expires_timestamp_seconds",
                "When a function with `expires` stops serving, in Unix seconds",
            ),
            expiring_soon: gauge(
                &r,
                "runway_function_expiring_soon",
                "1 when a function expires within 14 days (or has expired), else 0",
            ),
            retired: gauge(
                &r,
                "runway_function_retired",
                "1 when a function has passed its expiry and answers 410 Gone",
            ),
            jobs: counter(
                &r,
                "runway_jobs_total",
                "Queued and scheduled job rounds by outcome: succeeded, retried (failed, will run again), \
                 deferred (held back by max_concurrency, no attempt spent), dead",
                &["function", "environment", "outcome"],
            ),
            schedule_ticks: counter(
                &r,
                "runway_schedule_ticks_total",
                "Schedule ticks claimed by this node (each enqueues one run)",
                FUNCTION,
            ),
            audit_dropped,
            policy_denials: counter(
                &r,
                "runway_policy_denials_total",
                "Calls refused because the function's policy does not grant them",
                POLICY,
            ),
            policy_audit_only: counter(
                &r,
                "runway_policy_audit_only_total",
                "Calls beyond the policy let through because the function runs in audit mode",
                POLICY,
            ),
            invocations: counter(
                &r,
                "faas_invocations_total",
                "Invocations per function and status (ok, error, timeout, out_of_memory)",
                FUNCTION_STATUS,
            ),
            errors: counter(
                &r,
                "faas_errors_total",
                "Invocations that failed (error or out_of_memory)",
                FUNCTION,
            ),
            timeouts: counter(
                &r,
                "faas_timeouts_total",
                "Invocations stopped at their timeout",
                FUNCTION,
            ),
            coldstarts: counter(
                &r,
                "faas_coldstarts_total",
                "First invocation of a release on this node (compiled code loaded, instance pool warmed)",
                FUNCTION,
            ),
            duration: histogram(
                &r,
                "faas_invoke_duration_seconds",
                "Duration of invocations, from instantiation to the end of the handler",
                DURATION_BUCKETS.to_vec(),
            ),
            init_duration: histogram(
                &r,
                "faas_init_duration_seconds",
                "Time to create a fresh store and instance for one invocation",
                DURATION_BUCKETS.to_vec(),
            ),
            mem_usage: histogram(
                &r,
                "faas_mem_usage_bytes",
                "Max memory used (linear-memory high-water mark) per invocation",
                // 1 MiB to 4 GiB, doubling.
                (0..13)
                    .map(|i| f64::from(1u32 << 20) * f64::from(1u32 << i))
                    .collect(),
            ),
            gb_seconds: float_counter(
                &r,
                "runway_compute_gigabyte_seconds_total",
                "Compute billed: memory size in GB times billed seconds",
            ),
            cost: float_counter(
                &r,
                "runway_cost_dollars_total",
                "Money billed, in US dollars",
            ),
            in_flight: gauge(&r, "runway_in_flight_requests", "Invocations running now"),
            memory_size: gauge(
                &r,
                "runway_function_memory_size_bytes",
                "Memory size of the release each function serves",
            ),
            accept_errors: counter(
                &r,
                "runway_accept_errors_total",
                "Failed accepts per listener (out of descriptors, or the client reset first)",
                &["listener"],
            ),
            open_connections: {
                let g = IntGaugeVec::new(
                    Opts::new(
                        "runway_open_connections",
                        "Connections open per listener (capped by --max-connections)",
                    ),
                    &["listener"],
                )
                .expect("valid metric definition");
                r.register(Box::new(g.clone())).expect("unique metric name");
                g
            },
            retention_pruned: counter(
                &r,
                "runway_retention_pruned_total",
                "Rows deleted for being older than the node's retention, by kind",
                &["kind"],
            ),
            store_bytes: {
                let g = IntGauge::new(
                    "runway_store_bytes",
                    "Bytes the control-plane store occupies on disk (write-ahead log included)",
                )
                .expect("valid");
                r.register(Box::new(g.clone())).expect("unique metric name");
                g
            },
            meter_backlog: {
                let g = IntGauge::new(
                    "runway_meter_backlog_records",
                    "Invocation records waiting in memory because the store is unreachable",
                )
                .expect("valid");
                r.register(Box::new(g.clone())).expect("unique metric name");
                g
            },
            meter_lost: {
                let g = IntGauge::new(
                    "runway_meter_lost_records",
                    "Invocation records lost since start: the backlog was full, or the store \
                     kept refusing them",
                )
                .expect("valid");
                r.register(Box::new(g.clone())).expect("unique metric name");
                g
            },
            integrity_failures: counter(
                &r,
                "runway_integrity_failures_total",
                "Stored artifacts (refused) and cached compiled code (recompiled) whose bytes no \
                 longer match their recorded SHA-256",
                &["kind"],
            ),
            compiles: counter(
                &r,
                "runway_compiles_total",
                "Components made ready, by source: compiled now or loaded from the compile cache",
                &["source"],
            ),
            functions,
            environments,
            deploys,
            records_written,
            registry: r,
        }
    }

    /// The count of a function's running invocations, shared by all its releases.
    pub(crate) fn running(&self, function: &str, environment: &str) -> Arc<AtomicU32> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((function.to_owned(), environment.to_owned()))
            .or_default()
            .clone()
    }

    /// A function's budget enforcement (0 open, 1 throttled, 2 stopped), shared by all its
    /// releases so a deploy does not lift it.
    pub(crate) fn budget_state(
        &self,
        function: &str,
        environment: &str,
    ) -> Arc<std::sync::atomic::AtomicU8> {
        self.budget_states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((function.to_owned(), environment.to_owned()))
            .or_default()
            .clone()
    }

    /// Pre-creates a function's series so they read zero from the moment of deploy.
    pub(crate) fn register_function(&self, function: &str, environment: &str) {
        let labels = [function, environment];
        for status in InvocationStatus::ALL {
            self.invocations
                .with_label_values(&[function, environment, status.as_str()]);
        }
        self.errors.with_label_values(&labels);
        self.timeouts.with_label_values(&labels);
        self.coldstarts.with_label_values(&labels);
        self.duration.with_label_values(&labels);
        self.init_duration.with_label_values(&labels);
        self.mem_usage.with_label_values(&labels);
        self.gb_seconds.with_label_values(&labels);
        self.cost.with_label_values(&labels);
        self.in_flight.with_label_values(&labels);
    }

    /// Drops a removed function's series, so a deleted environment leaves nothing behind.
    pub(crate) fn forget_function(&self, function: &str, environment: &str) {
        let labels = [function, environment];
        for status in InvocationStatus::ALL {
            _ = self
                .invocations
                .remove_label_values(&[function, environment, status.as_str()]);
        }
        for vec in [&self.errors, &self.timeouts, &self.coldstarts] {
            _ = vec.remove_label_values(&labels);
        }
        for vec in [&self.duration, &self.init_duration, &self.mem_usage] {
            _ = vec.remove_label_values(&labels);
        }
        _ = self.gb_seconds.remove_label_values(&labels);
        _ = self.cost.remove_label_values(&labels);
        for vec in [
            &self.in_flight,
            &self.memory_size,
            &self.expires_at,
            &self.expiring_soon,
            &self.retired,
        ] {
            _ = vec.remove_label_values(&labels);
        }
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(function.to_owned(), environment.to_owned()));
    }

    /// Sets the function and environment gauges from what the node serves.
    pub(crate) fn set_function_total(&self, environments: &crate::environments::Environments) {
        let (mut envs, mut functions) = (0, 0);
        for env in environments.all() {
            envs += 1;
            functions += env.routes.load().functions.len();
        }
        self.environments.set(envs);
        self.functions.set(functions as i64);
    }

    /// Folds one invocation record into the series (called on the meter thread).
    pub(crate) fn observe(&self, record: &InvocationRecord) {
        let labels = [record.function.as_str(), record.environment.as_str()];
        self.invocations
            .with_label_values(&[labels[0], labels[1], record.status.as_str()])
            .inc();
        match record.status {
            InvocationStatus::Ok | InvocationStatus::ClientGone => {}
            InvocationStatus::Timeout => self.timeouts.with_label_values(&labels).inc(),
            InvocationStatus::Error | InvocationStatus::OutOfMemory => {
                self.errors.with_label_values(&labels).inc();
            }
        }
        self.duration
            .with_label_values(&labels)
            .observe(record.duration_us as f64 / 1e6);
        self.init_duration
            .with_label_values(&labels)
            .observe(record.instantiate_us as f64 / 1e6);
        self.mem_usage
            .with_label_values(&labels)
            .observe(record.max_memory_bytes as f64);
        self.gb_seconds
            .with_label_values(&labels)
            .inc_by(record.gb_seconds);
        self.cost
            .with_label_values(&labels)
            .inc_by(record.cost.as_usd());
    }

    /// The Prometheus text exposition of every series.
    pub(crate) fn encode(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("encoding gathered metrics to text")
    }
}
