//! The embedded backend of the control-plane store: one SQLite database (WAL) plus artifact
//! files under the data folder. It implements every interface of `runway-store` and passes its
//! conformance suite.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use runway_meter::{InvocationRecord, LogStream, RecordSink, SinkError};
use rusqlite::{Connection, OptionalExtension, params};

mod cluster;
mod control;
mod cost;
mod env;
mod integrity;
mod retention;

pub use integrity::{DATABASE_FILE, start_over};
use runway_store::rules::{DeployStep, config_hash, deploy_step};
use runway_store::{
    AccessStore, ApiKeyRecord, ArtifactSignature, ArtifactStore, AuditRecord, AuditStore,
    BudgetStore, ControlAuditRecord, CostDimension, CostRow, DeployResult, Digest,
    EnvironmentRecord, EnvironmentRules, EnvironmentStore, Job, JobState, JobStore, JobUpdate,
    LogEntry, MaintenanceStore, NewRelease, Pruned, Release, ReleaseStore, RevokedArtifact,
    SecretInfo, SecretStore, StoreError, StoredSecret, TokenRecord, UsageStore,
};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE artifacts (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL
);
CREATE TABLE releases (
    environment TEXT NOT NULL,
    function    TEXT NOT NULL,
    number      INTEGER NOT NULL,
    digest      TEXT NOT NULL REFERENCES artifacts(digest),
    config      TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (environment, function, number)
);
CREATE TABLE functions (
    environment TEXT NOT NULL,
    name        TEXT NOT NULL,
    release     INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (environment, name)
);
CREATE TABLE invocations (
    request_id       TEXT PRIMARY KEY,
    environment      TEXT NOT NULL,
    function         TEXT NOT NULL,
    release          INTEGER NOT NULL,
    started_ms       INTEGER NOT NULL,
    duration_us      INTEGER NOT NULL,
    billed_ms        INTEGER NOT NULL,
    memory_mb        INTEGER NOT NULL,
    max_memory_bytes INTEGER NOT NULL,
    instantiate_us   INTEGER NOT NULL,
    status           TEXT NOT NULL,
    http_status      INTEGER NOT NULL,
    gb_seconds       REAL NOT NULL,
    cost_pusd        INTEGER NOT NULL
);
CREATE INDEX invocations_by_function ON invocations (environment, function, started_ms);
CREATE INDEX invocations_by_time ON invocations (environment, started_ms);
CREATE TABLE logs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    environment TEXT NOT NULL,
    function    TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    stream      TEXT NOT NULL,
    line        TEXT NOT NULL
);
CREATE INDEX logs_by_function ON logs (environment, function, id);
"#,
    r#"
ALTER TABLE releases ADD COLUMN vetting TEXT;
CREATE TABLE audit (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms       INTEGER NOT NULL,
    environment TEXT NOT NULL,
    function    TEXT NOT NULL,
    release     INTEGER NOT NULL,
    capability  TEXT NOT NULL,
    operation   TEXT NOT NULL,
    target      TEXT NOT NULL,
    decision    TEXT NOT NULL
);
CREATE INDEX audit_by_function ON audit (environment, function, id);
CREATE TABLE secrets (
    environment TEXT NOT NULL,
    name        TEXT NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    updated_ms  INTEGER NOT NULL,
    PRIMARY KEY (environment, name)
);
"#,
    crate::control::MIGRATION,
    crate::control::MIGRATION_4,
    crate::env::MIGRATION_5,
    "ALTER TABLE invocations ADD COLUMN cpu_throttled_us INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE invocations ADD COLUMN concurrency INTEGER NOT NULL DEFAULT 1;",
    crate::cost::MIGRATION_7,
    crate::cost::MIGRATION_8,
    crate::integrity::MIGRATION_9,
    crate::retention::MIGRATION_10,
    crate::cluster::MIGRATION_11,
];

/// The SQLite control-plane store rooted at a data folder.
pub struct SqliteStore {
    path: PathBuf,
    artifacts: PathBuf,
    conn: Mutex<Connection>,
}

/// Maps a driver error to the store's backend-neutral error, naming what was being done.
pub(crate) fn db(action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::database(action, source)
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(db("opening the database"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
    )
    .map_err(db("configuring the database"))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir` and applies pending migrations.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, StoreError> {
        let artifacts = data_dir.join("artifacts");
        std::fs::create_dir_all(&artifacts).map_err(|source| StoreError::Io {
            action: "create",
            path: artifacts.clone(),
            source,
        })?;
        let path = data_dir.join(integrity::DATABASE_FILE);
        let earlier = integrity::earlier_state(data_dir);
        if integrity::is_missing_or_empty(&path)
            && let Some(found) = earlier.clone()
        {
            return Err(StoreError::MissingStore {
                data_dir: data_dir.to_path_buf(),
                database: path,
                found,
            });
        }
        integrity::check_unclean_stop(data_dir, &path)?;
        let mut conn = open(&path).map_err(|err| damaged(&path, err))?;
        integrity::check(&conn, &path)?;
        let version = migrate(&mut conn)?;
        if version == 0
            && let Some(found) = earlier
        {
            // A file that opened but held no schema at all was not this folder's store.
            return Err(StoreError::MissingStore {
                data_dir: data_dir.to_path_buf(),
                database: path,
                found,
            });
        }
        // Only a store that is accepted is marked open: a refused one is closed at once.
        integrity::mark_running(data_dir)?;
        Ok(SqliteStore {
            path,
            artifacts,
            conn: Mutex::new(conn),
        })
    }

    fn data_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn artifact_path(&self, digest: &Digest) -> PathBuf {
        self.artifacts.join(format!("{digest}.wasm"))
    }
}

/// A database that cannot even be configured is damaged (SQLite says "file is not a
/// database" or "malformed"), not merely unavailable.
fn damaged(path: &Path, err: StoreError) -> StoreError {
    match err {
        StoreError::Database { source, .. } => StoreError::Damaged {
            path: path.to_path_buf(),
            detail: source.to_string(),
        },
        other => other,
    }
}

/// Applies pending migrations; returns the schema version found before them.
/// A store closed without a crash (a failed start, a tool that opened it) leaves no
/// "running" marker: SQLite checkpoints the write-ahead log into the file as the last
/// connection closes, so nothing can be lost with it.
impl Drop for SqliteStore {
    fn drop(&mut self) {
        integrity::mark_stopped(self.data_dir());
    }
}

fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(db("reading the schema version"))?;
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported,
        });
    }
    let tx = conn.transaction().map_err(db("migrating"))?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(migration).map_err(db("migrating"))?;
        tx.pragma_update(None, "user_version", index as i64 + 1)
            .map_err(db("migrating"))?;
    }
    tx.commit().map_err(db("migrating"))?;
    Ok(version)
}

type ReleaseRow = (
    String,
    u32,
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn release_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ReleaseRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ))
}

fn to_release(
    (environment, number, digest, config, created_at_ms, vetting, deployed_by, origin): ReleaseRow,
) -> Result<Release, StoreError> {
    let vetting = vetting
        .map(|json| serde_json::from_str(&json))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("release vetting report: {e}")))?;
    Ok(Release {
        vetting,
        environment,
        number,
        digest: Digest::try_from(digest).map_err(StoreError::Corrupt)?,
        config: serde_json::from_str(&config)
            .map_err(|e| StoreError::Corrupt(format!("release configuration: {e}")))?,
        created_at_ms,
        deployed_by,
        origin,
    })
}

const RELEASE_COLUMNS: &str =
    "r.environment, r.number, r.digest, r.config, r.created_ms, r.vetting, r.deployed_by, r.origin";

impl ArtifactStore for SqliteStore {
    fn put_artifact(&self, digest: &Digest, bytes: &[u8]) -> Result<bool, StoreError> {
        // An altered or missing file is written again: uploading the original repairs it.
        if self.artifact_intact(digest)? {
            return Ok(false);
        }
        let path = self.artifact_path(digest);
        // Unique per write, not per process: two uploads of one artifact at once must not
        // write (and rename away) the same temporary file.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{write}", std::process::id()));
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| StoreError::Io {
                action: "write",
                path: path.clone(),
                source,
            })?;
        self.conn()
            .execute(
                "INSERT OR IGNORE INTO artifacts (digest, size, created_ms) VALUES (?1, ?2, ?3)",
                params![digest.as_str(), bytes.len() as i64, now_ms()],
            )
            .map_err(db("recording an artifact"))?;
        Ok(true)
    }

    fn read_artifact(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        if !self.has_artifact(digest)? {
            return Ok(None);
        }
        let path = self.artifact_path(digest);
        let bytes = std::fs::read(&path).map_err(|source| StoreError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        // The file name is a promise the bytes must keep every time they are read.
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(StoreError::ArtifactAltered {
                digest: digest.clone(),
                path,
                actual,
            });
        }
        Ok(Some(bytes))
    }

    fn artifact_intact(&self, digest: &Digest) -> Result<bool, StoreError> {
        match self.read_artifact(digest) {
            Ok(found) => Ok(found.is_some()),
            Err(StoreError::ArtifactAltered { .. }) => Ok(false),
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    fn has_artifact(&self, digest: &Digest) -> Result<bool, StoreError> {
        self.conn()
            .query_row(
                "SELECT 1 FROM artifacts WHERE digest = ?1",
                [digest.as_str()],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(db("looking up an artifact"))
    }

    fn artifact_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        self.conn()
            .query_row(
                "SELECT size FROM artifacts WHERE digest = ?1",
                [digest.as_str()],
                |row| row.get::<_, i64>(0),
            )
            .optional()
            .map(|size| size.map(|s| s as u64))
            .map_err(db("looking up an artifact"))
    }
}

impl ReleaseStore for SqliteStore {
    fn deploy(
        &self,
        environment: &str,
        releases: &[NewRelease],
    ) -> Result<Vec<DeployResult>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db("starting a deploy"))?;
        let now = now_ms();
        let mut results = Vec::with_capacity(releases.len());
        for new in releases {
            let name = new.config.name.as_str();
            let hash = config_hash(&new.config);
            let latest: Option<(u32, String, String)> = tx
                .query_row(
                    "SELECT number, digest, config_hash FROM releases
                     WHERE environment = ?1 AND function = ?2 ORDER BY number DESC LIMIT 1",
                    params![environment, name],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()
                .map_err(db("reading the latest release"))?;
            let latest_ref = latest
                .as_ref()
                .map(|(n, d, h)| (*n, d.as_str(), h.as_str()));
            let (number, created) = match deploy_step(latest_ref, new, &hash) {
                DeployStep::Reuse { number } => (number, false),
                DeployStep::Create { number } => {
                    let config = serde_json::to_string(&new.config).expect("configs serialise");
                    let vetting = new
                        .vetting
                        .as_ref()
                        .map(|v| serde_json::to_string(v).expect("reports serialise"));
                    tx.execute(
                        "INSERT INTO releases (environment, function, number, digest, config, config_hash, created_ms, vetting, deployed_by, origin)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                        params![environment, name, number, new.digest.as_str(), config, hash, now, vetting, new.deployed_by, new.origin],
                    )
                    .map_err(db("creating a release"))?;
                    (number, true)
                }
            };
            tx.execute(
                "INSERT INTO functions (environment, name, release, updated_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (environment, name) DO UPDATE SET release = excluded.release, updated_ms = excluded.updated_ms, retired_ms = NULL
                 WHERE functions.release != excluded.release",
                params![environment, name, number, now],
            )
            .map_err(db("switching a function to its release"))?;
            let row = tx
                .query_row(
                    &format!("SELECT {RELEASE_COLUMNS} FROM releases r WHERE environment = ?1 AND function = ?2 AND number = ?3"),
                    params![environment, name, number],
                    release_from_row,
                )
                .map_err(db("reading a release"))?;
            results.push(DeployResult {
                release: to_release(row)?,
                created,
            });
        }
        tx.commit().map_err(db("committing a deploy"))?;
        Ok(results)
    }

    fn current_releases(&self, environment: &str) -> Result<Vec<Release>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {RELEASE_COLUMNS} FROM functions f
                 JOIN releases r ON r.environment = f.environment AND r.function = f.name AND r.number = f.release
                 WHERE f.environment = ?1 ORDER BY f.name"
            ))
            .map_err(db("listing functions"))?;
        let rows = stmt
            .query_map([environment], release_from_row)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(db("listing functions"))?;
        rows.into_iter().map(to_release).collect()
    }

    fn releases(&self, environment: &str, function: &str) -> Result<Vec<Release>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {RELEASE_COLUMNS} FROM releases r
                 WHERE r.environment = ?1 AND r.function = ?2 ORDER BY r.number DESC"
            ))
            .map_err(db("listing releases"))?;
        let rows = stmt
            .query_map([environment, function], release_from_row)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(db("listing releases"))?;
        rows.into_iter().map(to_release).collect()
    }

    fn switch_release(
        &self,
        environment: &str,
        function: &str,
        number: u32,
    ) -> Result<bool, StoreError> {
        self.conn()
            .execute(
                "UPDATE functions SET release = ?3, updated_ms = ?4, retired_ms = NULL
                 WHERE environment = ?1 AND name = ?2
                   AND EXISTS (SELECT 1 FROM releases WHERE environment = ?1 AND function = ?2 AND number = ?3)",
                params![environment, function, number, now_ms()],
            )
            .map(|changed| changed > 0)
            .map_err(db("switching a function's release"))
    }

    fn retire(&self, environment: &str, function: &str, at_ms: i64) -> Result<bool, StoreError> {
        control::retire(&self.conn(), environment, function, at_ms)
    }

    fn retired(&self, environment: &str) -> Result<Vec<(String, i64)>, StoreError> {
        control::retired(&self.conn(), environment)
    }

    fn add_signature(&self, signature: &ArtifactSignature) -> Result<(), StoreError> {
        control::add_signature(&self.conn(), signature, now_ms())
    }

    fn signatures(&self, digest: &str) -> Result<Vec<ArtifactSignature>, StoreError> {
        control::signatures(&self.conn(), digest)
    }

    fn revoke_artifact(&self, revoked: &RevokedArtifact) -> Result<bool, StoreError> {
        control::revoke_artifact(&self.conn(), revoked)
    }

    fn revoked_artifacts(&self) -> Result<Vec<RevokedArtifact>, StoreError> {
        control::revoked_artifacts(&self.conn())
    }
}

impl EnvironmentStore for SqliteStore {
    fn create_environment(
        &self,
        env: &EnvironmentRecord,
        secrets: &[(String, StoredSecret)],
    ) -> Result<Option<usize>, StoreError> {
        crate::env::create_environment(&mut self.conn(), env, secrets)
    }

    fn ensure_environment(&self, env: &EnvironmentRecord) -> Result<EnvironmentRecord, StoreError> {
        let conn = self.conn();
        if let Some(found) = crate::env::environment(&conn, &env.name)? {
            return Ok(found);
        }
        drop(conn);
        // Registering the home environment keeps what it already holds: no source, no copy.
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(db("registering an environment"))?;
        tx.execute(
            "INSERT INTO environments (name, created_ms, expires_ms, created_by, source, rules)
             VALUES (?1, ?2, ?3, ?4, NULL, ?5) ON CONFLICT (name) DO NOTHING",
            params![
                env.name,
                env.created_at_ms,
                env.expires_at_ms,
                env.created_by,
                serde_json::to_string(&env.rules).expect("rules serialise")
            ],
        )
        .map_err(db("registering an environment"))?;
        let found = crate::env::environment(&tx, &env.name)?
            .ok_or_else(|| StoreError::Corrupt(format!("environment {} vanished", env.name)))?;
        tx.commit().map_err(db("registering an environment"))?;
        Ok(found)
    }

    fn environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError> {
        crate::env::environments(&self.conn())
    }

    fn set_environment_rules(
        &self,
        name: &str,
        rules: &EnvironmentRules,
    ) -> Result<bool, StoreError> {
        crate::env::set_rules(&self.conn(), name, rules)
    }

    fn remove_environment(&self, name: &str, now_ms: i64) -> Result<bool, StoreError> {
        crate::env::remove_environment(&mut self.conn(), name, now_ms)
    }
}

impl AccessStore for SqliteStore {
    fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        control::create_token(&self.conn(), token)
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        control::token_by_hash(&self.conn(), hash)
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        control::tokens(&self.conn())
    }

    fn revoke_token(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        control::revoke_token(&self.conn(), id, at_ms)
    }

    fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        control::create_api_key(&self.conn(), key)
    }

    fn api_keys(&self, environment: &str) -> Result<Vec<ApiKeyRecord>, StoreError> {
        control::api_keys(&self.conn(), environment)
    }

    fn revoke_api_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        control::revoke_api_key(&self.conn(), id, at_ms)
    }
}

impl SecretStore for SqliteStore {
    fn put_secret(
        &self,
        environment: &str,
        name: &str,
        secret: &StoredSecret,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO secrets (environment, name, nonce, ciphertext, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (environment, name) DO UPDATE SET nonce = excluded.nonce,
                     ciphertext = excluded.ciphertext, updated_ms = excluded.updated_ms",
                params![environment, name, secret.nonce, secret.ciphertext, now_ms()],
            )
            .map(drop)
            .map_err(db("storing a secret"))
    }

    fn secret(&self, environment: &str, name: &str) -> Result<Option<StoredSecret>, StoreError> {
        self.conn()
            .prepare_cached(
                "SELECT nonce, ciphertext FROM secrets WHERE environment = ?1 AND name = ?2",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![environment, name], |row| {
                    Ok(StoredSecret {
                        nonce: row.get(0)?,
                        ciphertext: row.get(1)?,
                    })
                })
                .optional()
            })
            .map_err(db("reading a secret"))
    }

    fn secrets(&self, environment: &str) -> Result<Vec<SecretInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT name, updated_ms FROM secrets WHERE environment = ?1 ORDER BY name")
            .map_err(db("listing secrets"))?;
        stmt.query_map([environment], |row| {
            Ok(SecretInfo {
                name: row.get(0)?,
                updated_at_ms: row.get(1)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(db("listing secrets"))
    }

    fn has_sealed_secrets(&self) -> Result<bool, StoreError> {
        self.conn()
            .query_row("SELECT EXISTS (SELECT 1 FROM secrets)", [], |row| {
                row.get(0)
            })
            .map_err(db("looking for sealed secrets"))
    }
}

impl JobStore for SqliteStore {
    fn enqueue_job(&self, job: &Job) -> Result<(), StoreError> {
        control::enqueue_job(&self.conn(), job)
    }

    fn claim_jobs(
        &self,
        environment: Option<&str>,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        control::claim_jobs(&self.conn(), environment, now_ms, lease_until_ms, limit)
    }

    fn finish_job(
        &self,
        id: &str,
        claimed_attempts: u32,
        update: &JobUpdate,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        control::finish_job(&self.conn(), id, claimed_attempts, update, now_ms)
    }

    fn requeue_abandoned(
        &self,
        environment: Option<&str>,
        lease_before_ms: i64,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        control::requeue_abandoned(&mut self.conn(), environment, lease_before_ms, now_ms)
    }

    fn extend_leases(
        &self,
        jobs: &[(String, u32)],
        lease_until_ms: i64,
    ) -> Result<u64, StoreError> {
        control::extend_leases(&self.conn(), jobs, lease_until_ms)
    }

    fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        control::job(&self.conn(), id)
    }

    fn jobs(
        &self,
        environment: &str,
        states: &[JobState],
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        control::jobs(&self.conn(), environment, states, limit)
    }

    fn retry_job(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        control::retry_job(&self.conn(), id, now_ms)
    }

    fn last_tick(
        &self,
        environment: &str,
        function: &str,
        schedule: &str,
    ) -> Result<Option<i64>, StoreError> {
        control::last_tick(&self.conn(), environment, function, schedule)
    }

    fn claim_tick(&self, schedule: &str, tick_ms: i64, job: &Job) -> Result<bool, StoreError> {
        control::claim_tick(&mut self.conn(), schedule, tick_ms, job)
    }
}

impl UsageStore for SqliteStore {
    fn record_sink(&self) -> Result<Box<dyn RecordSink>, StoreError> {
        Ok(Box::new(SqliteRecordSink {
            conn: open(&self.path)?,
        }))
    }

    fn logs(
        &self,
        environment: &str,
        function: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, request_id, at_ms, stream, line FROM logs
                 WHERE environment = ?1 AND function = ?2 AND id > ?3 ORDER BY id LIMIT ?4",
            )
            .map_err(db("reading logs"))?;
        let rows = stmt
            .query_map(params![environment, function, after_id, limit], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(db("reading logs"))?;
        rows.into_iter()
            .map(|(id, request_id, at_ms, stream, line)| {
                Ok(LogEntry {
                    id,
                    request_id,
                    at_ms,
                    stream: LogStream::parse(&stream)
                        .ok_or_else(|| StoreError::Corrupt(format!("log stream `{stream}`")))?,
                    line,
                })
            })
            .collect()
    }

    fn cost_by(
        &self,
        by: CostDimension,
        environment: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<CostRow>, StoreError> {
        crate::cost::grouped(&self.conn(), by, environment, since_ms)
    }

    fn capacity(
        &self,
        environment: Option<&str>,
        since_ms: i64,
        full_core_mb: f64,
    ) -> Result<runway_store::Capacity, StoreError> {
        crate::cost::capacity(&self.conn(), environment, since_ms, full_core_mb)
    }
}

impl BudgetStore for SqliteStore {
    fn set_budget(&self, budget: &runway_store::Budget) -> Result<(), StoreError> {
        crate::cost::set_budget(&self.conn(), budget)
    }

    fn budgets(&self) -> Result<Vec<runway_store::Budget>, StoreError> {
        crate::cost::budgets(&self.conn())
    }

    fn remove_budget(&self, id: &str) -> Result<bool, StoreError> {
        crate::cost::remove_budget(&self.conn(), id)
    }

    fn claim_budget_alert(
        &self,
        budget: &str,
        month: &str,
        threshold: u32,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        crate::cost::claim_budget_alert(&self.conn(), budget, month, threshold, at_ms)
    }
}

impl AuditStore for SqliteStore {
    fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db("writing audit records"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO audit (at_ms, environment, function, release, capability, operation, target, decision)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(db("writing audit records"))?;
            for r in records {
                stmt.execute(params![
                    r.at_ms,
                    r.environment,
                    r.function,
                    r.release as i64,
                    r.capability,
                    r.operation,
                    r.target,
                    r.decision
                ])
                .map_err(db("writing audit records"))?;
            }
        }
        tx.commit().map_err(db("writing audit records"))
    }

    fn audit(
        &self,
        environment: &str,
        function: Option<&str>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, at_ms, environment, function, release, capability, operation, target, decision
                 FROM audit WHERE environment = ?1 AND (?2 IS NULL OR function = ?2) AND id > ?3
                 ORDER BY id LIMIT ?4",
            )
            .map_err(db("reading the audit log"))?;
        stmt.query_map(params![environment, function, after_id, limit], |row| {
            Ok(AuditRecord {
                id: row.get(0)?,
                at_ms: row.get(1)?,
                environment: row.get(2)?,
                function: row.get(3)?,
                release: row.get::<_, i64>(4)? as u64,
                capability: row.get(5)?,
                operation: row.get(6)?,
                target: row.get(7)?,
                decision: row.get(8)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(db("reading the audit log"))
    }

    fn append_control_audit(&self, record: &ControlAuditRecord) -> Result<i64, StoreError> {
        control::append_control_audit(&self.conn(), record)
    }

    fn control_audit(
        &self,
        environment: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<ControlAuditRecord>, StoreError> {
        control::control_audit(&self.conn(), environment, after_id, limit)
    }
}

impl MaintenanceStore for SqliteStore {
    fn prune(&self, what: Pruned, before_ms: i64, limit: u32) -> Result<u64, StoreError> {
        crate::retention::prune(&self.conn(), what, before_ms, limit)
    }

    fn size_bytes(&self) -> u64 {
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                let mut path = self.path.clone().into_os_string();
                path.push(suffix);
                std::fs::metadata(path).ok()
            })
            .map(|meta| meta.len())
            .sum()
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        integrity::checkpoint(&self.conn())?;
        integrity::mark_stopped(self.data_dir());
        Ok(())
    }

    fn backup_to(&self, target: &Path) -> Result<(), StoreError> {
        integrity::backup_to(&self.conn(), target)
    }

    fn compiled_checksum(&self, cache_key: &str) -> Result<Option<String>, StoreError> {
        integrity::compiled_checksum(&self.conn(), cache_key)
    }

    fn set_compiled_checksum(&self, cache_key: &str, sha256: &str) -> Result<(), StoreError> {
        integrity::set_compiled_checksum(&self.conn(), cache_key, sha256)
    }
}

struct SqliteRecordSink {
    conn: Connection,
}

impl SqliteRecordSink {
    fn write(&mut self, records: &[InvocationRecord]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO invocations (request_id, environment, function, release, started_ms,
                   duration_us, billed_ms, memory_mb, max_memory_bytes, instantiate_us, status, http_status,
                   gb_seconds, cost_pusd, cpu_throttled_us, concurrency)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?;
            let mut log = tx.prepare_cached(
                "INSERT INTO logs (environment, function, request_id, at_ms, stream, line)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut stored = Vec::with_capacity(records.len());
            for r in records {
                let inserted = insert.execute(params![
                    r.request_id,
                    r.environment,
                    r.function,
                    r.release,
                    r.started_at_ms,
                    r.duration_us as i64,
                    r.billed_ms as i64,
                    r.memory_mb as i64,
                    r.max_memory_bytes as i64,
                    r.instantiate_us as i64,
                    r.status.as_str(),
                    r.http_status,
                    r.gb_seconds,
                    r.cost.0 as i64,
                    r.cpu_throttled_us as i64,
                    r.concurrency,
                ])?;
                // A record written twice (a retried batch) is counted once.
                if inserted == 0 {
                    continue;
                }
                stored.push(r);
                for (stream, line) in r.log_lines() {
                    log.execute(params![
                        r.environment,
                        r.function,
                        r.request_id,
                        r.started_at_ms,
                        stream.as_str(),
                        line
                    ])?;
                }
            }
            crate::cost::add(&tx, &stored)?;
        }
        tx.commit()
    }
}

impl RecordSink for SqliteRecordSink {
    fn write_batch(&mut self, records: &[InvocationRecord]) -> Result<(), SinkError> {
        // A local file has no outage to wait out: a failure is retried a few times, then given up.
        self.write(records)
            .map_err(|e| SinkError::Failed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use runway_manifest::{ByteSize, FunctionConfig, FunctionName};
    use runway_store::{ArtifactStore, Digest, NewRelease, ReleaseStore};

    use super::*;

    fn config(name: &str, memory_mib: u64) -> FunctionConfig {
        FunctionConfig {
            memory: ByteSize::mib(memory_mib),
            ..FunctionConfig::new(FunctionName::try_from(name).unwrap())
        }
    }

    #[test]
    fn reopening_keeps_releases() {
        let dir = tempfile::tempdir().unwrap();
        let digest = Digest::of(b"x");
        {
            let store = SqliteStore::open(dir.path()).unwrap();
            store.put_artifact(&digest, b"x").unwrap();
            store
                .deploy(
                    "prod",
                    &[NewRelease {
                        digest: digest.clone(),
                        config: config("a", 128),
                        vetting: None,
                        deployed_by: None,
                        origin: None,
                    }],
                )
                .unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.current_releases("prod").unwrap().len(), 1);
        assert_eq!(store.read_artifact(&digest).unwrap().unwrap(), b"x");
    }
}
