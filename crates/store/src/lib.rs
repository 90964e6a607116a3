//! The control plane's state behind one interface: artifacts by digest, immutable numbered
//! releases, which release each function serves, invocation records and function logs.
//!
//! [`ControlStore`] is what the server uses: one trait per concern ([`interfaces`]) that every
//! backend implements (`runway-store-sqlite`, the embedded default; `runway-store-postgres`, for
//! many nodes). The rules both share (release dedup, hourly rollups) live in [`rules`]. This
//! crate knows nothing of wasmtime, HTTP or any database driver.

pub mod cluster;
mod control;
pub mod interfaces;
/// Every store interface, for `use runway_store::prelude::*` where a file calls several.
pub mod prelude {
    pub use crate::cluster::ClusterStore;
    pub use crate::interfaces::{
        AccessStore, ArtifactStore, AuditStore, BudgetStore, ControlStore, EnvironmentStore,
        JobStore, MaintenanceStore, ReleaseStore, SecretStore, UsageStore,
    };
}
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod rules;

use std::fmt;

use runway_manifest::FunctionConfig;
use runway_meter::{LogStream, PicoUsd};
use runway_policy::VettingReport;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use cluster::{ChangeFeed, ClusterStore, NodeRecord};
pub use control::{
    ApiKeyRecord, ArtifactSignature, Budget, BudgetAction, BudgetKind, ControlAuditRecord,
    EnvironmentRecord, EnvironmentRules, Job, JobRequest, JobResult, JobSource, JobState,
    JobUpdate, RevokedArtifact, TokenRecord,
};
pub use interfaces::{
    AccessStore, ArtifactStore, AuditStore, BudgetStore, ControlStore, EnvironmentStore, JobStore,
    MaintenanceStore, ReleaseStore, SecretStore, UsageStore,
};

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
        /// The backend driver's error.
        source: BackendError,
    },
    /// The database cannot be reached (down, restarting, or the network is cut); the same
    /// call can succeed later.
    #[error("the store is unreachable while {action}: {source}")]
    Unavailable {
        /// What the store was doing.
        action: &'static str,
        /// The backend driver's error.
        source: BackendError,
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
        data_dir.display(), database.display()
    )]
    MissingStore {
        /// The data folder.
        data_dir: std::path::PathBuf,
        /// The database file that should be there.
        database: std::path::PathBuf,
        /// What it still holds.
        found: String,
    },
    /// The last run crashed and the write-ahead log holding its latest changes is gone.
    #[error(
        "the node on {} did not stop cleanly and its write-ahead log {} is gone: the changes \
         it held since the last checkpoint are lost. Put the file back, or restore a backup \
         (`runway restore BACKUP --replace`); to serve what {} holds anyway, delete {}",
        data_dir.display(),
        log.display(),
        database.display(),
        marker.display()
    )]
    LostLog {
        /// The data folder.
        data_dir: std::path::PathBuf,
        /// The write-ahead log that is gone.
        log: std::path::PathBuf,
        /// The database file.
        database: std::path::PathBuf,
        /// The file that says the last run did not stop cleanly.
        marker: std::path::PathBuf,
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
    /// The backend cannot do this.
    #[error("the {backend} store cannot {what}: {instead}")]
    Unsupported {
        /// What was asked.
        what: &'static str,
        /// Which backend.
        backend: &'static str,
        /// What to do instead.
        instead: &'static str,
    },
    /// The store was written by a newer Runway.
    #[error(
        "the database schema is version {found}, newer than this binary understands ({supported}); \
         run a newer runway, or point this one at another store"
    )]
    SchemaTooNew {
        /// Version in the database.
        found: i64,
        /// Newest version this binary knows.
        supported: i64,
    },
}

/// A backend driver's error, kept as the source of a [`StoreError`] without naming the driver.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

impl StoreError {
    /// A database error of any backend while doing `action`.
    pub fn database(
        action: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::Database {
            action,
            source: Box::new(source),
        }
    }

    /// Whether the call may succeed when retried later (the database was unreachable).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
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
