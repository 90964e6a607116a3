use std::sync::Arc;
use std::time::{Duration, Instant};

use runway_policy::{AuditEvent, Caller, Guard, MemoryAudit, Policy, PolicyMode};

use super::*;

const SCHEMA: &str = "
    CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, card TEXT);
    CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, total REAL);
    CREATE INDEX orders_by_customer ON orders (customer_id);
    CREATE TABLE audit_log (id INTEGER PRIMARY KEY, msg TEXT);
    CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
    CREATE VIEW order_customers AS
        SELECT orders.id, customers.name, customers.card FROM orders JOIN customers
        ON orders.customer_id = customers.id;
    CREATE TRIGGER notes_spill AFTER INSERT ON notes
        BEGIN INSERT INTO customers (name, card) VALUES (NEW.body, 'stolen'); END;
    INSERT INTO customers VALUES (1, 'Ada', '4111-1111'), (2, 'Bob', '5500-0000');
    INSERT INTO orders VALUES (1, 1, 10.5), (2, 2, 99.0);
    INSERT INTO audit_log VALUES (1, 'first');
";

struct Fixture {
    _dir: tempfile::TempDir,
    db: SqlDatabase,
    sink: Arc<MemoryAudit>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = SqlDatabase::open(dir.path()).unwrap();
        db.apply(SCHEMA).unwrap();
        Fixture {
            _dir: dir,
            db,
            sink: Arc::new(MemoryAudit::default()),
        }
    }

    fn function(&self, policy: &str, mode: PolicyMode) -> FunctionSql {
        let policy: Policy = toml::from_str(policy).unwrap();
        let caller = Caller {
            environment: "prod".into(),
            function: "orders-api".into(),
            release: 1,
        };
        let guard = Guard::new(caller, Arc::new(policy), mode, self.sink.clone());
        self.db.for_function(guard, 1 << 20)
    }

    fn count(&self, table: &str) -> i64 {
        let rows = self
            .db
            .operator_query(&format!("SELECT count(*) FROM {table}"))
            .unwrap();
        match rows.rows[0][0] {
            Value::Integer(n) => n,
            ref other => panic!("{other:?}"),
        }
    }

    fn snapshot(&self) -> Vec<Rows> {
        ["customers", "orders", "audit_log", "notes"]
            .iter()
            .map(|t| {
                self.db
                    .operator_query(&format!("SELECT * FROM {t} ORDER BY id"))
                    .unwrap()
            })
            .collect()
    }

    fn events(&self) -> Vec<AuditEvent> {
        self.sink.take()
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

const ORDERS_POLICY: &str = "sql = [\"select:orders\", \"insert:audit_log\", \"insert:notes\"]";

#[test]
fn granted_statements_work_with_typed_parameters() {
    let f = Fixture::new();
    let sql = f.function(ORDERS_POLICY, PolicyMode::Enforce);
    let rows = sql
        .query(
            "SELECT id, total FROM orders WHERE customer_id = ? ORDER BY id",
            &[Value::Integer(2)],
            soon(),
        )
        .unwrap();
    assert_eq!(rows.columns, ["id", "total"]);
    assert_eq!(rows.rows, vec![vec![Value::Integer(2), Value::Real(99.0)]]);
    let changed = sql
        .execute(
            "INSERT INTO audit_log (msg) VALUES (?)",
            &[Value::Text("viewed".into())],
            soon(),
        )
        .unwrap();
    assert_eq!(changed, 1);
    assert_eq!(f.count("audit_log"), 2);
    assert!(f.events().is_empty());
}

/// Every statement here must be refused, audited, and leave the database as it was.
#[test]
fn escalation_attempts_are_refused_audited_and_change_nothing() {
    let f = Fixture::new();
    let sql = f.function(ORDERS_POLICY, PolicyMode::Enforce);
    let before = f.snapshot();
    let attempts: &[(&str, &str)] = &[
        ("SELECT * FROM customers", "customers"),
        ("SELECT count(*) FROM customers", "customers"),
        ("SELECT 1 FROM customers LIMIT 1", "customers"),
        (
            "SELECT * FROM orders WHERE customer_id IN (SELECT id FROM customers)",
            "customers",
        ),
        (
            "WITH c AS (SELECT * FROM customers) SELECT * FROM c",
            "customers",
        ),
        (
            "SELECT * FROM orders JOIN customers ON customers.id = orders.customer_id",
            "customers",
        ),
        ("SELECT * FROM order_customers", "customers"),
        (
            "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 3) \
             SELECT x, (SELECT card FROM customers WHERE id = x) FROM r",
            "customers",
        ),
        ("SeLeCt * FrOm CuStOmErS", "customers"),
        (
            "SELECT * FROM /* orders */ customers -- orders",
            "customers",
        ),
        ("SELECT * FROM \"customers\"", "customers"),
        ("SELECT * FROM main.customers", "customers"),
        (
            "SELECT EXISTS (SELECT 1 FROM customers WHERE card LIKE '4%')",
            "customers",
        ),
        ("SELECT * FROM sqlite_master", "sqlite_master"),
        ("SELECT * FROM sqlite_schema", "sqlite_master"),
        (
            "SELECT * FROM sqlite_temp_master",
            "temp.sqlite_temp_master",
        ),
        (
            "SELECT * FROM pragma_table_info('customers')",
            "pragma_table_info",
        ),
        ("PRAGMA table_info(customers)", "table_info"),
        ("PRAGMA writable_schema = ON", "writable_schema"),
        (
            "ATTACH DATABASE '/tmp/runway-attach.db' AS other",
            "/tmp/runway-attach.db",
        ),
        ("SELECT load_extension('/tmp/evil.so')", "load_extension"),
        (
            "INSERT INTO orders (customer_id, total) VALUES (1, 1)",
            "orders",
        ),
        ("UPDATE orders SET total = 0", "orders"),
        ("DELETE FROM orders", "orders"),
        (
            "INSERT OR REPLACE INTO audit_log (id, msg) VALUES (1, 'overwritten')",
            "audit_log",
        ),
        (
            "REPLACE INTO audit_log (id, msg) VALUES (1, 'overwritten')",
            "audit_log",
        ),
        (
            "INSERT INTO audit_log (id, msg) VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET \
             msg = 'upserted'",
            "audit_log",
        ),
        (
            "INSERT INTO audit_log (msg) SELECT card FROM customers",
            "customers",
        ),
        (
            "INSERT INTO notes (body) VALUES ('trigger writes customers')",
            "customers",
        ),
        (
            "INSERT INTO audit_log (msg) VALUES ('x') RETURNING (SELECT card FROM customers)",
            "customers",
        ),
        ("SELECT * FROM orders; DELETE FROM orders", "orders"),
        ("CREATE TABLE evil (x)", "sqlite_master"),
        ("CREATE TEMP TABLE evil (x)", "temp.sqlite_temp_master"),
        ("DROP TABLE orders", "sqlite_master"),
        (
            "CREATE TRIGGER t AFTER INSERT ON audit_log BEGIN DELETE FROM orders; END",
            "create trigger t",
        ),
        ("ALTER TABLE orders ADD COLUMN x", "alter table orders"),
        ("BEGIN", "Begin"),
        (
            "VACUUM",
            "the database file (a statement that writes no table, such as VACUUM)",
        ),
        (
            "VACUUM INTO '/tmp/runway-vacuum-copy.db'",
            "the database file (a statement that writes no table, such as VACUUM)",
        ),
    ];
    for (statement, target) in attempts {
        let result = if statement.starts_with("SELECT") || statement.starts_with("WITH") {
            sql.query(statement, &[], soon()).map(|_| 0)
        } else {
            sql.execute(statement, &[], soon())
        };
        match result {
            Err(SqlError::Denied(denied)) => {
                assert_eq!(denied.function, "orders-api");
                let message = denied.to_string();
                assert!(
                    message.contains("denied by policy"),
                    "{statement}: {message}"
                );
            }
            other => panic!("{statement}: expected a denial, got {other:?}"),
        }
        let events = f.events();
        assert!(
            events
                .iter()
                .any(|e| e.enforced && e.attempt.target == *target),
            "{statement}: no audit event for `{target}` in {events:?}"
        );
        assert_eq!(f.snapshot(), before, "{statement} changed the database");
    }
    assert!(attempts.len() >= 30);
    assert!(!std::path::Path::new("/tmp/runway-vacuum-copy.db").exists());
}

#[test]
fn multiple_statements_are_invalid_even_when_each_is_granted() {
    let f = Fixture::new();
    let sql = f.function(ORDERS_POLICY, PolicyMode::Enforce);
    let err = sql
        .query("SELECT 1 FROM orders; SELECT 2 FROM orders", &[], soon())
        .unwrap_err();
    assert!(
        matches!(err, SqlError::Invalid(ref m) if m.contains("one statement")),
        "{err}"
    );
}

#[test]
fn replace_with_no_conflict_is_a_plain_insert() {
    let f = Fixture::new();
    let sql = f.function(ORDERS_POLICY, PolicyMode::Enforce);
    let changed = sql
        .execute(
            "INSERT OR REPLACE INTO audit_log (id, msg) VALUES (7, 'new')",
            &[],
            soon(),
        )
        .unwrap();
    assert_eq!(changed, 1);
    assert_eq!(f.count("audit_log"), 2);
}

#[test]
fn audit_mode_lets_reads_through_and_records_them() {
    let f = Fixture::new();
    let sql = f.function(ORDERS_POLICY, PolicyMode::Audit);
    let rows = sql
        .query("SELECT name, card FROM customers", &[], soon())
        .unwrap();
    assert_eq!(rows.rows.len(), 2);
    sql.execute(
        "UPDATE orders SET total = total + 1 WHERE id = 1",
        &[],
        soon(),
    )
    .unwrap();
    let events = f.events();
    let seen: Vec<(String, String, bool)> = events
        .iter()
        .map(|e| {
            (
                e.attempt.operation.clone(),
                e.attempt.target.clone(),
                e.enforced,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("select".into(), "customers".into(), false),
            ("update".into(), "orders".into(), false),
        ]
    );
    // Schema changes have no grant: refused even in audit mode.
    let err = sql.execute("DROP TABLE orders", &[], soon()).unwrap_err();
    assert!(matches!(err, SqlError::Denied(_)), "{err}");
    assert_eq!(f.count("orders"), 2);
}

#[test]
fn a_runaway_query_stops_at_the_deadline() {
    let f = Fixture::new();
    let sql = f.function(ORDERS_POLICY, PolicyMode::Enforce);
    let err = sql
        .query(
            "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT count(*) FROM r",
            &[],
            Instant::now() + Duration::from_millis(50),
        )
        .unwrap_err();
    assert!(
        matches!(err, SqlError::Failed(ref m) if m.contains("timeout")),
        "{err}"
    );
    // The connection is usable afterwards.
    sql.query("SELECT id FROM orders", &[], soon()).unwrap();
}

#[test]
fn results_larger_than_the_memory_size_fail_cleanly() {
    let f = Fixture::new();
    let policy: Policy = toml::from_str(ORDERS_POLICY).unwrap();
    let guard = Guard::new(
        Caller {
            environment: "prod".into(),
            function: "f".into(),
            release: 1,
        },
        Arc::new(policy),
        PolicyMode::Enforce,
        f.sink.clone(),
    );
    let sql = f.db.for_function(guard, 1024);
    let err = sql
        .query(
            "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < 1000) \
             SELECT x, 'padding padding padding' FROM r",
            &[],
            soon(),
        )
        .unwrap_err();
    assert!(
        matches!(err, SqlError::Failed(ref m) if m.contains("larger than 1024")),
        "{err}"
    );
}

#[test]
fn json_table_functions_are_not_tables() {
    let f = Fixture::new();
    let sql = f.function(ORDERS_POLICY, PolicyMode::Enforce);
    let rows = sql
        .query("SELECT value FROM json_each('[1,2,3]')", &[], soon())
        .unwrap();
    assert_eq!(rows.rows.len(), 3);
}

#[test]
fn cached_statements_keep_their_verdict_and_refused_ones_are_never_cached() {
    let f = Fixture::new();
    let sql = f.function(ORDERS_POLICY, PolicyMode::Enforce);
    for _ in 0..3 {
        let err = sql
            .query("SELECT * FROM customers", &[], soon())
            .unwrap_err();
        assert!(matches!(err, SqlError::Denied(_)), "{err}");
        let err = sql.execute("VACUUM", &[], soon()).unwrap_err();
        assert!(matches!(err, SqlError::Denied(_)), "{err}");
        let err = sql
            .query("SELECT count(*) FROM customers", &[], soon())
            .unwrap_err();
        assert!(matches!(err, SqlError::Denied(_)), "{err}");
        sql.query("SELECT id FROM orders", &[], soon()).unwrap();
        sql.execute("INSERT INTO audit_log (msg) VALUES ('again')", &[], soon())
            .unwrap();
    }
    // Every refusal is audited, cached or not.
    assert_eq!(f.events().len(), 9);
    // A schema change makes SQLite prepare cached statements again, authorizer included.
    f.db.apply("DROP VIEW order_customers; ALTER TABLE orders RENAME TO orders_old; CREATE VIEW orders AS SELECT * FROM customers;")
        .unwrap();
    let err = sql.query("SELECT id FROM orders", &[], soon()).unwrap_err();
    assert!(matches!(err, SqlError::Denied(_)), "{err}");
}

#[test]
fn a_missing_table_looks_like_any_other_ungranted_table() {
    let f = Fixture::new();
    let sql = f.function(ORDERS_POLICY, PolicyMode::Enforce);
    let missing = sql.query("SELECT * FROM payroll", &[], soon()).unwrap_err();
    let existing = sql
        .query("SELECT * FROM customers", &[], soon())
        .unwrap_err();
    assert!(matches!(missing, SqlError::Denied(_)), "{missing}");
    assert!(matches!(existing, SqlError::Denied(_)), "{existing}");
    assert_eq!(
        missing.to_string().replace("payroll", "X"),
        existing.to_string().replace("customers", "X")
    );
    // A typo in a granted table's name is the developer's, and says so.
    let f2 = Fixture::new();
    let own = f2.function("sql = [\"select:order_items\"]", PolicyMode::Enforce);
    let err = own
        .query("SELECT * FROM order_items", &[], soon())
        .unwrap_err();
    assert!(
        matches!(err, SqlError::Invalid(ref m) if m.contains("no such table")),
        "{err}"
    );
}

#[test]
fn hostile_statements_fail_cleanly_without_exhausting_the_node() {
    let f = Fixture::new();
    let sql = f.function(ORDERS_POLICY, PolicyMode::Enforce);
    // Thousands of statements would overflow the stack of rusqlite's recursive check.
    let err = sql
        .query(&"SELECT 1;".repeat(100_000), &[], soon())
        .unwrap_err();
    assert!(
        matches!(err, SqlError::Invalid(ref m) if m.contains("`;`")),
        "{err}"
    );
    // A CTE named like a table does not excuse reading the real table elsewhere.
    let err = sql
        .query(
            "SELECT (SELECT count(*) FROM customers), \
             (WITH customers AS (SELECT 1) SELECT 1 FROM customers)",
            &[],
            soon(),
        )
        .unwrap_err();
    assert!(matches!(err, SqlError::Denied(_)), "{err}");
    // Wide rows and huge values are refused before they are copied.
    let err = sql
        .query("SELECT zeroblob(8000000)", &[], soon())
        .unwrap_err();
    assert!(
        matches!(err, SqlError::Failed(ref m) if m.contains("too big")),
        "{err}"
    );
    let columns = vec!["zeroblob(1000000)"; 200].join(", ");
    let err = sql
        .query(&format!("SELECT {columns}"), &[], soon())
        .unwrap_err();
    assert!(!matches!(err, SqlError::Denied(_)), "{err}");
    // count(*) over a table-valued function reads no table.
    let rows = sql
        .query("SELECT count(*) FROM json_each('[1,2]')", &[], soon())
        .unwrap();
    assert_eq!(rows.rows[0][0], Value::Integer(2));
}

#[test]
fn instr_and_replace_behave_as_sqlite_in_linear_time() {
    let f = Fixture::new();
    let sql = f.function(ORDERS_POLICY, PolicyMode::Enforce);
    let one = |q: &str| sql.query(q, &[], soon()).unwrap().rows[0][0].clone();
    assert_eq!(one("SELECT instr('héllo wörld', 'wö')"), Value::Integer(7));
    assert_eq!(one("SELECT instr('abc', '')"), Value::Integer(1));
    assert_eq!(one("SELECT instr('abc', 'x')"), Value::Integer(0));
    assert_eq!(one("SELECT instr(x'00010203', x'0203')"), Value::Integer(3));
    assert_eq!(one("SELECT instr(12345, 34)"), Value::Integer(3));
    assert_eq!(one("SELECT instr(NULL, 'a')"), Value::Null);
    assert_eq!(
        one("SELECT replace('aaaa', 'aa', 'b')"),
        Value::Text("bb".into())
    );
    assert_eq!(
        one("SELECT replace('abc', '', 'x')"),
        Value::Text("abc".into())
    );
    assert_eq!(one("SELECT replace('abc', 'b', NULL)"), Value::Null);
    assert_eq!(
        one("SELECT replace(1.5, '.', ',')"),
        Value::Text("1,5".into())
    );
    // SQLite's own versions compare at every position: this call would run for minutes,
    // uninterruptible, and then fail at the deadline. The linear versions answer within it.
    let rows = sql
        .query(
            "SELECT instr(replace(hex(zeroblob(1000000)), '0', 'a'), \
             replace(hex(zeroblob(500000)), '0', 'a') || 'b')",
            &[],
            Instant::now() + Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(rows.rows[0][0], Value::Integer(0));
}

#[test]
fn a_schema_copy_has_every_table_index_view_and_trigger_and_no_rows() {
    let fixture = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let copy = fixture.db.copy_to(&dir.path().join("dev"), false).unwrap();
    let schema = |db: &SqlDatabase| {
        db.operator_query("SELECT type, name FROM sqlite_schema ORDER BY type, name")
            .unwrap()
            .rows
    };
    assert_eq!(schema(&copy), schema(&fixture.db));
    let rows = copy
        .operator_query("SELECT count(*) FROM customers")
        .unwrap();
    assert_eq!(rows.rows[0][0], Value::Integer(0));
    // The trigger came across and works in the copy.
    copy.apply("INSERT INTO notes (body) VALUES ('x')").unwrap();
    let rows = copy
        .operator_query("SELECT count(*) FROM customers")
        .unwrap();
    assert_eq!(rows.rows[0][0], Value::Integer(1));
    assert_eq!(fixture.count("notes"), 0, "the source is untouched");
}

#[test]
fn a_data_copy_has_the_rows_and_then_lives_its_own_life() {
    let fixture = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let copy = fixture.db.copy_to(&dir.path().join("dev"), true).unwrap();
    let rows = copy
        .operator_query("SELECT name FROM customers ORDER BY id")
        .unwrap();
    assert_eq!(rows.rows.len(), 2);
    copy.apply("DELETE FROM customers").unwrap();
    assert_eq!(fixture.count("customers"), 2);
}
