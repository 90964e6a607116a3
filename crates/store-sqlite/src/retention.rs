//! Deleting what retention no longer keeps, a bounded chunk at a time.

use rusqlite::Connection;

use runway_store::{Pruned, StoreError};

/// Migration 10: indexes by age for the tables retention prunes that are written rarely
/// (the invocations table already has `invocations_by_start`). Log lines, written on every
/// invocation, get no index: they are pruned oldest id first (below), which costs the
/// request path nothing.
pub(crate) const MIGRATION_10: &str = r#"
CREATE INDEX audit_by_time ON audit (at_ms);
CREATE INDEX control_audit_by_time ON control_audit (at_ms);
CREATE INDEX jobs_finished ON jobs (state, updated_ms);
"#;

/// Deletes up to `limit` rows of `what` older than `before_ms`; returns how many.
pub(crate) fn prune(
    conn: &Connection,
    what: Pruned,
    before_ms: i64,
    limit: u32,
) -> Result<u64, StoreError> {
    let sql = match what {
        Pruned::Invocations => {
            "DELETE FROM invocations WHERE rowid IN
               (SELECT rowid FROM invocations WHERE started_ms < ?1 LIMIT ?2)"
        }
        // Ids grow as lines are written, so the oldest lines come first by id: take the
        // first chunk by id and delete those of it past the cutoff. A line written out of
        // order (a slow invocation's) waits for a later sweep.
        Pruned::Logs => {
            "DELETE FROM logs WHERE id IN (SELECT id FROM logs ORDER BY id LIMIT ?2)
               AND at_ms < ?1"
        }
        Pruned::SucceededJobs => {
            "DELETE FROM jobs WHERE id IN
               (SELECT id FROM jobs WHERE state = 'succeeded' AND updated_ms < ?1 LIMIT ?2)"
        }
        Pruned::PolicyAudit => {
            "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at_ms < ?1 LIMIT ?2)"
        }
        Pruned::ControlAudit => {
            "DELETE FROM control_audit WHERE id IN
               (SELECT id FROM control_audit WHERE at_ms < ?1 LIMIT ?2)"
        }
    };
    conn.execute(sql, rusqlite::params![before_ms, limit])
        .map(|n| n as u64)
        .map_err(crate::db("pruning old rows"))
}
