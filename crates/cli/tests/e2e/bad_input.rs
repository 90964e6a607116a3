//! Bad manifests, bad artifacts and bad requests: a precise error, and nothing changes.

use std::path::Path;

use crate::support::*;

fn assert_nothing_deployed(node: &TestNode) {
    let ls = node.cli(&["ls", "--json"]).json();
    assert_eq!(ls, serde_json::json!([]), "nothing may be deployed");
}

#[test]
fn malformed_manifests_are_refused_naming_file_key_and_value() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &[]);
    let hello = wasm("hello");
    let component = hello.display();
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown-key",
            format!(
                "[[function]]\nname = \"a\"\ncomponent = \"{component}\"\nmemroy = \"128MiB\"\n"
            ),
            vec!["memroy", "unknown field"],
        ),
        (
            "bad-size",
            format!("[[function]]\nname = \"a\"\ncomponent = \"{component}\"\nmemory = \"12XB\"\n"),
            vec!["memory", "12XB"],
        ),
        (
            "ambiguous-size",
            format!(
                "[[function]]\nname = \"a\"\ncomponent = \"{component}\"\nmemory = \"128MB\"\n"
            ),
            vec!["128MB", "128MiB"],
        ),
        (
            "bad-duration",
            format!(
                "[[function]]\nname = \"a\"\ncomponent = \"{component}\"\ntimeout = \"3 parsecs\"\n"
            ),
            vec!["timeout", "3 parsecs"],
        ),
        (
            "too-much-memory",
            format!("[[function]]\nname = \"a\"\ncomponent = \"{component}\"\nmemory = \"8GiB\"\n"),
            vec!["memory = \"8GiB\"", "outside the allowed range"],
        ),
        (
            "bad-route",
            format!(
                "[[function]]\nname = \"a\"\ncomponent = \"{component}\"\n[[function.trigger]]\nhttp = {{ route = \"hello\" }}\n"
            ),
            vec!["route", "must start with `/`"],
        ),
        (
            "bad-name",
            format!("[[function]]\nname = \"Hello World\"\ncomponent = \"{component}\"\n"),
            vec!["name", "Hello World"],
        ),
        (
            "duplicate",
            format!(
                "[[function]]\nname = \"a\"\ncomponent = \"{component}\"\n[[function]]\nname = \"a\"\ncomponent = \"{component}\"\n"
            ),
            vec!["function `a` is defined twice"],
        ),
        (
            "conflict",
            format!(
                "[[function]]\nname = \"a\"\ncomponent = \"{component}\"\n[[function.trigger]]\nhttp = {{ route = \"/x\" }}\n[[function]]\nname = \"b\"\ncomponent = \"{component}\"\n[[function.trigger]]\nhttp = {{ route = \"/x\" }}\n"
            ),
            vec!["route `/x` of function `a` conflicts with route `/x` of function `b`"],
        ),
        (
            "not-toml",
            "[[function]\nname = ".to_owned(),
            vec!["runway.toml"],
        ),
    ];
    for (case, text, expected) in cases {
        let path = manifest(&dir.path().join(case), &text);
        let out = node.cli(&["deploy", "--no-build", path.to_str().unwrap()]);
        let stderr = out.failed();
        assert!(
            stderr.contains(&path.display().to_string()),
            "{case}: the error names the file:\n{stderr}"
        );
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{case}: expected `{needle}` in:\n{stderr}"
            );
        }
    }
    assert_nothing_deployed(&node);
}

fn deploy_file(node: &TestNode, dir: &Path, name: &str, bytes: &[u8]) -> String {
    let file = dir.join(format!("{name}.wasm"));
    std::fs::write(&file, bytes).unwrap();
    let path = manifest(
        &dir.join(name),
        &format!(
            "[[function]]\nname = \"{name}\"\ncomponent = \"{}\"\n",
            file.display()
        ),
    );
    node.cli(&["deploy", "--no-build", path.to_str().unwrap()])
        .failed()
        .to_owned()
}

#[test]
fn invalid_artifacts_are_refused_and_nothing_is_stored() {
    let dir = tempdir();
    let data = dir.path().join("data");
    let node = TestNode::start(&data, &[]);
    let core_module = b"\0asm\x01\0\0\0";
    let err = deploy_file(&node, dir.path(), "core", core_module);
    assert!(
        err.contains("is a core WebAssembly module, not a component"),
        "{err}"
    );
    let err = deploy_file(&node, dir.path(), "garbage", b"#!/bin/sh\necho not wasm\n");
    assert!(err.contains("is not WebAssembly"), "{err}");
    let command = std::fs::read(wasm("cli-command")).unwrap();
    let err = deploy_file(&node, dir.path(), "command", &command);
    assert!(
        err.contains("does not export `wasi:http/incoming-handler@0.2.x`"),
        "{err}"
    );
    assert!(
        err.contains("wasi:cli/run"),
        "the error lists what it does export: {err}"
    );
    let mut truncated = std::fs::read(wasm("hello")).unwrap();
    truncated.truncate(truncated.len() / 2);
    let err = deploy_file(&node, dir.path(), "truncated", &truncated);
    assert!(err.contains("does not compile"), "{err}");

    assert_nothing_deployed(&node);
    let stored = std::fs::read_dir(data.join("artifacts")).unwrap().count();
    assert_eq!(stored, 0, "refused artifacts are never stored");
}

#[test]
fn an_artifact_over_the_size_limit_is_refused() {
    build_examples();
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &["--max-artifact-size", "16KiB"]);
    let out = node.cli(&[
        "deploy",
        "--no-build",
        examples().join("hello").to_str().unwrap(),
    ]);
    let err = out.failed();
    assert!(
        err.contains("over this node's limit of 16384 bytes"),
        "{err}"
    );
    assert_nothing_deployed(&node);
}

#[test]
fn a_route_taken_by_another_deployed_function_is_refused() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &[]);
    node.deploy_example("hello");
    let path = manifest(
        &dir.path().join("thief"),
        &function_toml("thief", "echo", "/hello", ""),
    );
    let out = node.cli(&["deploy", "--no-build", path.to_str().unwrap()]);
    let err = out.failed();
    assert!(
        err.contains("conflicts with route `/hello` of function `hello`"),
        "{err}"
    );
    assert!(err.contains("nothing changed"), "{err}");
    assert_eq!(node.get("/hello").text().unwrap(), "Hello, World!\n");
    assert_eq!(
        node.cli(&["ls", "--json"]).json().as_array().unwrap().len(),
        1
    );
}

#[test]
fn a_missing_component_file_or_failing_build_is_reported() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &[]);
    let path = manifest(
        &dir.path().join("missing"),
        "[[function]]\nname = \"a\"\ncomponent = \"nope.wasm\"\n",
    );
    let err = node
        .cli(&["deploy", path.to_str().unwrap()])
        .failed()
        .to_owned();
    assert!(
        err.contains("cannot read the component of function `a`") && err.contains("nope.wasm"),
        "{err}"
    );
    let path = manifest(
        &dir.path().join("build"),
        "[[function]]\nname = \"a\"\ncomponent = \"a.wasm\"\nbuild = \"exit 7\"\n",
    );
    let err = node
        .cli(&["deploy", path.to_str().unwrap()])
        .failed()
        .to_owned();
    assert!(
        err.contains("the build command of function `a` failed")
            && err.contains("nothing was deployed"),
        "{err}"
    );
    assert_nothing_deployed(&node);
}

#[test]
fn admin_api_errors_are_json_with_stable_codes_and_the_cli_exits_non_zero() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    let missing = node.admin_get("/v1/functions/nope");
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().unwrap();
    assert_eq!(body["error"]["code"], "no_such_function");

    let digest = "0".repeat(64);
    let mismatch = node
        .admin_request(
            reqwest::Method::PUT,
            &format!("/v1/artifacts/{digest}"),
            Some(ADMIN_TOKEN),
        )
        .body("not the bytes")
        .send()
        .unwrap();
    assert_eq!(mismatch.status(), 400);
    let body: serde_json::Value = mismatch.json().unwrap();
    assert_eq!(body["error"]["code"], "digest_mismatch");

    let invoke = node.cli(&["invoke", "nope"]);
    assert!(
        invoke.failed().contains("no function named `nope`"),
        "{}",
        invoke.stderr
    );
    let unreachable = runway(&["ls"], "http://127.0.0.1:9");
    assert!(
        unreachable
            .failed()
            .contains("cannot reach the Runway admin API at http://127.0.0.1:9"),
        "{}",
        unreachable.stderr
    );
}

/// Sends raw bytes to `addr` and returns the status line of the answer.
fn raw_status_line(addr: &str, request: &[u8]) -> String {
    use std::io::{BufRead, Write};
    let mut stream = std::net::TcpStream::connect(addr.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .unwrap();
    line
}

#[test]
fn caller_mistakes_are_answered_as_the_callers_before_or_while_a_function_runs() {
    let dir = tempdir();
    let node = TestNode::start(
        dir.path(),
        &["--max-request-body", "1MiB", "--max-artifact-size", "1MiB"],
    );
    node.deploy_example("echo");

    // A Host that is not visible ASCII: 400, before any function runs.
    let line = raw_status_line(
        &node.gateway,
        b"GET /echo/x HTTP/1.1\r\nhost: caf\xe9.localhost\r\n\r\n",
    );
    assert!(line.starts_with("HTTP/1.1 400"), "{line}");

    // A chunked body past the limit: 413 before the function runs, counted as the caller's
    // refusal and never billed.
    let status = send_chunked(&node.gateway, "/echo/y", 2 << 20);
    assert!(
        status.starts_with("HTTP/1.1 413"),
        "a chunked body past the limit: {status}"
    );
    assert_eq!(
        node.metric(
            "runway_gateway_refused_total{environment=\"prod\",function=\"echo\",reason=\"body_too_large\"}"
        ),
        Some(1.0)
    );
    // Within the limit, a chunked body reaches the function whole.
    let within = node
        .request(reqwest::Method::POST, "/echo/z")
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(vec![
            b'a';
            4096
        ])))
        .send()
        .unwrap();
    assert_eq!(within.status(), 200);
    assert_eq!(within.bytes().unwrap().len(), 4096);

    // An artifact upload declaring more than the limit: 413 from the headers alone.
    let digest = "0".repeat(64);
    let line = raw_status_line(
        &node.admin,
        format!(
            "PUT /v1/artifacts/{digest} HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-length: {}\r\n\r\n",
            2 << 20
        )
        .as_bytes(),
    );
    assert!(line.starts_with("HTTP/1.1 413"), "{line}");

    // A secret too short to be redacted safely.
    let short = runway_with_stdin(&["secret", "set", "PIN"], &node.admin, "1234");
    assert!(
        short.failed().contains("at least 8 bytes"),
        "{}",
        short.stderr
    );
    let listed = node.cli(&["secret", "ls", "--json"]).json();
    assert_eq!(listed["secrets"], serde_json::json!([]), "{listed}");
}

#[test]
fn no_entry_point_lets_a_caller_forge_platform_headers_or_pass_unchecked_credentials() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    let app = dir.path().join("app");
    manifest(
        &app,
        &function_toml("escalate", "escalate", "/escalate/...", ""),
    );
    node.deploy(&app);
    let received = |body: serde_json::Value| -> Vec<String> {
        let answer: serde_json::Value = serde_json::from_str(body.as_str().unwrap()).unwrap();
        answer["detail"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };

    // The admin API's invoke.
    let invoked: serde_json::Value = node
        .admin_request(
            reqwest::Method::POST,
            "/v1/functions/escalate/invoke",
            Some(ADMIN_TOKEN),
        )
        .json(&serde_json::json!({
            "path": "/escalate/headers",
            "headers": {
                "x-runway-api-key-id": "k-forged",
                "authorization": "Bearer forged.jwt.token",
                "cookie": "session=forged",
                "x-custom": "kept"
            }
        }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let names = received(invoked["body"].clone());
    assert!(names.contains(&"x-custom".to_owned()), "{names:?}");
    for forbidden in ["x-runway-api-key-id", "authorization", "cookie"] {
        assert!(
            !names.contains(&forbidden.to_owned()),
            "{forbidden} reached the function: {names:?}"
        );
    }

    // The gateway: platform headers are removed, a public route's own credentials pass.
    let response = node
        .request(reqwest::Method::GET, "/escalate/headers")
        .header("x-runway-api-key-id", "k-forged")
        .header("authorization", "Bearer the-functions-own-scheme")
        .send()
        .unwrap();
    let names = received(serde_json::Value::String(response.text().unwrap()));
    assert!(
        !names.contains(&"x-runway-api-key-id".to_owned()),
        "{names:?}"
    );
    assert!(names.contains(&"authorization".to_owned()), "{names:?}");
}
