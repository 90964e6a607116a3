//! Running as one of several nodes sharing a store: following other nodes' changes,
//! reporting this node's liveness, and splitting cluster-wide limits between live nodes.
//!
//! Changes reach a node two ways: the store's change feed (PostgreSQL `NOTIFY`) wakes it at
//! once, and a poll of the change generation every [`POLL_INTERVAL`] catches whatever a feed
//! missed (notifications sent while a listener reconnects are lost). Either way the node
//! reloads what it serves from the store, keeping every function whose release did not
//! change as it is (its compiled code, counters and warm state).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use runway_store::{ControlStore, Digest, NodeRecord, StoreError};
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::environments::{Environment, Environments, Rules, stored_rules};
use crate::invocation::ApiKeyTable;
use crate::live::{LiveFunction, RouteTable};
use crate::now_ms;

/// The backstop: how often a node checks the change generation even with no wake-up.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often a node reports itself.
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// A node not heard from for this long is out: its share of the limits goes to the others.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(4);
/// Nodes not heard from for this long are forgotten by the membership list.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// This node as the cluster knows it, and its place among the live nodes.
pub(crate) struct ClusterView {
    /// The node's id, new at every start.
    pub(crate) node_id: String,
    /// When the node started.
    pub(crate) started_at_ms: i64,
    /// Live nodes (this one included) and this node's rank among them by id, packed as
    /// `live << 32 | rank` so both change together.
    place: AtomicU64,
    /// Set when the node starts draining: readiness fails and the heartbeat says so.
    pub(crate) draining: AtomicBool,
}

impl ClusterView {
    pub(crate) fn new() -> ClusterView {
        let mut bytes = [0u8; 6];
        getrandom::fill(&mut bytes).expect("the OS provides randomness");
        ClusterView {
            node_id: format!("n-{}", hex::encode(bytes)),
            started_at_ms: now_ms(),
            place: AtomicU64::new(1 << 32),
            draining: AtomicBool::new(false),
        }
    }

    /// Live nodes and this node's rank among them.
    pub(crate) fn place(&self) -> (u32, u32) {
        let packed = self.place.load(Ordering::Relaxed);
        ((packed >> 32) as u32, packed as u32)
    }

    /// Records a new place; true if it changed.
    fn set_place(&self, live: u32, rank: u32) -> bool {
        let packed = (u64::from(live) << 32) | u64::from(rank);
        self.place.swap(packed, Ordering::Relaxed) != packed
    }

    /// This node's share of a cluster-wide limit (see [`share`]).
    pub(crate) fn share_of(&self, limit: u32) -> u32 {
        let (live, rank) = self.place();
        share(limit, live, rank)
    }
}

/// A cluster-wide limit split between `live` nodes: each gets `limit / live`, and the
/// first `limit % live` nodes by id one more, so the shares add up to the limit exactly
/// (10 on 3 nodes is 4, 3 and 3). A node can get 0 when the limit is below the node count.
pub(crate) fn share(limit: u32, live: u32, rank: u32) -> u32 {
    let live = live.max(1);
    limit / live + u32::from(rank < limit % live)
}

/// Reports this node every [`HEARTBEAT_INTERVAL`] and keeps its place among live nodes.
pub(crate) async fn heartbeat(shared: Arc<Shared>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let shared2 = shared.clone();
        let reported = tokio::task::spawn_blocking(move || report(&shared2)).await;
        match reported {
            Ok(Ok(moved)) => {
                if failing {
                    tracing::info!("the store answers again: heartbeats resumed");
                    failing = false;
                }
                if moved && shared.store.is_shared() {
                    let (live, rank) = shared.cluster.place();
                    tracing::info!(live, rank, "cluster membership changed: limits re-split");
                    sync(&shared).await;
                }
            }
            Ok(Err(err)) => {
                if !failing {
                    tracing::warn!(error = %err, "cannot report this node to the store; serving on");
                    failing = true;
                }
            }
            Err(_) => {}
        }
    }
}

/// Writes this node's report and reads the live nodes; true if this node's place moved.
fn report(shared: &Shared) -> Result<bool, StoreError> {
    let now = now_ms();
    let view = &shared.cluster;
    shared.store.heartbeat(&NodeRecord {
        id: view.node_id.clone(),
        gateway: shared.gateway_addr.to_string(),
        admin: shared.admin_addr.to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at_ms: view.started_at_ms,
        last_seen_ms: now,
        in_flight: shared.in_flight.len() as u64,
        compiled_artifacts: compiled_artifacts(&shared.environments.load()),
        draining: view.draining.load(Ordering::Relaxed),
    })?;
    let live = shared
        .store
        .nodes(now - NODE_TIMEOUT.as_millis() as i64)?
        .into_iter()
        .filter(|node| !node.draining || node.id == view.node_id)
        .collect::<Vec<_>>();
    // Forgetting long-gone nodes keeps the list short; any node may do it.
    shared
        .store
        .leave(None, now - FORGET_AFTER.as_millis() as i64)?;
    let Some(rank) = live.iter().position(|node| node.id == view.node_id) else {
        return Ok(false);
    };
    Ok(view.set_place(live.len() as u32, rank as u32))
}

/// Distinct artifacts this node holds compiled for what it serves.
fn compiled_artifacts(environments: &Environments) -> u64 {
    let mut digests = std::collections::HashSet::new();
    for env in environments.all() {
        for function in env.routes.load().functions.values() {
            digests.insert(function.release.digest.clone());
        }
    }
    digests.len() as u64
}

/// Follows other nodes' changes until `stop`: a wake-up from the feed or the poll reads the
/// change generation, and a new one reloads what this node serves.
pub(crate) async fn follow(shared: Arc<Shared>, stop: CancellationToken) {
    if !shared.store.is_shared() {
        // One node owns the store: every change is its own and applied as it is made.
        return;
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    spawn_feed(shared.store.clone(), wake.clone(), stop.clone());
    let mut seen = generation(&shared).await.ok();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        match generation(&shared).await {
            Ok(now) => {
                if failing {
                    tracing::info!("the store answers again: following changes");
                    failing = false;
                }
                if seen != Some(now) {
                    seen = Some(now);
                    sync(&shared).await;
                }
            }
            Err(err) => {
                if !failing {
                    tracing::warn!(error = %err, "cannot read the store's changes; serving what is loaded");
                    failing = true;
                }
            }
        }
    }
}

async fn generation(shared: &Arc<Shared>) -> Result<i64, StoreError> {
    let store = shared.store.clone();
    tokio::task::spawn_blocking(move || store.change_generation())
        .await
        .expect("generation read panicked")
}

/// The feed waits on its own thread (its connection blocks) and wakes the follower.
fn spawn_feed(
    store: Arc<dyn ControlStore>,
    wake: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    std::thread::Builder::new()
        .name("runway-changes".into())
        .spawn(move || {
            let mut feed = None;
            while !stop.is_cancelled() {
                if feed.is_none() {
                    match store.change_feed() {
                        Ok(Some(opened)) => feed = Some(opened),
                        Ok(None) => return,
                        Err(err) => {
                            tracing::debug!(error = %err, "change feed unavailable; polling");
                            std::thread::sleep(POLL_INTERVAL);
                            continue;
                        }
                    }
                }
                let waited = feed
                    .as_mut()
                    .expect("opened above")
                    .wait(Duration::from_millis(250));
                match waited {
                    Ok(true) => wake.notify_one(),
                    Ok(false) => {}
                    Err(err) => {
                        tracing::debug!(error = %err, "change feed lost; reopening");
                        feed = None;
                        wake.notify_one();
                        std::thread::sleep(POLL_INTERVAL);
                    }
                }
            }
        })
        .expect("the OS starts a thread");
}

/// Reloads every environment from the store and swaps the result in, under the deploy lock
/// so it never interleaves with a deploy made through this node.
pub(crate) async fn sync(shared: &Arc<Shared>) {
    let _deploying = shared.deploy_lock.lock().await;
    let shared2 = shared.clone();
    let reloaded = tokio::task::spawn_blocking(move || reload(&shared2)).await;
    match reloaded {
        Ok(Ok(environments)) => {
            shared.metrics.set_function_total(&environments);
            shared.environments.store(Arc::new(environments));
        }
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "cannot reload from the store; serving what is loaded");
        }
        Err(_) => tracing::error!("reloading from the store panicked"),
    }
}

/// What the store says every environment serves now, reusing the loaded environments and
/// functions that did not change.
fn reload(shared: &Shared) -> Result<Environments, crate::NodeError> {
    let store = shared.store.as_ref();
    let current = shared.environments.load_full();
    let mut prepared: HashMap<Digest, Arc<runway_runtime::Prepared>> = HashMap::new();
    for env in current.all() {
        for function in env.routes.load().functions.values() {
            prepared.insert(function.release.digest.clone(), function.prepared.clone());
        }
    }
    let mut summary = crate::RestoreSummary::default();
    let mut home = None;
    let mut others = Vec::new();
    let mut present = std::collections::HashSet::new();
    for record in store.environments()? {
        let old = current.get(&record.name).cloned();
        let is_home = record.name == current.home.name;
        // The home environment's rules come from the node's flags, not the store.
        let rules: Rules = if is_home {
            current.home.rules.clone()
        } else {
            stored_rules(&record)
        };
        let fresh = crate::services::releases::restore(
            store,
            &shared.runtime,
            &shared.metrics,
            &shared.capabilities,
            &record.name,
            &rules,
            &mut prepared,
            &mut summary,
        )?;
        let routes = match &old {
            Some(old) => keep_unchanged(fresh, &old.routes.load()),
            None => fresh,
        };
        let empty = ApiKeyTable::default();
        let keys = match &old {
            Some(old) => {
                ApiKeyTable::load(store, &record.name, &old.api_keys.load(), &shared.cluster)?
            }
            None => ApiKeyTable::load(store, &record.name, &empty, &shared.cluster)?,
        };
        present.insert(record.name.clone());
        let env = match old {
            Some(old) if old.record == record => {
                old.routes.store(Arc::new(routes));
                old.api_keys.store(Arc::new(keys));
                old
            }
            _ => Arc::new(Environment::new(record, rules, is_home, routes, keys)),
        };
        if is_home {
            home = Some(env);
        } else {
            others.push(env);
        }
    }
    for env in current.all() {
        if !present.contains(&env.name) && !env.home {
            env.removed.store(true, Ordering::Release);
        }
    }
    for failed in &summary.failed {
        tracing::error!(
            failed,
            "a release changed on another node cannot be served here"
        );
    }
    let home = home.unwrap_or_else(|| current.home.clone());
    Ok(Environments::new(home, others))
}

/// The new table, with each function whose release (and revocation) did not change taken
/// from the old one, so its state carries over.
fn keep_unchanged(fresh: RouteTable, old: &RouteTable) -> RouteTable {
    let functions: BTreeMap<String, Arc<LiveFunction>> = fresh
        .functions
        .into_iter()
        .map(|(name, new)| {
            let kept = old.functions.get(&name).filter(|old| {
                old.release.number == new.release.number
                    && old.release.digest == new.release.digest
                    && old.revoked.load(Ordering::Acquire) == new.revoked.load(Ordering::Acquire)
            });
            (name, kept.cloned().unwrap_or(new))
        })
        .collect();
    RouteTable::new(functions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_of_a_limit_add_up_to_the_limit() {
        for (limit, live) in [(10, 3), (1, 3), (7, 7), (100, 1), (0, 2), (5, 8)] {
            let total: u32 = (0..live).map(|rank| share(limit, live, rank)).sum();
            assert_eq!(total, limit, "{limit} on {live} nodes");
        }
        assert_eq!(
            (0..3).map(|rank| share(10, 3, rank)).collect::<Vec<_>>(),
            vec![4, 3, 3]
        );
        // A node that has not heard of the others yet counts itself alone.
        assert_eq!(share(10, 0, 0), 10);
    }
}
