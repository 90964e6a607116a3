//! The schema and its migrations. Versions are this backend's own (the SQLite backend counts
//! its own); `schema_version` records each one applied, and nodes starting at once take turns
//! under an advisory lock, so only the first migrates.

use postgres::Client;
use runway_store::StoreError;

use crate::{db, now_ms};

/// The advisory lock key migrations run under (any constant both nodes agree on).
const MIGRATION_LOCK: i64 = 0x7275_6e77_6179_0001;

/// Migrations in order; version N is `MIGRATIONS[N - 1]`.
///
/// Text columns that are names or ids sort and compare byte by byte (`COLLATE "C"`), as they
/// do in SQLite, whatever the database's locale: listings come back in the same order from
/// both backends.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE artifacts (
    digest      TEXT COLLATE "C" PRIMARY KEY,
    size        BIGINT NOT NULL,
    created_ms  BIGINT NOT NULL
);
CREATE TABLE artifact_chunks (
    digest      TEXT COLLATE "C" NOT NULL,
    chunk       INTEGER NOT NULL,
    bytes       BYTEA NOT NULL,
    PRIMARY KEY (digest, chunk)
);
CREATE TABLE releases (
    environment TEXT COLLATE "C" NOT NULL,
    function    TEXT COLLATE "C" NOT NULL,
    number      BIGINT NOT NULL,
    digest      TEXT COLLATE "C" NOT NULL REFERENCES artifacts (digest),
    config      TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    owner       TEXT COLLATE "C",
    created_ms  BIGINT NOT NULL,
    vetting     TEXT,
    deployed_by TEXT,
    origin      TEXT,
    PRIMARY KEY (environment, function, number)
);
CREATE TABLE functions (
    environment TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    release     BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL,
    retired_ms  BIGINT,
    PRIMARY KEY (environment, name)
);
CREATE TABLE invocations (
    request_id       TEXT COLLATE "C" PRIMARY KEY,
    environment      TEXT COLLATE "C" NOT NULL,
    function         TEXT COLLATE "C" NOT NULL,
    release          BIGINT NOT NULL,
    started_ms       BIGINT NOT NULL,
    duration_us      BIGINT NOT NULL,
    billed_ms        BIGINT NOT NULL,
    memory_mb        BIGINT NOT NULL,
    max_memory_bytes BIGINT NOT NULL,
    instantiate_us   BIGINT NOT NULL,
    status           TEXT NOT NULL,
    http_status      BIGINT NOT NULL,
    gb_seconds       DOUBLE PRECISION NOT NULL,
    cost_pusd        BIGINT NOT NULL,
    cpu_throttled_us BIGINT NOT NULL,
    concurrency      BIGINT NOT NULL
);
CREATE INDEX invocations_by_function ON invocations (environment, function, started_ms);
CREATE INDEX invocations_by_time ON invocations (environment, started_ms);
CREATE INDEX invocations_by_start ON invocations (started_ms);
CREATE TABLE logs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    environment TEXT COLLATE "C" NOT NULL,
    function    TEXT COLLATE "C" NOT NULL,
    request_id  TEXT NOT NULL,
    at_ms       BIGINT NOT NULL,
    stream      TEXT NOT NULL,
    line        TEXT NOT NULL
);
CREATE INDEX logs_by_function ON logs (environment, function, id);
CREATE TABLE audit (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms       BIGINT NOT NULL,
    environment TEXT COLLATE "C" NOT NULL,
    function    TEXT COLLATE "C" NOT NULL,
    release     BIGINT NOT NULL,
    capability  TEXT NOT NULL,
    operation   TEXT NOT NULL,
    target      TEXT NOT NULL,
    decision    TEXT NOT NULL
);
CREATE INDEX audit_by_function ON audit (environment, function, id);
CREATE INDEX audit_by_time ON audit (at_ms);
CREATE TABLE secrets (
    environment TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    nonce       BYTEA NOT NULL,
    ciphertext  BYTEA NOT NULL,
    updated_ms  BIGINT NOT NULL,
    PRIMARY KEY (environment, name)
);
CREATE TABLE tokens (
    id          TEXT COLLATE "C" PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    environment TEXT COLLATE "C",
    label       TEXT NOT NULL,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT,
    revoked_ms  BIGINT,
    created_by  TEXT NOT NULL
);
CREATE TABLE api_keys (
    id          TEXT COLLATE "C" PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    environment TEXT COLLATE "C" NOT NULL,
    function    TEXT COLLATE "C" NOT NULL,
    label       TEXT NOT NULL,
    rate        TEXT,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT,
    revoked_ms  BIGINT,
    created_by  TEXT NOT NULL
);
CREATE TABLE control_audit (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms       BIGINT NOT NULL,
    environment TEXT COLLATE "C" NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    status      BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX control_audit_by_env ON control_audit (environment, id);
CREATE INDEX control_audit_by_time ON control_audit (at_ms);
CREATE TABLE jobs (
    id               TEXT COLLATE "C" PRIMARY KEY,
    environment      TEXT COLLATE "C" NOT NULL,
    function         TEXT COLLATE "C" NOT NULL,
    source           TEXT NOT NULL,
    request          TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         BIGINT NOT NULL,
    max_attempts     BIGINT NOT NULL,
    next_run_ms      BIGINT NOT NULL,
    lease_until_ms   BIGINT,
    last_error       TEXT,
    result           TEXT,
    scheduled_for_ms BIGINT,
    created_ms       BIGINT NOT NULL,
    updated_ms       BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs (environment, state, next_run_ms);
CREATE INDEX jobs_due_everywhere ON jobs (state, next_run_ms);
CREATE INDEX jobs_finished ON jobs (state, updated_ms);
CREATE TABLE schedule_ticks (
    environment  TEXT COLLATE "C" NOT NULL,
    function     TEXT COLLATE "C" NOT NULL,
    schedule     TEXT COLLATE "C" NOT NULL,
    last_tick_ms BIGINT NOT NULL,
    PRIMARY KEY (environment, function, schedule)
);
CREATE TABLE artifact_signatures (
    digest      TEXT COLLATE "C" NOT NULL,
    key_id      TEXT COLLATE "C" NOT NULL,
    signature   TEXT NOT NULL,
    added_ms    BIGINT NOT NULL,
    PRIMARY KEY (digest, key_id)
);
CREATE TABLE revoked_artifacts (
    digest      TEXT COLLATE "C" PRIMARY KEY,
    revoked_ms  BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE TABLE environments (
    name        TEXT COLLATE "C" PRIMARY KEY,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT,
    created_by  TEXT NOT NULL,
    source      TEXT,
    rules       TEXT NOT NULL
);
CREATE TABLE usage_hourly (
    hour_ms          BIGINT NOT NULL,
    environment      TEXT COLLATE "C" NOT NULL,
    function         TEXT COLLATE "C" NOT NULL,
    release          BIGINT NOT NULL,
    invocations      BIGINT NOT NULL,
    failures         BIGINT NOT NULL,
    gb_seconds       DOUBLE PRECISION NOT NULL,
    cost_pusd        BIGINT NOT NULL,
    duration_us      BIGINT NOT NULL,
    max_memory_bytes BIGINT NOT NULL,
    cpu_throttled_us BIGINT NOT NULL,
    peak_concurrency BIGINT NOT NULL,
    memory_mb        BIGINT NOT NULL,
    PRIMARY KEY (hour_ms, environment, function, release)
);
CREATE INDEX usage_hourly_by_environment ON usage_hourly (environment, hour_ms);
CREATE TABLE budgets (
    id           TEXT COLLATE "C" PRIMARY KEY,
    kind         TEXT NOT NULL,
    scope        TEXT NOT NULL,
    environment  TEXT COLLATE "C",
    monthly_pusd BIGINT NOT NULL,
    action       TEXT NOT NULL,
    source       TEXT NOT NULL,
    updated_ms   BIGINT NOT NULL,
    updated_by   TEXT NOT NULL
);
CREATE TABLE budget_alerts (
    budget      TEXT COLLATE "C" NOT NULL,
    month       TEXT NOT NULL,
    threshold   BIGINT NOT NULL,
    at_ms       BIGINT NOT NULL,
    PRIMARY KEY (budget, month, threshold)
);
CREATE TABLE nodes (
    id           TEXT COLLATE "C" PRIMARY KEY,
    gateway      TEXT NOT NULL,
    admin        TEXT NOT NULL,
    version      TEXT NOT NULL,
    started_ms   BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    in_flight    BIGINT NOT NULL,
    compiled     BIGINT NOT NULL,
    draining     BOOLEAN NOT NULL
);
CREATE TABLE cluster_settings (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);

-- The change generation: one row, bumped once per statement that changes what nodes serve
-- or refuse, and a notification to the nodes listening (delivered when the change commits).
CREATE TABLE changes (generation BIGINT NOT NULL);
INSERT INTO changes (generation) VALUES (0);
CREATE FUNCTION runway_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE changes SET generation = generation + 1;
    PERFORM pg_notify('runway_changes', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER functions_changes AFTER INSERT OR UPDATE OR DELETE ON functions
    FOR EACH STATEMENT EXECUTE FUNCTION runway_changed();
CREATE TRIGGER environments_changes AFTER INSERT OR UPDATE OR DELETE ON environments
    FOR EACH STATEMENT EXECUTE FUNCTION runway_changed();
CREATE TRIGGER tokens_changes AFTER INSERT OR UPDATE OR DELETE ON tokens
    FOR EACH STATEMENT EXECUTE FUNCTION runway_changed();
CREATE TRIGGER api_keys_changes AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION runway_changed();
CREATE TRIGGER secrets_changes AFTER INSERT OR UPDATE OR DELETE ON secrets
    FOR EACH STATEMENT EXECUTE FUNCTION runway_changed();
CREATE TRIGGER revoked_artifacts_changes AFTER INSERT OR UPDATE OR DELETE ON revoked_artifacts
    FOR EACH STATEMENT EXECUTE FUNCTION runway_changed();
CREATE TRIGGER budgets_changes AFTER INSERT OR UPDATE OR DELETE ON budgets
    FOR EACH STATEMENT EXECUTE FUNCTION runway_changed();
"#,
    // Invocations are read only by start time (the current hour's part of a bill, and
    // retention), which `invocations_by_start` serves; the hourly rollups answer every other
    // question. The per-function and per-environment indexes cost every insert two more
    // index entries and served no query.
    r#"
DROP INDEX IF EXISTS invocations_by_function;
DROP INDEX IF EXISTS invocations_by_time;
"#,
];

/// The newest schema version this binary knows.
pub(crate) const SUPPORTED_VERSION: i64 = MIGRATIONS.len() as i64;

/// Applies pending migrations in one transaction under the migration lock; refuses a schema
/// newer than [`SUPPORTED_VERSION`].
pub(crate) fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let action = "migrating the schema";
    let mut tx = client.transaction().map_err(db(action))?;
    // Held until commit: a second node starting now waits here, then finds nothing to do.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(db(action))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    BIGINT PRIMARY KEY,
             applied_ms BIGINT NOT NULL
         )",
    )
    .map_err(db(action))?;
    let found: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .map_err(db("reading the schema version"))?
        .get(0);
    if found > SUPPORTED_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SUPPORTED_VERSION,
        });
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(migration).map_err(db(action))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_ms) VALUES ($1, $2)",
            &[&(index as i64 + 1), &now_ms()],
        )
        .map_err(db(action))?;
    }
    tx.commit().map_err(db(action))
}
