//! Environments as a team uses them: listing the ones a caller may act on, creating one
//! (empty or from another, sharing its compiled code), removing one with everything in it,
//! and removing those whose time is up.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use runway_meter::PicoUsd;
use runway_store::{
    ControlAuditRecord, EnvironmentRecord, EnvironmentRules, StoreError, StoredSecret,
};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::environments::{Environment, Missing, Rules, check_name};
use crate::invocation::ApiKeyTable;
use crate::live::{LiveFunction, RouteTable};
use crate::now_ms;
use crate::services::tokens::Actor;

/// Longest time an environment can be given to live.
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why an environment was not listed, created or removed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EnvironmentError {
    /// A token scoped to one environment asked for something that spans them all.
    #[error(
        "token {actor} is scoped to environment `{scope}`; {what} needs a token for every environment"
    )]
    Scoped {
        actor: String,
        scope: String,
        what: &'static str,
    },
    /// The name is not a DNS label of the allowed length.
    #[error("{0}")]
    InvalidName(String),
    /// The time to live does not parse or is out of range.
    #[error("{0}")]
    InvalidTtl(String),
    /// Data or secrets to copy without an environment to copy them from.
    #[error(
        "--copy-data and --copy-secrets copy from the environment named by --from; add --from ENV"
    )]
    NothingToCopy,
    /// The trusted keys do not parse.
    #[error("{0}")]
    InvalidTrustedKeys(String),
    /// An environment of that name exists.
    #[error("environment `{0}` already exists; pick another name or `runway env rm {0}` first")]
    Exists(String),
    /// The environment (or the one to copy from) is not there.
    #[error(transparent)]
    Missing(#[from] Missing),
    /// The new environment's rules refuse what its source serves.
    #[error("{0}")]
    VettingFailed(String),
    /// The node's home environment is never removed.
    #[error("`{0}` is this node's home environment and cannot be removed")]
    Home(String),
    /// The node failed (capabilities, the vault, a task); the detail is logged.
    #[error("{0}")]
    Internal(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn task_failed(err: tokio::task::JoinError) -> EnvironmentError {
    EnvironmentError::Internal(format!("environment task failed: {err}"))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EnvironmentError> + Send + 'static,
) -> Result<T, EnvironmentError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(task_failed)?
}

fn unscoped(actor: &Actor<'_>, what: &'static str) -> Result<(), EnvironmentError> {
    match actor.scope {
        None => Ok(()),
        Some(scope) => Err(EnvironmentError::Scoped {
            actor: actor.id.to_owned(),
            scope: scope.to_owned(),
            what,
        }),
    }
}

/// `POST /v1/envs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironmentRequest {
    /// Its name (a DNS label).
    #[schema(example = "dev")]
    pub name: String,
    /// Start with this environment's releases (shared by digest) and SQL schema.
    #[serde(default)]
    #[schema(example = "prod")]
    pub from: Option<String>,
    /// Remove it with everything in it after this long (`72h`, `30d`).
    #[serde(default)]
    pub ttl: Option<String>,
    /// Copy the SQL rows and the key-value store too (needs `from`).
    #[serde(default)]
    pub copy_data: bool,
    /// Copy the secrets too (needs `from`).
    #[serde(default)]
    pub copy_secrets: bool,
    /// Require every artifact to be signed by one of these keys (a trusted-keys file's text).
    #[serde(default)]
    pub trusted_keys: Option<String>,
    /// Refuse components importing a capability their policy does not grant.
    #[serde(default)]
    pub strict_vetting: bool,
    /// Refuse functions in policy audit mode.
    #[serde(default)]
    pub production: bool,
    /// Fire the functions' schedules (default: yes for an empty environment, no for a copy,
    /// which would otherwise repeat the source's scheduled work).
    #[serde(default)]
    pub schedules: Option<bool>,
}

/// An environment as `runway env ls` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvironmentInfo {
    /// Its name.
    pub name: String,
    /// The node's home environment (served on plain host names; never removed).
    pub home: bool,
    /// Where its functions answer.
    pub url: String,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Who created it.
    pub created_by: String,
    /// The environment it was created from.
    pub source: Option<String>,
    /// When it will be removed.
    pub expires_at_ms: Option<i64>,
    /// Functions it serves.
    pub functions: usize,
    /// Invocations since it was created.
    pub invocations: u64,
    /// Cost since it was created.
    pub cost: PicoUsd,
    /// Ids of the keys one of which must sign every artifact, if any.
    pub trusted_keys: Vec<String>,
    /// Strict vetting is on.
    pub strict_vetting: bool,
    /// Audit mode is refused.
    pub production: bool,
    /// Its schedules do not fire.
    #[serde(default)]
    pub schedules_paused: bool,
}

/// What creating an environment did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedEnvironment {
    /// The new environment.
    pub environment: EnvironmentInfo,
    /// Functions copied from the source, serving at once.
    pub copied_functions: usize,
    /// Whether SQL rows and key-value data were copied.
    pub copied_data: bool,
    /// Secrets copied.
    pub copied_secrets: usize,
    /// Time the node took, in milliseconds.
    pub took_ms: f64,
}

/// What removing an environment did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RemovedEnvironment {
    /// The environment.
    pub name: String,
    /// Functions it served.
    pub functions: usize,
}

/// An environment as the caller sees it, with what it cost since it was created.
pub(crate) fn info(
    shared: &Shared,
    env: &Environment,
    usage: &[runway_store::Usage],
) -> EnvironmentInfo {
    let port = shared.gateway_addr.port();
    let url = if env.home {
        format!("http://localhost:{port}")
    } else {
        format!("http://{}.localhost:{port}", env.name)
    };
    let (invocations, cost) = usage.iter().fold((0, PicoUsd(0)), |(n, c), u| {
        (n + u.invocations, PicoUsd(c.0 + u.cost.0))
    });
    EnvironmentInfo {
        name: env.name.clone(),
        home: env.home,
        url,
        created_at_ms: env.record.created_at_ms,
        created_by: env.record.created_by.clone(),
        source: env.record.source.clone(),
        expires_at_ms: env.record.expires_at_ms,
        functions: env.routes.load().functions.len(),
        invocations,
        cost,
        trusted_keys: env
            .rules
            .trusted_keys
            .as_ref()
            .map(|keys| keys.ids().into_iter().map(str::to_owned).collect())
            .unwrap_or_default(),
        strict_vetting: env.rules.strict_vetting,
        production: env.rules.production,
        schedules_paused: env.rules.paused_schedules,
    }
}

/// The environments `actor` may act on, the home one first, then by name.
pub(crate) async fn list(
    shared: &Arc<Shared>,
    actor: &Actor<'_>,
) -> Result<Vec<EnvironmentInfo>, EnvironmentError> {
    let environments = shared.environments.load_full();
    let mut visible: Vec<&Arc<Environment>> = environments
        .all()
        .filter(|env| actor.scope.is_none_or(|scope| scope == env.name))
        .collect();
    visible.sort_by(|a, b| (!a.home, &a.name).cmp(&(!b.home, &b.name)));
    let mut infos = Vec::with_capacity(visible.len());
    for env in visible {
        let (store, name, since) = (shared.store.clone(), env.name.clone(), env.billed_since());
        let usage = blocking(move || Ok(store.usage(&name, since)?)).await?;
        infos.push(info(shared, env, &usage));
    }
    Ok(infos)
}

/// What creating an environment did, with the line for the audit log.
pub(crate) struct Created {
    pub(crate) response: CreatedEnvironment,
    pub(crate) detail: String,
}

/// Creates an environment, empty or from another one: the source's releases are shared by
/// digest (its compiled code serves the copy at once), its SQL schema copied, and its data
/// and secrets too when asked. The new environment's rules apply to what it starts with.
pub(crate) async fn create(
    shared: &Arc<Shared>,
    actor: &Actor<'_>,
    request: CreateEnvironmentRequest,
) -> Result<Created, EnvironmentError> {
    let started = Instant::now();
    let Checked {
        rules_record,
        rules,
        ttl,
    } = check_request(actor, &request)?;
    let name = request.name.clone();
    let _serialised = shared.deploy_lock.lock().await;
    let environments = shared.environments.load_full();
    if environments.get(&name).is_some() {
        return Err(EnvironmentError::Exists(name));
    }
    let source = match &request.from {
        Some(from) => Some(
            environments
                .get(from)
                .cloned()
                .ok_or_else(|| Missing::Environment(from.clone()))?,
        ),
        None => None,
    };
    let source_functions = source
        .as_ref()
        .map(|s| s.routes.load().functions.clone())
        .unwrap_or_default();
    let mut problems = Vec::new();
    for live in source_functions.values() {
        problems.extend(
            rules
                .refusals(&live.release)
                .into_iter()
                .map(|why| format!("function `{}`: {why}", live.name())),
        );
    }
    if rules.trusted_keys.is_some() {
        let (store, keys, digests) = (
            shared.store.clone(),
            rules.trusted_keys.clone(),
            source_functions
                .values()
                .map(|f| (f.name().to_owned(), f.release.digest.clone()))
                .collect::<Vec<_>>(),
        );
        problems.extend(
            blocking(move || {
                let mut refused = Vec::new();
                for (function, digest) in digests {
                    if let Err(why) = crate::services::artifacts::admission(
                        store.as_ref(),
                        keys.as_ref(),
                        &digest,
                    )? {
                        refused.push(format!("function `{function}`: {why}"));
                    }
                }
                Ok(refused)
            })
            .await?,
        );
    }
    if !problems.is_empty() {
        return Err(EnvironmentError::VettingFailed(format!(
            "environment `{name}` would refuse what `{}` serves:\n{}",
            request.from.as_deref().unwrap_or_default(),
            problems.join("\n")
        )));
    }
    let created_at_ms = now_ms();
    let record = EnvironmentRecord {
        name: name.clone(),
        created_at_ms,
        expires_at_ms: ttl.map(|ttl| created_at_ms.saturating_add(ttl.as_millis() as i64)),
        created_by: actor.id.to_owned(),
        source: request.from.clone(),
        rules: rules_record,
    };
    let (copy_data, copy_secrets) = (request.copy_data, request.copy_secrets);
    let worker = shared.clone();
    let stored = record.clone();
    let (releases, copied_secrets) = blocking(move || {
        let capabilities = &worker.capabilities;
        // Whatever a removed environment of this name left on disk goes first.
        capabilities.forget_environment(&stored.name);
        let secrets = match (&stored.source, copy_secrets) {
            (Some(source), true) => reseal_secrets(&worker, source, &stored.name)?,
            _ => Vec::new(),
        };
        if let Some(source) = &stored.source {
            capabilities
                .copy_environment_data(source, &stored.name, copy_data)
                .map_err(|err| EnvironmentError::Internal(err.to_string()))?;
        }
        let created = worker
            .store
            .create_environment(&stored, &secrets)
            .inspect_err(|_| capabilities.forget_environment(&stored.name))?;
        if created.is_none() {
            return Err(EnvironmentError::Exists(stored.name.clone()));
        }
        Ok((worker.store.current_releases(&stored.name)?, secrets.len()))
    })
    .await?;
    let mut functions = std::collections::BTreeMap::new();
    for release in releases {
        let name = release.config.name.to_string();
        // The same compiled code, shared: nothing is copied or compiled again.
        let Some(source) = source_functions
            .get(&name)
            .filter(|s| s.release.digest == release.digest)
        else {
            continue;
        };
        let capabilities = shared
            .capabilities
            .for_release(&release)
            .map_err(|err| EnvironmentError::Internal(err.to_string()))?;
        let live = LiveFunction::new(
            release,
            source.prepared.clone(),
            capabilities,
            &shared.runtime,
            &shared.metrics,
        );
        live.revoked
            .store(source.revoked.load(Ordering::Acquire), Ordering::Release);
        functions.insert(name, Arc::new(live));
    }
    let copied_functions = functions.len();
    let env = Arc::new(Environment::new(
        record,
        rules,
        false,
        RouteTable::new(functions),
        ApiKeyTable::default(),
    ));
    shared
        .environments
        .store(Arc::new(environments.with(env.clone())));
    shared
        .metrics
        .set_function_total(&shared.environments.load());
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    let detail = format!(
        "from {} ({} functions{}{}), ttl {}",
        request.from.as_deref().unwrap_or("nothing"),
        copied_functions,
        if copy_data { ", with data" } else { "" },
        if copy_secrets { ", with secrets" } else { "" },
        request.ttl.as_deref().unwrap_or("none")
    );
    let response = CreatedEnvironment {
        environment: info(shared, &env, &[]),
        copied_functions,
        copied_data: copy_data,
        copied_secrets,
        took_ms,
    };
    Ok(Created { response, detail })
}

/// A creation request that passed the checks needing nothing but the request.
struct Checked {
    rules_record: EnvironmentRules,
    rules: Rules,
    ttl: Option<Duration>,
}

/// Checks what can be checked of a creation request before anything is locked: the token's
/// scope, the name, the time to live, what to copy, the trusted keys. A copy's schedules are
/// paused unless asked for, so it does not repeat the source's scheduled work.
fn check_request(
    actor: &Actor<'_>,
    request: &CreateEnvironmentRequest,
) -> Result<Checked, EnvironmentError> {
    unscoped(actor, "creating an environment")?;
    check_name(&request.name).map_err(EnvironmentError::InvalidName)?;
    let ttl = request.ttl.as_deref().map(parse_ttl).transpose()?;
    if (request.copy_data || request.copy_secrets) && request.from.is_none() {
        return Err(EnvironmentError::NothingToCopy);
    }
    let rules_record = EnvironmentRules {
        trusted_keys: request.trusted_keys.clone(),
        strict_vetting: request.strict_vetting,
        production: request.production,
        paused_schedules: !request.schedules.unwrap_or(request.from.is_none()),
    };
    let rules = Rules::from_record(&request.name, &rules_record)
        .map_err(EnvironmentError::InvalidTrustedKeys)?;
    Ok(Checked {
        rules_record,
        rules,
        ttl,
    })
}

fn parse_ttl(text: &str) -> Result<Duration, EnvironmentError> {
    let ttl = humantime::parse_duration(text).map_err(|err| {
        EnvironmentError::InvalidTtl(format!(
            "invalid --ttl `{text}`: {err} (write e.g. 30m, 72h or 14d)"
        ))
    })?;
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(EnvironmentError::InvalidTtl(format!(
            "--ttl {text} is out of range: give more than 0 and at most 365d"
        )));
    }
    Ok(ttl)
}

/// The source's secrets, opened and sealed again for the new environment (a sealed value
/// is bound to its environment's name).
fn reseal_secrets(
    shared: &Shared,
    source: &str,
    target: &str,
) -> Result<Vec<(String, StoredSecret)>, EnvironmentError> {
    let vault = &shared.capabilities.vault;
    let mut sealed = Vec::new();
    for info in shared.store.secrets(source)? {
        let Some(stored) = shared.store.secret(source, &info.name)? else {
            continue;
        };
        let value = vault
            .open(
                source,
                &info.name,
                &runway_cap_config::Sealed {
                    nonce: stored.nonce,
                    ciphertext: stored.ciphertext,
                },
            )
            .map_err(|err| EnvironmentError::Internal(err.to_string()))?;
        let again = vault.seal(target, &info.name, &value);
        sealed.push((
            info.name,
            StoredSecret {
                nonce: again.nonce,
                ciphertext: again.ciphertext,
            },
        ));
    }
    Ok(sealed)
}

/// Removes an environment at the request of `actor`, who needs a token for every environment.
pub(crate) async fn remove(
    shared: &Arc<Shared>,
    actor: &Actor<'_>,
    name: &str,
) -> Result<RemovedEnvironment, EnvironmentError> {
    unscoped(actor, "removing an environment")?;
    remove_environment(shared, name).await
}

/// Removes an environment: it stops serving at once, then its rows and files go.
async fn remove_environment(
    shared: &Arc<Shared>,
    name: &str,
) -> Result<RemovedEnvironment, EnvironmentError> {
    let _serialised = shared.deploy_lock.lock().await;
    let environments = shared.environments.load_full();
    let env = environments
        .get(name)
        .cloned()
        .ok_or_else(|| Missing::Environment(name.to_owned()))?;
    if env.home {
        return Err(EnvironmentError::Home(name.to_owned()));
    }
    env.removed.store(true, Ordering::Release);
    shared
        .environments
        .store(Arc::new(environments.without(name)));
    let functions = env.routes.load().functions.clone();
    for function in functions.values() {
        shared.metrics.forget_function(function.name(), name);
    }
    shared
        .metrics
        .set_function_total(&shared.environments.load());
    let worker = shared.clone();
    let target = name.to_owned();
    blocking(move || {
        worker.store.remove_environment(&target, now_ms())?;
        worker.capabilities.forget_environment(&target);
        Ok(())
    })
    .await?;
    Ok(RemovedEnvironment {
        name: name.to_owned(),
        functions: functions.len(),
    })
}

/// Removes environments whose time is up, audited as `system`.
pub(crate) async fn remove_expired(shared: &Arc<Shared>, now: i64) {
    let expired: Vec<(String, i64)> = shared
        .environments
        .load()
        .all()
        .filter_map(|env| {
            env.record
                .expires_at_ms
                .filter(|at| *at <= now)
                .map(|at| (env.name.clone(), at))
        })
        .collect();
    for (name, at) in expired {
        let outcome = remove_environment(shared, &name).await;
        let (status, result, detail) = match &outcome {
            Ok(removed) => {
                tracing::info!(environment = %name, "environment expired and was removed");
                (
                    200,
                    "ok",
                    format!(
                        "its time was up at {}; removed with {} functions",
                        crate::lifespan::format_ms(at),
                        removed.functions
                    ),
                )
            }
            Err(err) => {
                tracing::error!(environment = %name, error = %err, "removing an expired environment failed");
                // Removed meanwhile by someone else, or the node failed.
                let status = if matches!(err, EnvironmentError::Missing(_)) {
                    404
                } else {
                    500
                };
                (status, "failed", err.to_string())
            }
        };
        // Recorded in the home environment: the removed one's log can no longer be read.
        let home = shared.environments.load().home.name.clone();
        crate::services::audit(
            shared,
            ControlAuditRecord::now(&home, "system", "env.expire", &name, status, result, detail),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: Actor<'static> = Actor {
        id: "t-admin",
        scope: None,
    };

    fn request(name: &str) -> CreateEnvironmentRequest {
        CreateEnvironmentRequest {
            name: name.into(),
            ..CreateEnvironmentRequest::default()
        }
    }

    #[test]
    fn a_token_scoped_to_one_environment_cannot_create_another() {
        let scoped = Actor {
            id: "t-dev",
            scope: Some("dev"),
        };
        let err = check_request(&scoped, &request("pr-1")).err().unwrap();
        assert!(matches!(err, EnvironmentError::Scoped { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("token t-dev is scoped to environment `dev`")
        );
    }

    #[test]
    fn names_ttls_copies_and_keys_are_checked_before_anything_is_locked() {
        let err = check_request(&ADMIN, &request("Not_A_Label"))
            .err()
            .unwrap();
        assert!(matches!(err, EnvironmentError::InvalidName(_)), "{err}");
        for ttl in ["0s", "soon", "400d"] {
            let asked = CreateEnvironmentRequest {
                ttl: Some(ttl.into()),
                ..request("dev")
            };
            let err = check_request(&ADMIN, &asked).err().unwrap();
            assert!(
                matches!(err, EnvironmentError::InvalidTtl(_)),
                "{ttl}: {err}"
            );
        }
        let copy = CreateEnvironmentRequest {
            copy_data: true,
            ..request("dev")
        };
        let err = check_request(&ADMIN, &copy).err().unwrap();
        assert!(matches!(err, EnvironmentError::NothingToCopy), "{err}");
        let keys = CreateEnvironmentRequest {
            trusted_keys: Some("not a key".into()),
            ..request("dev")
        };
        let err = check_request(&ADMIN, &keys).err().unwrap();
        assert!(
            matches!(err, EnvironmentError::InvalidTrustedKeys(_)),
            "{err}"
        );
    }

    #[test]
    fn a_copy_pauses_its_schedules_unless_asked_and_an_empty_one_does_not() {
        let empty = check_request(&ADMIN, &request("dev")).ok().unwrap();
        assert!(!empty.rules.paused_schedules && !empty.rules_record.paused_schedules);
        let copy = CreateEnvironmentRequest {
            from: Some("prod".into()),
            ttl: Some("72h".into()),
            ..request("pr-7")
        };
        let checked = check_request(&ADMIN, &copy).ok().unwrap();
        assert!(checked.rules.paused_schedules);
        assert_eq!(checked.ttl, Some(Duration::from_secs(72 * 3600)));
        let firing = CreateEnvironmentRequest {
            schedules: Some(true),
            ..copy
        };
        assert!(
            !check_request(&ADMIN, &firing)
                .ok()
                .unwrap()
                .rules
                .paused_schedules
        );
    }
}
