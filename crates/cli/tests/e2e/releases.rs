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

#[test]
fn a_node_with_trusted_keys_deploys_only_signed_artifacts_and_a_revoked_digest_stops_at_once() {
    let dir = tempdir();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let team = keys.join("team");
    let rogue = keys.join("rogue");
    for key in [&team, &rogue] {
        let out = runway(
            &["keys", "generate", key.to_str().unwrap()],
            "http://unused",
        )
        .ok()
        .to_owned();
        assert!(out.contains("created signing key"), "{out}");
    }
    let again = runway(
        &["keys", "generate", team.to_str().unwrap()],
        "http://unused",
    );
    assert!(again.failed().contains("exists"), "{}", again.stderr);
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(team.with_extension("key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the private key is readable by others");
    // --force over a file others could read still leaves a key only its owner reads.
    let spare = keys.join("spare");
    std::fs::write(spare.with_extension("key"), "old").unwrap();
    std::fs::set_permissions(
        spare.with_extension("key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    runway(
        &["keys", "generate", spare.to_str().unwrap(), "--force"],
        "http://unused",
    )
    .ok();
    let mode = std::fs::metadata(spare.with_extension("key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let data = dir.path().join("data");
    let trusted = team.with_extension("pub");
    let node = TestNode::start(&data, &["--trusted-keys", trusted.to_str().unwrap()]);
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let component = app.join("hello.wasm");
    std::fs::copy(wasm("hello"), &component).unwrap();
    let path = manifest(
        &app,
        "[[function]]\nname = \"hello\"\ncomponent = \"hello.wasm\"\n\n[[function.trigger]]\nhttp = { route = \"/hello\" }\n",
    );
    let deploy = || node.cli(&["deploy", "--no-build", path.to_str().unwrap()]);

    let unsigned = deploy();
    assert!(
        unsigned
            .failed()
            .contains("requires a signature by a trusted key")
            && unsigned.stderr.contains("it is not signed"),
        "{}",
        unsigned.stderr
    );
    let sign = |key: &std::path::Path| {
        runway(
            &[
                "sign",
                component.to_str().unwrap(),
                "--key",
                key.with_extension("key").to_str().unwrap(),
            ],
            "http://unused",
        )
        .ok()
        .to_owned()
    };
    sign(&rogue);
    let untrusted = deploy();
    assert!(
        untrusted.failed().contains("which is not a trusted key"),
        "{}",
        untrusted.stderr
    );
    assert!(
        node.get("/hello").status() == 404,
        "a refused deploy changed nothing"
    );
    // A signature that claims the trusted key but does not verify is refused at upload, so
    // it cannot replace a good one.
    let mut forged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(app.join("hello.wasm.sig")).unwrap())
            .unwrap();
    let team_line = std::fs::read_to_string(team.with_extension("pub")).unwrap();
    forged["key_id"] = team_line.split_whitespace().nth(1).unwrap().into();
    let digest_now = forged["digest"].as_str().unwrap().to_owned();
    let upload = node
        .admin_request(
            reqwest::Method::PUT,
            &format!("/v1/artifacts/{digest_now}/signature"),
            Some(ADMIN_TOKEN),
        )
        .body(forged.to_string())
        .send()
        .unwrap();
    assert_eq!(upload.status(), 400);
    let signed = sign(&team);
    assert!(signed.contains("hello.wasm.sig"), "{signed}");
    // A signature left over from an earlier build is caught before anything is sent.
    let stale = std::fs::read_to_string(app.join("hello.wasm.sig")).unwrap();
    std::fs::write(
        app.join("hello.wasm.sig"),
        stale.replace(&digest_now, &"0".repeat(64)),
    )
    .unwrap();
    assert!(deploy().failed().contains("rebuilt after signing"));
    std::fs::write(app.join("hello.wasm.sig"), stale).unwrap();
    deploy().ok();
    assert_eq!(node.get("/hello").status(), 200);
    let releases = node.cli(&["releases", "hello", "--json"]).json();
    let team_id = std::fs::read_to_string(&trusted).unwrap();
    let team_id = team_id.split_whitespace().nth(1).unwrap();
    assert_eq!(releases[0]["vetting"]["signed_by"], team_id);
    let digest = releases[0]["digest"].as_str().unwrap().to_owned();
    let inspected = node.cli(&["inspect", "hello"]).ok().to_owned();
    assert!(
        inspected.contains(&format!("verified, trusted key {team_id}"))
            && inspected.contains(&digest)
            && inspected.contains("size ")
            && inspected.contains("wasi:http/types"),
        "{inspected}"
    );
    let missing = node.cli(&["inspect", "hello", "--release", "7"]);
    assert!(
        missing.failed().contains("has no release 7"),
        "{}",
        missing.stderr
    );

    // Revocation: the serving release stops at once, with a clear 503.
    let out = node
        .cli(&["revoke", &digest, "--reason", "CVE-2026-0001"])
        .ok()
        .to_owned();
    assert!(out.contains("stopped at once (503): prod/hello"), "{out}");
    let stopped = node.get("/hello");
    assert_eq!(stopped.status(), 503);
    assert!(node.cli(&["ls"]).ok().contains("1 (revoked)"));
    assert!(node.cli(&["inspect", "hello"]).ok().contains("REVOKED"));
    assert!(stopped.text().unwrap().contains("was revoked"));
    let redeploy = deploy();
    assert!(
        redeploy.failed().contains("was revoked (CVE-2026-0001)"),
        "{}",
        redeploy.stderr
    );
    let twice = node.cli(&["revoke", &digest]);
    assert!(
        twice.failed().contains("already_revoked"),
        "{}",
        twice.stderr
    );
    let typo = node.cli(&["revoke", &"ab".repeat(32)]);
    assert!(
        typo.failed().contains("404 artifact_missing"),
        "{}",
        typo.stderr
    );
    assert!(node.cli(&["revoke", "--list"]).ok().contains(&digest));
    let audit = node.cli(&["audit", "--kind", "control", "--json"]).json();
    assert!(audit.as_array().unwrap().iter().any(|r| {
        r["action"] == "artifact.revoke"
            && r["outcome"] == "ok"
            && r["detail"].as_str().unwrap().contains("CVE-2026-0001")
    }));
    // It stays stopped across a restart.
    let (status, _) = node.terminate();
    assert!(status.success());
    let node = TestNode::start(&data, &["--trusted-keys", trusted.to_str().unwrap()]);
    assert_eq!(node.get("/hello").status(), 503);

    // An unusable trusted-keys file stops the node from starting, naming the file.
    let bad = dir.path().join("bad.pub");
    std::fs::write(&bad, "not a key\n").unwrap();
    let stderr = serve_refused(
        &dir.path().join("other"),
        &["--trusted-keys", bad.to_str().unwrap()],
    );
    assert!(
        stderr.contains("--trusted-keys") && stderr.contains("bad.pub line 1"),
        "{stderr}"
    );
}

#[test]
fn a_node_restarted_with_trusted_keys_does_not_serve_unsigned_releases() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let node = TestNode::start(&data, &[]);
    node.deploy_example("hello");
    assert_eq!(node.get("/hello").status(), 200);
    let (status, _) = node.terminate();
    assert!(status.success());
    let team = dir.path().join("team");
    runway(
        &["keys", "generate", team.to_str().unwrap()],
        "http://unused",
    )
    .ok();
    let trusted = team.with_extension("pub");
    let node = TestNode::start(&data, &["--trusted-keys", trusted.to_str().unwrap()]);
    node.eventually("the node says why it does not serve hello", || {
        node.output()
            .contains("cannot serve hello (release 1 in prod)")
            && node.output().contains("it is not signed")
    });
    assert_eq!(node.get("/hello").status(), 404);
}
