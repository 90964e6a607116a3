//! Environments: isolated both ways, reached by host name, removed with everything in them
//! (by hand or at their TTL); promotion deploys the very release another one serves.

use serde_json::Value;

use crate::support::*;

/// A gateway request to environment `env` by host name (`None`: the plain host).
fn call(node: &TestNode, env: Option<&str>, path: &str) -> (u16, String) {
    let port = node.gateway.rsplit(':').next().unwrap();
    let mut request = node.request(reqwest::Method::GET, path);
    if let Some(env) = env {
        request = request.header("host", format!("{env}.localhost:{port}"));
    }
    let response = request.send().unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

/// What the escalate function's `action` returned in `env` (it must have been allowed).
fn escalate(node: &TestNode, env: Option<&str>, action: &str) -> Value {
    let (status, body) = call(node, env, &format!("/escalate/{action}"));
    assert_eq!(status, 200, "{action} in {env:?}: {body}");
    let answer: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
    assert_eq!(answer["outcome"], "ok", "{action} in {env:?}: {body}");
    answer["detail"].clone()
}

fn set_secret(node: &TestNode, env: &str, value: &str) {
    runway_with_stdin(
        &["secret", "set", "PAYMENT_KEY", "--env", env],
        &node.admin,
        value,
    )
    .ok();
}

#[test]
fn environments_are_isolated_both_ways_and_removal_takes_everything() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let node = TestNode::start(&data, &[]);
    let schema = examples().join("orders/schema.sql");
    node.cli(&["sql", "apply", schema.to_str().unwrap()]).ok();
    set_secret(&node, "prod", "sk_prod_0123456789");
    let app = dir.path().join("app");
    node.deploy(&manifest(&app, &escalate_toml()));
    assert_eq!(
        escalate(&node, None, "kv-set?key=cache/who&value=prod"),
        Value::from(true)
    );

    let created = node
        .cli(&["env", "create", "dev", "--from", "prod", "--ttl", "1h"])
        .ok()
        .to_owned();
    assert!(
        created.contains("created environment dev from prod")
            && created.contains("1 function serving")
            && created.contains("0 secrets copied")
            && created.contains("http://dev.localhost:"),
        "{created}"
    );
    // The copy runs the very same release, found by host name.
    let prod_release = &node.cli(&["releases", "escalate", "--json"]).json()[0];
    let dev_release = &node
        .cli(&["releases", "escalate", "--json", "--env", "dev"])
        .json()[0];
    assert_eq!(dev_release["digest"], prod_release["digest"]);
    assert_eq!(dev_release["number"], prod_release["number"]);
    assert_eq!(dev_release["origin"], "copied from prod release 1");

    // SQL: the schema came across, the rows did not; writes stay where they were made.
    let orders = |env| escalate(&node, env, "sql?q=SELECT%20id%20FROM%20orders");
    assert!(
        !orders(None).as_array().unwrap().is_empty(),
        "{}",
        orders(None)
    );
    assert_eq!(orders(Some("dev")), Value::Array(Vec::new()));
    let extra = dir.path().join("dev.sql");
    std::fs::write(
        &extra,
        "INSERT INTO customers (id, name, card) VALUES (7, 'Dev', 'x');\
         INSERT INTO orders (id, customer_id, total) VALUES (700, 7, 1.0);",
    )
    .unwrap();
    node.cli(&["sql", "apply", extra.to_str().unwrap(), "--env", "dev"])
        .ok();
    assert_eq!(orders(Some("dev")), serde_json::json!([{ "id": 700 }]));
    assert!(
        !orders(None).to_string().contains("700"),
        "dev's row reached prod"
    );
    let operator = node
        .cli(&["sql", "query", "SELECT count(*) FROM orders WHERE id = 700"])
        .ok()
        .to_owned();
    assert!(operator.contains('0'), "{operator}");

    // Key-value: nothing copied, and each side keeps its own value.
    assert_eq!(
        escalate(&node, Some("dev"), "kv-get?key=cache/who"),
        Value::Null
    );
    escalate(&node, Some("dev"), "kv-set?key=cache/who&value=dev");
    assert_eq!(escalate(&node, None, "kv-get?key=cache/who"), "prod");
    assert_eq!(escalate(&node, Some("dev"), "kv-get?key=cache/who"), "dev");

    // Secrets: never copied unless asked, and set per environment.
    assert_eq!(
        escalate(&node, Some("dev"), "config?key=PAYMENT_KEY")["set"],
        false
    );
    set_secret(&node, "dev", "sk_dev_0123");
    assert_eq!(
        escalate(&node, Some("dev"), "config?key=PAYMENT_KEY")["length"],
        11
    );
    assert_eq!(
        escalate(&node, None, "config?key=PAYMENT_KEY")["length"],
        18
    );

    // Routes: a function deployed to one environment is not in the other.
    let hello = dir.path().join("hello");
    let hello = manifest(&hello, &function_toml("hello", "hello", "/hello", ""));
    node.cli(&[
        "deploy",
        "--no-build",
        "--env",
        "dev",
        hello.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(call(&node, Some("dev"), "/hello").0, 200);
    assert_eq!(call(&node, None, "/hello").0, 404);
    let probe = dir.path().join("probe");
    node.deploy(&manifest(
        &probe,
        &function_toml("probe", "probe", "/probe", ""),
    ));
    assert_eq!(call(&node, None, "/probe").0, 200);
    assert_eq!(call(&node, Some("dev"), "/probe").0, 404);
    let (status, body) = call(&node, Some("nope"), "/hello");
    assert_eq!(status, 404);
    assert!(body.contains("no environment named `nope`"), "{body}");

    // Every reading command takes --env.
    let listed = node.cli(&["ls", "--env", "dev", "--json"]).json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["escalate", "hello"]);
    node.cli(&["invoke", "hello", "--env", "dev"]).ok();
    assert!(
        node.cli(&["invoke", "hello"])
            .failed()
            .contains("no function named `hello`")
    );
    node.cli(&["logs", "hello", "--env", "dev"]).ok();
    let cost = node.cli(&["cost", "--env", "dev", "--json"]).json();
    assert!(
        cost["total"]["invocations"].as_u64().unwrap() >= 1,
        "{cost}"
    );

    // Tokens: a token scoped to dev acts on dev and nowhere else.
    let token = node
        .cli(&[
            "token", "create", "--role", "deployer", "--env", "dev", "--json",
        ])
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    runway_as(&["ls", "--env", "dev"], &node.admin, Some(&token)).ok();
    let refused = runway_as(&["ls"], &node.admin, Some(&token));
    assert!(
        refused
            .failed()
            .contains("scoped to environment `dev` and cannot act on `prod`"),
        "{}",
        refused.stderr
    );
    assert!(
        runway_as(&["env", "rm", "dev"], &node.admin, Some(&token))
            .failed()
            .contains("needs a token for every environment")
    );

    // API keys: one made in dev is dev's alone.
    let key = node
        .cli(&[
            "key",
            "create",
            "--function",
            "escalate",
            "--env",
            "dev",
            "--json",
        ])
        .json();
    let id = key["key"]["id"].as_str().unwrap().to_owned();
    assert!(
        node.cli(&["key", "ls", "--env", "dev", "--json"])
            .ok()
            .contains(&id)
    );
    assert!(!node.cli(&["key", "ls", "--json"]).ok().contains(&id));
    assert!(
        node.cli(&["key", "revoke", &id])
            .failed()
            .contains("no unrevoked API key")
    );

    let listed = node.cli(&["env", "ls"]).ok().to_owned();
    assert!(
        listed.contains("prod (home)") && listed.contains("dev"),
        "{listed}"
    );
    let json = node.cli(&["env", "ls", "--json"]).json();
    let dev = json
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "dev")
        .unwrap()
        .clone();
    assert_eq!(dev["source"], "prod");
    assert_eq!(dev["functions"], 2);
    assert!(dev["expires_at_ms"].as_i64().is_some());
    assert!(dev["invocations"].as_u64().unwrap() >= 1);

    // The home environment stays; dev goes with everything in it.
    assert!(
        node.cli(&["env", "rm", "prod"])
            .failed()
            .contains("home environment")
    );
    let removed = node.cli(&["env", "rm", "dev"]).ok().to_owned();
    assert!(
        removed.contains("removed environment dev with its 2 functions"),
        "{removed}"
    );
    assert_eq!(call(&node, Some("dev"), "/hello").0, 404);
    assert!(!data.join("envs/dev").exists(), "dev's data folder is gone");
    assert!(
        runway_as(&["ls", "--env", "dev"], &node.admin, Some(&token))
            .failed()
            .contains("revoked"),
        "dev's tokens are revoked"
    );
    assert!(
        node.cli(&["ls", "--env", "dev"])
            .failed()
            .contains("environment `dev` does not exist")
    );
    // prod is untouched.
    assert_eq!(escalate(&node, None, "kv-get?key=cache/who"), "prod");
    assert_eq!(call(&node, None, "/probe").0, 200);

    // A new environment of the same name starts empty.
    node.cli(&["env", "create", "dev"]).ok();
    assert_eq!(
        node.cli(&["ls", "--env", "dev", "--json"]).json(),
        Value::Array(Vec::new())
    );
    let secrets = node.cli(&["secret", "ls", "--env", "dev", "--json"]).json();
    assert_eq!(secrets["secrets"], Value::Array(Vec::new()), "{secrets}");

    // Environments survive a restart, with their functions.
    node.cli(&[
        "env",
        "create",
        "qa",
        "--from",
        "prod",
        "--copy-data",
        "--copy-secrets",
    ])
    .ok();
    assert_eq!(escalate(&node, Some("qa"), "kv-get?key=cache/who"), "prod");
    assert_eq!(
        escalate(&node, Some("qa"), "config?key=PAYMENT_KEY")["length"],
        18
    );
    assert!(!orders(Some("qa")).as_array().unwrap().is_empty());
    let (status, _) = node.terminate();
    assert!(status.success());
    let node = TestNode::start(&data, &[]);
    assert_eq!(call(&node, Some("qa"), "/probe").0, 200);
    assert_eq!(escalate(&node, Some("qa"), "kv-get?key=cache/who"), "prod");
}

#[test]
fn an_expired_environment_is_removed_with_everything_in_it() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let node = TestNode::start(&data, &[]);
    let app = dir.path().join("app");
    node.deploy(&manifest(
        &app,
        &function_toml("hello", "hello", "/hello", ""),
    ));
    node.cli(&["env", "create", "brief", "--from", "prod", "--ttl", "2s"])
        .ok();
    assert_eq!(call(&node, Some("brief"), "/hello").0, 200);
    set_secret(&node, "brief", "short-lived");
    node.eventually("the environment is removed at its TTL", || {
        call(&node, Some("brief"), "/hello").0 == 404
    });
    // It stops serving first; its rows and files go right after, and then the removal is
    // audited.
    node.eventually(
        "its data folder and rows are gone and the removal audited",
        || {
            !data.join("envs/brief").exists()
                && node
                    .cli(&["audit", "--kind", "control", "--json"])
                    .json()
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["action"] == "env.expire")
        },
    );
    let listed = node.cli(&["env", "ls", "--json"]).json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let audit = node.cli(&["audit", "--kind", "control", "--json"]).json();
    let expired = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "env.expire")
        .unwrap_or_else(|| panic!("no env.expire record: {audit}"));
    assert_eq!(expired["actor"], "system");
    assert_eq!(expired["target"], "brief");
    // Its secrets went with it: a new environment of that name has none.
    node.cli(&["env", "create", "brief"]).ok();
    let secrets = node
        .cli(&["secret", "ls", "--env", "brief", "--json"])
        .json();
    assert_eq!(secrets["secrets"], Value::Array(Vec::new()));
    assert_eq!(call(&node, None, "/hello").0, 200, "prod is untouched");
}

#[test]
fn promotion_deploys_the_same_release_under_the_target_rules() {
    let dir = tempdir();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let team = keys.join("team");
    runway(
        &["keys", "generate", team.to_str().unwrap()],
        "http://unused",
    )
    .ok();
    let node = TestNode::start(
        &dir.path().join("data"),
        &[
            "--trusted-keys",
            team.with_extension("pub").to_str().unwrap(),
        ],
    );
    node.cli(&["env", "create", "staging"]).ok();
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    let component = app.join("probe.wasm");
    std::fs::copy(wasm("probe"), &component).unwrap();
    let path = manifest(
        &app,
        "[[function]]\nname = \"probe\"\ncomponent = \"probe.wasm\"\nmemory = \"96MiB\"\n\
         env = { GREETING = \"staged\" }\n\n[[function.trigger]]\nhttp = { route = \"/probe\" }\n",
    );
    // Staging requires no signature; prod (the home environment) does.
    node.cli(&[
        "deploy",
        "--no-build",
        "--env",
        "staging",
        path.to_str().unwrap(),
    ])
    .ok();
    let refused = node.cli(&["promote", "probe", "--from", "staging", "--to", "prod"]);
    assert!(
        refused
            .failed()
            .contains("requires a signature by a trusted key"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        call(&node, None, "/probe").0,
        404,
        "a refused promotion changed nothing"
    );

    runway(
        &[
            "sign",
            component.to_str().unwrap(),
            "--key",
            team.with_extension("key").to_str().unwrap(),
        ],
        "http://unused",
    )
    .ok();
    // The signature travels with the artifact's digest: redeploying the same build to
    // staging uploads it (no new release: nothing changed).
    node.cli(&[
        "deploy",
        "--no-build",
        "--env",
        "staging",
        path.to_str().unwrap(),
    ])
    .ok();
    let promoted = node
        .cli(&[
            "promote", "probe", "--from", "staging", "--to", "prod", "--json",
        ])
        .json();
    assert_eq!(promoted["from"], "staging");
    assert_eq!(promoted["to"], "prod");
    let staged = &node
        .cli(&["releases", "probe", "--env", "staging", "--json"])
        .json()[0];
    let live = &node.cli(&["releases", "probe", "--json"]).json()[0];
    assert_eq!(live["digest"], staged["digest"], "the same artifact");
    assert_eq!(live["memory"], staged["memory"]);
    assert_eq!(live["routes"], staged["routes"]);
    assert_eq!(live["policy"], staged["policy"]);
    assert_eq!(live["origin"], "promoted from staging release 1");
    assert!(
        live["deployed_by"].as_str().unwrap().starts_with("t-"),
        "{live}"
    );
    let (status, body) = call(&node, None, "/probe");
    assert_eq!(status, 200);
    assert!(
        body.contains("GREETING=staged"),
        "the same configuration: {body}"
    );

    // Promoting again changes nothing; promoting into the source is refused.
    let again = node
        .cli(&["promote", "probe", "--from", "staging", "--to", "prod"])
        .ok()
        .to_owned();
    assert!(again.contains("unchanged"), "{again}");
    assert!(
        node.cli(&["promote", "probe", "--from", "prod", "--to", "prod"])
            .failed()
            .contains("both name `prod`")
    );
    assert!(
        node.cli(&["promote", "nothing", "--from", "staging"])
            .failed()
            .contains("no function named `nothing`")
    );
    // A staging environment that requires signatures refuses to be made from unsigned code.
    let unsigned_app = dir.path().join("unsigned");
    node.cli(&[
        "deploy",
        "--no-build",
        "--env",
        "staging",
        manifest(
            &unsigned_app,
            &function_toml("hello", "hello", "/hello", ""),
        )
        .to_str()
        .unwrap(),
    ])
    .ok();
    let strict = node.cli(&[
        "env",
        "create",
        "preprod",
        "--from",
        "staging",
        "--trusted-keys",
        team.with_extension("pub").to_str().unwrap(),
    ]);
    assert!(
        strict.failed().contains("function `hello`") && strict.stderr.contains("not signed"),
        "{}",
        strict.stderr
    );
    assert!(
        node.cli(&["ls", "--env", "preprod"])
            .failed()
            .contains("does not exist")
    );
}

#[test]
fn malformed_environment_requests_are_refused_and_change_nothing() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &[]);
    for (args, expected) in [
        (
            vec!["env", "create", "Bad_Name"],
            "invalid environment name `Bad_Name`",
        ),
        (
            vec!["env", "create", "dev", "--ttl", "soon"],
            "invalid --ttl `soon`",
        ),
        (
            vec!["env", "create", "dev", "--from", "nowhere"],
            "environment `nowhere` does not exist",
        ),
        (
            vec!["env", "rm", "nowhere"],
            "environment `nowhere` does not exist",
        ),
        (
            vec!["ls", "--env", "nowhere"],
            "environment `nowhere` does not exist",
        ),
    ] {
        let out = node.cli(&args);
        assert!(out.failed().contains(expected), "{args:?}: {}", out.stderr);
    }
    node.cli(&["env", "create", "dev"]).ok();
    assert!(
        node.cli(&["env", "create", "dev"])
            .failed()
            .contains("already exists")
    );
    let envs = node.cli(&["env", "ls", "--json"]).json();
    assert_eq!(envs.as_array().unwrap().len(), 2, "{envs}");
}

#[test]
fn a_copy_does_not_repeat_the_source_schedules_unless_asked() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &[]);
    let text = format!(
        "[[function]]\nname = \"ticker\"\ncomponent = \"{}\"\n\n\
         [[function.trigger]]\nschedule = {{ cron = \"* * * * * *\", path = \"/tick\" }}\n",
        wasm("nightly").display()
    );
    node.deploy(&manifest(&dir.path().join("app"), &text));
    node.cli(&["env", "create", "quiet", "--from", "prod"]).ok();
    node.cli(&["env", "create", "busy", "--from", "prod", "--schedules"])
        .ok();
    let jobs = |env: &str| {
        node.cli(&["queue", "ls", "--all", "--json", "--env", env])
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    // Once prod and the copy that asked for schedules have each fired twice, the quiet copy
    // has had the same ticks and fired none.
    node.eventually("prod and busy fire their schedules", || {
        jobs("prod") >= 2 && jobs("busy") >= 2
    });
    assert_eq!(jobs("quiet"), 0);
    let envs = node.cli(&["env", "ls", "--json"]).json();
    let paused = |name: &str| {
        envs.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap()["schedules_paused"]
            .clone()
    };
    assert_eq!(paused("quiet"), true);
    assert_eq!(paused("busy"), false);
    assert_eq!(paused("prod"), false);
    assert!(node.cli(&["env", "ls"]).ok().contains("schedules-paused"));
}
