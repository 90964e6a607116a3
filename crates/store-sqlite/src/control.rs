//! The SQLite side of [`crate::control`]: tokens, API keys, control-plane audit, jobs,
//! schedule ticks and retirement. Each function takes the store's one connection.

use rusqlite::{Connection, OptionalExtension, Row, params};

use runway_store::StoreError;
use runway_store::{
    ApiKeyRecord, ArtifactSignature, ControlAuditRecord, Job, JobRequest, JobResult, JobSource,
    JobState, JobUpdate, RevokedArtifact, TokenRecord,
};

/// Migration 3: access, control-plane audit, jobs, schedule ticks and retirement.
pub(crate) const MIGRATION: &str = r#"
CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    hash          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    environment   TEXT,
    label         TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    expires_ms    INTEGER,
    revoked_ms    INTEGER,
    created_by    TEXT NOT NULL
);
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    hash          TEXT NOT NULL UNIQUE,
    environment   TEXT NOT NULL,
    function      TEXT NOT NULL,
    label         TEXT NOT NULL,
    rate          TEXT,
    created_ms    INTEGER NOT NULL,
    expires_ms    INTEGER,
    revoked_ms    INTEGER,
    created_by    TEXT NOT NULL
);
CREATE TABLE control_audit (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms         INTEGER NOT NULL,
    environment   TEXT NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    target        TEXT NOT NULL,
    status        INTEGER NOT NULL,
    outcome       TEXT NOT NULL,
    detail        TEXT NOT NULL
);
CREATE INDEX control_audit_by_env ON control_audit (environment, id);
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    environment      TEXT NOT NULL,
    function         TEXT NOT NULL,
    source           TEXT NOT NULL,
    request          TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    next_run_ms      INTEGER NOT NULL,
    lease_until_ms   INTEGER,
    last_error       TEXT,
    result           TEXT,
    scheduled_for_ms INTEGER,
    created_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL
);
CREATE INDEX jobs_due ON jobs (environment, state, next_run_ms);
CREATE TABLE schedule_ticks (
    environment   TEXT NOT NULL,
    function      TEXT NOT NULL,
    schedule      TEXT NOT NULL,
    last_tick_ms  INTEGER NOT NULL,
    PRIMARY KEY (environment, function, schedule)
);
ALTER TABLE functions ADD COLUMN retired_ms INTEGER;
"#;

/// Migration 4: artifact signatures and revoked artifacts.
pub(crate) const MIGRATION_4: &str = r#"
CREATE TABLE artifact_signatures (
    digest      TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    signature   TEXT NOT NULL,
    added_ms    INTEGER NOT NULL,
    PRIMARY KEY (digest, key_id)
);
CREATE TABLE revoked_artifacts (
    digest      TEXT PRIMARY KEY,
    revoked_ms  INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL
);
"#;

pub(crate) fn add_signature(
    conn: &Connection,
    signature: &ArtifactSignature,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO artifact_signatures (digest, key_id, signature, added_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (digest, key_id) DO UPDATE SET signature = excluded.signature, added_ms = excluded.added_ms",
        params![signature.digest, signature.key_id, signature.signature, now_ms],
    )
    .map(drop)
    .map_err(db("storing a signature"))
}

pub(crate) fn signatures(
    conn: &Connection,
    digest: &str,
) -> Result<Vec<ArtifactSignature>, StoreError> {
    conn.prepare_cached("SELECT digest, key_id, signature FROM artifact_signatures WHERE digest = ?1 ORDER BY key_id")
        .and_then(|mut stmt| {
            stmt.query_map(params![digest], |row| {
                Ok(ArtifactSignature {
                    digest: row.get(0)?,
                    key_id: row.get(1)?,
                    signature: row.get(2)?,
                })
            })?
            .collect()
        })
        .map_err(db("reading signatures"))
}

pub(crate) fn revoke_artifact(
    conn: &Connection,
    revoked: &RevokedArtifact,
) -> Result<bool, StoreError> {
    conn.execute(
        "INSERT INTO revoked_artifacts (digest, revoked_ms, actor, reason) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (digest) DO NOTHING",
        params![
            revoked.digest,
            revoked.revoked_at_ms,
            revoked.actor,
            revoked.reason
        ],
    )
    .map(|changed| changed > 0)
    .map_err(db("revoking an artifact"))
}

pub(crate) fn revoked_artifacts(conn: &Connection) -> Result<Vec<RevokedArtifact>, StoreError> {
    conn.prepare_cached(
        "SELECT digest, revoked_ms, actor, reason FROM revoked_artifacts ORDER BY revoked_ms",
    )
    .and_then(|mut stmt| {
        stmt.query_map([], |row| {
            Ok(RevokedArtifact {
                digest: row.get(0)?,
                revoked_at_ms: row.get(1)?,
                actor: row.get(2)?,
                reason: row.get(3)?,
            })
        })?
        .collect()
    })
    .map_err(db("listing revoked artifacts"))
}

use crate::db;

fn corrupt(what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("stored {what} `{value}` is not valid").into(),
    )
}

const TOKEN_COLUMNS: &str =
    "id, hash, role, environment, label, created_ms, expires_ms, revoked_ms, created_by";

fn token_row(row: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let role: String = row.get(2)?;
    Ok(TokenRecord {
        id: row.get(0)?,
        hash: row.get(1)?,
        role: role.parse().map_err(|_| corrupt("role", &role))?,
        environment: row.get(3)?,
        label: row.get(4)?,
        created_at_ms: row.get(5)?,
        expires_at_ms: row.get(6)?,
        revoked_at_ms: row.get(7)?,
        created_by: row.get(8)?,
    })
}

pub(crate) fn create_token(conn: &Connection, token: &TokenRecord) -> Result<(), StoreError> {
    conn.execute(
        &format!(
            "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        ),
        params![
            token.id,
            token.hash,
            token.role.as_str(),
            token.environment,
            token.label,
            token.created_at_ms,
            token.expires_at_ms,
            token.revoked_at_ms,
            token.created_by
        ],
    )
    .map(drop)
    .map_err(db("creating a token"))
}

pub(crate) fn token_by_hash(
    conn: &Connection,
    hash: &str,
) -> Result<Option<TokenRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"
    ))
    .and_then(|mut stmt| stmt.query_row(params![hash], token_row).optional())
    .map_err(db("looking up a token"))
}

pub(crate) fn tokens(conn: &Connection) -> Result<Vec<TokenRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_ms, id"
    ))
    .and_then(|mut stmt| stmt.query_map([], token_row)?.collect())
    .map_err(db("listing tokens"))
}

pub(crate) fn revoke_token(conn: &Connection, id: &str, at_ms: i64) -> Result<bool, StoreError> {
    conn.execute(
        "UPDATE tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
        params![id, at_ms],
    )
    .map(|changed| changed > 0)
    .map_err(db("revoking a token"))
}

const KEY_COLUMNS: &str =
    "id, hash, environment, function, label, rate, created_ms, expires_ms, revoked_ms, created_by";

fn key_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    let rate: Option<String> = row.get(5)?;
    Ok(ApiKeyRecord {
        id: row.get(0)?,
        hash: row.get(1)?,
        environment: row.get(2)?,
        function: row.get(3)?,
        label: row.get(4)?,
        rate: rate
            .map(|r| r.parse().map_err(|_| corrupt("rate", &r)))
            .transpose()?,
        created_at_ms: row.get(6)?,
        expires_at_ms: row.get(7)?,
        revoked_at_ms: row.get(8)?,
        created_by: row.get(9)?,
    })
}

pub(crate) fn create_api_key(conn: &Connection, key: &ApiKeyRecord) -> Result<(), StoreError> {
    conn.execute(
        &format!(
            "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ),
        params![
            key.id,
            key.hash,
            key.environment,
            key.function,
            key.label,
            key.rate.map(|r| r.to_string()),
            key.created_at_ms,
            key.expires_at_ms,
            key.revoked_at_ms,
            key.created_by
        ],
    )
    .map(drop)
    .map_err(db("creating an API key"))
}

pub(crate) fn api_keys(
    conn: &Connection,
    environment: &str,
) -> Result<Vec<ApiKeyRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE environment = ?1 ORDER BY created_ms, id"
    ))
    .and_then(|mut stmt| stmt.query_map(params![environment], key_row)?.collect())
    .map_err(db("listing API keys"))
}

pub(crate) fn revoke_api_key(conn: &Connection, id: &str, at_ms: i64) -> Result<bool, StoreError> {
    conn.execute(
        "UPDATE api_keys SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
        params![id, at_ms],
    )
    .map(|changed| changed > 0)
    .map_err(db("revoking an API key"))
}

pub(crate) fn append_control_audit(
    conn: &Connection,
    record: &ControlAuditRecord,
) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO control_audit (at_ms, environment, actor, action, target, status, outcome, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            record.at_ms,
            record.environment,
            record.actor,
            record.action,
            record.target,
            record.status,
            record.outcome,
            record.detail
        ])
    })
    .map(|_| conn.last_insert_rowid())
    .map_err(db("writing the control-plane audit log"))
}

pub(crate) fn control_audit(
    conn: &Connection,
    environment: &str,
    after_id: i64,
    limit: u32,
) -> Result<Vec<ControlAuditRecord>, StoreError> {
    conn.prepare_cached(
        "SELECT id, at_ms, environment, actor, action, target, status, outcome, detail
         FROM control_audit WHERE environment = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    )
    .and_then(|mut stmt| {
        stmt.query_map(params![environment, after_id, limit], |row| {
            Ok(ControlAuditRecord {
                id: row.get(0)?,
                at_ms: row.get(1)?,
                environment: row.get(2)?,
                actor: row.get(3)?,
                action: row.get(4)?,
                target: row.get(5)?,
                status: row.get(6)?,
                outcome: row.get(7)?,
                detail: row.get(8)?,
            })
        })?
        .collect()
    })
    .map_err(db("reading the control-plane audit log"))
}

const JOB_COLUMNS: &str = "id, environment, function, source, request, state, attempts, max_attempts, next_run_ms, last_error, result, scheduled_for_ms, created_ms, updated_ms";

fn job_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let source: String = row.get(3)?;
    let request: String = row.get(4)?;
    let state: String = row.get(5)?;
    let result: Option<String> = row.get(10)?;
    Ok(Job {
        id: row.get(0)?,
        environment: row.get(1)?,
        function: row.get(2)?,
        source: match source.as_str() {
            "queue" => JobSource::Queue,
            "schedule" => JobSource::Schedule,
            _ => return Err(corrupt("job source", &source)),
        },
        request: serde_json::from_str::<JobRequest>(&request)
            .map_err(|_| corrupt("job request", &request))?,
        state: JobState::parse(&state).ok_or_else(|| corrupt("job state", &state))?,
        attempts: row.get(6)?,
        max_attempts: row.get(7)?,
        next_run_at_ms: row.get(8)?,
        last_error: row.get(9)?,
        result: result
            .map(|r| serde_json::from_str::<JobResult>(&r).map_err(|_| corrupt("job result", &r)))
            .transpose()?,
        scheduled_for_ms: row.get(11)?,
        created_at_ms: row.get(12)?,
        updated_at_ms: row.get(13)?,
    })
}

fn insert_job(conn: &Connection, job: &Job) -> rusqlite::Result<()> {
    let source = match job.source {
        JobSource::Queue => "queue",
        JobSource::Schedule => "schedule",
    };
    conn.execute(
        &format!("INSERT INTO jobs ({JOB_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"),
        params![
            job.id,
            job.environment,
            job.function,
            source,
            serde_json::to_string(&job.request).expect("requests serialise"),
            job.state.as_str(),
            job.attempts,
            job.max_attempts,
            job.next_run_at_ms,
            job.last_error,
            job.result.as_ref().map(|r| serde_json::to_string(r).expect("results serialise")),
            job.scheduled_for_ms,
            job.created_at_ms,
            job.updated_at_ms
        ],
    )
    .map(drop)
}

/// Inserts a job with a full fsync, so it survives a power cut and not only a crash.
pub(crate) fn enqueue_job(conn: &Connection, job: &Job) -> Result<(), StoreError> {
    conn.execute_batch("PRAGMA synchronous = FULL")
        .map_err(db("enqueueing a job"))?;
    let inserted = insert_job(conn, job).map_err(db("enqueueing a job"));
    conn.execute_batch("PRAGMA synchronous = NORMAL")
        .map_err(db("enqueueing a job"))?;
    inserted
}

pub(crate) fn claim_jobs(
    conn: &Connection,
    environment: Option<&str>,
    now_ms: i64,
    lease_until_ms: i64,
    limit: u32,
) -> Result<Vec<Job>, StoreError> {
    conn.prepare_cached(&format!(
        "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until_ms = ?3, updated_ms = ?2
         WHERE id IN (SELECT id FROM jobs WHERE (?1 IS NULL OR environment = ?1) AND state = 'pending' AND next_run_ms <= ?2
                      ORDER BY next_run_ms LIMIT ?4)
         RETURNING {JOB_COLUMNS}"
    ))
    .and_then(|mut stmt| {
        stmt.query_map(params![environment, now_ms, lease_until_ms, limit], job_row)?
            .collect()
    })
    .map_err(db("claiming due jobs"))
}

pub(crate) fn extend_leases(
    conn: &Connection,
    jobs: &[(String, u32)],
    lease_until_ms: i64,
) -> Result<u64, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "UPDATE jobs SET lease_until_ms = ?3
             WHERE id = ?1 AND attempts = ?2 AND state = 'running'",
        )
        .map_err(db("extending job leases"))?;
    let mut extended = 0;
    for (id, attempts) in jobs {
        extended += stmt
            .execute(params![id, attempts, lease_until_ms])
            .map_err(db("extending job leases"))? as u64;
    }
    Ok(extended)
}

pub(crate) fn finish_job(
    conn: &Connection,
    id: &str,
    claimed_attempts: u32,
    update: &JobUpdate,
    now_ms: i64,
) -> Result<bool, StoreError> {
    // Fenced on the claim: a worker whose lease ran out and whose job was claimed again
    // cannot overwrite the newer attempt.
    conn.execute(
        "UPDATE jobs SET state = ?3, attempts = ?4, next_run_ms = ?5, last_error = ?6,
                result = COALESCE(?7, result), lease_until_ms = NULL, updated_ms = ?8
         WHERE id = ?1 AND state = 'running' AND attempts = ?2",
        params![
            id,
            claimed_attempts,
            update.state.as_str(),
            update.attempts,
            update.next_run_at_ms,
            update.last_error,
            update
                .result
                .as_ref()
                .map(|r| serde_json::to_string(r).expect("results serialise")),
            now_ms
        ],
    )
    .map(|changed| changed > 0)
    .map_err(db("recording a job attempt"))
}

pub(crate) fn requeue_abandoned(
    conn: &mut Connection,
    environment: Option<&str>,
    lease_before_ms: i64,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let tx = conn
        .transaction()
        .map_err(db("requeueing abandoned jobs"))?;
    // A job whose last allowed attempt was cut short may be what stops the node: it goes to
    // the dead-letter list rather than round again.
    let dead = tx
        .execute(
            "UPDATE jobs SET state = 'dead', lease_until_ms = NULL, updated_ms = ?3,
                    last_error = 'the node stopped during attempt ' || attempts || ' of ' || max_attempts || '; no attempts left'
             WHERE (?1 IS NULL OR environment = ?1) AND state = 'running' AND lease_until_ms <= ?2 AND attempts >= max_attempts",
            params![environment, lease_before_ms, now_ms],
        )
        .map_err(db("requeueing abandoned jobs"))?;
    let requeued = tx
        .execute(
            "UPDATE jobs SET state = 'pending', next_run_ms = ?3, lease_until_ms = NULL, updated_ms = ?3,
                    last_error = 'the node stopped during attempt ' || attempts || '; it runs again'
             WHERE (?1 IS NULL OR environment = ?1) AND state = 'running' AND lease_until_ms <= ?2",
            params![environment, lease_before_ms, now_ms],
        )
        .map_err(db("requeueing abandoned jobs"))?;
    tx.commit().map_err(db("requeueing abandoned jobs"))?;
    Ok(dead + requeued)
}

pub(crate) fn job(conn: &Connection, id: &str) -> Result<Option<Job>, StoreError> {
    conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
        .and_then(|mut stmt| stmt.query_row(params![id], job_row).optional())
        .map_err(db("reading a job"))
}

pub(crate) fn jobs(
    conn: &Connection,
    environment: &str,
    states: &[JobState],
    limit: u32,
) -> Result<Vec<Job>, StoreError> {
    let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    let wanted = serde_json::to_string(&names).expect("names serialise");
    conn.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE environment = ?1
           AND state IN (SELECT value FROM json_each(?2))
         ORDER BY created_ms DESC, id LIMIT ?3"
    ))
    .and_then(|mut stmt| {
        stmt.query_map(params![environment, wanted, limit], job_row)?
            .collect()
    })
    .map_err(db("listing jobs"))
}

pub(crate) fn retry_job(conn: &Connection, id: &str, now_ms: i64) -> Result<bool, StoreError> {
    conn.execute(
        "UPDATE jobs SET state = 'pending', attempts = 0, next_run_ms = ?2, updated_ms = ?2
         WHERE id = ?1 AND state = 'dead'",
        params![id, now_ms],
    )
    .map(|changed| changed > 0)
    .map_err(db("retrying a job"))
}

pub(crate) fn last_tick(
    conn: &Connection,
    environment: &str,
    function: &str,
    schedule: &str,
) -> Result<Option<i64>, StoreError> {
    conn.query_row(
        "SELECT last_tick_ms FROM schedule_ticks WHERE environment = ?1 AND function = ?2 AND schedule = ?3",
        params![environment, function, schedule],
        |row| row.get(0),
    )
    .optional()
    .map_err(db("reading a schedule's last tick"))
}

/// Records `tick_ms` as the schedule's last tick and enqueues its job, in one transaction,
/// unless a tick at or after it was already claimed.
pub(crate) fn claim_tick(
    conn: &mut Connection,
    schedule: &str,
    tick_ms: i64,
    job: &Job,
) -> Result<bool, StoreError> {
    let tx = conn.transaction().map_err(db("claiming a schedule tick"))?;
    let changed = tx
        .execute(
            "INSERT INTO schedule_ticks (environment, function, schedule, last_tick_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (environment, function, schedule) DO UPDATE SET last_tick_ms = excluded.last_tick_ms
             WHERE schedule_ticks.last_tick_ms < excluded.last_tick_ms",
            params![job.environment, job.function, schedule, tick_ms],
        )
        .map_err(db("claiming a schedule tick"))?;
    if changed == 0 {
        return Ok(false);
    }
    insert_job(&tx, job).map_err(db("enqueueing a scheduled run"))?;
    tx.commit().map_err(db("claiming a schedule tick"))?;
    Ok(true)
}

pub(crate) fn retire(
    conn: &Connection,
    environment: &str,
    function: &str,
    at_ms: i64,
) -> Result<bool, StoreError> {
    conn.execute(
        "UPDATE functions SET retired_ms = ?3 WHERE environment = ?1 AND name = ?2 AND retired_ms IS NULL",
        params![environment, function, at_ms],
    )
    .map(|changed| changed > 0)
    .map_err(db("retiring a function"))
}

pub(crate) fn retired(
    conn: &Connection,
    environment: &str,
) -> Result<Vec<(String, i64)>, StoreError> {
    conn.prepare_cached(
        "SELECT name, retired_ms FROM functions WHERE environment = ?1 AND retired_ms IS NOT NULL ORDER BY name",
    )
    .and_then(|mut stmt| {
        stmt.query_map(params![environment], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect()
    })
    .map_err(db("listing retired functions"))
}
