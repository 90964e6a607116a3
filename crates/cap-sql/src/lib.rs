//! `runway:platform/sql`: SQL for functions on their environment's SQLite database.
//!
//! Grants are enforced by the database engine, never by reading the SQL text:
//!
//! - SQLite's **authorizer** is consulted for every table a statement reads or writes while
//!   it is prepared, including through subqueries, CTEs, joins, views and triggers, and
//!   refuses PRAGMA, ATTACH, schema changes, transactions and dangerous functions outright;
//! - a **pre-update hook** sees every row as it is written, so writes the authorizer cannot
//!   see (rows a `REPLACE` deletes, foreign-key cascades) are refused too: the statement is
//!   interrupted and rolled back;
//! - a statement that changes the database without any write the authorizer approved
//!   (`VACUUM INTO`) is refused;
//! - a **progress handler** stops a statement at the function's deadline.
//!
//! Operators change the schema with [`SqlDatabase::apply`], on a connection with no
//! authorizer; functions never can.

mod authorizer;
mod host;
mod linear;
mod row_hook;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use runway_policy::{Denied, Guard};
use rusqlite::limits::Limit;
use rusqlite::{Connection, OpenFlags, config::DbConfig};

pub use host::{SqlHost, add_to_linker};

use authorizer::Checks;

/// A SQL value, as the WIT `value` variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Integer(i64),
    /// A 64-bit float.
    Real(f64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// Rows a query returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// The rows, each with one value per column.
    pub rows: Vec<Vec<Value>>,
}

/// Why a function's statement did not run.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The policy refused it.
    #[error("{0}")]
    Denied(Denied),
    /// The statement is not valid.
    #[error("invalid statement: {0}")]
    Invalid(String),
    /// It ran and failed.
    #[error("{0}")]
    Failed(String),
}

/// Failures of the operator's side: opening a database or applying a schema.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The database folder could not be created.
    #[error("cannot create the SQL database folder {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An operator's query failed.
    #[error("{0}")]
    Query(String),
    /// SQLite refused.
    #[error("SQL database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
}

/// The SQL database of one environment: a SQLite file the operator owns.
#[derive(Debug, Clone)]
pub struct SqlDatabase {
    path: Arc<Path>,
}

impl SqlDatabase {
    /// The database of an environment whose data lives in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<SqlDatabase, DatabaseError> {
        std::fs::create_dir_all(dir).map_err(|source| DatabaseError::Folder {
            path: dir.to_path_buf(),
            source,
        })?;
        let db = SqlDatabase {
            path: dir.join("sql.db").into(),
        };
        let conn = db.operator_connection()?;
        conn.pragma_update(None, "journal_mode", "wal")
            .map_err(|source| db.error(source))?;
        Ok(db)
    }

    /// A copy of this database for the environment whose data lives in `dir`: its schema
    /// (tables, indexes, views, triggers) and, with `with_data`, its rows too.
    pub fn copy_to(&self, dir: &Path, with_data: bool) -> Result<SqlDatabase, DatabaseError> {
        if !self.path.exists() {
            return SqlDatabase::open(dir);
        }
        let source = self.operator_connection()?;
        if with_data {
            std::fs::create_dir_all(dir).map_err(|source| DatabaseError::Folder {
                path: dir.to_path_buf(),
                source,
            })?;
            let target = dir.join("sql.db");
            source
                .execute("VACUUM INTO ?1", [target.to_string_lossy()])
                .map_err(|err| self.error(err))?;
            return SqlDatabase::open(dir);
        }
        // Shadow tables belong to a virtual table and come back when it is created.
        let mut stmt = source
            .prepare(
                "SELECT sql FROM sqlite_schema
                 WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'
                   AND name NOT IN (SELECT name FROM pragma_table_list WHERE type = 'shadow')
                 ORDER BY CASE type WHEN 'table' THEN 0 WHEN 'index' THEN 1 WHEN 'view' THEN 2 ELSE 3 END, rowid",
            )
            .map_err(|err| self.error(err))?;
        let statements: Vec<String> = stmt
            .query_map([], |row| row.get(0))
            .and_then(Iterator::collect)
            .map_err(|err| self.error(err))?;
        let copy = SqlDatabase::open(dir)?;
        copy.apply(&statements.join(";\n"))?;
        Ok(copy)
    }

    /// Writes every committed change into the main file and empties the write-ahead log
    /// (at shutdown, so the file alone holds the data).
    pub fn checkpoint(&self) -> Result<(), DatabaseError> {
        if !self.path.exists() {
            return Ok(());
        }
        self.operator_connection()?
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|source| self.error(source))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, source: rusqlite::Error) -> DatabaseError {
        DatabaseError::Sqlite {
            path: self.path.to_path_buf(),
            source,
        }
    }

    fn operator_connection(&self) -> Result<Connection, DatabaseError> {
        let conn = Connection::open(&self.path).map_err(|source| self.error(source))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|source| self.error(source))?;
        Ok(conn)
    }

    /// Runs the operator's SQL (schema and seed data) in one transaction: all or nothing.
    pub fn apply(&self, sql: &str) -> Result<(), DatabaseError> {
        let mut conn = self.operator_connection()?;
        let tx = conn.transaction().map_err(|source| self.error(source))?;
        tx.execute_batch(sql).map_err(|source| self.error(source))?;
        tx.commit().map_err(|source| self.error(source))
    }

    /// Runs one read-only query as the operator (for `runway sql query` and tests).
    pub fn operator_query(&self, sql: &str) -> Result<Rows, DatabaseError> {
        let conn = self.operator_connection()?;
        let mut stmt = conn.prepare(sql).map_err(|source| self.error(source))?;
        if !stmt.readonly() {
            return Err(DatabaseError::Query(
                "only read-only statements can be queried; use `runway sql apply` to change \
                 the database"
                    .into(),
            ));
        }
        collect_rows(&mut stmt, [], usize::MAX).map_err(|err| DatabaseError::Query(err.to_string()))
    }

    /// SQL access for one release of one function, checked by `guard`.
    pub fn for_function(&self, guard: Guard, max_result_bytes: usize) -> FunctionSql {
        FunctionSql {
            db: self.clone(),
            guard,
            max_result_bytes,
            idle: Mutex::new(Vec::new()),
        }
    }
}

/// Idle connections kept per release; more are opened under load and closed after.
const IDLE_CONNECTIONS: usize = 4;
/// `;` characters accepted in one statement's text (in literals and comments too).
const MAX_SEMICOLONS: usize = 64;
/// The largest string or blob a function's SQL may produce or store.
const MAX_VALUE_BYTES: i32 = 4 << 20;
/// The most columns a function's query may return or a table it creates may have.
const MAX_COLUMNS: i32 = 128;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;
/// How many SQLite virtual-machine steps run between deadline checks.
const PROGRESS_STEPS: i32 = 1000;

/// One release's SQL access: connections whose authorizer enforces its grants.
pub struct FunctionSql {
    db: SqlDatabase,
    guard: Guard,
    max_result_bytes: usize,
    idle: Mutex<Vec<GuardedConnection>>,
}

impl std::fmt::Debug for FunctionSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionSql")
            .field("db", &self.db.path)
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

struct GuardedConnection {
    conn: Connection,
    checks: Arc<Mutex<Checks>>,
    row_hook: Option<row_hook::RowHook>,
}

impl Drop for GuardedConnection {
    fn drop(&mut self) {
        if let Some(hook) = self.row_hook.take() {
            hook.remove(&self.conn);
        }
    }
}

impl FunctionSql {
    /// Runs one statement and returns its rows; it must finish before `deadline`.
    pub fn query(&self, sql: &str, params: &[Value], deadline: Instant) -> Result<Rows, SqlError> {
        self.with_connection(deadline, |conn, checks| {
            let mut stmt = prepare(conn, checks, sql)?;
            let readonly = stmt.readonly();
            let rows = in_transaction(conn, checks, readonly, || {
                collect_rows(
                    &mut stmt,
                    rusqlite::params_from_iter(params),
                    self.max_result_bytes,
                )
            });
            discard_if_denied(stmt, rows)
        })
    }

    /// Runs one statement and returns the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[Value], deadline: Instant) -> Result<u64, SqlError> {
        self.with_connection(deadline, |conn, checks| {
            let mut stmt = prepare(conn, checks, sql)?;
            let readonly = stmt.readonly();
            let changed = in_transaction(conn, checks, readonly, || {
                stmt.execute(rusqlite::params_from_iter(params))
                    .map(|n| n as u64)
                    .map_err(run_error)
            });
            discard_if_denied(stmt, changed)
        })
    }

    fn with_connection<R>(
        &self,
        deadline: Instant,
        run: impl FnOnce(&Connection, &Mutex<Checks>) -> Result<R, SqlError>,
    ) -> Result<R, SqlError> {
        let pooled = self.idle.lock().expect("pool lock").pop();
        let guarded = match pooled {
            Some(guarded) => guarded,
            None => self
                .connect()
                .map_err(|err| SqlError::Failed(err.to_string()))?,
        };
        guarded.checks.lock().expect("checks lock").begin(deadline);
        let result = run(&guarded.conn, &guarded.checks);
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < IDLE_CONNECTIONS && guarded.conn.is_autocommit() {
            idle.push(guarded);
        }
        result
    }

    fn connect(&self) -> Result<GuardedConnection, DatabaseError> {
        let db = &self.db;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&db.path, flags).map_err(|e| db.error(e))?;
        let setup = || -> rusqlite::Result<()> {
            conn.busy_timeout(std::time::Duration::from_secs(2))?;
            conn.pragma_update(None, "foreign_keys", "on")?;
            // Defence in depth beneath the authorizer: no writable schema, no functions with
            // side effects run from the schema, no attached databases, bounded sizes.
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
            conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
            conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, 1 << 20)?;
            conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)?;
            conn.set_limit(Limit::SQLITE_LIMIT_COLUMN, MAX_COLUMNS)?;
            conn.set_limit(Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, 200)?;
            linear::install(&conn)?;
            Ok(())
        };
        setup().map_err(|e| db.error(e))?;
        // Audit mode records every attempt, so it prepares every statement afresh.
        conn.set_prepared_statement_cache_capacity(match self.guard.mode() {
            runway_policy::PolicyMode::Enforce => STATEMENT_CACHE,
            runway_policy::PolicyMode::Audit => 0,
        });
        let checks = Arc::new(Mutex::new(Checks::new(self.guard.clone())));
        authorizer::install(&conn, &checks, PROGRESS_STEPS);
        let row_hook = Some(row_hook::RowHook::install(&conn, &checks));
        Ok(GuardedConnection {
            conn,
            checks,
            row_hook,
        })
    }
}

/// Prepares a statement, or takes it from the connection's cache.
///
/// The authorizer decides while SQLite prepares, so a cached statement carries the
/// decisions made for this release's policy when it was first prepared (SQLite prepares it
/// again, authorizer included, whenever the schema changes). A statement refused after
/// preparing is discarded, never cached.
fn prepare<'c>(
    conn: &'c Connection,
    checks: &Mutex<Checks>,
    sql: &str,
) -> Result<rusqlite::CachedStatement<'c>, SqlError> {
    // rusqlite looks for a second statement by preparing the rest of the text recursively,
    // one stack frame per `;`: a text of thousands of empty statements would overflow the
    // stack. One statement needs few.
    if sql.bytes().filter(|b| *b == b';').count() > MAX_SEMICOLONS {
        return Err(SqlError::Invalid(format!(
            "the statement contains more than {MAX_SEMICOLONS} `;`: send one statement per call"
        )));
    }
    let prepared = conn.prepare_cached(sql);
    let mut checks = checks.lock().expect("checks lock");
    let fresh = checks.freshly_prepared();
    if prepared.is_ok() && fresh {
        checks
            .settle_unplaced_reads(|table| conn.table_exists(Some("main"), table).unwrap_or(true));
    }
    if let Some(denied) = checks.take_denial() {
        if let Ok(stmt) = prepared {
            stmt.discard();
        }
        return Err(SqlError::Denied(denied));
    }
    let stmt = prepared.map_err(|err| match err {
        rusqlite::Error::MultipleStatement => {
            SqlError::Invalid("more than one statement: send one statement per call".into())
        }
        err => {
            let message = sqlite_message(&err);
            // "No such table" for a table the function has no grant on would tell it which
            // tables exist; it gets the same denial as for a table that does.
            match message.strip_prefix("no such table: ") {
                Some(table) => match checks.refuse_unknown_table(table) {
                    Some(denied) => SqlError::Denied(denied),
                    None => SqlError::Invalid(message),
                },
                None => SqlError::Invalid(message),
            }
        }
    })?;
    if !stmt.readonly() && !checks.write_is_checked(sql) {
        // Nothing the statement writes went through the authorizer (VACUUM, VACUUM INTO):
        // no grant covers it.
        stmt.discard();
        return Err(SqlError::Denied(checks.refuse_unchecked_write(sql)));
    }
    Ok(stmt)
}

/// Runs a statement; one that writes runs in its own transaction, committed only if no row
/// it wrote was refused. (Interrupting a statement from the row hook does not undo a row
/// already written when the statement has no further step at which to stop.)
fn in_transaction<R>(
    conn: &Connection,
    checks: &Mutex<Checks>,
    readonly: bool,
    run: impl FnOnce() -> Result<R, SqlError>,
) -> Result<R, SqlError> {
    if readonly {
        return finish(checks, run());
    }
    trusted(conn, checks, "BEGIN IMMEDIATE")
        .map_err(|err| SqlError::Failed(sqlite_message(&err)))?;
    let result = finish(checks, run());
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    if !conn.is_autocommit()
        && let Err(err) = trusted(conn, checks, end)
    {
        if !conn.is_autocommit() {
            _ = trusted(conn, checks, "ROLLBACK");
        }
        return Err(SqlError::Failed(sqlite_message(&err)));
    }
    result
}

/// A statement refused while it ran (SQLite re-prepared it after a schema change and the
/// new plan reads what is not granted) leaves the cache, so its next use is checked anew.
fn discard_if_denied<R>(
    stmt: rusqlite::CachedStatement<'_>,
    result: Result<R, SqlError>,
) -> Result<R, SqlError> {
    if matches!(result, Err(SqlError::Denied(_))) {
        stmt.discard();
    }
    result
}

/// Runs one of Runway's own statements, past the authorizer.
fn trusted(conn: &Connection, checks: &Mutex<Checks>, sql: &str) -> rusqlite::Result<()> {
    checks.lock().expect("checks lock").trusted = true;
    let result = conn.execute_batch(sql);
    checks.lock().expect("checks lock").trusted = false;
    result
}

/// Maps the result of running a statement, preferring a denial recorded while it ran.
fn finish<R>(checks: &Mutex<Checks>, result: Result<R, SqlError>) -> Result<R, SqlError> {
    let mut checks = checks.lock().expect("checks lock");
    // Reads SQLite reported while re-preparing the statement after a schema change: with
    // no connection at hand to tell a CTE from a table, each must be granted.
    checks.settle_unplaced_reads(|_| true);
    if let Some(denied) = checks.take_denial() {
        return Err(SqlError::Denied(denied));
    }
    if checks.past_deadline() && result.is_err() {
        return Err(SqlError::Failed(
            "the statement ran past the function's timeout and was stopped".into(),
        ));
    }
    result
}

fn sqlite_message(err: &rusqlite::Error) -> String {
    match err {
        rusqlite::Error::SqliteFailure(_, Some(message)) => message.clone(),
        other => other.to_string(),
    }
}

fn run_error(err: rusqlite::Error) -> SqlError {
    match err {
        rusqlite::Error::InvalidParameterCount(given, expected) => SqlError::Invalid(format!(
            "the statement has {expected} parameters but {given} values were given"
        )),
        err => SqlError::Failed(sqlite_message(&err)),
    }
}

fn collect_rows(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    max_bytes: usize,
) -> Result<Rows, SqlError> {
    let columns: Vec<String> = stmt.column_names().into_iter().map(str::to_owned).collect();
    let width = columns.len();
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    let mut cursor = stmt.query(params).map_err(run_error)?;
    let too_large = || {
        SqlError::Failed(format!(
            "the result is larger than {max_bytes} bytes (the function's memory size); \
             select fewer rows or columns (LIMIT)"
        ))
    };
    while let Some(row) = cursor.next().map_err(run_error)? {
        let mut values = Vec::with_capacity(width);
        for index in 0..width {
            let raw = row.get_ref(index).map_err(run_error)?;
            // Counted before copying, so one wide row cannot overshoot the budget.
            bytes += 16
                + match raw {
                    rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                        b.len()
                    }
                    _ => 0,
                };
            if bytes > max_bytes {
                return Err(too_large());
            }
            let value = match raw {
                rusqlite::types::ValueRef::Null => Value::Null,
                rusqlite::types::ValueRef::Integer(i) => Value::Integer(i),
                rusqlite::types::ValueRef::Real(r) => Value::Real(r),
                rusqlite::types::ValueRef::Text(t) => {
                    Value::Text(String::from_utf8_lossy(t).into_owned())
                }
                rusqlite::types::ValueRef::Blob(b) => Value::Blob(b.to_vec()),
            };
            values.push(value);
        }
        rows.push(values);
    }
    Ok(Rows { columns, rows })
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

#[cfg(test)]
mod tests;
