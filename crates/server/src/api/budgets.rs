//! The admin API of planning what functions cost: budgets (list, set, remove; what they do
//! is `services::budgets`) and capacity: peak concurrency and memory per function, and the
//! nodes a growth factor would need.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::response::Response;
use runway_manifest::{BudgetAction, Usd};
use runway_meter::PicoUsd;
use runway_store::{Budget, BudgetKind};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::api::auth::{AuditNote, Caller, noted};
use crate::api::error::{ApiError, ErrorBody};
use crate::api::extract::Path;
use crate::api::{blocking, json_body};
use crate::environments::Environment;
use crate::now_ms;
use crate::services::budgets::{BudgetStatus, Budgets, NewBudget, bill_starts, statuses, visible};

/// `PUT /v1/budgets`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetBudgetRequest {
    /// `function`, `env` or `owner`.
    pub kind: BudgetKind,
    /// The function or owner name (for `env`: the request's environment).
    #[serde(default)]
    pub scope: Option<String>,
    /// The monthly amount, `"20 USD"`.
    pub monthly: Usd,
    /// What happens at 100 percent.
    #[serde(default)]
    pub action: BudgetAction,
}

/// Every budget the caller may see, with where it stands this month.
#[utoipa::path(
    get,
    path = "/v1/budgets",
    tag = "cost",
    operation_id = "list_budgets",
    responses((status = 200, description = "Budgets with where they stand this month.", body = Vec<BudgetStatus>)),
)]
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<BudgetStatus>>, ApiError> {
    let store = shared.store.clone();
    let starts = bill_starts(&shared);
    let all = blocking(move || Ok(statuses(store.as_ref(), now_ms(), &starts)?)).await?;
    Ok(Json(visible(all, &caller.actor())))
}

/// Sets the monthly budget of a function, an environment or an owner.
#[utoipa::path(
    put,
    path = "/v1/budgets",
    tag = "cost",
    operation_id = "set_budget",
    request_body = SetBudgetRequest,
    responses(
        (status = 200, description = "The budget as stored.", body = Budget),
        (status = 400, description = "`missing_scope`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: an owner budget needs a token for every environment.", body = ErrorBody),
        (status = 404, description = "`no_such_function`.", body = ErrorBody),
    ),
)]
pub(crate) async fn set(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Extension(caller): Extension<Caller>,
    request: Result<Json<SetBudgetRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = json_body(request, "budget")?;
    let (monthly, action) = (request.monthly, request.action);
    let budget = blocking(move || {
        let actor = caller.actor();
        let new = NewBudget {
            kind: request.kind,
            scope: request.scope,
            monthly_pusd: request.monthly.pico,
            action: request.action,
        };
        Ok(Budgets::new(shared.store.as_ref()).set(&actor, &env, new, now_ms())?)
    })
    .await?;
    let detail = format!("{monthly} a month, action {}", action.as_str());
    Ok(noted(
        Json(budget.clone()),
        AuditNote::new(budget.id, detail),
    ))
}

/// Removes a budget.
#[utoipa::path(
    delete,
    path = "/v1/budgets/{id}",
    tag = "cost",
    operation_id = "remove_budget",
    params(("id" = String, Path, description = "`function:ENV/NAME`, `env:ENV` or `owner:NAME`.")),
    responses(
        (status = 200, description = "Removed.", body = RemovedBudget),
        (status = 403, description = "`forbidden`: the budget is outside the token's environment.", body = ErrorBody),
        (status = 404, description = "`no_such_budget`.", body = ErrorBody),
    ),
)]
pub(crate) async fn remove(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    {
        let id = id.clone();
        blocking(move || {
            let actor = caller.actor();
            Ok(Budgets::new(shared.store.as_ref()).remove(&actor, &id)?)
        })
        .await?;
    }
    Ok(noted(
        Json(RemovedBudget {
            removed: id.clone(),
        }),
        AuditNote::new(id, "removed"),
    ))
}

/// What removing a budget did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RemovedBudget {
    /// The budget's id.
    pub removed: String,
}

/// `GET /v1/capacity`: peak use, and what a growth factor would need.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CapacityReport {
    /// Peak use per function and the busiest hour.
    pub observed: runway_store::Capacity,
    /// The growth factor applied.
    pub growth: f64,
    /// This node: memory (bytes), cores and instance slots.
    pub node_memory_bytes: u64,
    /// Cores on this node.
    pub node_cores: u64,
    /// Instances this node may run at once (`--max-instances`).
    pub node_instances: u64,
    /// At the busiest hour × growth: instances, memory (MiB) and cores needed.
    pub needed_instances: u64,
    /// Memory needed, MiB.
    pub needed_memory_mb: u64,
    /// Cores needed.
    pub needed_cores: f64,
    /// Nodes like this one needed, by the tightest of memory (80% of it usable), cores and
    /// instance slots.
    pub nodes_needed: u64,
    /// Which resource decides `nodes_needed`.
    pub limited_by: String,
    /// Cost of the period with data (at least an hour) scaled to 30 days, now and at the
    /// growth factor, US dollars.
    pub monthly_cost_usd: f64,
    /// As above, × growth.
    pub monthly_cost_at_growth_usd: f64,
}

/// The share of a node's memory functions may be sized for; the rest is the node's own.
const USABLE_MEMORY: f64 = 0.8;

fn node_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CapacityQuery {
    /// The period observed, ending now (`24h`, `7d`); default 7 days.
    #[serde(default)]
    since: Option<String>,
    /// The growth factor to plan for (above 0, at most 1000); default 1.
    #[serde(default)]
    growth: Option<f64>,
    /// `all` (every environment the token may see, the default) or `env`.
    #[serde(default)]
    scope: Option<String>,
}

/// Peak use per function, and the nodes a growth factor would need.
#[utoipa::path(
    get,
    path = "/v1/capacity",
    tag = "cost",
    params(CapacityQuery),
    responses(
        (status = 200, description = "Peak use, and what the growth factor would need.", body = CapacityReport),
        (status = 400, description = "`invalid_growth`, `invalid_since`, `invalid_scope`.", body = ErrorBody),
    ),
)]
pub(crate) async fn capacity(
    State(shared): State<Arc<Shared>>,
    Extension(env): Extension<Arc<Environment>>,
    Extension(caller): Extension<Caller>,
    crate::api::extract::Query(query): crate::api::extract::Query<CapacityQuery>,
) -> Result<Json<CapacityReport>, ApiError> {
    let growth = query.growth.unwrap_or(1.0);
    if !(growth.is_finite() && growth > 0.0 && growth <= 1000.0) {
        return Err(ApiError::bad_request(
            "invalid_growth",
            format!("--growth {growth} is out of range: give a factor above 0 and at most 1000"),
        ));
    }
    let everywhere = crate::api::every_environment(query.scope.as_deref(), &caller)?;
    let since_ms =
        crate::api::parse_since(query.since.as_deref(), Duration::from_secs(7 * 24 * 3600))?;
    let now = now_ms();
    let full_core_mb = shared.runtime.config().cpu_full_core_bytes as f64 / (1 << 20) as f64;
    let full_core_mb = if full_core_mb > 0.0 {
        full_core_mb
    } else {
        1.0
    };
    let store = shared.store.clone();
    let only = (!everywhere).then(|| env.name.clone());
    let observed =
        blocking(move || Ok(store.capacity(only.as_deref(), since_ms, full_core_mb)?)).await?;
    let node_memory_bytes = node_memory_bytes();
    let node_cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let node_instances = u64::from(shared.runtime.config().max_instances);
    let (instances, memory_mb, cores) = observed
        .busiest
        .as_ref()
        .map_or((0, 0, 0.0), |b| (b.instances, b.memory_mb, b.cores));
    let needed_instances = (instances as f64 * growth).ceil() as u64;
    let needed_memory_mb = (memory_mb as f64 * growth).ceil() as u64;
    let needed_cores = cores * growth;
    let usable_mb = node_memory_bytes as f64 / (1 << 20) as f64 * USABLE_MEMORY;
    let by_memory = if usable_mb > 0.0 {
        (needed_memory_mb as f64 / usable_mb).ceil() as u64
    } else {
        0
    };
    let by_cores = (needed_cores / node_cores as f64).ceil() as u64;
    let by_instances = needed_instances.div_ceil(node_instances.max(1));
    let (nodes_needed, limited_by) = [
        (by_memory, "memory"),
        (by_cores, "cpu"),
        (by_instances, "instances"),
    ]
    .into_iter()
    .max_by_key(|(n, _)| *n)
    .unwrap_or((0, "memory"));
    // The rate is read over the time with data (a young node or environment has less than
    // `--since` of it), and at least an hour.
    let data_from = observed.first_hour_ms.unwrap_or(now).max(observed.since_ms);
    let window_ms = (now - data_from).max(3_600_000) as f64;
    let cost: u64 = observed.functions.iter().map(|f| f.cost.0).sum();
    let monthly = PicoUsd(cost).as_usd() * (30.0 * 86_400_000.0) / window_ms;
    Ok(Json(CapacityReport {
        growth,
        node_memory_bytes,
        node_cores,
        node_instances,
        needed_instances,
        needed_memory_mb,
        needed_cores,
        nodes_needed: nodes_needed.max(u64::from(needed_instances > 0)),
        limited_by: limited_by.to_owned(),
        monthly_cost_usd: monthly,
        monthly_cost_at_growth_usd: monthly * growth,
        observed,
    }))
}
