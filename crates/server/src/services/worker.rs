//! The queue's worker and the scheduler: jobs are stored durably before they are
//! acknowledged, run at least once by a worker with retries and exponential backoff, and
//! dead-lettered after their last attempt. Schedule ticks are claimed in the store, so each
//! tick enqueues one run however often nodes restart. Both run through the same "invoke and
//! record" path as the gateway (`execute`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::{BodyExt, Full};
use runway_manifest::{MissedTicks, ScheduleTrigger};
use runway_store::{Job, JobRequest, JobResult, JobSource, JobState, JobUpdate};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::live::LiveFunction;
use crate::now_ms;
use crate::services::jobs::{new_job, queue_settings};

/// Marks the run a schedule enqueues for a tick missed while no node ran.
const MISSED_TICK_HEADER: &str = "x-runway-missed-tick";

/// Jobs one node runs at once.
const WORKERS: usize = 32;
/// How long a claimed job is leased; past it, another worker may take it again. Longer
/// than the longest timeout, so a live attempt is never run twice.
const LEASE: Duration = Duration::from_secs(16 * 60);
/// How often the worker looks for jobs whose lease ran out.
const LEASE_CHECK: Duration = Duration::from_secs(10);
/// On a store shared by several nodes, a claim is leased this long and renewed while the
/// attempt runs: a node that dies (SIGKILL, power loss) holds its jobs only this long.
const SHARED_LEASE: Duration = Duration::from_secs(15);
/// How often a node on a shared store renews its running jobs' leases, and looks for
/// leases that ran out.
const SHARED_LEASE_CHECK: Duration = Duration::from_secs(3);
/// How much of a job's response body is kept.
const RESULT_BODY_LIMIT: usize = 64 << 10;

/// Runs due jobs until `stop`. On its own store a node first puts back the jobs a previous
/// process left running; on a shared one it must not (other nodes are running theirs), and
/// short leases it renews while an attempt runs bring back the jobs of a node that died.
pub(crate) async fn work(shared: Arc<Shared>, stop: CancellationToken) {
    let cluster = shared.store.is_shared();
    if !cluster {
        let shared = shared.clone();
        let requeued = tokio::task::spawn_blocking(move || {
            shared.store.requeue_abandoned(None, i64::MAX, now_ms())
        })
        .await;
        match requeued {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::warn!(jobs = n, "jobs interrupted by the last stop run again"),
            Ok(Err(err)) => tracing::error!(error = %err, "requeueing interrupted jobs failed"),
            Err(err) => tracing::error!(error = %err, "the requeue task failed"),
        }
    }
    let (lease, lease_check) = if cluster {
        (SHARED_LEASE, SHARED_LEASE_CHECK)
    } else {
        (LEASE, LEASE_CHECK)
    };
    let running: Arc<std::sync::Mutex<HashMap<String, u32>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(WORKERS));
    let mut leases_checked = std::time::Instant::now();
    loop {
        let free = permits.available_permits() as u32;
        if free > 0 {
            // Expired leases matter only when several nodes share a store (a restart already
            // requeued this node's own): look for them every few seconds, not every round.
            let check_leases = leases_checked.elapsed() >= lease_check;
            if check_leases {
                leases_checked = std::time::Instant::now();
            }
            let claimed = {
                let shared = shared.clone();
                let renew: Vec<(String, u32)> = if cluster && check_leases {
                    let running = running.lock().expect("never poisoned");
                    running.iter().map(|(id, n)| (id.clone(), *n)).collect()
                } else {
                    Vec::new()
                };
                tokio::task::spawn_blocking(move || {
                    let now = now_ms();
                    let until = now + lease.as_millis() as i64;
                    if !renew.is_empty() {
                        shared.store.extend_leases(&renew, until)?;
                    }
                    if check_leases {
                        shared.store.requeue_abandoned(None, now, now)?;
                    }
                    shared.store.claim_jobs(None, now, until, free)
                })
                .await
            };
            match claimed {
                Ok(Ok(jobs)) => {
                    for job in jobs {
                        let permit = permits
                            .clone()
                            .acquire_owned()
                            .await
                            .expect("the semaphore is never closed");
                        let shared = shared.clone();
                        let running = running.clone();
                        running
                            .lock()
                            .expect("never poisoned")
                            .insert(job.id.clone(), job.attempts);
                        shared.in_flight.clone().spawn(async move {
                            let id = job.id.clone();
                            run(&shared, job).await;
                            running.lock().expect("never poisoned").remove(&id);
                            drop(permit);
                            // A free worker claims the next due job now, not at the next poll.
                            shared.job_ready.notify_one();
                        });
                    }
                }
                Ok(Err(err)) => tracing::error!(error = %err, "claiming due jobs failed"),
                Err(err) => tracing::error!(error = %err, "the claim task failed"),
            }
        }
        tokio::select! {
            () = shared.job_ready.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Runs one attempt and records how it ended.
async fn run(shared: &Arc<Shared>, job: Job) {
    let find = || {
        shared
            .environments
            .load()
            .get(&job.environment)
            .and_then(|env| env.routes.load().functions.get(&job.function).cloned())
    };
    let mut live = find();
    if live.is_none() && shared.store.is_shared() {
        // Another node may have deployed it a moment ago and this one not followed yet:
        // catch up before calling the function gone.
        crate::cluster::sync(shared).await;
        live = find();
    }
    let now = now_ms();
    let update = match live {
        None => JobUpdate {
            state: JobState::Dead,
            attempts: job.attempts,
            next_run_at_ms: now,
            last_error: Some(format!(
                "function `{}` is no longer deployed in environment `{}`",
                job.function, job.environment
            )),
            result: None,
        },
        Some(live) => attempt(shared, live, &job).await,
    };
    let outcome = match update.state {
        JobState::Succeeded => "succeeded",
        JobState::Dead => "dead",
        // Held back by max_concurrency: the function did not run.
        _ if update.attempts < job.attempts => "deferred",
        _ => "retried",
    };
    shared
        .metrics
        .jobs
        .with_label_values(&[&job.function, &job.environment, outcome])
        .inc();
    if update.state == JobState::Dead {
        tracing::warn!(job = %job.id, function = %job.function, error = update.last_error.as_deref().unwrap_or(""), "job dead-lettered");
    }
    let store = shared.store.clone();
    let (id, claimed) = (job.id.clone(), job.attempts);
    let written =
        tokio::task::spawn_blocking(move || store.finish_job(&id, claimed, &update, now_ms()))
            .await;
    match written {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            tracing::warn!(job = %job.id, "a job attempt ended after its lease and a newer claim; its outcome is dropped")
        }
        Ok(Err(err)) => {
            tracing::error!(job = %job.id, error = %err, "recording a job attempt failed; the job runs again when its lease ends")
        }
        Err(err) => tracing::error!(job = %job.id, error = %err, "the job task failed"),
    }
}

async fn attempt(shared: &Arc<Shared>, live: Arc<LiveFunction>, job: &Job) -> JobUpdate {
    let now = now_ms();
    let mut builder = http::Request::builder()
        .method(job.request.method.as_str())
        .uri(job.request.path.as_str());
    for (key, value) in &job.request.headers {
        builder = builder.header(key, value);
    }
    let mut request = match builder.body(Full::new(Bytes::from(job.request.body.clone()))) {
        Ok(request) => request,
        Err(err) => {
            return JobUpdate {
                state: JobState::Dead,
                attempts: job.attempts,
                next_run_at_ms: now,
                last_error: Some(format!("the stored request is not valid HTTP: {err}")),
                result: None,
            };
        }
    };
    // Only the platform sets `x-runway-*`: a caller's copies were stripped at enqueue (the
    // gateway keeps its own `x-runway-api-key-id`), and these are inserted, not appended.
    let headers = request.headers_mut();
    let platform = |value: String| HeaderValue::from_str(&value).expect("ids and times are ASCII");
    headers.insert("x-runway-job-id", platform(job.id.clone()));
    headers.insert("x-runway-attempt", platform(job.attempts.to_string()));
    if let Some(tick) = job.scheduled_for_ms {
        headers.insert("x-runway-trigger", HeaderValue::from_static("schedule"));
        headers.insert(
            "x-runway-scheduled-for",
            platform(crate::lifespan::format_ms(tick)),
        );
        if job
            .request
            .headers
            .iter()
            .any(|(k, _)| k == MISSED_TICK_HEADER)
        {
            headers.insert(MISSED_TICK_HEADER, HeaderValue::from_static("true"));
        }
    }
    let settings = queue_settings(&live);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let response = crate::execute::invoke(shared, live, request, Some(tx)).await;
    let status = response.status();
    let request_id = response
        .headers()
        .get(crate::execute::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut body = response.into_body();
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            let room = RESULT_BODY_LIMIT.saturating_sub(collected.len());
            collected.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    drop(body);
    let record = rx.await.ok();
    if record.is_none() && status == StatusCode::TOO_MANY_REQUESTS {
        // The platform held it back (max_concurrency), the function never ran: wait and
        // try again without spending an attempt.
        return JobUpdate {
            state: JobState::Pending,
            attempts: job.attempts.saturating_sub(1),
            next_run_at_ms: now_ms() + 1_000,
            last_error: Some(
                "waiting: the function is running its max_concurrency invocations".into(),
            ),
            result: None,
        };
    }
    if record.is_none() && status == StatusCode::PAYMENT_REQUIRED {
        // Stopped by its budget: the job waits, without spending attempts, until the
        // budget is raised or the month ends.
        return JobUpdate {
            state: JobState::Pending,
            attempts: job.attempts.saturating_sub(1),
            next_run_at_ms: now_ms() + 60_000,
            last_error: Some(
                "waiting: the function's monthly budget is spent (`runway budget ls`)".into(),
            ),
            result: None,
        };
    }
    let result = JobResult {
        status: status.as_u16(),
        body: String::from_utf8_lossy(&collected).into_owned(),
        request_id,
    };
    let failed_run = record.as_ref().and_then(|r| {
        r.error
            .clone()
            .filter(|_| r.status != runway_meter::InvocationStatus::Ok)
    });
    let now = now_ms();
    if failed_run.is_none() && (status.is_success() || status.is_redirection()) {
        return JobUpdate {
            state: JobState::Succeeded,
            attempts: job.attempts,
            next_run_at_ms: now,
            last_error: None,
            result: Some(result),
        };
    }
    let error = failed_run.unwrap_or_else(|| format!("the function answered {status}"));
    // 410 (expired) and 503 without a run (a revoked artifact) will not get better.
    let permanent = status == StatusCode::GONE
        || (record.is_none() && status == StatusCode::SERVICE_UNAVAILABLE)
        || (status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS);
    if permanent {
        return JobUpdate {
            state: JobState::Dead,
            attempts: job.attempts,
            next_run_at_ms: now,
            last_error: Some(format!(
                "{error} ({})",
                if status.is_client_error() {
                    "a 4xx answer is not retried"
                } else {
                    "its artifact was revoked"
                }
            )),
            result: Some(result),
        };
    }
    if job.attempts >= job.max_attempts {
        return JobUpdate {
            state: JobState::Dead,
            attempts: job.attempts,
            next_run_at_ms: now,
            last_error: Some(format!(
                "{error} (attempt {} of {}: no attempts left)",
                job.attempts, job.max_attempts
            )),
            result: Some(result),
        };
    }
    let delay = settings.delay_after(job.attempts);
    JobUpdate {
        state: JobState::Pending,
        attempts: job.attempts,
        next_run_at_ms: now.saturating_add(delay.as_millis() as i64),
        last_error: Some(format!(
            "{error} (attempt {} of {}; next in {})",
            job.attempts,
            job.max_attempts,
            humantime::format_duration(delay)
        )),
        result: Some(result),
    }
}

/// A schedule's identity in the store: its expression, zone and path.
fn schedule_key(schedule: &ScheduleTrigger) -> String {
    format!(
        "{}@{}{}",
        schedule.cron.as_str(),
        String::from(schedule.timezone),
        schedule.path
    )
}

/// Claims due ticks of every live schedule until `stop`.
pub(crate) async fn schedule(shared: Arc<Shared>, stop: CancellationToken) {
    // Next tick per (environment, function, schedule key), and whether it is a missed tick's
    // catch-up.
    let mut next: HashMap<(String, String, String), (i64, bool)> = HashMap::new();
    loop {
        let functions = shared.environments.load().functions_where(
            |env| !env.rules.paused_schedules,
            |f| !f.release.config.schedules.is_empty(),
        );
        let now = now_ms();
        let mut seen = Vec::new();
        for function in &functions {
            // Expired functions do not run, nor do functions their budget stopped (a stopped
            // function would otherwise pile up a month of pending jobs).
            if function.expires_at_ms.is_some_and(|at| at <= now)
                || function.budget.load(std::sync::atomic::Ordering::Acquire)
                    == crate::services::budgets::STOPPED
            {
                continue;
            }
            for trigger in &function.release.config.schedules {
                let key = (
                    function.release.environment.clone(),
                    function.name().to_owned(),
                    schedule_key(trigger),
                );
                seen.push(key.clone());
                let (due, catch_up) = match next.get(&key) {
                    Some(due) => *due,
                    None => {
                        let first = first_tick(&shared, function, trigger, &key.2, now).await;
                        next.insert(key.clone(), first);
                        first
                    }
                };
                if due > now {
                    continue;
                }
                // A stalled loop coalesces the ticks it slept through into the latest one.
                let tick = trigger
                    .latest_tick_at_or_before(now)
                    .map_or(due, |latest| latest.max(due));
                fire(&shared, function, trigger, &key.2, tick, catch_up, now).await;
                let following = trigger.next_tick_after(now).unwrap_or(i64::MAX);
                next.insert(key, (following, false));
            }
        }
        next.retain(|key, _| seen.contains(key));
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// The first tick to fire for a schedule this process has not seen: a missed tick (once)
/// if the schedule ran before and `missed = "run-once"`, else the next one.
async fn first_tick(
    shared: &Arc<Shared>,
    function: &LiveFunction,
    trigger: &ScheduleTrigger,
    key: &str,
    now: i64,
) -> (i64, bool) {
    let following = (trigger.next_tick_after(now).unwrap_or(i64::MAX), false);
    let last = {
        let store = shared.store.clone();
        let (env, name, key) = (
            function.release.environment.clone(),
            function.name().to_owned(),
            key.to_owned(),
        );
        tokio::task::spawn_blocking(move || store.last_tick(&env, &name, &key)).await
    };
    let Ok(Ok(Some(last))) = last else {
        return following;
    };
    match trigger.latest_tick_at_or_before(now) {
        Some(missed) if missed > last && trigger.missed == MissedTicks::RunOnce => (missed, true),
        _ => following,
    }
}

async fn fire(
    shared: &Arc<Shared>,
    function: &LiveFunction,
    trigger: &ScheduleTrigger,
    key: &str,
    tick: i64,
    catch_up: bool,
    now: i64,
) {
    let headers = if catch_up {
        vec![(MISSED_TICK_HEADER.to_owned(), "true".to_owned())]
    } else {
        Vec::new()
    };
    let job = new_job(
        function,
        JobSource::Schedule,
        JobRequest {
            method: "POST".into(),
            path: trigger.path.clone(),
            headers,
            body: Vec::new(),
        },
        Some(tick),
        now,
    );
    let store = shared.store.clone();
    let key = key.to_owned();
    let claimed = tokio::task::spawn_blocking(move || store.claim_tick(&key, tick, &job)).await;
    match claimed {
        Ok(Ok(true)) => {
            shared
                .metrics
                .schedule_ticks
                .with_label_values(&[function.name(), &function.release.environment])
                .inc();
            shared.job_ready.notify_one();
        }
        Ok(Ok(false)) => {}
        Ok(Err(err)) => {
            tracing::error!(function = function.name(), error = %err, "claiming a schedule tick failed")
        }
        Err(err) => tracing::error!(error = %err, "the schedule task failed"),
    }
}
