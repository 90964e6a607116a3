//! Starting the real `runway` binary on free loopback ports, and talking to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The examples folder.
pub fn examples() -> PathBuf {
    repo_root().join("examples")
}

/// Builds every example component once per test run.
pub fn build_examples() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        // The same step `runway deploy` takes before a build: a machine whose rustup does
        // not install a toolchain file's targets by itself gets wasm32-wasip2 here.
        runway_cli::toolchain::ensure_targets(&examples(), &["wasm32-wasip2".to_owned()])
            .unwrap_or_else(|err| panic!("{err}"));
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .current_dir(examples())
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("running cargo to build the examples");
        assert!(status.success(), "building the example components failed");
    });
}

/// Path of a built example component.
pub fn wasm(file: &str) -> PathBuf {
    build_examples();
    examples()
        .join("target/wasm32-wasip2/release")
        .join(format!("{file}.wasm"))
}

/// Writes a runway.toml into `dir` and returns its path.
pub fn manifest(dir: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("runway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A manifest with one function running an example component.
pub fn function_toml(name: &str, component: &str, route: &str, extra: &str) -> String {
    format!(
        "[[function]]\nname = \"{name}\"\ncomponent = \"{}\"\n{extra}\n\n[[function.trigger]]\nhttp = {{ route = \"{route}\" }}\n",
        wasm(component).display()
    )
}

/// The escalate example with SQL (select:orders), key-value (cache/*) and the PAYMENT_KEY
/// secret granted, routed at /escalate/....
pub fn escalate_toml() -> String {
    format!(
        "[[function]]\nname = \"escalate\"\ncomponent = \"{}\"\nmemory = \"64MiB\"\ntimeout = \"5s\"\n\n\
         [[function.trigger]]\nhttp = {{ route = \"/escalate/...\" }}\n\n\
         [function.policy]\nsql = [\"select:orders\"]\nkv = [\"read:cache/*\", \"write:cache/*\"]\n\
         secrets = [\"PAYMENT_KEY\"]\n",
        wasm("escalate").display()
    )
}

/// What a CLI command printed and how it exited.
pub struct Cli {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    pub fn from(output: Output) -> Cli {
        Cli {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(
            self.status.success(),
            "command failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Asserts failure and returns stderr.
    #[track_caller]
    pub fn failed(&self) -> &str {
        assert!(
            !self.status.success(),
            "command unexpectedly succeeded:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        &self.stderr
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// The bootstrap admin token every [`TestNode`] is started with (`RUNWAY_ADMIN_TOKEN`).
pub const ADMIN_TOKEN: &str = "rwy_test-bootstrap-admin-token-0123456789";

/// Runs the CLI as the bootstrap admin against `server`.
pub fn runway(args: &[&str], server: &str) -> Cli {
    runway_as(args, server, Some(ADMIN_TOKEN))
}

/// Runs the CLI against `server` with `token` (or none) in `RUNWAY_TOKEN`.
pub fn runway_as(args: &[&str], server: &str, token: Option<&str>) -> Cli {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runway"));
    command.args(args).env("RUNWAY_SERVER", server);
    match token {
        Some(token) => command.env("RUNWAY_TOKEN", token),
        None => command.env_remove("RUNWAY_TOKEN"),
    };
    Cli::from(command.output().expect("running runway"))
}

/// A `runway serve` process on free loopback ports with its own data folder.
pub struct TestNode {
    child: Option<Child>,
    pub gateway: String,
    pub admin: String,
    output: Arc<Mutex<String>>,
    http: reqwest::blocking::Client,
}

impl TestNode {
    /// Starts a node on `data_dir` and waits until both listeners are bound.
    pub fn start(data_dir: &Path, extra: &[&str]) -> TestNode {
        TestNode::start_with(data_dir, extra, Some(ADMIN_TOKEN))
    }

    /// Starts a node whose first start uses `bootstrap` as `RUNWAY_ADMIN_TOKEN` (or, with
    /// `None`, generates and prints one).
    pub fn start_with(data_dir: &Path, extra: &[&str], bootstrap: Option<&str>) -> TestNode {
        TestNode::start_under(&[], data_dir, extra, bootstrap)
    }

    /// Starts a node through `wrapper` (a command that runs the rest of its arguments, such
    /// as `prlimit --nofile=200`), or directly when it is empty.
    pub fn start_under(
        wrapper: &[&str],
        data_dir: &Path,
        extra: &[&str],
        bootstrap: Option<&str>,
    ) -> TestNode {
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(env!("CARGO_BIN_EXE_runway"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_runway")),
        };
        match bootstrap {
            Some(token) => command.env("RUNWAY_ADMIN_TOKEN", token),
            None => command.env_remove("RUNWAY_ADMIN_TOKEN"),
        };
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env("RUNWAY_LOG", "info");
        TestNode::spawn(command)
    }

    /// Starts `runway serve` with no flags and only `variables` (and PATH) in its
    /// environment, as a container's entrypoint runs it.
    pub fn start_from_environment(variables: &[(String, String)]) -> TestNode {
        let mut command = Command::new(env!("CARGO_BIN_EXE_runway"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(variables.iter().map(|(k, v)| (k, v)))
            .env("RUNWAY_LOG", "info");
        TestNode::spawn(command)
    }

    /// Runs `command` (a `runway serve`) and waits until it reports both listeners.
    fn spawn(mut command: Command) -> TestNode {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting runway serve");
        let output = Arc::new(Mutex::new(String::new()));
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for (stream, tx) in [
            (
                Box::new(stdout) as Box<dyn std::io::Read + Send>,
                Some(lines_tx),
            ),
            (Box::new(stderr), None),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push_str(&format!("{line}\n"));
                    if let Some(tx) = &tx {
                        _ = tx.send(line);
                    }
                }
            });
        }
        let mut gateway = None;
        let mut admin = None;
        while gateway.is_none() || admin.is_none() {
            let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(120)) else {
                _ = child.kill();
                panic!(
                    "runway serve did not report its addresses; output:\n{}",
                    output.lock().unwrap()
                );
            };
            if let Some(addr) = line.strip_prefix("runway: gateway listening on ") {
                gateway = Some(addr.to_owned());
            }
            if let Some(addr) = line.strip_prefix("runway: admin API listening on ") {
                admin = Some(addr.to_owned());
            }
        }
        TestNode {
            child: Some(child),
            gateway: gateway.unwrap(),
            admin: admin.unwrap(),
            output,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        }
    }

    /// Everything the node printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Runs a CLI command against this node.
    pub fn cli(&self, args: &[&str]) -> Cli {
        runway(args, &self.admin)
    }

    /// Deploys a manifest or folder without running its build (examples are prebuilt).
    #[track_caller]
    pub fn deploy(&self, path: &Path) -> Value {
        build_examples();
        self.cli(&["deploy", "--no-build", "--json", path.to_str().unwrap()])
            .json()
    }

    /// Deploys one example folder.
    #[track_caller]
    pub fn deploy_example(&self, name: &str) -> Value {
        self.deploy(&examples().join(name))
    }

    /// A request to the gateway.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::blocking::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.gateway))
    }

    /// GET from the gateway.
    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.request(reqwest::Method::GET, path)
            .send()
            .expect("gateway request")
    }

    /// GET from the admin API as the bootstrap admin.
    pub fn admin_get(&self, path: &str) -> reqwest::blocking::Response {
        self.admin_request(reqwest::Method::GET, path, Some(ADMIN_TOKEN))
            .send()
            .expect("admin request")
    }

    /// A request to the admin API with `token` (or none) as its bearer.
    pub fn admin_request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::blocking::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.admin));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// The Prometheus exposition.
    pub fn metrics(&self) -> String {
        self.admin_get("/metrics").text().unwrap()
    }

    /// The value of one sample in `/metrics`, if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find_map(|line| {
                line.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map(|value| value.trim().parse().unwrap())
    }

    /// Polls until `check` holds (records are persisted off the request path).
    #[track_caller]
    pub fn eventually(&self, what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..200 {
            if check() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out waiting until {what}; node output:\n{}",
            self.output()
        );
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(self) -> (ExitStatus, String) {
        signal(self.pid(), "TERM");
        self.wait()
    }

    /// Waits for the process to exit (after a signal sent by the test).
    pub fn wait(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let status = child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        (status, self.output())
    }
}

/// Sends a signal to a process by name (`TERM`, `INT`).
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            _ = child.kill();
            _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- runway node output ---\n{}--- end ---", self.output());
        }
    }
}

/// A fresh temporary folder.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Runs `runway serve` on `data_dir` with `args` (free loopback ports unless `args` name
/// others), expects it to refuse to start, and returns its stderr.
#[track_caller]
pub fn serve_refused(data_dir: &Path, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_runway"));
    command.arg("serve");
    for flag in ["--listen", "--admin-listen"] {
        if !args.contains(&flag) {
            command.args([flag, "127.0.0.1:0"]);
        }
    }
    let out = command
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("running runway serve");
    assert!(!out.status.success(), "runway serve started: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs the CLI with `input` on its standard input.
pub fn runway_with_stdin(args: &[&str], server: &str, input: &str) -> Cli {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_runway"))
        .args(args)
        .env("RUNWAY_SERVER", server)
        .env("RUNWAY_TOKEN", ADMIN_TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running runway");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    Cli::from(child.wait_with_output().unwrap())
}

/// Reads an HTTP request up to the end of its headers.
pub fn read_head(stream: &mut impl std::io::Read) -> Vec<u8> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    request
}

/// A tiny HTTP/1.1 server on a free loopback port answering with `answer(path)`:
/// (status, extra header lines, body). Runs until the test process ends.
pub fn http_server(answer: fn(&str, u16) -> (u16, String, String)) -> u16 {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let request = read_head(&mut stream);
            let text = String::from_utf8_lossy(&request);
            let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let (status, headers, body) = answer(&path, port);
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n{body}",
                body.len()
            );
            _ = stream.write_all(response.as_bytes());
        }
    });
    port
}

/// POSTs `size` bytes to `path` as a chunked body over a raw connection (the server may
/// answer and close before it has all of it) and returns the status line of the answer.
pub fn send_chunked(gateway: &str, path: &str, size: usize) -> String {
    use std::io::{BufRead, Write};
    let mut stream = std::net::TcpStream::connect(gateway.trim_start_matches("http://")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .unwrap();
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0;
    while sent < size {
        let head = format!("{:x}\r\n", chunk.len());
        if stream.write_all(head.as_bytes()).is_err()
            || stream.write_all(&chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    _ = stream.write_all(b"0\r\n\r\n");
    let mut line = String::new();
    _ = std::io::BufReader::new(stream).read_line(&mut line);
    line
}
