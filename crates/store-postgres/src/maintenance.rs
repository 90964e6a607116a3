//! Upkeep: deleting what retention no longer keeps, a bounded chunk at a time; the
//! database's size; and the node's compiled-code checksums.

use std::path::Path;

use runway_store::{MaintenanceStore, Pruned, StoreError};

use crate::{PostgresStore, db};

impl MaintenanceStore for PostgresStore {
    fn prune(&self, what: Pruned, before_ms: i64, limit: u32) -> Result<u64, StoreError> {
        let sql = match what {
            Pruned::Invocations => {
                "DELETE FROM invocations WHERE request_id IN
                   (SELECT request_id FROM invocations WHERE started_ms < $1 LIMIT $2)"
            }
            // Ids grow as lines are written, so the oldest lines come first by id: take the
            // first chunk by id and delete those of it past the cutoff. A line written out of
            // order (a slow invocation's) waits for a later sweep.
            Pruned::Logs => {
                "DELETE FROM logs WHERE id IN (SELECT id FROM logs ORDER BY id LIMIT $2)
                   AND at_ms < $1"
            }
            Pruned::SucceededJobs => {
                "DELETE FROM jobs WHERE id IN
                   (SELECT id FROM jobs WHERE state = 'succeeded' AND updated_ms < $1 LIMIT $2)"
            }
            Pruned::PolicyAudit => {
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at_ms < $1 LIMIT $2)"
            }
            Pruned::ControlAudit => {
                "DELETE FROM control_audit WHERE id IN
                   (SELECT id FROM control_audit WHERE at_ms < $1 LIMIT $2)"
            }
        };
        self.run(|client| {
            client
                .execute(sql, &[&before_ms, &i64::from(limit)])
                .map_err(db("pruning old rows"))
        })
    }

    fn size_bytes(&self) -> u64 {
        self.run(|client| {
            client
                .query_one("SELECT pg_database_size(current_database())", &[])
                .map(|row| row.get::<_, i64>(0) as u64)
                .map_err(db("reading the database's size"))
        })
        .unwrap_or(0)
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        // Every commit is already durable in the server's write-ahead log, and the server
        // checkpoints on its own: there is nothing this node must flush.
        Ok(())
    }

    fn backup_to(&self, _target: &Path) -> Result<(), StoreError> {
        Err(StoreError::Unsupported {
            what: "write a backup file",
            backend: "PostgreSQL",
            instead: "back it up with pg_dump (docs/CLUSTER.md)",
        })
    }

    fn compiled_checksum(&self, cache_key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.local.checksum(cache_key))
    }

    fn set_compiled_checksum(&self, cache_key: &str, sha256: &str) -> Result<(), StoreError> {
        self.local.set_checksum(cache_key, sha256)
    }
}
