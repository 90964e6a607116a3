//! The cluster interface on one file: a change generation bumped by triggers (so the same
//! conformance tests hold), the membership list (one node, in practice) and the secrets-key
//! fingerprint.

use runway_store::{ChangeFeed, ClusterStore, NodeRecord, StoreError};
use rusqlite::{OptionalExtension, params};

use crate::{SqliteStore, db};

/// Migration 11: the change generation and what bumps it, nodes, and cluster settings.
pub(crate) const MIGRATION_11: &str = r#"
CREATE TABLE changes (generation INTEGER NOT NULL);
INSERT INTO changes (generation) VALUES (0);
CREATE TRIGGER functions_insert_changes AFTER INSERT ON functions BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER functions_update_changes AFTER UPDATE ON functions BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER functions_delete_changes AFTER DELETE ON functions BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER environments_insert_changes AFTER INSERT ON environments BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER environments_update_changes AFTER UPDATE ON environments BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER environments_delete_changes AFTER DELETE ON environments BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER tokens_insert_changes AFTER INSERT ON tokens BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER tokens_update_changes AFTER UPDATE ON tokens BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER tokens_delete_changes AFTER DELETE ON tokens BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER api_keys_insert_changes AFTER INSERT ON api_keys BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER api_keys_update_changes AFTER UPDATE ON api_keys BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER api_keys_delete_changes AFTER DELETE ON api_keys BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER secrets_insert_changes AFTER INSERT ON secrets BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER secrets_update_changes AFTER UPDATE ON secrets BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER secrets_delete_changes AFTER DELETE ON secrets BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER revoked_artifacts_insert_changes AFTER INSERT ON revoked_artifacts BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER revoked_artifacts_update_changes AFTER UPDATE ON revoked_artifacts BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER revoked_artifacts_delete_changes AFTER DELETE ON revoked_artifacts BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER budgets_insert_changes AFTER INSERT ON budgets BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER budgets_update_changes AFTER UPDATE ON budgets BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TRIGGER budgets_delete_changes AFTER DELETE ON budgets BEGIN UPDATE changes SET generation = generation + 1; END;
CREATE TABLE nodes (
    id              TEXT PRIMARY KEY,
    gateway         TEXT NOT NULL,
    admin           TEXT NOT NULL,
    version         TEXT NOT NULL,
    started_ms      INTEGER NOT NULL,
    last_seen_ms    INTEGER NOT NULL,
    in_flight       INTEGER NOT NULL,
    compiled        INTEGER NOT NULL,
    draining        INTEGER NOT NULL
);
CREATE TABLE cluster_settings (
    name    TEXT PRIMARY KEY,
    value   TEXT NOT NULL
);
"#;

impl ClusterStore for SqliteStore {
    fn is_shared(&self) -> bool {
        false
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.conn()
            .query_row("SELECT 1", [], |_| Ok(()))
            .map_err(db("checking the store answers"))
    }

    fn change_generation(&self) -> Result<i64, StoreError> {
        self.conn()
            .query_row("SELECT generation FROM changes", [], |row| row.get(0))
            .map_err(db("reading the change generation"))
    }

    fn change_feed(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        // One node owns the file: every change is its own, applied as it is made.
        Ok(None)
    }

    fn heartbeat(&self, node: &NodeRecord) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO nodes (id, gateway, admin, version, started_ms, last_seen_ms, in_flight, compiled, draining)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,
                   in_flight = excluded.in_flight, compiled = excluded.compiled,
                   draining = excluded.draining, gateway = excluded.gateway, admin = excluded.admin",
                params![
                    node.id,
                    node.gateway,
                    node.admin,
                    node.version,
                    node.started_at_ms,
                    node.last_seen_ms,
                    node.in_flight as i64,
                    node.compiled_artifacts as i64,
                    node.draining
                ],
            )
            .map(drop)
            .map_err(db("recording a node's heartbeat"))
    }

    fn nodes(&self, seen_since_ms: i64) -> Result<Vec<NodeRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, gateway, admin, version, started_ms, last_seen_ms, in_flight, compiled, draining
                 FROM nodes WHERE last_seen_ms >= ?1 ORDER BY id",
            )
            .map_err(db("listing nodes"))?;
        stmt.query_map([seen_since_ms], |row| {
            Ok(NodeRecord {
                id: row.get(0)?,
                gateway: row.get(1)?,
                admin: row.get(2)?,
                version: row.get(3)?,
                started_at_ms: row.get(4)?,
                last_seen_ms: row.get(5)?,
                in_flight: row.get::<_, i64>(6)? as u64,
                compiled_artifacts: row.get::<_, i64>(7)? as u64,
                draining: row.get(8)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(db("listing nodes"))
    }

    fn leave(&self, id: Option<&str>, before_ms: i64) -> Result<u64, StoreError> {
        let conn = self.conn();
        let removed = match id {
            Some(id) => conn.execute("DELETE FROM nodes WHERE id = ?1", [id]),
            None => conn.execute("DELETE FROM nodes WHERE last_seen_ms < ?1", [before_ms]),
        };
        removed.map(|n| n as u64).map_err(db("removing nodes"))
    }

    fn agree_secrets_key(&self, fingerprint: &str) -> Result<String, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO cluster_settings (name, value) VALUES ('secrets_key', ?1)
             ON CONFLICT (name) DO NOTHING",
            [fingerprint],
        )
        .map_err(db("recording the secrets key's fingerprint"))?;
        conn.query_row(
            "SELECT value FROM cluster_settings WHERE name = 'secrets_key'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(db("reading the secrets key's fingerprint"))
        .map(Option::unwrap_or_default)
    }
}
