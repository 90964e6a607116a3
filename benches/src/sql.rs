//! The cost of least privilege on SQL: a granted, indexed SELECT through Runway's SQL
//! capability (authorizer, row hook, deadline check, pooled connection, value conversion)
//! against the same query on a plain SQLite connection with no authorizer, in one process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use runway_cap_sql::{SqlDatabase, Value};
use runway_policy::{Caller, DiscardAudit, Guard, Policy, PolicyMode};

const QUERY: &str = "SELECT id, customer_id, total FROM orders WHERE customer_id = ?";
const CUSTOMERS: i64 = 2_000;
const ORDERS: i64 = 20_000;

/// Median nanoseconds per query for each way of running it.
pub struct SqlResult {
    pub raw_prepared_each_time_ns: f64,
    pub raw_cached_statement_ns: f64,
    pub runway_ns: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn collect(rows: &mut rusqlite::Rows<'_>) -> usize {
    let mut out: Vec<Vec<rusqlite::types::Value>> = Vec::new();
    while let Some(row) = rows.next().expect("step") {
        out.push((0..3).map(|i| row.get(i).expect("column")).collect());
    }
    out.len()
}

pub fn run(rounds: u32) -> anyhow::Result<SqlResult> {
    let dir = tempfile::tempdir()?;
    let db = SqlDatabase::open(dir.path())?;
    db.apply(&format!(
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, total REAL NOT NULL);
         CREATE INDEX orders_by_customer ON orders (customer_id);
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last})
         INSERT INTO orders (customer_id, total) SELECT i % {CUSTOMERS}, i * 0.5 FROM n;",
        last = ORDERS - 1
    ))?;
    let policy: Policy = Policy {
        sql: vec![runway_policy::SqlGrant::parse("select:orders")?],
        ..Policy::default()
    };
    let guard = Guard::new(
        Caller {
            environment: "bench".into(),
            function: "orders".into(),
            release: 1,
        },
        Arc::new(policy),
        PolicyMode::Enforce,
        Arc::new(DiscardAudit),
    );
    let function = db.for_function(guard, 64 << 20);
    let raw = rusqlite::Connection::open(db.path())?;
    let deadline = || Instant::now() + Duration::from_secs(10);
    let query_each = |c: i64| {
        let mut stmt = raw.prepare(QUERY).expect("prepare");
        collect(&mut stmt.query([c]).expect("query"))
    };
    let query_cached = |c: i64| {
        let mut stmt = raw.prepare_cached(QUERY).expect("prepare");
        collect(&mut stmt.query([c]).expect("query"))
    };
    let query_runway = |c: i64| {
        function
            .query(QUERY, &[Value::Integer(c)], deadline())
            .expect("granted")
            .rows
            .len()
    };
    // The three run in turn for every customer id, in a rotating order, so each meets the
    // same caches and none always follows the same neighbour.
    let run = |iterations: u32| -> [f64; 3] {
        let mut spent = [Duration::ZERO; 3];
        let mut rows = 0;
        for i in 0..iterations {
            let customer = i64::from(i) % CUSTOMERS;
            let queries = [
                &query_each as &dyn Fn(i64) -> usize,
                &query_cached,
                &query_runway,
            ];
            for turn in 0..3 {
                let slot = (i as usize + turn) % 3;
                let query = queries[slot];
                let started = Instant::now();
                rows += query(customer);
                spent[slot] += started.elapsed();
            }
        }
        assert_eq!(
            rows,
            3 * iterations as usize * (ORDERS / CUSTOMERS) as usize
        );
        spent.map(|d| d.as_nanos() as f64 / f64::from(iterations))
    };
    run(5_000);
    let (mut raw_each, mut raw_cached, mut runway) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) * 3 {
        let [each, cached, platform] = run(30_000);
        raw_each.push(each);
        raw_cached.push(cached);
        runway.push(platform);
    }
    Ok(SqlResult {
        raw_prepared_each_time_ns: median(raw_each),
        raw_cached_statement_ns: median(raw_cached),
        runway_ns: median(runway),
    })
}
