//! Jobs as the operator sees them: one job of an environment, and a dead-lettered job sent
//! back to the queue with fresh attempts.

use runway_store::{ControlStore, Job, JobState, StoreError};

/// Why a job could not be shown or retried.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    /// No job of that id in the environment.
    #[error("no job `{0}` in this environment; `runway queue ls` lists them")]
    NoSuchJob(String),
    /// Only dead-lettered jobs are retried.
    #[error("job `{id}` is {}; only dead-lettered jobs are retried", state.as_str())]
    NotDeadLettered { id: String, state: JobState },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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
