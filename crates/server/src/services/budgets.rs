//! Monthly budgets: setting one for a function, an environment or an owner, and removing one,
//! with the scope rules of the token that asks.

use runway_manifest::BudgetAction;
use runway_store::{Budget, BudgetKind, ControlStore, StoreError};

use crate::environments::Environment;
use crate::services::tokens::Actor;

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

#[cfg(test)]
mod tests {
    use runway_store::BudgetStore;
    use runway_store_sqlite::SqliteStore;

    use super::*;

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
