//! A Runway node: the public gateway, the admin API, the meter writer and metrics, wired to
//! one runtime and one control-plane store.
//!
//! The server supplies policy (routes, prices, limits) to `runway-runtime`, which provides
//! the mechanism. Concerns are split by module: [`gateway`] serves functions, `admin`
//! serves the API, `deploy` turns uploads into releases, `live` holds what is served now.
//! This crate never prints; the binary decides what reaches the terminal.

mod access_api;
mod admin;
mod artifacts_api;
mod auth;
mod budgets;
mod capabilities;
mod deploy;
mod environments;
mod error;
mod extract;
pub mod gateway;
mod invocation;
mod jobs;
mod lifespan;
mod live;
mod metrics;
mod openapi;
mod policy_api;

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use runway_meter::{MeterHandle, MeterWriter, Pricing};
use runway_runtime::{Runtime, RuntimeConfig, RuntimeError};
use runway_store::{ControlStore, SqliteStore, StoreError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use access_api::{
    ApiKeyInfo, ControlAuditResponse, CreateKeyRequest, CreateTokenRequest, CreatedKey,
    CreatedToken, ExtendRequest, TokenInfo,
};
pub use admin::{
    ConfigureRequest, CostBreakdown, CostResponse, FunctionInfo, INVOKE_BODY_LIMIT, InvokeRequest,
    InvokeResponse, LogsResponse, PromoteRequest, PromoteResponse, ReleaseInfo, RollbackRequest,
};
pub use artifacts_api::{RevokeRequest, RevokeResponse, SignatureResponse};
pub use auth::{AccessError, Bootstrap};
pub use budgets::{BudgetStatus, CapacityReport, SetBudgetRequest};
pub use capabilities::CapabilityError;
pub use deploy::{DeployFunction, DeployRequest, DeployResponse, RestoreSummary, RollbackResponse};
pub use environments::{
    CreateEnvironmentRequest, CreatedEnvironment, EnvironmentInfo, RemovedEnvironment,
};
pub use error::{ApiError, ErrorBody};
pub use jobs::{EnqueueResponse, JobsResponse};
pub use lifespan::EXPIRY_WARNING;
pub use openapi::document as openapi_document;
pub use policy_api::{AuditResponse, SecretsResponse, SqlRowsResponse, SuggestResponse};
pub use runway_access::Role;
pub use runway_store::{AuditRecord, SecretInfo};
pub use runway_store::{Budget, BudgetKind, RevokedArtifact};
pub use runway_store::{ControlAuditRecord, Job, JobState};
pub use runway_store::{CostDimension, CostRow, Digest, LogEntry, Usage};

use capabilities::PlatformCapabilities;
use metrics::Metrics;

/// Refusals of callers without a known token written to the audit log, at most.
const ANONYMOUS_REFUSALS_AUDITED: runway_access::Rate = runway_access::Rate {
    count: 600,
    per: Duration::from_secs(60),
};

/// How long a graceful shutdown waits for requests in flight before it gives up on them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Gateway address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Admin API address (port 0 picks a free port).
    pub admin_listen: SocketAddr,
    /// Folder holding the database, artifacts and compile cache.
    pub data_dir: PathBuf,
    /// Prices used to bill invocations.
    pub pricing: Pricing,
    /// Largest request body the gateway accepts, in bytes.
    pub max_request_body: u64,
    /// Engine settings; its cache folder is set from `data_dir`.
    pub runtime: RuntimeConfig,
    /// The node's home environment: served on plain host names, never removed.
    pub environment: String,
    /// Domains under which `NAME.<domain>` reaches environment NAME (`NAME.localhost`
    /// always does).
    pub env_domains: Vec<String>,
    /// Home environment: refuse deploys whose component imports a capability its policy
    /// does not grant.
    pub strict_vetting: bool,
    /// Home environment: serves production, so functions in policy audit mode are refused.
    pub production: bool,
    /// The key that seals secrets at rest (created if missing); default `<data_dir>/secrets.key`.
    pub secret_key_file: Option<PathBuf>,
    /// Fixed DNS answers for outbound requests, `host=ip`.
    pub outbound_resolve: Vec<String>,
    /// PEM certificates trusted for outbound https beside the Mozilla roots.
    pub outbound_ca_file: Option<PathBuf>,
    /// Require a token on every admin API call (off only on loopback).
    pub auth: bool,
    /// The bootstrap admin token to store on first start instead of generating one.
    pub bootstrap_token: Option<String>,
    /// Public keys the home environment trusts; when set, every artifact deployed to it
    /// must carry a signature by one of them.
    pub trusted_keys: Option<PathBuf>,
    /// Where budget alerts are POSTed as JSON.
    pub budget_webhook: Option<String>,
}

impl NodeConfig {
    /// Defaults: gateway on 127.0.0.1:8080, admin on 127.0.0.1:8081, state in `data_dir`.
    pub fn new(data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            runtime: RuntimeConfig::new(data_dir.join("cache")),
            data_dir,
            pricing: Pricing::default(),
            max_request_body: 6 << 20,
            environment: runway_store::DEFAULT_ENVIRONMENT.to_owned(),
            env_domains: Vec::new(),
            strict_vetting: false,
            production: false,
            secret_key_file: None,
            outbound_resolve: Vec::new(),
            outbound_ca_file: None,
            auth: true,
            bootstrap_token: None,
            trusted_keys: None,
            budget_webhook: None,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine could not be set up.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A host capability (secrets, SQL, key-value, outbound) could not be set up.
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    /// Control-plane access could not be set up.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The home environment's name is not a valid environment name.
    #[error("--home-env: {0}")]
    HomeEnvironment(String),
    /// The trusted-keys file could not be used.
    #[error("--trusted-keys: {0}")]
    TrustedKeys(#[from] runway_signing::SigningError),
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr} for the {what}: {source} (pick another address with {flag})")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The flag that sets it.
        flag: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// State shared by the gateway and the admin API.
pub(crate) struct Shared {
    /// Every environment served, each with its routes, keys and rules.
    pub(crate) environments: ArcSwap<environments::Environments>,
    /// Domains whose subdomains name environments (beside `localhost`).
    pub(crate) env_domains: Vec<String>,
    /// Where the gateway listens.
    pub(crate) gateway_addr: SocketAddr,
    pub(crate) store: Arc<dyn ControlStore>,
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) meter: MeterHandle,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) pricing: Pricing,
    pub(crate) max_request_body: u64,
    pub(crate) deploy_lock: tokio::sync::Mutex<()>,
    pub(crate) in_flight: TaskTracker,
    pub(crate) request_ids: RequestIds,
    pub(crate) capabilities: PlatformCapabilities,
    /// Whether admin API calls need a token.
    pub(crate) auth: bool,
    /// Wakes the job worker when a job is enqueued.
    pub(crate) job_ready: tokio::sync::Notify,
    /// Serialises changes to tokens and API keys with the reload of the key table.
    pub(crate) access_lock: std::sync::Mutex<()>,
    /// How many refusals of callers without a known token are written to the audit log.
    pub(crate) anonymous_refusals: runway_access::RateLimiter,
}

/// Request ids: a random per-node prefix and a counter, shaped like a UUID.
pub(crate) struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        let prefix =
            RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()));
        RequestIds {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    pub(crate) fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let p = self.prefix;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (p >> 32) as u32,
            (p >> 16) as u16,
            p as u16,
            (n >> 48) as u16,
            n & 0xffff_ffff_ffff
        )
    }
}

async fn bind(
    addr: SocketAddr,
    what: &'static str,
    flag: &'static str,
) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| NodeError::Bind {
            what,
            addr,
            flag,
            source,
        })
}

/// A running node.
pub struct Node {
    gateway_addr: SocketAddr,
    admin_addr: SocketAddr,
    restored: RestoreSummary,
    bootstrap: Bootstrap,
    stop: CancellationToken,
    shared: Arc<Shared>,
    meter: MeterWriter,
    servers: tokio::task::JoinSet<()>,
}

/// What a graceful shutdown did.
#[derive(Debug, Clone)]
pub struct ShutdownReport {
    /// Invocation records persisted by this node in its lifetime.
    pub records_written: u64,
    /// Whether every in-flight invocation finished before the drain timeout.
    pub drained: bool,
}

impl Node {
    /// Opens the store, restores the functions it served, binds both listeners and starts
    /// serving. Returns once the sockets are bound.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        environments::check_name(&config.environment).map_err(NodeError::HomeEnvironment)?;
        if !config.auth && !config.admin_listen.ip().is_loopback() {
            return Err(AccessError::InsecureAdmin(config.admin_listen).into());
        }
        let trusted_keys = config
            .trusted_keys
            .as_deref()
            .map(runway_signing::TrustedKeys::read)
            .transpose()?;
        let store: Arc<dyn ControlStore> = Arc::new(SqliteStore::open(&config.data_dir)?);
        let bootstrap = if config.auth {
            auth::bootstrap(
                store.as_ref(),
                &config.environment,
                config.bootstrap_token.as_deref(),
            )?
        } else {
            Bootstrap::Disabled
        };
        let mut runtime_config = config.runtime.clone();
        runtime_config.cache_dir = config.data_dir.join("cache");
        let runtime = Arc::new(Runtime::new(runtime_config)?);
        let metrics = Arc::new(Metrics::new());
        let secret_key_file = config
            .secret_key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join("secrets.key"));
        let capabilities = Arc::new(PlatformCapabilities::new(
            &config.data_dir,
            &secret_key_file,
            &config.outbound_resolve,
            config.outbound_ca_file.as_deref(),
            store.clone(),
            metrics.clone(),
        )?);
        let (environments, restored) = {
            let home_rules = environments::Rules {
                trusted_keys,
                strict_vetting: config.strict_vetting,
                production: config.production,
                paused_schedules: false,
            };
            let (store, runtime, metrics, home, capabilities) = (
                store.clone(),
                runtime.clone(),
                metrics.clone(),
                config.environment.clone(),
                capabilities.clone(),
            );
            tokio::task::spawn_blocking(move || {
                environments::restore_all(
                    store.as_ref(),
                    &runtime,
                    &metrics,
                    &capabilities,
                    &home,
                    home_rules,
                )
            })
            .await
            .expect("restore task panicked")?
        };
        metrics.set_function_total(&environments);
        let capabilities = Arc::into_inner(capabilities).expect("restore released its handle");
        let sink = store.record_sink()?;
        let meter = {
            let metrics = metrics.clone();
            MeterWriter::spawn(sink, move |record| {
                metrics.observe(record);
                metrics.records_written.inc();
                tracing::info!(target: "runway::report", function = %record.function, "{}", record.report_line());
            })
        };
        let gateway = bind(config.listen, "gateway", "--listen").await?;
        let admin = bind(config.admin_listen, "admin API", "--admin-listen").await?;
        let gateway_addr = gateway.local_addr().expect("bound socket has an address");
        let admin_addr = admin.local_addr().expect("bound socket has an address");
        let shared = Arc::new(Shared {
            environments: ArcSwap::from_pointee(environments),
            env_domains: config.env_domains.clone(),
            gateway_addr,
            store,
            runtime,
            meter: meter.handle(),
            metrics,
            pricing: config.pricing,
            max_request_body: config.max_request_body,
            deploy_lock: tokio::sync::Mutex::new(()),
            in_flight: TaskTracker::new(),
            request_ids: RequestIds::new(),
            capabilities,
            auth: config.auth,
            job_ready: tokio::sync::Notify::new(),
            access_lock: std::sync::Mutex::new(()),
            anonymous_refusals: runway_access::RateLimiter::new(ANONYMOUS_REFUSALS_AUDITED),
        });
        let stop = CancellationToken::new();
        let mut servers = tokio::task::JoinSet::new();
        servers.spawn(gateway::serve(gateway, shared.clone(), stop.clone()));
        servers.spawn(jobs::work(shared.clone(), stop.clone()));
        servers.spawn(jobs::schedule(shared.clone(), stop.clone()));
        servers.spawn(lifespan::watch(shared.clone(), stop.clone()));
        servers.spawn(budgets::watch(
            shared.clone(),
            config.budget_webhook.clone(),
            stop.clone(),
        ));
        let router = admin::router(shared.clone());
        let admin_stop = stop.clone();
        servers.spawn(async move {
            let served = axum::serve(admin, router)
                .with_graceful_shutdown(async move { admin_stop.cancelled().await })
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "admin API server failed");
            }
        });
        Ok(Node {
            gateway_addr,
            admin_addr,
            restored,
            bootstrap,
            stop,
            shared,
            meter,
            servers,
        })
    }

    /// Where the gateway listens.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway_addr
    }

    /// Where the admin API listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// What was restored from the store at start.
    pub fn restored(&self) -> &RestoreSummary {
        &self.restored
    }

    /// The bootstrap admin token this start created, if any.
    pub fn bootstrap(&self) -> &Bootstrap {
        &self.bootstrap
    }

    /// Creates a control-plane token in-process (for `runway up`), audited as `system`.
    pub fn issue_token(
        &self,
        role: Role,
        ttl: Duration,
        label: &str,
    ) -> Result<String, StoreError> {
        let (record, secret) = auth::create_token(
            self.shared.store.as_ref(),
            role,
            None,
            ttl,
            label.to_owned(),
            "system",
        )?;
        self.shared
            .store
            .append_control_audit(&runway_store::ControlAuditRecord::now(
                &self.shared.environments.load().home.name,
                "system",
                "token.create",
                record.id,
                201,
                "ok",
                format!("{label}: role {role}"),
            ))?;
        Ok(secret)
    }

    /// Number of environments served now, the home one included.
    pub fn environment_count(&self) -> usize {
        self.shared.environments.load().all().count()
    }

    /// Number of functions the home environment serves now.
    pub fn function_count(&self) -> usize {
        self.shared
            .environments
            .load()
            .home
            .routes
            .load()
            .functions
            .len()
    }

    /// Stops accepting, waits for requests in flight (up to [`DRAIN_TIMEOUT`]), then
    /// persists every invocation record.
    pub async fn shutdown(mut self) -> ShutdownReport {
        self.stop.cancel();
        while self.servers.join_next().await.is_some() {}
        self.shared.in_flight.close();
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, self.shared.in_flight.wait())
            .await
            .is_ok();
        let audit = self.shared.capabilities.audit.clone();
        tokio::task::spawn_blocking(move || audit.flush())
            .await
            .ok();
        let meter = self.meter;
        let records_written = tokio::task::spawn_blocking(move || meter.shutdown())
            .await
            .unwrap_or(0);
        ShutdownReport {
            records_written,
            drained,
        }
    }
}
