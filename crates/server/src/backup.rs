//! Backups of a node's whole state, taken while it serves, and restores into a data folder.
//!
//! A backup is one tar file: `BACKUP.json` (what it holds), `runway.db` (the control-plane
//! store: releases, tokens, keys, jobs, invocation records and rollups, audit logs, sealed
//! secrets), `envs/NAME/sql.db` and `envs/NAME/kv.db` (each environment's function data) and
//! `artifacts/DIGEST.wasm`. Each database is a consistent copy (`VACUUM INTO`); artifacts are
//! immutable and listed after the store is copied, so every release in the copy finds its
//! artifact. Compiled code is left out (it is rebuilt from the artifacts) and so is the
//! secrets key: a backup that carried the key would open its own sealed secrets.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use runway_store::prelude::*;
use runway_store::{Digest, StoreError};
use runway_store_sqlite::{DATABASE_FILE, SqliteStore};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::capabilities::CapabilityError;

/// The layout version of backups this binary writes and reads.
pub const BACKUP_FORMAT: u32 = 1;

/// The file describing a backup, first in the archive.
const MANIFEST_FILE: &str = "BACKUP.json";

/// What a backup holds, as written into its `BACKUP.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupManifest {
    /// Layout version ([`BACKUP_FORMAT`]).
    pub format: u32,
    /// The Runway version that wrote it.
    pub runway_version: String,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Environments whose data it holds, the home one first.
    pub environments: Vec<String>,
    /// Artifacts it holds.
    pub artifacts: usize,
}

/// What a restore put in place.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreReport {
    /// The backup's own description.
    pub manifest: BackupManifest,
    /// Functions served per environment in the restored store.
    pub functions: Vec<(String, usize)>,
    /// Whether the store holds sealed secrets (they need the original secrets key).
    pub sealed_secrets: bool,
    /// Where the data folder's previous contents went (with `replace`).
    pub moved_aside: Option<PathBuf>,
}

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Reading or writing a file failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An environment's data could not be copied.
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    /// The file is not a backup this binary can restore.
    #[error("{path} is not a Runway backup: {why}")]
    NotABackup {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The target folder already holds state.
    #[error(
        "the data folder {} already holds a store or its files; stop the node that uses it and \
         pass --replace to move its contents aside (into lost+found-*), or restore into an \
         empty folder",
        path.display()
    )]
    NotEmpty {
        /// The data folder.
        path: PathBuf,
    },
}

/// Wraps an I/O error with what was being done to which path.
pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io {
        action,
        path,
        source,
    }
}

/// Writes a backup of the node's current state to `out`, a new file. Runs on a blocking
/// thread; requests keep being served meanwhile.
pub(crate) fn write(shared: &Shared, out: &Path) -> Result<BackupManifest, BackupError> {
    let staging = tempfile::Builder::new()
        .prefix(".backup-")
        .tempdir_in(&shared.data_dir)
        .map_err(io("create a staging folder in", &shared.data_dir))?;
    let root = staging.path();
    shared.store.backup_to(&root.join(DATABASE_FILE))?;
    let environments: Vec<String> = {
        let all = shared.environments.load();
        all.all().map(|env| env.name.clone()).collect()
    };
    for name in &environments {
        shared
            .capabilities
            .backup_environment(name, &root.join("envs").join(name))?;
    }
    // Listed after the store was copied: artifacts are never deleted while referenced, so
    // every release in the copy finds its file here.
    let artifacts_dir = shared.data_dir.join("artifacts");
    let mut artifacts: Vec<PathBuf> = std::fs::read_dir(&artifacts_dir)
        .map_err(io("list", &artifacts_dir))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| artifact_digest(path).is_some())
        .collect();
    artifacts.sort();
    let manifest = BackupManifest {
        format: BACKUP_FORMAT,
        runway_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at_ms: crate::now_ms(),
        environments: environments.clone(),
        artifacts: artifacts.len(),
    };
    let file = std::fs::File::create(out).map_err(io("create", out))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let text = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o644);
    header.set_mtime((manifest.created_at_ms / 1000) as u64);
    header.set_cksum();
    tar.append_data(&mut header, MANIFEST_FILE, text.as_slice())
        .map_err(io("write", out))?;
    let add = |tar: &mut tar::Builder<_>, path: &Path, name: &Path| {
        tar.append_path_with_name(path, name)
            .map_err(io("write", out))
    };
    add(
        &mut tar,
        &root.join(DATABASE_FILE),
        Path::new(DATABASE_FILE),
    )?;
    for name in &environments {
        for file in ["sql.db", "kv.db"] {
            let path = root.join("envs").join(name).join(file);
            if path.exists() {
                add(&mut tar, &path, &Path::new("envs").join(name).join(file))?;
            }
        }
    }
    for path in &artifacts {
        let name = Path::new("artifacts").join(path.file_name().expect("listed files have names"));
        add(&mut tar, path, &name)?;
    }
    let mut writer = tar.into_inner().map_err(io("write", out))?;
    writer.flush().map_err(io("write", out))?;
    writer
        .into_inner()
        .map_err(|err| BackupError::Io {
            action: "write",
            path: out.to_path_buf(),
            source: err.into_error(),
        })?
        .sync_all()
        .map_err(io("sync", out))?;
    Ok(manifest)
}

/// The digest an artifact file is named after, if it is named like one.
fn artifact_digest(path: &Path) -> Option<Digest> {
    let name = path.file_name()?.to_str()?;
    Digest::try_from(name.strip_suffix(".wasm")?.to_owned()).ok()
}

/// Where a backup member goes inside the data folder, if it is one a backup may hold.
/// Anything else (absolute paths, `..`, unexpected files) makes the archive invalid.
fn member_path(name: &Path) -> Option<PathBuf> {
    if name
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let parts: Vec<&str> = name.iter().map(|p| p.to_str()).collect::<Option<_>>()?;
    match parts.as_slice() {
        [DATABASE_FILE] => Some(name.to_path_buf()),
        ["envs", env, "sql.db" | "kv.db"] if crate::environments::check_name(env).is_ok() => {
            Some(name.to_path_buf())
        }
        ["artifacts", _] if artifact_digest(name).is_some() => Some(name.to_path_buf()),
        _ => None,
    }
}

/// Restores a backup into `data_dir` while no node runs on it. Refuses a folder that holds
/// state unless `replace`, which moves that state aside first (deleting nothing). Every
/// artifact is checked against its digest and the store against SQLite's integrity check
/// before the restore counts as done.
pub fn restore(
    backup: &Path,
    data_dir: &Path,
    replace: bool,
) -> Result<RestoreReport, BackupError> {
    let not_a_backup = |why: String| BackupError::NotABackup {
        path: backup.to_path_buf(),
        why,
    };
    let manifest = read_manifest(backup)?;
    if manifest.format != BACKUP_FORMAT {
        return Err(not_a_backup(format!(
            "its format is {}, and this binary reads format {BACKUP_FORMAT}; use a matching runway",
            manifest.format
        )));
    }
    let holds_state = ["runway.db", "artifacts", "envs", "cache"]
        .iter()
        .any(|name| {
            let path = data_dir.join(name);
            std::fs::read_dir(&path).map_or_else(
                |_| std::fs::metadata(&path).is_ok_and(|m| m.len() > 0),
                |mut entries| entries.next().is_some(),
            )
        });
    let moved_aside = if holds_state {
        if !replace {
            return Err(BackupError::NotEmpty {
                path: data_dir.to_path_buf(),
            });
        }
        runway_store_sqlite::start_over(data_dir, true)?
    } else {
        None
    };
    std::fs::create_dir_all(data_dir).map_err(io("create", data_dir))?;
    let file = std::fs::File::open(backup).map_err(io("open", backup))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut saw_store = false;
    for entry in archive.entries().map_err(io("read", backup))? {
        let mut entry = entry.map_err(io("read", backup))?;
        let name = entry.path().map_err(io("read", backup))?.into_owned();
        if name == Path::new(MANIFEST_FILE) {
            continue;
        }
        if !entry.header().entry_type().is_file() {
            return Err(not_a_backup(format!(
                "it holds {} which is not a file",
                name.display()
            )));
        }
        let Some(relative) = member_path(&name) else {
            return Err(not_a_backup(format!(
                "it holds an unexpected member {}",
                name.display()
            )));
        };
        let target = data_dir.join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io("create", parent))?;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(io("read", backup))?;
        if let Some(digest) = artifact_digest(&relative)
            && Digest::of(&bytes) != digest
        {
            return Err(not_a_backup(format!(
                "its artifact {digest} does not have that digest (the file is damaged)"
            )));
        }
        saw_store |= relative == Path::new(DATABASE_FILE);
        std::fs::write(&target, &bytes).map_err(io("write", &target))?;
    }
    if !saw_store {
        return Err(not_a_backup(format!("it holds no {DATABASE_FILE}")));
    }
    let store = SqliteStore::open(data_dir)?;
    let mut functions = Vec::new();
    for environment in &manifest.environments {
        functions.push((
            environment.clone(),
            store.current_releases(environment)?.len(),
        ));
    }
    let sealed_secrets = store.has_sealed_secrets()?;
    store.checkpoint()?;
    Ok(RestoreReport {
        manifest,
        functions,
        sealed_secrets,
        moved_aside,
    })
}

/// Reads `BACKUP.json`, the first member of a backup.
fn read_manifest(backup: &Path) -> Result<BackupManifest, BackupError> {
    let not_a_backup = |why: String| BackupError::NotABackup {
        path: backup.to_path_buf(),
        why,
    };
    let file = std::fs::File::open(backup).map_err(io("open", backup))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut entries = archive
        .entries()
        .map_err(|err| not_a_backup(format!("it is not a tar file ({err})")))?;
    let mut first = match entries.next() {
        Some(Ok(entry)) => entry,
        Some(Err(err)) => return Err(not_a_backup(format!("it is not a tar file ({err})"))),
        None => return Err(not_a_backup("it is empty".into())),
    };
    if first.path().ok().as_deref() != Some(Path::new(MANIFEST_FILE)) {
        return Err(not_a_backup(format!(
            "it does not start with {MANIFEST_FILE}"
        )));
    }
    let mut text = Vec::new();
    first
        .by_ref()
        .take(1 << 20)
        .read_to_end(&mut text)
        .map_err(io("read", backup))?;
    serde_json::from_slice(&text)
        .map_err(|err| not_a_backup(format!("its {MANIFEST_FILE} does not parse: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_the_members_a_backup_holds() {
        let digest = "a".repeat(64);
        for ok in [
            "runway.db".to_owned(),
            "envs/prod/sql.db".to_owned(),
            "envs/pr-42/kv.db".to_owned(),
            format!("artifacts/{digest}.wasm"),
        ] {
            assert!(member_path(Path::new(&ok)).is_some(), "{ok}");
        }
        for bad in [
            "/etc/passwd".to_owned(),
            "../runway.db".to_owned(),
            "envs/../../x/sql.db".to_owned(),
            "envs/Prod/sql.db".to_owned(),
            "envs/prod/other.db".to_owned(),
            "artifacts/short.wasm".to_owned(),
            "secrets.key".to_owned(),
            "cache/x.cwasm".to_owned(),
        ] {
            assert!(member_path(Path::new(&bad)).is_none(), "{bad}");
        }
    }
}
