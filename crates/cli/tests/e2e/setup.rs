//! A fresh machine: a guest build whose Rust target is missing gets it through rustup, or
//! stops with the one command to run.
//!
//! Each test puts stand-ins for `rustc`, `rustup` and `cargo` first on PATH: `rustc` names a
//! library folder that holds `core` only once `rustup target add` has run, and `cargo` fails
//! the way the real one does without it. The node and the CLI are the real binary.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::*;

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A folder of stand-in tools and a manifest whose build needs wasm32-wasip2.
struct FreshMachine {
    dir: tempfile::TempDir,
}

impl FreshMachine {
    fn new(with_rustup: bool) -> FreshMachine {
        let dir = tempdir();
        let root = dir.path();
        let bin = root.join("bin");
        let libdir = root.join("libdir");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&libdir).unwrap();
        script(&bin.join("rustc"), &format!("echo {}", libdir.display()));
        if with_rustup {
            script(
                &bin.join("rustup"),
                &format!(
                    "[ \"$1 $2\" = 'target add' ] || exit 2\ntouch {}/libcore-0.rlib\necho \"$3\" >> {}/added",
                    libdir.display(),
                    root.display()
                ),
            );
        }
        script(
            &bin.join("cargo"),
            &format!(
                "echo ran >> {root}/cargo-ran\nls {lib}/libcore-*.rlib >/dev/null 2>&1 || {{ echo \"error[E0463]: can't find crate for core\" >&2; exit 101; }}\nmkdir -p out && cp {wasm} out/hello.wasm",
                root = root.display(),
                lib = libdir.display(),
                wasm = wasm("hello").display()
            ),
        );
        manifest(
            &root.join("app"),
            "[[function]]\nname = \"hello\"\ncomponent = \"out/hello.wasm\"\nbuild = \"cargo build --release --target wasm32-wasip2\"\n\n[[function.trigger]]\nhttp = { route = \"/hello\" }\n",
        );
        FreshMachine { dir }
    }

    /// `runway deploy` with only the stand-ins and the system's own tools on PATH.
    fn deploy(&self, node: &TestNode) -> Cli {
        let root = self.dir.path();
        let output = Command::new(env!("CARGO_BIN_EXE_runway"))
            .args(["deploy", root.join("app").to_str().unwrap()])
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", root.join("bin").display()),
            )
            .env("RUNWAY_SERVER", &node.admin)
            .env("RUNWAY_TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap();
        Cli::from(output)
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default()
    }
}

#[test]
fn deploy_installs_a_missing_rust_target_before_building() {
    let machine = FreshMachine::new(true);
    let data = tempdir();
    let node = TestNode::start(data.path(), &[]);
    let out = machine.deploy(&node);
    out.ok();
    assert_eq!(machine.read("added"), "wasm32-wasip2\n");
    assert!(
        out.stderr
            .contains("installed the Rust target wasm32-wasip2"),
        "{}",
        out.stderr
    );
    assert_eq!(node.get("/hello").text().unwrap(), "Hello, World!\n");

    // Once present, it is not installed again.
    std::fs::write(machine.dir.path().join("added"), "").unwrap();
    machine.deploy(&node).ok();
    assert_eq!(machine.read("added"), "");
}

#[test]
fn deploy_without_rustup_names_the_command_to_run_and_deploys_nothing() {
    let machine = FreshMachine::new(false);
    let data = tempdir();
    let node = TestNode::start(data.path(), &[]);
    let stderr = machine.deploy(&node).failed().to_owned();
    assert!(
        stderr.contains("run `rustup target add wasm32-wasip2`"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_eq!(machine.read("cargo-ran"), "", "the build must not start");
    assert_eq!(node.cli(&["ls", "--json"]).json(), serde_json::json!([]));
}
