//! CPU follows memory: the CPU-bound `crunch` example's duration and cost at each memory
//! size, measured by `runway tune` itself on a fresh node.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use super::{BENCH_TOKEN, deploy, signal_term, spawn_node};

/// Sizes measured: Lambda's smallest, powers of two, and the full-core size.
const SIZES: &str = "128MiB,256MiB,512MiB,1GiB,1769MiB,2GiB";

pub fn run(root: &Path, runway: &Path, runs: u32) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let (mut child, _port, admin) = spawn_node(runway, data.path())?;
    if !deploy(runway, &admin, &root.join("examples/crunch"))? {
        bail!("deploying crunch failed");
    }
    let output = Command::new(runway)
        .args([
            "tune",
            "crunch",
            "--memory",
            SIZES,
            "--runs",
            &runs.to_string(),
        ])
        .args([
            "--path",
            "/crunch?n=1000000",
            "--strategy",
            "balanced",
            "--json",
        ])
        .args(["--server", &admin])
        .env("RUNWAY_TOKEN", BENCH_TOKEN)
        .output()
        .context("running runway tune")?;
    signal_term(&child);
    child.wait()?;
    if !output.status.success() {
        bail!(
            "runway tune failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    println!(
        "\n## CPU follows memory: crunch (primes below 1,000,000 by trial division), {runs} runs per size"
    );
    println!(
        "| memory | CPU share | p50 | p95 | cost per invocation | per million | speed-up vs 128MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    let sizes = report["sizes"]
        .as_array()
        .context("no sizes in the report")?;
    let base = sizes[0]["p50_ms"].as_f64().unwrap_or(1.0);
    for size in sizes {
        let p50 = size["p50_ms"].as_f64().unwrap_or(0.0);
        println!(
            "| {} | {:.0}% | {:.0} ms | {:.0} ms | ${:.9} | ${:.3} | {:.1}× |",
            size["memory"].as_str().unwrap_or("?"),
            size["cpu_share"].as_f64().unwrap_or(0.0) * 100.0,
            p50,
            size["p95_ms"].as_f64().unwrap_or(0.0),
            size["cost_per_invocation"].as_u64().unwrap_or(0) as f64 / 1e12,
            size["cost_per_million_usd"].as_f64().unwrap_or(0.0),
            base / p50.max(1e-3)
        );
    }
    println!(
        "recommended (balanced): {} — {}",
        report["recommended"].as_str().unwrap_or("none"),
        report["reason"].as_str().unwrap_or("")
    );
    Ok(())
}
