//! Restarts, graceful shutdown and `runway up`.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

#[test]
fn a_restarted_node_serves_the_same_functions_without_redeploy_or_recompile() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    node.deploy_example("hello");
    assert_eq!(node.get("/hello").status(), 200);
    let (status, _) = node.terminate();
    assert!(status.success());

    let node = TestNode::start(dir.path(), &[]);
    // The summary line follows the address lines `start` waits for.
    node.eventually("the start-up summary is printed", || {
        node.output().contains("runway: serving")
    });
    let output = node.output();
    assert!(
        output.contains("serving 1 functions")
            && output.contains("1 compiled code from cache, 0 compiled now"),
        "{output}"
    );
    assert_eq!(node.get("/hello").text().unwrap(), "Hello, World!\n");
    assert_eq!(
        node.metric("runway_compiles_total{source=\"cache\"}"),
        Some(1.0)
    );
    assert_eq!(
        node.metric("runway_compiles_total{source=\"compiled\"}"),
        None,
        "nothing was compiled"
    );
    let releases = node.cli(&["releases", "hello", "--json"]).json();
    assert_eq!(releases.as_array().unwrap().len(), 1);
}

#[test]
fn sigterm_drains_requests_in_flight_and_loses_no_record() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    node.deploy_example("echo");
    node.deploy_example("stream");

    let gateway = node.gateway.clone();
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let gateway = gateway.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                for i in 0..50 {
                    let body = format!("{worker}-{i}");
                    let response = client
                        .post(format!("{gateway}/echo/{worker}"))
                        .body(body.clone())
                        .send()
                        .unwrap();
                    assert_eq!(response.text().unwrap(), body);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    // Two large responses are mid-body when the signal arrives.
    let mut in_flight: Vec<_> = (0..2).map(|_| node.get("/stream?mib=20")).collect();
    for response in &mut in_flight {
        let mut first = [0u8; 4096];
        response.read_exact(&mut first).unwrap();
    }
    signal(node.pid(), "TERM");
    for mut response in in_flight {
        let mut rest = Vec::new();
        response.read_to_end(&mut rest).unwrap();
        assert_eq!(
            rest.len() + 4096,
            20 << 20,
            "an in-flight response was cut by the shutdown"
        );
    }
    let (status, output) = node.wait();
    assert!(status.success(), "{output}");
    assert!(
        output.contains("runway: stopped; 202 invocation records written"),
        "{output}"
    );

    let node = TestNode::start(dir.path(), &[]);
    let report = node.cli(&["cost", "--json"]).json();
    let count = |name: &str| {
        report["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == name)
            .unwrap()["invocations"]
            .clone()
    };
    assert_eq!(count("echo"), 200);
    assert_eq!(count("stream"), 2);
}

#[test]
fn up_starts_a_node_with_every_example_deployed() {
    build_examples();
    let dir = tempdir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runway"))
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .arg("--examples")
        .arg(examples())
        .env_remove("RUNWAY_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let mut gateway = String::new();
    let mut admin = String::new();
    let mut token = String::new();
    let mut seen = String::new();
    for line in lines.by_ref() {
        seen.push_str(&line);
        seen.push('\n');
        if let Some(addr) = line.strip_prefix("runway: gateway listening on ") {
            gateway = addr.to_owned();
        }
        if let Some(addr) = line.strip_prefix("runway: admin API listening on ") {
            admin = addr.to_owned();
        }
        if let Some(secret) = line.strip_prefix("runway:   export RUNWAY_TOKEN=") {
            token = secret.to_owned();
        }
        if line.starts_with("runway: ready") {
            break;
        }
    }
    assert!(seen.contains("hello deployed release 1"), "{seen}");
    let body = reqwest::blocking::get(format!("{gateway}/hello"))
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(body, "Hello, World!\n");
    // The bootstrap admin token printed once works, and nothing works without it.
    assert!(token.starts_with("rwy_"), "{seen}");
    let listed = runway_as(&["ls"], &admin, Some(&token));
    assert!(listed.ok().contains("hello"));
    let refused = runway_as(&["ls"], &admin, None);
    assert!(refused.failed().contains("401"), "{}", refused.stderr);
    signal(child.id(), "INT");
    let status = child.wait().unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn a_taken_port_is_a_clear_start_up_error() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("a"), &[]);
    let taken = node.gateway.trim_start_matches("http://").to_owned();
    let stderr = serve_refused(&dir.path().join("b"), &["--listen", &taken]);
    assert!(
        stderr.contains(&format!("cannot listen on {taken} for the gateway"))
            && stderr.contains("--listen"),
        "{stderr}"
    );
}
