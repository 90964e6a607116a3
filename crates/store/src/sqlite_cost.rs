//! Cost rollups: invocation records summed per hour, environment, function and release, kept
//! in the same transaction as the records, so cost questions read a few rows per hour
//! instead of every invocation.

use std::collections::HashMap;

use runway_meter::{InvocationRecord, PicoUsd};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::{
    Budget, BudgetAction, BudgetKind, BusiestHour, Capacity, CostDimension, CostRow, FunctionPeak,
    StoreError, Usage,
};

const HOUR_MS: i64 = 3_600_000;

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

fn db(action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Database { action, source }
}

#[derive(Default)]
struct Sums {
    invocations: i64,
    failures: i64,
    gb_seconds: f64,
    cost: i64,
    duration_us: i64,
    max_memory: i64,
    throttled_us: i64,
    peak_concurrency: i64,
    memory_mb: i64,
}

/// Adds newly stored records to their hours (one upsert per hour and release in the batch).
pub(crate) fn add(tx: &Transaction<'_>, records: &[&InvocationRecord]) -> rusqlite::Result<()> {
    let mut hours: HashMap<(i64, &str, &str, u32), Sums> = HashMap::new();
    for r in records {
        let hour = r.started_at_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let sums = hours
            .entry((hour, &r.environment, &r.function, r.release))
            .or_default();
        sums.invocations += 1;
        sums.failures += i64::from(r.status.is_failure());
        sums.gb_seconds += r.gb_seconds;
        sums.cost += r.cost.0 as i64;
        sums.duration_us += r.duration_us as i64;
        sums.max_memory = sums.max_memory.max(r.max_memory_bytes as i64);
        sums.throttled_us += r.cpu_throttled_us as i64;
        sums.peak_concurrency = sums.peak_concurrency.max(i64::from(r.concurrency));
        sums.memory_mb = sums.memory_mb.max(r.memory_mb as i64);
    }
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
    for ((hour, environment, function, release), s) in hours {
        upsert.execute(params![
            hour,
            environment,
            function,
            release,
            s.invocations,
            s.failures,
            s.gb_seconds,
            s.cost,
            s.duration_us,
            s.max_memory,
            s.throttled_us,
            s.peak_concurrency,
            s.memory_mb
        ])?;
    }
    Ok(())
}

/// The first whole hour at or after `since_ms`: rollups cover from there, and the records of
/// the partial hour before it are summed exactly.
fn first_whole_hour(since_ms: i64) -> i64 {
    (since_ms + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS
}

/// Usage per function of one environment since `since_ms`, exact to the millisecond.
pub(crate) fn usage(
    conn: &Connection,
    environment: &str,
    since_ms: i64,
) -> Result<Vec<Usage>, StoreError> {
    let rows = grouped(conn, CostDimension::Function, Some(environment), since_ms)?;
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

#[cfg(test)]
mod tests {
    use runway_manifest::{FunctionConfig, FunctionName};
    use runway_meter::{InvocationStatus, RecordSink};

    use super::*;
    use crate::{ControlStore, Digest, NewRelease, SqliteStore};

    fn record(id: &str, env: &str, function: &str, release: u32, at_ms: i64) -> InvocationRecord {
        InvocationRecord {
            request_id: id.into(),
            environment: env.into(),
            function: function.into(),
            release,
            started_at_ms: at_ms,
            duration_us: 1000,
            billed_ms: 1,
            memory_mb: 128,
            max_memory_bytes: 1 << 20,
            instantiate_us: 20,
            status: if id.ends_with('x') {
                InvocationStatus::Error
            } else {
                InvocationStatus::Ok
            },
            http_status: 200,
            gb_seconds: 0.000125,
            cost: PicoUsd(1_000),
            stdout: Vec::new(),
            stderr: Vec::new(),
            error: None,
            cpu_throttled_us: 0,
            concurrency: 1,
        }
    }

    fn deploy(store: &SqliteStore, env: &str, name: &str, owner: Option<&str>) {
        let digest = Digest::of(name.as_bytes());
        store.put_artifact(&digest, name.as_bytes()).unwrap();
        let config = FunctionConfig {
            owner: owner.map(str::to_owned),
            ..FunctionConfig::new(FunctionName::try_from(name).unwrap())
        };
        store
            .deploy(
                env,
                &[NewRelease {
                    digest,
                    config,
                    vetting: None,
                    deployed_by: None,
                    origin: None,
                }],
            )
            .unwrap();
    }

    #[test]
    fn rollups_answer_exactly_what_the_records_say() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        deploy(&store, "prod", "a", Some("payments"));
        deploy(&store, "prod", "b", None);
        deploy(&store, "dev", "a", Some("payments"));
        let hour = 3_600_000;
        let mut sink = store.record_sink().unwrap();
        let batch = [
            record("r1", "prod", "a", 1, 10 * hour + 10),
            record("r2x", "prod", "a", 1, 10 * hour + 500_000),
            record("r3", "prod", "a", 1, 11 * hour + 5),
            record("r4", "prod", "b", 1, 11 * hour + 7),
            record("r5", "dev", "a", 1, 12 * hour),
        ];
        sink.write_batch(&batch).unwrap();
        // A batch written again (the meter retries) counts nothing twice.
        sink.write_batch(&batch[..2]).unwrap();

        let usage = store.usage("prod", 0).unwrap();
        assert_eq!(usage.len(), 2);
        assert_eq!((usage[0].function.as_str(), usage[0].invocations), ("a", 3));
        assert_eq!(usage[0].failures, 1);
        assert_eq!(usage[0].cost, PicoUsd(3_000));
        // Since the middle of hour 10: the partial hour comes from the records.
        let since = store.usage("prod", 10 * hour + 100).unwrap();
        assert_eq!(since[0].invocations, 2, "r2x and r3");
        assert_eq!(store.usage("prod", 11 * hour + 6).unwrap()[0].function, "b");

        let by_env = store.cost_by(CostDimension::Environment, None, 0).unwrap();
        let envs: Vec<(Option<&str>, u64)> = by_env
            .iter()
            .map(|r| (r.environment.as_deref(), r.invocations))
            .collect();
        assert_eq!(envs, [(Some("prod"), 4), (Some("dev"), 1)]);
        let by_owner = store.cost_by(CostDimension::Owner, None, 0).unwrap();
        let owners: Vec<(Option<&str>, u64)> = by_owner
            .iter()
            .map(|r| (r.owner.as_deref(), r.invocations))
            .collect();
        assert_eq!(owners, [(Some("payments"), 4), (Some(""), 1)]);
        let by_release = store
            .cost_by(CostDimension::Release, Some("prod"), 0)
            .unwrap();
        assert_eq!(by_release[0].release, Some(1));
        assert_eq!(by_release[0].function.as_deref(), Some("a"));
        assert_eq!(by_release.len(), 2);
    }
}
