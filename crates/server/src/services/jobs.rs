//! Jobs as callers and operators see them: enqueueing an asynchronous invocation, listing an
//! environment's jobs, one job, and a dead-lettered job sent back to the queue with fresh
//! attempts. The worker that runs them is `services::worker`.

use runway_manifest::QueueTrigger;
use runway_store::{ControlStore, Job, JobRequest, JobSource, JobState, StoreError};

use crate::environments::Missing;
use crate::live::LiveFunction;

/// Why a job could not be shown or retried.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    /// No job of that id in the environment.
    #[error("no job `{0}` in this environment; `runway queue ls` lists them")]
    NoSuchJob(String),
    /// Only dead-lettered jobs are retried.
    #[error("job `{id}` is {}; only dead-lettered jobs are retried", state.as_str())]
    NotDeadLettered { id: String, state: JobState },
    /// The function is not deployed.
    #[error(transparent)]
    Missing(#[from] Missing),
    /// The function takes no asynchronous invocations.
    #[error(
        "function `{0}` has no queue trigger; add `[[function.trigger]]` with `queue = {{}}` to its manifest to accept asynchronous invocations"
    )]
    NoQueueTrigger(String),
    /// The function's artifact was revoked.
    #[error("{0}")]
    ArtifactRevoked(String),
    /// The function's lifespan ended.
    #[error("{0}")]
    FunctionExpired(String),
    /// A job state that does not exist.
    #[error("unknown job state `{0}`: use pending, running, succeeded or dead")]
    InvalidState(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A function's queue settings (the defaults when it has no queue trigger).
pub(crate) fn queue_settings(function: &LiveFunction) -> QueueTrigger {
    function.release.config.queue.clone().unwrap_or_default()
}

/// A pending job of `function`, due at once.
pub(crate) fn new_job(
    function: &LiveFunction,
    source: JobSource,
    request: JobRequest,
    scheduled_for_ms: Option<i64>,
    now: i64,
) -> Job {
    Job {
        id: format!("j-{}", runway_access::random_id()),
        environment: function.release.environment.clone(),
        function: function.name().to_owned(),
        source,
        request,
        state: JobState::Pending,
        attempts: 0,
        max_attempts: queue_settings(function).max_attempts,
        next_run_at_ms: now,
        last_error: None,
        result: None,
        scheduled_for_ms,
        created_at_ms: now,
        updated_at_ms: now,
    }
}

/// The states a comma-separated list names; none means pending, running and dead.
pub(crate) fn parse_states(text: Option<&str>) -> Result<Vec<JobState>, JobError> {
    let Some(text) = text else {
        return Ok(vec![JobState::Pending, JobState::Running, JobState::Dead]);
    };
    text.split(',')
        .map(|s| match s.trim() {
            "pending" => Ok(JobState::Pending),
            "running" => Ok(JobState::Running),
            "succeeded" => Ok(JobState::Succeeded),
            "dead" => Ok(JobState::Dead),
            other => Err(JobError::InvalidState(other.to_owned())),
        })
        .collect()
}

/// The job service of a node.
pub(crate) struct Jobs<'a> {
    store: &'a dyn ControlStore,
}

impl<'a> Jobs<'a> {
    /// The service over a node's store.
    pub(crate) fn new(store: &'a dyn ControlStore) -> Jobs<'a> {
        Jobs { store }
    }

    /// Stores `request` as a job of `live`, if it takes asynchronous invocations and may run
    /// now (not revoked, not expired); returns the job's id. The caller wakes the worker.
    pub(crate) fn enqueue(
        &self,
        live: &LiveFunction,
        request: JobRequest,
        now_ms: i64,
    ) -> Result<String, JobError> {
        if live.release.config.queue.is_none() {
            return Err(JobError::NoQueueTrigger(live.name().to_owned()));
        }
        if let Err(refusal) = crate::invocation::check_revoked(live) {
            return Err(JobError::ArtifactRevoked(
                refusal.message.trim_end().to_owned(),
            ));
        }
        if let Err(refusal) = crate::invocation::check_expiry(live, now_ms) {
            return Err(JobError::FunctionExpired(
                refusal.message.trim_end().to_owned(),
            ));
        }
        let job = new_job(live, JobSource::Queue, request, None, now_ms);
        self.store.enqueue_job(&job)?;
        Ok(job.id)
    }

    /// Up to `limit` jobs of `environment` in `states`, newest first.
    pub(crate) fn list(
        &self,
        environment: &str,
        states: &[JobState],
        limit: u32,
    ) -> Result<Vec<Job>, JobError> {
        Ok(self.store.jobs(environment, states, limit)?)
    }

    /// Job `id` of `environment` (a job of another environment is not found).
    pub(crate) fn get(&self, environment: &str, id: &str) -> Result<Job, JobError> {
        self.store
            .job(id)?
            .filter(|job| job.environment == environment)
            .ok_or_else(|| JobError::NoSuchJob(id.to_owned()))
    }

    /// Sends dead-lettered job `id` back to pending with its attempts reset; returns it.
    pub(crate) fn retry(&self, environment: &str, id: &str, now_ms: i64) -> Result<Job, JobError> {
        let job = self.get(environment, id)?;
        if job.state != JobState::Dead {
            return Err(JobError::NotDeadLettered {
                id: id.to_owned(),
                state: job.state,
            });
        }
        self.store.retry_job(id, now_ms)?;
        self.get(environment, id)
    }
}

#[cfg(test)]
mod tests {
    use runway_store::{JobRequest, JobSource, JobStore, JobUpdate};
    use runway_store_sqlite::SqliteStore;

    use super::*;

    fn job(id: &str, environment: &str) -> Job {
        Job {
            id: id.into(),
            environment: environment.into(),
            function: "worker".into(),
            source: JobSource::Queue,
            request: JobRequest {
                method: "POST".into(),
                path: "/".into(),
                headers: Vec::new(),
                body: Vec::new(),
            },
            state: JobState::Pending,
            attempts: 0,
            max_attempts: 1,
            next_run_at_ms: 0,
            last_error: None,
            result: None,
            scheduled_for_ms: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn job_states_parse_from_a_list_and_an_unknown_one_is_named() {
        assert_eq!(
            parse_states(None).unwrap(),
            vec![JobState::Pending, JobState::Running, JobState::Dead]
        );
        assert_eq!(
            parse_states(Some("succeeded, dead")).unwrap(),
            vec![JobState::Succeeded, JobState::Dead]
        );
        let err = parse_states(Some("pending,finished")).unwrap_err();
        assert!(
            matches!(&err, JobError::InvalidState(s) if s == "finished"),
            "{err}"
        );
    }

    #[test]
    fn only_a_dead_lettered_job_of_this_environment_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let jobs = Jobs::new(&store);
        store.enqueue_job(&job("j-1", "prod")).unwrap();
        assert!(matches!(
            jobs.retry("prod", "j-1", 10),
            Err(JobError::NotDeadLettered {
                state: JobState::Pending,
                ..
            })
        ));
        let claimed = store.claim_jobs(None, 1, 1_000, 1).unwrap();
        let dead = JobUpdate {
            state: JobState::Dead,
            attempts: claimed[0].attempts,
            next_run_at_ms: 2,
            last_error: Some("failed".into()),
            result: None,
        };
        assert!(
            store
                .finish_job("j-1", claimed[0].attempts, &dead, 2)
                .unwrap()
        );
        assert!(matches!(
            jobs.retry("staging", "j-1", 10),
            Err(JobError::NoSuchJob(_))
        ));
        let again = jobs.retry("prod", "j-1", 10).unwrap();
        assert_eq!(again.state, JobState::Pending);
        assert_eq!(again.attempts, 0);
    }
}
