//! The control plane's state behind one interface: artifacts by digest, immutable numbered
//! releases, which release each function serves, invocation records and function logs.
//!
//! [`ControlStore`] is what the server uses; [`SqliteStore`] is the embedded backend. A
//! PostgreSQL backend implements the same trait for several nodes sharing one control plane.
//! This crate knows nothing of wasmtime or HTTP.

mod control;
mod sqlite;
mod sqlite_control;
mod sqlite_cost;
mod sqlite_env;
mod sqlite_integrity;
mod sqlite_retention;

use std::fmt;

use runway_manifest::FunctionConfig;
use runway_meter::{LogStream, PicoUsd, RecordSink};
use runway_policy::VettingReport;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use control::{
    ApiKeyRecord, ArtifactSignature, Budget, BudgetAction, BudgetKind, ControlAuditRecord,
    EnvironmentRecord, EnvironmentRules, Job, JobRequest, JobResult, JobSource, JobState,
    JobUpdate, RevokedArtifact, TokenRecord,
};
pub use sqlite::SqliteStore;
pub use sqlite_integrity::{DATABASE_FILE, start_over};

/// The environment every function lives in until environments are created explicitly.
pub const DEFAULT_ENVIRONMENT: &str = "prod";

/// Failures of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused an operation.
    #[error("database error while {action}: {source}")]
    Database {
        /// What the store was doing.
        action: &'static str,
        /// The driver's error.
        source: rusqlite::Error,
    },
    /// A file under the data folder could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What the store was doing.
        action: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A stored value no longer parses (written by an incompatible version).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The data folder has served before, but its database is gone or empty.
    #[error(
        "the data folder {} holds {found} but its store {} is missing or empty: refusing to \
         start with no functions and a new admin token. Put the store back (`runway restore \
         BACKUP`), or start empty with --start-over (which moves the old state aside into \
         lost+found-*, deleting nothing)",
        data_dir.display(), data_dir.join(sqlite_integrity::DATABASE_FILE).display()
    )]
    MissingStore {
        /// The data folder.
        data_dir: std::path::PathBuf,
        /// What it still holds.
        found: String,
    },
    /// The last run crashed and the write-ahead log holding its latest changes is gone.
    #[error(
        "the node on {} did not stop cleanly and its write-ahead log {} is gone: the changes \
         it held since the last checkpoint are lost. Put the file back, or restore a backup \
         (`runway restore BACKUP --replace`); to serve what {} holds anyway, delete {}",
        data_dir.display(),
        data_dir.join(format!("{}-wal", sqlite_integrity::DATABASE_FILE)).display(),
        data_dir.join(sqlite_integrity::DATABASE_FILE).display(),
        data_dir.join(sqlite_integrity::RUNNING_MARKER).display()
    )]
    LostLog {
        /// The data folder.
        data_dir: std::path::PathBuf,
    },
    /// The database file fails SQLite's integrity check.
    #[error(
        "the store {} is damaged ({detail}): refusing to start on it. Restore a backup with \
         `runway restore BACKUP`, or move the data folder aside",
        path.display()
    )]
    Damaged {
        /// The database file.
        path: std::path::PathBuf,
        /// What SQLite reported.
        detail: String,
    },
    /// A stored artifact's bytes no longer have the digest they are stored under.
    #[error(
        "artifact {digest} was altered on disk: {} now has SHA-256 {actual}; refusing to \
         run it (deploy the original component again to replace it)",
        path.display()
    )]
    ArtifactAltered {
        /// The digest it is stored (and was vetted) under.
        digest: Digest,
        /// The file.
        path: std::path::PathBuf,
        /// What the bytes hash to now.
        actual: Digest,
    },
    /// The data folder was written by a newer Runway.
    #[error(
        "the database schema is version {found}, newer than this binary understands ({supported}); \
         run a newer runway or use another --data-dir"
    )]
    SchemaTooNew {
        /// Version in the database.
        found: i64,
        /// Newest version this binary knows.
        supported: i64,
    },
}

/// A SHA-256 digest of an artifact, as 64 lower-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, pattern = "^(sha256:)?[0-9a-f]{64}$", example = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"))]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(hex::encode(Sha256::digest(bytes)))
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for tables.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl TryFrom<String> for Digest {
    type Error = String;

    fn try_from(text: String) -> Result<Digest, String> {
        let text = text
            .strip_prefix("sha256:")
            .map(str::to_owned)
            .unwrap_or(text);
        if text.len() == 64
            && text
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        {
            Ok(Digest(text))
        } else {
            Err(format!(
                "invalid digest `{text}`: expected 64 lower-case hex digits of a SHA-256"
            ))
        }
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> String {
        digest.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An immutable release: one artifact with one configuration, numbered per function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Release {
    /// Environment it belongs to.
    pub environment: String,
    /// Release number, from 1, per function.
    pub number: u32,
    /// The artifact it runs.
    pub digest: Digest,
    /// The configuration frozen into it.
    pub config: FunctionConfig,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// The deploy-time vetting report: the component's imports against its policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vetting: Option<VettingReport>,
    /// Who made it: a token id, `anonymous` with authentication off, or `system`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_by: Option<String>,
    /// Where it came from when not a plain deploy (`promoted from staging release 3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// A release to create unless the function's latest release is identical.
#[derive(Debug, Clone)]
pub struct NewRelease {
    /// The artifact.
    pub digest: Digest,
    /// Its configuration.
    pub config: FunctionConfig,
    /// Its vetting report.
    pub vetting: Option<VettingReport>,
    /// Who deploys it.
    pub deployed_by: Option<String>,
    /// Where it comes from when not a plain deploy.
    pub origin: Option<String>,
}

/// One audited attempt beyond a function's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditRecord {
    /// Increasing id (0 before it is stored).
    pub id: i64,
    /// When it happened, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The environment.
    pub environment: String,
    /// The function.
    pub function: String,
    /// The release that made the call.
    pub release: u64,
    /// `sql`, `kv`, `outbound` or `secrets`.
    pub capability: String,
    /// What was attempted (`select`, `write`, `GET`, `get`, `pragma`, ...).
    pub operation: String,
    /// The table, key, origin or secret name.
    pub target: String,
    /// `denied`, or `allowed` when audit mode let it through.
    pub decision: String,
}

/// A secret's name and when it was last set; its value never leaves the store encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretInfo {
    /// The name.
    pub name: String,
    /// When it was last set, in milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
}

/// A secret as stored: the vault's nonce and ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecret {
    /// The nonce.
    pub nonce: Vec<u8>,
    /// The ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// What a deploy did for one function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeployResult {
    /// The release the function now serves.
    pub release: Release,
    /// Whether that release was created by this deploy (false: identical one existed).
    pub created: bool,
}

/// Invocation totals for one function over a period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    /// The function.
    pub function: String,
    /// Invocations in the period.
    pub invocations: u64,
    /// Invocations that did not end `ok`.
    pub failures: u64,
    /// GB-seconds billed.
    pub gb_seconds: f64,
    /// Money billed.
    pub cost: PicoUsd,
    /// Sum of measured durations, in microseconds.
    pub duration_us: u64,
}

/// What `runway cost --by` groups usage by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum CostDimension {
    /// Per environment and function.
    Function,
    /// Per environment.
    #[serde(rename = "env")]
    Environment,
    /// Per environment, function and release.
    Release,
    /// Per owner (`owner` in the manifest).
    Owner,
}

/// Usage of one group over a period; the fields that are not part of the group are `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CostRow {
    /// The environment.
    pub environment: Option<String>,
    /// The function.
    pub function: Option<String>,
    /// The release.
    pub release: Option<u32>,
    /// The owner (empty: none declared).
    pub owner: Option<String>,
    /// Invocations.
    pub invocations: u64,
    /// Invocations that did not end `ok`.
    pub failures: u64,
    /// GB-seconds billed.
    pub gb_seconds: f64,
    /// Money billed.
    pub cost: PicoUsd,
    /// Sum of measured durations, in microseconds.
    pub duration_us: u64,
    /// The most memory one invocation used, in bytes.
    pub max_memory_bytes: u64,
}

/// One function's peak use over a period (`runway capacity`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionPeak {
    /// The environment.
    pub environment: String,
    /// The function.
    pub function: String,
    /// Its memory size (the largest of its releases in the period), MiB.
    pub memory_mb: u64,
    /// The most invocations of it running at once.
    pub peak_concurrency: u32,
    /// The most memory one invocation used, bytes.
    pub max_memory_used_bytes: u64,
    /// Invocations.
    pub invocations: u64,
    /// Sum of durations, microseconds.
    pub duration_us: u64,
    /// Cost.
    pub cost: PicoUsd,
}

/// The hour in which the functions together held the most memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BusiestHour {
    /// The hour's start, milliseconds since the Unix epoch.
    pub hour_ms: i64,
    /// Instances at once (each function's peak in that hour, summed).
    pub instances: u64,
    /// Memory those instances were sized for, MiB.
    pub memory_mb: u64,
    /// Cores they were entitled to (CPU follows memory).
    pub cores: f64,
}

/// Peak use since a point in time, from the hourly rollups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Capacity {
    /// Start of the period (rounded down to the hour).
    pub since_ms: i64,
    /// Per function, the largest memory at peak first.
    pub functions: Vec<FunctionPeak>,
    /// The busiest hour, if anything ran.
    pub busiest: Option<BusiestHour>,
    /// The first hour with any use in the period.
    #[serde(default)]
    pub first_hour_ms: Option<i64>,
}

/// One line of a function's logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogEntry {
    /// Increasing id, for `--follow`.
    pub id: i64,
    /// The invocation that wrote it.
    pub request_id: String,
    /// When the invocation started, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Guest stdout, stderr or the platform.
    pub stream: LogStream,
    /// The text.
    pub line: String,
}

/// Rows that retention deletes once they are older than the node keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pruned {
    /// Raw invocation records (the hourly rollups that bills read are kept).
    Invocations,
    /// Function log lines.
    Logs,
    /// Jobs that succeeded (dead-lettered jobs wait for a person and are kept).
    SucceededJobs,
    /// The policy audit log (denials).
    PolicyAudit,
    /// The control-plane audit log (who did what).
    ControlAudit,
}

impl Pruned {
    /// Every kind, in the order they are pruned.
    pub const ALL: [Pruned; 5] = [
        Pruned::Invocations,
        Pruned::Logs,
        Pruned::SucceededJobs,
        Pruned::PolicyAudit,
        Pruned::ControlAudit,
    ];

    /// The name used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Pruned::Invocations => "invocations",
            Pruned::Logs => "logs",
            Pruned::SucceededJobs => "succeeded_jobs",
            Pruned::PolicyAudit => "policy_audit",
            Pruned::ControlAudit => "control_audit",
        }
    }
}

/// The control-plane storage interface; every backend passes the same conformance tests.
pub trait ControlStore: Send + Sync + 'static {
    /// Stores artifact bytes under their digest; returns false if already present.
    fn put_artifact(&self, digest: &Digest, bytes: &[u8]) -> Result<bool, StoreError>;
    /// Reads an artifact's bytes, if stored, refusing bytes that no longer match the digest
    /// ([`StoreError::ArtifactAltered`]).
    fn read_artifact(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError>;
    /// Whether an artifact is stored and its bytes still have its digest.
    fn artifact_intact(&self, digest: &Digest) -> Result<bool, StoreError>;
    /// Whether an artifact is stored.
    fn has_artifact(&self, digest: &Digest) -> Result<bool, StoreError>;
    /// A stored artifact's size in bytes.
    fn artifact_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError>;
    /// In one transaction: creates a release for each function whose latest release differs,
    /// and makes each function serve its new or identical release.
    fn deploy(
        &self,
        environment: &str,
        releases: &[NewRelease],
    ) -> Result<Vec<DeployResult>, StoreError>;
    /// The release each function of an environment currently serves.
    fn current_releases(&self, environment: &str) -> Result<Vec<Release>, StoreError>;
    /// Every release of one function, newest first.
    fn releases(&self, environment: &str, function: &str) -> Result<Vec<Release>, StoreError>;
    /// Makes a function serve one of its existing releases (a rollback or roll-forward);
    /// false if the function has no such release.
    fn switch_release(
        &self,
        environment: &str,
        function: &str,
        number: u32,
    ) -> Result<bool, StoreError>;
    /// Per-function totals of invocations started at or after `since_ms`.
    fn usage(&self, environment: &str, since_ms: i64) -> Result<Vec<Usage>, StoreError>;
    /// Log lines of a function with an id above `after_id`, oldest first.
    fn logs(
        &self,
        environment: &str,
        function: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<LogEntry>, StoreError>;
    /// Deletes up to `limit` rows of `what` older than `before_ms` (one short transaction,
    /// so requests and the meter writer wait at most that long); returns how many.
    fn prune(&self, what: Pruned, before_ms: i64, limit: u32) -> Result<u64, StoreError>;
    /// The bytes the store occupies on disk (its files, the write-ahead log included).
    fn size_bytes(&self) -> u64;
    /// Makes every committed change durable in the store's main file (called at shutdown,
    /// after the last write).
    fn checkpoint(&self) -> Result<(), StoreError>;
    /// Writes a consistent copy of the whole store to `target` (a new file) while it serves.
    fn backup_to(&self, target: &std::path::Path) -> Result<(), StoreError>;
    /// Whether any environment has a sealed secret (which only the node key can open).
    fn has_sealed_secrets(&self) -> Result<bool, StoreError>;
    /// The SHA-256 this node recorded for the compiled code cached under `cache_key`.
    fn compiled_checksum(&self, cache_key: &str) -> Result<Option<String>, StoreError>;
    /// Records the SHA-256 of compiled code this node has just written under `cache_key`.
    fn set_compiled_checksum(&self, cache_key: &str, sha256: &str) -> Result<(), StoreError>;
    /// A sink for the meter writer, with its own connection so writes never wait on API reads.
    fn record_sink(&self) -> Result<Box<dyn RecordSink>, StoreError>;
    /// Appends audit records.
    fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError>;
    /// Audit records of an environment (optionally one function) with an id above
    /// `after_id`, oldest first.
    fn audit(
        &self,
        environment: &str,
        function: Option<&str>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError>;
    /// Creates or replaces a sealed secret.
    fn put_secret(
        &self,
        environment: &str,
        name: &str,
        secret: &StoredSecret,
    ) -> Result<(), StoreError>;
    /// A sealed secret, if set.
    fn secret(&self, environment: &str, name: &str) -> Result<Option<StoredSecret>, StoreError>;
    /// The names of an environment's secrets.
    fn secrets(&self, environment: &str) -> Result<Vec<SecretInfo>, StoreError>;

    /// Stores a new control-plane token.
    fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    /// The token whose secret hashes to `hash`.
    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Every token, oldest first.
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Revokes a token; false if no unrevoked token has that id.
    fn revoke_token(&self, id: &str, at_ms: i64) -> Result<bool, StoreError>;
    /// Stores a new API key.
    fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError>;
    /// An environment's API keys, oldest first.
    fn api_keys(&self, environment: &str) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Revokes an API key; false if no unrevoked key has that id.
    fn revoke_api_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError>;
    /// Appends one control-plane action; returns its id.
    fn append_control_audit(&self, record: &ControlAuditRecord) -> Result<i64, StoreError>;
    /// Control-plane actions of an environment with an id above `after_id`, oldest first.
    fn control_audit(
        &self,
        environment: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<ControlAuditRecord>, StoreError>;
    /// Stores a job durably (fsync) before returning.
    fn enqueue_job(&self, job: &Job) -> Result<(), StoreError>;
    /// Marks up to `limit` due pending jobs running, leased until `lease_until_ms`, in
    /// `environment` or (with `None`) in every environment.
    fn claim_jobs(
        &self,
        environment: Option<&str>,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;
    /// Records how a job's attempt ended, if the job is still running the attempt numbered
    /// `claimed_attempts`; false if another claim superseded it.
    fn finish_job(
        &self,
        id: &str,
        claimed_attempts: u32,
        update: &JobUpdate,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Puts running jobs whose lease ended at or before `lease_before_ms` back to pending,
    /// or in the dead-letter list when that was their last attempt (`None`: every environment).
    fn requeue_abandoned(
        &self,
        environment: Option<&str>,
        lease_before_ms: i64,
        now_ms: i64,
    ) -> Result<usize, StoreError>;
    /// One job.
    fn job(&self, id: &str) -> Result<Option<Job>, StoreError>;
    /// An environment's jobs in the given states, newest first.
    fn jobs(
        &self,
        environment: &str,
        states: &[JobState],
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;
    /// Moves a dead-lettered job back to pending with its attempts reset.
    fn retry_job(&self, id: &str, now_ms: i64) -> Result<bool, StoreError>;
    /// The last tick claimed for a schedule.
    fn last_tick(
        &self,
        environment: &str,
        function: &str,
        schedule: &str,
    ) -> Result<Option<i64>, StoreError>;
    /// Claims a schedule's tick and enqueues its job atomically; false if already claimed.
    fn claim_tick(&self, schedule: &str, tick_ms: i64, job: &Job) -> Result<bool, StoreError>;
    /// Marks a function retired (once); false if it already was or is not deployed.
    fn retire(&self, environment: &str, function: &str, at_ms: i64) -> Result<bool, StoreError>;
    /// Retired functions and when they were retired.
    fn retired(&self, environment: &str) -> Result<Vec<(String, i64)>, StoreError>;
    /// Stores (or replaces) a key's signature of an artifact.
    fn add_signature(&self, signature: &ArtifactSignature) -> Result<(), StoreError>;
    /// The signatures stored for an artifact.
    fn signatures(&self, digest: &str) -> Result<Vec<ArtifactSignature>, StoreError>;
    /// Revokes an artifact for good; false if it already was.
    fn revoke_artifact(&self, revoked: &RevokedArtifact) -> Result<bool, StoreError>;
    /// Every revoked artifact.
    fn revoked_artifacts(&self) -> Result<Vec<RevokedArtifact>, StoreError>;
    /// Creates an environment (copying its source's current releases, and `secrets`, already
    /// sealed for it); `None` if the name is taken. Returns how many functions were copied.
    fn create_environment(
        &self,
        env: &EnvironmentRecord,
        secrets: &[(String, StoredSecret)],
    ) -> Result<Option<usize>, StoreError>;
    /// Registers `env` unless an environment of its name exists; returns the stored record.
    fn ensure_environment(&self, env: &EnvironmentRecord) -> Result<EnvironmentRecord, StoreError>;
    /// Every environment, by name.
    fn environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError>;
    /// Replaces an environment's rules; false if it does not exist.
    fn set_environment_rules(
        &self,
        name: &str,
        rules: &EnvironmentRules,
    ) -> Result<bool, StoreError>;
    /// Usage grouped by `by` since `since_ms`, in `environment` or in all of them; served from
    /// hourly rollups, so it stays fast with millions of records.
    fn cost_by(
        &self,
        by: CostDimension,
        environment: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<CostRow>, StoreError>;
    /// Peak concurrency and memory per function and the busiest hour since `since_ms`, in
    /// `environment` or all of them; `full_core_mb` is the memory size that buys a core.
    fn capacity(
        &self,
        environment: Option<&str>,
        since_ms: i64,
        full_core_mb: f64,
    ) -> Result<Capacity, StoreError>;
    /// Creates or replaces a budget.
    fn set_budget(&self, budget: &Budget) -> Result<(), StoreError>;
    /// Every budget, by id.
    fn budgets(&self) -> Result<Vec<Budget>, StoreError>;
    /// Removes a budget; false if there was none.
    fn remove_budget(&self, id: &str) -> Result<bool, StoreError>;
    /// Records that a budget's `threshold` alert for `month` (`2026-11`) was sent; false if it
    /// already was, so each alert goes out once.
    fn claim_budget_alert(
        &self,
        budget: &str,
        month: &str,
        threshold: u32,
        at_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Removes an environment with its functions, releases, secrets, API keys, jobs and logs,
    /// and revokes its scoped tokens; false if it did not exist.
    fn remove_environment(&self, name: &str, now_ms: i64) -> Result<bool, StoreError>;
}

/// A hash of a configuration that identifies it across deploys.
pub(crate) fn config_hash(config: &FunctionConfig) -> String {
    let json = serde_json::to_vec(config).expect("configs always serialise");
    hex::encode(Sha256::digest(json))
}
