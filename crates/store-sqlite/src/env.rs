//! The SQLite side of environments: the registry, creating one from another (releases
//! shared by digest, secrets only when given), and removing one with everything in it.

use rusqlite::{Connection, OptionalExtension, params};

use runway_store::{EnvironmentRecord, EnvironmentRules};
use runway_store::{StoreError, StoredSecret};

/// Migration 5: the environment registry, and who made each release and from where.
pub(crate) const MIGRATION_5: &str = r#"
CREATE TABLE environments (
    name          TEXT PRIMARY KEY,
    created_ms    INTEGER NOT NULL,
    expires_ms    INTEGER,
    created_by    TEXT NOT NULL,
    source        TEXT,
    rules         TEXT NOT NULL
);
ALTER TABLE releases ADD COLUMN deployed_by TEXT;
ALTER TABLE releases ADD COLUMN origin TEXT;
CREATE INDEX jobs_due_everywhere ON jobs (state, next_run_ms);
"#;

use crate::db;

/// Tables whose rows belong to one environment and leave with it. Invocation records, the
/// policy audit and the control-plane audit stay: they are the bill and the trail.
const OWNED_TABLES: [&str; 7] = [
    "functions",
    "releases",
    "secrets",
    "api_keys",
    "jobs",
    "schedule_ticks",
    "logs",
];

/// Deletes every row `name` owns, its budgets and their alerts, and revokes its tokens.
fn clear_owned(tx: &rusqlite::Transaction<'_>, name: &str, now_ms: i64) -> Result<(), StoreError> {
    for table in OWNED_TABLES {
        tx.execute(
            &format!("DELETE FROM {table} WHERE environment = ?1"),
            [name],
        )
        .map_err(db("removing an environment's rows"))?;
    }
    let env_budget = format!("env:{name}");
    tx.execute(
        "DELETE FROM budget_alerts WHERE budget IN
           (SELECT id FROM budgets WHERE environment = ?1 OR id = ?2)",
        params![name, env_budget],
    )
    .map_err(db("removing an environment's budget alerts"))?;
    tx.execute(
        "DELETE FROM budgets WHERE environment = ?1 OR id = ?2",
        params![name, env_budget],
    )
    .map_err(db("removing an environment's budgets"))?;
    tx.execute(
        "UPDATE tokens SET revoked_ms = ?2 WHERE environment = ?1 AND revoked_ms IS NULL",
        params![name, now_ms],
    )
    .map_err(db("revoking an environment's tokens"))?;
    Ok(())
}

/// Inserts `env` and, when it has a source, copies the source's current releases (same
/// numbers, digests, configurations and vetting reports) and `secrets`, in one transaction.
/// Returns `None` if an environment of that name exists.
pub(crate) fn create_environment(
    conn: &mut Connection,
    env: &EnvironmentRecord,
    secrets: &[(String, StoredSecret)],
) -> Result<Option<usize>, StoreError> {
    let tx = conn
        .transaction()
        .map_err(db("starting to create an environment"))?;
    let rules = serde_json::to_string(&env.rules).expect("rules serialise");
    let inserted = tx
        .execute(
            "INSERT INTO environments (name, created_ms, expires_ms, created_by, source, rules)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING",
            params![
                env.name,
                env.created_at_ms,
                env.expires_at_ms,
                env.created_by,
                env.source,
                rules
            ],
        )
        .map_err(db("creating an environment"))?;
    if inserted == 0 {
        return Ok(None);
    }
    // Rows a removed environment of the same name left behind (a write that raced its
    // removal) must not come back to life, nor its tokens.
    clear_owned(&tx, &env.name, env.created_at_ms)?;
    let mut copied = 0;
    if let Some(source) = &env.source {
        let origin = format!("copied from {source}");
        tx.execute(
            "INSERT INTO releases (environment, function, number, digest, config, config_hash, created_ms, vetting, deployed_by, origin)
             SELECT ?1, r.function, r.number, r.digest, r.config, r.config_hash, ?3, r.vetting, ?4, ?5 || ' release ' || r.number
             FROM functions f JOIN releases r
               ON r.environment = f.environment AND r.function = f.name AND r.number = f.release
             WHERE f.environment = ?2",
            params![env.name, source, env.created_at_ms, env.created_by, origin],
        )
        .map_err(db("copying releases"))?;
        copied = tx
            .execute(
                "INSERT INTO functions (environment, name, release, updated_ms, retired_ms)
                 SELECT ?1, name, release, ?3, retired_ms FROM functions WHERE environment = ?2",
                params![env.name, source, env.created_at_ms],
            )
            .map_err(db("copying functions"))?;
    }
    for (name, secret) in secrets {
        tx.execute(
            "INSERT INTO secrets (environment, name, nonce, ciphertext, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![env.name, name, secret.nonce, secret.ciphertext, env.created_at_ms],
        )
        .map_err(db("copying secrets"))?;
    }
    tx.commit().map_err(db("committing a new environment"))?;
    Ok(Some(copied))
}

fn record_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EnvironmentRecord> {
    let rules: String = row.get(5)?;
    let rules: EnvironmentRules = serde_json::from_str(&rules).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(err))
    })?;
    Ok(EnvironmentRecord {
        name: row.get(0)?,
        created_at_ms: row.get(1)?,
        expires_at_ms: row.get(2)?,
        created_by: row.get(3)?,
        source: row.get(4)?,
        rules,
    })
}

const ENV_COLUMNS: &str = "name, created_ms, expires_ms, created_by, source, rules";

pub(crate) fn environments(conn: &Connection) -> Result<Vec<EnvironmentRecord>, StoreError> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {ENV_COLUMNS} FROM environments ORDER BY name"
        ))
        .map_err(db("listing environments"))?;
    stmt.query_map([], record_from_row)
        .and_then(Iterator::collect)
        .map_err(db("listing environments"))
}

pub(crate) fn environment(
    conn: &Connection,
    name: &str,
) -> Result<Option<EnvironmentRecord>, StoreError> {
    conn.query_row(
        &format!("SELECT {ENV_COLUMNS} FROM environments WHERE name = ?1"),
        [name],
        record_from_row,
    )
    .optional()
    .map_err(db("reading an environment"))
}

/// Sets the rules of an environment (the node's home environment takes its rules from the
/// node's flags at every start).
pub(crate) fn set_rules(
    conn: &Connection,
    name: &str,
    rules: &EnvironmentRules,
) -> Result<bool, StoreError> {
    let rules = serde_json::to_string(rules).expect("rules serialise");
    conn.execute(
        "UPDATE environments SET rules = ?2 WHERE name = ?1",
        params![name, rules],
    )
    .map(|n| n > 0)
    .map_err(db("setting an environment's rules"))
}

/// Removes an environment and every row it owns, and revokes the tokens scoped to it, in
/// one transaction. Returns whether it existed.
pub(crate) fn remove_environment(
    conn: &mut Connection,
    name: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let tx = conn
        .transaction()
        .map_err(db("starting to remove an environment"))?;
    let removed = tx
        .execute("DELETE FROM environments WHERE name = ?1", [name])
        .map_err(db("removing an environment"))?;
    if removed == 0 {
        return Ok(false);
    }
    clear_owned(&tx, name, now_ms)?;
    tx.commit()
        .map_err(db("committing an environment's removal"))?;
    Ok(true)
}
