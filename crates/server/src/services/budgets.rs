//! Monthly budgets per function, environment and owner: setting and removing one with the
//! scope rules of the token that asks; what has been spent this calendar month (UTC), the
//! burn rate and the month-end projection; alerts at 50, 80 and 100 percent (a webhook, the
//! control-plane audit log and `/metrics`); and at 100 percent the budget's action: `alert`,
//! `throttle` (one invocation at a time) or `stop` (402).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use runway_manifest::BudgetAction;
use runway_meter::PicoUsd;
use runway_store::{
    Budget, BudgetKind, ControlAuditRecord, ControlStore, CostDimension, StoreError,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::Shared;

use crate::environments::Environment;
use crate::services::tokens::Actor;

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

/// A budget to set.
pub(crate) struct NewBudget {
    pub(crate) kind: BudgetKind,
    /// The function or owner it covers (an environment budget covers `env`).
    pub(crate) scope: Option<String>,
    pub(crate) monthly_pusd: u64,
    pub(crate) action: BudgetAction,
}

/// Why a budget was not set or removed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BudgetError {
    /// A function or owner budget without its name.
    #[error("{0}")]
    MissingScope(&'static str),
    /// An owner budget asked for by a token scoped to one environment.
    #[error("an owner budget spans every environment and needs a token for every environment")]
    OwnerNeedsEveryEnvironment,
    /// The function is not deployed in the environment.
    #[error(
        "no function named `{function}` is deployed in environment `{environment}`; `runway ls --env {environment}` lists them"
    )]
    NoSuchFunction {
        function: String,
        environment: String,
    },
    /// No budget of that id.
    #[error("no budget `{0}`; `runway budget ls` lists them")]
    NoSuchBudget(String),
    /// The budget is outside the asking token's environment.
    #[error(
        "budget `{budget}` is not in environment `{scope}`, the only one this token may act on"
    )]
    OutsideScope { budget: String, scope: String },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The budget service of a node.
pub(crate) struct Budgets<'a> {
    store: &'a dyn ControlStore,
}

impl<'a> Budgets<'a> {
    /// The service over a node's store.
    pub(crate) fn new(store: &'a dyn ControlStore) -> Budgets<'a> {
        Budgets { store }
    }

    /// Creates or replaces the budget `request` describes, in `env` for function and
    /// environment budgets; returns it as stored.
    pub(crate) fn set(
        &self,
        actor: &Actor<'_>,
        env: &Environment,
        request: NewBudget,
        now_ms: i64,
    ) -> Result<Budget, BudgetError> {
        let (scope, environment) = match request.kind {
            BudgetKind::Function => {
                let name = request.scope.ok_or(BudgetError::MissingScope(
                    "a function budget names the function",
                ))?;
                if !env.routes.load().functions.contains_key(&name) {
                    return Err(BudgetError::NoSuchFunction {
                        function: name,
                        environment: env.name.clone(),
                    });
                }
                (name, Some(env.name.clone()))
            }
            BudgetKind::Environment => (env.name.clone(), Some(env.name.clone())),
            BudgetKind::Owner => {
                if actor.scope.is_some() {
                    return Err(BudgetError::OwnerNeedsEveryEnvironment);
                }
                let owner = request
                    .scope
                    .filter(|o| !o.trim().is_empty())
                    .ok_or(BudgetError::MissingScope("an owner budget names the owner"))?;
                (owner, None)
            }
        };
        let budget = Budget {
            id: Budget::id_for(request.kind, &scope, environment.as_deref()),
            kind: request.kind,
            scope,
            environment,
            monthly_pusd: request.monthly_pusd,
            action: request.action,
            source: "cli".into(),
            updated_at_ms: now_ms,
            updated_by: actor.id.to_owned(),
        };
        self.store.set_budget(&budget)?;
        Ok(budget)
    }

    /// Removes budget `id`; a scoped token removes only its own environment's budgets.
    pub(crate) fn remove(&self, actor: &Actor<'_>, id: &str) -> Result<(), BudgetError> {
        let Some(budget) = self.store.budgets()?.into_iter().find(|b| b.id == id) else {
            return Err(BudgetError::NoSuchBudget(id.to_owned()));
        };
        if let Some(scope) = actor.scope
            && budget.environment.as_deref() != Some(scope)
        {
            return Err(BudgetError::OutsideScope {
                budget: id.to_owned(),
                scope: scope.to_owned(),
            });
        }
        if !self.store.remove_budget(id)? {
            return Err(BudgetError::NoSuchBudget(id.to_owned()));
        }
        Ok(())
    }
}

/// Keeps a function's manifest budget (`[function.budget]`) in the store after a deploy: set
/// when declared, removed when a manifest budget is no longer declared.
pub(crate) fn sync_manifest_budget(
    store: &dyn ControlStore,
    environment: &str,
    config: &runway_manifest::FunctionConfig,
    actor: &str,
) -> Result<(), StoreError> {
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
            updated_at_ms: crate::now_ms(),
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
) -> Result<Vec<BudgetStatus>, StoreError> {
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
        let now = crate::now_ms();
        let store = shared.store.clone();
        let starts = bill_starts(&shared);
        let found =
            tokio::task::spawn_blocking(move || statuses(store.as_ref(), now, &starts)).await;
        let statuses = match found {
            Ok(Ok(statuses)) => statuses,
            Ok(Err(err)) => {
                tracing::error!(error = %err, "checking budgets failed");
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
        store.claim_budget_alert(&id, &month, threshold, crate::now_ms())
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
    crate::services::audit(
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

/// The statuses `actor` may see: every one for an unscoped token, else those of its
/// environment (its functions' budgets and the environment's own).
pub(crate) fn visible(statuses: Vec<BudgetStatus>, actor: &Actor<'_>) -> Vec<BudgetStatus> {
    statuses
        .into_iter()
        .filter(|s| match actor.scope {
            None => true,
            Some(scope) => {
                s.budget.environment.as_deref() == Some(scope)
                    || (s.budget.kind == BudgetKind::Environment && s.budget.scope == scope)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use runway_store::BudgetStore;
    use runway_store_sqlite::SqliteStore;

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

    use crate::services::test_environment as env;

    fn budget(kind: BudgetKind, scope: Option<&str>) -> NewBudget {
        NewBudget {
            kind,
            scope: scope.map(str::to_owned),
            monthly_pusd: 20_000_000_000_000,
            action: BudgetAction::Alert,
        }
    }

    #[test]
    fn scoped_tokens_set_and_remove_only_their_environments_budgets() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let budgets = Budgets::new(&store);
        let root = Actor {
            id: "bootstrap",
            scope: None,
        };
        let staging = Actor {
            id: "t-staging",
            scope: Some("staging"),
        };
        let prod = env("prod");
        let set = budgets
            .set(&root, &prod, budget(BudgetKind::Environment, None), 5)
            .unwrap();
        assert_eq!(set.id, "env:prod");
        assert_eq!(store.budgets().unwrap(), vec![set.clone()]);
        let owner = budgets
            .set(&root, &prod, budget(BudgetKind::Owner, Some("payments")), 5)
            .unwrap();
        assert!(matches!(
            budgets.set(&staging, &prod, budget(BudgetKind::Owner, Some("x")), 5),
            Err(BudgetError::OwnerNeedsEveryEnvironment)
        ));
        assert!(matches!(
            budgets.remove(&staging, &set.id),
            Err(BudgetError::OutsideScope { .. })
        ));
        budgets.remove(&root, &owner.id).unwrap();
        assert!(matches!(
            budgets.remove(&root, &owner.id),
            Err(BudgetError::NoSuchBudget(_))
        ));
        assert_eq!(store.budgets().unwrap(), vec![set]);
    }

    #[test]
    fn a_function_budget_needs_a_deployed_function_and_an_owner_budget_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let budgets = Budgets::new(&store);
        let root = Actor {
            id: "bootstrap",
            scope: None,
        };
        let prod = env("prod");
        assert!(matches!(
            budgets.set(&root, &prod, budget(BudgetKind::Function, Some("ghost")), 0),
            Err(BudgetError::NoSuchFunction { function, .. }) if function == "ghost"
        ));
        assert!(matches!(
            budgets.set(&root, &prod, budget(BudgetKind::Function, None), 0),
            Err(BudgetError::MissingScope(_))
        ));
        assert!(matches!(
            budgets.set(&root, &prod, budget(BudgetKind::Owner, Some("  ")), 0),
            Err(BudgetError::MissingScope(_))
        ));
        assert!(store.budgets().unwrap().is_empty());
    }
}
