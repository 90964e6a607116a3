//! Environments: the time to create one from an environment of 100 functions (with its SQL
//! schema), as the admin API answers it and as the node reports it, and to remove it.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use super::{BENCH_TOKEN, deploy, signal_term, spawn_node};

/// Functions in the source environment.
const FUNCTIONS: usize = 100;

/// One admin API call with curl: its JSON answer and its round-trip time in milliseconds.
pub(crate) fn call(
    method: &str,
    url: &str,
    body: Option<&str>,
) -> anyhow::Result<(serde_json::Value, f64)> {
    let mut command = Command::new("curl");
    command.args([
        "-s",
        "-X",
        method,
        "-H",
        &format!("authorization: Bearer {BENCH_TOKEN}"),
        "-H",
        "content-type: application/json",
        "-w",
        "\n%{time_total}",
    ]);
    if let Some(body) = body {
        command.args(["-d", body]);
    }
    let output = command.arg(url).output().context("running curl")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (json, seconds) = text
        .rsplit_once('\n')
        .with_context(|| format!("unexpected curl output: {text}"))?;
    let value = serde_json::from_str(json).unwrap_or(serde_json::Value::Null);
    Ok((value, seconds.trim().parse::<f64>()? * 1000.0))
}

fn status_of(url: &str, host: &str) -> anyhow::Result<String> {
    let output = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("host: {host}"))
        .arg(url)
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * p).round() as usize]
}

/// Creates and removes environments from one of [`FUNCTIONS`] functions, `rounds` times each
/// way (schema only, and with data), and prints the figures.
pub fn run(root: &Path, runway: &Path, rounds: u32) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let (mut child, port, admin) = spawn_node(runway, data.path())?;
    let app = tempfile::tempdir()?;
    let hello = root.join("examples/target/wasm32-wasip2/release/hello.wasm");
    let mut manifest = String::new();
    for i in 0..FUNCTIONS {
        manifest.push_str(&format!(
            "[[function]]\nname = \"fn-{i:03}\"\ncomponent = \"{}\"\n\n[[function.trigger]]\nhttp = {{ route = \"/fn-{i:03}\" }}\n\n",
            hello.display()
        ));
    }
    std::fs::write(app.path().join("runway.toml"), manifest)?;
    if !deploy(runway, &admin, app.path())? {
        bail!("deploying {FUNCTIONS} functions failed");
    }
    let schema = std::fs::read_to_string(root.join("examples/orders/schema.sql"))?;
    let applied = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            "-H",
        ])
        .arg(format!("authorization: Bearer {BENCH_TOKEN}"))
        .args(["--data-binary", &schema])
        .arg(format!("{admin}/v1/sql/apply"))
        .output()?;
    if String::from_utf8_lossy(&applied.stdout) != "200" {
        bail!("applying the orders schema failed");
    }
    println!(
        "\n## Environments: create from an environment of {FUNCTIONS} functions (SQL schema of the orders example), {rounds} rounds"
    );
    println!(
        "| variant | admin API round trip p50 | p90 | node-side p50 | remove p50 | first request in the new environment |"
    );
    println!("|---|---|---|---|---|---|");
    for (variant, extra) in [("schema only", ""), ("--copy-data", ",\"copy_data\":true")] {
        let (mut trips, mut node_side, mut removes) = (Vec::new(), Vec::new(), Vec::new());
        let mut first = String::new();
        for round in 0..rounds {
            let name = format!("bench-{round}");
            let body = format!("{{\"name\":\"{name}\",\"from\":\"prod\"{extra}}}");
            let (answer, took) = call("POST", &format!("{admin}/v1/envs"), Some(&body))?;
            let copied = answer["copied_functions"].as_u64().unwrap_or(0);
            if copied != FUNCTIONS as u64 {
                bail!("creating {name} copied {copied} functions: {answer}");
            }
            trips.push(took);
            node_side.push(answer["took_ms"].as_f64().unwrap_or(f64::NAN));
            if round == 0 {
                first = status_of(
                    &format!("http://127.0.0.1:{port}/fn-050"),
                    &format!("{name}.localhost:{port}"),
                )?;
            }
            let (_, removed) = call("DELETE", &format!("{admin}/v1/envs/{name}"), None)?;
            removes.push(removed);
        }
        println!(
            "| {variant} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | HTTP {first} |",
            median(&mut trips),
            percentile(&mut trips, 0.9),
            median(&mut node_side),
            median(&mut removes)
        );
    }
    println!("goal: create under 100 ms");
    signal_term(&child);
    child.wait()?;
    Ok(())
}
