//! The checks SQLite runs for us: the authorizer (prepare time), the pre-update hook (each
//! row written) and the progress handler (deadline).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use runway_policy::{Attempt, Capability, Denied, Guard, PolicyMode, SqlOperation};
use rusqlite::Connection;
use rusqlite::ffi;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};

/// SQL functions a function may never call, whatever it is granted: they reach outside the
/// database (files, extensions) or change how SQLite parses text.
/// Table-valued functions that read no table: reading them needs no grant.
const PURE_TABLE_FUNCTIONS: &[&str] = &["json_each", "json_tree"];

const FORBIDDEN_FUNCTIONS: &[&str] = &[
    "load_extension",
    "fts3_tokenizer",
    "readfile",
    "writefile",
    "edit",
    "sqlite_dbpage",
];

/// The state the hooks share with the connection's current call.
pub(crate) struct Checks {
    guard: Guard,
    denial: Option<Denied>,
    /// Attempts already recorded during this call, so one statement reading five columns of
    /// a table is one audit event, not five.
    recorded: Vec<(SqlOperation, String)>,
    saw_write: bool,
    /// Reads SQLite reported without a schema: either a CTE (which reads nothing itself) or
    /// a whole-table read such as `count(*)`. Decided once the statement is prepared, when
    /// every CTE name has been seen as an accessor.
    unplaced_reads: Vec<String>,
    /// Names of the views, triggers and CTEs the statement went through.
    accessors: Vec<String>,
    deadline: Instant,
    past_deadline: bool,
    /// Set while Runway itself runs a statement (BEGIN, COMMIT, ROLLBACK) on the connection.
    pub(crate) trusted: bool,
    /// Authorizer calls during this call: none means the statement came from the cache,
    /// already vetted when it was first prepared.
    authorizer_calls: u32,
    /// Writing statements that passed every check when prepared, so a cache hit (which
    /// calls no authorizer) is not mistaken for a statement that writes unchecked.
    vetted_writes: std::collections::HashSet<String>,
}

/// Vetted writing statements remembered per connection before the set starts over.
const VETTED_WRITES: usize = 1024;

impl Checks {
    pub(crate) fn new(guard: Guard) -> Checks {
        Checks {
            guard,
            denial: None,
            recorded: Vec::new(),
            saw_write: false,
            unplaced_reads: Vec::new(),
            accessors: Vec::new(),
            deadline: Instant::now(),
            past_deadline: false,
            trusted: false,
            authorizer_calls: 0,
            vetted_writes: std::collections::HashSet::new(),
        }
    }

    /// Resets the state for a new call that must finish before `deadline`.
    pub(crate) fn begin(&mut self, deadline: Instant) {
        self.denial = None;
        self.recorded.clear();
        self.saw_write = false;
        self.unplaced_reads.clear();
        self.accessors.clear();
        self.deadline = deadline;
        self.past_deadline = false;
        self.authorizer_calls = 0;
    }

    /// Whether the statement of this call was prepared now (not taken from the cache).
    pub(crate) fn freshly_prepared(&self) -> bool {
        self.authorizer_calls > 0
    }

    pub(crate) fn take_denial(&mut self) -> Option<Denied> {
        self.denial.take()
    }

    /// Decides the schema-less reads of a prepared statement: names that were CTEs need
    /// nothing; any other name is a table and needs its grant.
    ///
    /// `is_table` says whether `main` has a real table of that name: a CTE named like a
    /// table elsewhere in the statement must not excuse a read of that table.
    pub(crate) fn settle_unplaced_reads(&mut self, is_table: impl Fn(&str) -> bool) {
        let reads = std::mem::take(&mut self.unplaced_reads);
        for table in reads {
            if PURE_TABLE_FUNCTIONS.contains(&table.to_ascii_lowercase().as_str()) {
                continue;
            }
            let is_cte = self
                .accessors
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&table));
            if !is_cte || is_table(&table) {
                self.table_access(SqlOperation::Select, Some("main"), &table);
            }
        }
    }

    /// Whether a writing statement is accounted for: its table writes went through the
    /// authorizer now, or it did when it was first prepared and cached.
    pub(crate) fn write_is_checked(&mut self, sql: &str) -> bool {
        if self.saw_write {
            if self.vetted_writes.len() >= VETTED_WRITES {
                self.vetted_writes.clear();
            }
            self.vetted_writes.insert(sql.to_owned());
            return true;
        }
        self.authorizer_calls == 0 && self.vetted_writes.contains(sql)
    }

    pub(crate) fn past_deadline(&self) -> bool {
        self.past_deadline
    }

    /// A denial for a table SQLite says does not exist, unless the function holds a grant on
    /// that name (then "no such table" is the developer's own mistake and is shown as is).
    pub(crate) fn refuse_unknown_table(&mut self, name: &str) -> Option<Denied> {
        let table = name.strip_prefix("main.").unwrap_or(name);
        let granted = self
            .guard
            .policy()
            .sql
            .iter()
            .any(|g| g.table.eq_ignore_ascii_case(table));
        if granted {
            return None;
        }
        self.guard
            .refuse(Attempt::new(
                Capability::Sql,
                SqlOperation::Select.as_str(),
                table.to_ascii_lowercase(),
            ))
            .err()
    }

    /// A statement that writes without any table write being authorized.
    pub(crate) fn refuse_unchecked_write(&mut self, _sql: &str) -> Denied {
        // The statement text is not recorded: it may carry the function's data.
        self.guard.refuse_always(Attempt::new(
            Capability::Sql,
            "write",
            "the database file (a statement that writes no table, such as VACUUM)",
        ))
    }

    /// Decides `operation` on `table` in schema `database`; returns whether it may proceed.
    fn table_access(
        &mut self,
        operation: SqlOperation,
        database: Option<&str>,
        table: &str,
    ) -> bool {
        if self.denial.is_some() {
            return false;
        }
        if let Some(database) = database
            && database != "main"
        {
            return self.never(operation.as_str(), &format!("{database}.{table}"));
        }
        if self.guard.policy().allows_sql(operation, table) {
            return true;
        }
        let table = table.to_ascii_lowercase();
        if self
            .recorded
            .iter()
            .any(|(op, t)| *op == operation && *t == table)
        {
            return self.guard.mode() == PolicyMode::Audit;
        }
        self.recorded.push((operation, table.clone()));
        match self
            .guard
            .refuse(Attempt::new(Capability::Sql, operation.as_str(), table))
        {
            Ok(()) => true,
            Err(denied) => {
                self.denial = Some(denied);
                false
            }
        }
    }

    /// Refuses something no grant allows; returns false.
    fn never(&mut self, operation: &str, target: &str) -> bool {
        if self.denial.is_none() {
            let denied = self
                .guard
                .refuse_always(Attempt::new(Capability::Sql, operation, target));
            self.denial = Some(denied);
        }
        false
    }

    fn authorize(&mut self, ctx: AuthContext<'_>) -> Authorization {
        use AuthAction as A;
        if self.trusted {
            return Authorization::Allow;
        }
        self.authorizer_calls += 1;
        let db = ctx.database_name;
        if let Some(accessor) = ctx.accessor
            && !self.accessors.iter().any(|a| a == accessor)
        {
            self.accessors.push(accessor.to_owned());
        }
        let allowed = match ctx.action {
            A::Select | A::Recursive => true,
            A::Read { table_name, .. } if db.is_none() => {
                if !self.unplaced_reads.iter().any(|t| t == table_name) {
                    self.unplaced_reads.push(table_name.to_owned());
                }
                true
            }
            A::Read { table_name, .. }
                if db == Some("main")
                    && PURE_TABLE_FUNCTIONS.contains(&table_name.to_ascii_lowercase().as_str()) =>
            {
                true
            }
            A::Read { table_name, .. } => self.table_access(SqlOperation::Select, db, table_name),
            A::Insert { table_name } => {
                self.saw_write = true;
                self.table_access(SqlOperation::Insert, db, table_name)
            }
            A::Update { table_name, .. } => {
                self.saw_write = true;
                self.table_access(SqlOperation::Update, db, table_name)
            }
            A::Delete { table_name } => {
                self.saw_write = true;
                self.table_access(SqlOperation::Delete, db, table_name)
            }
            A::Function { function_name } => {
                let name = function_name.to_ascii_lowercase();
                !FORBIDDEN_FUNCTIONS.contains(&name.as_str()) || self.never("function", &name)
            }
            A::Pragma { pragma_name, .. } => self.never("pragma", pragma_name),
            A::Attach { filename } => self.never("attach", filename),
            A::Detach { database_name } => self.never("detach", database_name),
            A::Transaction { operation } => self.never("transaction", &format!("{operation:?}")),
            A::Savepoint { savepoint_name, .. } => self.never("savepoint", savepoint_name),
            A::CreateTable { table_name } | A::CreateTempTable { table_name } => {
                self.never("schema", &format!("create table {table_name}"))
            }
            A::DropTable { table_name } | A::DropTempTable { table_name } => {
                self.never("schema", &format!("drop table {table_name}"))
            }
            A::AlterTable { table_name, .. } => {
                self.never("schema", &format!("alter table {table_name}"))
            }
            A::CreateIndex { index_name, .. } | A::CreateTempIndex { index_name, .. } => {
                self.never("schema", &format!("create index {index_name}"))
            }
            A::DropIndex { index_name, .. } | A::DropTempIndex { index_name, .. } => {
                self.never("schema", &format!("drop index {index_name}"))
            }
            A::CreateTrigger { trigger_name, .. } | A::CreateTempTrigger { trigger_name, .. } => {
                self.never("schema", &format!("create trigger {trigger_name}"))
            }
            A::DropTrigger { trigger_name, .. } | A::DropTempTrigger { trigger_name, .. } => {
                self.never("schema", &format!("drop trigger {trigger_name}"))
            }
            A::CreateView { view_name } | A::CreateTempView { view_name } => {
                self.never("schema", &format!("create view {view_name}"))
            }
            A::DropView { view_name } | A::DropTempView { view_name } => {
                self.never("schema", &format!("drop view {view_name}"))
            }
            A::CreateVtable { table_name, .. } => {
                self.never("schema", &format!("create virtual table {table_name}"))
            }
            A::DropVtable { table_name, .. } => {
                self.never("schema", &format!("drop virtual table {table_name}"))
            }
            A::Reindex { index_name } => {
                self.never("maintenance", &format!("reindex {index_name}"))
            }
            A::Analyze { table_name } => {
                self.never("maintenance", &format!("analyze {table_name}"))
            }
            other => self.never("statement", &format!("{other:?}")),
        };
        if allowed {
            Authorization::Allow
        } else {
            Authorization::Deny
        }
    }

    /// Checks one row as SQLite writes it; returns whether the statement must stop.
    pub(crate) fn row_written(&mut self, op: i32, database: &str, table: &str) -> bool {
        let operation = match op {
            ffi::SQLITE_INSERT => SqlOperation::Insert,
            ffi::SQLITE_UPDATE => SqlOperation::Update,
            ffi::SQLITE_DELETE => SqlOperation::Delete,
            _ => return !self.never("write", table),
        };
        !self.table_access(operation, Some(database), table)
    }
}

/// Installs the authorizer and the deadline check on `conn`.
pub(crate) fn install(conn: &Connection, checks: &Arc<Mutex<Checks>>, progress_steps: i32) {
    let for_authorizer = checks.clone();
    conn.authorizer(Some(move |ctx: AuthContext<'_>| {
        for_authorizer.lock().expect("checks lock").authorize(ctx)
    }));
    let for_progress = checks.clone();
    conn.progress_handler(
        progress_steps,
        Some(move || {
            let mut checks = for_progress.lock().expect("checks lock");
            if Instant::now() >= checks.deadline {
                checks.past_deadline = true;
            }
            checks.past_deadline || checks.denial.is_some()
        }),
    );
}
