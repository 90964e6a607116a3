//! The rules every backend shares, so they cannot drift between engines: when a deploy makes a
//! new release, how invocation records roll up into hours, and which hours a cost question
//! reads from rollups rather than records.

use std::collections::HashMap;

use runway_manifest::FunctionConfig;
use runway_meter::InvocationRecord;
use sha2::{Digest as _, Sha256};

use crate::NewRelease;

/// An hour in milliseconds: the granularity of the usage rollups.
pub const HOUR_MS: i64 = 3_600_000;

/// A hash of a configuration that identifies it across deploys.
pub fn config_hash(config: &FunctionConfig) -> String {
    let json = serde_json::to_vec(config).expect("configs always serialise");
    hex::encode(Sha256::digest(json))
}

/// What a deploy does for one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployStep {
    /// The latest release is identical (same artifact, same configuration): serve it again.
    Reuse {
        /// Its number.
        number: u32,
    },
    /// Create a release with this number.
    Create {
        /// The next number after the latest (1 for a new function).
        number: u32,
    },
}

/// Release dedup: a deploy creates a release only when the artifact or the configuration
/// differs from the function's latest release (`(number, digest, config hash)`), so deploying
/// the same thing twice changes nothing and release numbers stay meaningful.
pub fn deploy_step(
    latest: Option<(u32, &str, &str)>,
    new: &NewRelease,
    new_hash: &str,
) -> DeployStep {
    match latest {
        Some((number, digest, hash)) if digest == new.digest.as_str() && hash == new_hash => {
            DeployStep::Reuse { number }
        }
        latest => DeployStep::Create {
            number: latest.map_or(1, |(number, _, _)| number + 1),
        },
    }
}

/// The start of the hour holding `at_ms`.
pub fn hour_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// The first whole hour at or after `since_ms`: rollups cover from there, and the records of
/// the partial hour before it are summed exactly.
pub fn first_whole_hour(since_ms: i64) -> i64 {
    (since_ms + HOUR_MS - 1).div_euclid(HOUR_MS) * HOUR_MS
}

/// Which hour and release a rollup row sums.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RollupKey<'a> {
    /// The hour's start, in milliseconds since the Unix epoch.
    pub hour_ms: i64,
    /// The environment.
    pub environment: &'a str,
    /// The function.
    pub function: &'a str,
    /// The release.
    pub release: u32,
}

/// One hour of one release's usage: sums, and maxima where a sum means nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HourlyUsage {
    /// Invocations.
    pub invocations: i64,
    /// Invocations that failed (a client that went away is not a failure).
    pub failures: i64,
    /// GB-seconds billed.
    pub gb_seconds: f64,
    /// Money billed, in picodollars.
    pub cost_pusd: i64,
    /// Sum of measured durations, in microseconds.
    pub duration_us: i64,
    /// Highest memory any invocation used, in bytes.
    pub max_memory_bytes: i64,
    /// Sum of CPU-throttled time, in microseconds.
    pub cpu_throttled_us: i64,
    /// Most invocations of the function running at once.
    pub peak_concurrency: i64,
    /// The configured memory size, in MiB.
    pub memory_mb: i64,
}

/// Rolls a batch of newly stored records up into hours. A backend adds each row to its stored
/// hour in the same transaction as the records, and only for records it did store, so a
/// retried batch counts once.
pub fn hourly_rollups<'a>(
    records: impl IntoIterator<Item = &'a InvocationRecord>,
) -> HashMap<RollupKey<'a>, HourlyUsage> {
    let mut hours: HashMap<RollupKey<'a>, HourlyUsage> = HashMap::new();
    for r in records {
        let sums = hours
            .entry(RollupKey {
                hour_ms: hour_of(r.started_at_ms),
                environment: &r.environment,
                function: &r.function,
                release: r.release,
            })
            .or_default();
        sums.invocations += 1;
        sums.failures += i64::from(r.status.is_failure());
        sums.gb_seconds += r.gb_seconds;
        sums.cost_pusd += r.cost.0 as i64;
        sums.duration_us += r.duration_us as i64;
        sums.max_memory_bytes = sums.max_memory_bytes.max(r.max_memory_bytes as i64);
        sums.cpu_throttled_us += r.cpu_throttled_us as i64;
        sums.peak_concurrency = sums.peak_concurrency.max(i64::from(r.concurrency));
        sums.memory_mb = sums.memory_mb.max(r.memory_mb as i64);
    }
    hours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_hours_start_at_or_after_the_given_time() {
        assert_eq!(first_whole_hour(0), 0);
        assert_eq!(first_whole_hour(1), HOUR_MS);
        assert_eq!(first_whole_hour(HOUR_MS), HOUR_MS);
        assert_eq!(hour_of(HOUR_MS - 1), 0);
        assert_eq!(hour_of(-1), -HOUR_MS);
    }
}
