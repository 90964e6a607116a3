//! Rust compilation targets a guest build needs, installed through rustup before the build
//! runs.
//!
//! rustup installs the targets a `rust-toolchain.toml` lists only when it installs the
//! toolchain itself, and not at all with `RUSTUP_AUTO_INSTALL=0`; a build for
//! `wasm32-wasip2` then fails deep inside cargo ("can't find crate for `core`"). Every path
//! that builds guests (`runway up`, `runway deploy`, the tests, the benchmarks) goes through
//! [`ensure_targets`] first.

use std::path::Path;
use std::process::{Command, Stdio};

/// Why a target a build needs is not available.
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    /// rustup is not on PATH, so the missing target cannot be installed here.
    #[error(
        "the build needs the Rust target {target}, which is not installed, and rustup was not \
         found to install it: run `rustup target add {target}` (or install rustup from \
         https://rustup.rs)"
    )]
    NoRustup {
        /// The missing target.
        target: String,
    },
    /// `rustup target add` failed.
    #[error(
        "the build needs the Rust target {target}; `rustup target add {target}` failed \
         ({status}): {stderr}"
    )]
    InstallFailed {
        /// The missing target.
        target: String,
        /// How rustup exited.
        status: std::process::ExitStatus,
        /// What rustup said, last line first.
        stderr: String,
    },
}

/// What [`ensure_targets`] did for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    /// It was already installed.
    Present(String),
    /// It was missing and rustup installed it.
    Installed(String),
}

/// The compilation targets a shell command asks cargo for: the values of its `--target`
/// options, when the command runs cargo. Anything else (`make`, `npm run build`) needs none.
pub fn targets_in_command(command: &str) -> Vec<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let runs_cargo = words
        .iter()
        .any(|word| *word == "cargo" || word.ends_with("/cargo"));
    if !runs_cargo {
        return Vec::new();
    }
    let mut targets = Vec::new();
    let mut iter = words.iter();
    while let Some(word) = iter.next() {
        let value = if *word == "--target" {
            iter.next().copied()
        } else {
            word.strip_prefix("--target=")
        };
        if let Some(value) = value.map(|v| v.trim_matches(['"', '\''])) {
            // A path to a target spec file is the user's own business.
            if !value.is_empty() && !value.ends_with(".json") && !targets.iter().any(|t| t == value)
            {
                targets.push(value.to_owned());
            }
        }
    }
    targets
}

/// Makes sure every target is installed for the toolchain that applies in `dir` (where a
/// `rust-toolchain.toml` may pin one), installing missing ones with `rustup target add`.
///
/// A target counts as installed when `rustc --print target-libdir` names a folder holding its
/// `core` library, which holds for rustup's toolchains and distribution packages alike. When
/// rustc itself cannot be run, nothing is decided here: cargo will say what is wrong.
pub fn ensure_targets(dir: &Path, targets: &[String]) -> Result<Vec<TargetState>, ToolchainError> {
    let mut states = Vec::new();
    for target in targets {
        if is_installed(dir, target).unwrap_or(true) {
            states.push(TargetState::Present(target.clone()));
            continue;
        }
        let added = Command::new("rustup")
            .args(["target", "add", target])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|_| ToolchainError::NoRustup {
                target: target.clone(),
            })?;
        if !added.status.success() {
            let stderr = String::from_utf8_lossy(&added.stderr);
            return Err(ToolchainError::InstallFailed {
                target: target.clone(),
                status: added.status,
                stderr: stderr.trim().lines().last().unwrap_or("").to_owned(),
            });
        }
        states.push(TargetState::Installed(target.clone()));
    }
    Ok(states)
}

/// Whether the toolchain in `dir` has the standard library for `target`; `None` when rustc
/// cannot tell (not on PATH, or it does not know the target at all).
fn is_installed(dir: &Path, target: &str) -> Option<bool> {
    let output = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", target])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let libdir = String::from_utf8_lossy(&output.stdout);
    let entries = std::fs::read_dir(Path::new(libdir.trim())).ok();
    Some(entries.is_some_and(|entries| {
        entries.filter_map(Result::ok).any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libcore-") && name.ends_with(".rlib")
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_targets_a_cargo_build_asks_for() {
        assert_eq!(
            targets_in_command("cargo build --release --target wasm32-wasip2"),
            ["wasm32-wasip2"]
        );
        assert_eq!(
            targets_in_command(
                "~/.cargo/bin/cargo build --target=wasm32-wasip2 && cargo build --target wasm32-wasip2"
            ),
            ["wasm32-wasip2"]
        );
        assert_eq!(
            targets_in_command("cargo component build --target wasm32-wasip1"),
            ["wasm32-wasip1"]
        );
    }

    #[test]
    fn needs_no_target_for_other_builds_or_spec_files() {
        assert!(targets_in_command("make --target wasm32-wasip2").is_empty());
        assert!(targets_in_command("npm run build").is_empty());
        assert!(targets_in_command("cargo build --release").is_empty());
        assert!(targets_in_command("cargo build --target my-target.json").is_empty());
    }
}
