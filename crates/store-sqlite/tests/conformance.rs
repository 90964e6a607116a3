//! The SQLite backend against the store's conformance suite.

use runway_store_sqlite::SqliteStore;

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let store = SqliteStore::open(dir.path()).expect("a new store opens");
    (dir, store)
}

runway_store::conformance_suite!(open);
