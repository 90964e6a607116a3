//! What belongs to one node rather than to the cluster: the checksums of the compiled code in
//! this node's own cache, kept in a small JSON file in the node's folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use runway_store::StoreError;

/// The file, in the node's folder, that maps compiled-code cache keys to their SHA-256.
pub const CHECKSUMS_FILE: &str = "compiled-checksums.json";

/// The node's compiled-code checksums: loaded at open, written through on every change.
pub(crate) struct NodeLocal {
    path: PathBuf,
    checksums: Mutex<BTreeMap<String, String>>,
}

impl NodeLocal {
    /// Loads the checksums file in `dir` (creating the folder; no file is no checksums).
    pub(crate) fn open(dir: &Path) -> Result<NodeLocal, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(CHECKSUMS_FILE);
        let checksums = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                StoreError::Corrupt(format!("{} does not parse: {e}", path.display()))
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(StoreError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        Ok(NodeLocal {
            path,
            checksums: Mutex::new(checksums),
        })
    }

    fn checksums(&self) -> MutexGuard<'_, BTreeMap<String, String>> {
        self.checksums.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn checksum(&self, cache_key: &str) -> Option<String> {
        self.checksums().get(cache_key).cloned()
    }

    /// Records a checksum and rewrites the file (a new file renamed over the old, so a crash
    /// leaves the old file or the new one, never half of one).
    pub(crate) fn set_checksum(&self, cache_key: &str, sha256: &str) -> Result<(), StoreError> {
        let mut checksums = self.checksums();
        let previous = checksums.insert(cache_key.to_owned(), sha256.to_owned());
        let json = serde_json::to_vec_pretty(&*checksums).expect("string maps serialise");
        let tmp = self.path.with_extension("json.tmp");
        let written = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(source) = written {
            // Memory and file stay in step: the failed entry is not half-recorded.
            match previous {
                Some(old) => checksums.insert(cache_key.to_owned(), old),
                None => checksums.remove(cache_key),
            };
            return Err(StoreError::Io {
                action: "write",
                path: self.path.clone(),
                source,
            });
        }
        Ok(())
    }
}
