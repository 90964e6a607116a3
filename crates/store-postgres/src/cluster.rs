//! What nodes sharing the database need: the change generation and a feed that wakes them
//! when it moves (`LISTEN runway_changes`), the membership list, and agreement on the
//! secrets key.

use std::time::Duration;

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator as _;
use runway_store::{ChangeFeed, ClusterStore, NodeRecord, StoreError};

use crate::pool::{Target, connect};
use crate::{PostgresStore, blocking, db};

/// The channel the change trigger notifies (see the schema).
const CHANNEL: &str = "runway_changes";

/// The name the feed's connection shows in `pg_stat_activity`.
pub const FEED_APPLICATION: &str = "runway change feed";

/// A wake-up when another node commits a change: a connection of its own that `LISTEN`s on
/// the channel the change trigger notifies.
pub struct PostgresChangeFeed {
    config: postgres::Config,
    target: Target,
    /// `None` after the connection was lost and could not be made again yet.
    client: Option<Client>,
}

impl PostgresChangeFeed {
    fn connect(config: &postgres::Config, target: &Target) -> Result<Client, StoreError> {
        let mut client = connect(config, target, FEED_APPLICATION)?;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .map_err(db("listening for changes"))?;
        Ok(client)
    }
}

impl ChangeFeed for PostgresChangeFeed {
    fn wait(&mut self, timeout: Duration) -> Result<bool, StoreError> {
        blocking(|| {
            let Some(client) = self.client.as_mut().filter(|c| !c.is_closed()) else {
                // Lost: listen again. Changes committed while no one listened sent nothing we
                // heard, so report one and the caller reloads.
                self.client = None;
                self.client = Some(PostgresChangeFeed::connect(&self.config, &self.target)?);
                return Ok(true);
            };
            let mut notifications = client.notifications();
            let first = notifications.timeout_iter(timeout).next();
            if let Ok(Some(_)) = first {
                // One wake-up stands for every change so far: take the rest now.
                while let Ok(Some(_)) = notifications.iter().next() {}
            }
            drop(notifications);
            if client.is_closed() {
                self.client = None;
                self.client = Some(PostgresChangeFeed::connect(&self.config, &self.target)?);
                return Ok(true);
            }
            Ok(first.map_err(db("waiting for changes"))?.is_some())
        })
    }
}

impl Drop for PostgresChangeFeed {
    fn drop(&mut self) {
        crate::close(self.client.take());
    }
}

fn node_row(row: &postgres::Row) -> NodeRecord {
    NodeRecord {
        id: row.get(0),
        gateway: row.get(1),
        admin: row.get(2),
        version: row.get(3),
        started_at_ms: row.get(4),
        last_seen_ms: row.get(5),
        in_flight: row.get::<_, i64>(6) as u64,
        compiled_artifacts: row.get::<_, i64>(7) as u64,
        draining: row.get(8),
    }
}

impl ClusterStore for PostgresStore {
    fn is_shared(&self) -> bool {
        true
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.run(|client| {
            client
                .execute("SELECT 1", &[])
                .map(drop)
                .map_err(db("checking the store answers"))
        })
    }

    fn change_generation(&self) -> Result<i64, StoreError> {
        self.run(|client| {
            client
                .query_one("SELECT generation FROM changes", &[])
                .map(|row| row.get(0))
                .map_err(db("reading the change generation"))
        })
    }

    fn change_feed(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError> {
        let pool = self.pool();
        let client = blocking(|| PostgresChangeFeed::connect(pool.config(), pool.target()))?;
        Ok(Some(Box::new(PostgresChangeFeed {
            config: pool.config().clone(),
            target: pool.target().clone(),
            client: Some(client),
        })))
    }

    fn heartbeat(&self, node: &NodeRecord) -> Result<(), StoreError> {
        self.run(|client| {
            client
                .execute(
                    "INSERT INTO nodes (id, gateway, admin, version, started_ms, last_seen_ms,
                       in_flight, compiled, draining)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms,
                       in_flight = excluded.in_flight, compiled = excluded.compiled,
                       draining = excluded.draining, gateway = excluded.gateway,
                       admin = excluded.admin",
                    &[
                        &node.id,
                        &node.gateway,
                        &node.admin,
                        &node.version,
                        &node.started_at_ms,
                        &node.last_seen_ms,
                        &(node.in_flight as i64),
                        &(node.compiled_artifacts as i64),
                        &node.draining,
                    ],
                )
                .map(drop)
                .map_err(db("recording a node's heartbeat"))
        })
    }

    fn nodes(&self, seen_since_ms: i64) -> Result<Vec<NodeRecord>, StoreError> {
        self.run(|client| {
            client
                .query(
                    "SELECT id, gateway, admin, version, started_ms, last_seen_ms, in_flight,
                       compiled, draining
                     FROM nodes WHERE last_seen_ms >= $1 ORDER BY id",
                    &[&seen_since_ms],
                )
                .map(|rows| rows.iter().map(node_row).collect())
                .map_err(db("listing nodes"))
        })
    }

    fn leave(&self, id: Option<&str>, before_ms: i64) -> Result<u64, StoreError> {
        self.run(|client| {
            match id {
                Some(id) => client.execute("DELETE FROM nodes WHERE id = $1", &[&id]),
                None => client.execute("DELETE FROM nodes WHERE last_seen_ms < $1", &[&before_ms]),
            }
            .map_err(db("removing nodes"))
        })
    }

    fn agree_secrets_key(&self, fingerprint: &str) -> Result<String, StoreError> {
        self.run(|client| {
            client
                .execute(
                    "INSERT INTO cluster_settings (name, value) VALUES ('secrets_key', $1)
                     ON CONFLICT (name) DO NOTHING",
                    &[&fingerprint],
                )
                .map_err(db("recording the secrets key's fingerprint"))?;
            client
                .query_opt(
                    "SELECT value FROM cluster_settings WHERE name = 'secrets_key'",
                    &[],
                )
                .map(|row| row.map(|row| row.get(0)).unwrap_or_default())
                .map_err(db("reading the secrets key's fingerprint"))
        })
    }
}
