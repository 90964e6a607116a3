//! What nodes sharing one store need from it: a change generation every node polls (and a
//! feed that wakes them sooner), the membership list, and agreement on the secrets key.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// One node of a cluster as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeRecord {
    /// The node's id, new at every start (`n-…`).
    pub id: String,
    /// Where its gateway listens.
    pub gateway: String,
    /// Where its admin API listens.
    pub admin: String,
    /// The Runway version it runs.
    pub version: String,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_at_ms: i64,
    /// When it last reported, in milliseconds since the Unix epoch.
    pub last_seen_ms: i64,
    /// Requests it was serving at its last report.
    pub in_flight: u64,
    /// Artifacts it holds compiled.
    pub compiled_artifacts: u64,
    /// Whether it is draining (stopping).
    pub draining: bool,
}

/// A wake-up from other nodes' changes. Best effort: a feed can miss a change (while it
/// reconnects, say), so a node also polls [`ClusterStore::change_generation`].
pub trait ChangeFeed: Send {
    /// Waits up to `timeout` for a change; true if one (or more) arrived.
    fn wait(&mut self, timeout: Duration) -> Result<bool, StoreError>;
}

/// Coordination between the nodes sharing a store.
pub trait ClusterStore: Send + Sync {
    /// Whether several nodes can share this store (false for a single file on one machine).
    fn is_shared(&self) -> bool;
    /// Checks that the store answers (readiness).
    fn ping(&self) -> Result<(), StoreError>;
    /// A number that grows with every committed change a node must apply to what it serves
    /// or refuses: releases served, environments and their rules, tokens, API keys, secrets,
    /// revoked artifacts, retired functions, budgets.
    fn change_generation(&self) -> Result<i64, StoreError>;
    /// A feed of other nodes' changes, if the backend has one (its own connection).
    fn change_feed(&self) -> Result<Option<Box<dyn ChangeFeed>>, StoreError>;
    /// Registers a node or refreshes its report.
    fn heartbeat(&self, node: &NodeRecord) -> Result<(), StoreError>;
    /// Nodes that reported at or after `seen_since_ms`, by id.
    fn nodes(&self, seen_since_ms: i64) -> Result<Vec<NodeRecord>, StoreError>;
    /// Removes a node that is stopping (or forgets nodes not seen since `before_ms` when
    /// `id` is `None`).
    fn leave(&self, id: Option<&str>, before_ms: i64) -> Result<u64, StoreError>;
    /// Records `fingerprint` as the secrets key's if none is recorded yet; returns the
    /// recorded one, which differs when this node was given another key.
    fn agree_secrets_key(&self, fingerprint: &str) -> Result<String, StoreError>;
}
