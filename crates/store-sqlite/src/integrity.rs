//! Keeping the SQLite store whole: no silent reset when the database file is lost or
//! damaged, a checkpoint at shutdown, online backups, and checksums of compiled code.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use runway_store::StoreError;

/// The store's file name inside a data folder.
pub const DATABASE_FILE: &str = "runway.db";

/// The compiled-code checksums (migration 9).
pub(crate) const MIGRATION_9: &str = r#"
CREATE TABLE compiled_code (
    cache_key   TEXT PRIMARY KEY,
    sha256      TEXT NOT NULL,
    created_ms  INTEGER NOT NULL
);
"#;

/// What a data folder holds beside its database, as evidence that it served before: a
/// missing or empty database next to any of these is a loss, never a first start.
pub(crate) fn earlier_state(data_dir: &Path) -> Option<String> {
    let count = |dir: &str| {
        std::fs::read_dir(data_dir.join(dir))
            .map(|entries| entries.filter_map(Result::ok).count())
            .unwrap_or(0)
    };
    let mut found = Vec::new();
    for (dir, what) in [
        ("artifacts", "artifacts"),
        ("cache", "compiled code files"),
        ("envs", "environment data folders"),
    ] {
        let n = count(dir);
        if n > 0 {
            found.push(format!("{n} {what}"));
        }
    }
    if data_dir.join("secrets.key").exists() {
        found.push("a secrets key".to_owned());
    }
    (!found.is_empty()).then(|| found.join(", "))
}

/// The file that says a node has this folder's store open: created at open, removed once
/// shutdown has checkpointed. Found at the next start, it means the last run crashed.
pub const RUNNING_MARKER: &str = "runway.running";

/// After a crash, committed changes the database file does not hold yet are in the
/// write-ahead log; a log that is gone then means they are lost, which SQLite cannot see.
pub(crate) fn check_unclean_stop(data_dir: &Path, database: &Path) -> Result<(), StoreError> {
    let crashed = data_dir.join(RUNNING_MARKER).exists();
    let mut wal = database.as_os_str().to_owned();
    wal.push("-wal");
    if crashed && !is_missing_or_empty(database) && !Path::new(&wal).exists() {
        return Err(StoreError::LostLog {
            data_dir: data_dir.to_path_buf(),
            log: PathBuf::from(wal),
            database: database.to_path_buf(),
            marker: data_dir.join(RUNNING_MARKER),
        });
    }
    Ok(())
}

pub(crate) fn mark_running(data_dir: &Path) -> Result<(), StoreError> {
    let marker = data_dir.join(RUNNING_MARKER);
    std::fs::write(&marker, b"").map_err(|source| StoreError::Io {
        action: "write",
        path: marker,
        source,
    })
}

pub(crate) fn mark_stopped(data_dir: &Path) {
    _ = std::fs::remove_file(data_dir.join(RUNNING_MARKER));
}

/// Whether the database file is absent or holds nothing.
pub(crate) fn is_missing_or_empty(path: &Path) -> bool {
    std::fs::metadata(path).map_or(true, |meta| meta.len() == 0)
}

/// Runs SQLite's `quick_check` (every page and record, not the index contents) and maps
/// anything but `ok` to [`StoreError::Damaged`].
pub(crate) fn check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let damaged = |detail: String| StoreError::Damaged {
        path: path.to_path_buf(),
        detail,
    };
    let mut statement = conn
        .prepare("PRAGMA quick_check(5)")
        .map_err(|err| damaged(err.to_string()))?;
    let problems: Vec<String> = statement
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(Iterator::collect)
        .map_err(|err| damaged(err.to_string()))?;
    if problems.len() == 1 && problems[0] == "ok" {
        Ok(())
    } else {
        Err(damaged(problems.join("; ")))
    }
}

/// Moves everything a data folder holds into a new `lost+found-<ms>` folder inside it, so a
/// deliberate fresh start deletes nothing; the secrets key stays in place when
/// `keep_secrets_key` (a restore brings sealed secrets back, but never their key). Returns
/// that folder, or `None` if there was nothing to move.
pub fn start_over(data_dir: &Path, keep_secrets_key: bool) -> Result<Option<PathBuf>, StoreError> {
    let mut names: Vec<String> = ["artifacts", "cache", "envs"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    if !keep_secrets_key {
        names.push("secrets.key".to_owned());
    }
    for suffix in ["", "-wal", "-shm"] {
        names.push(format!("{DATABASE_FILE}{suffix}"));
    }
    names.push(RUNNING_MARKER.to_owned());
    let present: Vec<&String> = names
        .iter()
        .filter(|name| data_dir.join(name).exists())
        .collect();
    if present.is_empty() {
        return Ok(None);
    }
    let aside = data_dir.join(format!("lost+found-{}", crate::now_ms()));
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(&aside).map_err(io("create", &aside))?;
    for name in present {
        let from = data_dir.join(name);
        std::fs::rename(&from, aside.join(name)).map_err(io("move aside", &from))?;
    }
    Ok(Some(aside))
}

/// Writes every committed change into the main database file and empties the
/// write-ahead log, so the file alone holds the whole state.
pub(crate) fn checkpoint(conn: &Connection) -> Result<(), StoreError> {
    let (busy, _, _): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .map_err(crate::db("checkpointing the write-ahead log"))?;
    if busy != 0 {
        return Err(StoreError::Corrupt(
            "the write-ahead log could not be checkpointed: another connection is still \
             reading"
                .into(),
        ));
    }
    Ok(())
}

/// A consistent copy of the database at `target` (which must not exist), taken online.
pub(crate) fn backup_to(conn: &Connection, target: &Path) -> Result<(), StoreError> {
    let target = target.to_str().ok_or_else(|| StoreError::Io {
        action: "back up into",
        path: target.to_path_buf(),
        source: std::io::Error::other("the path is not UTF-8"),
    })?;
    conn.execute("VACUUM INTO ?1", [target])
        .map(drop)
        .map_err(crate::db("copying the database for a backup"))
}

/// The recorded SHA-256 of a compiled-code cache entry.
pub(crate) fn compiled_checksum(
    conn: &Connection,
    cache_key: &str,
) -> Result<Option<String>, StoreError> {
    conn.query_row(
        "SELECT sha256 FROM compiled_code WHERE cache_key = ?1",
        [cache_key],
        |row| row.get(0),
    )
    .optional()
    .map_err(crate::db("reading a compiled-code checksum"))
}

/// Records the SHA-256 of a compiled-code cache entry this node just wrote.
pub(crate) fn set_compiled_checksum(
    conn: &Connection,
    cache_key: &str,
    sha256: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO compiled_code (cache_key, sha256, created_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (cache_key) DO UPDATE SET sha256 = excluded.sha256, created_ms = excluded.created_ms",
        params![cache_key, sha256, crate::now_ms()],
    )
    .map(drop)
    .map_err(crate::db("recording a compiled-code checksum"))
}
