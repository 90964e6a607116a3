//! Invocation records, log lines, the hourly rollups cost questions read, and budgets.

use std::collections::HashSet;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::{Client, Row, Statement, Transaction};
use runway_meter::{InvocationRecord, LogStream, PicoUsd, RecordSink, SinkError};
use runway_store::rules::{HOUR_MS, first_whole_hour, hourly_rollups};
use runway_store::{
    Budget, BudgetAction, BudgetKind, BudgetStore, BusiestHour, Capacity, CostDimension, CostRow,
    FunctionPeak, LogEntry, StoreError, UsageStore,
};

use crate::pool::{Target, connect};
use crate::{PostgresStore, blocking, db, without_nul};

/// Writes the meter's batches on connections of its own, reconnecting after the server
/// closed one. A large batch is written as two halves at once, each in its own transaction
/// on its own connection, so the server works on both with two cores; a half that fails
/// fails the batch, and the retried batch stores only what the other half did not (records
/// are inserted `ON CONFLICT DO NOTHING`).
pub struct PostgresRecordSink {
    config: postgres::Config,
    target: Target,
    connections: [Option<(Client, SinkStatements)>; 2],
}

/// Batches at least this large are written as two halves at once.
const SPLIT_AT: usize = 256;

/// The sink's statements, prepared once per connection (each batch then skips the parse).
struct SinkStatements {
    insert_records: Statement,
    add_to_rollups: Statement,
}

/// Stores a batch's records; returns the request ids it had not stored before.
const INSERT_RECORDS: &str =
    "INSERT INTO invocations (request_id, environment, function, release, started_ms,
       duration_us, billed_ms, memory_mb, max_memory_bytes, instantiate_us, status,
       http_status, gb_seconds, cost_pusd, cpu_throttled_us, concurrency)
     SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[],
       $6::BIGINT[], $7::BIGINT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[], $11::TEXT[],
       $12::BIGINT[], $13::FLOAT8[], $14::BIGINT[], $15::BIGINT[], $16::BIGINT[])
     ON CONFLICT (request_id) DO NOTHING
     RETURNING request_id";

/// Stores the log lines of the records just stored, in the batch's order: binary `COPY`,
/// the server's fastest way in (no statement to plan, no arrays to unpack), which matters
/// because a record has one or two lines.
const COPY_LOGS: &str =
    "COPY logs (environment, function, request_id, at_ms, stream, line) FROM STDIN BINARY";

/// The column types of `COPY_LOGS`, in order.
const LOG_COLUMNS: [Type; 6] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
];

/// Adds the hours of the records just stored to the rollups.
const ADD_TO_ROLLUPS: &str =
    "INSERT INTO usage_hourly (hour_ms, environment, function, release, invocations, failures,
       gb_seconds, cost_pusd, duration_us, max_memory_bytes, cpu_throttled_us,
       peak_concurrency, memory_mb)
     SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[],
       $6::BIGINT[], $7::FLOAT8[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[],
       $12::BIGINT[], $13::BIGINT[])
     ON CONFLICT (hour_ms, environment, function, release) DO UPDATE SET
       invocations = usage_hourly.invocations + excluded.invocations,
       failures = usage_hourly.failures + excluded.failures,
       gb_seconds = usage_hourly.gb_seconds + excluded.gb_seconds,
       cost_pusd = usage_hourly.cost_pusd + excluded.cost_pusd,
       duration_us = usage_hourly.duration_us + excluded.duration_us,
       max_memory_bytes = GREATEST(usage_hourly.max_memory_bytes, excluded.max_memory_bytes),
       cpu_throttled_us = usage_hourly.cpu_throttled_us + excluded.cpu_throttled_us,
       peak_concurrency = GREATEST(usage_hourly.peak_concurrency, excluded.peak_concurrency),
       memory_mb = GREATEST(usage_hourly.memory_mb, excluded.memory_mb)";

/// Sink connection `slot`, made (again) if there is none or the server closed it.
fn sink_connection<'a>(
    slot: &'a mut Option<(Client, SinkStatements)>,
    config: &postgres::Config,
    target: &Target,
) -> Result<&'a mut (Client, SinkStatements), StoreError> {
    if slot.as_ref().is_none_or(|(client, _)| client.is_closed()) {
        *slot = None;
        let mut client = connect(config, target, "runway record sink")?;
        let action = "preparing to write records";
        let statements = SinkStatements {
            insert_records: client.prepare(INSERT_RECORDS).map_err(db(action))?,
            add_to_rollups: client.prepare(ADD_TO_ROLLUPS).map_err(db(action))?,
        };
        *slot = Some((client, statements));
    }
    Ok(slot.as_mut().expect("connected above"))
}

/// Writes `records` in one transaction on connection `slot`.
fn write_in_one_transaction(
    slot: &mut Option<(Client, SinkStatements)>,
    config: &postgres::Config,
    target: &Target,
    records: &[InvocationRecord],
) -> Result<(), StoreError> {
    let (client, statements) = sink_connection(slot, config, target)?;
    let mut tx = client.transaction().map_err(db("writing records"))?;
    write_records(&mut tx, statements, records).map_err(db("writing records"))?;
    tx.commit().map_err(db("writing records"))
}

impl Drop for PostgresRecordSink {
    fn drop(&mut self) {
        crate::close(std::mem::take(&mut self.connections));
    }
}

impl RecordSink for PostgresRecordSink {
    fn write_batch(&mut self, records: &[InvocationRecord]) -> Result<(), SinkError> {
        if records.is_empty() {
            return Ok(());
        }
        let (config, target) = (&self.config, &self.target);
        let [first, second] = &mut self.connections;
        blocking(|| {
            if records.len() < SPLIT_AT {
                return write_in_one_transaction(first, config, target, records);
            }
            let (front, back) = records.split_at(records.len() / 2);
            std::thread::scope(|scope| {
                let other = scope.spawn(|| write_in_one_transaction(second, config, target, back));
                let mine = write_in_one_transaction(first, config, target, front);
                let other = other.join().unwrap_or_else(|_| {
                    Err(StoreError::Corrupt(
                        "the record writer's second thread panicked".into(),
                    ))
                });
                // An unreachable server is the error to report when either half saw it: the
                // batch then waits rather than being given up.
                match (mine, other) {
                    (Ok(()), Ok(())) => Ok(()),
                    (Err(err), _) | (_, Err(err)) if err.is_unavailable() => Err(err),
                    (Err(err), _) | (_, Err(err)) => Err(err),
                }
            })
        })
        .map_err(|err| {
            // Unreachable: the batch waits and is written when the server answers; the
            // connection is made again on the next batch.
            if err.is_unavailable() {
                SinkError::Unavailable(err.to_string())
            } else {
                SinkError::Failed(err.to_string())
            }
        })
    }
}

/// Inserts `records`, and the log lines and rollups of those not stored before.
fn write_records(
    tx: &mut Transaction<'_>,
    statements: &SinkStatements,
    records: &[InvocationRecord],
) -> Result<(), postgres::Error> {
    let text = |f: fn(&InvocationRecord) -> &str| -> Vec<&str> { records.iter().map(f).collect() };
    let number = |f: fn(&InvocationRecord) -> i64| -> Vec<i64> { records.iter().map(f).collect() };
    let gb_seconds: Vec<f64> = records.iter().map(|r| r.gb_seconds).collect();
    let stored = tx.query(
        &statements.insert_records,
        &[
            &text(|r| &r.request_id),
            &text(|r| &r.environment),
            &text(|r| &r.function),
            &number(|r| i64::from(r.release)),
            &number(|r| r.started_at_ms),
            &number(|r| r.duration_us as i64),
            &number(|r| r.billed_ms as i64),
            &number(|r| r.memory_mb as i64),
            &number(|r| r.max_memory_bytes as i64),
            &number(|r| r.instantiate_us as i64),
            &text(|r| r.status.as_str()),
            &number(|r| i64::from(r.http_status)),
            &gb_seconds,
            &number(|r| r.cost.0 as i64),
            &number(|r| r.cpu_throttled_us as i64),
            &number(|r| i64::from(r.concurrency)),
        ],
    )?;
    // A record written before (a retried batch) is counted once: only the records this
    // statement stored get log lines and rollups. Each stored id is taken once, so a record
    // repeated within the batch counts once too.
    let mut new_ids: HashSet<&str> = stored.iter().map(|row| row.get(0)).collect();
    let new: Vec<&InvocationRecord> = records
        .iter()
        .filter(|r| new_ids.remove(r.request_id.as_str()))
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    let mut logs = BinaryCopyInWriter::new(tx.copy_in(COPY_LOGS)?, &LOG_COLUMNS);
    for record in &new {
        for (stream, line) in record.log_lines() {
            let line = without_nul(line);
            logs.write(&[
                &record.environment,
                &record.function,
                &record.request_id,
                &record.started_at_ms,
                &stream.as_str(),
                &line,
            ])?;
        }
    }
    logs.finish()?;
    add_to_rollups(tx, statements, &new)
}

/// Adds newly stored records to their hours: one upsert for the whole batch.
fn add_to_rollups(
    tx: &mut Transaction<'_>,
    statements: &SinkStatements,
    records: &[&InvocationRecord],
) -> Result<(), postgres::Error> {
    // In one order: two halves of a batch upsert the same hours at once, and rows locked in
    // different orders could deadlock.
    let mut hours: Vec<_> = hourly_rollups(records.iter().copied())
        .into_iter()
        .collect();
    hours.sort_by(|(a, _), (b, _)| {
        (a.hour_ms, a.environment, a.function, a.release).cmp(&(
            b.hour_ms,
            b.environment,
            b.function,
            b.release,
        ))
    });
    let mut hour_ms = Vec::with_capacity(hours.len());
    let mut environment = Vec::with_capacity(hours.len());
    let mut function = Vec::with_capacity(hours.len());
    let mut release = Vec::with_capacity(hours.len());
    let mut sums: [Vec<i64>; 8] = Default::default();
    let mut gb_seconds = Vec::with_capacity(hours.len());
    for (key, s) in &hours {
        hour_ms.push(key.hour_ms);
        environment.push(key.environment);
        function.push(key.function);
        release.push(i64::from(key.release));
        gb_seconds.push(s.gb_seconds);
        for (column, value) in sums.iter_mut().zip([
            s.invocations,
            s.failures,
            s.cost_pusd,
            s.duration_us,
            s.max_memory_bytes,
            s.cpu_throttled_us,
            s.peak_concurrency,
            s.memory_mb,
        ]) {
            column.push(value);
        }
    }
    let [
        invocations,
        failures,
        cost_pusd,
        duration_us,
        max_memory_bytes,
        cpu_throttled_us,
        peak_concurrency,
        memory_mb,
    ] = &sums;
    tx.execute(
        &statements.add_to_rollups,
        &[
            &hour_ms,
            &environment,
            &function,
            &release,
            invocations,
            failures,
            &gb_seconds,
            cost_pusd,
            duration_us,
            max_memory_bytes,
            cpu_throttled_us,
            peak_concurrency,
            memory_mb,
        ],
    )
    .map(drop)
}

impl UsageStore for PostgresStore {
    fn record_sink(&self) -> Result<Box<dyn RecordSink>, StoreError> {
        let pool = self.pool();
        let mut sink = PostgresRecordSink {
            config: pool.config().clone(),
            target: pool.target().clone(),
            connections: [None, None],
        };
        // Connect now, so a store that cannot take records says so when the sink is made.
        blocking(|| {
            for slot in &mut sink.connections {
                sink_connection(slot, &sink.config, &sink.target)?;
            }
            Ok::<_, StoreError>(())
        })?;
        Ok(Box::new(sink))
    }

    fn logs(
        &self,
        environment: &str,
        function: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<LogEntry>, StoreError> {
        self.run(|client| {
            client
                .query(
                    "SELECT id, request_id, at_ms, stream, line FROM logs
                     WHERE environment = $1 AND function = $2 AND id > $3 ORDER BY id LIMIT $4",
                    &[&environment, &function, &after_id, &i64::from(limit)],
                )
                .map_err(db("reading logs"))?
                .iter()
                .map(|row| {
                    let stream: &str = row.get(3);
                    Ok(LogEntry {
                        id: row.get(0),
                        request_id: row.get(1),
                        at_ms: row.get(2),
                        stream: LogStream::parse(stream)
                            .ok_or_else(|| StoreError::Corrupt(format!("log stream `{stream}`")))?,
                        line: row.get(4),
                    })
                })
                .collect()
        })
    }

    fn cost_by(
        &self,
        by: CostDimension,
        environment: Option<&str>,
        since_ms: i64,
    ) -> Result<Vec<CostRow>, StoreError> {
        let whole = first_whole_hour(since_ms);
        // Both sources give the same columns: the grouping keys and the sums.
        let keys = match by {
            CostDimension::Function => "environment, function, NULL::BIGINT, NULL::TEXT",
            CostDimension::Environment => "environment, NULL::TEXT, NULL::BIGINT, NULL::TEXT",
            CostDimension::Release => "environment, function, release, NULL::TEXT",
            CostDimension::Owner => "NULL::TEXT, NULL::TEXT, NULL::BIGINT, owner",
        };
        // A release's owner is its own column; a removed environment's releases are gone.
        let owner = if by == CostDimension::Owner {
            "COALESCE((SELECT r.owner FROM releases r
               WHERE r.environment = s.environment AND r.function = s.function
                 AND r.number = s.release), '')"
        } else {
            "NULL::TEXT"
        };
        // Spelled out per case (not `$3 IS NULL OR …`) so the planner uses the indexes.
        let in_environment = if environment.is_some() {
            "environment = $3::TEXT AND"
        } else {
            "$3::TEXT IS NULL AND"
        };
        let sql = format!(
            "WITH s AS (
               SELECT environment, function, release, invocations, failures, gb_seconds,
                      cost_pusd, duration_us, max_memory_bytes
               FROM usage_hourly
               WHERE {in_environment} hour_ms >= $1
               UNION ALL
               SELECT environment, function, release, 1,
                      CASE WHEN status IN ('ok', 'client_gone') THEN 0 ELSE 1 END,
                      gb_seconds, cost_pusd, duration_us, max_memory_bytes
               FROM invocations
               WHERE {in_environment} started_ms >= $2 AND started_ms < $1
             ),
             o AS (SELECT s.*, {owner} AS owner FROM s)
             SELECT {keys}, SUM(invocations)::BIGINT, SUM(failures)::BIGINT,
                    SUM(gb_seconds)::FLOAT8, SUM(cost_pusd)::BIGINT, SUM(duration_us)::BIGINT,
                    MAX(max_memory_bytes)::BIGINT
             FROM o GROUP BY 1, 2, 3, 4
             ORDER BY SUM(cost_pusd) DESC, 1 NULLS FIRST, 2 NULLS FIRST, 3 NULLS FIRST,
                      4 NULLS FIRST"
        );
        self.run(|client| {
            client
                .query(&sql, &[&whole, &since_ms, &environment])
                .map(|rows| rows.iter().map(cost_row).collect())
                .map_err(db("summing usage"))
        })
    }

    fn capacity(
        &self,
        environment: Option<&str>,
        since_ms: i64,
        full_core_mb: f64,
    ) -> Result<Capacity, StoreError> {
        let from = since_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let in_environment = if environment.is_some() {
            "environment = $2::TEXT AND"
        } else {
            "$2::TEXT IS NULL AND"
        };
        self.transaction("reading peak use", |tx| {
            let functions = tx
                .query(
                    &format!(
                        "SELECT environment, function, MAX(memory_mb), MAX(peak_concurrency),
                           MAX(max_memory_bytes), SUM(invocations)::BIGINT,
                           SUM(duration_us)::BIGINT, SUM(cost_pusd)::BIGINT
                         FROM usage_hourly WHERE {in_environment} hour_ms >= $1
                         GROUP BY environment, function
                         ORDER BY MAX(peak_concurrency) * MAX(memory_mb) DESC, environment,
                           function"
                    ),
                    &[&from, &environment],
                )
                .map_err(db("reading peak use"))?
                .iter()
                .map(|row| FunctionPeak {
                    environment: row.get(0),
                    function: row.get(1),
                    memory_mb: row.get::<_, i64>(2) as u64,
                    peak_concurrency: row.get::<_, i64>(3) as u32,
                    max_memory_used_bytes: row.get::<_, i64>(4) as u64,
                    invocations: row.get::<_, i64>(5) as u64,
                    duration_us: row.get::<_, i64>(6) as u64,
                    cost: PicoUsd(row.get::<_, i64>(7) as u64),
                })
                .collect();
            // The busiest hour by memory held at once: each function's peak in that hour,
            // summed.
            let busiest = tx
                .query_opt(
                    &format!(
                        "SELECT hour_ms, SUM(pc)::BIGINT, SUM(pc * mm)::BIGINT,
                           SUM(pc * LEAST(1.0::FLOAT8, mm / $3::FLOAT8))::FLOAT8
                         FROM (SELECT hour_ms, environment, function, MAX(peak_concurrency) AS pc,
                                 MAX(memory_mb) AS mm
                               FROM usage_hourly WHERE {in_environment} hour_ms >= $1
                               GROUP BY hour_ms, environment, function) AS peaks
                         GROUP BY hour_ms ORDER BY SUM(pc * mm) DESC, hour_ms DESC LIMIT 1"
                    ),
                    &[&from, &environment, &full_core_mb],
                )
                .map_err(db("reading the busiest hour"))?
                .map(|row| BusiestHour {
                    hour_ms: row.get(0),
                    instances: row.get::<_, i64>(1) as u64,
                    memory_mb: row.get::<_, i64>(2) as u64,
                    cores: row.get(3),
                });
            let first_hour_ms = tx
                .query_one(
                    &format!(
                        "SELECT MIN(hour_ms) FROM usage_hourly WHERE {in_environment} hour_ms >= $1"
                    ),
                    &[&from, &environment],
                )
                .map_err(db("reading the first hour"))?
                .get(0);
            Ok(Capacity {
                since_ms: from,
                functions,
                busiest,
                first_hour_ms,
            })
        })
    }
}

fn cost_row(row: &Row) -> CostRow {
    CostRow {
        environment: row.get(0),
        function: row.get(1),
        release: row.get::<_, Option<i64>>(2).map(|r| r as u32),
        owner: row.get(3),
        invocations: row.get::<_, i64>(4) as u64,
        failures: row.get::<_, i64>(5) as u64,
        gb_seconds: row.get(6),
        cost: PicoUsd(row.get::<_, i64>(7) as u64),
        duration_us: row.get::<_, i64>(8) as u64,
        max_memory_bytes: row.get::<_, i64>(9) as u64,
    }
}

/// A serde enum's name (`"env"`), as stored.
fn text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A serde enum from its stored name.
fn parsed<T: serde::de::DeserializeOwned>(what: &str, value: &str) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(value.to_owned()))
        .map_err(|_| StoreError::Corrupt(format!("stored {what} `{value}` is not valid")))
}

impl BudgetStore for PostgresStore {
    fn set_budget(&self, budget: &Budget) -> Result<(), StoreError> {
        let action = "setting a budget";
        self.change(action, |tx| {
            tx.execute(
                "INSERT INTO budgets (id, kind, scope, environment, monthly_pusd, action, source,
                   updated_ms, updated_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (id) DO UPDATE SET monthly_pusd = excluded.monthly_pusd,
                   action = excluded.action, source = excluded.source,
                   updated_ms = excluded.updated_ms, updated_by = excluded.updated_by",
                &[
                    &budget.id,
                    &text(&budget.kind),
                    &budget.scope,
                    &budget.environment,
                    &(budget.monthly_pusd as i64),
                    &budget.action.as_str(),
                    &budget.source,
                    &budget.updated_at_ms,
                    &budget.updated_by,
                ],
            )
            .map(drop)
            .map_err(db(action))
        })
    }

    fn budgets(&self) -> Result<Vec<Budget>, StoreError> {
        self.run(|client| {
            client
                .query(
                    "SELECT id, kind, scope, environment, monthly_pusd, action, source,
                       updated_ms, updated_by
                     FROM budgets ORDER BY id",
                    &[],
                )
                .map_err(db("listing budgets"))?
                .iter()
                .map(|row| {
                    Ok(Budget {
                        id: row.get(0),
                        kind: parsed::<BudgetKind>("budget kind", row.get(1))?,
                        scope: row.get(2),
                        environment: row.get(3),
                        monthly_pusd: row.get::<_, i64>(4) as u64,
                        action: parsed::<BudgetAction>("budget action", row.get(5))?,
                        source: row.get(6),
                        updated_at_ms: row.get(7),
                        updated_by: row.get(8),
                    })
                })
                .collect()
        })
    }

    fn remove_budget(&self, id: &str) -> Result<bool, StoreError> {
        let action = "removing a budget";
        self.change(action, |tx| {
            tx.execute("DELETE FROM budgets WHERE id = $1", &[&id])
                .map(|n| n > 0)
                .map_err(db(action))
        })
    }

    fn claim_budget_alert(
        &self,
        budget: &str,
        month: &str,
        threshold: u32,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        self.run(|client| {
            client
                .execute(
                    "INSERT INTO budget_alerts (budget, month, threshold, at_ms)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[&budget, &month, &i64::from(threshold), &at_ms],
                )
                .map(|n| n > 0)
                .map_err(db("recording a budget alert"))
        })
    }
}
