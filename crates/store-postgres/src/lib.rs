//! The shared backend of the control-plane store: PostgreSQL, so that several nodes serve
//! the same functions. It implements every interface of `runway-store` and passes its
//! conformance suite; the rules both backends share (release dedup, hourly rollups) come from
//! `runway_store::rules`, not from here. It knows nothing of wasmtime or HTTP.
//!
//! Design decisions:
//!
//! - **Driver.** The synchronous `postgres` client, plain SQL, no ORM: the store's traits are
//!   synchronous and the server calls them from `spawn_blocking` threads. That client runs
//!   its own small tokio runtime and panics when called on a thread inside an async context,
//!   so every call goes through `blocking`, which steps out of a multi-thread runtime with
//!   `block_in_place` first.
//! - **Connections.** A pool of its own ([`POOL_SIZE`] connections, made on demand, a closed
//!   one dropped instead of returned), so concurrent calls run on different connections. The
//!   record sink and the change feed each hold a dedicated connection, so writing records
//!   never waits behind API reads and a `LISTEN` never sits in the pool.
//! - **Migrations.** This backend's own versions in `schema_version`, applied in one
//!   transaction under `pg_advisory_xact_lock`, so two nodes starting at once migrate once; a
//!   newer schema is refused ([`StoreError::SchemaTooNew`]).
//! - **Artifacts.** In the database, so every node reads the same ones: `artifact_chunks`
//!   holds the bytes in [`CHUNK_BYTES`] pieces keyed by (digest, chunk number) and
//!   `artifacts` the size; every read checks the SHA-256 of the reassembled bytes.
//! - **Changes.** One row, `changes`, bumped by statement-level triggers on the tables nodes
//!   apply (functions, environments, tokens, API keys, secrets, revoked artifacts, budgets);
//!   the same trigger calls `pg_notify('runway_changes')`, which the change feed `LISTEN`s
//!   for. Every transaction that writes those tables locks that row first, so two of them
//!   never wait on each other in opposite orders (a deadlock).
//! - **Deploys.** One transaction per deploy, holding a transaction-scoped advisory lock per
//!   function (taken in name order), so racing deploys of one function number their releases
//!   1..n without gaps.
//! - **Jobs.** Claimed with `FOR UPDATE SKIP LOCKED`, so nodes claiming at once take
//!   different jobs without waiting on each other.
//! - **Records.** A batch is inserted with one statement of `UNNEST`ed arrays,
//!   `ON CONFLICT (request_id) DO NOTHING RETURNING request_id`; only the records that
//!   statement stored get log lines (binary `COPY`) and go into the hourly rollups, in the
//!   same transaction, so a retried batch counts once. A large batch goes in as two halves
//!   at once on two connections. Invocations carry one secondary index
//!   (by start time): the rollups answer every other question.
//! - **Node-local state.** Compiled-code checksums describe files in one node's own cache,
//!   so they live in that node's folder (`compiled-checksums.json`), not in the shared
//!   database.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::error::SqlState;
use postgres::{Client, Row, Transaction};
use runway_store::rules::{DeployStep, config_hash, deploy_step};
use runway_store::{
    ArtifactSignature, ArtifactStore, DeployResult, Digest, NewRelease, Release, ReleaseStore,
    RevokedArtifact, StoreError,
};

mod cluster;
mod control;
mod env;
mod local;
mod maintenance;
mod pool;
mod schema;
mod usage;

pub use cluster::{FEED_APPLICATION, PostgresChangeFeed};
pub use local::CHECKSUMS_FILE;
pub use usage::PostgresRecordSink;

use pool::{Pool, Target};

/// How many connections the pool opens at most: enough for the server's concurrent store
/// calls (each a short transaction), few enough that many nodes fit in `max_connections`.
pub const POOL_SIZE: usize = 8;

/// The size of one stored piece of an artifact: large enough that a component is a few
/// rows, small enough that no row comes near PostgreSQL's 1 GiB value limit or needs one
/// huge allocation on either side.
pub const CHUNK_BYTES: usize = 1 << 20;

/// How long a connection attempt may take when the URL does not say (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The control-plane store in a PostgreSQL database.
pub struct PostgresStore {
    pool: Pool,
    local: local::NodeLocal,
}

/// Runs `body`, which uses the blocking PostgreSQL client, from whatever thread calls the
/// store: inside a multi-thread tokio runtime it runs through `block_in_place` (the client
/// would panic starting its own runtime there); anywhere else, directly.
pub(crate) fn blocking<T>(body: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(body)
        }
        _ => body(),
    }
}

/// Maps a driver error to the store's error: `Unavailable` when the server cannot be reached
/// (the same call can succeed later), `Database` otherwise.
pub(crate) fn db(action: &'static str) -> impl FnOnce(postgres::Error) -> StoreError {
    move |err| {
        let unreachable = is_unreachable(&err);
        let source = Box::new(PostgresError::from(err));
        if unreachable {
            StoreError::Unavailable { action, source }
        } else {
            StoreError::Database { action, source }
        }
    }
}

/// A driver error whose message says what the server said: the driver's own says only
/// "db error", with the server's reason in its source, which the store's messages omit.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct PostgresError {
    message: String,
    #[source]
    source: postgres::Error,
}

impl From<postgres::Error> for PostgresError {
    fn from(source: postgres::Error) -> PostgresError {
        let message = match source.as_db_error() {
            Some(server) => {
                let mut message = format!(
                    "{} {}: {}",
                    server.severity(),
                    server.code().code(),
                    server.message()
                );
                if let Some(detail) = server.detail() {
                    message.push_str(&format!(" ({detail})"));
                }
                message
            }
            None => match std::error::Error::source(&source) {
                Some(cause) => format!("{source}: {cause}"),
                None => source.to_string(),
            },
        };
        PostgresError { message, source }
    }
}

/// Closes connections (dropping a blocking client closes it through its own runtime, which
/// must not happen on a thread that drives async tasks).
pub(crate) fn close<T: Send + 'static>(connections: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| drop(connections));
        }
        // A current-thread runtime cannot step aside: close them on a thread of their own.
        Ok(_) => drop(std::thread::spawn(move || drop(connections))),
        Err(_) => drop(connections),
    }
}

fn is_unreachable(err: &postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(code) = err.code() {
        // The server is shutting down, restarting, or not accepting connections yet.
        return [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::CONNECTION_FAILURE,
            SqlState::CONNECTION_DOES_NOT_EXIST,
        ]
        .contains(code);
    }
    std::error::Error::source(err).is_some_and(|source| source.is::<std::io::Error>())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `text` without NUL characters, which PostgreSQL text cannot hold (SQLite can): each
/// becomes U+FFFD, as other bytes that are not text already do in guest output.
pub(crate) fn without_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

/// A URL that does not parse, described without repeating it (it may hold a password).
#[derive(Debug, thiserror::Error)]
#[error(
    "the PostgreSQL URL does not parse (expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE)"
)]
struct UrlError;

impl PostgresStore {
    /// Connects to the database at `url` and applies pending migrations; `local_dir` is this
    /// node's own folder, for what only this node uses (compiled-code checksums).
    ///
    /// A URL that does not parse, or a server that cannot be reached, is
    /// [`StoreError::Unavailable`], whose message names the host and port but never the
    /// password.
    pub fn open(url: &str, local_dir: &Path) -> Result<PostgresStore, StoreError> {
        let mut config = postgres::Config::from_str(url).map_err(|_| StoreError::Unavailable {
            action: "reading the PostgreSQL URL",
            source: Box::new(UrlError),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let target = Target::of(&config);
        let local = local::NodeLocal::open(local_dir)?;
        let store = PostgresStore {
            pool: Pool::new(config, target, POOL_SIZE),
            local,
        };
        store.run(schema::migrate)?;
        Ok(store)
    }

    /// Runs `body` on a pooled connection.
    pub(crate) fn run<T>(
        &self,
        body: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        blocking(|| {
            let mut client = self.pool.get()?;
            body(&mut client)
        })
    }

    /// Runs `body` in a transaction on a pooled connection, and commits it.
    pub(crate) fn transaction<T>(
        &self,
        action: &'static str,
        body: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.run(|client| {
            let mut tx = client.transaction().map_err(db(action))?;
            let value = body(&mut tx)?;
            tx.commit().map_err(db(action))?;
            Ok(value)
        })
    }

    /// Runs `body`, which writes tables that bump the change generation, in a transaction
    /// that locks the generation's row first. Every such write ends by updating that row
    /// (the trigger), so taking it first means two changes never hold one lock each while
    /// waiting for the other's.
    pub(crate) fn change<T>(
        &self,
        action: &'static str,
        body: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transaction(action, |tx| {
            tx.execute("SELECT generation FROM changes FOR UPDATE", &[])
                .map_err(db(action))?;
            body(tx)
        })
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// Where an artifact's bytes are, for messages (they are rows, not a file).
fn artifact_location(digest: &Digest) -> PathBuf {
    PathBuf::from(format!("postgres:artifacts/{digest}"))
}

/// Reads an artifact's bytes in one statement (one snapshot), checking them against the
/// digest; `None` if it is not stored.
fn read_chunks(
    client: &mut impl postgres::GenericClient,
    digest: &Digest,
) -> Result<Option<Vec<u8>>, StoreError> {
    let rows = client
        .query(
            "SELECT a.size, c.bytes FROM artifacts a
             LEFT JOIN artifact_chunks c ON c.digest = a.digest
             WHERE a.digest = $1 ORDER BY c.chunk",
            &[&digest.as_str()],
        )
        .map_err(db("reading an artifact"))?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let size: i64 = first.get(0);
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    for row in &rows {
        if let Some(chunk) = row.get::<_, Option<&[u8]>>(1) {
            bytes.extend_from_slice(chunk);
        }
    }
    // The digest is a promise the bytes must keep every time they are read.
    let actual = Digest::of(&bytes);
    if &actual != digest {
        return Err(StoreError::ArtifactAltered {
            digest: digest.clone(),
            path: artifact_location(digest),
            actual,
        });
    }
    Ok(Some(bytes))
}

impl ArtifactStore for PostgresStore {
    fn put_artifact(&self, digest: &Digest, bytes: &[u8]) -> Result<bool, StoreError> {
        let action = "storing an artifact";
        self.transaction(action, |tx| {
            // Uploads of one artifact take turns: the second finds it stored.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext('artifact/' || $1::TEXT))",
                &[&digest.as_str()],
            )
            .map_err(db(action))?;
            match read_chunks(tx, digest) {
                Ok(Some(_)) => return Ok(false),
                // Altered or missing bytes are written again: uploading the original repairs.
                Ok(None) | Err(StoreError::ArtifactAltered { .. }) => {}
                Err(err) => return Err(err),
            }
            tx.execute(
                "DELETE FROM artifact_chunks WHERE digest = $1",
                &[&digest.as_str()],
            )
            .map_err(db(action))?;
            let insert = tx
                .prepare("INSERT INTO artifact_chunks (digest, chunk, bytes) VALUES ($1, $2, $3)")
                .map_err(db(action))?;
            for (number, chunk) in bytes.chunks(CHUNK_BYTES).enumerate() {
                tx.execute(&insert, &[&digest.as_str(), &(number as i32), &chunk])
                    .map_err(db(action))?;
            }
            tx.execute(
                "INSERT INTO artifacts (digest, size, created_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (digest) DO UPDATE SET size = excluded.size",
                &[&digest.as_str(), &(bytes.len() as i64), &now_ms()],
            )
            .map_err(db(action))?;
            Ok(true)
        })
    }

    fn read_artifact(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(|client| read_chunks(client, digest))
    }

    fn artifact_intact(&self, digest: &Digest) -> Result<bool, StoreError> {
        match self.read_artifact(digest) {
            Ok(found) => Ok(found.is_some()),
            Err(StoreError::ArtifactAltered { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn has_artifact(&self, digest: &Digest) -> Result<bool, StoreError> {
        self.run(|client| {
            client
                .query_opt(
                    "SELECT 1 FROM artifacts WHERE digest = $1",
                    &[&digest.as_str()],
                )
                .map(|found| found.is_some())
                .map_err(db("looking up an artifact"))
        })
    }

    fn artifact_size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        self.run(|client| {
            client
                .query_opt(
                    "SELECT size FROM artifacts WHERE digest = $1",
                    &[&digest.as_str()],
                )
                .map(|row| row.map(|row| row.get::<_, i64>(0) as u64))
                .map_err(db("looking up an artifact"))
        })
    }
}

const RELEASE_COLUMNS: &str =
    "r.environment, r.number, r.digest, r.config, r.created_ms, r.vetting, r.deployed_by, r.origin";

fn to_release(row: &Row) -> Result<Release, StoreError> {
    let vetting = row
        .get::<_, Option<&str>>(5)
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("release vetting report: {e}")))?;
    Ok(Release {
        environment: row.get(0),
        number: row.get::<_, i64>(1) as u32,
        digest: Digest::try_from(row.get::<_, String>(2)).map_err(StoreError::Corrupt)?,
        config: serde_json::from_str(row.get(3))
            .map_err(|e| StoreError::Corrupt(format!("release configuration: {e}")))?,
        created_at_ms: row.get(4),
        vetting,
        deployed_by: row.get(6),
        origin: row.get(7),
    })
}

impl ReleaseStore for PostgresStore {
    fn deploy(
        &self,
        environment: &str,
        releases: &[NewRelease],
    ) -> Result<Vec<DeployResult>, StoreError> {
        let action = "deploying";
        self.change(action, |tx| {
            // Deploys of one function take turns, so each reads the latest release the one
            // before it committed. Locks are taken in one order (by name) so that two deploys
            // of several functions cannot each hold what the other waits for.
            let mut names: Vec<&str> = releases.iter().map(|r| r.config.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            for name in names {
                tx.execute(
                    "SELECT pg_advisory_xact_lock(hashtext($1::TEXT || '/' || $2::TEXT))",
                    &[&environment, &name],
                )
                .map_err(db(action))?;
            }
            let now = now_ms();
            let mut results = Vec::with_capacity(releases.len());
            for new in releases {
                let name = new.config.name.as_str();
                let hash = config_hash(&new.config);
                let latest = tx
                    .query_opt(
                        "SELECT number, digest, config_hash FROM releases
                         WHERE environment = $1 AND function = $2 ORDER BY number DESC LIMIT 1",
                        &[&environment, &name],
                    )
                    .map_err(db("reading the latest release"))?;
                let latest = latest.as_ref().map(|row| {
                    (
                        row.get::<_, i64>(0) as u32,
                        row.get::<_, &str>(1),
                        row.get::<_, &str>(2),
                    )
                });
                let (number, created) = match deploy_step(latest, new, &hash) {
                    DeployStep::Reuse { number } => (number, false),
                    DeployStep::Create { number } => {
                        let config = serde_json::to_string(&new.config).expect("configs serialise");
                        let vetting = new
                            .vetting
                            .as_ref()
                            .map(|v| serde_json::to_string(v).expect("reports serialise"));
                        tx.execute(
                            "INSERT INTO releases (environment, function, number, digest, config,
                               config_hash, owner, created_ms, vetting, deployed_by, origin)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                            &[
                                &environment,
                                &name,
                                &i64::from(number),
                                &new.digest.as_str(),
                                &config,
                                &hash,
                                &new.config.owner,
                                &now,
                                &vetting,
                                &new.deployed_by,
                                &new.origin,
                            ],
                        )
                        .map_err(db("creating a release"))?;
                        (number, true)
                    }
                };
                tx.execute(
                    "INSERT INTO functions (environment, name, release, updated_ms)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (environment, name) DO UPDATE SET release = excluded.release,
                       updated_ms = excluded.updated_ms, retired_ms = NULL
                     WHERE functions.release <> excluded.release",
                    &[&environment, &name, &i64::from(number), &now],
                )
                .map_err(db("switching a function to its release"))?;
                let row = tx
                    .query_one(
                        &format!(
                            "SELECT {RELEASE_COLUMNS} FROM releases r
                             WHERE environment = $1 AND function = $2 AND number = $3"
                        ),
                        &[&environment, &name, &i64::from(number)],
                    )
                    .map_err(db("reading a release"))?;
                results.push(DeployResult {
                    release: to_release(&row)?,
                    created,
                });
            }
            Ok(results)
        })
    }

    fn current_releases(&self, environment: &str) -> Result<Vec<Release>, StoreError> {
        self.run(|client| {
            client
                .query(
                    &format!(
                        "SELECT {RELEASE_COLUMNS} FROM functions f
                         JOIN releases r ON r.environment = f.environment AND r.function = f.name
                           AND r.number = f.release
                         WHERE f.environment = $1 ORDER BY f.name"
                    ),
                    &[&environment],
                )
                .map_err(db("listing functions"))?
                .iter()
                .map(to_release)
                .collect()
        })
    }

    fn releases(&self, environment: &str, function: &str) -> Result<Vec<Release>, StoreError> {
        self.run(|client| {
            client
                .query(
                    &format!(
                        "SELECT {RELEASE_COLUMNS} FROM releases r
                         WHERE r.environment = $1 AND r.function = $2 ORDER BY r.number DESC"
                    ),
                    &[&environment, &function],
                )
                .map_err(db("listing releases"))?
                .iter()
                .map(to_release)
                .collect()
        })
    }

    fn switch_release(
        &self,
        environment: &str,
        function: &str,
        number: u32,
    ) -> Result<bool, StoreError> {
        let action = "switching a function's release";
        self.change(action, |tx| {
            tx.execute(
                "UPDATE functions SET release = $3, updated_ms = $4, retired_ms = NULL
                 WHERE environment = $1 AND name = $2
                   AND EXISTS (SELECT 1 FROM releases
                               WHERE environment = $1 AND function = $2 AND number = $3)",
                &[&environment, &function, &i64::from(number), &now_ms()],
            )
            .map(|changed| changed > 0)
            .map_err(db(action))
        })
    }

    fn retire(&self, environment: &str, function: &str, at_ms: i64) -> Result<bool, StoreError> {
        let action = "retiring a function";
        self.change(action, |tx| {
            tx.execute(
                "UPDATE functions SET retired_ms = $3
                 WHERE environment = $1 AND name = $2 AND retired_ms IS NULL",
                &[&environment, &function, &at_ms],
            )
            .map(|changed| changed > 0)
            .map_err(db(action))
        })
    }

    fn retired(&self, environment: &str) -> Result<Vec<(String, i64)>, StoreError> {
        self.run(|client| {
            client
                .query(
                    "SELECT name, retired_ms FROM functions
                     WHERE environment = $1 AND retired_ms IS NOT NULL ORDER BY name",
                    &[&environment],
                )
                .map(|rows| rows.iter().map(|row| (row.get(0), row.get(1))).collect())
                .map_err(db("listing retired functions"))
        })
    }

    fn add_signature(&self, signature: &ArtifactSignature) -> Result<(), StoreError> {
        self.run(|client| {
            client
                .execute(
                    "INSERT INTO artifact_signatures (digest, key_id, signature, added_ms)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (digest, key_id) DO UPDATE SET signature = excluded.signature,
                       added_ms = excluded.added_ms",
                    &[
                        &signature.digest,
                        &signature.key_id,
                        &signature.signature,
                        &now_ms(),
                    ],
                )
                .map(drop)
                .map_err(db("storing a signature"))
        })
    }

    fn signatures(&self, digest: &str) -> Result<Vec<ArtifactSignature>, StoreError> {
        self.run(|client| {
            client
                .query(
                    "SELECT digest, key_id, signature FROM artifact_signatures
                     WHERE digest = $1 ORDER BY key_id",
                    &[&digest],
                )
                .map(|rows| {
                    rows.iter()
                        .map(|row| ArtifactSignature {
                            digest: row.get(0),
                            key_id: row.get(1),
                            signature: row.get(2),
                        })
                        .collect()
                })
                .map_err(db("reading signatures"))
        })
    }

    fn revoke_artifact(&self, revoked: &RevokedArtifact) -> Result<bool, StoreError> {
        let action = "revoking an artifact";
        self.change(action, |tx| {
            tx.execute(
                "INSERT INTO revoked_artifacts (digest, revoked_ms, actor, reason)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (digest) DO NOTHING",
                &[
                    &revoked.digest,
                    &revoked.revoked_at_ms,
                    &revoked.actor,
                    &revoked.reason,
                ],
            )
            .map(|changed| changed > 0)
            .map_err(db(action))
        })
    }

    fn revoked_artifacts(&self) -> Result<Vec<RevokedArtifact>, StoreError> {
        self.run(|client| {
            client
                .query(
                    "SELECT digest, revoked_ms, actor, reason FROM revoked_artifacts
                     ORDER BY revoked_ms",
                    &[],
                )
                .map(|rows| {
                    rows.iter()
                        .map(|row| RevokedArtifact {
                            digest: row.get(0),
                            revoked_at_ms: row.get(1),
                            actor: row.get(2),
                            reason: row.get(3),
                        })
                        .collect()
                })
                .map_err(db("listing revoked artifacts"))
        })
    }
}
