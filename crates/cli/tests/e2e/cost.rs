//! Cost and performance: CPU follows memory.

use crate::support::*;

fn crunch(name: &str, memory: &str, extra: &str) -> String {
    format!(
        "[[function]]\nname = \"{name}\"\ncomponent = \"{}\"\nmemory = \"{memory}\"\ntimeout = \"60s\"\n{extra}\n\n\
         [[function.trigger]]\nhttp = {{ route = \"/{name}\" }}\n\n",
        wasm("crunch").display()
    )
}

#[test]
fn cpu_follows_memory_and_unthrottled_functions_get_a_full_core() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &[]);
    let manifest_text = [
        crunch("small", "128MiB", ""),
        crunch("free", "128MiB", "cpu = \"unthrottled\""),
        crunch("big", "1769MiB", ""),
    ]
    .concat();
    node.deploy(&manifest(&dir.path().join("app"), &manifest_text));
    let listed = node.cli(&["ls", "--json"]).json();
    let share = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()["cpu_share"]
            .as_f64()
            .unwrap()
    };
    assert!((share("small") - 128.0 / 1769.0).abs() < 1e-6);
    assert_eq!(share("free"), 1.0);
    assert_eq!(share("big"), 1.0);

    // Enough computation to spend a 128 MiB function's quota (7.2 ms of every 100 ms) many
    // times over on any machine.
    let throttled = |name: &str| {
        let out = node
            .cli(&[
                "invoke",
                name,
                "--path",
                &format!("/{name}?n=300000"),
                "--json",
            ])
            .json();
        assert_eq!(out["status"], 200, "{out}");
        assert!(
            out["body"].as_str().unwrap().contains("\"primes\":25997"),
            "{out}"
        );
        out["record"]["cpu_throttled_us"].as_u64().unwrap()
    };
    assert!(
        throttled("small") > 0,
        "a 128 MiB function is held to its share"
    );
    assert_eq!(
        throttled("free"),
        0,
        "cpu = \"unthrottled\" is never paused"
    );
    assert_eq!(throttled("big"), 0, "1,769 MiB buys a full core");
    // A short request stays within even the smallest quota: it is never paused.
    let out = node
        .cli(&["invoke", "small", "--path", "/small?n=100", "--json"])
        .json();
    assert_eq!(out["record"]["cpu_throttled_us"], 0, "{out}");

    // A node with proportional CPU off gives every function a full core.
    node.terminate();
    let node = TestNode::start(&dir.path().join("data"), &["--cpu-full-core-at", "off"]);
    let out = node
        .cli(&["invoke", "small", "--path", "/small?n=300000", "--json"])
        .json();
    assert_eq!(out["record"]["cpu_throttled_us"], 0, "{out}");
    let refused = serve_refused(&dir.path().join("other"), &["--cpu-full-core-at", "1MiB"]);
    assert!(refused.contains("too small"), "{refused}");
}

#[test]
fn tune_measures_each_size_in_a_throwaway_environment_charts_recommends_and_applies() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &[]);
    node.deploy(&manifest(
        &dir.path().join("app"),
        &crunch("crunch", "128MiB", ""),
    ));
    for _ in 0..3 {
        assert_eq!(node.get("/crunch?n=1000").status(), 200);
    }
    let chart = dir.path().join("crunch.svg");
    let report = node
        .cli(&[
            "tune",
            "crunch",
            "--memory",
            "256MiB,1769MiB",
            "--runs",
            "2",
            "--path",
            "/crunch?n=300000",
            "--strategy",
            "speed",
            "--chart",
            chart.to_str().unwrap(),
            "--apply",
            "--json",
        ])
        .json();
    let sizes = report["sizes"].as_array().unwrap();
    let memories: Vec<&str> = sizes
        .iter()
        .map(|s| s["memory"].as_str().unwrap())
        .collect();
    assert_eq!(
        memories,
        ["128MiB", "256MiB", "1769MiB"],
        "the current size is measured too"
    );
    for size in sizes {
        assert_eq!(size["ok"], 2, "{size}");
        assert_eq!(size["errors"], 0, "{size}");
        assert!(size["cost_per_invocation"].as_u64().unwrap() > 0, "{size}");
        assert!(size["p50_ms"].as_f64().unwrap() > 0.0, "{size}");
    }
    assert_eq!(sizes[0]["current"], true);
    assert_eq!(sizes[2]["cpu_share"], 1.0);
    assert_eq!(report["request"], "GET /crunch?n=300000");
    assert!(report["tuning_cost_usd"].as_f64().unwrap() > 0.0);
    assert!(report["recommended_timeout"].is_string(), "{report}");
    let recommended = report["recommended"].as_str().unwrap().to_owned();
    assert!(memories.contains(&recommended.as_str()), "{report}");
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.matches("<circle").count() == 3,
        "{svg}"
    );
    assert!(svg.contains(&format!("{recommended} (recommended)")));

    // The throwaway environment is gone, and prod's traffic was not counted with it.
    let envs = node.cli(&["env", "ls", "--json"]).json();
    assert_eq!(envs.as_array().unwrap().len(), 1, "{envs}");
    assert_eq!(envs[0]["invocations"], 3, "{envs}");
    // --apply: a new release with the recommended size, unless it already had it.
    let releases = node.cli(&["releases", "crunch", "--json"]).json();
    if recommended == "128MiB" {
        assert!(report["applied_release"].is_null());
        assert_eq!(releases.as_array().unwrap().len(), 1);
    } else {
        assert_eq!(report["applied_release"], 2, "{report}");
        assert_eq!(releases[0]["memory"], recommended.as_str());
        assert!(
            releases[0]["origin"]
                .as_str()
                .unwrap()
                .contains(&format!("memory 128MiB -> {recommended}")),
            "{releases}"
        );
    }
}

#[test]
fn tune_without_a_clean_size_recommends_nothing_and_applies_nothing() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &[]);
    node.deploy_example("hog");
    let out = node.cli(&[
        "tune",
        "hog",
        "--memory",
        "32MiB,64MiB",
        "--runs",
        "1",
        "--apply",
    ]);
    assert!(
        out.failed()
            .contains("nothing to apply: no size ran every invocation cleanly"),
        "{}",
        out.stderr
    );
    let report = node
        .cli(&["tune", "hog", "--memory", "64MiB", "--runs", "1", "--json"])
        .json();
    assert!(report["recommended"].is_null(), "{report}");
    for size in report["sizes"].as_array().unwrap() {
        assert_eq!(size["out_of_memory"], 1, "{size}");
    }
    assert_eq!(
        node.cli(&["releases", "hog", "--json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        node.cli(&["env", "ls", "--json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        node.cli(&["tune", "nothing"])
            .failed()
            .contains("no function named `nothing`")
    );
}

#[test]
fn cost_groups_by_function_environment_release_and_owner_from_the_rollups() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &[]);
    let app = dir.path().join("app");
    // hello belongs to web; probe declares no owner.
    let text = format!(
        "[[function]]\nname = \"hello\"\ncomponent = \"{}\"\nowner = \"web\"\n\n\
         [[function.trigger]]\nhttp = {{ route = \"/hello\" }}\n\n\
         [[function]]\nname = \"probe\"\ncomponent = \"{}\"\n\n\
         [[function.trigger]]\nhttp = {{ route = \"/probe\" }}\n",
        wasm("hello").display(),
        wasm("probe").display()
    );
    node.deploy(&manifest(&app, &text));
    node.cli(&["env", "create", "dev", "--from", "prod"]).ok();
    let port = node.gateway.rsplit(':').next().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(node.get("/hello").status(), 200);
    }
    assert_eq!(node.get("/probe").status(), 200);
    let dev = node
        .request(reqwest::Method::GET, "/hello")
        .header("host", format!("dev.localhost:{port}"))
        .send()
        .unwrap();
    assert_eq!(dev.status(), 200);
    // A new release of hello in prod: its calls are counted apart.
    node.cli(&["invoke", "hello"]).ok();
    let by = |dimension: &str, extra: &[&str]| {
        let mut args = vec!["cost", "--by", dimension, "--since", "1h", "--json"];
        args.extend_from_slice(extra);
        node.eventually("the meter has written every record", || {
            node.cli(&["cost", "--by", "env", "--since", "1h", "--json"])
                .json()["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["invocations"].as_u64().unwrap())
                .sum::<u64>()
                == 6
        });
        node.cli(&args).json()
    };
    let envs = by("env", &[]);
    let counts: Vec<(String, u64)> = envs["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["environment"].as_str().unwrap().to_owned(),
                r["invocations"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        counts.contains(&("prod".into(), 5)) && counts.contains(&("dev".into(), 1)),
        "{envs}"
    );
    let functions = by("function", &[]);
    let hello_prod = functions["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["environment"] == "prod" && r["function"] == "hello")
        .unwrap();
    assert_eq!(hello_prod["invocations"], 4);
    let owners = by("owner", &[]);
    let owner = |name: &str| {
        owners["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["owner"] == name)
            .map_or(0, |r| r["invocations"].as_u64().unwrap())
    };
    assert_eq!(owner("web"), 5, "hello in both environments: {owners}");
    assert_eq!(owner(""), 1, "probe has no owner: {owners}");
    let releases = by("release", &["--env", "prod"]);
    assert_eq!(releases["environments"], serde_json::json!(["prod"]));
    assert!(
        releases["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["environment"] == "prod"),
        "{releases}"
    );
    let table = node
        .cli(&["cost", "--by", "owner", "--since", "1h"])
        .ok()
        .to_owned();
    assert!(
        table.contains("web") && table.contains("(no owner)"),
        "{table}"
    );
    // A token scoped to dev sees dev only.
    let token = node
        .cli(&[
            "token", "create", "--role", "viewer", "--env", "dev", "--json",
        ])
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let scoped = runway_as(
        &[
            "cost", "--by", "env", "--since", "1h", "--json", "--env", "dev",
        ],
        &node.admin,
        Some(&token),
    )
    .json();
    assert_eq!(scoped["environments"], serde_json::json!(["dev"]));
    assert!(
        node.cli(&["cost", "--by", "env", "--since", "soon"])
            .failed()
            .contains("invalid `since` value `soon`")
    );
}

/// An HTTP server that keeps every request body it receives.
fn webhook_receiver() -> (
    u16,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use std::io::{Read, Write};
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let kept = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let read = read_head(&mut stream);
            let split = read
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(read.len(), |i| i + 4);
            let head = String::from_utf8_lossy(&read[..split]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            // The head's read may have taken part of the body with it.
            let mut body = read[split..].to_vec();
            let mut rest = vec![0; length.saturating_sub(body.len())];
            _ = stream.read_exact(&mut rest);
            body.extend(rest);
            if let Ok(value) = serde_json::from_slice(&body) {
                kept.lock().unwrap().push(value);
            }
            _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
        }
    });
    (port, received)
}

#[test]
fn budgets_alert_at_each_threshold_then_stop_or_throttle_at_100_percent() {
    let dir = tempdir();
    let (port, alerts) = webhook_receiver();
    let node = TestNode::start(
        &dir.path().join("data"),
        &["--budget-webhook", &format!("http://127.0.0.1:{port}/hook")],
    );
    // One hello invocation costs about 0.2 µUSD: five spend a 1 µUSD budget.
    let text = format!(
        "{}\n[function.budget]\nmonthly = \"0.000001 USD\"\naction = \"stop\"\n",
        function_toml("hello", "hello", "/hello", "owner = \"web\"")
    );
    node.deploy(&manifest(&dir.path().join("app"), &text));
    let listed = node.cli(&["budget", "ls", "--json"]).json();
    assert_eq!(listed[0]["budget"]["id"], "function:prod/hello");
    assert_eq!(listed[0]["budget"]["source"], "manifest");
    assert_eq!(listed[0]["reached"], 0);
    for _ in 0..5 {
        assert_eq!(node.get("/hello").status(), 200);
    }
    node.eventually("the budget is spent and the function stopped", || {
        node.get("/hello").status() == 402
    });
    let stopped = node.get("/hello");
    assert_eq!(stopped.status(), 402);
    assert!(stopped.text().unwrap().contains("spent its monthly budget"));
    node.eventually("three alerts reached the webhook", || {
        alerts.lock().unwrap().len() >= 3
    });
    let thresholds: Vec<u64> = alerts
        .lock()
        .unwrap()
        .iter()
        .map(|a| a["threshold"].as_u64().unwrap())
        .collect();
    assert_eq!(thresholds, [50, 80, 100], "each threshold once, in order");
    let last = alerts.lock().unwrap()[2].clone();
    assert_eq!(last["budget"], "function:prod/hello");
    assert_eq!(last["action"], "stop");
    assert_eq!(last["enforced"], true);
    let status = node.cli(&["budget", "ls", "--json"]).json();
    assert_eq!(status[0]["reached"], 100);
    assert_eq!(status[0]["enforced"], true);
    assert!(status[0]["used"].as_f64().unwrap() >= 1.0);
    assert!(status[0]["projected_usd"].as_f64().unwrap() > 0.0);
    assert!(
        node.metric("runway_budget_used_ratio{budget=\"function:prod/hello\"}")
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        node.metric("runway_budget_alerts_total{budget=\"function:prod/hello\",threshold=\"100\"}"),
        Some(1.0)
    );
    let audit = node.cli(&["audit", "--kind", "control", "--json"]).json();
    let budget_alerts = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "budget.alert")
        .count();
    assert_eq!(budget_alerts, 3, "{audit}");
    // Refused calls cost nothing: the spending stays where it stopped.
    let refused = node.metric("runway_gateway_refused_total{environment=\"prod\",function=\"hello\",reason=\"budget_spent\"}");
    assert!(refused.unwrap() >= 1.0);

    // Raising the budget reopens the function.
    node.cli(&[
        "budget",
        "set",
        "function",
        "hello",
        "--monthly",
        "1 USD",
        "--action",
        "stop",
    ])
    .ok();
    node.eventually("the function serves again", || {
        node.get("/hello").status() == 200
    });
    // Throttle: one invocation at a time, so sequential calls still succeed.
    node.cli(&[
        "budget",
        "set",
        "function",
        "hello",
        "--monthly",
        "0.000001 USD",
        "--action",
        "throttle",
    ])
    .ok();
    node.eventually("the throttle is in force", || {
        node.cli(&["budget", "ls", "--json"]).json()[0]["enforced"] == true
    });
    assert_eq!(node.get("/hello").status(), 200);
    let table = node.cli(&["budget", "ls"]).ok().to_owned();
    assert!(
        table.contains("ENFORCED") && table.contains("throttle"),
        "{table}"
    );

    // Bad input changes nothing.
    assert!(
        node.cli(&["budget", "set", "function", "hello", "--monthly", "twenty"])
            .failed()
            .contains("invalid amount `twenty`")
    );
    assert!(
        node.cli(&["budget", "set", "function", "nope", "--monthly", "1 USD"])
            .failed()
            .contains("no function named `nope`")
    );
    assert!(
        node.cli(&["budget", "rm", "owner:nobody"])
            .failed()
            .contains("no budget")
    );
    node.cli(&["budget", "set", "owner", "web", "--monthly", "5 USD"])
        .ok();
    node.cli(&["budget", "set", "env", "--monthly", "50 USD"])
        .ok();
    let ids: Vec<String> = node
        .cli(&["budget", "ls", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["budget"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["env:prod", "function:prod/hello", "owner:web"]);
    // A token scoped to another environment cannot remove prod's budgets.
    node.cli(&["env", "create", "dev"]).ok();
    let dev = node
        .cli(&[
            "token", "create", "--role", "deployer", "--env", "dev", "--json",
        ])
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = runway_as(
        &["budget", "rm", "env:prod", "--env", "dev"],
        &node.admin,
        Some(&dev),
    );
    assert!(refused.failed().contains("403"), "{}", refused.stderr);
    node.cli(&["budget", "rm", "owner:web"]).ok();
    // Budgets leave with their environment, so a new one of that name starts without them.
    node.cli(&["budget", "set", "env", "--env", "dev", "--monthly", "1 USD"])
        .ok();
    node.cli(&["env", "rm", "dev"]).ok();
    node.cli(&["env", "create", "dev"]).ok();
    let ids = node.cli(&["budget", "ls", "--json"]).json().to_string();
    assert!(!ids.contains("env:dev"), "{ids}");
    let refused = serve_refused(
        &dir.path().join("other"),
        &["--budget-webhook", "https://x"],
    );
    assert!(refused.contains("not an http:// URL"), "{refused}");
}

#[test]
fn capacity_reports_peak_use_and_the_nodes_a_growth_factor_needs() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &[]);
    node.deploy(&manifest(
        &dir.path().join("app"),
        &crunch("crunch", "128MiB", ""),
    ));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{}/crunch?n=200000", node.gateway);
            std::thread::spawn(move || reqwest::blocking::get(url).unwrap().status().as_u16())
        })
        .collect();
    for client in clients {
        assert_eq!(client.join().unwrap(), 200);
    }
    node.eventually("the meter has written the records", || {
        node.cli(&["capacity", "--json"]).json()["observed"]["functions"][0]["invocations"] == 4
    });
    let report = node
        .cli(&["capacity", "--since", "1d", "--growth", "3", "--json"])
        .json();
    let crunch = &report["observed"]["functions"][0];
    assert_eq!(crunch["function"], "crunch");
    assert_eq!(crunch["memory_mb"], 128);
    let peak = crunch["peak_concurrency"].as_u64().unwrap();
    assert!((1..=4).contains(&peak), "{report}");
    let busiest = &report["observed"]["busiest"];
    assert_eq!(busiest["instances"].as_u64().unwrap(), peak);
    assert_eq!(busiest["memory_mb"].as_u64().unwrap(), peak * 128);
    let cores = busiest["cores"].as_f64().unwrap();
    assert!(
        (cores - peak as f64 * 128.0 / 1769.0).abs() < 1e-6,
        "{report}"
    );
    assert_eq!(report["needed_instances"].as_u64().unwrap(), peak * 3);
    assert!(report["nodes_needed"].as_u64().unwrap() >= 1);
    assert!(["memory", "cpu", "instances"].contains(&report["limited_by"].as_str().unwrap()));
    let monthly = report["monthly_cost_usd"].as_f64().unwrap();
    assert!(monthly > 0.0);
    assert!((report["monthly_cost_at_growth_usd"].as_f64().unwrap() - 3.0 * monthly).abs() < 1e-12);
    let table = node.cli(&["capacity", "--growth", "2"]).ok().to_owned();
    assert!(
        table.contains("busiest hour") && table.contains("node(s) like this one"),
        "{table}"
    );
    assert!(
        node.cli(&["capacity", "--growth", "0"])
            .failed()
            .contains("out of range")
    );
}
