//! A Runway node: the public gateway, the admin API, the meter writer and metrics, wired to
//! one runtime and one control-plane store.
//!
//! The server supplies policy (routes, prices, limits) to `runway-runtime`, which provides
//! the mechanism. Three layers, each importing only downwards: `api` is the admin API (router,
//! handlers, the one error mapping); `services` is what the node does (releases,
//! environments, jobs, budgets, access) with no admin-API types; the serving core is
//! [`gateway`], `execute` (invoke and record), `live` (what is served now) and the rest.
//! This crate never prints; the binary decides what reaches the terminal.

mod api;
pub mod backup;
mod capabilities;
mod cluster;
mod environments;
mod execute;
pub mod gateway;
mod headers;
mod invocation;
mod lifespan;
mod listener;
mod live;
mod metrics;
pub mod retention;
mod services;

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use runway_meter::{MeterHandle, MeterWriter, Pricing};
use runway_runtime::{Runtime, RuntimeConfig, RuntimeError};
use runway_store::{ControlStore, StoreError};
use runway_store_sqlite::SqliteStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use api::access::{
    ApiKeyInfo, ControlAuditResponse, CreateKeyRequest, CreateTokenRequest, CreatedKey,
    CreatedToken, ExtendRequest, TokenInfo,
};
pub use api::artifacts::RevokeRequest;
pub use api::auth::{AccessError, Bootstrap};
pub use api::budgets::{CapacityReport, SetBudgetRequest};
pub use api::error::{ApiError, ErrorBody};
pub use api::health::{NodeInfo, NodesResponse, Readiness};
pub use api::jobs::{EnqueueResponse, JobsResponse};
pub use api::openapi::document as openapi_document;
pub use api::policy::{AuditResponse, SecretsResponse, SqlRowsResponse, SuggestResponse};
pub use api::{
    ConfigureRequest, CostBreakdown, CostResponse, FunctionInfo, INVOKE_BODY_LIMIT, InvokeRequest,
    InvokeResponse, LogsResponse, PromoteRequest, ReleaseInfo, RollbackRequest,
};
pub use capabilities::CapabilityError;
pub use lifespan::{EXPIRY_WARNING, format_ms};
pub use listener::{ConnectionLimits, fit_to_descriptors, raise_descriptor_limit};
pub use runway_access::Role;
pub use runway_store::NodeRecord;
pub use runway_store::{AuditRecord, SecretInfo};
pub use runway_store::{Budget, BudgetKind, RevokedArtifact};
pub use runway_store::{ControlAuditRecord, Job, JobState};
pub use runway_store::{CostDimension, CostRow, Digest, LogEntry, Usage};
pub use services::artifacts::{RevokeResponse, SignatureResponse};
pub use services::budgets::BudgetStatus;
pub use services::environments::{
    CreateEnvironmentRequest, CreatedEnvironment, EnvironmentInfo, RemovedEnvironment,
};
pub use services::releases::{
    DeployFunction, DeployRequest, DeployResponse, PromoteResponse, RestoreSummary,
    RollbackResponse,
};

use capabilities::PlatformCapabilities;
use metrics::Metrics;

/// Refusals of callers without a known token written to the audit log, at most.
const ANONYMOUS_REFUSALS_AUDITED: runway_access::Rate = runway_access::Rate {
    count: 600,
    per: Duration::from_secs(60),
};

/// Refusals of one known token written to the audit log, at most.
const TOKEN_REFUSALS_AUDITED: runway_access::Rate = runway_access::Rate {
    count: 60,
    per: Duration::from_secs(60),
};

/// Refusals one client address gets with one credential (or none) before it is answered
/// 429 until the budget refills.
const CLIENT_REFUSALS: runway_access::Rate = runway_access::Rate {
    count: 120,
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
    /// Connection cap and idle timeout of the gateway.
    pub gateway_connections: ConnectionLimits,
    /// Connection cap and idle timeout of the admin API.
    pub admin_connections: ConnectionLimits,
    /// How long raw records, logs, finished jobs and audit logs are kept.
    pub retention: retention::Retention,
    /// Start with an empty store when the data folder's store is missing or damaged,
    /// moving what is left aside instead of refusing to start.
    pub start_over: bool,
    /// A PostgreSQL URL: the store shared by every node of a cluster. `None` keeps the
    /// embedded SQLite store in `data_dir`.
    pub database: Option<String>,
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
            start_over: false,
            database: None,
            retention: retention::Retention::default(),
            gateway_connections: ConnectionLimits {
                max_connections: 10_000,
                idle_timeout: Duration::from_secs(30),
            },
            admin_connections: ConnectionLimits {
                max_connections: 256,
                idle_timeout: Duration::from_secs(30),
            },
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
    /// Sealed secrets exist but the key that opens them does not.
    #[error(
        "the secrets key file {} is missing, but the store holds sealed secrets that only it \
         can open: put the original file back (or point --secret-key-file at it); starting \
         with a new key would make every secret unreadable",
        path.display()
    )]
    SecretKeyMissing {
        /// Where the key was expected.
        path: PathBuf,
    },
    /// `--database` is not a PostgreSQL URL.
    #[error(
        "--database {0} is not a PostgreSQL URL: use postgres://USER:PASSWORD@HOST:PORT/DATABASE \
         (or leave it out to keep the data folder's SQLite store)"
    )]
    DatabaseUrl(String),
    /// A node sharing a store was not given the cluster's secrets key.
    #[error(
        "a node sharing a PostgreSQL store needs the cluster's secrets key, the same file on \
         every node: create it once (`openssl rand -hex 32 > secrets.key`, mode 600) and pass \
         it with --secret-key-file or RUNWAY_SECRET_KEY_FILE"
    )]
    ClusterKeyRequired,
    /// This node's secrets key is not the one the cluster's secrets are sealed with.
    #[error(
        "the secrets key {} is not the cluster's: the store's secrets were sealed with another \
         key (fingerprint {cluster}, this one's is {ours}), so this node could not read them. \
         Give every node the same key file",
        path.display()
    )]
    SecretKeyDisagrees {
        /// This node's key file.
        path: PathBuf,
        /// This key's fingerprint.
        ours: String,
        /// The fingerprint recorded by the first node.
        cluster: String,
    },
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

impl NodeError {
    /// Whether the node refused its data folder on purpose (a missing or damaged store, a
    /// missing secrets key): the message already names the folder and the fix.
    pub fn is_refused_state(&self) -> bool {
        matches!(
            self,
            NodeError::Store(
                StoreError::MissingStore { .. }
                    | StoreError::Damaged { .. }
                    | StoreError::LostLog { .. }
                    | StoreError::Unavailable { .. }
                    | StoreError::SchemaTooNew { .. }
            ) | NodeError::SecretKeyMissing { .. }
                | NodeError::DatabaseUrl(_)
                | NodeError::ClusterKeyRequired
                | NodeError::SecretKeyDisagrees { .. }
        )
    }
}

/// State shared by the gateway and the admin API.
pub(crate) struct Shared {
    /// Every environment served, each with its routes, keys and rules.
    pub(crate) environments: ArcSwap<environments::Environments>,
    /// Domains whose subdomains name environments (beside `localhost`).
    pub(crate) env_domains: Vec<String>,
    /// Where the gateway listens.
    pub(crate) gateway_addr: SocketAddr,
    /// Where the admin API listens.
    pub(crate) admin_addr: SocketAddr,
    /// This node among the nodes sharing the store.
    pub(crate) cluster: cluster::ClusterView,
    /// The last store check readiness made (reused for a second).
    pub(crate) store_check: api::health::StoreCheck,
    /// The data folder (backups stage their copies inside it).
    pub(crate) data_dir: PathBuf,
    /// Held while a backup is written: one at a time.
    pub(crate) backup_slot: Arc<tokio::sync::Semaphore>,
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
    /// How refused admin calls are limited and audited.
    pub(crate) refusals: RefusalLimits,
}

/// Budgets for refused admin API calls.
pub(crate) struct RefusalLimits {
    /// Refusals written to the audit log for callers without a known token, all together.
    pub(crate) anonymous: runway_access::RateLimiter,
    /// Refusals written to the audit log per known token.
    pub(crate) per_token: runway_access::KeyedRateLimiter,
    /// Refusals answered per client address and credential before the answer is 429.
    pub(crate) per_client: runway_access::KeyedRateLimiter,
}

impl RefusalLimits {
    fn new() -> RefusalLimits {
        RefusalLimits {
            anonymous: runway_access::RateLimiter::new(ANONYMOUS_REFUSALS_AUDITED),
            per_token: runway_access::KeyedRateLimiter::new(TOKEN_REFUSALS_AUDITED, 10_000),
            per_client: runway_access::KeyedRateLimiter::new(CLIENT_REFUSALS, 10_000),
        }
    }
}

/// Request ids: unique and unguessable, shaped like a time-ordered (version 7) UUID.
///
/// The first 48 bits are the time in milliseconds, so ids sort by time and the store's
/// index on them grows at its end (random ids cost every insert a random page: a fifth of
/// the throughput in the benchmark). The other 74 bits come from a counter, unique for the
/// node's life, run through two SipHash keys drawn from the OS at start: no caller can
/// predict them or read the node's traffic from them. No system call per request.
pub(crate) struct RequestIds {
    high: RandomState,
    low: RandomState,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        RequestIds {
            high: RandomState::new(),
            low: RandomState::new(),
            next: AtomicU64::new(0),
        }
    }

    pub(crate) fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let ms = crate::now_ms() as u64;
        let a = self.high.hash_one(n);
        // Folding `a` in keeps two ids from sharing their last bits by chance alone.
        let b = self.low.hash_one((n, a));
        format!(
            "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
            (ms >> 16) as u32,
            ms as u16,
            a as u16 & 0x0fff,
            ((b >> 48) as u16 & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }
}

/// Milliseconds since the Unix epoch, the time unit of every record.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_printed_without_their_password() {
        assert_eq!(
            redacted_database_url("postgres://runway:s3cr3t@db:5432/runway"),
            "postgres://runway:***@db:5432/runway"
        );
        assert_eq!(
            redacted_database_url("postgresql://db/runway?user=a&password=p@ss&sslmode=require"),
            "postgresql://db/runway?user=a&password=***&sslmode=require"
        );
        assert_eq!(
            redacted_database_url("postgres://runway@db/runway"),
            "postgres://runway@db/runway"
        );
    }

    #[test]
    fn request_ids_are_uuid_shaped_unique_time_ordered_and_do_not_count_up() {
        let ids = RequestIds::new();
        let all: Vec<String> = (0..10_000).map(|_| ids.next()).collect();
        let unique: std::collections::HashSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
        for id in &all[..10] {
            assert_eq!(id.len(), 36, "{id}");
            assert_eq!(&id[14..15], "7", "{id}");
        }
        // Ordered by time: the first 13 digits (milliseconds) never go back.
        assert!(all.windows(2).all(|pair| pair[0][..13] <= pair[1][..13]));
        // The rest does not count up: consecutive ids share no tail the way a counter's would.
        let shared = all
            .windows(2)
            .filter(|pair| pair[0][24..30] == pair[1][24..30])
            .count();
        assert!(shared < 5, "{shared} consecutive ids share digits 24 to 30");
        // Another node (other keys) numbers its requests differently.
        assert_ne!(RequestIds::new().next(), RequestIds::new().next());
    }
}

/// Opens the store: PostgreSQL when `database` is set (the cluster's shared store), else the
/// data folder's SQLite. With `--start-over`, a missing, damaged or crash-truncated SQLite
/// store is moved aside (into `lost+found-*` in the data folder) and an empty store starts
/// in its place. A healthy store is never touched by the flag.
fn open_store(config: &NodeConfig) -> Result<(Arc<dyn ControlStore>, Option<PathBuf>), NodeError> {
    if let Some(url) = &config.database {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(NodeError::DatabaseUrl(redacted_database_url(url)));
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StoreError::Io {
            action: "create",
            path: config.data_dir.clone(),
            source,
        })?;
        let store = runway_store_postgres::PostgresStore::open(url, &config.data_dir)?;
        return Ok((Arc::new(store), None));
    }
    match SqliteStore::open(&config.data_dir) {
        Ok(store) => Ok((Arc::new(store), None)),
        Err(
            StoreError::MissingStore { .. }
            | StoreError::Damaged { .. }
            | StoreError::LostLog { .. },
        ) if config.start_over => {
            let aside = runway_store_sqlite::start_over(&config.data_dir, false)?;
            Ok((Arc::new(SqliteStore::open(&config.data_dir)?), aside))
        }
        Err(err) => Err(err.into()),
    }
}

/// A database URL fit to print: its password, in the user part or a `password=` parameter,
/// replaced by `***`.
pub fn redacted_database_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let (start, end) = (scheme_end + 3 + colon + 1, scheme_end + 3 + at);
            out.replace_range(start..end, "***");
        }
    }
    if let Some(found) = out.find("password=") {
        let start = found + "password=".len();
        let end = out[start..].find('&').map_or(out.len(), |n| start + n);
        out.replace_range(start..end, "***");
    }
    out
}

/// Checks that this node's secrets key is the one the cluster's secrets are sealed with
/// (the first node to start records its fingerprint): a node with another key would list
/// secrets it cannot open and fail every function that reads one.
fn agree_on_secrets_key(store: &dyn ControlStore, path: &std::path::Path) -> Result<(), NodeError> {
    use sha2::Digest as _;
    let key = std::fs::read_to_string(path).map_err(|source| StoreError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let digest = sha2::Sha256::new()
        .chain_update(b"runway secrets key fingerprint\0")
        .chain_update(key.trim().as_bytes())
        .finalize();
    let ours = hex::encode(&digest[..8]);
    let cluster = store.agree_secrets_key(&ours)?;
    if cluster != ours {
        return Err(NodeError::SecretKeyDisagrees {
            path: path.to_path_buf(),
            ours,
            cluster,
        });
    }
    Ok(())
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
    moved_aside: Option<PathBuf>,
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
        let (store, moved_aside) = open_store(&config)?;
        let bootstrap = if config.auth {
            api::auth::bootstrap(
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
        if store.is_shared() && config.secret_key_file.is_none() {
            return Err(NodeError::ClusterKeyRequired);
        }
        let secret_key_file = config
            .secret_key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join("secrets.key"));
        // A new key would list the secrets and fail every call that reads one: refuse now.
        if !secret_key_file.exists() && store.has_sealed_secrets()? {
            return Err(NodeError::SecretKeyMissing {
                path: secret_key_file,
            });
        }
        let capabilities = Arc::new(PlatformCapabilities::new(
            &config.data_dir,
            &secret_key_file,
            &config.outbound_resolve,
            config.outbound_ca_file.as_deref(),
            store.clone(),
            metrics.clone(),
        )?);
        if store.is_shared() {
            agree_on_secrets_key(store.as_ref(), &secret_key_file)?;
        }
        let (environments, restored, view) = {
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
            let (restored, view) = tokio::task::spawn_blocking(move || {
                let view = cluster::ClusterView::new();
                let restored = environments::restore_all(
                    store.as_ref(),
                    &runtime,
                    &metrics,
                    &capabilities,
                    &home,
                    home_rules,
                    &view,
                );
                (restored, view)
            })
            .await
            .expect("restore task panicked");
            let (environments, restored) = restored?;
            (environments, restored, view)
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
        let descriptors = listener::raise_descriptor_limit();
        let mut gateway_connections = config.gateway_connections;
        let mut admin_connections = config.admin_connections;
        (
            gateway_connections.max_connections,
            admin_connections.max_connections,
        ) = fit_to_descriptors(
            gateway_connections.max_connections,
            admin_connections.max_connections,
            descriptors,
        );
        if gateway_connections != config.gateway_connections
            || admin_connections != config.admin_connections
        {
            tracing::warn!(
                descriptors,
                gateway = gateway_connections.max_connections,
                admin = admin_connections.max_connections,
                "the open-file limit is too low for the configured connection caps; lowered \
                 them (raise the hard limit with `ulimit -Hn` or LimitNOFILE=)"
            );
        }
        let gateway = bind(config.listen, "gateway", "--listen").await?;
        let admin = bind(config.admin_listen, "admin API", "--admin-listen").await?;
        let gateway_addr = gateway.local_addr().expect("bound socket has an address");
        let admin_addr = admin.local_addr().expect("bound socket has an address");
        let shared = Arc::new(Shared {
            environments: ArcSwap::from_pointee(environments),
            env_domains: config.env_domains.clone(),
            gateway_addr,
            admin_addr,
            cluster: view,
            store_check: Default::default(),
            data_dir: config.data_dir.clone(),
            backup_slot: Arc::new(tokio::sync::Semaphore::new(1)),
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
            refusals: RefusalLimits::new(),
        });
        let stop = CancellationToken::new();
        let mut servers = tokio::task::JoinSet::new();
        servers.spawn(gateway::serve(
            gateway,
            shared.clone(),
            gateway_connections,
            stop.clone(),
        ));
        servers.spawn(cluster::follow(shared.clone(), stop.clone()));
        servers.spawn(cluster::heartbeat(shared.clone(), stop.clone()));
        servers.spawn(services::worker::work(shared.clone(), stop.clone()));
        servers.spawn(services::worker::schedule(shared.clone(), stop.clone()));
        servers.spawn(lifespan::watch(shared.clone(), stop.clone()));
        servers.spawn(retention::watch(
            shared.clone(),
            config.retention,
            stop.clone(),
        ));
        servers.spawn(services::budgets::watch(
            shared.clone(),
            config.budget_webhook.clone(),
            stop.clone(),
        ));
        servers.spawn(api::serve(
            admin,
            shared.clone(),
            admin_connections,
            stop.clone(),
        ));
        Ok(Node {
            gateway_addr,
            admin_addr,
            restored,
            moved_aside,
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

    /// Where `--start-over` moved a missing or damaged store's leftovers, if it did.
    pub fn moved_aside(&self) -> Option<&std::path::Path> {
        self.moved_aside.as_deref()
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
        let (record, secret) = api::auth::create_token(
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
        // Unready first: load balancers stop sending new requests while these finish.
        self.shared
            .cluster
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
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
        // Off the membership list first: it is the last write, and it must come before the
        // checkpoint below.
        let shared = self.shared.clone();
        let left = tokio::task::spawn_blocking(move || {
            shared.store.leave(Some(&shared.cluster.node_id), 0)
        })
        .await;
        if let Ok(Err(err)) = left {
            tracing::warn!(error = %err, "could not take this node off the membership list");
        }
        // After the last write: the main files alone then hold the whole state, so losing a
        // `-wal` file after a clean stop loses nothing.
        let shared = self.shared.clone();
        let checkpointed = tokio::task::spawn_blocking(move || {
            shared.capabilities.checkpoint();
            shared.store.checkpoint()
        })
        .await;
        if let Ok(Err(err)) = checkpointed {
            tracing::error!(error = %err, "could not checkpoint the store at shutdown");
        }
        ShutdownReport {
            records_written,
            drained,
        }
    }
}
