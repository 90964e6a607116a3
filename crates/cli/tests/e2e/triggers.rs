//! Queue and schedule triggers: durable asynchronous jobs with retries and a dead-letter
//! list, a SIGKILL mid-job, and cron ticks that run once each across restarts.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

fn nightly_toml(extra_triggers: &str, extra: &str) -> String {
    format!(
        "[[function]]\nname = \"nightly\"\ncomponent = \"{}\"\ntimeout = \"30s\"\n{extra}\n\n\
         [[function.trigger]]\nqueue = {{ max_attempts = 3, backoff = \"100ms\", max_backoff = \"200ms\" }}\n\
         {extra_triggers}",
        wasm("nightly").display()
    )
}

fn job(node: &TestNode, id: &str) -> Value {
    node.cli(&["queue", "show", id, "--json"]).json()
}

fn enqueue(node: &TestNode, path: &str) -> String {
    let out = node.cli(&["invoke", "nightly", "--async", "--path", path]);
    let id = out.ok().trim().to_owned();
    assert!(id.starts_with("j-"), "{}", out.stdout);
    id
}

#[track_caller]
fn wait_for_state(node: &TestNode, id: &str, state: &str) -> Value {
    let mut last = Value::Null;
    node.eventually(&format!("job {id} is {state}"), || {
        last = job(node, id);
        last["state"] == state
    });
    last
}

#[test]
fn async_invocations_are_acknowledged_at_once_retried_with_backoff_and_dead_lettered() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    node.deploy(&manifest(
        &dir.path().join("app"),
        &nightly_toml(
            "[[function.trigger]]\nhttp = { route = \"/nightly\", auth = \"api-key\" }\n",
            "max_concurrency = 1",
        ),
    ));

    let id = enqueue(&node, "/run?ms=50");
    let done = wait_for_state(&node, &id, "succeeded");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["result"]["status"], 200);
    assert_eq!(done["result"]["body"], "done\n");
    // The job's invocation is metered and logged like any other.
    let request_id = done["result"]["request_id"].as_str().unwrap();
    node.eventually("the job's output is in the logs", || {
        let logs = node.cli(&["logs", "nightly"]).ok().to_owned();
        logs.contains(request_id) && logs.contains(&format!("started by job {id} attempt 1"))
    });

    // A job that keeps failing: three attempts, then the dead-letter list.
    let failing = enqueue(&node, "/run?fail=1");
    let dead = wait_for_state(&node, &failing, "dead");
    assert_eq!(dead["attempts"], 3);
    assert_eq!(dead["max_attempts"], 3);
    assert_eq!(dead["result"]["status"], 500);
    let error = dead["last_error"].as_str().unwrap();
    assert!(
        error.contains("attempt 3 of 3") && error.contains("no attempts left"),
        "{error}"
    );
    let listed = node.cli(&["queue", "ls", "--dead"]).ok().to_owned();
    assert!(
        listed.contains(&failing) && !listed.contains(&id),
        "{listed}"
    );
    let all = node.cli(&["queue", "ls", "--all"]).ok().to_owned();
    assert!(all.contains(&failing) && all.contains(&id), "{all}");
    let shown = node.cli(&["queue", "show", &failing]).ok().to_owned();
    assert!(
        shown.contains("attempts   3 of 3") && shown.contains("HTTP 500"),
        "{shown}"
    );
    assert_eq!(
        node.metric(
            "runway_jobs_total{environment=\"prod\",function=\"nightly\",outcome=\"retried\"}"
        ),
        Some(2.0)
    );

    // Retry sends it back with fresh attempts; it fails again the same way.
    node.cli(&["queue", "retry", &failing]).ok();
    node.eventually("the retried job ran again", || {
        let job = job(&node, &failing);
        job["state"] == "dead" && job["updated_at_ms"] != dead["updated_at_ms"]
    });
    let again = node.cli(&["queue", "retry", &id]);
    assert!(
        again.failed().contains("only dead-lettered jobs"),
        "{}",
        again.stderr
    );
    let unknown = node.cli(&["queue", "show", "j-nope"]);
    assert!(unknown.failed().contains("404"), "{}", unknown.stderr);

    // A request that is not valid HTTP is refused at once, not stored to dead-letter later
    // (a header name that is not a token, with a multi-byte character at byte 9).
    let before = node.cli(&["queue", "ls", "--all", "--json"]).json();
    let refused = node
        .admin_request(
            reqwest::Method::POST,
            "/v1/functions/nightly/enqueue",
            Some(ADMIN_TOKEN),
        )
        .json(&serde_json::json!({"path": "/run", "headers": {"0\u{c9}TI ix\u{fd}": "v"}}))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().unwrap();
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert_eq!(node.cli(&["queue", "ls", "--all", "--json"]).json(), before);

    // Jobs held back by max_concurrency wait without spending attempts.
    let slow: Vec<String> = (0..3).map(|_| enqueue(&node, "/run?ms=300")).collect();
    for id in &slow {
        let done = wait_for_state(&node, id, "succeeded");
        assert_eq!(done["attempts"], 1, "{done:#}");
    }

    // Callers cannot pass themselves off as the platform: x-runway-* headers are stripped.
    let key = node
        .cli(&["key", "create", "--function", "nightly", "--json"])
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let spoofed = node
        .request(reqwest::Method::POST, "/nightly")
        .bearer_auth(&key)
        .header("x-runway-scheduled-for", "2020-01-01T00:00:00Z")
        .header("x-runway-job-id", "j-forged")
        .send()
        .unwrap();
    assert_eq!(spoofed.status(), 200);
    node.eventually("the direct call is logged as one", || {
        let logs = node.cli(&["logs", "nightly"]).ok().to_owned();
        logs.contains("started by a direct call") && !logs.contains("j-forged")
    });

    // Through the gateway: `Prefer: respond-async` queues the request and answers 202.
    let accepted = node
        .request(reqwest::Method::POST, "/nightly?ms=20")
        .bearer_auth(&key)
        .header("prefer", "respond-async")
        .body("payload")
        .send()
        .unwrap();
    assert_eq!(accepted.status(), 202);
    assert_eq!(accepted.headers()["preference-applied"], "respond-async");
    let body: Value = accepted.json().unwrap();
    let queued = body["id"].as_str().unwrap().to_owned();
    let done = wait_for_state(&node, &queued, "succeeded");
    assert_eq!(done["request"]["path"], "/nightly?ms=20");
    let headers = done["request"]["headers"].as_array().unwrap();
    assert!(
        headers.iter().any(|h| h[0] == "x-runway-api-key-id"),
        "{headers:?}"
    );
    assert!(
        !headers.iter().any(|h| h[0] == "authorization"),
        "a credential was stored with the job: {headers:?}"
    );
    let unauthenticated = node
        .request(reqwest::Method::POST, "/nightly")
        .header("prefer", "respond-async")
        .send()
        .unwrap();
    assert_eq!(
        unauthenticated.status(),
        401,
        "auth is checked before queueing"
    );

    // A function without a queue trigger refuses asynchronous invocations.
    node.deploy_example("hello");
    let refused = node.cli(&["invoke", "hello", "--async"]);
    assert!(
        refused.failed().contains("no queue trigger"),
        "{}",
        refused.stderr
    );
    let audit = node.cli(&["audit", "--kind", "control", "--json"]).json();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "function.enqueue" && r["detail"] == format!("job {id}")),
        "{audit:#}"
    );
}

#[test]
fn a_job_running_when_the_node_is_killed_runs_again_after_restart() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let node = TestNode::start(&data, &[]);
    node.deploy(&manifest(&dir.path().join("app"), &nightly_toml("", "")));
    let id = enqueue(&node, "/run?ms=3000");
    wait_for_state(&node, &id, "running");
    signal(node.pid(), "KILL");
    let (status, _) = node.wait();
    assert!(!status.success());

    let node = TestNode::start(&data, &[]);
    let done = wait_for_state(&node, &id, "succeeded");
    assert_eq!(done["attempts"], 2, "{done:#}");
    assert_eq!(done["result"]["body"], "done\n");
    assert!(
        node.output()
            .contains("jobs interrupted by the last stop run again"),
        "{}",
        node.output()
    );
}

fn schedule_jobs(node: &TestNode) -> Vec<Value> {
    node.cli(&["queue", "ls", "--all", "--limit", "10000", "--json"])
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["source"] == "schedule")
        .cloned()
        .collect()
}

fn ticks(jobs: &[Value], function: &str) -> Vec<i64> {
    jobs.iter()
        .filter(|j| j["function"] == function)
        .map(|j| j["scheduled_for_ms"].as_i64().unwrap())
        .collect()
}

fn catch_ups(jobs: &[Value], function: &str) -> usize {
    jobs.iter()
        .filter(|j| {
            j["function"] == function
                && j["request"]["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|h| h[0] == "x-runway-missed-tick")
        })
        .count()
}

fn deploy_schedules(node: &TestNode, dir: &Path) {
    let every_second = |name: &str, missed: &str| {
        format!(
            "[[function]]\nname = \"{name}\"\ncomponent = \"{}\"\n\n\
             [[function.trigger]]\nschedule = {{ cron = \"* * * * * *\", timezone = \"Europe/Paris\", path = \"/tick\", missed = \"{missed}\" }}\n",
            wasm("nightly").display()
        )
    };
    let text = format!(
        "{}\n{}",
        every_second("catch-up", "run-once"),
        every_second("skipper", "skip")
    );
    node.deploy(&manifest(&dir.join("app"), &text));
}

#[test]
fn cron_ticks_run_once_each_across_restarts_and_missed_ticks_follow_the_policy() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let node = TestNode::start(&data, &[]);
    deploy_schedules(&node, dir.path());
    node.eventually("both schedules fired twice", || {
        let jobs = schedule_jobs(&node);
        ticks(&jobs, "catch-up").len() >= 2 && ticks(&jobs, "skipper").len() >= 2
    });
    node.eventually("a scheduled run succeeded", || {
        schedule_jobs(&node)
            .iter()
            .any(|j| j["state"] == "succeeded")
    });
    node.eventually("a scheduled run's output is in the logs", || {
        let logs = node.cli(&["logs", "catch-up"]).ok().to_owned();
        logs.contains("started by schedule tick")
    });
    let (status, _) = node.terminate();
    assert!(status.success());
    // Ticks pass while no node runs.
    std::thread::sleep(Duration::from_secs(3));
    let node = TestNode::start(&data, &[]);
    node.eventually("the schedules fire again after the restart", || {
        let jobs = schedule_jobs(&node);
        catch_ups(&jobs, "catch-up") == 1 && ticks(&jobs, "skipper").len() >= 4
    });
    let jobs = schedule_jobs(&node);
    assert_eq!(catch_ups(&jobs, "catch-up"), 1, "missed ticks run once");
    assert_eq!(catch_ups(&jobs, "skipper"), 0, "missed ticks are skipped");
    for function in ["catch-up", "skipper"] {
        let all = ticks(&jobs, function);
        let distinct: BTreeSet<i64> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len(), "a tick ran twice: {all:?}");
        assert!(
            all.iter().all(|t| t % 1000 == 0),
            "ticks fall on whole seconds: {all:?}"
        );
    }
    let listed = node.cli(&["ls"]).ok().to_owned();
    assert!(
        listed.contains("cron(* * * * * * Europe/Paris)"),
        "{listed}"
    );
}
