//! Cluster mode: `runway serve` processes sharing one PostgreSQL (started by the test, never
//! a system server). Without PostgreSQL installed these tests say they skipped, unless
//! RUNWAY_REQUIRE_POSTGRES is set (CI sets it), when they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use runway_test_postgres::TestPostgres;
use serde_json::{Value, json};

use crate::support::*;

/// A cluster of nodes on one database, each with its own data folder (compiled-code cache),
/// all given the same secrets key.
struct Cluster {
    dir: tempfile::TempDir,
    url: String,
    key: PathBuf,
}

impl Cluster {
    /// A fresh database on the test server, or `None` (skip) without PostgreSQL.
    fn new(server: &TestPostgres) -> Cluster {
        let dir = tempdir();
        let key = dir.path().join("secrets.key");
        std::fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
        Cluster {
            url: server.create_database(),
            key,
            dir,
        }
    }

    fn node(&self, name: &str, extra: &[&str]) -> TestNode {
        let data = self.dir.path().join(name);
        let mut args = vec![
            "--database",
            &self.url,
            "--secret-key-file",
            self.key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        TestNode::start(&data, &args)
    }

    fn app(&self, name: &str, text: &str) -> PathBuf {
        manifest(&self.dir.path().join(name), text)
    }
}

/// The shared test server, or `None` when the tests skip.
fn postgres() -> Option<&'static TestPostgres> {
    TestPostgres::shared()
}

/// Polls `check` for up to 10 s: changes reach other nodes within a second (the benchmark
/// measures how fast); the margin keeps a loaded CI machine from failing the test.
#[track_caller]
fn soon(node: &TestNode, what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "timed out waiting until {what}; node output:\n{}",
        node.output()
    );
}

fn body(node: &TestNode, path: &str) -> (u16, String) {
    let response = node.get(path);
    (response.status().as_u16(), response.text().unwrap())
}

fn hello_toml(memory: &str) -> String {
    function_toml(
        "hello",
        "hello",
        "/hello",
        &format!("memory = \"{memory}\""),
    )
}

#[test]
fn a_change_made_through_one_node_is_served_by_the_others() {
    let Some(server) = postgres() else { return };
    let cluster = Cluster::new(server);
    let a = cluster.node("a", &[]);
    let b = cluster.node("b", &[]);
    let c = cluster.node("c", &[]);

    // Membership: every node lists all three, live.
    soon(&a, "three nodes are live", || {
        let nodes = a.cli(&["nodes", "--json"]).json();
        nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["live"] == true)
            .count()
            == 3
    });
    let listed = a.cli(&["nodes"]).ok().to_owned();
    for node in [&a, &b, &c] {
        assert!(
            listed.contains(&node.gateway.replace("http://", "")),
            "{listed}"
        );
    }
    assert!(listed.contains("(this)"), "{listed}");

    // Deploy through A; B and C serve it.
    assert_eq!(body(&b, "/hello").0, 404);
    a.deploy(&cluster.app("v1", &hello_toml("128MiB")));
    for node in [&b, &c] {
        soon(node, "the deploy made on A is served", || {
            body(node, "/hello").0 == 200
        });
    }
    a.deploy(&cluster.app("v2", &hello_toml("256MiB")));
    soon(&c, "release 2 is served on C", || {
        c.cli(&["ls", "--json"]).json()[0]["release"] == 2
    });

    // Two deploys of one function through two nodes at once: one release order, no gap,
    // and every node agrees on it.
    let (v3, v4) = (
        cluster.app("v3", &hello_toml("384MiB")),
        cluster.app("v4", &hello_toml("512MiB")),
    );
    std::thread::scope(|scope| {
        let first = scope.spawn(|| a.deploy(&v3));
        let second = scope.spawn(|| b.deploy(&v4));
        first.join().unwrap();
        second.join().unwrap();
    });
    let numbers = |node: &TestNode| -> Vec<u64> {
        node.cli(&["releases", "hello", "--json"])
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["number"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(numbers(&a), vec![4, 3, 2, 1]);
    assert_eq!(numbers(&c), numbers(&a));
    b.cli(&["rollback", "hello", "--to", "2"]).ok();
    soon(&c, "release 2 is served again on C", || {
        c.cli(&["ls", "--json"]).json()[0]["release"] == 2
    });

    // Roll back through B; C serves release 1 again.
    b.cli(&["rollback", "hello"]).ok();
    soon(&c, "the rollback made on B is served on C", || {
        c.cli(&["ls", "--json"]).json()[0]["release"] == 1
    });

    // An API key made on A works on C; revoked on B, C refuses it.
    a.deploy(&cluster.app(
        "keyed",
        &function_toml("keyed", "hello", "/keyed", "").replace(
            "route = \"/keyed\" }",
            "route = \"/keyed\", auth = \"api-key\" }",
        ),
    ));
    let created = a
        .cli(&["key", "create", "--function", "keyed", "--json"])
        .json();
    let (id, secret) = (
        created["key"]["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    );
    let with_key = |node: &TestNode| {
        node.request(reqwest::Method::GET, "/keyed")
            .bearer_auth(&secret)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    soon(&c, "the key made on A works on C", || with_key(&c) == 200);
    b.cli(&["key", "revoke", &id]).ok();
    soon(&c, "the key revoked on B is refused on C", || {
        with_key(&c) == 401
    });

    // A token made on A works on C; revoked on B, C refuses it at once (tokens are looked up
    // in the shared store on every admin call).
    let viewer = a
        .cli(&["token", "create", "--role", "viewer", "--json"])
        .json();
    let (token_id, token) = (
        viewer["token"]["id"].as_str().unwrap().to_owned(),
        viewer["secret"].as_str().unwrap().to_owned(),
    );
    let as_viewer = |node: &TestNode| {
        node.admin_request(reqwest::Method::GET, "/v1/functions", Some(&token))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(as_viewer(&c), 200);
    b.cli(&["token", "revoke", &token_id]).ok();
    assert_eq!(as_viewer(&c), 401);

    // An environment created on A is served by C under its host name; removed on B, gone.
    a.cli(&["env", "create", "preview", "--from", "prod"]).ok();
    let in_preview = |node: &TestNode| {
        node.request(reqwest::Method::GET, "/hello")
            .header("host", "preview.localhost")
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    soon(&c, "the environment made on A is served on C", || {
        in_preview(&c) == 200
    });
    b.cli(&["env", "rm", "preview"]).ok();
    soon(&c, "the environment removed on B is gone on C", || {
        in_preview(&c) == 404
    });

    // Revoking the artifact on B stops it on C.
    let digest = c.cli(&["ls", "--json"]).json()[0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    b.cli(&["revoke", &digest, "--reason", "test"]).ok();
    soon(&c, "the artifact revoked on B stops on C", || {
        body(&c, "/hello").0 == 503
    });

    // A node that stops drops out of the list.
    let (status, _) = c.terminate();
    assert!(status.success());
    soon(&a, "the stopped node drops out", || {
        let nodes = a.cli(&["nodes", "--json"]).json();
        nodes["nodes"].as_array().unwrap().len() == 2
    });
}

#[test]
fn max_concurrency_means_the_whole_cluster() {
    let Some(server) = postgres() else { return };
    let cluster = Cluster::new(server);
    let nodes: Vec<TestNode> = ["a", "b", "c"]
        .iter()
        .map(|name| cluster.node(name, &[]))
        .collect();
    soon(&nodes[0], "three nodes are live", || {
        nodes[0].cli(&["nodes", "--json"]).json()["nodes"]
            .as_array()
            .unwrap()
            .len()
            == 3
    });
    // `forever` spins until its timeout: each admitted call holds its slot for 8 s, long
    // enough for all 30 calls to arrive while the first are still running.
    nodes[0].deploy(&cluster.app(
        "spin",
        &function_toml(
            "forever",
            "forever",
            "/forever",
            "timeout = \"8s\"\nmax_concurrency = 10",
        ),
    ));
    for node in &nodes {
        soon(node, "the function is served", || {
            node.cli(&["ls", "--json"]).json()[0]["name"] == "forever"
        });
        // Each node splits the limit by the live nodes it has counted itself.
        soon(node, "the node counts three live nodes", || {
            node.cli(&["nodes", "--json"]).json()["live_nodes"] == 3
        });
    }
    // 30 calls at once, 10 to each node: 10 run (4, 3 and 3), 20 are refused.
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..30)
            .map(|n| {
                let node = &nodes[n % 3];
                scope.spawn(move || node.get("/forever").status().as_u16())
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(refused, 20, "{statuses:?}");
    assert_eq!(statuses.len() - refused, 10, "{statuses:?}");

    // An API key's rate is the cluster's too: 9 an hour on 3 nodes is 3 on each.
    nodes[0].deploy(&cluster.app(
        "keyed",
        &function_toml("keyed", "hello", "/keyed", "").replace(
            "route = \"/keyed\" }",
            "route = \"/keyed\", auth = \"api-key\" }",
        ),
    ));
    let secret = nodes[0]
        .cli(&[
            "key",
            "create",
            "--function",
            "keyed",
            "--rate",
            "9/h",
            "--json",
        ])
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut admitted = 0;
    for node in &nodes {
        let mut answered = 0;
        // 404 or 401 until the node has followed the deploy and the key; then 200 or 429.
        soon(node, "the node answered six calls with the key", || {
            let status = node
                .request(reqwest::Method::GET, "/keyed")
                .bearer_auth(&secret)
                .send()
                .unwrap()
                .status()
                .as_u16();
            assert!([200, 401, 404, 429].contains(&status), "{status}");
            answered += usize::from(status == 200 || status == 429);
            admitted += usize::from(status == 200);
            answered == 6
        });
    }
    assert_eq!(admitted, 9);
}

#[test]
fn every_queued_job_is_done_once_when_a_node_is_killed_mid_run() {
    let Some(server) = postgres() else { return };
    let cluster = Cluster::new(server);
    let a = cluster.node("a", &[]);
    let b = cluster.node("b", &[]);
    let c = cluster.node("c", &[]);
    a.deploy(&cluster.app(
        "worker",
        &format!(
            "[[function]]\nname = \"nightly\"\ncomponent = \"{}\"\ntimeout = \"30s\"\n\n\
             [[function.trigger]]\nqueue = {{ max_attempts = 5, backoff = \"100ms\" }}\n",
            wasm("nightly").display()
        ),
    ));
    let http = reqwest::blocking::Client::new();
    for n in 0..1000 {
        let response = http
            .post(format!("{}/v1/functions/nightly/enqueue", a.admin))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "path": format!("/run?ms=20&n={n}") }))
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 202);
    }
    // Kill A while the three nodes work through the queue.
    soon(&b, "some jobs are done", || succeeded(&b).len() >= 100);
    signal(a.pid(), "KILL");
    _ = a.wait();
    // A's claims come back when their lease runs out; B and C finish everything.
    for _ in 0..120 {
        if succeeded(&b).len() == 1000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let done = succeeded(&b);
    assert_eq!(done.len(), 1000, "{}", c.output());
    let unique: BTreeSet<&String> = done.iter().collect();
    assert_eq!(unique.len(), 1000, "a job succeeded twice");
}

/// Ids of the succeeded jobs, as one node reports them.
fn succeeded(node: &TestNode) -> Vec<String> {
    let listed = node
        .admin_get("/v1/jobs?state=succeeded&limit=10000")
        .json::<Value>()
        .unwrap();
    listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_schedule_on_three_nodes_fires_once_per_tick() {
    let Some(server) = postgres() else { return };
    let cluster = Cluster::new(server);
    let nodes: Vec<TestNode> = ["a", "b", "c"]
        .iter()
        .map(|name| cluster.node(name, &[]))
        .collect();
    nodes[1].deploy(&cluster.app(
        "ticker",
        &format!(
            "[[function]]\nname = \"nightly\"\ncomponent = \"{}\"\ntimeout = \"5s\"\n\n\
             [[function.trigger]]\nschedule = {{ cron = \"* * * * * *\" }}\n",
            wasm("nightly").display()
        ),
    ));
    std::thread::sleep(Duration::from_secs(6));
    let listed = nodes[0]
        .admin_get("/v1/jobs?state=pending,running,succeeded,dead&limit=10000")
        .json::<Value>()
        .unwrap();
    let mut per_tick: BTreeMap<i64, usize> = BTreeMap::new();
    for job in listed["jobs"].as_array().unwrap() {
        *per_tick
            .entry(job["scheduled_for_ms"].as_i64().unwrap())
            .or_default() += 1;
    }
    assert!(per_tick.len() >= 4, "too few ticks fired: {per_tick:?}");
    assert!(
        per_tick.values().all(|runs| *runs == 1),
        "a tick fired more than once: {per_tick:?}"
    );
    let ticks: Vec<i64> = per_tick.keys().copied().collect();
    assert!(
        ticks.windows(2).all(|pair| pair[1] - pair[0] == 1000),
        "a tick was skipped: {ticks:?}"
    );
}

#[test]
fn a_postgres_restart_under_load_loses_no_record() {
    let Some(mut server) = TestPostgres::start() else {
        return;
    };
    let cluster = Cluster::new(&server);
    let node = cluster.node("a", &[]);
    node.deploy(&cluster.app("v1", &hello_toml("128MiB")));
    assert_eq!(body(&node, "/hello").0, 200);
    let mut served = 1;
    for _ in 0..200 {
        assert_eq!(body(&node, "/hello").0, 200);
        served += 1;
    }
    server.stop();
    // The store is gone: requests are still served, and the node says it is not ready.
    for _ in 0..300 {
        assert_eq!(body(&node, "/hello").0, 200);
        served += 1;
    }
    let ready = node
        .admin_request(reqwest::Method::GET, "/readyz", None)
        .send()
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    assert!(ready.text().unwrap().contains("store"));
    server.restart();
    for _ in 0..200 {
        assert_eq!(body(&node, "/hello").0, 200);
        served += 1;
    }
    soon(&node, "every record reached the store", || {
        let ls = node.cli(&["ls", "--json"]);
        ls.status.success() && ls.json()[0]["invocations"] == served
    });
    // Readiness reuses a store check for a second: ready again soon after.
    soon(&node, "the node is ready again", || {
        node.admin_request(reqwest::Method::GET, "/readyz", None)
            .send()
            .unwrap()
            .status()
            .as_u16()
            == 200
    });
    assert_eq!(node.metric("runway_meter_lost_records"), Some(0.0));
}

#[test]
fn a_wrong_database_url_is_one_clear_line_and_never_shows_the_password() {
    let dir = tempdir();
    let err = serve_refused(
        dir.path(),
        &[
            "--database",
            "postgres://runway:hunter2@127.0.0.1:1/runway",
            "--secret-key-file",
            dir.path().join("key").to_str().unwrap(),
        ],
    );
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let err = serve_refused(dir.path(), &["--database", "mysql://db/runway"]);
    assert!(err.contains("postgres://"), "{err}");
}

#[test]
fn a_shared_store_refuses_per_node_data_and_nodes_without_the_clusters_key() {
    let Some(server) = postgres() else { return };
    let cluster = Cluster::new(server);
    let a = cluster.node("a", &[]);
    let refused = a.cli(&[
        "deploy",
        "--no-build",
        examples().join("orders").to_str().unwrap(),
    ]);
    let message = refused.failed();
    assert!(message.contains("sql"), "{message}");
    assert!(message.contains("PostgreSQL"), "{message}");
    assert_eq!(a.cli(&["ls", "--json"]).json(), json!([]));

    // No key: refused with the fix.
    let data = cluster.dir.path().join("keyless");
    let err = serve_refused(&data, &["--database", &cluster.url]);
    assert!(err.contains("--secret-key-file"), "{err}");
    // Another key: refused, naming both fingerprints.
    let other = cluster.dir.path().join("other.key");
    std::fs::write(&other, format!("{}\n", "77".repeat(32))).unwrap();
    let err = serve_refused(
        &data,
        &[
            "--database",
            &cluster.url,
            "--secret-key-file",
            other.to_str().unwrap(),
        ],
    );
    assert!(err.contains("not the cluster's"), "{err}");
    let _ = Path::new(&data);
}

#[test]
fn readiness_and_liveness_need_no_token() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    let live = node
        .admin_request(reqwest::Method::GET, "/livez", None)
        .send()
        .unwrap();
    assert_eq!(live.status().as_u16(), 200);
    let ready = node
        .admin_request(reqwest::Method::GET, "/readyz", None)
        .send()
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(ready.json::<Value>().unwrap()["status"], "ready");
    // One node on its own store lists itself.
    let nodes = node.cli(&["nodes", "--json"]).json();
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(nodes["nodes"][0]["id"], nodes["this_node"]);
}
