//! Environments: each has its own route table, API keys, SQL and key-value data, secrets
//! and scoped tokens, and its own signing and vetting rules. The gateway picks one by host
//! name (`NAME.localhost`); the admin API by `?env=NAME`. A node always has its home
//! environment (default `prod`), whose rules come from the node's flags.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use http::StatusCode;
use runway_manifest::environment_label;
use runway_policy::PolicyMode;
use runway_signing::TrustedKeys;
use runway_store::{ControlStore, EnvironmentRecord, EnvironmentRules};

use crate::invocation::ApiKeyTable;
use crate::live::{LiveFunction, RouteTable};
use crate::now_ms;

/// Longest environment name: it must fit a DNS label with room for a suffix.
const MAX_NAME_LEN: usize = 32;

/// An environment's signing and vetting rules, ready to check.
#[derive(Clone, Default)]
pub(crate) struct Rules {
    pub(crate) trusted_keys: Option<TrustedKeys>,
    pub(crate) strict_vetting: bool,
    pub(crate) production: bool,
    /// Its functions' schedules do not fire.
    pub(crate) paused_schedules: bool,
}

impl Rules {
    /// The rules a stored record declares, or why its trusted keys do not parse.
    pub(crate) fn from_record(name: &str, rules: &EnvironmentRules) -> Result<Rules, String> {
        let trusted_keys = rules
            .trusted_keys
            .as_deref()
            .map(|text| TrustedKeys::parse(text, &format!("trusted keys of environment {name}")))
            .transpose()
            .map_err(|err| err.to_string())?;
        Ok(Rules {
            trusted_keys,
            strict_vetting: rules.strict_vetting,
            production: rules.production,
            paused_schedules: rules.paused_schedules,
        })
    }

    /// Why a release cannot serve here: audit mode where production is required, imports
    /// beyond the policy under strict vetting (from its stored report).
    pub(crate) fn refusals(&self, release: &runway_store::Release) -> Vec<String> {
        let mut refusals = Vec::new();
        if self.production && release.config.policy_mode == PolicyMode::Audit {
            refusals.push(format!(
                "release {} runs in policy audit mode, which a production environment refuses",
                release.number
            ));
        }
        if self.strict_vetting
            && let Some(report) = &release.vetting
        {
            refusals.extend(crate::services::releases::strict_vetting_refusals(
                &release.config,
                report,
            ));
        }
        refusals
    }
}

/// One environment as the node serves it.
pub(crate) struct Environment {
    pub(crate) name: String,
    pub(crate) record: EnvironmentRecord,
    pub(crate) rules: Rules,
    /// Whether this is the node's home environment (never removed, served on plain hosts).
    pub(crate) home: bool,
    pub(crate) routes: ArcSwap<RouteTable>,
    /// API keys of this environment, by hash.
    pub(crate) api_keys: ArcSwap<ApiKeyTable>,
    /// Set once removed: work that still holds it must not change anything.
    pub(crate) removed: AtomicBool,
}

impl Environment {
    pub(crate) fn new(
        record: EnvironmentRecord,
        rules: Rules,
        home: bool,
        routes: RouteTable,
        api_keys: ApiKeyTable,
    ) -> Environment {
        Environment {
            name: record.name.clone(),
            record,
            rules,
            home,
            routes: ArcSwap::from_pointee(routes),
            api_keys: ArcSwap::from_pointee(api_keys),
            removed: AtomicBool::new(false),
        }
    }

    /// Where this environment's bill starts: its creation, so a removed environment of the
    /// same name is not counted; the home environment is never removed, and its records
    /// may predate its registration (a node upgraded in place), so it counts them all.
    pub(crate) fn billed_since(&self) -> i64 {
        if self.home {
            0
        } else {
            self.record.created_at_ms
        }
    }

    /// Refuses a change to an environment removed while the change waited.
    pub(crate) fn check_present(&self) -> Result<(), Missing> {
        if self.removed.load(Ordering::Acquire) {
            return Err(Missing::Environment(self.name.clone()));
        }
        Ok(())
    }

    /// A live function of this environment, or an error that says where to look.
    pub(crate) fn function(&self, name: &str) -> Result<Arc<LiveFunction>, Missing> {
        self.routes
            .load()
            .functions
            .get(name)
            .cloned()
            .ok_or_else(|| Missing::Function {
                function: name.to_owned(),
                environment: self.name.clone(),
            })
    }
}

/// An environment or function that is not there.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Missing {
    /// No environment of that name (or it was removed while a change waited).
    #[error("environment `{0}` does not exist; `runway env ls` lists them")]
    Environment(String),
    /// No function of that name deployed in the environment.
    #[error(
        "no function named `{function}` is deployed in environment `{environment}`; `runway ls --env {environment}` lists them"
    )]
    Function {
        function: String,
        environment: String,
    },
}

/// Every environment the node serves; swapped whole when one is created or removed.
pub(crate) struct Environments {
    pub(crate) home: Arc<Environment>,
    by_name: HashMap<String, Arc<Environment>>,
}

/// Which environment a gateway request is for.
pub(crate) enum HostMatch<'a> {
    Found(&'a Arc<Environment>),
    /// The host names an environment this node does not have.
    Unknown(&'a str),
}

impl Environments {
    pub(crate) fn new(home: Arc<Environment>, others: Vec<Arc<Environment>>) -> Environments {
        let mut by_name: HashMap<String, Arc<Environment>> =
            others.into_iter().map(|e| (e.name.clone(), e)).collect();
        by_name.insert(home.name.clone(), home.clone());
        Environments { home, by_name }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Environment>> {
        self.by_name.get(name)
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<Environment>> {
        self.by_name.values()
    }

    /// The live functions that `keep` selects, in the environments `in_env` selects.
    pub(crate) fn functions_where(
        &self,
        in_env: impl Fn(&Environment) -> bool,
        keep: impl Fn(&LiveFunction) -> bool,
    ) -> Vec<Arc<LiveFunction>> {
        self.all()
            .filter(|env| in_env(env))
            .flat_map(|env| {
                env.routes
                    .load()
                    .functions
                    .values()
                    .filter(|f| keep(f))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// These environments and `added`.
    pub(crate) fn with(&self, added: Arc<Environment>) -> Environments {
        let mut by_name = self.by_name.clone();
        by_name.insert(added.name.clone(), added);
        Environments {
            home: self.home.clone(),
            by_name,
        }
    }

    /// These environments but `name`.
    pub(crate) fn without(&self, name: &str) -> Environments {
        let mut by_name = self.by_name.clone();
        by_name.remove(name);
        Environments {
            home: self.home.clone(),
            by_name,
        }
    }

    /// The environment a `Host` header names: `NAME.localhost` or `NAME.<domain>` for one of
    /// the node's `--env-domain`s; any other host is the home environment.
    pub(crate) fn for_host<'a>(
        &'a self,
        host: Option<&'a str>,
        domains: &[String],
    ) -> HostMatch<'a> {
        let Some(label) = host.and_then(|host| environment_label(host, domains)) else {
            return HostMatch::Found(&self.home);
        };
        let found = if label.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_name.get(&label.to_ascii_lowercase())
        } else {
            self.by_name.get(label)
        };
        match found {
            Some(env) => HostMatch::Found(env),
            None => HostMatch::Unknown(label),
        }
    }
}

/// Why `name` cannot name an environment, if it cannot.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid environment name `{name}`: use 1 to {MAX_NAME_LEN} lower-case letters, digits \
             and hyphens, starting with a letter and not ending with a hyphen (it becomes a host \
             name, `{name}.localhost`)"
        ))
    }
}

/// The home environment and every other one in the store, with their functions restored.
pub(crate) fn home_record(name: &str, rules: &Rules) -> EnvironmentRecord {
    EnvironmentRecord {
        name: name.to_owned(),
        created_at_ms: now_ms(),
        expires_at_ms: None,
        created_by: "system".into(),
        source: None,
        rules: EnvironmentRules {
            trusted_keys: None,
            strict_vetting: rules.strict_vetting,
            production: rules.production,
            paused_schedules: false,
        },
    }
}

/// Rules stored for a record, parsed; an unusable stored key set serves nothing rather than
/// serving unsigned code.
pub(crate) fn stored_rules(record: &EnvironmentRecord) -> Rules {
    Rules::from_record(&record.name, &record.rules).unwrap_or_else(|why| {
        tracing::error!(environment = %record.name, error = %why, "the environment's trusted keys are unusable; it refuses every artifact");
        Rules {
            trusted_keys: Some(TrustedKeys::new(Vec::new())),
            ..Rules::default()
        }
    })
}

/// Loads every environment in the store (registering the home one), each with its
/// functions, sharing compiled code between environments that run the same artifact.
pub(crate) fn restore_all(
    store: &dyn ControlStore,
    runtime: &runway_runtime::Runtime,
    metrics: &crate::metrics::Metrics,
    capabilities: &crate::capabilities::PlatformCapabilities,
    home_name: &str,
    home_rules: Rules,
    cluster: &crate::cluster::ClusterView,
) -> Result<(Environments, crate::RestoreSummary), crate::NodeError> {
    let home_record = store.ensure_environment(&home_record(home_name, &home_rules))?;
    let mut summary = crate::RestoreSummary::default();
    let mut prepared = HashMap::new();
    let mut load = |record: EnvironmentRecord, rules: Rules, home: bool| {
        let routes = crate::services::releases::restore(
            store,
            runtime,
            metrics,
            capabilities,
            &record.name,
            &rules,
            &mut prepared,
            &mut summary,
        )?;
        let keys = ApiKeyTable::load(store, &record.name, &ApiKeyTable::default(), cluster)?;
        Ok::<_, crate::NodeError>(Arc::new(Environment::new(
            record, rules, home, routes, keys,
        )))
    };
    let home = load(home_record, home_rules, true)?;
    let mut others = Vec::new();
    for record in store.environments()? {
        if record.name == home_name {
            continue;
        }
        let rules = stored_rules(&record);
        others.push(load(record, rules, false)?);
    }
    Ok((Environments::new(home, others), summary))
}

/// The 404 the gateway gives for a host naming no environment.
pub(crate) fn unknown_host_answer(label: &str) -> (StatusCode, String) {
    (
        StatusCode::NOT_FOUND,
        format!("no environment named `{label}` on this node; `runway env ls` lists them\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for good in ["dev", "pr-42", "a", "staging2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Dev",
            "-dev",
            "dev-",
            "2dev",
            "dev.x",
            "dev_x",
            &"a".repeat(33),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
