//! Uploading artifacts and deploying releases: every check runs before anything changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use runway_manifest::{FunctionConfig, InvocationAuth, check_functions};
use runway_runtime::{ArtifactError, CacheMiss, CompiledArtifact, LoadedFrom, Runtime};
use runway_store::{ControlStore, DeployResult, Digest, NewRelease, Release, StoreError};
use serde::{Deserialize, Serialize};

use runway_policy::{PolicyMode, VettingReport, vet};

use crate::Shared;
use crate::capabilities::PlatformCapabilities;
use crate::environments::{Environment, Rules};
use crate::error::ApiError;
use crate::live::{LiveFunction, RouteTable};
use crate::metrics::Metrics;

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
) -> Result<(CompiledArtifact, runway_runtime::Prepared), ApiError> {
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
                            return Err(ApiError::internal(format!(
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
                            return Err(ApiError {
                                status: http::StatusCode::CONFLICT,
                                code: "artifact_altered",
                                message: err.to_string(),
                            });
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

fn artifact_error(digest: &Digest, err: ArtifactError) -> ApiError {
    match err {
        ArtifactError::Cache { .. } => ApiError::internal(format!("artifact {digest}: {err}")),
        err => ApiError::invalid_artifact(format!("artifact {}: {err}", digest.short())),
    }
}

/// Checks, compiles and stores an uploaded artifact. Invalid artifacts are never stored.
pub(crate) async fn upload(
    shared: Arc<Shared>,
    claimed: Digest,
    bytes: bytes::Bytes,
) -> Result<bool, ApiError> {
    let actual = Digest::of(&bytes);
    if actual != claimed {
        return Err(ApiError::bad_request(
            "digest_mismatch",
            format!(
                "the uploaded bytes have digest {actual}, not {claimed}: upload the file whose SHA-256 is in the URL"
            ),
        ));
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
    .map_err(|err| ApiError::internal(format!("upload task failed: {err}")))?
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
/// atomically, refused with 409 unless function `expect.0` still serves release `expect.1`
/// once the deploy lock is held: a change derived from a release cannot undo a deploy that
/// landed in between.
pub(crate) async fn deploy_over(
    shared: Arc<Shared>,
    env: &Arc<Environment>,
    request: DeployRequest,
    expect: Option<(&str, u32)>,
    provenance: Provenance,
) -> Result<DeployResponse, ApiError> {
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
            return Err(ApiError {
                status: http::StatusCode::CONFLICT,
                code: "release_changed",
                message: format!(
                    "function `{name}` changed from release {number} while this was prepared; \
                     run the command again"
                ),
            });
        }
    }
    if request.functions.is_empty() {
        return Err(ApiError::unprocessable(
            "empty_deploy",
            "the deploy lists no functions".into(),
        ));
    }
    let current = env.routes.load_full();
    // The set the node would serve: this deploy's functions plus every other live one.
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
    if shared.store.is_shared() {
        problems.extend(
            request
                .functions
                .iter()
                .filter_map(|f| per_node_data(&f.config)),
        );
    }
    let now = crate::auth::now_ms();
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
        return Err(ApiError::unprocessable(
            "invalid_configuration",
            problems.join("\n"),
        ));
    }
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
                return Err(ApiError::bad_request(
                    "artifact_missing",
                    format!(
                        "function `{}`: artifact {digest} was not uploaded; PUT it to /v1/artifacts/{digest} first",
                        function.config.name
                    ),
                ));
            }
            let (compiled, ready) = ready(
                &worker.runtime,
                &worker.metrics,
                worker.store.as_ref(),
                &worker.environments.load().home.name,
                digest,
                Source::Stored,
            )
            .map_err(|err| err.for_function(function.config.name.as_str()))?;
            let mut report = vet(&compiled.imports(), &function.config.policy);
            report.size_bytes = worker.store.artifact_size(digest)?;
            refusals.extend(vetting_refusals(&target.rules, &function.config, &report));
            match crate::artifacts_api::admission(
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
            return Err(ApiError::unprocessable("vetting_failed", refusals.join("\n")));
        }
        // Open the environment's data before anything changes, so a failure leaves no release.
        worker
            .capabilities
            .sql_database(env)
            .map_err(|err| ApiError::internal(err.to_string()))?;
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
            crate::budgets::sync_manifest_budget(
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
                .map_err(|err| ApiError::internal(err.to_string()))?;
            let ready = prepared.remove(&name).expect("prepared above");
            ready_functions.insert(name, (ready, capabilities));
        }
        Ok::<_, ApiError>((results, ready_functions))
    })
    .await
    .map_err(|err| ApiError::internal(format!("deploy task failed: {err}")))??;
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
            let admitted = crate::artifacts_api::admission(
                store,
                rules.trusted_keys.as_ref(),
                &release.digest,
            )
            .map_err(|err| StoreError::Corrupt(err.message))?;
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
                .map_err(|err| ApiError::internal(err.to_string()))?;
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
                tracing::error!(environment, function = %name, release = release.number, error = %err.message, "cannot serve function after restart");
                summary.failed.push(failed_release(&release, &err.message));
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
) -> Result<RollbackResponse, ApiError> {
    let _serialised = shared.deploy_lock.lock().await;
    env.check_present()?;
    let current = env.routes.load_full();
    let live = env.function(&name)?;
    let from = live.release.number;
    let releases = {
        let (store, env, name) = (shared.store.clone(), env.name.clone(), name.clone());
        tokio::task::spawn_blocking(move || store.releases(&env, &name))
            .await
            .map_err(|err| ApiError::internal(format!("rollback task failed: {err}")))??
    };
    let target = match to {
        Some(number) => releases.into_iter().find(|r| r.number == number).ok_or_else(|| {
            ApiError::not_found(
                "no_such_release",
                format!("function `{name}` has no release {number}; `runway releases {name}` lists them"),
            )
        })?,
        None => releases.into_iter().find(|r| r.number < from).ok_or_else(|| {
            ApiError::unprocessable(
                "no_earlier_release",
                format!("function `{name}` serves release {from}, its first; there is nothing to roll back to"),
            )
        })?,
    };
    if target.number == from {
        return Err(ApiError {
            status: http::StatusCode::CONFLICT,
            code: "already_serving",
            message: format!("function `{name}` already serves release {from}"),
        });
    }
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
        && expires.at_ms() <= crate::auth::now_ms()
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
            crate::artifacts_api::admission(
                store.as_ref(),
                env.rules.trusted_keys.as_ref(),
                &digest,
            )
        })
        .await
        .map_err(|err| ApiError::internal(format!("rollback task failed: {err}")))??
    };
    if let Err(why) = admitted {
        problems.push(why);
    }
    problems.extend(env.rules.refusals(&target));
    if !problems.is_empty() {
        return Err(ApiError::unprocessable(
            "invalid_configuration",
            format!(
                "cannot roll `{name}` back to release {}: {}",
                target.number,
                problems.join("; ")
            ),
        ));
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
            .map_err(|err| ApiError::internal(err.to_string()))?;
        if !worker.store.switch_release(
            &release.environment,
            release.config.name.as_str(),
            release.number,
        )? {
            return Err(ApiError::internal(format!(
                "release {} of `{}` vanished from the store",
                release.number, release.config.name
            )));
        }
        Ok::<_, ApiError>((prepared, capabilities))
    })
    .await
    .map_err(|err| ApiError::internal(format!("rollback task failed: {err}")))??;
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
