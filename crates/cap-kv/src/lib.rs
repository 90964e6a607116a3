//! `wasi:keyvalue` for functions: one durable store per environment, in a SQLite file of
//! its own, where each function reads and writes only the keys its policy grants.
//!
//! Every operation asks the release's [`Guard`] first; a refused operation returns the
//! standard `access-denied` error to the function and is audited. `list-keys` is not
//! refused: it lists only the keys the function may read.

mod host;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use runway_policy::{Attempt, Capability, Denied, Guard, KvAccess};
use rusqlite::{Connection, OptionalExtension, params};

pub use host::{Bucket, KvHost, KvView, add_to_linker};

/// The longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// The largest value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// Keys one batch call may name.
pub const MAX_BATCH_KEYS: usize = 1000;
/// Bytes one `get-many` may return.
pub const MAX_BATCH_BYTES: usize = 16 << 20;
/// Keys returned per `list-keys` page.
pub const LIST_PAGE: usize = 1000;

/// A key and its value.
pub type KeyValue = (String, Vec<u8>);

/// Why a key-value operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The policy refused it.
    #[error("{0}")]
    Denied(Denied),
    /// The key or value is outside the limits, or a stored value is not a number.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("key-value store: {0}")]
    Store(String),
}

impl From<rusqlite::Error> for KvError {
    fn from(err: rusqlite::Error) -> KvError {
        KvError::Store(err.to_string())
    }
}

/// Failures opening an environment's store.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the key-value store {path}: {message}")]
pub struct OpenError {
    /// The store file.
    pub path: PathBuf,
    /// Why.
    pub message: String,
}

/// The key-value store of one environment.
#[derive(Clone)]
pub struct KvStore {
    conn: Arc<Mutex<Connection>>,
}

impl KvStore {
    /// Opens (creating if needed) the store of an environment whose data lives in `dir`.
    pub fn open(dir: &Path) -> Result<KvStore, OpenError> {
        let path = dir.join("kv.db");
        let fail = |message: String| OpenError {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let conn = Connection::open(&path).map_err(|e| fail(e.to_string()))?;
        conn.execute_batch(
            "PRAGMA journal_mode = wal;
             PRAGMA synchronous = normal;
             CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)
                 WITHOUT ROWID;",
        )
        .map_err(|e| fail(e.to_string()))?;
        Ok(KvStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// A copy of every key and value, for the environment whose data lives in `dir`.
    pub fn copy_to(&self, dir: &Path) -> Result<KvStore, OpenError> {
        let path = dir.join("kv.db");
        let fail = |message: String| OpenError {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        self.conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .execute("VACUUM INTO ?1", [path.to_string_lossy()])
            .map_err(|e| fail(e.to_string()))?;
        KvStore::open(dir)
    }

    /// Writes every committed change into the main file and empties the write-ahead log
    /// (at shutdown, so the file alone holds the data).
    pub fn checkpoint(&self) -> Result<(), KvError> {
        self.with(|conn| conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))
    }

    /// Access for one release of one function, checked by `guard`.
    pub fn for_function(&self, guard: Guard) -> FunctionKv {
        FunctionKv {
            store: self.clone(),
            guard,
        }
    }

    fn with<R>(
        &self,
        run: impl FnOnce(&mut Connection) -> rusqlite::Result<R>,
    ) -> Result<R, KvError> {
        let mut conn = self.conn.lock().expect("kv lock");
        Ok(run(&mut conn)?)
    }
}

/// One release's key-value access.
pub struct FunctionKv {
    store: KvStore,
    guard: Guard,
}

impl FunctionKv {
    fn check(&self, access: KvAccess, key: &str) -> Result<(), KvError> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(KvError::Invalid(format!(
                "a key must be 1 to {MAX_KEY_BYTES} bytes; this one is {} bytes",
                key.len()
            )));
        }
        let allowed = self.guard.policy().allows_kv(access, key);
        self.guard
            .decide(allowed, || {
                Attempt::new(Capability::Kv, access.as_str(), key)
            })
            .map_err(KvError::Denied)
    }

    fn check_value(value: &[u8]) -> Result<(), KvError> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(KvError::Invalid(format!(
                "a value may be at most {MAX_VALUE_BYTES} bytes; this one is {} bytes",
                value.len()
            )));
        }
        Ok(())
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.check(KvAccess::Read, key)?;
        self.store.with(|conn| {
            conn.prepare_cached("SELECT value FROM kv WHERE key = ?1")?
                .query_row([key], |row| row.get(0))
                .optional()
        })
    }

    /// Whether `key` is set.
    pub fn exists(&self, key: &str) -> Result<bool, KvError> {
        Ok(self.get(key)?.is_some())
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.check(KvAccess::Write, key)?;
        Self::check_value(value)?;
        self.store.with(|conn| {
            conn.prepare_cached(
                "INSERT INTO kv (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, value])
            .map(drop)
        })
    }

    /// Removes `key` (nothing happens if it is not set).
    pub fn delete(&self, key: &str) -> Result<(), KvError> {
        self.check(KvAccess::Write, key)?;
        self.store.with(|conn| {
            conn.prepare_cached("DELETE FROM kv WHERE key = ?1")?
                .execute([key])
                .map(drop)
        })
    }

    /// Adds `delta` to the decimal number stored at `key` (0 if unset); needs read and write.
    pub fn increment(&self, key: &str, delta: u64) -> Result<u64, KvError> {
        self.check(KvAccess::Read, key)?;
        self.check(KvAccess::Write, key)?;
        let mut conn = self.store.conn.lock().expect("kv lock");
        let tx = conn.transaction()?;
        let current: Option<Vec<u8>> = tx
            .query_row("SELECT value FROM kv WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()?;
        let current = match current {
            None => 0,
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.parse::<u64>().ok())
                .ok_or_else(|| {
                    KvError::Invalid(format!(
                        "the value at `{key}` is not a decimal number, so it cannot be incremented"
                    ))
                })?,
        };
        let next = current.checked_add(delta).ok_or_else(|| {
            KvError::Invalid(format!("incrementing `{key}` by {delta} overflows a u64"))
        })?;
        tx.execute(
            "INSERT INTO kv (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, next.to_string().into_bytes()],
        )?;
        tx.commit()?;
        Ok(next)
    }

    /// Values of several keys; every key is checked before any is read.
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>, KvError> {
        Self::check_batch(keys.len())?;
        for key in keys {
            self.check(KvAccess::Read, key)?;
        }
        // The same large key named many times must not multiply the node's memory.
        let mut total = 0usize;
        keys.iter()
            .map(|key| {
                let value = self.store.with(|conn| {
                    conn.prepare_cached("SELECT value FROM kv WHERE key = ?1")?
                        .query_row([key], |row| row.get::<_, Vec<u8>>(0))
                        .optional()
                })?;
                total += value.as_ref().map_or(0, Vec::len);
                if total > MAX_BATCH_BYTES {
                    return Err(KvError::Invalid(format!(
                        "get-many would return more than {MAX_BATCH_BYTES} bytes; ask for fewer keys"
                    )));
                }
                Ok(value.map(|v| (key.clone(), v)))
            })
            .collect()
    }

    fn check_batch(len: usize) -> Result<(), KvError> {
        if len > MAX_BATCH_KEYS {
            return Err(KvError::Invalid(format!(
                "a batch may name at most {MAX_BATCH_KEYS} keys; this one names {len}"
            )));
        }
        Ok(())
    }

    /// Sets several keys in one transaction; every key is checked before any is written.
    pub fn set_many(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        Self::check_batch(pairs.len())?;
        for (key, value) in pairs {
            self.check(KvAccess::Write, key)?;
            Self::check_value(value)?;
        }
        self.store.with(|conn| {
            let tx = conn.transaction()?;
            for (key, value) in pairs {
                tx.execute(
                    "INSERT INTO kv (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![key, value],
                )?;
            }
            tx.commit()
        })
    }

    /// Removes several keys in one transaction; every key is checked first.
    pub fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        Self::check_batch(keys.len())?;
        for key in keys {
            self.check(KvAccess::Write, key)?;
        }
        self.store.with(|conn| {
            let tx = conn.transaction()?;
            for key in keys {
                tx.execute("DELETE FROM kv WHERE key = ?1", [key])?;
            }
            tx.commit()
        })
    }

    /// A page of the keys this function may read, in order, from position `cursor`.
    pub fn list_keys(&self, cursor: u64) -> Result<(Vec<String>, Option<u64>), KvError> {
        let policy = self.guard.policy();
        let readable: Vec<String> = self.store.with(|conn| {
            let mut stmt = conn.prepare_cached("SELECT key FROM kv ORDER BY key")?;
            let keys = stmt.query_map([], |row| row.get::<_, String>(0))?;
            let mut readable = Vec::new();
            for key in keys {
                let key = key?;
                if policy.allows_kv(KvAccess::Read, &key) {
                    readable.push(key);
                }
            }
            Ok(readable)
        })?;
        let start = usize::try_from(cursor)
            .unwrap_or(usize::MAX)
            .min(readable.len());
        let end = (start + LIST_PAGE).min(readable.len());
        let next = (end < readable.len()).then_some(end as u64);
        Ok((readable[start..end].to_vec(), next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runway_policy::{Caller, MemoryAudit, Policy, PolicyMode};

    fn function(store: &KvStore, policy: &str, sink: Arc<MemoryAudit>) -> FunctionKv {
        let policy: Policy = toml::from_str(policy).unwrap();
        let caller = Caller {
            environment: "prod".into(),
            function: "cache".into(),
            release: 1,
        };
        store.for_function(Guard::new(
            caller,
            Arc::new(policy),
            PolicyMode::Enforce,
            sink,
        ))
    }

    #[test]
    fn a_copy_has_every_key_and_then_lives_its_own_life() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(&dir.path().join("prod")).unwrap();
        let sink = Arc::new(MemoryAudit::default());
        let all = r#"kv = ["read:*", "write:*"]"#;
        function(&store, all, sink.clone()).set("a", b"1").unwrap();
        let copy = store.copy_to(&dir.path().join("dev")).unwrap();
        let copied = function(&copy, all, sink.clone());
        assert_eq!(copied.get("a").unwrap().as_deref(), Some(&b"1"[..]));
        copied.set("a", b"2").unwrap();
        let source = function(&store, all, sink);
        assert_eq!(source.get("a").unwrap().as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn grants_limit_reads_writes_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(dir.path()).unwrap();
        let sink = Arc::new(MemoryAudit::default());
        let admin = function(&store, "kv = [\"write:*\"]", sink.clone());
        admin.set("cache/a", b"1").unwrap();
        admin.set("secret/x", b"hidden").unwrap();
        let kv = function(
            &store,
            "kv = [\"read:cache/*\", \"write:cache/*\", \"write:sessions/*\"]",
            sink.clone(),
        );
        assert_eq!(kv.get("cache/a").unwrap(), Some(b"1".to_vec()));
        assert!(matches!(kv.get("secret/x"), Err(KvError::Denied(_))));
        assert!(matches!(kv.get("sessions/s1"), Err(KvError::Denied(_))));
        assert!(matches!(
            kv.set("secret/x", b"overwrite"),
            Err(KvError::Denied(_))
        ));
        assert!(matches!(kv.delete("secret/x"), Err(KvError::Denied(_))));
        assert!(matches!(
            kv.set_many(&[
                ("cache/b".into(), b"ok".to_vec()),
                ("secret/y".into(), b"no".to_vec())
            ]),
            Err(KvError::Denied(_))
        ));
        assert_eq!(
            kv.get("cache/b").unwrap(),
            None,
            "a refused batch writes nothing"
        );
        assert_eq!(kv.increment("cache/n", 2).unwrap(), 2);
        assert!(matches!(
            kv.increment("sessions/n", 1),
            Err(KvError::Denied(_))
        ));
        let (keys, next) = kv.list_keys(0).unwrap();
        assert_eq!(keys, ["cache/a", "cache/n"]);
        assert_eq!(next, None);
        let reader = function(&store, "kv = [\"read:*\"]", sink.clone());
        assert_eq!(reader.get("secret/x").unwrap(), Some(b"hidden".to_vec()));
        let events = sink.take();
        let targets: Vec<&str> = events.iter().map(|e| e.attempt.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "secret/x",
                "sessions/s1",
                "secret/x",
                "secret/x",
                "secret/y",
                "sessions/n"
            ]
        );
    }
}
