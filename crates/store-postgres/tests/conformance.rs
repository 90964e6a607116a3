//! The PostgreSQL backend against the store's conformance suite: each test on a new, empty
//! database of one private server per test process (skipped, saying so once, when PostgreSQL
//! is not installed and `RUNWAY_REQUIRE_POSTGRES` is unset).

use runway_store_postgres::PostgresStore;
use runway_test_postgres::TestPostgres;

fn open() -> Option<(tempfile::TempDir, PostgresStore)> {
    let server = TestPostgres::shared()?;
    let local = tempfile::tempdir().expect("a temporary folder");
    let store =
        PostgresStore::open(&server.create_database(), local.path()).expect("a new database opens");
    Some((local, store))
}

runway_store::conformance_suite!(optional open);
