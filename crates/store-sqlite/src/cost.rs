//! Cost rollups: invocation records summed per hour, environment, function and release, kept
//! in the same transaction as the records, so cost questions read a few rows per hour
//! instead of every invocation.

use runway_meter::{InvocationRecord, PicoUsd};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use runway_store::{
    Budget, BudgetAction, BudgetKind, BusiestHour, Capacity, CostDimension, CostRow, FunctionPeak,
    StoreError,
};

use runway_store::rules::{HOUR_MS, first_whole_hour, hourly_rollups};

/// Migration 7: hourly usage, filled from the records already stored.
pub(crate) const MIGRATION_7: &str = r#"
CREATE TABLE usage_hourly (
    hour_ms             INTEGER NOT NULL,
    environment         TEXT NOT NULL,
    function            TEXT NOT NULL,
    release             INTEGER NOT NULL,
    invocations         INTEGER NOT NULL,
    failures            INTEGER NOT NULL,
    gb_seconds          REAL NOT NULL,
    cost_pusd           INTEGER NOT NULL,
    duration_us         INTEGER NOT NULL,
    max_memory_bytes    INTEGER NOT NULL,
    cpu_throttled_us    INTEGER NOT NULL,
    peak_concurrency    INTEGER NOT NULL,
    memory_mb           INTEGER NOT NULL,
    PRIMARY KEY (hour_ms, environment, function, release)
);
CREATE INDEX usage_hourly_by_environment ON usage_hourly (environment, hour_ms);
CREATE INDEX invocations_by_start ON invocations (started_ms);
INSERT INTO usage_hourly
SELECT (started_ms / 3600000) * 3600000, environment, function, release, COUNT(*),
       SUM(status NOT IN ('ok', 'client_gone')), SUM(gb_seconds), SUM(cost_pusd), SUM(duration_us),
       MAX(max_memory_bytes), SUM(cpu_throttled_us), MAX(concurrency), MAX(memory_mb)
FROM invocations GROUP BY 1, 2, 3, 4;
"#;

use crate::db;

/// Adds newly stored records to their hours (one upsert per hour and release in the batch).
pub(crate) fn add(tx: &Transaction<'_>, records: &[&InvocationRecord]) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO usage_hourly (hour_ms, environment, function, release, invocations, failures,
           gb_seconds, cost_pusd, duration_us, max_memory_bytes, cpu_throttled_us,
           peak_concurrency, memory_mb)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (hour_ms, environment, function, release) DO UPDATE SET
           invocations = invocations + excluded.invocations,
           failures = failures + excluded.failures,
           gb_seconds = gb_seconds + excluded.gb_seconds,
           cost_pusd = cost_pusd + excluded.cost_pusd,
           duration_us = duration_us + excluded.duration_us,
           max_memory_bytes = MAX(max_memory_bytes, excluded.max_memory_bytes),
           cpu_throttled_us = cpu_throttled_us + excluded.cpu_throttled_us,
           peak_concurrency = MAX(peak_concurrency, excluded.peak_concurrency),
           memory_mb = MAX(memory_mb, excluded.memory_mb)",
    )?;
    for (key, s) in hourly_rollups(records.iter().copied()) {
        upsert.execute(params![
            key.hour_ms,
            key.environment,
            key.function,
            key.release,
            s.invocations,
            s.failures,
            s.gb_seconds,
            s.cost_pusd,
            s.duration_us,
            s.max_memory_bytes,
            s.cpu_throttled_us,
            s.peak_concurrency,
            s.memory_mb
        ])?;
    }
    Ok(())
}

/// Usage grouped by `by`, in one environment or all, since `since_ms`: whole hours from the
/// rollups, the partial first hour from the records.
pub(crate) fn grouped(
    conn: &Connection,
    by: CostDimension,
    environment: Option<&str>,
    since_ms: i64,
) -> Result<Vec<CostRow>, StoreError> {
    let whole = first_whole_hour(since_ms);
    // Both sources give the same columns: the grouping keys and the sums.
    let keys = match by {
        CostDimension::Function => "environment, function, NULL, NULL",
        CostDimension::Environment => "environment, NULL, NULL, NULL",
        CostDimension::Release => "environment, function, release, NULL",
        CostDimension::Owner => "NULL, NULL, NULL, owner",
    };
    // A release's owner is in its configuration; a removed environment's releases are gone.
    let owner = if by == CostDimension::Owner {
        "COALESCE((SELECT json_extract(r.config, '$.owner') FROM releases r
           WHERE r.environment = s.environment AND r.function = s.function
             AND r.number = s.release), '')"
    } else {
        "NULL"
    };
    // Spelled out per case (not `?3 IS NULL OR …`) so SQLite uses the indexes.
    let in_environment = if environment.is_some() {
        "environment = ?3 AND"
    } else {
        "?3 IS NULL AND"
    };
    let sql = format!(
        "WITH s AS (
           SELECT environment, function, release, invocations, failures, gb_seconds, cost_pusd,
                  duration_us, max_memory_bytes
           FROM usage_hourly
           WHERE {in_environment} hour_ms >= ?1
           UNION ALL
           SELECT environment, function, release, 1, status NOT IN ('ok', 'client_gone'), gb_seconds, cost_pusd,
                  duration_us, max_memory_bytes
           FROM invocations
           WHERE {in_environment} started_ms >= ?2 AND started_ms < ?1
         ),
         o AS (SELECT s.*, {owner} AS owner FROM s)
         SELECT {keys}, SUM(invocations), SUM(failures), SUM(gb_seconds), SUM(cost_pusd),
                SUM(duration_us), MAX(max_memory_bytes)
         FROM o GROUP BY 1, 2, 3, 4 ORDER BY SUM(cost_pusd) DESC, 1, 2, 3, 4"
    );
    let mut stmt = conn.prepare(&sql).map_err(db("summing usage"))?;
    stmt.query_map(params![whole, since_ms, environment], |row| {
        Ok(CostRow {
            environment: row.get(0)?,
            function: row.get(1)?,
            release: row.get(2)?,
            owner: row.get(3)?,
            invocations: row.get::<_, i64>(4)? as u64,
            failures: row.get::<_, i64>(5)? as u64,
            gb_seconds: row.get(6)?,
            cost: PicoUsd(row.get::<_, i64>(7)? as u64),
            duration_us: row.get::<_, i64>(8)? as u64,
            max_memory_bytes: row.get::<_, i64>(9)? as u64,
        })
    })
    .and_then(Iterator::collect)
    .map_err(db("summing usage"))
}

/// Peak use per function, and the busiest hour, since `since_ms` (whole hours).
pub(crate) fn capacity(
    conn: &Connection,
    environment: Option<&str>,
    since_ms: i64,
    full_core_mb: f64,
) -> Result<Capacity, StoreError> {
    let from = since_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let in_environment = if environment.is_some() {
        "environment = ?2 AND"
    } else {
        "?2 IS NULL AND"
    };
    let mut stmt = conn
        .prepare(&format!(
            "SELECT environment, function, MAX(memory_mb), MAX(peak_concurrency),
                    MAX(max_memory_bytes), SUM(invocations), SUM(duration_us), SUM(cost_pusd)
             FROM usage_hourly WHERE {in_environment} hour_ms >= ?1
             GROUP BY environment, function ORDER BY MAX(peak_concurrency) * MAX(memory_mb) DESC"
        ))
        .map_err(db("reading peak use"))?;
    let functions = stmt
        .query_map(params![from, environment], |row| {
            Ok(FunctionPeak {
                environment: row.get(0)?,
                function: row.get(1)?,
                memory_mb: row.get::<_, i64>(2)? as u64,
                peak_concurrency: row.get::<_, i64>(3)? as u32,
                max_memory_used_bytes: row.get::<_, i64>(4)? as u64,
                invocations: row.get::<_, i64>(5)? as u64,
                duration_us: row.get::<_, i64>(6)? as u64,
                cost: PicoUsd(row.get::<_, i64>(7)? as u64),
            })
        })
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(db("reading peak use"))?;
    // The busiest hour by memory held at once: each function's peak in that hour, summed.
    let busiest = conn
        .query_row(
            &format!(
                "SELECT hour_ms, SUM(pc), SUM(pc * mm), SUM(pc * MIN(1.0, mm / ?3))
                 FROM (SELECT hour_ms, environment, function, MAX(peak_concurrency) AS pc,
                              MAX(memory_mb) AS mm
                       FROM usage_hourly WHERE {in_environment} hour_ms >= ?1
                       GROUP BY hour_ms, environment, function)
                 GROUP BY hour_ms ORDER BY SUM(pc * mm) DESC, hour_ms DESC LIMIT 1"
            ),
            params![from, environment, full_core_mb],
            |row| {
                Ok(BusiestHour {
                    hour_ms: row.get(0)?,
                    instances: row.get::<_, i64>(1)? as u64,
                    memory_mb: row.get::<_, i64>(2)? as u64,
                    cores: row.get(3)?,
                })
            },
        )
        .optional()
        .map_err(db("reading the busiest hour"))?;
    let first_hour_ms = conn
        .query_row(
            &format!("SELECT MIN(hour_ms) FROM usage_hourly WHERE {in_environment} hour_ms >= ?1"),
            params![from, environment],
            |row| row.get(0),
        )
        .map_err(db("reading the first hour"))?;
    Ok(Capacity {
        since_ms: from,
        functions,
        busiest,
        first_hour_ms,
    })
}

/// Migration 8: monthly budgets and the alerts already sent for each month.
pub(crate) const MIGRATION_8: &str = r#"
CREATE TABLE budgets (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    scope           TEXT NOT NULL,
    environment     TEXT,
    monthly_pusd    INTEGER NOT NULL,
    action          TEXT NOT NULL,
    source          TEXT NOT NULL,
    updated_ms      INTEGER NOT NULL,
    updated_by      TEXT NOT NULL
);
CREATE TABLE budget_alerts (
    budget          TEXT NOT NULL,
    month           TEXT NOT NULL,
    threshold       INTEGER NOT NULL,
    at_ms           INTEGER NOT NULL,
    PRIMARY KEY (budget, month, threshold)
);
"#;

fn text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn parsed<T: serde::de::DeserializeOwned>(column: usize, value: String) -> rusqlite::Result<T> {
    serde_json::from_value(serde_json::Value::String(value)).map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            Box::new(err),
        )
    })
}

pub(crate) fn set_budget(conn: &Connection, budget: &Budget) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO budgets (id, kind, scope, environment, monthly_pusd, action, source, updated_ms, updated_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (id) DO UPDATE SET monthly_pusd = excluded.monthly_pusd, action = excluded.action,
           source = excluded.source, updated_ms = excluded.updated_ms, updated_by = excluded.updated_by",
        params![
            budget.id,
            text(&budget.kind),
            budget.scope,
            budget.environment,
            budget.monthly_pusd as i64,
            budget.action.as_str(),
            budget.source,
            budget.updated_at_ms,
            budget.updated_by
        ],
    )
    .map(drop)
    .map_err(db("setting a budget"))
}

pub(crate) fn budgets(conn: &Connection) -> Result<Vec<Budget>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT id, kind, scope, environment, monthly_pusd, action, source, updated_ms, updated_by
             FROM budgets ORDER BY id",
        )
        .map_err(db("listing budgets"))?;
    stmt.query_map([], |row| {
        Ok(Budget {
            id: row.get(0)?,
            kind: parsed::<BudgetKind>(1, row.get(1)?)?,
            scope: row.get(2)?,
            environment: row.get(3)?,
            monthly_pusd: row.get::<_, i64>(4)? as u64,
            action: parsed::<BudgetAction>(5, row.get(5)?)?,
            source: row.get(6)?,
            updated_at_ms: row.get(7)?,
            updated_by: row.get(8)?,
        })
    })
    .and_then(Iterator::collect)
    .map_err(db("listing budgets"))
}

pub(crate) fn remove_budget(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    conn.execute("DELETE FROM budgets WHERE id = ?1", [id])
        .map(|n| n > 0)
        .map_err(db("removing a budget"))
}

pub(crate) fn claim_budget_alert(
    conn: &Connection,
    budget: &str,
    month: &str,
    threshold: u32,
    at_ms: i64,
) -> Result<bool, StoreError> {
    conn.execute(
        "INSERT INTO budget_alerts (budget, month, threshold, at_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO NOTHING",
        params![budget, month, threshold, at_ms],
    )
    .map(|n| n > 0)
    .map_err(db("recording a budget alert"))
}
