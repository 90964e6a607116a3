//! Liveness, readiness and the cluster's membership list.
//!
//! `/livez` says the process answers (a load balancer or Kubernetes restarts it when it does
//! not); `/readyz` says it should get traffic: the store answers, routes are loaded and the
//! node is not draining. Neither needs a token, so probes carry no secret.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use runway_store::NodeRecord;
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::Query;
use crate::cluster::NODE_TIMEOUT;

/// How long readiness waits for the store before it calls the node unready.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the node should get traffic, and why not.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `unready`.
    pub status: String,
    /// What is wrong, when unready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// The process answers (no token needed).
#[utoipa::path(
    get,
    path = "/livez",
    tag = "node",
    responses((status = 200, description = "The process is alive.", body = String, content_type = "text/plain")),
)]
pub(crate) async fn livez() -> &'static str {
    "ok\n"
}

/// The node should get traffic: the store answers, routes are loaded, not draining (no
/// token needed).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "node",
    responses(
        (status = 200, description = "Ready for traffic.", body = Readiness),
        (status = 503, description = "Not ready: draining, or the store does not answer.", body = Readiness),
    ),
)]
pub(crate) async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let mut problems = Vec::new();
    if shared.cluster.draining.load(Ordering::Relaxed) {
        problems.push("draining: the node is stopping".to_owned());
    }
    if let Some(problem) = store_problem(&shared).await {
        problems.push(problem);
    }
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if problems.is_empty() {
            "ready"
        } else {
            "unready"
        }
        .to_owned(),
        problems,
    };
    (status, Json(body)).into_response()
}

/// How long one answer of the store counts for readiness: probes need no token, so a flood
/// of them must not become a flood of database queries.
const STORE_CHECK_FRESH: Duration = Duration::from_secs(1);

/// The last store check: when, and what was wrong (if anything).
pub(crate) type StoreCheck = tokio::sync::Mutex<Option<(std::time::Instant, Option<String>)>>;

/// What is wrong with the store, checked at most once per [`STORE_CHECK_FRESH`]; callers
/// arriving while a check runs wait for its answer.
async fn store_problem(shared: &Arc<Shared>) -> Option<String> {
    let mut last = shared.store_check.lock().await;
    if let Some((at, problem)) = &*last
        && at.elapsed() < STORE_CHECK_FRESH
    {
        return problem.clone();
    }
    let store = shared.store.clone();
    let pinged = tokio::time::timeout(
        STORE_CHECK_TIMEOUT,
        tokio::task::spawn_blocking(move || store.ping()),
    )
    .await;
    let problem = match pinged {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(err))) => Some(format!("the store does not answer: {err}")),
        Ok(Err(_)) => Some("the store check failed".to_owned()),
        Err(_) => Some(format!(
            "the store did not answer within {} s",
            STORE_CHECK_TIMEOUT.as_secs()
        )),
    };
    *last = Some((std::time::Instant::now(), problem.clone()));
    problem
}

/// Which nodes to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct NodesQuery {
    /// Also list nodes that stopped reporting (within the last hour).
    #[serde(default)]
    all: bool,
}

/// The nodes sharing this store.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodesResponse {
    /// The node that answered.
    pub this_node: String,
    /// Seconds without a report after which a node is out.
    pub timeout_seconds: u64,
    /// Live nodes as the answering node counts them when splitting cluster-wide limits.
    pub live_nodes: u32,
    /// The answering node's rank among them by id (from 0): ranks below `limit % live_nodes`
    /// get one more than `limit / live_nodes`.
    pub rank: u32,
    /// The nodes, by id.
    pub nodes: Vec<NodeInfo>,
}

/// One node and whether it is live.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeInfo {
    /// What it last reported.
    #[serde(flatten)]
    pub node: NodeRecord,
    /// Whether it reported within the timeout.
    pub live: bool,
}

/// The nodes sharing this node's store, with what each last reported.
#[utoipa::path(
    get,
    path = "/v1/nodes",
    tag = "node",
    params(NodesQuery),
    responses(
        (status = 200, description = "The nodes.", body = NodesResponse),
        (status = 400, description = "`invalid_query`: `all` is not true or false.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the store does not answer.", body = ErrorBody),
    ),
)]
pub(crate) async fn nodes(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<NodesQuery>,
) -> Result<Json<NodesResponse>, ApiError> {
    let store = shared.store.clone();
    let now = crate::now_ms();
    let cutoff = now - NODE_TIMEOUT.as_millis() as i64;
    let since = if query.all { now - 3_600_000 } else { cutoff };
    let nodes = tokio::task::spawn_blocking(move || store.nodes(since))
        .await
        .map_err(|_| ApiError::internal("listing nodes panicked".into()))??;
    let (live_nodes, rank) = shared.cluster.place();
    Ok(Json(NodesResponse {
        this_node: shared.cluster.node_id.clone(),
        live_nodes,
        rank,
        timeout_seconds: NODE_TIMEOUT.as_secs(),
        nodes: nodes
            .into_iter()
            .map(|node| NodeInfo {
                live: node.last_seen_ms >= cutoff,
                node,
            })
            .collect(),
    }))
}
