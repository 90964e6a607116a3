//! Least privilege end to end: the `escalate` example tries what it is asked to through SQL,
//! key-value, outbound HTTP and secrets; the platform must refuse and audit exactly what the
//! policy does not grant, and let the rest through.

use serde_json::Value;

use crate::support::{
    TestNode, examples, http_server, manifest, read_head, runway, runway_with_stdin, serve_refused,
    tempdir, wasm,
};

/// Extra schema for the escalation tests: a view and a trigger that reach `customers`.
const EXTRA_SCHEMA: &str = "
    CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
    CREATE VIEW order_customers AS SELECT orders.id, customers.card FROM orders
        JOIN customers ON customers.id = orders.customer_id;
    CREATE TRIGGER notes_spill AFTER INSERT ON notes
        BEGIN INSERT INTO customers (name, card) VALUES (NEW.body, 'stolen'); END;
";

/// One escalation: capability, escalate action, query, a target its audit record names.
type Attempt<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a str);

fn escalate_toml(policy: &str, extra: &str) -> String {
    format!(
        "[[function]]\nname = \"escalate\"\ncomponent = \"{}\"\nmemory = \"64MiB\"\ntimeout = \"5s\"\n\
         config = {{ REGION = \"eu-west\" }}\n{extra}\n[[function.trigger]]\nhttp = {{ route = \"/escalate/...\" }}\n\n\
         [function.policy]\n{policy}\n",
        wasm("escalate").display()
    )
}

fn upstream(path: &str, _port: u16) -> (u16, String, String) {
    match path {
        "/ok" => (200, String::new(), "hello from upstream".into()),
        // Redirects to an origin the function was never granted.
        "/redirect" => (
            302,
            "location: http://127.0.0.1:1/stolen\r\n".into(),
            String::new(),
        ),
        _ => (404, String::new(), "not found".into()),
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Calls the escalate function and returns its `{outcome, detail}` answer.
fn attempt(node: &TestNode, action: &str, query: &[(&str, &str)]) -> Value {
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let path = format!("/escalate/{action}?{}", query.join("&"));
    let response = node.get(&path);
    assert_eq!(
        response.status(),
        200,
        "{path}: the function must not crash"
    );
    response.json().unwrap()
}

fn apply_schema(node: &TestNode, dir: &std::path::Path) {
    node.cli(&[
        "sql",
        "apply",
        examples().join("orders/schema.sql").to_str().unwrap(),
    ])
    .ok();
    let extra = dir.join("extra.sql");
    std::fs::write(&extra, EXTRA_SCHEMA).unwrap();
    node.cli(&["sql", "apply", extra.to_str().unwrap()]).ok();
}

fn count(node: &TestNode, table: &str) -> i64 {
    let rows = node
        .cli(&[
            "sql",
            "query",
            &format!("SELECT count(*) FROM {table}"),
            "--json",
        ])
        .json();
    rows["rows"][0][0].as_i64().unwrap()
}

fn audit(node: &TestNode) -> Vec<Value> {
    let records = node
        .cli(&[
            "audit",
            "--kind",
            "policy",
            "--function",
            "escalate",
            "--limit",
            "10000",
            "--json",
        ])
        .json();
    records.as_array().unwrap().clone()
}

#[test]
fn escalation_attempts_are_refused_and_audited_and_granted_use_works() {
    let dir = tempdir();
    let port = http_server(upstream);
    let node = TestNode::start(
        &dir.path().join("data"),
        &[
            "--outbound-resolve",
            "rebind.test=127.0.0.1,metadata.test=169.254.169.254",
        ],
    );
    apply_schema(&node, dir.path());
    let policy = format!(
        "sql = [\"select:orders\", \"insert:audit_log\", \"insert:notes\"]\n\
         kv = [\"read:cache/*\", \"write:cache/*\"]\n\
         outbound = [\"http://127.0.0.1:{port}\", \"http://rebind.test:{port}\", \"http://metadata.test\"]\n\
         secrets = [\"PAYMENT_KEY\"]"
    );
    node.deploy(&manifest(
        &dir.path().join("app"),
        &escalate_toml(&policy, ""),
    ));
    for (name, value) in [
        ("PAYMENT_KEY", "sk_live_granted"),
        ("DB_PASSWORD", "hunter2-hunter2"),
    ] {
        runway_with_stdin(&["secret", "set", name], &node.admin, value).ok();
    }

    // Legitimate use works.
    let ok = |action: &str, query: &[(&str, &str)]| {
        let answer = attempt(&node, action, query);
        assert_eq!(answer["outcome"], "ok", "{action} {query:?}: {answer}");
        answer["detail"].clone()
    };
    let orders = ok("sql", &[("q", "SELECT id, total FROM orders WHERE id = 1")]);
    assert_eq!(orders[0]["total"], 42.5);
    ok(
        "sql-exec",
        &[("q", "INSERT INTO audit_log (id, msg) VALUES (1, 'first')")],
    );
    ok("kv-set", &[("key", "cache/greeting"), ("value", "hi")]);
    assert_eq!(ok("kv-get", &[("key", "cache/greeting")]), "hi");
    assert_eq!(ok("kv-incr", &[("key", "cache/hits")]), 1);
    assert_eq!(ok("config", &[("key", "PAYMENT_KEY")])["length"], 15);
    assert_eq!(ok("config", &[("key", "REGION")])["set"], true);
    let url = format!("http://127.0.0.1:{port}/ok");
    assert_eq!(ok("fetch", &[("url", &url)])["body"], "hello from upstream");
    let names = ok("config-all", &[]);
    assert!(!names.to_string().contains("DB_PASSWORD"), "{names}");
    assert!(audit(&node).is_empty(), "granted use is not audited");

    let before = [
        count(&node, "customers"),
        count(&node, "orders"),
        count(&node, "audit_log"),
        count(&node, "notes"),
    ];
    let redirect = format!("http://127.0.0.1:{port}/redirect");
    let other_port = format!("http://127.0.0.1:{}/", port + 1);
    let localhost = format!("http://localhost:{port}/ok");
    let decimal = format!("http://2130706433:{port}/ok");
    let ipv6 = format!("http://[::1]:{port}/ok");
    let rebind = format!("http://rebind.test:{port}/ok");
    let other_port_target = format!("http://127.0.0.1:{}", port + 1);
    let localhost_target = format!("http://localhost:{port}");
    let decimal_target = format!("http://2130706433:{port}");
    let ipv6_target = format!("http://[::1]:{port}");
    let rebind_target =
        format!("http://rebind.test:{port} (resolved to internal address 127.0.0.1)");
    // (capability, action, query, a target the audit record must name)
    let attempts: Vec<Attempt> = vec![
        (
            "sql",
            "sql",
            vec![("q", "SELECT * FROM customers")],
            "customers",
        ),
        (
            "sql",
            "sql",
            vec![("q", "SELECT count(*) FROM customers")],
            "customers",
        ),
        (
            "sql",
            "sql",
            vec![(
                "q",
                "SELECT * FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE card LIKE '4%')",
            )],
            "customers",
        ),
        (
            "sql",
            "sql",
            vec![(
                "q",
                "WITH c AS (SELECT card FROM customers) SELECT * FROM c",
            )],
            "customers",
        ),
        (
            "sql",
            "sql",
            vec![(
                "q",
                "SELECT orders.id, customers.card FROM orders JOIN customers ON customers.id = orders.customer_id",
            )],
            "customers",
        ),
        (
            "sql",
            "sql",
            vec![("q", "SELECT * FROM order_customers")],
            "customers",
        ),
        (
            "sql",
            "sql",
            vec![(
                "q",
                "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 3) SELECT (SELECT card FROM customers WHERE id = x) FROM r",
            )],
            "customers",
        ),
        (
            "sql",
            "sql",
            vec![("q", "sElEcT CaRd FrOm CuStOmErS")],
            "customers",
        ),
        (
            "sql",
            "sql",
            vec![("q", "SELECT * FROM /* orders */ \"customers\" -- orders")],
            "customers",
        ),
        (
            "sql",
            "sql",
            vec![("q", "SELECT name FROM sqlite_master")],
            "sqlite_master",
        ),
        (
            "sql",
            "sql",
            vec![("q", "SELECT sql FROM sqlite_schema")],
            "sqlite_master",
        ),
        (
            "sql",
            "sql",
            vec![("q", "SELECT * FROM pragma_table_info('customers')")],
            "pragma_table_info",
        ),
        (
            "sql",
            "sql-exec",
            vec![("q", "PRAGMA table_info(customers)")],
            "table_info",
        ),
        (
            "sql",
            "sql-exec",
            vec![("q", "ATTACH DATABASE '/tmp/runway-e2e-attach.db' AS other")],
            "/tmp/runway-e2e-attach.db",
        ),
        (
            "sql",
            "sql",
            vec![("q", "SELECT load_extension('/tmp/evil.so')")],
            "load_extension",
        ),
        (
            "sql",
            "sql-exec",
            vec![("q", "INSERT INTO orders (customer_id, total) VALUES (1, 0)")],
            "orders",
        ),
        (
            "sql",
            "sql-exec",
            vec![("q", "UPDATE orders SET total = 0")],
            "orders",
        ),
        (
            "sql",
            "sql-exec",
            vec![("q", "DELETE FROM orders")],
            "orders",
        ),
        (
            "sql",
            "sql-exec",
            vec![(
                "q",
                "REPLACE INTO audit_log (id, msg) VALUES (1, 'rewritten')",
            )],
            "audit_log",
        ),
        (
            "sql",
            "sql-exec",
            vec![(
                "q",
                "INSERT INTO audit_log (id, msg) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET msg = 'upserted'",
            )],
            "audit_log",
        ),
        (
            "sql",
            "sql-exec",
            vec![("q", "INSERT INTO notes (body) VALUES ('via trigger')")],
            "customers",
        ),
        (
            "sql",
            "sql-exec",
            vec![(
                "q",
                "INSERT INTO audit_log (msg) SELECT card FROM customers",
            )],
            "customers",
        ),
        (
            "sql",
            "sql",
            vec![("q", "SELECT id FROM orders; DELETE FROM orders")],
            "orders",
        ),
        (
            "sql",
            "sql-exec",
            vec![("q", "CREATE TABLE stolen (card TEXT)")],
            "sqlite_master",
        ),
        (
            "sql",
            "sql-exec",
            vec![("q", "DROP TABLE customers")],
            "sqlite_master",
        ),
        (
            "sql",
            "sql-exec",
            vec![("q", "VACUUM INTO '/tmp/runway-e2e-copy.db'")],
            "the database file",
        ),
        ("sql", "sql-exec", vec![("q", "BEGIN")], "Begin"),
        (
            "kv",
            "kv-get",
            vec![("key", "sessions/admin")],
            "sessions/admin",
        ),
        (
            "kv",
            "kv-set",
            vec![("key", "config/flags"), ("value", "owned")],
            "config/flags",
        ),
        (
            "kv",
            "kv-delete",
            vec![("key", "sessions/admin")],
            "sessions/admin",
        ),
        ("kv", "kv-incr", vec![("key", "counters/x")], "counters/x"),
        (
            "kv",
            "kv-set",
            vec![("key", "cache"), ("value", "not under cache/")],
            "cache",
        ),
        (
            "outbound",
            "fetch",
            vec![("url", &other_port)],
            &other_port_target,
        ),
        (
            "outbound",
            "fetch",
            vec![("url", &redirect)],
            "http://127.0.0.1:1",
        ),
        (
            "outbound",
            "fetch",
            vec![("url", &localhost)],
            &localhost_target,
        ),
        (
            "outbound",
            "fetch",
            vec![("url", &decimal)],
            &decimal_target,
        ),
        ("outbound", "fetch", vec![("url", &ipv6)], &ipv6_target),
        ("outbound", "fetch", vec![("url", &rebind)], &rebind_target),
        (
            "outbound",
            "fetch",
            vec![("url", "http://metadata.test/latest/meta-data")],
            "internal address 169.254.169.254",
        ),
        (
            "outbound",
            "fetch",
            vec![("url", "https://example.com/")],
            "https://example.com",
        ),
        (
            "secrets",
            "config",
            vec![("key", "DB_PASSWORD")],
            "DB_PASSWORD",
        ),
        (
            "secrets",
            "config",
            vec![("key", "AWS_SECRET_ACCESS_KEY")],
            "AWS_SECRET_ACCESS_KEY",
        ),
    ];
    assert!(attempts.len() >= 30);
    let mut expected_per_capability = std::collections::BTreeMap::<&str, usize>::new();
    for (capability, action, query, target) in &attempts {
        let answer = attempt(&node, action, query);
        assert_eq!(
            answer["outcome"], "denied",
            "{action} {query:?} must be refused: {answer}"
        );
        let detail = answer["detail"].as_str().unwrap_or_default();
        assert!(
            !detail.contains("hunter2") && !detail.contains("sk_live"),
            "no secret value in errors: {detail}"
        );
        *expected_per_capability.entry(capability).or_default() += 1;
        // Each attempt is audited before the function gets its answer (counted at once,
        // written off the request path).
        node.eventually(&format!("{action} {query:?} is audited"), || {
            audit(&node).iter().any(|r| {
                r["capability"] == *capability
                    && r["decision"] == "denied"
                    && r["target"].as_str().unwrap().contains(*target)
            })
        });
    }
    let after = [
        count(&node, "customers"),
        count(&node, "orders"),
        count(&node, "audit_log"),
        count(&node, "notes"),
    ];
    assert_eq!(before, after, "no refused statement changed the database");
    let answer = attempt(
        &node,
        "sql",
        &[("q", "SELECT msg FROM audit_log WHERE id = 1")],
    );
    assert_eq!(
        answer["outcome"], "denied",
        "audit_log is insert-only: {answer}"
    );
    assert!(!std::path::Path::new("/tmp/runway-e2e-copy.db").exists());
    assert_eq!(
        attempt(&node, "kv-keys", &[])["detail"],
        serde_json::json!(["cache/greeting", "cache/hits"]),
        "listing shows only readable keys"
    );
    // Every denial is counted, per capability.
    for (capability, expected) in expected_per_capability {
        let series = format!(
            "runway_policy_denials_total{{capability=\"{capability}\",environment=\"prod\",function=\"escalate\"}}"
        );
        let counted = node.metric(&series).unwrap_or(0.0) as usize;
        assert!(
            counted >= expected,
            "{series} = {counted}, expected at least {expected}"
        );
    }
    let text = node.cli(&["audit"]).ok().to_owned();
    assert!(
        text.contains("DECISION") && text.contains("customers"),
        "{text}"
    );
}

#[test]
fn secrets_are_sealed_at_rest_redacted_from_logs_and_survive_a_restart() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let node = TestNode::start(&data, &[]);
    node.deploy(&manifest(
        &dir.path().join("app"),
        &escalate_toml("secrets = [\"PAYMENT_KEY\"]", ""),
    ));
    let set = runway_with_stdin(
        &["secret", "set", "PAYMENT_KEY"],
        &node.admin,
        "sk_live_9f8e7d\n",
    );
    assert!(set.ok().contains("PAYMENT_KEY"), "{}", set.stdout);
    assert!(!set.stdout.contains("sk_live"), "{}", set.stdout);
    let empty = runway_with_stdin(&["secret", "set", "EMPTY"], &node.admin, "");
    assert!(
        empty.failed().contains("standard input"),
        "{}",
        empty.stderr
    );
    let bad = runway_with_stdin(&["secret", "set", "not-a-name"], &node.admin, "x");
    assert!(
        bad.failed().contains("not-a-name") || bad.stderr.contains("letters"),
        "{}",
        bad.stderr
    );
    let listed = node.cli(&["secret", "ls", "--json"]).json();
    assert_eq!(listed["secrets"][0]["name"], "PAYMENT_KEY");
    assert!(!listed.to_string().contains("sk_live"), "{listed}");
    // Encrypted at rest: the plaintext is nowhere in the database files.
    node.eventually("the secret is stored", || {
        !node.cli(&["secret", "ls"]).ok().is_empty()
    });
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(14).any(|w| w == b"sk_live_9f8e7d"),
                "{} holds the plaintext",
                path.display()
            );
        }
    }
    let key = std::fs::read_to_string(data.join("secrets.key")).unwrap();
    assert_eq!(key.trim().len(), 64, "the node key is kept in its own file");
    // The function reads it; if it prints it, the logs show it redacted.
    let answer = attempt(&node, "config", &[("key", "PAYMENT_KEY"), ("print", "1")]);
    assert_eq!(answer["detail"]["length"], 14);
    node.eventually("the log line is stored", || {
        node.cli(&["logs", "escalate"])
            .ok()
            .contains("the value is")
    });
    let logs = node.cli(&["logs", "escalate"]).ok().to_owned();
    assert!(logs.contains("the value is [redacted secret]"), "{logs}");
    assert!(!logs.contains("sk_live"), "{logs}");
    assert!(
        !node.output().contains("sk_live"),
        "node output leaks the secret"
    );
    // After a restart the sealed secret opens with the same key file.
    node.terminate();
    let node = TestNode::start(&data, &[]);
    let answer = attempt(&node, "config", &[("key", "PAYMENT_KEY")]);
    assert_eq!(answer["detail"]["length"], 14, "{answer}");
    let denied = attempt(&node, "config", &[("key", "OTHER")]);
    assert_eq!(
        denied["outcome"], "denied",
        "policy still enforced after restart"
    );
}

#[test]
fn strict_vetting_refuses_ungranted_imports_and_production_refuses_audit_mode() {
    let dir = tempdir();
    let node = TestNode::start(
        &dir.path().join("data"),
        &["--strict-vetting", "--production"],
    );
    let path = manifest(
        &dir.path().join("strict"),
        &escalate_toml("sql = [\"select:orders\"]", ""),
    );
    let refused = node.cli(&["deploy", "--no-build", path.to_str().unwrap()]);
    let message = refused.failed();
    for expected in [
        "strict vetting",
        "wasi:http/outgoing-handler",
        "outbound = [",
        "wasi:keyvalue/store",
        "kv = [",
    ] {
        assert!(
            message.contains(expected),
            "missing `{expected}` in: {message}"
        );
    }
    assert!(
        node.cli(&["ls", "--json"])
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    let audit_mode = manifest(
        &dir.path().join("audit"),
        &escalate_toml(
            "sql = [\"select:orders\"]\nkv = [\"read:cache/*\"]\noutbound = [\"https://api.example.com\"]",
            "policy_mode = \"audit\"",
        ),
    );
    let refused = node.cli(&["deploy", "--no-build", audit_mode.to_str().unwrap()]);
    assert!(
        refused.failed().contains("production"),
        "{}",
        refused.stderr
    );
    let granted = manifest(
        &dir.path().join("granted"),
        &escalate_toml(
            "sql = [\"select:orders\"]\nkv = [\"read:cache/*\"]\noutbound = [\"https://api.example.com\"]",
            "",
        ),
    );
    node.deploy(&granted);
    let releases = node.cli(&["releases", "escalate", "--json"]).json();
    let vetting = &releases[0]["vetting"]["imports"];
    let verdict = |name: &str| {
        vetting
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["import"].as_str().unwrap().starts_with(name))
            .map(|i| i["verdict"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        verdict("wasi:http/outgoing-handler").as_deref(),
        Some("granted")
    );
    assert_eq!(verdict("runway:platform/sql").as_deref(), Some("granted"));
    assert_eq!(verdict("wasi:http/types").as_deref(), Some("provided"));
    let table = node.cli(&["releases", "escalate"]);
    assert!(table.ok().contains("enforce, 3 grants"), "{}", table.stdout);
}

#[test]
fn audit_mode_records_would_be_denials_and_suggests_the_least_policy() {
    let dir = tempdir();
    let port = http_server(upstream);
    let node = TestNode::start(&dir.path().join("data"), &[]);
    apply_schema(&node, dir.path());
    runway_with_stdin(
        &["secret", "set", "PAYMENT_KEY"],
        &node.admin,
        "sk_test_0123",
    )
    .ok();
    let app = dir.path().join("app");
    node.deploy(&manifest(
        &app,
        &escalate_toml("", "policy_mode = \"audit\""),
    ));
    let url = format!("http://127.0.0.1:{port}/ok");
    let calls: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("sql", vec![("q", "SELECT id FROM orders")]),
        (
            "sql-exec",
            vec![("q", "INSERT INTO audit_log (msg) VALUES ('seen')")],
        ),
        ("kv-set", vec![("key", "sessions/a1"), ("value", "x")]),
        ("kv-set", vec![("key", "sessions/b2"), ("value", "y")]),
        ("config", vec![("key", "PAYMENT_KEY")]),
    ];
    for (action, query) in &calls {
        let answer = attempt(&node, action, query);
        assert_eq!(
            answer["outcome"], "ok",
            "audit mode lets {action} through: {answer}"
        );
    }
    // Schema changes have no grant, so even audit mode refuses them; and audit mode never
    // opens the node's own network: an internal address no grant names stays refused (and
    // recorded, so the suggestion can name it).
    let answer = attempt(&node, "sql-exec", &[("q", "DROP TABLE orders")]);
    assert_eq!(answer["outcome"], "denied", "{answer}");
    let answer = attempt(&node, "fetch", &[("url", &url)]);
    assert_eq!(answer["outcome"], "denied", "{answer}");
    node.eventually("would-be denials are audited", || {
        audit(&node)
            .iter()
            .filter(|r| r["decision"] == "allowed")
            .count()
            >= 5
    });
    let suggestion = node.cli(&["policy", "suggest", "escalate"]);
    let toml = suggestion.ok().to_owned();
    let expected = format!(
        "[function.policy]\nsql = [\"select:orders\", \"insert:audit_log\"]\n\
         kv = [\"write:sessions/*\"]\noutbound = [\"http://127.0.0.1:{port}\"]\n\
         secrets = [\"PAYMENT_KEY\"]\n"
    );
    assert_eq!(toml, expected);
    assert!(
        suggestion.stderr.contains("not grantable"),
        "{}",
        suggestion.stderr
    );
    // The suggested policy, enforced, covers the same calls without a single denial.
    let policy = toml.trim_start_matches("[function.policy]\n");
    node.deploy(&manifest(&app, &escalate_toml(policy, "")));
    let audited = audit(&node).len();
    for (action, query) in &calls {
        let answer = attempt(&node, action, query);
        assert_eq!(
            answer["outcome"], "ok",
            "the suggested policy allows {action}: {answer}"
        );
    }
    let answer = attempt(&node, "fetch", &[("url", &url)]);
    assert_eq!(
        answer["outcome"], "ok",
        "the suggested grant names the origin: {answer}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(audit(&node).len(), audited, "no new audit records");
}

#[test]
fn inspect_prints_imports_exports_and_the_least_policy() {
    let component = wasm("escalate");
    let out = runway(
        &["inspect", component.to_str().unwrap()],
        "http://127.0.0.1:9",
    );
    let text = out.ok();
    for expected in [
        "wasi:http/outgoing-handler",
        "needs a grant: outbound",
        "runway:platform/sql",
        "wasi:keyvalue/store",
        "wasi:http/incoming-handler",
        "[function.policy]",
        "sql = [\"select:<table>\"]",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    let json = runway(
        &["inspect", component.to_str().unwrap(), "--json"],
        "http://127.0.0.1:9",
    )
    .json();
    assert!(
        json["exports"]
            .to_string()
            .contains("wasi:http/incoming-handler")
    );
    let dir = tempdir();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm").unwrap();
    let out = runway(
        &["inspect", garbage.to_str().unwrap()],
        "http://127.0.0.1:9",
    );
    assert!(out.failed().contains("not WebAssembly"), "{}", out.stderr);
}

/// A certificate authority and a TLS server whose certificate it signed (for 127.0.0.1);
/// returns the server's port and the CA in PEM.
fn tls_server() -> (u16, String) {
    use std::io::Write;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let Ok(connection) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(connection, tcp);
            read_head(&mut tls);
            let body = "hello over tls";
            _ = tls.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
            tls.conn.send_close_notify();
            _ = tls.flush();
        }
    });
    (port, ca.pem())
}

#[test]
fn outbound_https_verifies_the_server_certificate() {
    let dir = tempdir();
    let (port, ca_pem) = tls_server();
    let ca_file = dir.path().join("internal-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let policy = format!("outbound = [\"https://127.0.0.1:{port}\"]");
    let url = format!("https://127.0.0.1:{port}/hello");
    // Trusting the internal CA: the request goes through TLS to the granted origin.
    let node = TestNode::start(
        &dir.path().join("trusting"),
        &["--outbound-ca-file", ca_file.to_str().unwrap()],
    );
    node.deploy(&manifest(
        &dir.path().join("app"),
        &escalate_toml(&policy, ""),
    ));
    let answer = attempt(&node, "fetch", &[("url", &url)]);
    assert_eq!(answer["outcome"], "ok", "{answer}");
    assert_eq!(answer["detail"]["body"], "hello over tls");
    node.terminate();
    // Without it the same certificate is not trusted: the request fails, nothing is sent.
    let node = TestNode::start(&dir.path().join("default-roots"), &[]);
    node.deploy(&manifest(
        &dir.path().join("app"),
        &escalate_toml(&policy, ""),
    ));
    let answer = attempt(&node, "fetch", &[("url", &url)]);
    assert_eq!(answer["outcome"], "error", "{answer}");
    // A CA file that holds no certificate stops the node with a clear message.
    let bad = dir.path().join("empty.pem");
    std::fs::write(&bad, "nothing here").unwrap();
    let stderr = serve_refused(
        &dir.path().join("bad"),
        &["--outbound-ca-file", bad.to_str().unwrap()],
    );
    assert!(
        stderr.contains("empty.pem") && stderr.contains("no PEM certificate"),
        "{stderr}"
    );
}

#[test]
fn a_production_node_does_not_restore_a_function_in_audit_mode() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let node = TestNode::start(&data, &[]);
    node.deploy(&manifest(
        &dir.path().join("app"),
        &escalate_toml("", "policy_mode = \"audit\""),
    ));
    assert_eq!(node.get("/escalate/kv-keys").status(), 200);
    node.terminate();
    let node = TestNode::start(&data, &["--production"]);
    assert_eq!(node.get("/escalate/kv-keys").status(), 404);
    node.eventually("the refusal is reported at start", || {
        node.output()
            .contains("refused in a production environment")
    });
}
