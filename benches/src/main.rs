//! The benchmark harness: Runway (metering on) against `wasmtime serve` (default and tuned)
//! and a native hyper server, all serving the same hello response, measured with `wrk` in
//! one run on this machine; plus deploy-to-first-response time per example and Runway's
//! per-request instantiation time read from its own invocation records.
//!
//! Run: `cargo run --release -p runway-bench` (see docs/BENCHMARKS.md for options).

mod cluster;
mod cpu;
mod envs;
mod rollups;
mod sql;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

/// The wasmtime CLI version compared against: the same major version Runway embeds.
const WASMTIME_VERSION: &str = "48.0.8";

#[derive(Parser)]
#[command(about = "Measure Runway against wasmtime serve and native hyper")]
struct Args {
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Connection counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    connections: Vec<u32>,
    /// Rounds; servers take turns within each round and medians are reported.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Only these servers (runway, wasmtime, wasmtime-tuned, native).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip the deploy-to-first-response measurement.
    #[arg(long)]
    skip_deploy: bool,
    /// Skip the noisy-neighbour measurement (hello latency while hot loops run).
    #[arg(long)]
    skip_neighbour: bool,
    /// Extra components to time from deploy to first response, as NAME=PATH (e.g. a JS component).
    #[arg(long, value_delimiter = ',')]
    extra: Vec<String>,
    /// The runway binary to measure (default: target/release/runway, built by the harness),
    /// e.g. an older build for a before/after comparison.
    #[arg(long)]
    runway_bin: Option<PathBuf>,
    /// Skip the SQL authorizer overhead measurement.
    #[arg(long)]
    skip_sql: bool,
    /// Only measure the SQL authorizer overhead (no servers, no wrk).
    #[arg(long)]
    sql_only: bool,
    /// Skip the environment creation measurement.
    #[arg(long)]
    skip_envs: bool,
    /// Only measure environment creation (no wrk).
    #[arg(long)]
    envs_only: bool,
    /// Skip the CPU-follows-memory measurement.
    #[arg(long)]
    skip_cpu: bool,
    /// Only measure the CPU-bound example at each memory size (no wrk).
    #[arg(long)]
    cpu_only: bool,
    /// Skip the cost explorer measurement (10 million records).
    #[arg(long)]
    skip_rollups: bool,
    /// Only measure the cost explorer with 10 million records (no wrk).
    #[arg(long)]
    rollups_only: bool,
    /// Skip the cluster measurements (PostgreSQL-backed nodes).
    #[arg(long)]
    skip_cluster: bool,
    /// Only measure cluster mode: throughput on PostgreSQL against SQLite, propagation,
    /// records and jobs per second, environment creation (no wasmtime).
    #[arg(long)]
    cluster_only: bool,
    /// Runs a native hyper hello server on ADDR (used by the harness itself).
    #[arg(long, hide = true)]
    native_server: Option<String>,
}

fn sql_report(rounds: u32) -> anyhow::Result<()> {
    println!(
        "\n## SQL: a granted indexed SELECT (10 rows of 20,000, all in the page cache), per query, median of {} runs",
        rounds.max(1) * 3
    );
    let result = sql::run(rounds)?;
    println!(
        "  plain SQLite, statement prepared per query (no authorizer): {:>7.2} µs",
        result.raw_prepared_each_time_ns / 1000.0
    );
    println!(
        "  plain SQLite, cached statement (no authorizer):             {:>7.2} µs",
        result.raw_cached_statement_ns / 1000.0
    );
    println!(
        "  Runway runway:platform/sql (authorizer, row hook, deadline): {:>7.2} µs",
        result.runway_ns / 1000.0
    );
    println!(
        "  overhead vs the same prepared query: {:+.1}% (goal: at most +10%); vs a cached statement: {:+.1}%",
        (result.runway_ns / result.raw_prepared_each_time_ns - 1.0) * 100.0,
        (result.runway_ns / result.raw_cached_statement_ns - 1.0) * 100.0
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(addr) = &args.native_server {
        return native_server(addr);
    }
    if args.sql_only {
        return sql_report(args.rounds);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()?;
    prepare(&root)?;
    let runway = args
        .runway_bin
        .clone()
        .unwrap_or_else(|| root.join("target/release/runway"));
    if args.envs_only {
        return envs::run(&root, &runway, args.rounds.max(1) * 10);
    }
    if args.cpu_only {
        return cpu::run(&root, &runway, args.rounds.max(1) * 5);
    }
    if args.rollups_only {
        return rollups::run(&runway, args.rounds.max(1) * 5);
    }
    if args.cluster_only {
        return cluster::run(&root, &runway, args.rounds.max(1), args.duration);
    }
    let hello = root.join("examples/target/wasm32-wasip2/release/hello.wasm");
    println!("# Runway benchmark, {}", humanish_now());
    println!(
        "machine: {} cores; wrk -t1 -d{}s; rounds: {}",
        std::thread::available_parallelism()?.get(),
        args.duration,
        args.rounds
    );

    let servers = ["native", "runway", "wasmtime", "wasmtime-tuned"];
    let selected: Vec<&str> = servers
        .iter()
        .copied()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| o == s))
        .collect();
    let wasmtime = if selected.iter().any(|s| s.starts_with("wasmtime")) {
        ensure_wasmtime(&root)?
    } else {
        PathBuf::new()
    };
    let mut results: Vec<Run> = Vec::new();
    let mut instantiation = None;
    for round in 1..=args.rounds {
        for server in &selected {
            let port = free_port()?;
            let data = tempfile::tempdir()?;
            let (mut child, url) = match *server {
                "native" => {
                    let child = Command::new(std::env::current_exe()?)
                        .args(["--native-server", &format!("127.0.0.1:{port}")])
                        .stdout(Stdio::null())
                        .spawn()?;
                    (child, format!("http://127.0.0.1:{port}/hello"))
                }
                "runway" => {
                    let (child, port) =
                        start_runway(&runway, data.path(), &[root.join("examples/hello")])?;
                    (child, format!("http://127.0.0.1:{port}/hello"))
                }
                tuned => {
                    let mut command = Command::new(&wasmtime);
                    command.args(["serve", "-Scli", "--addr", &format!("127.0.0.1:{port}")]);
                    if tuned == "wasmtime-tuned" {
                        command.args([
                            "-O",
                            "pooling-memory-keep-resident=2097152",
                            "-O",
                            "pooling-table-keep-resident=524288",
                        ]);
                    }
                    let child = command
                        .arg(&hello)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()?;
                    (child, format!("http://127.0.0.1:{port}/"))
                }
            };
            wait_for(&url)?;
            wrk(&url, 16, 3)?;
            for &connections in &args.connections {
                let mut run = wrk(&url, connections, args.duration)?;
                run.server = server.to_string();
                run.round = round;
                println!(
                    "  round {round} {server:<15} c={connections:<3} {:>9.0} req/s  p50 {:>8.0} µs  p99 {:>8.0} µs",
                    run.rps, run.p50_us, run.p99_us
                );
                results.push(run);
            }
            if *server == "runway" {
                std::thread::sleep(Duration::from_millis(500));
                signal_term(&child);
                child.wait()?;
                instantiation = Some(instantiation_stats(&data.path().join("runway.db"))?);
            } else {
                child.kill().ok();
                child.wait().ok();
            }
        }
    }
    report(&results, &args.connections, &selected);
    if let Some((count, p50, p99)) = instantiation {
        println!(
            "\nRunway per-request instantiation (store + instance), from {count} invocation records: p50 {p50} µs, p99 {p99} µs (goal: p50 ≤ 20 µs)"
        );
    }
    if !args.skip_neighbour {
        neighbour(&root, &runway, args.duration)?;
    }
    if !args.skip_deploy {
        deploy_times(&root, &runway, &args.extra)?;
    }
    if !args.skip_envs {
        envs::run(&root, &runway, args.rounds.max(1) * 10)?;
    }
    if !args.skip_cpu {
        cpu::run(&root, &runway, args.rounds.max(1) * 5)?;
    }
    if !args.skip_rollups {
        rollups::run(&runway, args.rounds.max(1) * 5)?;
    }
    if !args.skip_cluster {
        cluster::run(&root, &runway, args.rounds.max(1), args.duration)?;
    }
    if !args.skip_sql {
        sql_report(args.rounds)?;
    }
    Ok(())
}

/// The bootstrap admin token of benchmark nodes.
const BENCH_TOKEN: &str = "rwy_benchmark-admin-token-not-secret";

/// Starts `runway serve` on free ports; returns the process, gateway port and admin URL.
fn spawn_node(runway: &Path, data: &Path) -> anyhow::Result<(Child, u16, String)> {
    spawn_node_with(runway, data, &[], &[])
}

/// [`spawn_node`] with extra flags and environment variables (a cluster node's database).
fn spawn_node_with(
    runway: &Path,
    data: &Path,
    args: &[&std::ffi::OsStr],
    envs: &[(&str, &str)],
) -> anyhow::Result<(Child, u16, String)> {
    let (port, admin) = (free_port()?, free_port()?);
    let child = Command::new(runway)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
            "--data-dir",
        ])
        .arg(data)
        .args(args)
        // Admin API authentication on, as in production; older binaries ignore the variable.
        .env("RUNWAY_ADMIN_TOKEN", BENCH_TOKEN)
        .envs(envs.iter().copied())
        // Default logging: every invocation's REPORT line is written, as in production.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let admin = format!("http://127.0.0.1:{admin}");
    wait_for(&format!("{admin}/v1/health"))?;
    Ok((child, port, admin))
}

/// Deploys a manifest folder with the CLI, without running its build.
fn deploy(runway: &Path, admin: &str, manifest: &Path) -> anyhow::Result<bool> {
    Ok(Command::new(runway)
        .args(["deploy", "--no-build", "--server", admin])
        .env("RUNWAY_TOKEN", BENCH_TOKEN)
        .arg(manifest)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success())
}

/// Starts a Runway node on free ports with the given example folders deployed.
fn start_runway(runway: &Path, data: &Path, manifests: &[PathBuf]) -> anyhow::Result<(Child, u16)> {
    let (child, port, admin) = spawn_node(runway, data)?;
    for manifest in manifests {
        if !deploy(runway, &admin, manifest)? {
            bail!("deploying {} failed", manifest.display());
        }
    }
    Ok((child, port))
}

/// Hello's latency at 16 connections, alone and while two hot loops (`forever`, 1 s
/// timeout, re-sent as soon as they time out) occupy the node: the cost of a runaway
/// neighbour under epoch interruption with async yields.
fn neighbour(root: &Path, runway: &Path, seconds: u64) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let examples = root.join("examples");
    let (mut child, port) = start_runway(
        runway,
        data.path(),
        &[examples.join("hello"), examples.join("forever")],
    )?;
    let hello = format!("http://127.0.0.1:{port}/hello");
    wrk(&hello, 16, 3)?;
    let quiet = wrk(&hello, 16, seconds)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            let url = format!("http://127.0.0.1:{port}/forever");
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    _ = Command::new("curl")
                        .args(["-s", "-o", "/dev/null", &url])
                        .status();
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let noisy = wrk(&hello, 16, seconds)?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for handle in loops {
        _ = handle.join();
    }
    child.kill().ok();
    child.wait().ok();
    println!("\n| hello at c=16 | req/s | p50 µs | p99 µs |");
    println!("|---|---|---|---|");
    println!(
        "| alone | {:.0} | {:.0} | {:.0} |",
        quiet.rps, quiet.p50_us, quiet.p99_us
    );
    println!(
        "| beside 2 hot loops | {:.0} | {:.0} | {:.0} |",
        noisy.rps, noisy.p50_us, noisy.p99_us
    );
    Ok(())
}

fn humanish_now() -> String {
    let output = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output();
    output
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Builds the release binary and the example components.
fn prepare(root: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--release", "-p", "runway-cli"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("building runway failed");
    }
    runway_cli::toolchain::ensure_targets(&root.join("examples"), &["wasm32-wasip2".to_owned()])?;
    let status = Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(root.join("examples"))
        .status()?;
    if !status.success() {
        bail!("building the examples failed");
    }
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("wrk is not installed: `apt-get install wrk` (Debian) provides it");
    }
    Ok(())
}

/// Installs `wasmtime-cli` from crates.io into target/bench-tools unless it is there.
fn ensure_wasmtime(root: &Path) -> anyhow::Result<PathBuf> {
    let tools = root.join("target/bench-tools");
    let binary = tools.join("bin/wasmtime");
    let installed = Command::new(&binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(WASMTIME_VERSION))
        .unwrap_or(false);
    if !installed {
        eprintln!(
            "installing wasmtime-cli {WASMTIME_VERSION} from crates.io into {} (about 30 minutes on 2 cores)",
            tools.display()
        );
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "install",
                "wasmtime-cli",
                "--version",
                WASMTIME_VERSION,
                "--locked",
                "--root",
            ])
            .arg(&tools)
            .status()?;
        if !status.success() {
            bail!("cargo install wasmtime-cli {WASMTIME_VERSION} failed");
        }
    }
    Ok(binary)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for(url: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let ok = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", url])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{url} did not answer within 2 minutes")
}

fn signal_term(child: &Child) {
    _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

#[derive(Debug, Clone, Default)]
struct Run {
    server: String,
    round: u32,
    connections: u32,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
}

fn wrk(url: &str, connections: u32, seconds: u64) -> anyhow::Result<Run> {
    let output = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--timeout",
            "5s",
            "--latency",
            url,
        ])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut run = Run {
        connections,
        ..Run::default()
    };
    for line in text.lines() {
        let line = line.trim();
        if let Some(rps) = line.strip_prefix("Requests/sec:") {
            run.rps = rps.trim().parse()?;
        } else if let Some(value) = line.strip_prefix("50%") {
            run.p50_us = micros(value.trim())?;
        } else if let Some(value) = line.strip_prefix("99%") {
            run.p99_us = micros(value.trim())?;
        }
    }
    if run.rps == 0.0 {
        bail!("wrk reported no throughput for {url}:\n{text}");
    }
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        eprintln!("warning: wrk saw errors for {url}:\n{text}");
    }
    Ok(run)
}

fn micros(value: &str) -> anyhow::Result<f64> {
    let (number, factor) = if let Some(n) = value.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        bail!("unexpected latency `{value}` from wrk")
    };
    Ok(number.parse::<f64>()? * factor)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn report(results: &[Run], connections: &[u32], servers: &[&str]) {
    println!(
        "\n| server | conns | req/s (median) | p50 µs | p99 µs | req/s ÷ wasmtime serve | req/s ÷ wasmtime tuned | req/s ÷ native | p99 ÷ wasmtime serve |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let stat = |server: &str, c: u32, f: fn(&Run) -> f64| -> Option<f64> {
        let values: Vec<f64> = results
            .iter()
            .filter(|r| r.server == server && r.connections == c)
            .map(f)
            .collect();
        (!values.is_empty()).then(|| median(values))
    };
    // Ratios are paired within a round, then the median over rounds is taken.
    let paired = |server: &str, base: &str, c: u32, f: fn(&Run) -> f64| -> Option<f64> {
        let ratios: Vec<f64> = results
            .iter()
            .filter(|r| r.server == server && r.connections == c)
            .filter_map(|r| {
                results
                    .iter()
                    .find(|b| b.server == base && b.connections == c && b.round == r.round)
                    .map(|b| f(r) / f(b))
            })
            .collect();
        (!ratios.is_empty()).then(|| median(ratios))
    };
    let fmt = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.2}"));
    for server in servers {
        for &c in connections {
            println!(
                "| {server} | {c} | {} | {} | {} | {} | {} | {} | {} |",
                stat(server, c, |r| r.rps).map_or("–".into(), |v| format!("{v:.0}")),
                stat(server, c, |r| r.p50_us).map_or("–".into(), |v| format!("{v:.0}")),
                stat(server, c, |r| r.p99_us).map_or("–".into(), |v| format!("{v:.0}")),
                fmt(paired(server, "wasmtime", c, |r| r.rps)),
                fmt(paired(server, "wasmtime-tuned", c, |r| r.rps)),
                fmt(paired(server, "native", c, |r| r.rps)),
                fmt(paired(server, "wasmtime", c, |r| r.p99_us)),
            );
        }
    }
}

/// Count, p50 and p99 of `instantiate_us` over every stored invocation.
fn instantiation_stats(db: &Path) -> anyhow::Result<(usize, u64, u64)> {
    let conn =
        rusqlite::Connection::open(db).with_context(|| format!("opening {}", db.display()))?;
    let mut stmt =
        conn.prepare("SELECT instantiate_us FROM invocations ORDER BY instantiate_us")?;
    let values: Vec<u64> = stmt
        .query_map([], |row| row.get::<_, i64>(0))?
        .map(|v| v.map(|v| v as u64))
        .collect::<Result<_, _>>()?;
    if values.is_empty() {
        bail!("no invocation records in {}", db.display());
    }
    Ok((
        values.len(),
        values[values.len() / 2],
        values[values.len() * 99 / 100],
    ))
}

/// Time from `runway deploy` (fresh node, nothing cached) to the first 200 response.
fn deploy_times(root: &Path, runway: &Path, extra: &[String]) -> anyhow::Result<()> {
    println!("\n| function | component size | deploy → first response |");
    println!("|---|---|---|");
    let mut cases: Vec<(String, PathBuf, String)> = [
        "hello",
        "echo",
        "stream",
        "probe",
        "hello-wstd",
        "hello-spin",
    ]
    .iter()
    .map(|name| {
        let manifest = root.join("examples").join(name);
        let route = route_of(&manifest);
        (name.to_string(), manifest, route)
    })
    .collect();
    let scratch = tempfile::tempdir()?;
    for spec in extra {
        let Some((name, path)) = spec.split_once('=') else {
            bail!("--extra takes NAME=PATH, got `{spec}`")
        };
        let dir = scratch.path().join(name);
        std::fs::create_dir_all(&dir)?;
        let path = Path::new(path).canonicalize()?;
        std::fs::write(
            dir.join("runway.toml"),
            format!(
                "[[function]]\nname = \"{name}\"\ncomponent = \"{}\"\ntimeout = \"30s\"\n\n[[function.trigger]]\nhttp = {{ route = \"/{name}\" }}\n",
                path.display()
            ),
        )?;
        cases.push((name.to_owned(), dir, format!("/{name}")));
    }
    for (name, manifest, route) in cases {
        let data = tempfile::tempdir()?;
        let (mut child, port, admin) = spawn_node(runway, data.path())?;
        let component = std::fs::read_to_string(manifest.join("runway.toml"))?;
        let size = component_size(&manifest, &component);
        let started = Instant::now();
        if !deploy(runway, &admin, &manifest)? {
            println!("| {name} | {size} | deploy failed |");
        } else {
            wait_for(&format!("http://127.0.0.1:{port}{route}"))?;
            println!(
                "| {name} | {size} | {:.0} ms |",
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
        child.kill().ok();
        child.wait().ok();
    }
    Ok(())
}

fn route_of(manifest_dir: &Path) -> String {
    let text = std::fs::read_to_string(manifest_dir.join("runway.toml")).unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.split("route = \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
        })
        .map(|r| r.trim_end_matches("/...").to_owned())
        .unwrap_or_else(|| "/".into())
}

fn component_size(dir: &Path, manifest: &str) -> String {
    manifest
        .lines()
        .find_map(|l| {
            l.strip_prefix("component = \"")
                .and_then(|r| r.strip_suffix('"'))
        })
        .and_then(|c| std::fs::metadata(dir.join(c)).ok())
        .map_or("?".into(), |m| format!("{} KiB", m.len() / 1024))
}

/// A native hyper "hello world": the practical ceiling on this hardware.
fn native_server(addr: &str) -> anyhow::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    let mut response =
                        hyper::Response::new(Full::new(Bytes::from_static(b"Hello, World!\n")));
                    response.headers_mut().insert(
                        "content-type",
                        hyper::header::HeaderValue::from_static("text/plain"),
                    );
                    Ok::<_, std::convert::Infallible>(response)
                });
                _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
