//! Memory and timeout limits, hostile functions, streaming and body limits.

use std::io::{BufRead, BufReader, Read, Write};

use crate::support::*;

#[test]
fn a_runaway_function_times_out_with_504_while_other_functions_keep_answering() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &[]);
    manifest(
        &dir.path().join("spin"),
        &function_toml("spin", "forever", "/spin", "timeout = \"4s\""),
    );
    node.deploy(&dir.path().join("spin"));
    node.deploy_example("hello");

    let spinners: Vec<_> = (0..3)
        .map(|_| {
            let url = format!("{}/spin", node.gateway);
            std::thread::spawn(move || reqwest::blocking::get(url).unwrap())
        })
        .collect();
    let in_flight = "runway_in_flight_requests{environment=\"prod\",function=\"spin\"}";
    node.eventually("three spinning invocations are in flight", || {
        node.metric(in_flight) == Some(3.0)
    });
    // More busy guests than worker threads: hello still answers because guests yield.
    let hello = node.get("/hello");
    assert_eq!(hello.status(), 200);
    assert_eq!(
        node.metric(in_flight),
        Some(3.0),
        "hello answered while all three still spun"
    );

    for spinner in spinners {
        let response = spinner.join().unwrap();
        assert_eq!(response.status(), 504);
        assert!(
            response
                .text()
                .unwrap()
                .contains("function spin failed: timeout")
        );
    }
    node.eventually("three timeouts are counted", || {
        node.metric("faas_timeouts_total{environment=\"prod\",function=\"spin\"}") == Some(3.0)
    });
}

#[test]
fn a_memory_bomb_is_stopped_at_its_memory_size() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    node.deploy_example("hog");
    let response = node.get("/hog");
    assert_eq!(response.status(), 500);

    let invoke = node.cli(&["invoke", "hog", "--json"]);
    assert_eq!(invoke.status.code(), Some(3), "a failed invocation exits 3");
    let result: serde_json::Value = serde_json::from_str(&invoke.stdout).unwrap();
    let record = &result["record"];
    assert_eq!(record["status"], "out_of_memory");
    assert_eq!(record["http_status"], 500);
    let max = record["max_memory_bytes"].as_u64().unwrap();
    assert!(
        max <= 32 << 20 && max > 16 << 20,
        "high-water mark {max} should sit just under the 32MiB limit"
    );
    assert!(
        record["error"].as_str().unwrap().contains("refused"),
        "{record}"
    );
}

#[test]
fn a_trapping_function_gets_500_and_its_panic_reaches_the_logs() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    node.deploy_example("echo");
    let invoke = node.cli(&["invoke", "echo", "--path", "/echo/panic", "--json"]);
    assert_eq!(invoke.status.code(), Some(3));
    let result: serde_json::Value = serde_json::from_str(&invoke.stdout).unwrap();
    assert_eq!(result["status"], 500);
    assert_eq!(result["record"]["status"], "error");
    node.eventually("the panic message is in the logs", || {
        let logs = node.cli(&["logs", "echo"]);
        let text = logs.ok();
        text.contains("asked to panic by /echo/panic") && text.contains("ERROR RequestId:")
    });
}

fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_100_mib_response_streams_without_the_node_holding_it() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &[]);
    node.deploy_example("stream");
    assert_eq!(node.get("/stream?mib=1").bytes().unwrap().len(), 1 << 20);
    // Reset the peak-RSS counter so the deploy's compilation does not count.
    std::fs::write(format!("/proc/{}/clear_refs", node.pid()), "5").unwrap();
    let before = memory_kib(node.pid(), "VmRSS:");

    let mut response = node.get("/stream?mib=100");
    assert_eq!(response.status(), 200);
    let mut total = 0usize;
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = response.read(&mut buffer).unwrap();
        if n == 0 {
            break;
        }
        assert!(buffer[..n].iter().all(|&b| b == b'r'));
        total += n;
    }
    assert_eq!(total, 100 << 20);
    let peak = memory_kib(node.pid(), "VmHWM:");
    assert!(
        peak < before + 48 * 1024,
        "node peak RSS {peak} KiB grew by over 48 MiB from {before} KiB while streaming 100 MiB"
    );
}

#[test]
fn an_oversized_request_body_is_refused_before_the_function_runs() {
    let dir = tempdir();
    let node = TestNode::start(dir.path(), &["--max-request-body", "1MiB"]);
    node.deploy_example("echo");
    // Declare a 2 MiB body but send none of it: the refusal must come from the headers alone.
    let addr = node.gateway.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /echo/x HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n\r\n",
        2 << 20
    )
    .unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let status = send_chunked(&node.gateway, "/echo/y", 2 << 20);
    assert!(
        status.starts_with("HTTP/1.1 413"),
        "a chunked body past the limit: {status}"
    );
    assert_eq!(node.get("/echo/ok").status(), 200);
    node.eventually(
        "only the requests that reached the function are metered",
        || {
            node.metric(
                "faas_invocations_total{environment=\"prod\",function=\"echo\",status=\"ok\"}",
            ) == Some(1.0)
        },
    );
    let total: f64 = ["ok", "error", "timeout", "out_of_memory"]
        .iter()
        .map(|s| {
            node.metric(&format!(
                "faas_invocations_total{{environment=\"prod\",function=\"echo\",status=\"{s}\"}}"
            ))
            .unwrap()
        })
        .sum();
    assert_eq!(total, 1.0, "the refused bodies never ran");
}

#[test]
fn a_caller_that_goes_away_is_recorded_billed_and_its_guest_stopped() {
    let dir = tempdir();
    let node = TestNode::start(&dir.path().join("data"), &[]);
    manifest(
        &dir.path().join("spin"),
        &function_toml("spin", "forever", "/spin", "timeout = \"60s\""),
    );
    node.deploy(&dir.path().join("spin"));
    node.deploy_example("stream");
    let addr = node.gateway.trim_start_matches("http://").to_owned();

    // Before the response head: the request is sent, then the connection is dropped.
    let in_flight = "runway_in_flight_requests{environment=\"prod\",function=\"spin\"}";
    for _ in 0..3 {
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        write!(stream, "GET /spin HTTP/1.1\r\nhost: test\r\n\r\n").unwrap();
        node.eventually("the guest is running", || {
            node.metric(in_flight) == Some(1.0)
        });
        drop(stream);
        // Stopped, not left spinning until its 60 s timeout.
        node.eventually("the abandoned guest is stopped", || {
            node.metric(in_flight) == Some(0.0)
        });
    }
    let gone =
        "faas_invocations_total{environment=\"prod\",function=\"spin\",status=\"client_gone\"}";
    node.eventually("three abandoned calls are recorded", || {
        node.metric(gone) == Some(3.0)
    });
    let cost = node.cli(&["cost", "--json"]).json();
    let spin = &cost["functions"][0];
    assert_eq!(spin["function"], "spin", "{cost}");
    assert_eq!(spin["invocations"], 3, "{cost}");
    assert_eq!(
        spin["failures"], 0,
        "a caller going away is not the function's failure"
    );
    assert!(spin["cost"].as_u64().unwrap() > 0, "{cost}");
    let logs = node.cli(&["logs", "spin"]).ok().to_owned();
    assert!(logs.contains("the caller went away"), "{logs}");

    // In the middle of a streamed body.
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /stream?mib=1000 HTTP/1.1\r\nhost: test\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 4096];
    let mut read = 0;
    while read < first.len() {
        read += stream.read(&mut first[read..]).unwrap();
    }
    assert!(first.starts_with(b"HTTP/1.1 200"));
    drop(stream);
    let gone =
        "faas_invocations_total{environment=\"prod\",function=\"stream\",status=\"client_gone\"}";
    node.eventually("the abandoned stream is recorded", || {
        node.metric(gone) == Some(1.0)
    });
}
