//! Prometheus metrics, named after OpenTelemetry's FaaS semantic conventions where one
//! exists. Labels are bounded: function, environment and status; never request ids.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use runway_meter::{InvocationRecord, InvocationStatus};
use std::sync::atomic::AtomicU64;

/// Labels of per-function series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FunctionLabels {
    pub(crate) function: String,
    pub(crate) environment: String,
}

/// Labels of per-function series split by invocation status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabels {
    pub(crate) function: String,
    pub(crate) environment: String,
    pub(crate) status: String,
}

/// Labels of compile counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SourceLabels {
    pub(crate) source: String,
}

type FloatCounter = Counter<f64, AtomicU64>;

/// Every metric the node exports.
pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    invocations: Family<StatusLabels, Counter>,
    errors: Family<FunctionLabels, Counter>,
    timeouts: Family<FunctionLabels, Counter>,
    pub(crate) coldstarts: Family<FunctionLabels, Counter>,
    duration: Family<FunctionLabels, Histogram>,
    init_duration: Family<FunctionLabels, Histogram>,
    mem_usage: Family<FunctionLabels, Histogram>,
    gb_seconds: Family<FunctionLabels, FloatCounter>,
    cost: Family<FunctionLabels, FloatCounter>,
    pub(crate) in_flight: Family<FunctionLabels, Gauge>,
    pub(crate) memory_size: Family<FunctionLabels, Gauge>,
    pub(crate) functions: Gauge,
    pub(crate) deploys: Counter,
    pub(crate) compiles: Family<SourceLabels, Counter>,
    pub(crate) records_written: Counter,
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    ])
}

fn memory_histogram() -> Histogram {
    // 1 MiB to 4 GiB, doubling.
    Histogram::new((0..13).map(|i| f64::from(1u32 << 20) * f64::from(1u32 << i)))
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            invocations: Family::default(),
            errors: Family::default(),
            timeouts: Family::default(),
            coldstarts: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            init_duration: Family::new_with_constructor(duration_histogram),
            mem_usage: Family::new_with_constructor(memory_histogram),
            gb_seconds: Family::default(),
            cost: Family::default(),
            in_flight: Family::default(),
            memory_size: Family::default(),
            functions: Gauge::default(),
            deploys: Counter::default(),
            compiles: Family::default(),
            records_written: Counter::default(),
        };
        registry.register(
            "faas_invocations",
            "Invocations per function and status (ok, error, timeout, out_of_memory)",
            m.invocations.clone(),
        );
        registry.register(
            "faas_errors",
            "Invocations that failed (error or out_of_memory)",
            m.errors.clone(),
        );
        registry.register(
            "faas_timeouts",
            "Invocations stopped at their timeout",
            m.timeouts.clone(),
        );
        registry.register(
            "faas_coldstarts",
            "First invocation of a release on this node (compiled code loaded, instance pool warmed)",
            m.coldstarts.clone(),
        );
        registry.register_with_unit(
            "faas_invoke_duration",
            "Duration of invocations, from instantiation to the end of the handler",
            Unit::Seconds,
            m.duration.clone(),
        );
        registry.register_with_unit(
            "faas_init_duration",
            "Time to create a fresh store and instance for one invocation",
            Unit::Seconds,
            m.init_duration.clone(),
        );
        registry.register_with_unit(
            "faas_mem_usage",
            "Max memory used (linear-memory high-water mark) per invocation",
            Unit::Bytes,
            m.mem_usage.clone(),
        );
        registry.register(
            "runway_gb_seconds",
            "GB-seconds billed (memory size in GB x billed seconds)",
            m.gb_seconds.clone(),
        );
        registry.register(
            "runway_cost_usd",
            "Money billed, in US dollars",
            m.cost.clone(),
        );
        registry.register(
            "runway_in_flight_requests",
            "Invocations running now",
            m.in_flight.clone(),
        );
        registry.register_with_unit(
            "runway_function_memory_size",
            "Memory size of the release each function serves",
            Unit::Bytes,
            m.memory_size.clone(),
        );
        registry.register(
            "runway_functions",
            "Functions served by this node",
            m.functions.clone(),
        );
        registry.register(
            "runway_deploys",
            "Deploys accepted by this node",
            m.deploys.clone(),
        );
        registry.register(
            "runway_compiles",
            "Components made ready, by source: compiled now or loaded from the compile cache",
            m.compiles.clone(),
        );
        registry.register(
            "runway_meter_records_written",
            "Invocation records persisted by the meter writer",
            m.records_written.clone(),
        );
        *m.registry.lock().expect("fresh mutex") = registry;
        m
    }

    /// Pre-creates a function's series so they read zero from the moment of deploy.
    pub(crate) fn register_function(&self, labels: &FunctionLabels) {
        for status in InvocationStatus::ALL {
            drop(
                self.invocations
                    .get_or_create(&status_labels(labels, status)),
            );
        }
        drop(self.errors.get_or_create(labels));
        drop(self.timeouts.get_or_create(labels));
        drop(self.coldstarts.get_or_create(labels));
        drop(self.duration.get_or_create(labels));
        drop(self.init_duration.get_or_create(labels));
        drop(self.mem_usage.get_or_create(labels));
        drop(self.gb_seconds.get_or_create(labels));
        drop(self.cost.get_or_create(labels));
        drop(self.in_flight.get_or_create(labels));
    }

    /// Folds one invocation record into the series (called on the meter thread).
    pub(crate) fn observe(&self, record: &InvocationRecord) {
        let labels = FunctionLabels {
            function: record.function.clone(),
            environment: record.environment.clone(),
        };
        self.invocations
            .get_or_create(&status_labels(&labels, record.status))
            .inc();
        match record.status {
            InvocationStatus::Ok => {}
            InvocationStatus::Timeout => {
                self.timeouts.get_or_create(&labels).inc();
            }
            InvocationStatus::Error | InvocationStatus::OutOfMemory => {
                self.errors.get_or_create(&labels).inc();
            }
        }
        self.duration
            .get_or_create(&labels)
            .observe(record.duration_us as f64 / 1e6);
        self.init_duration
            .get_or_create(&labels)
            .observe(record.instantiate_us as f64 / 1e6);
        self.mem_usage
            .get_or_create(&labels)
            .observe(record.max_memory_bytes as f64);
        self.gb_seconds
            .get_or_create(&labels)
            .inc_by(record.gb_seconds);
        self.cost
            .get_or_create(&labels)
            .inc_by(record.cost.as_usd());
    }

    /// The Prometheus text exposition of every series.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .expect("writing to a String cannot fail");
        text
    }
}

fn status_labels(labels: &FunctionLabels, status: InvocationStatus) -> StatusLabels {
    StatusLabels {
        function: labels.function.clone(),
        environment: labels.environment.clone(),
        status: status.as_str().to_owned(),
    }
}
