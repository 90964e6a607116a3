//! The cost explorer with 10 million invocation records: answers from the hourly rollups,
//! against summing the records themselves.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use super::{BENCH_TOKEN, signal_term, spawn_node};

/// Records generated: 30 days of traffic over 100 functions.
const RECORDS: i64 = 10_000_000;

fn timed_get(url: &str) -> anyhow::Result<(f64, usize)> {
    let output = Command::new("curl")
        .args(["-s", "-H", &format!("authorization: Bearer {BENCH_TOKEN}")])
        .args(["-w", "\n%{http_code} %{time_total}"])
        .arg(url)
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (body, tail) = text.rsplit_once('\n').context("curl printed nothing")?;
    let (status, seconds) = tail.split_once(' ').context("unexpected curl output")?;
    if status != "200" {
        bail!("{url} answered {status}: {body}");
    }
    Ok((seconds.parse::<f64>()? * 1000.0, body.len()))
}

pub fn run(runway: &Path, rounds: u32) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    // The node creates the schema; then it stops and the records are written directly,
    // with the rollups the meter would have kept.
    let (mut child, _, _) = spawn_node(runway, data.path())?;
    signal_term(&child);
    child.wait()?;
    let started = Instant::now();
    let mut conn = rusqlite::Connection::open(data.path().join("runway.db"))?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let span_ms: i64 = 30 * 24 * 3600 * 1000;
    let tx = conn.transaction()?;
    tx.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 - 1)
         INSERT INTO invocations (request_id, environment, function, release, started_ms,
           duration_us, billed_ms, memory_mb, max_memory_bytes, instantiate_us, status,
           http_status, gb_seconds, cost_pusd, cpu_throttled_us)
         SELECT 'r' || i, 'prod', printf('fn-%03d', i % 100), 1, ?2 - (i * ?3 / ?1),
                500 + i % 1000, 1, 128, 1048576, 20, CASE WHEN i % 97 = 0 THEN 'error' ELSE 'ok' END,
                200, 0.000125, 2083 + 200000, 0
         FROM n",
        rusqlite::params![RECORDS, now_ms, span_ms],
    )?;
    tx.execute_batch(
        "INSERT INTO usage_hourly
         SELECT (started_ms / 3600000) * 3600000, environment, function, release, COUNT(*),
                SUM(status != 'ok'), SUM(gb_seconds), SUM(cost_pusd), SUM(duration_us),
                MAX(max_memory_bytes), SUM(cpu_throttled_us), MAX(concurrency), MAX(memory_mb)
         FROM invocations GROUP BY 1, 2, 3, 4",
    )?;
    tx.commit()?;
    let rollup_rows: i64 = conn.query_row("SELECT COUNT(*) FROM usage_hourly", [], |r| r.get(0))?;
    let written = started.elapsed();
    // What the answer would cost without rollups: every record of the week summed.
    let raw = Instant::now();
    let since_week = now_ms - 7 * 24 * 3600 * 1000;
    let groups: i64 = conn.query_row(
        "SELECT COUNT(*) FROM (SELECT function, SUM(cost_pusd) FROM invocations
         WHERE environment = 'prod' AND started_ms >= ?1 GROUP BY function)",
        [since_week],
        |r| r.get(0),
    )?;
    let raw_week = raw.elapsed();
    drop(conn);

    let (mut child, _, admin) = spawn_node(runway, data.path())?;
    println!(
        "\n## Cost explorer: {} invocation records over 30 days, 100 functions ({rollup_rows} hourly rollup rows; written in {:.0} s)",
        RECORDS,
        written.as_secs_f64()
    );
    println!("| question | answer p50 | slowest of {rounds} |");
    println!("|---|---|---|");
    for (what, path) in [
        (
            "`runway cost --by function --since 7d`",
            "/v1/cost/breakdown?by=function&since=7d&scope=all",
        ),
        (
            "`runway cost --by env --since 30d`",
            "/v1/cost/breakdown?by=env&since=30d&scope=all",
        ),
        (
            "`runway cost --by owner --since 30d`",
            "/v1/cost/breakdown?by=owner&since=30d&scope=all",
        ),
        (
            "`runway cost --by release --since 30d`",
            "/v1/cost/breakdown?by=release&since=30d&scope=all",
        ),
        ("`runway cost --since 24h`", "/v1/cost?since=24h"),
        ("`runway env ls` (cost since creation)", "/v1/envs"),
    ] {
        let mut times = Vec::new();
        for _ in 0..rounds {
            times.push(timed_get(&format!("{admin}{path}"))?.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| {what} | {:.1} ms | {:.1} ms |",
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
    println!(
        "| the same week summed from the records (no rollups, SQLite directly) | {:.0} ms | – |",
        raw_week.as_secs_f64() * 1000.0
    );
    println!("goal: under 1 s with 10 million records ({groups} groups)");
    signal_term(&child);
    child.wait()?;
    Ok(())
}
