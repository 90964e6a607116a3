//! Releases are immutable; moving between them is atomic and reversible.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::support::*;

fn probe_toml(greeting: &str) -> String {
    function_toml(
        "probe",
        "probe",
        "/probe",
        &format!("env = {{ GREETING = \"{greeting}\" }}"),
    )
}

#[test]
fn rollback_under_concurrent_load_loses_no_request_and_never_mixes_releases() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    let app = dir.path().join("app");
    node.deploy(&manifest(&app, &probe_toml("first")));
    node.deploy(&manifest(&app, &probe_toml("second")));
    assert!(
        node.get("/probe")
            .text()
            .unwrap()
            .contains("GREETING=second")
    );

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (gateway, stop, answered) = (node.gateway.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let response = http.get(format!("{gateway}/probe")).send().unwrap();
                    let status = response.status().as_u16();
                    let body = response.text().unwrap();
                    seen.push((status, body));
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                seen
            })
        })
        .collect();
    // The clients are running before the first switch and after the last.
    node.eventually("the clients are sending requests", || {
        answered.load(Ordering::Relaxed) >= 8
    });
    // Back and forth while the clients run: to 1, forward to 2, back to 1, ...
    for round in 0..6 {
        let args: Vec<&str> = if round % 2 == 0 {
            vec!["rollback", "probe"]
        } else {
            vec!["rollback", "probe", "--to", "2"]
        };
        let out = node.cli(&args).ok().to_owned();
        let expected = if round % 2 == 0 {
            "release 1 (was 2"
        } else {
            "release 2 (was 1"
        };
        assert!(out.contains(expected), "{out}");
    }
    let after = answered.load(Ordering::Relaxed) + 8;
    node.eventually("the clients kept sending after the last switch", || {
        answered.load(Ordering::Relaxed) >= after
    });
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut by_release = [0usize; 2];
    for client in clients {
        for (status, body) in client.join().unwrap() {
            total += 1;
            assert_eq!(status, 200, "a request failed during a rollback: {body}");
            let first = body.contains("GREETING=first");
            let second = body.contains("GREETING=second");
            assert!(
                first ^ second,
                "a response mixed releases or neither: {body}"
            );
            by_release[usize::from(second)] += 1;
        }
    }
    assert!(total >= 16, "{total} requests");
    println!("answers by release (first, second): {by_release:?} of {total}");
    // Round 5 went forward to release 2.
    let releases = node.cli(&["releases", "probe", "--json"]).json();
    let current: Vec<u64> = releases
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["current"] == true)
        .map(|r| r["number"].as_u64().unwrap())
        .collect();
    assert_eq!(
        current,
        [2],
        "releases are never rewritten, only switched between"
    );
    assert_eq!(
        releases.as_array().unwrap().len(),
        2,
        "a rollback creates no release"
    );

    // Nothing to roll back to, an unknown release, the one already served: clear refusals.
    node.cli(&["rollback", "probe", "--to", "1"]).ok();
    let first = node.cli(&["rollback", "probe"]);
    assert!(
        first.failed().contains("no_earlier_release"),
        "{}",
        first.stderr
    );
    let unknown = node.cli(&["rollback", "probe", "--to", "9"]);
    assert!(
        unknown.failed().contains("404 no_such_release"),
        "{}",
        unknown.stderr
    );
    let same = node.cli(&["rollback", "probe", "--to", "1"]);
    assert!(
        same.failed().contains("409 already_serving"),
        "{}",
        same.stderr
    );
    let audit = node.cli(&["audit", "--kind", "control", "--json"]).json();
    let rollbacks = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "function.rollback" && r["outcome"] == "ok")
        .count();
    assert_eq!(rollbacks, 7);
}
