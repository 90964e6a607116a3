//! State that cannot silently vanish: a clean stop leaves everything in the database file, a
//! lost or damaged store is refused rather than reset, a lost secrets key is refused, only
//! provably vetted code runs, and a backup restores the same functions, data and bill.

use std::path::Path;

use serde_json::Value;

use crate::support::*;

/// What the escalate function's `action` returned (it must have been allowed).
fn escalate(node: &TestNode, action: &str) -> Value {
    let response = node.get(&format!("/escalate/{action}"));
    let status = response.status();
    let body = response.text().unwrap();
    assert_eq!(status, 200, "{action}: {body}");
    let answer: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
    assert_eq!(answer["outcome"], "ok", "{action}: {body}");
    answer["detail"].clone()
}

/// A node with hello deployed and invoked once, then stopped cleanly.
fn served_once(data: &Path) -> String {
    let node = TestNode::start(data, &[]);
    let hello = node.deploy_example("hello")["functions"][0]["release"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(node.get("/hello").status(), 200);
    let (status, _) = node.terminate();
    assert!(status.success());
    hello
}

/// What the node printed at start, once it has printed `line` (its start-up summary follows
/// the addresses the helper waits for).
fn printed(node: &TestNode, line: &str) -> String {
    node.eventually(&format!("the node printed `{line}`"), || {
        node.output().contains(line)
    });
    node.output()
}

fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.trim().lines().collect();
    assert_eq!(lines.len(), 1, "expected one line:\n{stderr}");
    lines[0]
}

#[test]
fn a_clean_stop_leaves_the_whole_state_in_the_database_file() {
    let dir = tempdir();
    let data = dir.path().join("data");
    served_once(&data);
    let wal = data.join("runway.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(0, |m| m.len()) == 0,
        "the write-ahead log still holds state after a clean stop"
    );
    _ = std::fs::remove_file(&wal);
    _ = std::fs::remove_file(data.join("runway.db-shm"));
    let node = TestNode::start(&data, &[]);
    let output = printed(&node, "serving 1 functions");
    assert!(
        !output.contains("created the bootstrap admin token"),
        "{output}"
    );
    assert_eq!(node.get("/hello").status(), 200);
    node.eventually("both invocations are recorded", || {
        node.cli(&["cost", "--json"]).json()["functions"][0]["invocations"] == 2
    });
}

#[test]
fn a_missing_store_beside_artifacts_is_refused_until_start_over_moves_it_aside() {
    let dir = tempdir();
    let data = dir.path().join("data");
    served_once(&data);
    for file in ["runway.db", "runway.db-wal", "runway.db-shm"] {
        _ = std::fs::remove_file(data.join(file));
    }
    let stderr = serve_refused(&data, &[]);
    let line = one_line(&stderr);
    assert!(
        line.contains("is missing or empty")
            && line.contains("1 artifacts")
            && line.contains("--start-over"),
        "{line}"
    );
    assert!(
        !data.join("runway.db").exists()
            || std::fs::metadata(data.join("runway.db")).unwrap().len() == 0
    );

    // An empty file is no better than none.
    std::fs::write(data.join("runway.db"), b"").unwrap();
    assert!(one_line(&serve_refused(&data, &[])).contains("is missing or empty"));

    let node = TestNode::start(&data, &["--start-over"]);
    printed(&node, "serving 0 functions");
    let output = printed(&node, "moved to");
    assert!(output.contains("lost+found-"), "{output}");
    let aside: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("lost+found-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        std::fs::read_dir(aside[0].path().join("artifacts"))
            .unwrap()
            .count(),
        1,
        "the old artifacts were kept"
    );
}

#[test]
fn a_damaged_store_is_refused() {
    let dir = tempdir();
    let data = dir.path().join("data");
    served_once(&data);
    let db = data.join("runway.db");
    let original = std::fs::read(&db).unwrap();

    // Truncated to half.
    std::fs::write(&db, &original[..original.len() / 2]).unwrap();
    let line = one_line(&serve_refused(&data, &[])).to_owned();
    assert!(
        line.contains("is damaged") && line.contains("runway restore"),
        "{line}"
    );

    // Garbage over the pages after the first.
    let mut garbage = original.clone();
    for byte in garbage[4096..].iter_mut().step_by(7) {
        *byte = 0xA5;
    }
    std::fs::write(&db, &garbage).unwrap();
    assert!(one_line(&serve_refused(&data, &[])).contains("is damaged"));

    // Not a database at all.
    std::fs::write(&db, vec![0x42; original.len()]).unwrap();
    assert!(one_line(&serve_refused(&data, &[])).contains("is damaged"));

    std::fs::write(&db, &original).unwrap();
    let node = TestNode::start(&data, &[]);
    printed(&node, "serving 1 functions");
}

#[test]
fn a_lost_secrets_key_is_refused_when_sealed_secrets_exist() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let node = TestNode::start(&data, &[]);
    runway_with_stdin(
        &["secret", "set", "PAYMENT_KEY"],
        &node.admin,
        "sk_test_0123456789",
    )
    .ok();
    node.terminate();
    let key = data.join("secrets.key");
    std::fs::rename(&key, dir.path().join("kept.key")).unwrap();
    let line = one_line(&serve_refused(&data, &["--start-over"])).to_owned();
    assert!(
        line.contains(&key.display().to_string()) && line.contains("sealed secrets"),
        "{line}"
    );
    assert!(!key.exists(), "no new key was created");

    std::fs::rename(dir.path().join("kept.key"), &key).unwrap();
    let node = TestNode::start(&data, &[]);
    let secrets = node.cli(&["secret", "ls", "--json"]).json();
    assert_eq!(secrets["secrets"][0]["name"], "PAYMENT_KEY", "{secrets}");
}

#[test]
fn an_altered_artifact_is_refused_counted_and_audited_and_a_redeploy_repairs_it() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let digest = served_once(&data);
    let artifact = data.join(format!("artifacts/{digest}.wasm"));
    let mut bytes = std::fs::read(&artifact).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0xFF;
    std::fs::write(&artifact, &bytes).unwrap();
    // Without compiled code the node must read the artifact again.
    std::fs::remove_dir_all(data.join("cache")).unwrap();

    let node = TestNode::start(&data, &[]);
    printed(&node, "serving 0 functions");
    let output = printed(&node, "cannot serve");
    assert!(output.contains("was altered on disk"), "{output}");
    assert_eq!(node.get("/hello").status(), 404);
    assert_eq!(
        node.metric("runway_integrity_failures_total{kind=\"artifact\"}"),
        Some(1.0)
    );
    let audit = node
        .cli(&["audit", "--kind", "control", "--json"])
        .ok()
        .to_owned();
    assert!(audit.contains("integrity.artifact"), "{audit}");

    // The original bytes, uploaded again, replace the altered file.
    node.cli(&[
        "deploy",
        examples().join("hello").to_str().unwrap(),
        "--no-build",
    ])
    .ok();
    assert_eq!(node.get("/hello").status(), 200);
    assert_eq!(
        runway_store_digest(&std::fs::read(&artifact).unwrap()),
        digest
    );
}

fn runway_store_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn compiled_code_that_is_not_what_the_node_compiled_is_recompiled_not_run() {
    let dir = tempdir();
    let data = dir.path().join("data");
    served_once(&data);
    let cache: Vec<_> = std::fs::read_dir(data.join("cache"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(cache.len(), 1);
    let mut code = std::fs::read(&cache[0]).unwrap();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for byte in code.iter_mut().skip(64) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    std::fs::write(&cache[0], &code).unwrap();

    let node = TestNode::start(&data, &[]);
    let output = printed(&node, "(0 compiled code from cache, 1 compiled now)");
    assert!(
        output.contains("recompiling from the verified artifact"),
        "{output}"
    );
    assert_eq!(node.get("/hello").text().unwrap(), "Hello, World!\n");
    assert_eq!(
        node.metric("runway_integrity_failures_total{kind=\"compiled_code\"}"),
        Some(1.0)
    );
    let (status, _) = node.terminate();
    assert!(status.success());

    // The recompiled file is recorded again and loads from the cache next time.
    let node = TestNode::start(&data, &[]);
    // The summary line follows the addresses: wait for it, then read what it says.
    let output = printed(&node, "runway: serving ");
    assert!(
        output.contains("(1 compiled code from cache, 0 compiled now)"),
        "{output}"
    );
}

#[test]
fn a_backup_restores_the_same_functions_data_secrets_and_bill() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let node = TestNode::start(&data, &[]);
    let schema = examples().join("orders/schema.sql");
    node.cli(&["sql", "apply", schema.to_str().unwrap()]).ok();
    runway_with_stdin(
        &["secret", "set", "PAYMENT_KEY"],
        &node.admin,
        "sk_test_0123456789",
    )
    .ok();
    node.deploy(&manifest(&dir.path().join("app"), &escalate_toml()));
    node.deploy_example("hello");
    assert_eq!(
        escalate(&node, "kv-set?key=cache/who&value=backed-up"),
        Value::from(true)
    );
    for _ in 0..3 {
        assert_eq!(node.get("/hello").status(), 200);
    }
    node.cli(&["env", "create", "dev", "--from", "prod"]).ok();
    node.eventually("every invocation is recorded", || {
        node.cli(&["cost", "--json"]).json()["total"]["invocations"] == 4
    });
    let before_ls = node.cli(&["ls", "--json"]).json();
    let cost_before = node.cli(&["cost", "--json"]).json();

    let backup = dir.path().join("node.tar");
    let out = node.cli(&["backup", backup.to_str().unwrap()]);
    assert!(out.ok().contains("backed up the node"), "{}", out.stdout);
    // A backup never overwrites a file.
    assert!(
        node.cli(&["backup", backup.to_str().unwrap()])
            .failed()
            .contains("exists")
    );
    let audit = node
        .cli(&["audit", "--kind", "control", "--json"])
        .ok()
        .to_owned();
    assert!(audit.contains("\"backup\""), "{audit}");
    // Writes after the backup are not in it.
    assert_eq!(node.get("/hello").status(), 200);

    let restored = dir.path().join("restored");
    let out = runway(
        &[
            "restore",
            backup.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ],
        "",
    );
    let stdout = out.ok().to_owned();
    assert!(stdout.contains("4 functions in 2 environments"), "{stdout}");
    assert!(stdout.contains("secrets.key"), "{stdout}");
    // Restoring over a folder with state needs --replace.
    let again = runway(
        &[
            "restore",
            backup.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ],
        "",
    );
    assert!(again.failed().contains("--replace"), "{}", again.stderr);

    let key = data.join("secrets.key");
    let copy = TestNode::start(&restored, &["--secret-key-file", key.to_str().unwrap()]);
    assert_eq!(copy.cli(&["ls", "--json"]).json(), before_ls);
    let cost_after = copy.cli(&["cost", "--json"]).json();
    assert_eq!(cost_after["functions"], cost_before["functions"]);
    assert_eq!(
        escalate(&copy, "kv-get?key=cache/who"),
        Value::from("backed-up")
    );
    assert_eq!(escalate(&copy, "config?key=PAYMENT_KEY")["length"], 18);
    let rows = copy
        .cli(&["sql", "query", "SELECT count(*) FROM orders"])
        .ok()
        .to_owned();
    let original = node
        .cli(&["sql", "query", "SELECT count(*) FROM orders"])
        .ok()
        .to_owned();
    assert_eq!(rows, original);
    let envs = copy.cli(&["env", "ls", "--json"]).json();
    assert_eq!(envs.as_array().unwrap().len(), 2, "{envs}");
    assert_eq!(copy.get("/hello").text().unwrap(), "Hello, World!\n");

    // Back into the original folder over its newer state: --replace moves that aside and
    // keeps the secrets key, which no backup holds.
    node.terminate();
    runway(
        &[
            "restore",
            backup.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--replace",
        ],
        "",
    )
    .ok();
    assert!(key.exists(), "the secrets key stays in place");
    let back = TestNode::start(&data, &[]);
    assert_eq!(back.cli(&["ls", "--json"]).json(), before_ls);
    assert_eq!(escalate(&back, "config?key=PAYMENT_KEY")["length"], 18);
}

#[test]
fn restore_refuses_a_file_that_is_not_a_backup_and_changes_nothing() {
    let dir = tempdir();
    let bogus = dir.path().join("bogus.tar");
    std::fs::write(&bogus, b"not a tar file at all").unwrap();
    let target = dir.path().join("data");
    let out = runway(
        &[
            "restore",
            bogus.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ],
        "",
    );
    assert!(
        out.failed().contains("is not a Runway backup"),
        "{}",
        out.stderr
    );
    assert!(!target.join("runway.db").exists());
}

#[test]
fn retention_prunes_old_records_logs_and_audit_and_the_store_size_is_reported() {
    let dir = tempdir();
    let data = dir.path().join("data");
    served_once(&data);
    let day = 24 * 3600 * 1000i64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    {
        let db = rusqlite::Connection::open(data.join("runway.db")).unwrap();
        db.execute(
            "INSERT INTO invocations (request_id, environment, function, release, started_ms,
               duration_us, billed_ms, memory_mb, max_memory_bytes, instantiate_us, status,
               http_status, gb_seconds, cost_pusd)
             VALUES ('aged', 'prod', 'hello', 1, ?1, 1, 1, 128, 0, 0, 'ok', 200, 0.0, 0)",
            [now - 8 * day],
        )
        .unwrap();
        db.execute(
            "INSERT INTO logs (environment, function, request_id, at_ms, stream, line)
             VALUES ('prod', 'hello', 'aged', ?1, 'stdout', 'an aged line')",
            [now - 8 * day],
        )
        .unwrap();
        db.execute(
            "INSERT INTO audit (at_ms, environment, function, release, capability, operation,
               target, decision)
             VALUES (?1, 'prod', 'hello', 1, 'sql', 'select', 'customers', 'denied')",
            [now - 91 * day],
        )
        .unwrap();
        db.execute(
            "INSERT INTO control_audit (at_ms, environment, actor, action, target, status,
               outcome, detail)
             VALUES (?1, 'prod', 't-aged', 'deploy', 'hello', 200, 'ok', '')",
            [now - 401 * day],
        )
        .unwrap();
    }
    let node = TestNode::start(&data, &[]);
    for kind in ["invocations", "logs", "policy_audit", "control_audit"] {
        node.eventually(&format!("aged {kind} are pruned"), || {
            node.metric(&format!("runway_retention_pruned_total{{kind=\"{kind}\"}}")) == Some(1.0)
        });
    }
    let logs = node.cli(&["logs", "hello"]).ok().to_owned();
    assert!(!logs.contains("an aged line"), "{logs}");
    assert!(
        logs.contains("REPORT RequestId"),
        "the recent lines stay:\n{logs}"
    );
    let audit = node
        .cli(&["audit", "--kind", "control", "--json"])
        .ok()
        .to_owned();
    assert!(!audit.contains("t-aged"), "{audit}");
    assert!(node.metric("runway_store_bytes").unwrap() > 4096.0);

    // Retention can be turned off, and a period too short to bill from is refused.
    drop(node);
    let stderr = serve_refused(&data, &["--retain-logs", "10m"]);
    assert!(stderr.contains("too short"), "{stderr}");
    let node = TestNode::start(&data, &["--retain-invocations", "forever"]);
    printed(&node, "serving 1 functions");
}

#[test]
fn a_lost_write_ahead_log_after_a_crash_is_refused() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let node = TestNode::start(&data, &[]);
    node.deploy_example("hello");
    signal(node.pid(), "KILL");
    node.wait();
    // The crash left the latest changes in the log; losing it loses them.
    std::fs::remove_file(data.join("runway.db-wal")).unwrap();
    _ = std::fs::remove_file(data.join("runway.db-shm"));
    let line = one_line(&serve_refused(&data, &[])).to_owned();
    assert!(
        line.contains("did not stop cleanly") && line.contains("runway.db-wal"),
        "{line}"
    );
    // The operator's explicit choice: serve what the database file holds, which here is
    // nothing at all (the log had never been checkpointed), so that is refused in turn,
    // and --start-over moves the leftovers aside.
    std::fs::remove_file(data.join("runway.running")).unwrap();
    assert!(one_line(&serve_refused(&data, &[])).contains("is missing or empty"));
    let node = TestNode::start(&data, &["--start-over"]);
    printed(&node, "serving 0 functions");

    // A start that fails after opening the store (a taken port) is no crash.
    let (status, _) = node.terminate();
    assert!(status.success());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    serve_refused(&data, &["--listen", &port]);
    _ = std::fs::remove_file(data.join("runway.db-wal"));
    let node = TestNode::start(&data, &[]);
    printed(&node, "serving");
}
