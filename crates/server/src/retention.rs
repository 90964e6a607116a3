//! Retention: what the node keeps and for how long, pruned off the request path.
//!
//! The rule lives here, above the store: which rows age out and when. The store only knows
//! how to delete one bounded chunk of old rows (`ControlStore::prune`). Hourly usage
//! rollups, which every bill, budget and capacity report reads, are never pruned.

use std::sync::Arc;
use std::time::Duration;

use runway_store::Pruned;
use tokio_util::sync::CancellationToken;

use crate::Shared;

/// How long the node keeps each kind of row (`None`: for ever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Raw invocation records.
    pub invocations: Option<Duration>,
    /// Function log lines.
    pub logs: Option<Duration>,
    /// Jobs that succeeded.
    pub succeeded_jobs: Option<Duration>,
    /// The policy audit log.
    pub policy_audit: Option<Duration>,
    /// The control-plane audit log.
    pub control_audit: Option<Duration>,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Default for Retention {
    /// A week of raw records, logs and finished jobs (bills come from the hourly rollups,
    /// kept for ever); 90 days of policy denials; 400 days of who did what, so a yearly
    /// review finds the whole year.
    fn default() -> Retention {
        Retention {
            invocations: Some(DAY * 7),
            logs: Some(DAY * 7),
            succeeded_jobs: Some(DAY * 7),
            policy_audit: Some(DAY * 90),
            control_audit: Some(DAY * 400),
        }
    }
}

impl Retention {
    /// How long rows of `what` are kept.
    pub fn of(&self, what: Pruned) -> Option<Duration> {
        match what {
            Pruned::Invocations => self.invocations,
            Pruned::Logs => self.logs,
            Pruned::SucceededJobs => self.succeeded_jobs,
            Pruned::PolicyAudit => self.policy_audit,
            Pruned::ControlAudit => self.control_audit,
        }
    }
}

/// How often the node looks for rows past their retention.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// Rows deleted per transaction: short enough that the meter writer never waits long.
const CHUNK: u32 = 2000;
/// Pause between chunks, so a large backlog is deleted gently.
const BETWEEN_CHUNKS: Duration = Duration::from_millis(20);

/// Prunes every kind of row past its retention now and then every [`SWEEP_EVERY`].
pub(crate) async fn watch(shared: Arc<Shared>, retention: Retention, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        for what in Pruned::ALL {
            let Some(keep) = retention.of(what) else {
                continue;
            };
            let before_ms = crate::now_ms() - keep.as_millis() as i64;
            loop {
                let store = shared.store.clone();
                let deleted =
                    tokio::task::spawn_blocking(move || store.prune(what, before_ms, CHUNK)).await;
                match deleted {
                    Ok(Ok(n)) => {
                        shared
                            .metrics
                            .retention_pruned
                            .with_label_values(&[what.as_str()])
                            .inc_by(n);
                        if n < u64::from(CHUNK) {
                            break;
                        }
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(kind = what.as_str(), error = %err, "pruning old rows failed; retrying at the next sweep");
                        break;
                    }
                    Err(err) => {
                        tracing::error!(error = %err, "the pruning task failed");
                        break;
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(BETWEEN_CHUNKS) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}
