//! Environments: each has its own route table, API keys, SQL and key-value data, secrets
//! and scoped tokens, and its own signing and vetting rules. The gateway picks one by host
//! name (`NAME.localhost`); the admin API by `?env=NAME`. A node always has its home
//! environment (default `prod`), whose rules come from the node's flags.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, State};
use axum::response::Response;
use http::StatusCode;
use runway_manifest::environment_label;
use runway_meter::PicoUsd;
use runway_policy::PolicyMode;
use runway_signing::TrustedKeys;
use runway_store::{
    ControlAuditRecord, ControlStore, EnvironmentRecord, EnvironmentRules, StoredSecret,
};
use serde::{Deserialize, Serialize};

use crate::Shared;
use crate::auth::{AuditNote, Caller, noted, now_ms};
use crate::error::{ApiError, ErrorBody};
use crate::extract::Path;
use crate::invocation::ApiKeyTable;
use crate::live::{LiveFunction, RouteTable};

/// Longest environment name: it must fit a DNS label with room for a suffix.
const MAX_NAME_LEN: usize = 32;
/// Longest time an environment can be given to live.
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

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
    fn from_record(name: &str, rules: &EnvironmentRules) -> Result<Rules, String> {
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
            refusals.extend(crate::deploy::strict_vetting_refusals(
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

    /// The answer for a change to an environment removed while the change waited.
    pub(crate) fn check_present(&self) -> Result<(), ApiError> {
        if self.removed.load(Ordering::Acquire) {
            return Err(no_such_environment(&self.name));
        }
        Ok(())
    }

    /// A live function of this environment, or a 404 that says where to look.
    pub(crate) fn function(&self, name: &str) -> Result<Arc<LiveFunction>, ApiError> {
        self.routes
            .load()
            .functions
            .get(name)
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found(
                    "no_such_function",
                    format!(
                        "no function named `{name}` is deployed in environment `{}`; `runway ls --env {}` lists them",
                        self.name, self.name
                    ),
                )
            })
    }
}

pub(crate) fn no_such_environment(name: &str) -> ApiError {
    ApiError::not_found(
        "no_such_environment",
        format!("environment `{name}` does not exist; `runway env ls` lists them"),
    )
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

    fn with(&self, added: Arc<Environment>) -> Environments {
        let mut by_name = self.by_name.clone();
        by_name.insert(added.name.clone(), added);
        Environments {
            home: self.home.clone(),
            by_name,
        }
    }

    fn without(&self, name: &str) -> Environments {
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

fn info(shared: &Shared, env: &Environment, usage: &[runway_store::Usage]) -> EnvironmentInfo {
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

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ApiError::internal(format!("environment task failed: {err}")))?
}

async fn usage_since_creation(
    shared: &Arc<Shared>,
    env: &Environment,
) -> Result<Vec<runway_store::Usage>, ApiError> {
    let (store, name, since) = (shared.store.clone(), env.name.clone(), env.billed_since());
    blocking(move || Ok(store.usage(&name, since)?)).await
}

/// The environments the caller may act on.
#[utoipa::path(
    get,
    path = "/v1/envs",
    tag = "environments",
    operation_id = "list_environments",
    responses((status = 200, description = "The home environment first.", body = Vec<EnvironmentInfo>)),
)]
pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Vec<EnvironmentInfo>>, ApiError> {
    let environments = shared.environments.load_full();
    let mut visible: Vec<&Arc<Environment>> = environments
        .all()
        .filter(|env| {
            caller
                .environment
                .as_deref()
                .is_none_or(|scope| scope == env.name)
        })
        .collect();
    visible.sort_by(|a, b| (!a.home, &a.name).cmp(&(!b.home, &b.name)));
    let mut infos = Vec::with_capacity(visible.len());
    for env in visible {
        let usage = usage_since_creation(&shared, env).await?;
        infos.push(info(&shared, env, &usage));
    }
    Ok(Json(infos))
}

fn unscoped(caller: &Caller, what: &str) -> Result<(), ApiError> {
    match &caller.environment {
        None => Ok(()),
        Some(scope) => Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: format!(
                "token {} is scoped to environment `{scope}`; {what} needs a token for every environment",
                caller.id
            ),
        }),
    }
}

/// Creates an environment, empty or from another one.
#[utoipa::path(
    post,
    path = "/v1/envs",
    tag = "environments",
    operation_id = "create_environment",
    request_body = CreateEnvironmentRequest,
    responses(
        (status = 201, description = "Created.", body = CreatedEnvironment),
        (status = 400, description = "`invalid_name`, `invalid_ttl`, `nothing_to_copy`, `invalid_trusted_keys`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: needs a token for every environment.", body = ErrorBody),
        (status = 404, description = "`no_such_environment`: `from` does not exist.", body = ErrorBody),
        (status = 409, description = "`environment_exists`.", body = ErrorBody),
        (status = 422, description = "`vetting_failed`: the new rules refuse what `from` serves.", body = ErrorBody),
    ),
)]
pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    request: Result<Json<CreateEnvironmentRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let request = crate::admin::json_body(request, "environment")?;
    unscoped(&caller, "creating an environment")?;
    let name = request.name.clone();
    check_name(&name).map_err(|message| ApiError::bad_request("invalid_name", message))?;
    let ttl = request.ttl.as_deref().map(parse_ttl).transpose()?;
    if (request.copy_data || request.copy_secrets) && request.from.is_none() {
        return Err(ApiError::bad_request(
            "nothing_to_copy",
            "--copy-data and --copy-secrets copy from the environment named by --from; add --from ENV"
                .into(),
        ));
    }
    let rules_record = EnvironmentRules {
        trusted_keys: request.trusted_keys.clone(),
        strict_vetting: request.strict_vetting,
        production: request.production,
        paused_schedules: !request.schedules.unwrap_or(request.from.is_none()),
    };
    let rules = Rules::from_record(&name, &rules_record)
        .map_err(|message| ApiError::bad_request("invalid_trusted_keys", message))?;
    let _serialised = shared.deploy_lock.lock().await;
    let environments = shared.environments.load_full();
    if environments.get(&name).is_some() {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "environment_exists",
            message: format!(
                "environment `{name}` already exists; pick another name or `runway env rm {name}` first"
            ),
        });
    }
    let source = match &request.from {
        Some(from) => Some(
            environments
                .get(from)
                .cloned()
                .ok_or_else(|| no_such_environment(from))?,
        ),
        None => None,
    };
    let source_functions = source
        .as_ref()
        .map(|s| s.routes.load().functions.clone())
        .unwrap_or_default();
    // The new environment's rules apply to what it starts with, as to any later deploy.
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
                    if let Err(why) =
                        crate::artifacts_api::admission(store.as_ref(), keys.as_ref(), &digest)?
                    {
                        refused.push(format!("function `{function}`: {why}"));
                    }
                }
                Ok(refused)
            })
            .await?,
        );
    }
    if !problems.is_empty() {
        return Err(ApiError::unprocessable(
            "vetting_failed",
            format!(
                "environment `{name}` would refuse what `{}` serves:\n{}",
                request.from.as_deref().unwrap_or_default(),
                problems.join("\n")
            ),
        ));
    }
    let created_at_ms = now_ms();
    let record = EnvironmentRecord {
        name: name.clone(),
        created_at_ms,
        expires_at_ms: ttl.map(|ttl| created_at_ms.saturating_add(ttl.as_millis() as i64)),
        created_by: caller.id.clone(),
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
                .map_err(|err| ApiError::internal(err.to_string()))?;
        }
        let created = worker
            .store
            .create_environment(&stored, &secrets)
            .inspect_err(|_| capabilities.forget_environment(&stored.name))?;
        if created.is_none() {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                code: "environment_exists",
                message: format!("environment `{}` already exists", stored.name),
            });
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
            .map_err(|err| ApiError::internal(err.to_string()))?;
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
        environment: info(&shared, &env, &[]),
        copied_functions,
        copied_data: copy_data,
        copied_secrets,
        took_ms,
    };
    Ok(noted(
        (StatusCode::CREATED, Json(response)),
        AuditNote::new(name, detail),
    ))
}

fn parse_ttl(text: &str) -> Result<Duration, ApiError> {
    let ttl = humantime::parse_duration(text).map_err(|err| {
        ApiError::bad_request(
            "invalid_ttl",
            format!("invalid --ttl `{text}`: {err} (write e.g. 30m, 72h or 14d)"),
        )
    })?;
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(ApiError::bad_request(
            "invalid_ttl",
            format!("--ttl {text} is out of range: give more than 0 and at most 365d"),
        ));
    }
    Ok(ttl)
}

/// The source's secrets, opened and sealed again for the new environment (a sealed value
/// is bound to its environment's name).
fn reseal_secrets(
    shared: &Shared,
    source: &str,
    target: &str,
) -> Result<Vec<(String, StoredSecret)>, ApiError> {
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
            .map_err(|err| ApiError::internal(err.to_string()))?;
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

/// Removes an environment with its functions, data, secrets, keys, tokens, jobs and logs.
#[utoipa::path(
    delete,
    path = "/v1/envs/{name}",
    tag = "environments",
    operation_id = "remove_environment",
    params(("name" = String, Path, description = "The environment.")),
    responses(
        (status = 200, description = "Removed, with its functions, data, secrets, keys, jobs and logs.", body = RemovedEnvironment),
        (status = 403, description = "`forbidden`: needs a token for every environment.", body = ErrorBody),
        (status = 404, description = "`no_such_environment`.", body = ErrorBody),
        (status = 409, description = "`home_environment`: the node's home environment is never removed.", body = ErrorBody),
    ),
)]
pub(crate) async fn remove(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    unscoped(&caller, "removing an environment")?;
    let removed = remove_environment(&shared, &name).await?;
    let detail = format!("{} functions", removed.functions);
    Ok(noted(Json(removed), AuditNote::new(name, detail)))
}

/// Removes an environment: it stops serving at once, then its rows and files go.
pub(crate) async fn remove_environment(
    shared: &Arc<Shared>,
    name: &str,
) -> Result<RemovedEnvironment, ApiError> {
    let _serialised = shared.deploy_lock.lock().await;
    let environments = shared.environments.load_full();
    let env = environments
        .get(name)
        .cloned()
        .ok_or_else(|| no_such_environment(name))?;
    if env.home {
        return Err(ApiError {
            status: StatusCode::CONFLICT,
            code: "home_environment",
            message: format!("`{name}` is this node's home environment and cannot be removed"),
        });
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
            Ok(removed) => (
                200,
                "ok",
                format!(
                    "its time was up at {}; removed with {} functions",
                    crate::lifespan::format_ms(at),
                    removed.functions
                ),
            ),
            Err(err) => (err.status.as_u16(), "failed", err.message.clone()),
        };
        match &outcome {
            Ok(_) => tracing::info!(environment = %name, "environment expired and was removed"),
            Err(err) => {
                tracing::error!(environment = %name, error = %err.message, "removing an expired environment failed")
            }
        }
        // Recorded in the home environment: the removed one's log can no longer be read.
        let home = shared.environments.load().home.name.clone();
        crate::auth::audit(
            shared,
            ControlAuditRecord::now(&home, "system", "env.expire", &name, status, result, detail),
        )
        .await;
    }
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
        let routes = crate::deploy::restore(
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
