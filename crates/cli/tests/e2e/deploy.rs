//! Deploying functions and serving them.

use std::io::Read;

use crate::support::*;

#[test]
fn deploy_runs_the_build_and_serves_the_function_over_http() {
    build_examples();
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    let out = node.cli(&["deploy", examples().join("hello").to_str().unwrap()]);
    let stdout = out.ok();
    assert!(stdout.contains("hello deployed release 1"), "{stdout}");
    assert!(
        out.stderr.contains("building hello: cargo build"),
        "{}",
        out.stderr
    );

    let response = node.get("/hello");
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-runway-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(response.text().unwrap(), "Hello, World!\n");

    let ls = node.cli(&["ls", "--json"]).json();
    let hello = &ls[0];
    assert_eq!(hello["name"], "hello");
    assert_eq!(hello["memory"], "128MiB");
    assert_eq!(hello["timeout"], "3s");
    assert_eq!(hello["release"], 1);
    assert_eq!(hello["routes"][0], "GET,HEAD /hello");
    let table = node.cli(&["ls"]);
    let table = table.ok();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()[..5]
            == ["hello", "128MiB", "7%", "3s", "1"],
        "{table}"
    );
}

#[test]
fn unchanged_deploy_creates_nothing_and_a_change_creates_a_new_release() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &[]);
    let app = dir.path().join("app");
    manifest(
        &app,
        &function_toml("hi", "hello", "/hi", "memory = \"128MiB\""),
    );
    let first = node.deploy(&app);
    assert_eq!(first["functions"][0]["created"], true);
    assert_eq!(first["functions"][0]["release"]["number"], 1);
    let again = node.deploy(&app);
    assert_eq!(again["functions"][0]["created"], false);
    assert_eq!(again["functions"][0]["release"]["number"], 1);
    let human = node.cli(&["deploy", "--no-build", app.to_str().unwrap()]);
    assert!(
        human.ok().contains("hi unchanged, release 1"),
        "{}",
        human.stdout
    );

    manifest(
        &app,
        &function_toml("hi", "hello", "/hi", "memory = \"256MiB\""),
    );
    let changed = node.deploy(&app);
    assert_eq!(changed["functions"][0]["release"]["number"], 2);
    let releases = node.cli(&["releases", "hi", "--json"]).json();
    assert_eq!(releases.as_array().unwrap().len(), 2);
    assert_eq!(releases[0]["number"], 2);
    assert_eq!(releases[0]["current"], true);
    assert_eq!(releases[0]["memory"], "256MiB");
    assert_eq!(releases[1]["current"], false);
    let table = node.cli(&["releases", "hi"]);
    assert!(table.ok().contains("2 *"), "{}", table.stdout);
    assert_eq!(node.get("/hi").status(), 200);
}

#[test]
fn unknown_paths_get_404_and_wrong_methods_get_405() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    node.deploy_example("hello");
    let missing = node.get("/nothing-here");
    assert_eq!(missing.status(), 404);
    assert!(
        missing
            .text()
            .unwrap()
            .contains("no function is routed at /nothing-here")
    );
    let wrong = node
        .request(reqwest::Method::POST, "/hello")
        .send()
        .unwrap();
    assert_eq!(wrong.status(), 405);
    assert_eq!(wrong.headers()["allow"], "GET, HEAD");
}

#[test]
fn components_from_wstd_and_spin_sdk_run_and_the_sandbox_grants_nothing() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    node.deploy_example("hello-wstd");
    node.deploy_example("hello-spin");
    node.deploy_example("probe");
    assert_eq!(
        node.get("/hello-wstd").text().unwrap(),
        "Hello from wstd!\n"
    );
    assert_eq!(
        node.get("/hello-spin").text().unwrap(),
        "Hello from spin-sdk!\n"
    );

    let probe = node.get("/probe").text().unwrap();
    assert!(
        probe.contains("env: GREETING=hello from runway.toml\n"),
        "only configured variables: {probe}"
    );
    assert!(probe.contains("fs: denied"), "no host directories: {probe}");
    assert!(probe.contains("tcp: denied"), "no sockets: {probe}");
    assert!(probe.contains("http: denied"), "no outbound HTTP: {probe}");
}

#[test]
fn request_bodies_stream_through_and_guest_output_reaches_the_logs() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    node.deploy_example("echo");
    let body: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let response = node
        .request(reqwest::Method::POST, "/echo/big")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-echo-method"], "POST");
    assert_eq!(response.headers()["x-echo-path"], "/echo/big");
    assert!(response.bytes().unwrap() == body, "echoed body differs");

    node.eventually("the echo log line is stored", || {
        let logs = node.cli(&["logs", "echo"]);
        logs.ok().contains("echo: POST /echo/big 5242880 bytes")
            && logs.stdout.contains("REPORT RequestId: ")
    });
}

#[test]
fn requests_in_flight_finish_on_their_release_while_a_deploy_switches_the_route() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &[]);
    let app = dir.path().join("app");
    manifest(
        &app,
        &function_toml("flip", "stream", "/flip", "timeout = \"60s\""),
    );
    node.deploy(&app);

    let mut streaming = node.get("/flip?mib=30");
    assert_eq!(streaming.status(), 200);
    let mut first = [0u8; 1024];
    streaming.read_exact(&mut first).unwrap();

    manifest(&app, &function_toml("flip", "hello", "/flip", ""));
    let switched = node.deploy(&app);
    assert_eq!(switched["functions"][0]["release"]["number"], 2);
    assert_eq!(
        node.get("/flip").text().unwrap(),
        "Hello, World!\n",
        "new requests see release 2"
    );

    let mut rest = Vec::new();
    streaming.read_to_end(&mut rest).unwrap();
    assert_eq!(
        rest.len() + first.len(),
        30 << 20,
        "the in-flight request finished on release 1"
    );

    node.eventually("both records are stored", || {
        let logs = node.cli(&["logs", "flip"]);
        logs.ok().matches("REPORT RequestId").count() == 2
    });
}

#[test]
fn javascript_and_python_components_deploy_and_run() {
    let build = examples().join("polyglot/build");
    if !build.join("hello-js.wasm").exists() || !build.join("hello-py.wasm").exists() {
        assert!(
            std::env::var_os("RUNWAY_REQUIRE_POLYGLOT").is_none(),
            "RUNWAY_REQUIRE_POLYGLOT is set but examples/polyglot/build.sh has not produced the components"
        );
        eprintln!(
            "skipping: run examples/polyglot/build.sh (needs node and python3) to test JavaScript and Python components"
        );
        return;
    }
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    node.deploy(&examples().join("polyglot/hello-js"));
    node.deploy(&examples().join("polyglot/hello-py"));
    assert_eq!(
        node.get("/hello-js").text().unwrap(),
        "Hello from JavaScript!"
    );
    assert_eq!(node.get("/hello-py").text().unwrap(), "Hello from Python!");
}

#[test]
fn the_most_specific_route_wins_exact_then_longest_prefix() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &[]);
    let app = dir.path().join("app");
    let text = [
        function_toml("exact", "hello", "/api/hello", ""),
        function_toml("api", "echo", "/api/...", ""),
        function_toml("everything", "probe", "/...", ""),
    ]
    .join("\n");
    manifest(&app, &text);
    node.deploy(&app);
    assert_eq!(node.get("/api/hello").text().unwrap(), "Hello, World!\n");
    let api = node.get("/api/orders/7");
    assert_eq!(api.headers()["x-echo-path"], "/api/orders/7");
    assert_eq!(
        node.get("/api").headers()["x-echo-path"],
        "/api",
        "a prefix matches its base path"
    );
    assert!(
        node.get("/apix").text().unwrap().starts_with("env:"),
        "/apix is not under /api"
    );
    assert!(node.get("/").text().unwrap().starts_with("env:"));
}
