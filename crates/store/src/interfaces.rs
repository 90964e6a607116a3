//! The store's interfaces, one trait per concern. A backend implements all of them;
//! [`ControlStore`] names the whole set so the server holds one `Arc<dyn ControlStore>`
//! while each part of it can ask for only the concern it uses.

use runway_meter::RecordSink;

use crate::cluster::ClusterStore;
use crate::{
    ApiKeyRecord, ArtifactSignature, AuditRecord, Budget, Capacity, ControlAuditRecord,
    CostDimension, CostRow, DeployResult, Digest, EnvironmentRecord, EnvironmentRules, Job,
    JobState, JobUpdate, LogEntry, NewRelease, Pruned, Release, RevokedArtifact, SecretInfo,
    StoreError, StoredSecret, TokenRecord, Usage,
};

/// Artifacts: content-addressed blobs, stored once under their SHA-256.
pub trait ArtifactStore: Send + Sync {
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
}

/// Releases: immutable numbered releases, which one each function serves, their signatures,
/// revocations and retirement.
pub trait ReleaseStore: Send + Sync {
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
}

/// Environments: creating one from another, their rules, removing one with everything in it.
pub trait EnvironmentStore: Send + Sync {
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
    /// Removes an environment with its functions, releases, secrets, API keys, jobs and logs,
    /// and revokes its scoped tokens; false if it did not exist.
    fn remove_environment(&self, name: &str, now_ms: i64) -> Result<bool, StoreError>;
}

/// Access: control-plane tokens and function API keys, stored by hash.
pub trait AccessStore: Send + Sync {
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
}

/// Secrets: sealed values; the store never sees plaintext.
pub trait SecretStore: Send + Sync {
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
    /// Whether any environment has a sealed secret (which only the node key can open).
    fn has_sealed_secrets(&self) -> Result<bool, StoreError>;
}

/// Jobs and schedules: the durable queue and each schedule's claimed ticks.
pub trait JobStore: Send + Sync {
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
    /// Extends the leases of running jobs this node still runs (`(id, claimed attempts)`)
    /// to `lease_until_ms`; returns how many were still this node's to extend.
    fn extend_leases(&self, jobs: &[(String, u32)], lease_until_ms: i64)
    -> Result<u64, StoreError>;
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
}

/// Usage: invocation records, function logs and the hourly rollups cost questions read.
pub trait UsageStore: Send + Sync {
    /// A sink for the meter writer, with its own connection so writes never wait on API reads.
    fn record_sink(&self) -> Result<Box<dyn RecordSink>, StoreError>;
    /// Per-function totals of invocations started at or after `since_ms`, by function name:
    /// the cost explorer's per-function rows, so every backend answers both alike.
    fn usage(&self, environment: &str, since_ms: i64) -> Result<Vec<Usage>, StoreError> {
        let rows = self.cost_by(CostDimension::Function, Some(environment), since_ms)?;
        let mut usage: Vec<Usage> = rows
            .into_iter()
            .map(|row| Usage {
                function: row.function.unwrap_or_default(),
                invocations: row.invocations,
                failures: row.failures,
                gb_seconds: row.gb_seconds,
                cost: row.cost,
                duration_us: row.duration_us,
            })
            .collect();
        usage.sort_by(|a, b| a.function.cmp(&b.function));
        Ok(usage)
    }
    /// Log lines of a function with an id above `after_id`, oldest first.
    fn logs(
        &self,
        environment: &str,
        function: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<LogEntry>, StoreError>;
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
}

/// Budgets and the alerts each has sent.
pub trait BudgetStore: Send + Sync {
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
}

/// Audit: policy decisions of functions and actions on the control plane.
pub trait AuditStore: Send + Sync {
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
    /// Appends one control-plane action; returns its id.
    fn append_control_audit(&self, record: &ControlAuditRecord) -> Result<i64, StoreError>;
    /// Control-plane actions of an environment with an id above `after_id`, oldest first.
    fn control_audit(
        &self,
        environment: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<ControlAuditRecord>, StoreError>;
}

/// Upkeep of the store itself: retention, size, durability, backups, and the node's
/// compiled-code checksums.
pub trait MaintenanceStore: Send + Sync {
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
    /// The SHA-256 this node recorded for the compiled code cached under `cache_key`.
    fn compiled_checksum(&self, cache_key: &str) -> Result<Option<String>, StoreError>;
    /// Records the SHA-256 of compiled code this node has just written under `cache_key`.
    fn set_compiled_checksum(&self, cache_key: &str, sha256: &str) -> Result<(), StoreError>;
}

/// Every concern of the control plane: what a backend is. Every backend passes the same
/// conformance suite (`runway_store::conformance`, feature `conformance`).
pub trait ControlStore:
    ArtifactStore
    + ReleaseStore
    + EnvironmentStore
    + AccessStore
    + SecretStore
    + JobStore
    + UsageStore
    + BudgetStore
    + AuditStore
    + MaintenanceStore
    + ClusterStore
    + 'static
{
}

impl<T> ControlStore for T where
    T: ArtifactStore
        + ReleaseStore
        + EnvironmentStore
        + AccessStore
        + SecretStore
        + JobStore
        + UsageStore
        + BudgetStore
        + AuditStore
        + MaintenanceStore
        + ClusterStore
        + 'static
{
}
