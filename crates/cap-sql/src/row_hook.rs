//! SQLite's pre-update hook, called for every row a statement inserts, updates or deletes,
//! including the rows a `REPLACE` deletes and foreign-key actions change.
//!
//! rusqlite wraps this hook only behind a feature that regenerates its bindings with
//! libclang; the bundled SQLite is compiled with `SQLITE_ENABLE_PREUPDATE_HOOK` instead (see
//! `.cargo/config.toml`) and the one function is declared here.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, ffi};

use crate::authorizer::Checks;

type Callback = unsafe extern "C" fn(
    *mut c_void,
    *mut ffi::sqlite3,
    c_int,
    *const c_char,
    *const c_char,
    i64,
    i64,
);

unsafe extern "C" {
    fn sqlite3_preupdate_hook(
        db: *mut ffi::sqlite3,
        callback: Option<Callback>,
        arg: *mut c_void,
    ) -> *mut c_void;
}

/// The hook registered on one connection; [`RowHook::remove`] must run before it closes.
pub(crate) struct RowHook {
    checks: *mut Arc<Mutex<Checks>>,
}

// The pointer is only dereferenced by SQLite's callback on the thread using the connection.
unsafe impl Send for RowHook {}

impl RowHook {
    /// Registers the hook on `conn`.
    pub(crate) fn install(conn: &Connection, checks: &Arc<Mutex<Checks>>) -> RowHook {
        let checks = Box::into_raw(Box::new(checks.clone()));
        // SAFETY: the handle is valid while `conn` lives; `checks` stays allocated until
        // `remove` unregisters the hook.
        unsafe {
            sqlite3_preupdate_hook(conn.handle(), Some(row_written), checks.cast());
        }
        RowHook { checks }
    }

    /// Unregisters the hook and frees its state.
    pub(crate) fn remove(self, conn: &Connection) {
        // SAFETY: after unregistering, SQLite no longer holds the pointer, so it is freed once.
        unsafe {
            sqlite3_preupdate_hook(conn.handle(), None, std::ptr::null_mut());
            drop(Box::from_raw(self.checks));
        }
    }
}

unsafe extern "C" fn row_written(
    arg: *mut c_void,
    db: *mut ffi::sqlite3,
    op: c_int,
    database: *const c_char,
    table: *const c_char,
    _old_rowid: i64,
    _new_rowid: i64,
) {
    let outcome = std::panic::catch_unwind(|| {
        // SAFETY: `arg` is the pointer `install` registered; the names are NUL-terminated
        // strings SQLite owns for the duration of the call.
        let checks = unsafe { &*(arg as *const Arc<Mutex<Checks>>) };
        let database = unsafe { CStr::from_ptr(database) }.to_string_lossy();
        let table = unsafe { CStr::from_ptr(table) }.to_string_lossy();
        checks
            .lock()
            .expect("checks lock")
            .row_written(op, &database, &table)
    });
    if outcome.unwrap_or(true) {
        // Interrupting undoes the whole statement: in autocommit mode, an interrupted
        // statement's changes are rolled back.
        // SAFETY: `db` is the connection calling us.
        unsafe { ffi::sqlite3_interrupt(db) };
    }
}
