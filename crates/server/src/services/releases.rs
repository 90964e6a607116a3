//! Releases: uploading artifacts, deploying, rolling back, reconfiguring, promoting and
//! extending functions, and loading what an environment served after a restart. Every check
//! runs before anything changes; nothing here knows the admin API's types.

use std::collections::BTreeMap;
use std::sync::Arc;

use runway_manifest::{FunctionConfig, InvocationAuth, check_functions};
use runway_runtime::{ArtifactError, CacheMiss, CompiledArtifact, LoadedFrom, Runtime};
use runway_store::{ControlStore, DeployResult, Digest, NewRelease, Release, StoreError};
use serde::{Deserialize, Serialize};

use runway_policy::{PolicyMode, VettingReport, vet};

use crate::Shared;
use crate::capabilities::PlatformCapabilities;
use crate::environments::{Environment, Missing, Rules};
use crate::live::{LiveFunction, RouteTable};
use crate::metrics::Metrics;
use crate::services::tokens::Actor;

/// Why a release was not made or switched.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReleaseError {
    /// The environment or function is not there.
    #[error(transparent)]
    Missing(#[from] Missing),
    /// The function changed under a change derived from its release.
    #[error(
        "function `{function}` changed from release {release} while this was prepared; run the command again"
    )]
    ReleaseChanged { function: String, release: u32 },
    /// A deploy of nothing.
    #[error("the deploy lists no functions")]
    EmptyDeploy,
    /// The configuration breaks a rule (routes, expiry, production, signing); one per line.
    #[error("{0}")]
    InvalidConfiguration(String),
    /// The deploy names an artifact that was never uploaded.
    #[error(
        "function `{function}`: artifact {digest} was not uploaded; PUT it to /v1/artifacts/{digest} first"
    )]
    ArtifactMissing { function: String, digest: Digest },
    /// Uploaded bytes do not hash to the digest they were sent for.
    #[error(
        "the uploaded bytes have digest {actual}, not {claimed}: upload the file whose SHA-256 is in the URL"
    )]
    DigestMismatch { actual: Digest, claimed: Digest },
    /// The artifact is not a component this node can run.
    #[error("{0}")]
    InvalidArtifact(String),
    /// The stored artifact no longer hashes to its digest.
    #[error("{0}")]
    ArtifactAltered(String),
    /// Vetting refused a function (imports beyond its policy, audit mode in production,
    /// revoked or unsigned artifact); one refusal per line.
    #[error("{0}")]
    VettingFailed(String),
    /// A rollback to a release the function never had.
    #[error(
        "function `{function}` has no release {release}; `runway releases {function}` lists them"
    )]
    NoSuchRelease { function: String, release: u32 },
    /// A rollback of a function on its first release.
    #[error(
        "function `{function}` serves release {release}, its first; there is nothing to roll back to"
    )]
    NoEarlierRelease { function: String, release: u32 },
    /// A rollback to the release already served.
    #[error("function `{function}` already serves release {release}")]
    AlreadyServing { function: String, release: u32 },
    /// A reconfiguration that changes nothing.
    #[error("give a memory size, a timeout, or both")]
    NothingToConfigure,
    /// A promotion from an environment the caller's token may not read.
    #[error("token {actor} is scoped to environment `{scope}` and cannot read `{from}`")]
    ForeignSource {
        actor: String,
        scope: String,
        from: String,
    },
    /// A promotion from an environment to itself.
    #[error(
        "--from and --to both name `{0}`; promote from one environment to another (use `runway rollback` within one)"
    )]
    SameEnvironment(String),
    /// An extension to a time already past.
    #[error("--until {0} is in the past; give a later date")]
    UntilInThePast(String),
    /// A failure about one function of a change.
    #[error("function `{function}`: {source}")]
    InFunction {
        function: String,
        source: Box<ReleaseError>,
    },
    /// The node failed (compiled-code cache, capabilities, a task); the detail is logged.
    #[error("{0}")]
    Internal(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReleaseError {
    /// The error, said of one function.
    pub(crate) fn in_function(self, function: &str) -> ReleaseError {
        ReleaseError::InFunction {
            function: function.to_owned(),
            source: Box::new(self),
        }
    }
}

fn task_failed(what: &str, err: tokio::task::JoinError) -> ReleaseError {
    ReleaseError::Internal(format!("{what} task failed: {err}"))
}

/// One function of a deploy request: a configuration and the artifact it runs.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployFunction {
    /// Digest of an uploaded artifact.
    pub digest: Digest,
    /// The configuration to freeze into the release.
    pub config: FunctionConfig,
}

/// A deploy request: every function listed switches together, or none does.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Functions to deploy.
    pub functions: Vec<DeployFunction>,
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeployResponse {
    /// One entry per function, in request order.
    pub functions: Vec<DeployResult>,
    /// Things to act on soon (a function expiring within 14 days).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Where an artifact's bytes come from when they must be compiled.
pub(crate) enum Source<'a> {
    /// An upload, already checked against its digest.
    Upload(&'a [u8]),
    /// The store, which verifies the bytes against the digest as it reads them.
    Stored,
}

/// Compiles (or loads from the cache) and links an artifact.
///
/// Only code this node provably compiled is loaded: the cache entry must hash to the
/// checksum recorded in the store when it was compiled, and stored artifact bytes must hash
/// to their digest. A mismatch is counted, audited and logged; altered compiled code is
/// recompiled from the verified artifact, an altered artifact is refused.
pub(crate) fn ready(
    runtime: &Runtime,
    metrics: &Metrics,
    store: &dyn ControlStore,
    home: &str,
    digest: &Digest,
    source: Source<'_>,
) -> Result<(CompiledArtifact, runway_runtime::Prepared), ReleaseError> {
    let cache_key = runtime.cache_key(digest.as_str());
    let expected = store.compiled_checksum(&cache_key)?;
    let cached = runtime.load_cached(digest.as_str(), expected.as_deref());
    let compiled = match cached {
        Ok(cached) => cached,
        Err(miss) => {
            if let CacheMiss::Altered { path, actual } = &miss {
                integrity_failure(
                    metrics,
                    store,
                    home,
                    "compiled_code",
                    digest,
                    format!(
                        "compiled code {} has SHA-256 {actual}, not the {} this node recorded; \
                         recompiling from the verified artifact",
                        path.display(),
                        expected.as_deref().unwrap_or("-")
                    ),
                );
            }
            let stored;
            let bytes = match source {
                Source::Upload(bytes) => bytes,
                Source::Stored => {
                    stored = match store.read_artifact(digest) {
                        Ok(Some(bytes)) => bytes,
                        Ok(None) => {
                            return Err(ReleaseError::Internal(format!(
                                "artifact {digest} is missing from the store"
                            )));
                        }
                        Err(err @ StoreError::ArtifactAltered { .. }) => {
                            integrity_failure(
                                metrics,
                                store,
                                home,
                                "artifact",
                                digest,
                                err.to_string(),
                            );
                            return Err(ReleaseError::ArtifactAltered(err.to_string()));
                        }
                        Err(err) => return Err(err.into()),
                    };
                    &stored
                }
            };
            let compiled = runtime
                .compile(digest.as_str(), bytes)
                .map_err(|err| artifact_error(digest, err))?;
            store.set_compiled_checksum(&cache_key, &compiled.code_sha256)?;
            compiled
        }
    };
    let source = match compiled.loaded_from {
        LoadedFrom::Cache => "cache",
        LoadedFrom::Compiled => "compiled",
    };
    metrics.compiles.with_label_values(&[source]).inc();
    let prepared = runtime
        .prepare(&compiled)
        .map_err(|err| artifact_error(digest, err))?;
    Ok((compiled, prepared))
}

/// Counts, audits (as `system`, action `integrity.<kind>`, in the log of `audit_env`: the
/// environment that needed the code, or the home one for uploads) and logs an integrity
/// failure.
fn integrity_failure(
    metrics: &Metrics,
    store: &dyn ControlStore,
    audit_env: &str,
    kind: &'static str,
    digest: &Digest,
    detail: String,
) {
    metrics.integrity_failures.with_label_values(&[kind]).inc();
    tracing::error!(kind, %digest, "{detail}");
    let record = runway_store::ControlAuditRecord::now(
        audit_env,
        "system",
        format!("integrity.{kind}"),
        digest.as_str(),
        500,
        "refused",
        detail,
    );
    if let Err(err) = store.append_control_audit(&record) {
        tracing::error!(error = %err, "could not audit an integrity failure");
    }
}

fn artifact_error(digest: &Digest, err: ArtifactError) -> ReleaseError {
    match err {
        ArtifactError::Cache { .. } => ReleaseError::Internal(format!("artifact {digest}: {err}")),
        err => ReleaseError::InvalidArtifact(format!("artifact {}: {err}", digest.short())),
    }
}

/// Checks, compiles and stores an uploaded artifact; false when it was already stored.
/// Invalid artifacts are never stored.
pub(crate) async fn upload(
    shared: Arc<Shared>,
    claimed: Digest,
    bytes: bytes::Bytes,
) -> Result<bool, ReleaseError> {
    let actual = Digest::of(&bytes);
    if actual != claimed {
        return Err(ReleaseError::DigestMismatch { actual, claimed });
    }
    tokio::task::spawn_blocking(move || {
        if shared.store.artifact_intact(&actual)? {
            return Ok(false);
        }
        shared
            .runtime
            .check_artifact(&bytes)
            .map_err(|err| artifact_error(&actual, err))?;
        ready(
            &shared.runtime,
            &shared.metrics,
            shared.store.as_ref(),
            &shared.environments.load().home.name,
            &actual,
            Source::Upload(&bytes),
        )?;
        Ok(shared.store.put_artifact(&actual, &bytes)?)
    })
    .await
    .map_err(|err| task_failed("upload", err))?
}

/// Who makes a release, and from where when it is not a plain deploy.
#[derive(Debug, Clone)]
pub(crate) struct Provenance {
    pub(crate) deployed_by: String,
    pub(crate) origin: Option<String>,
}

impl Provenance {
    pub(crate) fn by(actor: &str) -> Provenance {
        Provenance {
            deployed_by: actor.to_owned(),
            origin: None,
        }
    }
}

/// Validates, prepares, records and switches a set of functions of one environment
/// atomically, refused unless function `expect.0` still serves release `expect.1` once the
/// deploy lock is held: a change derived from a release cannot undo a deploy that landed in
/// between.
pub(crate) async fn deploy_over(
    shared: Arc<Shared>,
    env: &Arc<Environment>,
    request: DeployRequest,
    expect: Option<(&str, u32)>,
    provenance: Provenance,
) -> Result<DeployResponse, ReleaseError> {
    let _serialised = shared.deploy_lock.lock().await;
    env.check_present()?;
    if let Some((name, number)) = expect {
        let serving = env
            .routes
            .load()
            .functions
            .get(name)
            .map(|live| live.release.number);
        if serving != Some(number) {
            return Err(ReleaseError::ReleaseChanged {
                function: name.to_owned(),
                release: number,
            });
        }
    }
    let current = env.routes.load_full();
    let warnings = check_deploy(
        &request,
        &current,
        shared.store.is_shared(),
        crate::now_ms(),
    )?;
    let worker = shared.clone();
    let target = env.clone();
    let (results, prepared) = tokio::task::spawn_blocking(move || {
        let env = &target.name;
        let mut prepared = BTreeMap::new();
        let mut vetting = BTreeMap::new();
        let mut refusals = Vec::new();
        for function in &request.functions {
            let digest = &function.digest;
            if !worker.store.has_artifact(digest)? {
                return Err(ReleaseError::ArtifactMissing {
                    function: function.config.name.to_string(),
                    digest: digest.clone(),
                });
            }
            let (compiled, ready) = ready(
                &worker.runtime,
                &worker.metrics,
                worker.store.as_ref(),
                &worker.environments.load().home.name,
                digest,
                Source::Stored,
            )
            .map_err(|err| err.in_function(function.config.name.as_str()))?;
            let mut report = vet(&compiled.imports(), &function.config.policy);
            report.size_bytes = worker.store.artifact_size(digest)?;
            refusals.extend(vetting_refusals(&target.rules, &function.config, &report));
            match crate::services::artifacts::admission(
                worker.store.as_ref(),
                target.rules.trusted_keys.as_ref(),
                digest,
            )? {
                Ok(signed_by) => report.signed_by = signed_by,
                Err(why) => refusals.push(format!("function `{}`: {why}", function.config.name)),
            }
            prepared.insert(function.config.name.to_string(), ready);
            vetting.insert(function.config.name.to_string(), report);
        }
        if !refusals.is_empty() {
            return Err(ReleaseError::VettingFailed(refusals.join("\n")));
        }
        // Open the environment's data before anything changes, so a failure leaves no release.
        worker
            .capabilities
            .sql_database(env)
            .map_err(|err| ReleaseError::Internal(err.to_string()))?;
        let releases: Vec<NewRelease> = request
            .functions
            .iter()
            .map(|f| NewRelease {
                digest: f.digest.clone(),
                config: f.config.clone(),
                vetting: vetting.remove(f.config.name.as_str()),
                deployed_by: Some(provenance.deployed_by.clone()),
                origin: provenance.origin.clone(),
            })
            .collect();
        let results = worker.store.deploy(env, &releases)?;
        for function in &request.functions {
            crate::services::budgets::sync_manifest_budget(
                worker.store.as_ref(),
                env,
                &function.config,
                &provenance.deployed_by,
            )?;
        }
        let mut ready_functions = BTreeMap::new();
        for result in &results {
            let name = result.release.config.name.to_string();
            let capabilities = worker
                .capabilities
                .for_release(&result.release)
                .map_err(|err| ReleaseError::Internal(err.to_string()))?;
            let ready = prepared.remove(&name).expect("prepared above");
            ready_functions.insert(name, (ready, capabilities));
        }
        Ok::<_, ReleaseError>((results, ready_functions))
    })
    .await
    .map_err(|err| task_failed("deploy", err))??;
    let mut functions = current.functions.clone();
    let mut prepared = prepared;
    for result in &results {
        let name = result.release.config.name.to_string();
        let unchanged = functions
            .get(&name)
            .is_some_and(|live| live.release.number == result.release.number);
        if unchanged {
            continue;
        }
        let (ready, capabilities) = prepared.remove(&name).expect("prepared above");
        functions.insert(
            name,
            Arc::new(LiveFunction::new(
                result.release.clone(),
                Arc::new(ready),
                capabilities,
                &shared.runtime,
                &shared.metrics,
            )),
        );
    }
    env.routes.store(Arc::new(RouteTable::new(functions)));
    shared
        .metrics
        .set_function_total(&shared.environments.load());
    shared.metrics.deploys.inc();
    Ok(DeployResponse {
        functions: results,
        warnings,
    })
}

/// The rules a deploy must meet before anything is compiled: routes and names across the
/// functions the environment would serve (`current` with `request` applied), no SQL or
/// key-value grants on a shared store, no expiry in the past. On success, the warnings to
/// show (an expiry within two weeks; a protected route a public prefix route also reaches).
fn check_deploy(
    request: &DeployRequest,
    current: &RouteTable,
    shared_store: bool,
    now: i64,
) -> Result<Vec<String>, ReleaseError> {
    if request.functions.is_empty() {
        return Err(ReleaseError::EmptyDeploy);
    }
    let mut problems = {
        let deploying: Vec<&FunctionConfig> = request.functions.iter().map(|f| &f.config).collect();
        let others = current
            .functions
            .values()
            .filter(|live| !deploying.iter().any(|c| c.name.as_str() == live.name()))
            .map(|live| &live.release.config);
        let all: Vec<&FunctionConfig> = deploying.iter().copied().chain(others).collect();
        check_functions(&all)
    };
    if shared_store {
        problems.extend(
            request
                .functions
                .iter()
                .filter_map(|f| per_node_data(&f.config)),
        );
    }
    let mut warnings = Vec::new();
    for function in &request.functions {
        let http = &function.config.http;
        for guarded in http.iter().filter(|t| t.auth != InvocationAuth::Public) {
            if let Some(open) = http.iter().find(|t| {
                t.auth == InvocationAuth::Public
                    && t.route.kind() == runway_manifest::RouteKind::Prefix
                    && t.route.matches(guarded.route.base())
            }) {
                warnings.push(format!(
                    "function `{}`: route `{}` needs {} but its public route `{}` also reaches \
                     the function; paths such as `{}/` arrive through the public route, so the \
                     function must not serve protected content by its own path matching",
                    function.config.name,
                    guarded.route,
                    guarded.auth.as_str(),
                    open.route,
                    guarded.route.base()
                ));
            }
        }
        let Some(expires) = &function.config.expires else {
            continue;
        };
        let name = &function.config.name;
        let left = expires.at_ms() - now;
        if left <= 0 {
            problems.push(format!(
                "function `{name}`: expires = \"{}\" is in the past; set a later date or remove it",
                expires.as_str()
            ));
        } else if left <= crate::lifespan::EXPIRY_WARNING.as_millis() as i64 {
            warnings.push(format!(
                "function `{name}` expires in {} (at {}); `runway extend {name} --until DATE` \
                 keeps it serving",
                humantime::format_duration(std::time::Duration::from_secs(
                    (left / 1000) as u64 / 60 * 60
                )),
                crate::lifespan::format_ms(expires.at_ms())
            ));
        }
    }
    if !problems.is_empty() {
        problems.dedup();
        return Err(ReleaseError::InvalidConfiguration(problems.join("\n")));
    }
    Ok(warnings)
}

/// The release a rollback of `name` (serving release `from`) brings back: release `to`, or
/// the newest one older than `from`. `releases` are newest first.
fn rollback_target(
    releases: Vec<Release>,
    name: &str,
    from: u32,
    to: Option<u32>,
) -> Result<Release, ReleaseError> {
    let target = match to {
        Some(number) => releases
            .into_iter()
            .find(|r| r.number == number)
            .ok_or_else(|| ReleaseError::NoSuchRelease {
                function: name.to_owned(),
                release: number,
            })?,
        None => releases
            .into_iter()
            .find(|r| r.number < from)
            .ok_or_else(|| ReleaseError::NoEarlierRelease {
                function: name.to_owned(),
                release: from,
            })?,
    };
    if target.number == from {
        return Err(ReleaseError::AlreadyServing {
            function: name.to_owned(),
            release: from,
        });
    }
    Ok(target)
}

/// Why a function's deploy is refused by vetting: imports beyond its policy (with strict
/// vetting on) and audit mode in a production environment.
fn vetting_refusals(rules: &Rules, config: &FunctionConfig, report: &VettingReport) -> Vec<String> {
    let name = &config.name;
    let mut refusals = Vec::new();
    if rules.production && config.policy_mode == PolicyMode::Audit {
        refusals.push(format!(
            "function `{name}`: policy_mode = \"audit\" lets calls beyond the policy through, \
             and this environment serves production; remove policy_mode (the default enforces the policy)"
        ));
    }
    if rules.strict_vetting {
        refusals.extend(strict_vetting_refusals(config, report));
    }
    refusals
}

/// Imports the policy does not grant, refused when strict vetting is on.
pub(crate) fn strict_vetting_refusals(
    config: &FunctionConfig,
    report: &VettingReport,
) -> Vec<String> {
    let name = &config.name;
    report
        .not_granted()
        .map(|(import, needs)| {
            format!(
                "function `{name}`: imports `{import}` but its policy grants nothing for it \
                 (strict vetting is on); add {needs} to [function.policy], or remove the import"
            )
        })
        .collect()
}

/// Why a function cannot run on nodes sharing a store, if it cannot: its SQL and key-value
/// data live in each node's own files, so behind a load balancer each request would see a
/// different database.
fn per_node_data(config: &FunctionConfig) -> Option<String> {
    let policy = &config.policy;
    let what = match (policy.sql.is_empty(), policy.kv.is_empty()) {
        (true, true) => return None,
        (false, true) => "sql",
        (true, false) => "kv",
        (false, false) => "sql and kv",
    };
    Some(format!(
        "function `{}` has {what} grants, which a node sharing a PostgreSQL store cannot serve \
         yet: SQL and key-value data still live in each node's own files, so requests behind a \
         load balancer would see different data. Deploy it to a node with its own store \
         (SQLite), or without those grants",
        config.name
    ))
}

/// Loads what an environment served before a restart, from the cache where possible;
/// environments running the same artifact share its compiled code through `prepared`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn restore(
    store: &dyn ControlStore,
    runtime: &Runtime,
    metrics: &Metrics,
    capabilities: &PlatformCapabilities,
    environment: &str,
    rules: &Rules,
    prepared: &mut std::collections::HashMap<Digest, Arc<runway_runtime::Prepared>>,
    summary: &mut RestoreSummary,
) -> Result<RouteTable, crate::NodeError> {
    let mut functions = BTreeMap::new();
    let revoked: Vec<String> = store
        .revoked_artifacts()?
        .into_iter()
        .map(|r| r.digest)
        .collect();
    for release in store.current_releases(environment)? {
        let name = release.config.name.to_string();
        // The deploy rules hold across restarts: a production environment does not serve a
        // release deployed in audit mode before, nor one its trusted keys do not sign.
        if rules.production && release.config.policy_mode == PolicyMode::Audit {
            summary.failed.push(failed_release(
                &release,
                "policy_mode = \"audit\" is refused in a production environment; redeploy it without policy_mode",
            ));
            continue;
        }
        let revoked_here = revoked.iter().any(|d| d == release.digest.as_str());
        if rules.trusted_keys.is_some() && !revoked_here {
            let admitted = crate::services::artifacts::admission(
                store,
                rules.trusted_keys.as_ref(),
                &release.digest,
            )?;
            if let Err(why) = admitted {
                summary.failed.push(failed_release(&release, why.as_str()));
                continue;
            }
        }
        let digest = release.digest.clone();
        let loaded = match prepared.get(&digest) {
            Some(ready) => Ok(ready.clone()),
            None => ready(
                runtime,
                metrics,
                store,
                environment,
                &digest,
                Source::Stored,
            )
            .map(|(compiled, ready)| {
                match compiled.loaded_from {
                    LoadedFrom::Cache => summary.from_cache += 1,
                    LoadedFrom::Compiled => summary.compiled += 1,
                }
                let ready = Arc::new(ready);
                prepared.insert(digest.clone(), ready.clone());
                ready
            }),
        };
        let loaded = loaded.and_then(|ready| {
            let capabilities = capabilities
                .for_release(&release)
                .map_err(|err| ReleaseError::Internal(err.to_string()))?;
            Ok((ready, capabilities))
        });
        match loaded {
            Ok((ready, capabilities)) => {
                let live = LiveFunction::new(release, ready, capabilities, runtime, metrics);
                live.revoked
                    .store(revoked_here, std::sync::atomic::Ordering::Release);
                functions.insert(name, Arc::new(live));
            }
            Err(err) => {
                tracing::error!(environment, function = %name, release = release.number, error = %err, "cannot serve function after restart");
                summary
                    .failed
                    .push(failed_release(&release, &err.to_string()));
            }
        }
    }
    Ok(RouteTable::new(functions))
}

fn failed_release(release: &Release, why: &str) -> String {
    format!(
        "{} (release {} in {}): {why}",
        release.config.name, release.number, release.environment
    )
}

/// How a node came back after a restart.
#[derive(Debug, Default, Clone)]
pub struct RestoreSummary {
    /// Artifacts whose compiled code came from the cache.
    pub from_cache: usize,
    /// Artifacts that had to be compiled (cache missing or from another engine).
    pub compiled: usize,
    /// Functions that could not be served, with the reason.
    pub failed: Vec<String>,
}

/// What a rollback did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RollbackResponse {
    /// The function.
    pub function: String,
    /// The release it served before.
    pub from: u32,
    /// The release it serves now.
    pub release: Release,
}

/// Switches a function to one of its existing releases (default: the newest one older than
/// the current), atomically: requests in flight finish on the release they started on, and
/// every later request sees the new one. The same checks as a deploy apply to the release
/// being brought back (routes against the functions deployed since, production rules).
pub(crate) async fn rollback(
    shared: Arc<Shared>,
    env: &Arc<Environment>,
    name: String,
    to: Option<u32>,
) -> Result<RollbackResponse, ReleaseError> {
    let _serialised = shared.deploy_lock.lock().await;
    env.check_present()?;
    let current = env.routes.load_full();
    let live = env.function(&name)?;
    let from = live.release.number;
    let releases = {
        let (store, env, name) = (shared.store.clone(), env.name.clone(), name.clone());
        tokio::task::spawn_blocking(move || store.releases(&env, &name))
            .await
            .map_err(|err| task_failed("rollback", err))??
    };
    let target = rollback_target(releases, &name, from, to)?;
    let mut problems = {
        let others = current
            .functions
            .values()
            .filter(|f| f.name() != name)
            .map(|f| &f.release.config);
        let all: Vec<&FunctionConfig> = std::iter::once(&target.config).chain(others).collect();
        check_functions(&all)
    };
    if let Some(expires) = &target.config.expires
        && expires.at_ms() <= crate::now_ms()
    {
        problems.push(format!(
            "release {} expired at {}; bring it back with `runway extend` instead",
            target.number,
            crate::lifespan::format_ms(expires.at_ms())
        ));
    }
    let admitted = {
        let (store, env, digest) = (shared.store.clone(), env.clone(), target.digest.clone());
        tokio::task::spawn_blocking(move || {
            crate::services::artifacts::admission(
                store.as_ref(),
                env.rules.trusted_keys.as_ref(),
                &digest,
            )
        })
        .await
        .map_err(|err| task_failed("rollback", err))??
    };
    if let Err(why) = admitted {
        problems.push(why);
    }
    problems.extend(env.rules.refusals(&target));
    if !problems.is_empty() {
        return Err(ReleaseError::InvalidConfiguration(format!(
            "cannot roll `{name}` back to release {}: {}",
            target.number,
            problems.join("; ")
        )));
    }
    let worker = shared.clone();
    let release = target.clone();
    let (prepared, capabilities) = tokio::task::spawn_blocking(move || {
        let digest = release.digest.clone();
        let (_, prepared) = ready(
            &worker.runtime,
            &worker.metrics,
            worker.store.as_ref(),
            &worker.environments.load().home.name,
            &digest,
            Source::Stored,
        )?;
        let capabilities = worker
            .capabilities
            .for_release(&release)
            .map_err(|err| ReleaseError::Internal(err.to_string()))?;
        if !worker.store.switch_release(
            &release.environment,
            release.config.name.as_str(),
            release.number,
        )? {
            return Err(ReleaseError::Internal(format!(
                "release {} of `{}` vanished from the store",
                release.number, release.config.name
            )));
        }
        Ok::<_, ReleaseError>((prepared, capabilities))
    })
    .await
    .map_err(|err| task_failed("rollback", err))??;
    let mut functions = current.functions.clone();
    functions.insert(
        name.clone(),
        Arc::new(LiveFunction::new(
            target.clone(),
            Arc::new(prepared),
            capabilities,
            &shared.runtime,
            &shared.metrics,
        )),
    );
    env.routes.store(Arc::new(RouteTable::new(functions)));
    Ok(RollbackResponse {
        function: name,
        from,
        release: target,
    })
}

/// What a promotion did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PromoteResponse {
    /// The function.
    pub function: String,
    /// The source environment.
    pub from: String,
    /// The release the source serves, now deployed to the target.
    pub from_release: u32,
    /// The target environment.
    pub to: String,
    /// The target's release (new unless the target already had this exact release last).
    pub result: DeployResult,
    /// Things to act on soon.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A change to the serving release of one function, and what it changed (for the audit log).
pub(crate) struct Changed {
    pub(crate) response: DeployResponse,
    pub(crate) detail: String,
}

/// Deploys `name`'s serving release again with `config` in place of its configuration,
/// refused if the function changed meanwhile.
async fn redeploy(
    shared: Arc<Shared>,
    env: &Arc<Environment>,
    live: &LiveFunction,
    config: FunctionConfig,
    provenance: Provenance,
) -> Result<DeployResponse, ReleaseError> {
    let name = live.name();
    let request = DeployRequest {
        functions: vec![DeployFunction {
            digest: live.release.digest.clone(),
            config,
        }],
    };
    deploy_over(
        shared,
        env,
        request,
        Some((name, live.release.number)),
        provenance,
    )
    .await
    .map_err(|err| err.in_function(name))
}

/// Deploys the serving release of `name` again with another memory size or timeout (what
/// `runway tune --apply` does).
pub(crate) async fn configure(
    shared: Arc<Shared>,
    actor: &Actor<'_>,
    env: &Arc<Environment>,
    name: &str,
    memory: Option<runway_manifest::ByteSize>,
    timeout: Option<runway_manifest::HumanDuration>,
) -> Result<Changed, ReleaseError> {
    if memory.is_none() && timeout.is_none() {
        return Err(ReleaseError::NothingToConfigure);
    }
    let live = env.function(name)?;
    let before = &live.release.config;
    let mut config = before.clone();
    let mut changes = Vec::new();
    if let Some(memory) = memory {
        changes.push(format!("memory {} -> {memory}", before.memory));
        config.memory = memory;
    }
    if let Some(timeout) = timeout {
        changes.push(format!("timeout {} -> {timeout}", before.timeout));
        config.timeout = timeout;
    }
    let detail = changes.join(", ");
    let provenance = Provenance {
        deployed_by: actor.id.to_owned(),
        origin: Some(format!(
            "configured from release {}: {detail}",
            live.release.number
        )),
    };
    let response = redeploy(shared, env, &live, config, provenance).await?;
    Ok(Changed { response, detail })
}

/// Moves the expiry of `name` to `until`, as a new release.
pub(crate) async fn extend(
    shared: Arc<Shared>,
    actor: &Actor<'_>,
    env: &Arc<Environment>,
    name: &str,
    until: runway_manifest::Expiry,
) -> Result<Changed, ReleaseError> {
    let live = env.function(name)?;
    if until.at_ms() <= crate::now_ms() {
        return Err(ReleaseError::UntilInThePast(until.as_str().to_owned()));
    }
    let before = live
        .release
        .config
        .expires
        .as_ref()
        .map_or_else(|| "never".to_owned(), |e| e.as_str().to_owned());
    let mut config = live.release.config.clone();
    config.expires = Some(until.clone());
    let provenance = Provenance {
        deployed_by: actor.id.to_owned(),
        origin: Some(format!("extended from release {}", live.release.number)),
    };
    let response = redeploy(shared, env, &live, config, provenance).await?;
    let release = response.functions.first().map_or(0, |r| r.release.number);
    let detail = format!("expires {before} -> {}, release {release}", until.as_str());
    Ok(Changed { response, detail })
}

/// Deploys to `env` exactly the release environment `from` serves for `name` (same digest,
/// same configuration), under `env`'s signing and vetting rules.
pub(crate) async fn promote(
    shared: Arc<Shared>,
    actor: &Actor<'_>,
    env: &Arc<Environment>,
    name: &str,
    from: &str,
) -> Result<PromoteResponse, ReleaseError> {
    if let Some(scope) = actor.scope.filter(|scope| *scope != from) {
        return Err(ReleaseError::ForeignSource {
            actor: actor.id.to_owned(),
            scope: scope.to_owned(),
            from: from.to_owned(),
        });
    }
    let source = shared
        .environments
        .load()
        .get(from)
        .cloned()
        .ok_or_else(|| Missing::Environment(from.to_owned()))?;
    if source.name == env.name {
        return Err(ReleaseError::SameEnvironment(env.name.clone()));
    }
    let live = source.function(name)?;
    let request = DeployRequest {
        functions: vec![DeployFunction {
            digest: live.release.digest.clone(),
            config: live.release.config.clone(),
        }],
    };
    let provenance = Provenance {
        deployed_by: actor.id.to_owned(),
        origin: Some(format!(
            "promoted from {} release {}",
            source.name, live.release.number
        )),
    };
    let deployed = deploy_over(shared, env, request, None, provenance)
        .await
        .map_err(|err| err.in_function(name))?;
    let result = deployed
        .functions
        .into_iter()
        .next()
        .ok_or_else(|| ReleaseError::Internal("the promotion deployed nothing".into()))?;
    Ok(PromoteResponse {
        function: name.to_owned(),
        from: source.name.clone(),
        from_release: live.release.number,
        to: env.name.clone(),
        result,
        warnings: deployed.warnings,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use runway_manifest::Manifest;

    use super::*;

    /// 2030-01-01T00:00:00Z.
    const NEW_YEAR_2030_MS: i64 = 1_893_456_000_000;
    const DAY_MS: i64 = 86_400_000;

    fn deploy_of(toml: &str) -> DeployRequest {
        let manifest = Manifest::parse(Path::new("runway.toml"), toml).unwrap();
        DeployRequest {
            functions: manifest
                .functions
                .into_iter()
                .map(|f| DeployFunction {
                    digest: Digest::of(f.config.name.as_str().as_bytes()),
                    config: f.config,
                })
                .collect(),
        }
    }

    fn function(name: &str, extra: &str) -> String {
        format!(
            "[[function]]\nname = \"{name}\"\ncomponent = \"{name}.wasm\"\n{extra}\n\
             [[function.trigger]]\nhttp = {{ route = \"/{name}\" }}\n"
        )
    }

    fn release(number: u32) -> Release {
        let request = deploy_of(&function("hello", ""));
        Release {
            environment: "prod".into(),
            number,
            digest: request.functions[0].digest.clone(),
            config: request.functions[0].config.clone(),
            created_at_ms: 0,
            vetting: None,
            deployed_by: None,
            origin: None,
        }
    }

    #[test]
    fn a_deploy_of_nothing_is_refused() {
        let err = check_deploy(
            &DeployRequest { functions: vec![] },
            &RouteTable::default(),
            false,
            0,
        )
        .unwrap_err();
        assert!(matches!(err, ReleaseError::EmptyDeploy), "{err}");
    }

    #[test]
    fn two_functions_on_one_route_are_refused_together() {
        // Each manifest is valid alone; together they would share a route.
        let mut request = deploy_of(&function("a", ""));
        request
            .functions
            .extend(deploy_of(&function("b", "").replace("/b", "/a")).functions);
        let err = check_deploy(&request, &RouteTable::default(), false, 0).unwrap_err();
        let ReleaseError::InvalidConfiguration(why) = err else {
            panic!("not a configuration error: {err}");
        };
        assert!(why.contains("/a"), "{why}");
    }

    #[test]
    fn sql_and_kv_grants_are_refused_only_on_a_shared_store() {
        let request = deploy_of(&function(
            "orders",
            "[function.policy]\nsql = [\"select:orders\"]\n",
        ));
        assert!(check_deploy(&request, &RouteTable::default(), false, 0).is_ok());
        let err = check_deploy(&request, &RouteTable::default(), true, 0).unwrap_err();
        let ReleaseError::InvalidConfiguration(why) = err else {
            panic!("not a configuration error: {err}");
        };
        assert!(
            why.contains("function `orders` has sql grants") && why.contains("PostgreSQL"),
            "{why}"
        );
    }

    #[test]
    fn an_expiry_in_the_past_is_refused_and_a_near_one_warned_of() {
        let request = deploy_of(&function("hello", "expires = \"2030-01-01\""));
        let warnings = check_deploy(
            &request,
            &RouteTable::default(),
            false,
            NEW_YEAR_2030_MS - 3 * DAY_MS,
        )
        .unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("runway extend hello"), "{warnings:?}");
        let far = check_deploy(&request, &RouteTable::default(), false, 0).unwrap();
        assert!(far.is_empty(), "{far:?}");
        let err = check_deploy(
            &request,
            &RouteTable::default(),
            false,
            NEW_YEAR_2030_MS + 10 * DAY_MS,
        )
        .unwrap_err();
        assert!(err.to_string().contains("is in the past"), "{err}");
    }

    #[test]
    fn a_rollback_brings_back_the_newest_older_release_or_the_one_named() {
        let releases = || vec![release(4), release(3), release(2), release(1)];
        assert_eq!(
            rollback_target(releases(), "hello", 4, None)
                .unwrap()
                .number,
            3
        );
        assert_eq!(
            rollback_target(releases(), "hello", 2, None)
                .unwrap()
                .number,
            1
        );
        assert_eq!(
            rollback_target(releases(), "hello", 2, Some(4))
                .unwrap()
                .number,
            4
        );
        assert!(matches!(
            rollback_target(releases(), "hello", 4, Some(9)),
            Err(ReleaseError::NoSuchRelease { release: 9, .. })
        ));
        assert!(matches!(
            rollback_target(releases(), "hello", 1, None),
            Err(ReleaseError::NoEarlierRelease { release: 1, .. })
        ));
        assert!(matches!(
            rollback_target(releases(), "hello", 3, Some(3)),
            Err(ReleaseError::AlreadyServing { release: 3, .. })
        ));
    }

    #[test]
    fn an_error_about_one_function_names_it() {
        let err = ReleaseError::VettingFailed("imports too much".into()).in_function("hello");
        assert_eq!(err.to_string(), "function `hello`: imports too much");
    }
}
