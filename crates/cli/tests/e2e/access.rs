//! Who may call: control-plane tokens on the admin API, API keys and JWTs on the gateway,
//! concurrency and rate limits, and lifespan.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

fn control_audit(node: &TestNode) -> Vec<Value> {
    node.cli(&["audit", "--kind", "control", "--limit", "10000", "--json"])
        .json()
        .as_array()
        .unwrap()
        .clone()
}

/// Runs the CLI with `token`, expects it to fail, and checks stderr names every `expected`.
#[track_caller]
fn refused(node: &TestNode, args: &[&str], token: Option<&str>, expected: &[&str]) {
    let out = runway_as(args, &node.admin, token);
    let stderr = out.failed();
    for text in expected {
        assert!(stderr.contains(text), "expected `{text}` in:\n{stderr}");
    }
}

fn create_token(node: &TestNode, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    all.push("--json");
    node.cli(&all).json()["secret"].as_str().unwrap().to_owned()
}

fn invocations(node: &TestNode, function: &str) -> u64 {
    let cost = node.cli(&["cost", "--since", "1h", "--json"]).json();
    cost["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"] == function)
        .map_or(0, |f| f["invocations"].as_u64().unwrap())
}

#[test]
fn admin_tokens_are_checked_for_role_scope_expiry_and_revocation_and_every_action_is_audited() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    let hello = manifest(
        &dir.path().join("app"),
        &function_toml("hello", "hello", "/hello", ""),
    );
    let hello = hello.to_str().unwrap();

    // No token, a malformed one, an unknown one: 401, saying which.
    refused(&node, &["ls"], None, &["401", "RUNWAY_TOKEN"]);
    refused(
        &node,
        &["ls"],
        Some("rwy_not-a-token"),
        &["401 unknown_token"],
    );
    let raw = node
        .admin_request(Method::GET, "/v1/functions", None)
        .header("authorization", "Basic abc")
        .send()
        .unwrap();
    assert_eq!(raw.status(), 401);
    assert!(raw.headers().contains_key("www-authenticate"));
    // Health needs no token.
    assert_eq!(
        node.admin_request(Method::GET, "/v1/health", None)
            .send()
            .unwrap()
            .status(),
        200
    );

    // A viewer reads but cannot deploy, invoke or manage tokens.
    let viewer = create_token(&node, &["--role", "viewer", "--label", "dashboards"]);
    assert!(viewer.starts_with("rwy_"));
    runway_as(&["ls"], &node.admin, Some(&viewer)).ok();
    refused(
        &node,
        &["deploy", "--no-build", hello],
        Some(&viewer),
        &["403", "role viewer"],
    );
    refused(
        &node,
        &["token", "create", "--role", "admin"],
        Some(&viewer),
        &["403"],
    );

    // A deployer scoped to staging cannot deploy to prod; one scoped to prod can.
    node.cli(&["env", "create", "staging"]).ok();
    let staging = create_token(&node, &["--role", "deployer", "--env", "staging"]);
    refused(
        &node,
        &["deploy", "--no-build", hello],
        Some(&staging),
        &["403", "scoped to environment `staging`"],
    );
    let deployer = create_token(&node, &["--role", "deployer", "--env", "prod"]);
    runway_as(
        &["deploy", "--no-build", hello],
        &node.admin,
        Some(&deployer),
    )
    .ok();
    refused(
        &node,
        &["token", "create", "--role", "viewer"],
        Some(&deployer),
        &["403"],
    );

    // A scoped admin is refused outright in another environment.
    let staging_admin = create_token(&node, &["--role", "admin", "--env", "staging"]);
    refused(
        &node,
        &["token", "ls"],
        Some(&staging_admin),
        &["403", "staging"],
    );

    // Expiry and revocation take effect at once.
    let short = create_token(&node, &["--role", "viewer", "--ttl", "1s"]);
    runway_as(&["ls"], &node.admin, Some(&short)).ok();
    std::thread::sleep(Duration::from_millis(1_500));
    let expired = runway_as(&["ls"], &node.admin, Some(&short));
    assert!(
        expired.failed().contains("401 expired_token"),
        "{}",
        expired.stderr
    );
    let listed = node.cli(&["token", "ls", "--json"]).json();
    let viewer_id = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "dashboards")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    node.cli(&["token", "revoke", &viewer_id]).ok();
    let revoked = runway_as(&["ls"], &node.admin, Some(&viewer));
    assert!(
        revoked.failed().contains("401 revoked_token"),
        "{}",
        revoked.stderr
    );

    // Secrets are never listed, and the last admin token cannot be revoked.
    let table = node.cli(&["token", "ls"]).ok().to_owned();
    assert!(
        !table.contains(&deployer) && !table.contains(ADMIN_TOKEN),
        "{table}"
    );
    let bootstrap_id = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "bootstrap admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let last = node.cli(&["token", "revoke", &bootstrap_id]);
    assert!(
        last.failed().contains("last_admin_token"),
        "{}",
        last.stderr
    );

    // Every change and every refusal is in the control-plane audit log, with its token.
    let audit = control_audit(&node);
    let has = |action: &str, outcome: &str, actor: Option<&str>| {
        audit.iter().any(|r| {
            r["action"] == action
                && r["outcome"] == outcome
                && actor.is_none_or(|a| r["actor"] == a)
        })
    };
    assert!(has("token.bootstrap", "ok", Some("system")), "{audit:#?}");
    assert!(has("token.create", "ok", Some(&bootstrap_id)), "{audit:#?}");
    assert!(has("deploy", "ok", None), "{audit:#?}");
    assert!(has("deploy", "denied", None), "{audit:#?}");
    assert!(has("token.revoke", "ok", Some(&bootstrap_id)), "{audit:#?}");
    assert!(has("token.revoke", "refused", None), "{audit:#?}");
    assert!(
        has("GET /v1/functions", "denied", Some("anonymous")),
        "{audit:#?}"
    );
    let deploy = audit
        .iter()
        .find(|r| r["action"] == "deploy" && r["outcome"] == "ok")
        .unwrap();
    assert_eq!(deploy["target"], "hello");
    assert!(deploy["detail"].as_str().unwrap().contains("hello@1"));
    let text = node.cli(&["audit", "--kind", "control"]).ok().to_owned();
    assert!(
        text.contains("token.create") && text.contains("ACTION"),
        "{text}"
    );
}

#[test]
fn a_generated_bootstrap_token_is_printed_once_and_only_its_hash_is_stored() {
    let dir = tempdir();
    let node = TestNode::start_with(dir.path(), &[], None);
    let mut token = String::new();
    node.eventually("the bootstrap token is printed", || {
        token = node
            .output()
            .lines()
            .find_map(|l| l.strip_prefix("runway:   export RUNWAY_TOKEN="))
            .unwrap_or_default()
            .to_owned();
        !token.is_empty()
    });
    runway_as(&["ls"], &node.admin, Some(&token)).ok();
    assert!(runway(&["ls"], &node.admin).failed().contains("401"));
    let (status, _) = node.terminate();
    assert!(status.success());
    let database = std::fs::read(dir.path().join("runway.db")).unwrap();
    let wal = std::fs::read(dir.path().join("runway.db-wal")).unwrap_or_default();
    let needle = token.as_bytes();
    for bytes in [&database, &wal] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the token's secret is stored in the database"
        );
    }
    let again = TestNode::start_with(dir.path(), &[], None);
    // A round trip first, so everything printed at start-up has been read.
    runway_as(&["ls"], &again.admin, Some(&token)).ok();
    assert!(
        !again.output().contains("export RUNWAY_TOKEN="),
        "printed twice:\n{}",
        again.output()
    );
}

#[test]
fn the_admin_api_refuses_to_listen_publicly_without_authentication() {
    let dir = tempdir();
    let stderr = serve_refused(dir.path(), &["--no-auth", "--admin-listen", "0.0.0.0:0"]);
    assert!(
        stderr.contains("without authentication") && stderr.contains("0.0.0.0"),
        "{stderr}"
    );
    // On loopback it starts, and says so.
    let node = TestNode::start(&dir.path().join("open"), &["--no-auth"]);
    node.eventually("the node says authentication is off", || {
        node.output().contains("authentication is OFF")
    });
    runway_as(&["ls"], &node.admin, None).ok();
}

#[test]
fn api_keys_are_scoped_to_a_function_expire_revoke_and_rate_limit_and_refusals_cost_nothing() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    let text = format!(
        "{}\n{}",
        function_toml("hello", "hello", "/hello", "").replace(
            "route = \"/hello\" }",
            "route = \"/hello\", auth = \"api-key\" }"
        ),
        function_toml("echo", "echo", "/echo/...", "").replace(
            "route = \"/echo/...\" }",
            "route = \"/echo/...\", auth = \"api-key\" }"
        ),
    );
    node.deploy(&manifest(&dir.path().join("app"), &text));
    let key = |args: &[&str]| {
        let mut all = vec!["key", "create"];
        all.extend_from_slice(args);
        all.push("--json");
        node.cli(&all).json()
    };
    let hello_key = key(&["--function", "hello", "--label", "web"]);
    let hello_secret = hello_key["secret"].as_str().unwrap();
    assert!(hello_secret.starts_with("rwk_"));
    let echo_secret = key(&["--function", "echo"])["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let call = |secret: Option<&str>| {
        let mut request = node.request(Method::GET, "/hello");
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        request.send().unwrap()
    };

    let missing = call(None);
    assert_eq!(missing.status(), 401);
    assert!(missing.headers().contains_key("www-authenticate"));
    assert!(missing.text().unwrap().contains("needs an API key"));
    let unknown = call(Some("rwk_nope"));
    assert_eq!(unknown.status(), 401);
    let other = call(Some(&echo_secret));
    assert_eq!(other.status(), 403);
    assert!(other.text().unwrap().contains("is for function echo"));
    let ok = call(Some(hello_secret));
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().unwrap(), "Hello, World!\n");
    // Paths the gateway would read differently from a guest router are refused outright.
    // (Raw HTTP: a URL library would normalise them before sending.)
    for path in ["//hello", "/./hello", "/%68ello", "/hello/%2e%2e"] {
        use std::io::{Read, Write};
        let mut stream =
            std::net::TcpStream::connect(node.gateway.trim_start_matches("http://")).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {hello_secret}\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("not canonical"), "{path}: {answer}");
    }

    // A rate of 2 per minute: the third call within the minute gets 429 with Retry-After.
    let limited = key(&["--function", "hello", "--rate", "2/min"])["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(call(Some(&limited)).status(), 200);
    assert_eq!(call(Some(&limited)).status(), 200);
    let over = call(Some(&limited));
    assert_eq!(over.status(), 429);
    let wait: u64 = over.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");

    // Expiry and revocation.
    let short = key(&["--function", "hello", "--ttl", "1s"])["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::sleep(Duration::from_millis(1_500));
    let expired = call(Some(&short));
    assert_eq!(expired.status(), 401);
    assert!(expired.text().unwrap().contains("expired"));
    let id = hello_key["key"]["id"].as_str().unwrap();
    node.cli(&["key", "revoke", id]).ok();
    let revoked = call(Some(hello_secret));
    assert_eq!(revoked.status(), 401);
    assert!(revoked.text().unwrap().contains("revoked"));
    let listed = node.cli(&["key", "ls"]).ok().to_owned();
    assert!(
        listed.contains("revoked") && !listed.contains(hello_secret),
        "{listed}"
    );

    // Only the three admitted calls ran and were metered.
    node.eventually("three invocations are recorded", || {
        invocations(&node, "hello") == 3
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(invocations(&node, "hello"), 3);
    let refusals = |reason: &str| {
        node.metric(&format!(
            "runway_gateway_refused_total{{environment=\"prod\",function=\"hello\",reason=\"{reason}\"}}"
        ))
        .unwrap_or(0.0)
    };
    assert_eq!(refusals("unauthenticated"), 4.0);
    assert_eq!(refusals("forbidden"), 1.0);
    assert_eq!(refusals("rate_limited"), 1.0);
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn keys_dir() -> std::path::PathBuf {
    repo_root().join("crates/access/tests/keys")
}

fn sign(alg: Algorithm, kid: &str, claims: &Value) -> String {
    let read = |name: &str| std::fs::read(keys_dir().join(name)).unwrap();
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(&read("hs256.secret")),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&read("rs256.pem")).unwrap(),
        _ => EncodingKey::from_ec_pem(&read("es256.pem")).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    encode(&header, claims, &key).unwrap()
}

#[test]
fn jwt_routes_accept_only_valid_signed_tokens_and_refused_callers_never_run() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::copy(keys_dir().join("jwks.json"), app.join("jwks.json")).unwrap();
    let text = function_toml(
        "echo",
        "echo",
        "/echo/...",
        "[function.jwt]\njwks = \"jwks.json\"\nissuer = \"https://auth.example.test\"\naudience = \"orders\"\n",
    )
    .replace("route = \"/echo/...\" }", "route = \"/echo/...\", auth = \"jwt\" }");
    let deployed = node.deploy(&manifest(&app, &text));
    assert!(
        deployed["functions"][0]["release"]["config"]["jwt"]["jwks"]
            .as_str()
            .unwrap()
            .contains("\"kid\": \"rs\"")
    );
    let claims = json!({
        "iss": "https://auth.example.test",
        "aud": "orders",
        "sub": "alice",
        "exp": now_secs() + 600,
    });
    let call = |token: &str| {
        let response = node
            .request(Method::POST, "/echo/x")
            .bearer_auth(token)
            .body("hi")
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    for (alg, kid) in [
        (Algorithm::RS256, "rs"),
        (Algorithm::ES256, "es"),
        (Algorithm::HS256, "hs"),
    ] {
        assert_eq!(
            call(&sign(alg, kid, &claims)),
            (200, "hi".to_owned()),
            "{alg:?}"
        );
    }

    let mut refused = Vec::new();
    // A bad signature: the body changed after signing.
    let token = sign(Algorithm::RS256, "rs", &claims);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].chars().rev().collect();
    refused.push(("bad signature", parts.join("."), "not"));
    // alg none.
    let b64 = |v: &Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    refused.push((
        "alg none",
        format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims)
        ),
        "alg: none",
    ));
    // Expired, wrong audience, not yet valid.
    let mut expired = claims.clone();
    expired["exp"] = json!(now_secs() - 60);
    refused.push(("expired", sign(Algorithm::ES256, "es", &expired), "expired"));
    let mut audience = claims.clone();
    audience["aud"] = json!("billing");
    refused.push((
        "audience",
        sign(Algorithm::RS256, "rs", &audience),
        "audience",
    ));
    let mut early = claims.clone();
    early["nbf"] = json!(now_secs() + 600);
    refused.push(("nbf", sign(Algorithm::RS256, "rs", &early), "not valid yet"));
    // Algorithm confusion: HS256 keyed with the RSA public key, naming the RSA key.
    let public = std::fs::read(keys_dir().join("rs256.pub.pem")).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rs".into());
    let forged = encode(&header, &claims, &EncodingKey::from_secret(&public)).unwrap();
    refused.push(("confusion", forged, "algorithm confusion"));
    for (what, token, says) in &refused {
        let (status, body) = call(token);
        assert_eq!(status, 401, "{what}: {body}");
        assert!(body.contains(says), "{what}: {body}");
    }
    node.eventually("the three accepted calls are recorded", || {
        invocations(&node, "echo") == 3
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        invocations(&node, "echo"),
        3,
        "a refused caller was metered"
    );
}

#[test]
fn max_concurrency_refuses_with_429_and_retry_after_beyond_the_limit() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    node.deploy(&manifest(
        &dir.path().join("app"),
        &function_toml(
            "forever",
            "forever",
            "/forever",
            "timeout = \"3s\"\nmax_concurrency = 1",
        ),
    ));
    let first = {
        let gateway = node.gateway.clone();
        std::thread::spawn(move || {
            reqwest::blocking::Client::new()
                .get(format!("{gateway}/forever"))
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
    };
    node.eventually("the first call is running", || {
        node.metric("runway_in_flight_requests{environment=\"prod\",function=\"forever\"}")
            == Some(1.0)
    });
    let second = node.get("/forever");
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "1");
    assert!(second.text().unwrap().contains("maximum of 1"));
    assert_eq!(first.join().unwrap(), 504);
    // The slot is free again once the first call has ended.
    node.eventually("the slot is released", || {
        node.metric("runway_in_flight_requests{environment=\"prod\",function=\"forever\"}")
            == Some(0.0)
    });
    assert_eq!(node.get("/forever").status(), 504);
}

#[test]
fn an_expired_function_answers_410_is_retired_and_extend_brings_it_back() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    let app = dir.path().join("app");
    let past = function_toml("hello", "hello", "/hello", "expires = \"2020-01-01\"");
    refused(
        &node,
        &[
            "deploy",
            "--no-build",
            manifest(&app, &past).to_str().unwrap(),
        ],
        Some(ADMIN_TOKEN),
        &["in the past"],
    );

    let soon = SystemTime::now() + Duration::from_secs(3);
    let soon = humantime::format_rfc3339_seconds(soon).to_string();
    let text = format!(
        "{}\n[[function.trigger]]\nqueue = {{}}\n",
        function_toml("hello", "hello", "/hello", &format!("expires = \"{soon}\""))
    );
    let path = manifest(&app, &text);
    let out = node
        .cli(&["deploy", "--no-build", path.to_str().unwrap()])
        .ok()
        .to_owned();
    assert!(
        out.contains("warning: function `hello` expires in"),
        "{out}"
    );
    assert_eq!(node.get("/hello").status(), 200);
    let expiring = node.cli(&["ls", "--expiring", "30d"]).ok().to_owned();
    assert!(
        expiring.contains("hello") && expiring.contains("!)"),
        "{expiring}"
    );
    assert!(
        node.metric("runway_function_expiring_soon{environment=\"prod\",function=\"hello\"}")
            == Some(1.0)
    );
    assert!(
        node.cli(&["ls", "--expiring", "1s"])
            .ok()
            .contains("no function expires"),
    );

    let mut served = 1;
    node.eventually("the function answers 410", || {
        let status = node.get("/hello").status();
        served += u64::from(status == 200);
        status == 410
    });
    let gone = node.get("/hello").text().unwrap();
    assert!(
        gone.contains("expired") && gone.contains("runway extend hello"),
        "{gone}"
    );
    node.eventually("it is marked retired", || {
        control_audit(&node)
            .iter()
            .any(|r| r["action"] == "function.retire" && r["target"] == "hello")
    });
    let listed = node.cli(&["ls"]).ok().to_owned();
    assert!(listed.contains("retired"), "{listed}");
    // Nor is asynchronous work accepted for it.
    let queued = node.cli(&["invoke", "hello", "--async"]);
    assert!(
        queued.failed().contains("410 function_expired"),
        "{}",
        queued.stderr
    );
    assert_eq!(
        node.metric("runway_function_retired{environment=\"prod\",function=\"hello\"}"),
        Some(1.0)
    );
    // The gone calls were never metered: only the calls served before expiry.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(invocations(&node, "hello"), served);

    // Extending needs the deployer role, and is audited.
    let viewer = create_token(&node, &["--role", "viewer"]);
    refused(
        &node,
        &["extend", "hello", "--until", "2099-12-31"],
        Some(&viewer),
        &["403"],
    );
    let past = node.cli(&["extend", "hello", "--until", "2001-01-01"]);
    assert!(past.failed().contains("in the past"), "{}", past.stderr);
    let extended = node
        .cli(&["extend", "hello", "--until", "2099-12-31"])
        .ok()
        .to_owned();
    assert!(
        extended.contains("hello now expires 2099-12-31 (release 2)"),
        "{extended}"
    );
    assert_eq!(node.get("/hello").status(), 200);
    let audit = control_audit(&node);
    let extend = audit
        .iter()
        .find(|r| r["action"] == "function.extend" && r["outcome"] == "ok")
        .unwrap();
    assert_eq!(extend["target"], "hello");
    assert!(
        extend["detail"].as_str().unwrap().contains("-> 2099-12-31"),
        "{extend}"
    );
    assert!(
        audit
            .iter()
            .any(|r| r["action"] == "function.extend" && r["outcome"] == "denied")
    );
}

#[test]
fn a_node_whose_admin_tokens_all_expired_recovers_with_runway_admin_token() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    let short_admin = create_token(&node, &["--role", "admin", "--ttl", "1s"]);
    let listed = node.cli(&["token", "ls", "--json"]).json();
    let bootstrap = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "bootstrap admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    runway_as(
        &["token", "revoke", &bootstrap],
        &node.admin,
        Some(&short_admin),
    )
    .ok();
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        runway_as(&["token", "ls"], &node.admin, Some(&short_admin))
            .failed()
            .contains("401")
    );
    let (status, _) = node.terminate();
    assert!(status.success());

    // Without RUNWAY_ADMIN_TOKEN the node says how to recover; with it, it stores one.
    let locked = TestNode::start_with(dir.path(), &[], None);
    locked.eventually("the node reports the lock-out", || {
        locked
            .output()
            .contains("no unscoped admin token is usable")
    });
    drop(locked);
    let recovery = "rwy_recovery-admin-token-0123456789abcdef";
    let node = TestNode::start_with(dir.path(), &[], Some(recovery));
    let tokens = runway_as(&["token", "ls", "--json"], &node.admin, Some(recovery)).json();
    assert!(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["label"] == "recovery admin")
    );
    let audit = runway_as(
        &["audit", "--kind", "control", "--json"],
        &node.admin,
        Some(recovery),
    )
    .json();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["action"] == "token.recover" && r["actor"] == "system"),
        "{audit:#}"
    );
}

#[test]
fn a_flood_of_unauthenticated_calls_is_counted_in_full_but_recorded_only_up_to_a_rate() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    let flood = 700;
    let mut answered = Vec::new();
    for _ in 0..flood {
        let response = node
            .admin_request(Method::GET, "/v1/functions", None)
            .send()
            .unwrap();
        answered.push(response.status().as_u16());
    }
    // One client, no credential: refused in full 120 times a minute, then answered 429.
    // (The budget refills at 2 a second while the flood runs.)
    assert!(answered[..120].iter().all(|&s| s == 401), "{answered:?}");
    let throttled = answered.iter().filter(|&&s| s == 429).count();
    assert!(throttled >= 550, "{throttled} answered 429: {answered:?}");
    let recorded = control_audit(&node)
        .iter()
        .filter(|r| r["actor"] == "anonymous" && r["outcome"] == "denied")
        .count() as f64;
    let unrecorded = node
        .metric("runway_audit_refusals_unrecorded_total")
        .unwrap();
    assert_eq!(
        node.metric("runway_admin_refused_total{status=\"401\"}")
            .unwrap()
            + node
                .metric("runway_admin_refused_total{status=\"429\"}")
                .unwrap(),
        f64::from(flood)
    );
    assert!(unrecorded > 0.0, "the flood was not limited");
    assert_eq!(
        recorded + unrecorded,
        f64::from(flood),
        "every refusal is recorded or counted"
    );
}

#[test]
fn refusals_of_a_known_token_are_bounded_in_size_and_number_and_throttled_per_client() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    let created = node
        .cli(&["token", "create", "--role", "viewer", "--json"])
        .json();
    let (id, secret) = (
        created["token"]["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    );
    node.cli(&["token", "revoke", &id]).ok();
    let long = format!("/v1/functions/{}", "x".repeat(60 * 1024));
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..300 {
        let status = node
            .admin_request(Method::GET, &long, Some(&secret))
            .send()
            .unwrap()
            .status()
            .as_u16();
        *statuses.entry(status).or_insert(0) += 1;
    }
    // 120 a minute, refilled at 2 a second while the calls run.
    let refused = statuses[&401];
    assert!((120..=130).contains(&refused), "{statuses:?}");
    assert_eq!(statuses[&429], 300 - refused, "{statuses:?}");

    let records: Vec<Value> = control_audit(&node)
        .into_iter()
        .filter(|r| r["actor"] == id.as_str())
        .collect();
    // 60 a minute, refilled at one a second while the calls run (a slow machine takes more
    // than a second over them), as the refusals above are.
    assert!(
        (60..=65).contains(&records.len()),
        "one token's refusals are recorded up to 60 a minute: {}",
        records.len()
    );
    for record in &records {
        let target = record["target"].as_str().unwrap();
        assert!(
            target.len() <= 260,
            "a {} byte target was stored",
            target.len()
        );
        assert!(record["detail"].as_str().unwrap().contains("127.0.0.1"));
    }

    // The same client with a good token is not throttled, nor is another client.
    assert_eq!(node.admin_get("/v1/functions").status(), 200);
    let elsewhere = reqwest::blocking::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let status = elsewhere
        .get(format!("{}/v1/functions", node.admin))
        .bearer_auth(&secret)
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 401);
}
