//! Cluster mode on a private PostgreSQL: hello throughput on a PostgreSQL-backed node against
//! a SQLite-backed one in the same run, the delay from a deploy through one node to the new
//! release answering on another, the records one node writes per second, jobs per second
//! across three nodes, and creating an environment from one of 100 functions.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::bail;
use runway_store::prelude::*;
use runway_store::{Job, JobRequest, JobSource, JobState};
use runway_test_postgres::TestPostgres;

use super::{deploy, median, signal_term, wait_for, wrk};

/// Deploys measured for the propagation delay.
const DEPLOYS: usize = 50;
/// Jobs run across three nodes.
const JOBS: usize = 3000;

/// A node on `database`, with the cluster's key; returns the process, gateway port and admin URL.
fn node(
    runway: &Path,
    data: &Path,
    database: &str,
    key: &Path,
) -> anyhow::Result<(Child, u16, String)> {
    super::spawn_node_with(
        runway,
        data,
        &["--secret-key-file".as_ref(), key.as_os_str()],
        &[("RUNWAY_DATABASE_URL", database)],
    )
}

fn stop(mut child: Child) {
    signal_term(&child);
    _ = child.wait();
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

/// Runs every cluster measurement and prints the figures.
pub fn run(root: &Path, runway: &Path, rounds: u32, seconds: u64) -> anyhow::Result<()> {
    let Some(server) = TestPostgres::start() else {
        bail!("the cluster benchmark needs PostgreSQL (Debian's postgresql package)");
    };
    let scratch = tempfile::tempdir()?;
    let key = scratch.path().join("secrets.key");
    std::fs::write(&key, format!("{}\n", "5a".repeat(32)))?;
    println!(
        "\n## Cluster mode (PostgreSQL {} on loopback)",
        postgres_version()
    );
    throughput(root, runway, &server, &key, rounds, seconds)?;
    propagation(root, runway, &server, &key, scratch.path())?;
    records(&server, scratch.path())?;
    jobs(root, runway, &server, &key, scratch.path())?;
    environments(root, runway, &server, &key, scratch.path())?;
    Ok(())
}

fn postgres_version() -> String {
    Command::new("sh")
        .args(["-c", "ls /usr/lib/postgresql | sort -n | tail -1"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Hello at 16 connections: a node on PostgreSQL against a node on SQLite, taking turns.
fn throughput(
    root: &Path,
    runway: &Path,
    server: &TestPostgres,
    key: &Path,
    rounds: u32,
    seconds: u64,
) -> anyhow::Result<()> {
    let hello = root.join("examples/hello");
    let (mut sqlite, mut postgres) = (Vec::new(), Vec::new());
    let (mut sqlite_cpu, mut postgres_cpu, mut database_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds.max(1) {
        for backend in ["sqlite", "postgres"] {
            let data = tempfile::tempdir()?;
            let (child, port, admin) = match backend {
                "sqlite" => super::spawn_node(runway, data.path())?,
                _ => node(runway, data.path(), &server.create_database(), key)?,
            };
            if !deploy(runway, &admin, &hello)? {
                bail!("deploying hello on the {backend} node failed");
            }
            let url = format!("http://127.0.0.1:{port}/hello");
            wait_for(&url)?;
            wrk(&url, 16, 3)?;
            let (node_before, db_before) = (cpu_ticks(&[child.id()]), cpu_ticks(&postgres_pids()));
            let run = wrk(&url, 16, seconds)?;
            let (node_after, db_after) = (cpu_ticks(&[child.id()]), cpu_ticks(&postgres_pids()));
            let requests = run.rps * seconds as f64;
            // Clock ticks are 10 ms: CPU microseconds per request served.
            let per_request = |ticks: u64| ticks as f64 * 10_000.0 / requests;
            let node_us = per_request(node_after.saturating_sub(node_before));
            let db_us = per_request(db_after.saturating_sub(db_before));
            println!(
                "  round {round} {backend:<8} c=16 {:>9.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  node CPU {node_us:.0} µs/request  database CPU {db_us:.0} µs/request",
                run.rps, run.p50_us, run.p99_us
            );
            match backend {
                "sqlite" => {
                    sqlite.push(run.rps);
                    sqlite_cpu.push(node_us);
                }
                _ => {
                    postgres.push(run.rps);
                    postgres_cpu.push(node_us);
                    database_cpu.push(db_us);
                }
            }
            stop(child);
        }
    }
    let (s, p) = (median(sqlite), median(postgres));
    println!(
        "hello, 16 connections: SQLite-backed node {s:.0} req/s, PostgreSQL-backed node {p:.0} req/s: {:.2}× (goal ≥ 0.95×); node CPU per request {:.0} µs (SQLite, writes included) and {:.0} µs (PostgreSQL); the PostgreSQL server on the same 2 cores spent {:.0} µs per request",
        p / s,
        median(sqlite_cpu),
        median(postgres_cpu),
        median(database_cpu)
    );
    Ok(())
}

/// Processes of the `postgres` user: the harness's database server.
fn postgres_pids() -> Vec<u32> {
    Command::new("pgrep")
        .args(["-u", "postgres"])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// User and system CPU time of processes, in clock ticks (10 ms).
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split(' ').collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Three nodes; 50 deploys through A, each changing an environment variable the probe
/// function prints; the time from A's answer until B answers with the new value.
fn propagation(
    root: &Path,
    runway: &Path,
    server: &TestPostgres,
    key: &Path,
    scratch: &Path,
) -> anyhow::Result<()> {
    let database = server.create_database();
    let nodes: Vec<(Child, u16, String)> = (0..3)
        .map(|n| node(runway, &scratch.join(format!("prop-{n}")), &database, key))
        .collect::<anyhow::Result<_>>()?;
    let app = scratch.join("probe-app");
    std::fs::create_dir_all(&app)?;
    let probe = root.join("examples/target/wasm32-wasip2/release/probe.wasm");
    let write = |version: usize| -> anyhow::Result<()> {
        std::fs::write(
            app.join("runway.toml"),
            format!(
                "[[function]]\nname = \"probe\"\ncomponent = \"{}\"\nenv = {{ VERSION = \"v{version}\" }}\n\n[[function.trigger]]\nhttp = {{ route = \"/probe\" }}\n",
                probe.display()
            ),
        )?;
        Ok(())
    };
    let http = reqwest_like::Client::new();
    let b = format!("http://127.0.0.1:{}/probe", nodes[1].1);
    write(0)?;
    deploy(runway, &nodes[0].2, &app)?;
    wait_until(&http, &b, "VERSION=v0", Duration::from_secs(60))?;
    // From the deploy command's exit (A has answered: the release is committed) and, as an
    // upper bound, from its start (the CLI, the upload check and the deploy call included).
    let (mut delays, mut whole) = (Vec::new(), Vec::new());
    for version in 1..=DEPLOYS {
        write(version)?;
        let started = Instant::now();
        if !deploy(runway, &nodes[0].2, &app)? {
            bail!("deploy {version} through A failed");
        }
        let answered = Instant::now();
        wait_until(
            &http,
            &b,
            &format!("VERSION=v{version}"),
            Duration::from_secs(30),
        )?;
        delays.push(answered.elapsed().as_secs_f64() * 1000.0);
        whole.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let p50 = percentile(&mut delays, 0.5);
    let p99 = percentile(&mut delays, 0.99);
    let (w50, w99) = (percentile(&mut whole, 0.5), percentile(&mut whole, 0.99));
    println!(
        "propagation over {DEPLOYS} deploys through A, until B answers with the new release: from the deploy command's exit p50 {p50:.1} ms, p99 {p99:.1} ms; from its start (CLI and upload included) p50 {w50:.1} ms, p99 {w99:.1} ms (goal: p99 ≤ 1000 ms)"
    );
    for (child, _, _) in nodes {
        stop(child);
    }
    Ok(())
}

/// Polls `url` every millisecond until its body contains `needle`.
fn wait_until(
    http: &reqwest_like::Client,
    url: &str,
    needle: &str,
    limit: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if http.get(url).is_ok_and(|body| body.contains(needle)) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    bail!("{url} never answered with {needle}")
}

/// Records one node writes per second: the store's own sink, batches of 1,000, three passes
/// of 100,000 records, each into a fresh database after a checkpoint (the throughput runs
/// before leave the server writing out their own rows, which is not the writer's cost).
fn records(server: &TestPostgres, scratch: &Path) -> anyhow::Result<()> {
    let mut rates = Vec::new();
    for pass in 0..3 {
        let url = server.create_database();
        let mut admin = postgres::Client::connect(&url, postgres::NoTls)?;
        admin.batch_execute("CHECKPOINT")?;
        let store = runway_store_postgres::PostgresStore::open(
            &url,
            &scratch.join(format!("records-node-{pass}")),
        )?;
        let mut sink = store.record_sink()?;
        let batches: Vec<Vec<_>> = (0..100)
            .map(|batch| {
                (0..1000)
                    .map(|n| record(&format!("r-{pass}-{batch}-{n}")))
                    .collect()
            })
            .collect();
        let start = Instant::now();
        for batch in &batches {
            sink.write_batch(batch)
                .map_err(|err| anyhow::anyhow!("{err}"))?;
        }
        rates.push(100_000.0 / start.elapsed().as_secs_f64());
    }
    let median = percentile(&mut rates, 0.5);
    println!(
        "records one node writes to PostgreSQL, batches of 1,000 with their log lines and rollups: median {median:.0} records/s over 3 passes ({:.0}–{:.0}) (goal ≥ 50,000)",
        rates[0],
        rates[rates.len() - 1]
    );
    Ok(())
}

fn record(id: &str) -> runway_meter::InvocationRecord {
    runway_meter::InvocationRecord {
        request_id: id.into(),
        environment: "prod".into(),
        function: "hello".into(),
        release: 1,
        started_at_ms: 1_700_000_000_000,
        duration_us: 500,
        billed_ms: 1,
        memory_mb: 128,
        max_memory_bytes: 2 << 20,
        instantiate_us: 25,
        status: runway_meter::InvocationStatus::Ok,
        http_status: 200,
        gb_seconds: 0.000125,
        cost: runway_meter::PicoUsd(2_283),
        stdout: b"Hello, World!\n".to_vec(),
        stderr: Vec::new(),
        error: None,
        cpu_throttled_us: 0,
        concurrency: 1,
    }
}

/// Jobs per second across three nodes: 3,000 queued at once, each a short invocation.
fn jobs(
    root: &Path,
    runway: &Path,
    server: &TestPostgres,
    key: &Path,
    scratch: &Path,
) -> anyhow::Result<()> {
    let database = server.create_database();
    let nodes: Vec<(Child, u16, String)> = (0..3)
        .map(|n| node(runway, &scratch.join(format!("jobs-{n}")), &database, key))
        .collect::<anyhow::Result<_>>()?;
    let app = scratch.join("jobs-app");
    std::fs::create_dir_all(&app)?;
    std::fs::write(
        app.join("runway.toml"),
        format!(
            "[[function]]\nname = \"nightly\"\ncomponent = \"{}\"\n\n[[function.trigger]]\nqueue = {{}}\n",
            root.join("examples/target/wasm32-wasip2/release/nightly.wasm")
                .display()
        ),
    )?;
    if !deploy(runway, &nodes[0].2, &app)? {
        bail!("deploying the job function failed");
    }
    std::thread::sleep(Duration::from_secs(2));
    let store = runway_store_postgres::PostgresStore::open(&database, &scratch.join("jobs-bench"))?;
    let now = now_ms();
    let start = Instant::now();
    for n in 0..JOBS {
        store.enqueue_job(&Job {
            id: format!("j-bench-{n:05}"),
            environment: "prod".into(),
            function: "nightly".into(),
            source: JobSource::Queue,
            request: JobRequest {
                method: "POST".into(),
                path: "/run?ms=0".into(),
                headers: Vec::new(),
                body: Vec::new(),
            },
            state: JobState::Pending,
            attempts: 0,
            max_attempts: 3,
            next_run_at_ms: now,
            last_error: None,
            result: None,
            scheduled_for_ms: None,
            created_at_ms: now,
            updated_at_ms: now,
        })?;
    }
    let enqueued = start.elapsed();
    loop {
        let done = store
            .jobs("prod", &[JobState::Succeeded], JOBS as u32 + 10)?
            .len();
        if done >= JOBS {
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("only {done} of {JOBS} jobs succeeded in 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = start.elapsed().as_secs_f64();
    println!(
        "jobs across 3 nodes: {JOBS} queued (enqueue {:.0} jobs/s) and run in {took:.1} s: {:.0} jobs/s",
        JOBS as f64 / enqueued.as_secs_f64(),
        JOBS as f64 / took
    );
    for (child, _, _) in nodes {
        stop(child);
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `env create --from` an environment of 100 functions on a PostgreSQL-backed node.
fn environments(
    root: &Path,
    runway: &Path,
    server: &TestPostgres,
    key: &Path,
    scratch: &Path,
) -> anyhow::Result<()> {
    let (child, _, admin) = node(
        runway,
        &scratch.join("envs"),
        &server.create_database(),
        key,
    )?;
    let app = scratch.join("envs-app");
    std::fs::create_dir_all(&app)?;
    let hello = root.join("examples/target/wasm32-wasip2/release/hello.wasm");
    let mut manifest = String::new();
    for i in 0..100 {
        manifest.push_str(&format!(
            "[[function]]\nname = \"fn-{i:03}\"\ncomponent = \"{}\"\n\n[[function.trigger]]\nhttp = {{ route = \"/fn-{i:03}\" }}\n\n",
            hello.display()
        ));
    }
    std::fs::write(app.join("runway.toml"), manifest)?;
    if !deploy(runway, &admin, &app)? {
        bail!("deploying 100 functions failed");
    }
    let (mut trips, mut node_side) = (Vec::new(), Vec::new());
    for round in 0..10 {
        let name = format!("bench-{round}");
        let (answer, took) = super::envs::call(
            "POST",
            &format!("{admin}/v1/envs"),
            Some(&format!("{{\"name\":\"{name}\",\"from\":\"prod\"}}")),
        )?;
        if answer["copied_functions"].as_u64() != Some(100) {
            bail!("creating {name} did not copy 100 functions: {answer}");
        }
        trips.push(took);
        node_side.push(answer["took_ms"].as_f64().unwrap_or(f64::NAN));
        super::envs::call("DELETE", &format!("{admin}/v1/envs/{name}"), None)?;
    }
    println!(
        "env create --from 100 functions on PostgreSQL, 10 rounds: admin API round trip p50 {:.1} ms, node-side p50 {:.1} ms (goal < 100 ms)",
        median(trips),
        median(node_side)
    );
    stop(child);
    Ok(())
}

/// A tiny blocking HTTP GET over curl-free std sockets, enough to poll loopback.
mod reqwest_like {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    pub struct Client;

    impl Client {
        pub fn new() -> Client {
            Client
        }

        /// The body of a GET, if the server answered.
        pub fn get(&self, url: &str) -> std::io::Result<String> {
            let rest = url.strip_prefix("http://").unwrap_or(url);
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            let mut stream = TcpStream::connect(host)?;
            write!(
                stream,
                "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
            )?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        }
    }
}
