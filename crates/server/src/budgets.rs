//! Planning what functions cost. Monthly budgets per function, environment and owner: what
//! has been spent this calendar month (UTC), the burn rate, the month-end projection, alerts
//! at 50, 80 and 100 percent (a webhook, the control-plane audit log and `/metrics`), and at
//! 100 percent the budget's action: `alert`, `throttle` (one invocation at a time) or `stop`
//! (402). And capacity: peak concurrency and memory per function, and the nodes a growth
//! factor would need.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::response::Response;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use runway_manifest::{BudgetAction, Usd};
use runway_meter::PicoUsd;
use runway_store::{Budget, BudgetKind, ControlAuditRecord, ControlStore, CostDimension};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::admin::{blocking, json_body};
use crate::auth::{AuditNote, Caller, noted, now_ms};
use crate::environments::Environment;
use crate::error::{ApiError, ErrorBody};
use crate::extract::Path;
use crate::services::budgets::{Budgets, NewBudget};

/// Budget enforcement states, kept per function.
pub(crate) const OPEN: u8 = 0;
pub(crate) const THROTTLED: u8 = 1;
pub(crate) const STOPPED: u8 = 2;

/// The percentages at which alerts go out.
pub const THRESHOLDS: [u32; 3] = [50, 80, 100];

/// How often budgets are checked.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// A budget with where it stands this month.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BudgetStatus {
    /// The budget.
    pub budget: Budget,
    /// The calendar month (UTC), `2026-11`.
    pub month: String,
    /// Spent this month.
    pub spent: PicoUsd,
    /// Spent as a share of the budget (1 = all of it).
    pub used: f64,
    /// Spending per day so far this month, US dollars.
    pub burn_per_day_usd: f64,
    /// The month-end cost at that rate, US dollars.
    pub projected_usd: f64,
    /// The highest threshold reached (0, 50, 80 or 100).
    pub reached: u32,
    /// Whether the action is in force (`throttle` or `stop` at 100 percent).
    pub enforced: bool,
}

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

/// The start of the calendar month (UTC) holding `now_ms`, and its end.
fn month_of(now_ms: i64) -> (String, i64, i64) {
    let now = DateTime::<Utc>::from_timestamp_millis(now_ms).unwrap_or_default();
    let start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    let (y, m) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    let end = Utc
        .with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .unwrap_or(now);
    (
        format!("{:04}-{:02}", now.year(), now.month()),
        start.timestamp_millis(),
        end.timestamp_millis(),
    )
}

/// When each environment's bill starts (its creation; see `Environment::billed_since`).
pub(crate) fn bill_starts(shared: &Shared) -> std::collections::HashMap<String, i64> {
    shared
        .environments
        .load()
        .all()
        .map(|e| (e.name.clone(), e.billed_since()))
        .collect()
}

/// Where every budget stands at `now_ms`. A function or environment budget counts from the
/// later of the month's start and its environment's creation, so a same-name environment
/// removed earlier in the month is not billed to it.
pub(crate) fn statuses(
    store: &dyn ControlStore,
    now_ms: i64,
    bill_starts: &std::collections::HashMap<String, i64>,
) -> Result<Vec<BudgetStatus>, ApiError> {
    let budgets = store.budgets()?;
    if budgets.is_empty() {
        return Ok(Vec::new());
    }
    let (month, start, end) = month_of(now_ms);
    let by_function = store.cost_by(CostDimension::Function, None, start)?;
    let by_env = store.cost_by(CostDimension::Environment, None, start)?;
    let by_owner = store.cost_by(CostDimension::Owner, None, start)?;
    let elapsed_days = ((now_ms - start).max(60_000)) as f64 / 86_400_000.0;
    let month_days = (end - start) as f64 / 86_400_000.0;
    // Environments younger than the month: summed from their creation instead.
    let mut young: std::collections::HashMap<String, Vec<runway_store::CostRow>> =
        std::collections::HashMap::new();
    for budget in &budgets {
        let Some(env) = &budget.environment else {
            continue;
        };
        let from = bill_starts.get(env).copied().unwrap_or(start);
        if from > start && !young.contains_key(env) {
            young.insert(
                env.clone(),
                store.cost_by(CostDimension::Function, Some(env), from)?,
            );
        }
    }
    Ok(budgets
        .into_iter()
        .map(|budget| {
            let fresh = budget.environment.as_ref().and_then(|e| young.get(e));
            let spent = match (budget.kind, fresh) {
                (BudgetKind::Function, Some(rows)) => rows
                    .iter()
                    .find(|r| r.function.as_deref() == Some(budget.scope.as_str()))
                    .map_or(PicoUsd(0), |r| r.cost),
                (BudgetKind::Environment, Some(rows)) => {
                    PicoUsd(rows.iter().map(|r| r.cost.0).sum())
                }
                _ => match budget.kind {
                    BudgetKind::Function => by_function
                        .iter()
                        .find(|r| {
                            r.function.as_deref() == Some(budget.scope.as_str())
                                && r.environment == budget.environment
                        })
                        .map_or(PicoUsd(0), |r| r.cost),
                    BudgetKind::Environment => by_env
                        .iter()
                        .find(|r| r.environment.as_deref() == Some(budget.scope.as_str()))
                        .map_or(PicoUsd(0), |r| r.cost),
                    BudgetKind::Owner => by_owner
                        .iter()
                        .find(|r| r.owner.as_deref() == Some(budget.scope.as_str()))
                        .map_or(PicoUsd(0), |r| r.cost),
                },
            };
            let used = spent.0 as f64 / budget.monthly_pusd.max(1) as f64;
            let burn = spent.as_usd() / elapsed_days;
            let reached = THRESHOLDS
                .iter()
                .copied()
                .filter(|t| used * 100.0 >= f64::from(*t))
                .max()
                .unwrap_or(0);
            BudgetStatus {
                enforced: reached == 100 && budget.action != BudgetAction::Alert,
                month: month.clone(),
                spent,
                used,
                burn_per_day_usd: burn,
                projected_usd: burn * month_days,
                reached,
                budget,
            }
        })
        .collect())
}

/// Whether a budget covers a function.
fn covers(budget: &Budget, env: &str, function: &str, owner: Option<&str>) -> bool {
    match budget.kind {
        BudgetKind::Function => {
            budget.scope == function && budget.environment.as_deref() == Some(env)
        }
        BudgetKind::Environment => budget.scope == env,
        BudgetKind::Owner => owner == Some(budget.scope.as_str()),
    }
}

/// Checks every budget until `stop`: metrics, alerts (each once a month), enforcement.
pub(crate) async fn watch(shared: Arc<Shared>, webhook: Option<String>, stop: CancellationToken) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client without TLS settings builds");
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = now_ms();
        let store = shared.store.clone();
        let starts = bill_starts(&shared);
        let found =
            tokio::task::spawn_blocking(move || statuses(store.as_ref(), now, &starts)).await;
        let statuses = match found {
            Ok(Ok(statuses)) => statuses,
            Ok(Err(err)) => {
                tracing::error!(error = %err.message, "checking budgets failed");
                continue;
            }
            Err(err) => {
                tracing::error!(error = %err, "the budget task failed");
                continue;
            }
        };
        // Enforcement first: a slow webhook must never delay a stop.
        enforce(&shared, &statuses);
        let mut outgoing = Vec::new();
        for status in &statuses {
            let id = status.budget.id.as_str();
            shared
                .metrics
                .budget_used
                .with_label_values(&[id])
                .set(status.used);
            shared
                .metrics
                .budget_projected
                .with_label_values(&[id])
                .set(status.projected_usd * 1e12 / status.budget.monthly_pusd.max(1) as f64);
            for threshold in THRESHOLDS.iter().filter(|t| **t <= status.reached) {
                outgoing.extend(alert(&shared, status, *threshold).await);
            }
        }
        if let (Some(url), false) = (&webhook, outgoing.is_empty()) {
            // In order, in the background: the next check does not wait for the receiver.
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                for body in outgoing {
                    if let Err(err) = http.post(&url).json(&body).send().await {
                        tracing::error!(budget = %body["budget"], error = %err, "the budget webhook failed");
                    }
                }
            });
        }
    }
}

/// Sets each live function's enforcement from the budgets that cover it.
fn enforce(shared: &Shared, statuses: &[BudgetStatus]) {
    for env in shared.environments.load().all() {
        for function in env.routes.load().functions.values() {
            let owner = function.release.config.owner.as_deref();
            let state = statuses
                .iter()
                .filter(|s| s.enforced && covers(&s.budget, &env.name, function.name(), owner))
                .map(|s| match s.budget.action {
                    BudgetAction::Stop => STOPPED,
                    BudgetAction::Throttle => THROTTLED,
                    BudgetAction::Alert => OPEN,
                })
                .max()
                .unwrap_or(OPEN);
            let before = function.budget.swap(state, Ordering::AcqRel);
            if before != state {
                tracing::warn!(
                    function = function.name(),
                    environment = %env.name,
                    state = ["open", "throttled", "stopped"][usize::from(state)],
                    "budget enforcement changed"
                );
            }
        }
    }
}

/// Records one threshold's alert unless it went out this month already, and returns the
/// webhook's payload for it.
async fn alert(
    shared: &Arc<Shared>,
    status: &BudgetStatus,
    threshold: u32,
) -> Option<serde_json::Value> {
    let (store, id, month) = (
        shared.store.clone(),
        status.budget.id.clone(),
        status.month.clone(),
    );
    let claimed = tokio::task::spawn_blocking(move || {
        store.claim_budget_alert(&id, &month, threshold, now_ms())
    })
    .await;
    if !matches!(claimed, Ok(Ok(true))) {
        return None;
    }
    let budget = &status.budget;
    shared
        .metrics
        .budget_alerts
        .with_label_values(&[budget.id.as_str(), &threshold.to_string()])
        .inc();
    let limit = PicoUsd(budget.monthly_pusd).as_usd();
    let detail = format!(
        "{threshold}% of {} spent in {} (${:.6} of ${limit:.2}; projected ${:.2}); action {}",
        budget.id,
        status.month,
        status.spent.as_usd(),
        status.projected_usd,
        budget.action.as_str()
    );
    tracing::warn!(budget = %budget.id, threshold, "{detail}");
    let home = shared.environments.load().home.name.clone();
    crate::auth::audit(
        shared,
        ControlAuditRecord::now(
            budget.environment.as_deref().unwrap_or(&home),
            "system",
            "budget.alert",
            &budget.id,
            200,
            "ok",
            detail,
        ),
    )
    .await;
    Some(serde_json::json!({
        "budget": budget.id,
        "kind": budget.kind,
        "scope": budget.scope,
        "environment": budget.environment,
        "threshold": threshold,
        "month": status.month,
        "spent_usd": status.spent.as_usd(),
        "limit_usd": limit,
        "projected_usd": status.projected_usd,
        "action": budget.action,
        "enforced": status.enforced && threshold == 100,
    }))
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
    let all = blocking(move || statuses(store.as_ref(), now_ms(), &starts)).await?;
    Ok(Json(
        all.into_iter()
            .filter(|s| match &caller.environment {
                None => true,
                Some(scope) => {
                    s.budget.environment.as_deref() == Some(scope.as_str())
                        || (s.budget.kind == BudgetKind::Environment && &s.budget.scope == scope)
                }
            })
            .collect(),
    ))
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

/// Keeps a function's manifest budget (`[function.budget]`) in the store after a deploy: set
/// when declared, removed when a manifest budget is no longer declared.
pub(crate) fn sync_manifest_budget(
    store: &dyn ControlStore,
    environment: &str,
    config: &runway_manifest::FunctionConfig,
    actor: &str,
) -> Result<(), ApiError> {
    let id = Budget::id_for(
        BudgetKind::Function,
        config.name.as_str(),
        Some(environment),
    );
    match &config.budget {
        Some(declared) => store.set_budget(&Budget {
            id,
            kind: BudgetKind::Function,
            scope: config.name.to_string(),
            environment: Some(environment.to_owned()),
            monthly_pusd: declared.monthly.pico,
            action: declared.action,
            source: "manifest".into(),
            updated_at_ms: now_ms(),
            updated_by: actor.to_owned(),
        })?,
        None => {
            let from_manifest = store
                .budgets()?
                .iter()
                .any(|b| b.id == id && b.source == "manifest");
            if from_manifest {
                store.remove_budget(&id)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_calendar_months_in_utc() {
        // 2026-11-27T12:00:00Z
        let (month, start, end) = month_of(1_795_780_800_000);
        assert_eq!(month, "2026-11");
        assert_eq!(start, 1_793_491_200_000); // 2026-11-01
        assert_eq!(end, 1_796_083_200_000); // 2026-12-01
        let (december, _, next) = month_of(1_796_083_200_000 + 1);
        assert_eq!(december, "2026-12");
        assert_eq!(next, 1_798_761_600_000); // 2027-01-01
    }
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
    crate::extract::Query(query): crate::extract::Query<CapacityQuery>,
) -> Result<Json<CapacityReport>, ApiError> {
    let growth = query.growth.unwrap_or(1.0);
    if !(growth.is_finite() && growth > 0.0 && growth <= 1000.0) {
        return Err(ApiError::bad_request(
            "invalid_growth",
            format!("--growth {growth} is out of range: give a factor above 0 and at most 1000"),
        ));
    }
    let everywhere = crate::admin::every_environment(query.scope.as_deref(), &caller)?;
    let since_ms =
        crate::admin::parse_since(query.since.as_deref(), Duration::from_secs(7 * 24 * 3600))?;
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
