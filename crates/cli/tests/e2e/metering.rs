//! Invocation records, prices, cost reports and metrics.

use std::process::Command;

use crate::support::*;

/// Default prices in pico-dollars: AWS Lambda x86.
const GB_SECOND_PUSD: u64 = 16_666_700;
const REQUEST_PUSD: u64 = 200_000;

#[test]
fn every_invocation_gets_a_record_and_a_lambda_style_report_line() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    node.deploy_example("hello");
    let result = node.cli(&["invoke", "hello", "--json"]).json();
    assert_eq!(result["status"], 200);
    assert_eq!(result["body"], "Hello, World!\n");
    let record = &result["record"];
    assert_eq!(record["function"], "hello");
    assert_eq!(record["environment"], "prod");
    assert_eq!(record["release"], 1);
    assert_eq!(record["status"], "ok");
    assert_eq!(record["memory_mb"], 128);
    let duration_us = record["duration_us"].as_u64().unwrap();
    let billed_ms = record["billed_ms"].as_u64().unwrap();
    assert_eq!(
        billed_ms,
        duration_us.div_ceil(1000).max(1),
        "billed duration rounds up to 1 ms"
    );
    let gb_seconds = record["gb_seconds"].as_f64().unwrap();
    assert!((gb_seconds - 128.0 / 1024.0 * billed_ms as f64 / 1000.0).abs() < 1e-12);
    let cost = record["cost"].as_u64().unwrap();
    assert_eq!(
        cost,
        128 * billed_ms * GB_SECOND_PUSD / 1_024_000 + REQUEST_PUSD
    );
    let max_memory = record["max_memory_bytes"].as_u64().unwrap();
    assert!(max_memory > 0 && max_memory <= 128 << 20, "{max_memory}");

    let report = result["report"].as_str().unwrap();
    let expected_prefix = format!(
        "REPORT RequestId: {} Duration: ",
        record["request_id"].as_str().unwrap()
    );
    assert!(report.starts_with(&expected_prefix), "{report}");
    assert!(
        report.contains(&format!(
            " ms Billed Duration: {billed_ms} ms Memory Size: 128 MB Max Memory Used: "
        )),
        "{report}"
    );
    assert!(report.ends_with(" MB"), "{report}");

    let human = node.cli(&["invoke", "hello"]);
    assert_eq!(human.ok(), "Hello, World!\n");
    assert!(
        human.stderr.contains("REPORT RequestId: "),
        "{}",
        human.stderr
    );
    node.eventually("the node logs REPORT lines", || {
        node.output().contains("REPORT RequestId: ")
    });
}

#[test]
fn configured_prices_are_what_invocations_cost() {
    let dir = tempdir();
    let node = TestNode::start(
        dir.path(),
        &["--price-gb-second", "1", "--price-request", "0.5"],
    );
    node.deploy_example("hello");
    let record = node.cli(&["invoke", "hello", "--json"]).json()["record"].clone();
    let billed_ms = record["billed_ms"].as_u64().unwrap();
    let expected = 128 * billed_ms * 1_000_000_000_000 / 1_024_000 + 500_000_000_000;
    assert_eq!(record["cost"].as_u64().unwrap(), expected);
}

#[test]
fn cost_and_ls_sum_every_invocation() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    node.deploy_example("hello");
    node.deploy_example("forever");
    for _ in 0..5 {
        assert_eq!(node.get("/hello").status(), 200);
    }
    assert_eq!(node.get("/forever").status(), 504);
    node.eventually("six records are stored", || {
        node.cli(&["cost", "--json"]).json()["total"]["invocations"] == 6
    });
    let report = node.cli(&["cost", "--since", "1h", "--json"]).json();
    let functions = report["functions"].as_array().unwrap();
    let hello = functions.iter().find(|f| f["function"] == "hello").unwrap();
    let forever = functions
        .iter()
        .find(|f| f["function"] == "forever")
        .unwrap();
    assert_eq!(hello["invocations"], 5);
    assert_eq!(hello["failures"], 0);
    assert_eq!(forever["failures"], 1);
    assert!(
        forever["gb_seconds"].as_f64().unwrap() >= 0.0625,
        "a 1s timeout at 64MiB bills at least 1/16 GB-s"
    );
    let total = report["total"]["cost"].as_u64().unwrap();
    assert_eq!(
        total,
        hello["cost"].as_u64().unwrap() + forever["cost"].as_u64().unwrap()
    );
    assert!(total > 6 * REQUEST_PUSD);

    let ls = node.cli(&["ls", "--json"]).json();
    let hello_ls = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "hello")
        .unwrap();
    assert_eq!(hello_ls["invocations"], 5);
    assert_eq!(hello_ls["cost"], hello["cost"]);
    let table = node.cli(&["cost"]);
    assert!(
        table.ok().contains("FUNCTION") && table.stdout.contains("total"),
        "{}",
        table.stdout
    );
    let bad = node.cli(&["cost", "--since", "yesterday-ish"]);
    assert!(
        bad.failed()
            .contains("invalid `since` value `yesterday-ish`"),
        "{}",
        bad.stderr
    );
}

#[test]
fn metrics_exist_from_deploy_use_faas_names_and_pass_promtool() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    node.deploy_example("hello");
    let labels = "{environment=\"prod\",function=\"hello\"}";
    assert_eq!(
        node.metric(
            "faas_invocations_total{environment=\"prod\",function=\"hello\",status=\"ok\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        node.metric(&format!("runway_in_flight_requests{labels}")),
        Some(0.0)
    );
    assert_eq!(
        node.metric(&format!("runway_function_memory_size_bytes{labels}")),
        Some(134217728.0)
    );

    let response = node.get("/hello");
    let request_id = response.headers()["x-runway-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    node.get("/hello");
    node.eventually("two invocations are counted", || {
        node.metric("faas_invocations_total{environment=\"prod\",function=\"hello\",status=\"ok\"}")
            == Some(2.0)
    });
    assert_eq!(
        node.metric(&format!("faas_coldstarts_total{labels}")),
        Some(1.0),
        "only the first call is cold"
    );
    assert_eq!(
        node.metric(&format!("faas_invoke_duration_seconds_count{labels}")),
        Some(2.0)
    );
    assert_eq!(
        node.metric(&format!("faas_init_duration_seconds_count{labels}")),
        Some(2.0)
    );
    assert_eq!(
        node.metric(&format!("faas_mem_usage_bytes_count{labels}")),
        Some(2.0)
    );
    assert!(
        node.metric(&format!("runway_compute_gigabyte_seconds_total{labels}"))
            .unwrap()
            > 0.0
    );
    assert!(
        node.metric(&format!("runway_cost_dollars_total{labels}"))
            .unwrap()
            >= 0.0000004
    );
    assert_eq!(node.metric("runway_functions"), Some(1.0));
    let text = node.metrics();
    assert!(
        !text.contains(&request_id),
        "request ids never become labels"
    );

    let path = dir.path().join("metrics.txt");
    std::fs::write(&path, &text).unwrap();
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output();
    match promtool {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) if std::env::var_os("RUNWAY_REQUIRE_PROMTOOL").is_none() => {
            eprintln!(
                "promtool not found: skipping `promtool check metrics` (install Debian's `prometheus` package; CI requires it)"
            );
        }
        Err(err) => panic!("RUNWAY_REQUIRE_PROMTOOL is set but promtool cannot run: {err}"),
    }
}

#[test]
fn logs_follow_prints_lines_written_after_it_started() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;

    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    node.deploy_example("echo");
    let mut follow = Command::new(env!("CARGO_BIN_EXE_runway"))
        .args(["logs", "echo", "--follow", "--server", &node.admin])
        .env("RUNWAY_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let response = node
        .request(reqwest::Method::POST, "/echo/followed")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        let done = line.contains("REPORT RequestId");
        seen.push(line);
        if done {
            break;
        }
    }
    _ = follow.kill();
    _ = follow.wait();
    assert!(
        seen.iter()
            .any(|l| l.contains("stdout") && l.contains("echo: POST /echo/followed 1 bytes")),
        "{seen:?}"
    );
    assert!(
        seen.last()
            .is_some_and(|l| l.contains("platform") && l.contains("REPORT RequestId")),
        "{seen:?}"
    );
}
