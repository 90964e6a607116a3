//! Limits under attack and failure: what a SIGKILL under load may lose.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

/// Invocation records a SIGKILL may lose, as milliseconds of the traffic before it.
const LOSS_BUDGET_MS: f64 = 100.0;

/// `runway serve` whose stderr nobody reads: once the pipe is full, every log write would
/// block (a stalled terminal or log shipper). Returns the process and its admin and gateway
/// addresses.
fn serve_with_stalled_stderr(data: &std::path::Path) -> (Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runway"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data)
        .env("RUNWAY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUNWAY_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut gateway, mut admin) = (None, None);
    for line in stdout.by_ref().map_while(Result::ok) {
        if let Some(addr) = line.strip_prefix("runway: gateway listening on ") {
            gateway = Some(addr.to_owned());
        }
        if let Some(addr) = line.strip_prefix("runway: admin API listening on ") {
            admin = Some(addr.to_owned());
        }
        if gateway.is_some() && admin.is_some() {
            break;
        }
    }
    // Its stdout keeps being read: only stderr stalls.
    std::thread::spawn(move || stdout.for_each(drop));
    (child, admin.unwrap(), gateway.unwrap())
}

#[test]
fn a_sigkill_under_load_loses_at_most_about_100_ms_of_records() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let (mut child, admin, gateway) = serve_with_stalled_stderr(&data);
    build_examples();
    runway(
        &[
            "deploy",
            "--no-build",
            examples().join("hello").to_str().unwrap(),
        ],
        &admin,
    )
    .ok();
    let answered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (answered, stop) = (answered.clone(), stop.clone());
            let url = format!("{gateway}/hello");
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                while !stop.load(Ordering::Relaxed) {
                    match http.get(&url).send().and_then(|r| {
                        let ok = r.status() == 200;
                        r.bytes().map(|_| ok)
                    }) {
                        Ok(true) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(false) => {}
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    signal(child.id(), "KILL");
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    child.wait().unwrap();
    let answered = answered.load(Ordering::Relaxed);
    let rate = answered as f64 / elapsed;

    let node = TestNode::start(&data, &[]);
    let recorded = node.cli(&["cost", "--json"]).json()["total"]["invocations"]
        .as_u64()
        .unwrap();
    let lost = answered.saturating_sub(recorded);
    let lost_ms = lost as f64 / rate * 1000.0;
    println!(
        "SIGKILL under load: {answered} answered at {rate:.0}/s, {recorded} recorded, {lost} lost \
         ({lost_ms:.0} ms of traffic)"
    );
    assert!(answered > 100, "the load did not run: {answered} answered");
    // The writer persists within ~55 ms of a record; 2.5x leaves room for a loaded machine.
    assert!(
        lost_ms <= LOSS_BUDGET_MS * 2.5,
        "a SIGKILL lost {lost} records, {lost_ms:.0} ms of traffic at {rate:.0}/s"
    );
}

#[test]
fn idle_and_slow_clients_under_a_low_descriptor_limit_neither_spin_nor_starve_the_node() {
    let dir = tempdir();
    let node = TestNode::start_under(
        &["prlimit", "--nofile=256:256"],
        &dir.path().join("data"),
        &["--idle-timeout", "2s"],
        Some(ADMIN_TOKEN),
    );
    node.deploy_example("hello");
    let gateway = node.gateway.trim_start_matches("http://").to_owned();

    // More idle connections than the node has descriptors.
    let idle: Vec<std::net::TcpStream> = (0..400)
        .map(|_| std::net::TcpStream::connect(&gateway).unwrap())
        .collect();
    // The admin API has connections of its own and keeps answering.
    assert_eq!(node.admin_get("/v1/health").status(), 200);
    // The idle ones are closed at the idle timeout, so real requests get through.
    let started = Instant::now();
    assert_eq!(node.get("/hello").text().unwrap(), "Hello, World!\n");
    println!(
        "a request behind 400 idle connections answered after {:?}",
        started.elapsed()
    );

    // A client sending its headers slowly is closed at the same timeout.
    let mut slow = std::net::TcpStream::connect(&gateway).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    slow.write_all(b"GET /hello HTTP/1.1\r\nhost: test\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let closed = slow.read_to_end(&mut answer);
    assert!(
        closed.is_ok()
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the slow client was not closed by the node: {closed:?}"
    );
    drop(idle);

    let output = node.output();
    let warnings = output.matches("accepting connections is failing").count();
    assert!(warnings <= 3, "{warnings} accept warnings:\n{output}");
    assert!(
        output.contains("lowered them"),
        "the caps were not fitted to 256 descriptors:\n{output}"
    );
}
