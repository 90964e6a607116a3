//! The conformance suite: one set of store tests every backend must pass. A backend's test
//! crate calls [`conformance_suite!`](crate::conformance_suite) with a function that opens a
//! fresh, empty store and returns it with whatever keeps it alive (a temporary folder, a
//! database), so each test runs on its own store.

use runway_manifest::{ByteSize, FunctionConfig, FunctionName, HumanDuration};
use runway_meter::{InvocationRecord, InvocationStatus, PicoUsd};

#[allow(unused_imports)]
use crate::{
    AuditRecord, ControlStore, CostDimension, Digest, EnvironmentRecord, Job, JobState, JobUpdate,
    NewRelease, Pruned, StoredSecret, TokenRecord,
};

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A function configuration with a memory size and a one-second timeout.
fn config(name: &str, memory_mib: u64) -> FunctionConfig {
    FunctionConfig {
        memory: ByteSize::mib(memory_mib),
        timeout: HumanDuration::from_millis(1000),
        ..FunctionConfig::new(FunctionName::try_from(name).unwrap())
    }
}

/// Generates one `#[test]` per conformance test; `$open` is a path to a function returning
/// `(guard, store)` for a fresh, empty store. With `optional $open`, it returns
/// `Option<(guard, store)>` and a test given `None` returns at once (a backend whose server is
/// not installed on this machine; the opener says why).
#[macro_export]
macro_rules! conformance_suite {
    (optional $open:path) => {
        $crate::conformance_suite!(@list optional $open);
    };
    ($open:path) => {
        $crate::conformance_suite!(@list required $open);
    };
    (@list $mode:ident $open:path) => {
        $crate::conformance_suite!(@each $mode $open;
            releases::identical_deploy_creates_no_new_release_and_a_change_does,
            releases::deploy_of_an_unknown_artifact_changes_nothing,
            releases::records_are_summed_per_function_and_logs_read_back_in_order,
            releases::pruning_deletes_old_records_and_logs_in_chunks_but_bills_keep_them,
            releases::audit_records_page_by_function_and_secrets_keep_only_ciphertext,
            releases::jobs_are_claimed_once_requeued_when_abandoned_and_retried_from_dead,
            releases::a_schedule_tick_is_claimed_at_most_once,
            releases::tokens_are_found_by_hash_and_revoked_once,
            costs::rollups_answer_exactly_what_the_records_say,
            environments::a_copy_serves_the_same_releases_and_only_the_secrets_given,
            environments::removal_takes_everything_and_a_new_environment_of_the_same_name_starts_empty,
            environments::registering_the_home_environment_keeps_its_functions_and_first_record,
            cluster::changes_that_nodes_apply_bump_the_generation_and_records_do_not,
            cluster::nodes_heartbeat_and_drop_out,
            cluster::the_first_secrets_key_fingerprint_is_kept,
            cluster::racing_claims_take_each_job_once,
            cluster::extended_leases_keep_jobs_from_being_requeued,
            cluster::racing_tick_claims_fire_once,
            cluster::racing_deploys_number_releases_without_gaps
        );
    };
    (@each required $open:path; $($module:ident :: $test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                let (_guard, store) = $open();
                $crate::conformance::$module::$test(&store);
            }
        )*
    };
    (@each optional $open:path; $($module:ident :: $test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                let Some((_guard, store)) = $open() else {
                    return;
                };
                $crate::conformance::$module::$test(&store);
            }
        )*
    };
}

/// Conformance: releases.
pub mod releases {
    #![allow(missing_docs)]
    use super::*;

    /// Conformance: identical_deploy_creates_no_new_release_and_a_change_does.
    pub fn identical_deploy_creates_no_new_release_and_a_change_does(store: &dyn ControlStore) {
        let digest = Digest::of(b"wasm");
        store.put_artifact(&digest, b"wasm").unwrap();
        let new = |mem| NewRelease {
            digest: digest.clone(),
            config: config("a", mem),
            vetting: None,
            deployed_by: None,
            origin: None,
        };
        let first = store.deploy("prod", &[new(128)]).unwrap();
        assert!(first[0].created);
        assert_eq!(first[0].release.number, 1);
        let again = store.deploy("prod", &[new(128)]).unwrap();
        assert!(!again[0].created);
        assert_eq!(again[0].release.number, 1);
        let changed = store.deploy("prod", &[new(256)]).unwrap();
        assert_eq!(changed[0].release.number, 2);
        assert_eq!(store.releases("prod", "a").unwrap().len(), 2);
        assert_eq!(store.current_releases("prod").unwrap()[0].number, 2);
    }

    /// Conformance: deploy_of_an_unknown_artifact_changes_nothing.
    pub fn deploy_of_an_unknown_artifact_changes_nothing(store: &dyn ControlStore) {
        let missing = NewRelease {
            digest: Digest::of(b"nothing"),
            config: config("a", 128),
            vetting: None,
            deployed_by: None,
            origin: None,
        };
        assert!(store.deploy("prod", &[missing]).is_err());
        assert!(store.current_releases("prod").unwrap().is_empty());
    }

    /// A record of function `a` in prod that printed `hello`.
    pub(crate) fn record_at(
        id: &str,
        status: InvocationStatus,
        started_at_ms: i64,
    ) -> InvocationRecord {
        InvocationRecord {
            cpu_throttled_us: 0,
            concurrency: 1,
            request_id: id.into(),
            environment: "prod".into(),
            function: "a".into(),
            release: 1,
            started_at_ms,
            duration_us: 1500,
            billed_ms: 2,
            memory_mb: 128,
            max_memory_bytes: 1 << 20,
            instantiate_us: 20,
            status,
            http_status: 200,
            gb_seconds: 0.00025,
            cost: PicoUsd(204_166),
            stdout: b"hello\n".to_vec(),
            stderr: Vec::new(),
            error: None,
        }
    }

    /// Conformance: records_are_summed_per_function_and_logs_read_back_in_order.
    pub fn records_are_summed_per_function_and_logs_read_back_in_order(store: &dyn ControlStore) {
        let mut sink = store.record_sink().unwrap();
        let record = |id: &str, status| record_at(id, status, 1000);
        sink.write_batch(&[
            record("r1", InvocationStatus::Ok),
            record("r2", InvocationStatus::Timeout),
        ])
        .unwrap();
        let usage = store.usage("prod", 0).unwrap();
        assert_eq!(usage[0].invocations, 2);
        assert_eq!(usage[0].failures, 1);
        assert_eq!(usage[0].cost, PicoUsd(408_332));
        assert!(store.usage("prod", 2000).unwrap().is_empty());
        let logs = store.logs("prod", "a", 0, 100).unwrap();
        assert_eq!(logs.len(), 4);
        assert_eq!(logs[0].line, "hello");
        assert!(logs[1].line.starts_with("REPORT RequestId: r1"));
        let after = store.logs("prod", "a", logs[1].id, 100).unwrap();
        assert_eq!(after.len(), 2);
    }

    /// Conformance: pruning_deletes_old_records_and_logs_in_chunks_but_bills_keep_them.
    pub fn pruning_deletes_old_records_and_logs_in_chunks_but_bills_keep_them(
        store: &dyn ControlStore,
    ) {
        let mut sink = store.record_sink().unwrap();
        let now = now_ms();
        let record = |id: &str, started_at_ms| record_at(id, InvocationStatus::Ok, started_at_ms);
        let old = now - 30 * 24 * 3600 * 1000;
        sink.write_batch(&[
            record("old1", old),
            record("old2", old),
            record("old3", old),
            record("new", now),
        ])
        .unwrap();
        let cutoff = now - 7 * 24 * 3600 * 1000;
        assert_eq!(store.prune(Pruned::Invocations, cutoff, 2).unwrap(), 2);
        assert_eq!(store.prune(Pruned::Invocations, cutoff, 2).unwrap(), 1);
        assert_eq!(store.prune(Pruned::Invocations, cutoff, 2).unwrap(), 0);
        // Two lines per record (stdout and REPORT); only the new record's remain.
        assert_eq!(store.prune(Pruned::Logs, cutoff, 100).unwrap(), 6);
        let logs = store.logs("prod", "a", 0, 100).unwrap();
        assert_eq!(logs.len(), 2);
        assert!(logs[1].line.starts_with("REPORT RequestId: new"));
        // The bill for the whole period still counts every invocation: it reads the rollups.
        let usage = store.usage("prod", old - 3_600_000).unwrap();
        assert_eq!(usage[0].invocations, 4);
        assert!(store.size_bytes() > 0);
    }

    /// Conformance: audit_records_page_by_function_and_secrets_keep_only_ciphertext.
    pub fn audit_records_page_by_function_and_secrets_keep_only_ciphertext(
        store: &dyn ControlStore,
    ) {
        let record = |function: &str, target: &str| AuditRecord {
            id: 0,
            at_ms: 1,
            environment: "prod".into(),
            function: function.into(),
            release: 2,
            capability: "sql".into(),
            operation: "select".into(),
            target: target.into(),
            decision: "denied".into(),
        };
        store
            .append_audit(&[
                record("a", "customers"),
                record("b", "x"),
                record("a", "cards"),
            ])
            .unwrap();
        let a = store.audit("prod", Some("a"), 0, 10).unwrap();
        let targets: Vec<&str> = a.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, ["customers", "cards"]);
        let after_first = store.audit("prod", Some("a"), a[0].id, 10).unwrap();
        assert_eq!(after_first.len(), 1);
        assert_eq!(store.audit("prod", None, 0, 10).unwrap().len(), 3);
        assert!(store.audit("staging", None, 0, 10).unwrap().is_empty());

        let sealed = StoredSecret {
            nonce: vec![1; 12],
            ciphertext: vec![9, 8, 7],
        };
        store.put_secret("prod", "PAYMENT_KEY", &sealed).unwrap();
        assert_eq!(store.secret("prod", "PAYMENT_KEY").unwrap(), Some(sealed));
        assert_eq!(store.secret("staging", "PAYMENT_KEY").unwrap(), None);
        let replaced = StoredSecret {
            nonce: vec![2; 12],
            ciphertext: vec![1],
        };
        store.put_secret("prod", "PAYMENT_KEY", &replaced).unwrap();
        assert_eq!(store.secret("prod", "PAYMENT_KEY").unwrap(), Some(replaced));
        let names: Vec<String> = store
            .secrets("prod")
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["PAYMENT_KEY"]);
    }

    pub(crate) fn job(id: &str, now: i64) -> Job {
        Job {
            id: id.into(),
            environment: "prod".into(),
            function: "worker".into(),
            source: crate::JobSource::Queue,
            request: crate::JobRequest {
                method: "POST".into(),
                path: "/work".into(),
                headers: vec![("x-a".into(), "1".into())],
                body: b"\x00payload".to_vec(),
            },
            state: JobState::Pending,
            attempts: 0,
            max_attempts: 3,
            next_run_at_ms: now,
            last_error: None,
            result: None,
            scheduled_for_ms: None,
            created_at_ms: now,
            updated_at_ms: now,
        }
    }

    /// Conformance: jobs_are_claimed_once_requeued_when_abandoned_and_retried_from_dead.
    pub fn jobs_are_claimed_once_requeued_when_abandoned_and_retried_from_dead(
        store: &dyn ControlStore,
    ) {
        store.enqueue_job(&job("j1", 1_000)).unwrap();
        store.enqueue_job(&job("j2", 5_000)).unwrap();
        let claimed = store.claim_jobs(Some("prod"), 2_000, 60_000, 10).unwrap();
        assert_eq!(claimed.len(), 1, "only j1 is due");
        assert_eq!(claimed[0].state, JobState::Running);
        assert_eq!(claimed[0].attempts, 1);
        assert_eq!(claimed[0].request.body, b"\x00payload");
        assert!(
            store
                .claim_jobs(Some("prod"), 2_000, 60_000, 10)
                .unwrap()
                .is_empty()
        );
        // A node that died mid-attempt: its running job goes back to pending.
        assert_eq!(
            store
                .requeue_abandoned(Some("prod"), i64::MAX, 3_000)
                .unwrap(),
            1
        );
        let again = store.claim_jobs(Some("prod"), 3_000, 60_000, 10).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 2);
        let dead = JobUpdate {
            state: JobState::Dead,
            attempts: 2,
            next_run_at_ms: 3_000,
            last_error: Some("boom".into()),
            result: None,
        };
        assert!(
            !store.finish_job("j1", 1, &dead, 3_500).unwrap(),
            "a superseded attempt cannot record its end"
        );
        assert!(store.finish_job("j1", 2, &dead, 3_500).unwrap());
        assert_eq!(store.jobs("prod", &[JobState::Dead], 10).unwrap().len(), 1);
        assert!(
            !store.retry_job("j2", 4_000).unwrap(),
            "only dead jobs are retried"
        );
        assert!(store.retry_job("j1", 4_000).unwrap());
        let retried = store.job("j1").unwrap().unwrap();
        assert_eq!((retried.state, retried.attempts), (JobState::Pending, 0));
        assert_eq!(retried.last_error.as_deref(), Some("boom"));
        // Cut short on its last attempt (max 3): dead-lettered, not requeued forever.
        for _ in 0..3 {
            store.claim_jobs(Some("prod"), 9_000, 60_000, 10).unwrap();
            store
                .requeue_abandoned(Some("prod"), i64::MAX, 9_000)
                .unwrap();
        }
        let last = store.job("j1").unwrap().unwrap();
        assert_eq!((last.state, last.attempts), (JobState::Dead, 3));
        assert!(last.last_error.unwrap().contains("no attempts left"));
    }

    /// Conformance: a_schedule_tick_is_claimed_at_most_once.
    pub fn a_schedule_tick_is_claimed_at_most_once(store: &dyn ControlStore) {
        let mut run = job("s1", 1_000);
        run.source = crate::JobSource::Schedule;
        assert!(store.claim_tick("*/1 * * * * *@UTC", 1_000, &run).unwrap());
        run.id = "s2".into();
        assert!(!store.claim_tick("*/1 * * * * *@UTC", 1_000, &run).unwrap());
        assert!(!store.claim_tick("*/1 * * * * *@UTC", 500, &run).unwrap());
        assert!(
            store.job("s2").unwrap().is_none(),
            "a refused tick enqueues nothing"
        );
        assert_eq!(
            store
                .last_tick("prod", "worker", "*/1 * * * * *@UTC")
                .unwrap(),
            Some(1_000)
        );
        assert!(store.claim_tick("*/1 * * * * *@UTC", 2_000, &run).unwrap());
    }

    /// Conformance: tokens_are_found_by_hash_and_revoked_once.
    pub fn tokens_are_found_by_hash_and_revoked_once(store: &dyn ControlStore) {
        let token = TokenRecord {
            id: "t-1".into(),
            hash: "ab".repeat(32),
            role: runway_access::Role::Deployer,
            environment: Some("staging".into()),
            label: "ci".into(),
            created_at_ms: 1,
            expires_at_ms: Some(10),
            revoked_at_ms: None,
            created_by: "bootstrap".into(),
        };
        store.create_token(&token).unwrap();
        assert_eq!(
            store.token_by_hash(&token.hash).unwrap(),
            Some(token.clone())
        );
        assert!(store.token_by_hash("cd").unwrap().is_none());
        assert!(store.revoke_token("t-1", 5).unwrap());
        assert!(!store.revoke_token("t-1", 6).unwrap());
        assert_eq!(store.tokens().unwrap()[0].revoked_at_ms, Some(5));
    }
}

/// Conformance: costs.
pub mod costs {
    #![allow(missing_docs)]
    use super::*;

    fn record(id: &str, env: &str, function: &str, release: u32, at_ms: i64) -> InvocationRecord {
        InvocationRecord {
            request_id: id.into(),
            environment: env.into(),
            function: function.into(),
            release,
            started_at_ms: at_ms,
            duration_us: 1000,
            billed_ms: 1,
            memory_mb: 128,
            max_memory_bytes: 1 << 20,
            instantiate_us: 20,
            status: if id.ends_with('x') {
                InvocationStatus::Error
            } else {
                InvocationStatus::Ok
            },
            http_status: 200,
            gb_seconds: 0.000125,
            cost: PicoUsd(1_000),
            stdout: Vec::new(),
            stderr: Vec::new(),
            error: None,
            cpu_throttled_us: 0,
            concurrency: 1,
        }
    }

    fn deploy(store: &dyn ControlStore, env: &str, name: &str, owner: Option<&str>) {
        let digest = Digest::of(name.as_bytes());
        store.put_artifact(&digest, name.as_bytes()).unwrap();
        let config = FunctionConfig {
            owner: owner.map(str::to_owned),
            ..FunctionConfig::new(FunctionName::try_from(name).unwrap())
        };
        store
            .deploy(
                env,
                &[NewRelease {
                    digest,
                    config,
                    vetting: None,
                    deployed_by: None,
                    origin: None,
                }],
            )
            .unwrap();
    }

    /// Conformance: rollups_answer_exactly_what_the_records_say.
    pub fn rollups_answer_exactly_what_the_records_say(store: &dyn ControlStore) {
        deploy(store, "prod", "a", Some("payments"));
        deploy(store, "prod", "b", None);
        deploy(store, "dev", "a", Some("payments"));
        let hour = 3_600_000;
        let mut sink = store.record_sink().unwrap();
        let batch = [
            record("r1", "prod", "a", 1, 10 * hour + 10),
            record("r2x", "prod", "a", 1, 10 * hour + 500_000),
            record("r3", "prod", "a", 1, 11 * hour + 5),
            record("r4", "prod", "b", 1, 11 * hour + 7),
            record("r5", "dev", "a", 1, 12 * hour),
        ];
        sink.write_batch(&batch).unwrap();
        // A batch written again (the meter retries) counts nothing twice.
        sink.write_batch(&batch[..2]).unwrap();

        let usage = store.usage("prod", 0).unwrap();
        assert_eq!(usage.len(), 2);
        assert_eq!((usage[0].function.as_str(), usage[0].invocations), ("a", 3));
        assert_eq!(usage[0].failures, 1);
        assert_eq!(usage[0].cost, PicoUsd(3_000));
        // Since the middle of hour 10: the partial hour comes from the records.
        let since = store.usage("prod", 10 * hour + 100).unwrap();
        assert_eq!(since[0].invocations, 2, "r2x and r3");
        assert_eq!(store.usage("prod", 11 * hour + 6).unwrap()[0].function, "b");

        let by_env = store.cost_by(CostDimension::Environment, None, 0).unwrap();
        let envs: Vec<(Option<&str>, u64)> = by_env
            .iter()
            .map(|r| (r.environment.as_deref(), r.invocations))
            .collect();
        assert_eq!(envs, [(Some("prod"), 4), (Some("dev"), 1)]);
        let by_owner = store.cost_by(CostDimension::Owner, None, 0).unwrap();
        let owners: Vec<(Option<&str>, u64)> = by_owner
            .iter()
            .map(|r| (r.owner.as_deref(), r.invocations))
            .collect();
        assert_eq!(owners, [(Some("payments"), 4), (Some(""), 1)]);
        let by_release = store
            .cost_by(CostDimension::Release, Some("prod"), 0)
            .unwrap();
        assert_eq!(by_release[0].release, Some(1));
        assert_eq!(by_release[0].function.as_deref(), Some("a"));
        assert_eq!(by_release.len(), 2);
    }
}

/// Conformance: environments.
pub mod environments {
    #![allow(missing_docs)]
    use super::*;

    fn env(name: &str, source: Option<&str>) -> EnvironmentRecord {
        EnvironmentRecord {
            name: name.into(),
            created_at_ms: 1_000,
            expires_at_ms: None,
            created_by: "t-test".into(),
            source: source.map(str::to_owned),
            rules: Default::default(),
        }
    }

    fn deploy(store: &dyn ControlStore, environment: &str, name: &str, memory_mib: u64) {
        let digest = Digest::of(name.as_bytes());
        store.put_artifact(&digest, name.as_bytes()).unwrap();
        let config = FunctionConfig {
            memory: ByteSize::mib(memory_mib),
            ..FunctionConfig::new(FunctionName::try_from(name).unwrap())
        };
        store
            .deploy(
                environment,
                &[NewRelease {
                    digest,
                    config,
                    vetting: None,
                    deployed_by: Some("t-dev".into()),
                    origin: None,
                }],
            )
            .unwrap();
    }

    fn secret() -> StoredSecret {
        StoredSecret {
            nonce: vec![1; 12],
            ciphertext: vec![2; 20],
        }
    }

    /// Conformance: a_copy_serves_the_same_releases_and_only_the_secrets_given.
    pub fn a_copy_serves_the_same_releases_and_only_the_secrets_given(store: &dyn ControlStore) {
        store.ensure_environment(&env("prod", None)).unwrap();
        deploy(store, "prod", "a", 128);
        deploy(store, "prod", "a", 256);
        deploy(store, "prod", "b", 128);
        store.put_secret("prod", "KEY", &secret()).unwrap();
        let copied = store
            .create_environment(&env("dev", Some("prod")), &[])
            .unwrap();
        assert_eq!(copied, Some(2));
        let prod = store.current_releases("prod").unwrap();
        let dev = store.current_releases("dev").unwrap();
        assert_eq!(dev.len(), 2);
        for (p, d) in prod.iter().zip(&dev) {
            assert_eq!(
                (p.number, &p.digest, &p.config),
                (d.number, &d.digest, &d.config)
            );
            assert_eq!(d.environment, "dev");
            assert_eq!(
                d.origin.as_deref(),
                Some(&*format!("copied from prod release {}", p.number))
            );
        }
        // Only the current release is copied, and the next deploy numbers after it.
        assert_eq!(store.releases("dev", "a").unwrap().len(), 1);
        deploy(store, "dev", "a", 512);
        assert_eq!(store.current_releases("dev").unwrap()[0].number, 3);
        assert_eq!(store.current_releases("prod").unwrap()[0].number, 2);
        assert!(store.secrets("dev").unwrap().is_empty());
        let with = store
            .create_environment(&env("qa", Some("prod")), &[("KEY".into(), secret())])
            .unwrap();
        assert_eq!(with, Some(2));
        assert_eq!(store.secrets("qa").unwrap().len(), 1);
        assert_eq!(
            store.create_environment(&env("dev", None), &[]).unwrap(),
            None,
            "a taken name is refused"
        );
    }

    /// Conformance: removal_takes_everything_and_a_new_environment_of_the_same_name_starts_empty.
    pub fn removal_takes_everything_and_a_new_environment_of_the_same_name_starts_empty(
        store: &dyn ControlStore,
    ) {
        store.ensure_environment(&env("prod", None)).unwrap();
        deploy(store, "prod", "a", 128);
        store
            .create_environment(&env("dev", Some("prod")), &[])
            .unwrap();
        store.put_secret("dev", "KEY", &secret()).unwrap();
        store
            .create_token(&TokenRecord {
                id: "t-dev".into(),
                hash: "h".into(),
                role: runway_access::Role::Deployer,
                environment: Some("dev".into()),
                label: "dev".into(),
                created_at_ms: 1,
                expires_at_ms: None,
                revoked_at_ms: None,
                created_by: "t-test".into(),
            })
            .unwrap();
        assert!(store.remove_environment("dev", 5_000).unwrap());
        assert!(!store.remove_environment("dev", 5_000).unwrap());
        assert!(store.current_releases("dev").unwrap().is_empty());
        assert!(store.secrets("dev").unwrap().is_empty());
        let token = store.token_by_hash("h").unwrap().unwrap();
        assert_eq!(token.revoked_at_ms, Some(5_000));
        assert_eq!(
            store.current_releases("prod").unwrap().len(),
            1,
            "the source is untouched"
        );
        store.create_environment(&env("dev", None), &[]).unwrap();
        assert!(store.current_releases("dev").unwrap().is_empty());
        let names: Vec<String> = store
            .environments()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["dev", "prod"]);
    }

    /// Conformance: registering_the_home_environment_keeps_its_functions_and_first_record.
    pub fn registering_the_home_environment_keeps_its_functions_and_first_record(
        store: &dyn ControlStore,
    ) {
        deploy(store, "prod", "a", 128);
        let first = store.ensure_environment(&env("prod", None)).unwrap();
        let mut later = env("prod", None);
        later.created_at_ms = 9_000;
        assert_eq!(store.ensure_environment(&later).unwrap(), first);
        assert_eq!(store.current_releases("prod").unwrap().len(), 1);
    }
}

/// Conformance: what nodes sharing the store rely on. On a backend that several nodes share,
/// the concurrent tests race real connections against each other.
pub mod cluster {
    #![allow(missing_docs)]
    use super::*;
    use crate::NodeRecord;

    fn deploy(store: &dyn ControlStore, name: &str, memory_mib: u64) -> u32 {
        let digest = Digest::of(name.as_bytes());
        store.put_artifact(&digest, name.as_bytes()).unwrap();
        store
            .deploy(
                "prod",
                &[NewRelease {
                    digest,
                    config: config(name, memory_mib),
                    vetting: None,
                    deployed_by: None,
                    origin: None,
                }],
            )
            .unwrap()[0]
            .release
            .number
    }

    /// Conformance: every change a node must apply bumps the generation; records do not.
    pub fn changes_that_nodes_apply_bump_the_generation_and_records_do_not(
        store: &dyn ControlStore,
    ) {
        let mut last = store.change_generation().unwrap();
        let mut bumped = |what: &str| {
            let now = store.change_generation().unwrap();
            assert!(
                now > last,
                "{what} did not bump the change generation ({now})"
            );
            last = now;
        };
        deploy(store, "a", 128);
        bumped("a deploy");
        deploy(store, "a", 256);
        assert!(store.switch_release("prod", "a", 1).unwrap());
        bumped("a rollback");
        let token = TokenRecord {
            id: "t-1".into(),
            hash: "ab".repeat(32),
            role: runway_access::Role::Deployer,
            environment: None,
            label: "ci".into(),
            created_at_ms: 1,
            expires_at_ms: None,
            revoked_at_ms: None,
            created_by: "bootstrap".into(),
        };
        store.create_token(&token).unwrap();
        bumped("a new token");
        assert!(store.revoke_token("t-1", 5).unwrap());
        bumped("a token revocation");
        let secret = StoredSecret {
            nonce: vec![1; 12],
            ciphertext: vec![2; 20],
        };
        store.put_secret("prod", "db", &secret).unwrap();
        bumped("a secret");
        let env = EnvironmentRecord {
            name: "staging".into(),
            created_at_ms: 1,
            expires_at_ms: None,
            created_by: "system".into(),
            source: Some("prod".into()),
            rules: Default::default(),
        };
        store.create_environment(&env, &[]).unwrap();
        bumped("an environment");
        assert!(store.remove_environment("staging", 2).unwrap());
        bumped("an environment's removal");
        assert!(store.retire("prod", "a", 3).unwrap());
        bumped("a retirement");

        let quiet = store.change_generation().unwrap();
        let mut sink = store.record_sink().unwrap();
        sink.write_batch(&[releases::record_at("r1", InvocationStatus::Ok, 1_000)])
            .unwrap();
        store.enqueue_job(&releases::job("j1", 1_000)).unwrap();
        assert_eq!(store.change_generation().unwrap(), quiet);
    }

    /// Conformance: nodes register, report, list by last report, and leave.
    pub fn nodes_heartbeat_and_drop_out(store: &dyn ControlStore) {
        let node = |id: &str, seen: i64| NodeRecord {
            id: id.into(),
            gateway: "127.0.0.1:8080".into(),
            admin: "127.0.0.1:8081".into(),
            version: "0.1.0".into(),
            started_at_ms: 1_000,
            last_seen_ms: seen,
            in_flight: 3,
            compiled_artifacts: 2,
            draining: false,
        };
        store.heartbeat(&node("n-a", 5_000)).unwrap();
        store.heartbeat(&node("n-b", 9_000)).unwrap();
        let mut again = node("n-a", 10_000);
        again.in_flight = 7;
        store.heartbeat(&again).unwrap();
        let live = store.nodes(8_000).unwrap();
        assert_eq!(live.len(), 2);
        assert_eq!(live[0], again);
        assert_eq!(store.nodes(9_500).unwrap().len(), 1);
        assert_eq!(store.leave(Some("n-a"), 0).unwrap(), 1);
        assert_eq!(store.leave(None, 9_001).unwrap(), 1);
        assert!(store.nodes(0).unwrap().is_empty());
        store.ping().unwrap();
    }

    /// Conformance: the first secrets key recorded is the cluster's; another is reported.
    pub fn the_first_secrets_key_fingerprint_is_kept(store: &dyn ControlStore) {
        assert_eq!(store.agree_secrets_key("aaaa").unwrap(), "aaaa");
        assert_eq!(store.agree_secrets_key("bbbb").unwrap(), "aaaa");
    }

    /// Conformance: claimers racing over one queue never take the same job twice.
    pub fn racing_claims_take_each_job_once(store: &dyn ControlStore) {
        for n in 0..60 {
            store
                .enqueue_job(&releases::job(&format!("j{n:02}"), 1_000))
                .unwrap();
        }
        let claimed: Vec<String> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let jobs = store.claim_jobs(None, 2_000, 60_000, 4).unwrap();
                            if jobs.is_empty() {
                                return mine;
                            }
                            mine.extend(jobs.into_iter().map(|job| job.id));
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        let unique: std::collections::BTreeSet<&String> = claimed.iter().collect();
        assert_eq!(claimed.len(), 60, "{claimed:?}");
        assert_eq!(unique.len(), 60);
    }

    /// Conformance: a lease extended by its claimer outlives the original; another claim's is
    /// not extended, and an extended job is not requeued as abandoned.
    pub fn extended_leases_keep_jobs_from_being_requeued(store: &dyn ControlStore) {
        store.enqueue_job(&releases::job("j1", 1_000)).unwrap();
        store.enqueue_job(&releases::job("j2", 1_000)).unwrap();
        let claimed = store.claim_jobs(None, 2_000, 10_000, 10).unwrap();
        assert_eq!(claimed.len(), 2);
        let attempts = claimed[0].attempts;
        let extended = store
            .extend_leases(
                &[("j1".into(), attempts), ("j2".into(), attempts + 1)],
                50_000,
            )
            .unwrap();
        assert_eq!(extended, 1, "only the claim that is current is extended");
        assert_eq!(store.requeue_abandoned(None, 20_000, 20_000).unwrap(), 1);
        assert_eq!(store.job("j1").unwrap().unwrap().state, JobState::Running);
        assert_eq!(store.job("j2").unwrap().unwrap().state, JobState::Pending);
    }

    /// Conformance: claimers racing for one schedule tick: exactly one wins, one job exists.
    pub fn racing_tick_claims_fire_once(store: &dyn ControlStore) {
        let wins: usize = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..6)
                .map(|n| {
                    scope.spawn(move || {
                        let mut run = releases::job(&format!("tick-{n}"), 1_000);
                        run.source = crate::JobSource::Schedule;
                        run.scheduled_for_ms = Some(60_000);
                        usize::from(store.claim_tick("prod/worker/0", 60_000, &run).unwrap())
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).sum()
        });
        assert_eq!(wins, 1);
        let jobs = store.jobs("prod", &[JobState::Pending], 100).unwrap();
        assert_eq!(jobs.len(), 1);
    }

    /// Conformance: deploys racing on one function end with one gap-free release order.
    pub fn racing_deploys_number_releases_without_gaps(store: &dyn ControlStore) {
        let numbers: Vec<u32> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..4u64)
                .map(|n| scope.spawn(move || deploy(store, "a", 128 + n * 64)))
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let mut sorted = numbers.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![1, 2, 3, 4], "{numbers:?}");
        let releases = store.releases("prod", "a").unwrap();
        assert_eq!(releases.len(), 4);
        let current = &store.current_releases("prod").unwrap()[0];
        assert_eq!(current.number, 4);
        assert_eq!(current.config, releases[0].config);
    }
}
