//! Tokens, API keys, secrets, the audit logs and the job queue.

use postgres::Row;
use runway_store::{
    AccessStore, ApiKeyRecord, AuditRecord, AuditStore, ControlAuditRecord, Job, JobRequest,
    JobResult, JobSource, JobState, JobStore, JobUpdate, SecretInfo, SecretStore, StoreError,
    StoredSecret, TokenRecord,
};

use crate::{PostgresStore, db, now_ms, without_nul};

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("stored {what} `{value}` is not valid"))
}

const TOKEN_COLUMNS: &str =
    "id, hash, role, environment, label, created_ms, expires_ms, revoked_ms, created_by";

fn token_row(row: &Row) -> Result<TokenRecord, StoreError> {
    let role: &str = row.get(2);
    Ok(TokenRecord {
        id: row.get(0),
        hash: row.get(1),
        role: role.parse().map_err(|_| corrupt("role", role))?,
        environment: row.get(3),
        label: row.get(4),
        created_at_ms: row.get(5),
        expires_at_ms: row.get(6),
        revoked_at_ms: row.get(7),
        created_by: row.get(8),
    })
}

const KEY_COLUMNS: &str =
    "id, hash, environment, function, label, rate, created_ms, expires_ms, revoked_ms, created_by";

fn key_row(row: &Row) -> Result<ApiKeyRecord, StoreError> {
    let rate: Option<&str> = row.get(5);
    Ok(ApiKeyRecord {
        id: row.get(0),
        hash: row.get(1),
        environment: row.get(2),
        function: row.get(3),
        label: row.get(4),
        rate: rate
            .map(|r| r.parse().map_err(|_| corrupt("rate", r)))
            .transpose()?,
        created_at_ms: row.get(6),
        expires_at_ms: row.get(7),
        revoked_at_ms: row.get(8),
        created_by: row.get(9),
    })
}

impl AccessStore for PostgresStore {
    fn create_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let action = "creating a token";
        self.change(action, |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO tokens ({TOKEN_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                ),
                &[
                    &token.id,
                    &token.hash,
                    &token.role.as_str(),
                    &token.environment,
                    &token.label,
                    &token.created_at_ms,
                    &token.expires_at_ms,
                    &token.revoked_at_ms,
                    &token.created_by,
                ],
            )
            .map(drop)
            .map_err(db(action))
        })
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.run(|client| {
            client
                .query_opt(
                    &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"),
                    &[&hash],
                )
                .map_err(db("looking up a token"))?
                .as_ref()
                .map(token_row)
                .transpose()
        })
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.run(|client| {
            client
                .query(
                    &format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_ms, id"),
                    &[],
                )
                .map_err(db("listing tokens"))?
                .iter()
                .map(token_row)
                .collect()
        })
    }

    fn revoke_token(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let action = "revoking a token";
        self.change(action, |tx| {
            tx.execute(
                "UPDATE tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL",
                &[&id, &at_ms],
            )
            .map(|changed| changed > 0)
            .map_err(db(action))
        })
    }

    fn create_api_key(&self, key: &ApiKeyRecord) -> Result<(), StoreError> {
        let action = "creating an API key";
        self.change(action, |tx| {
            tx.execute(
                &format!(
                    "INSERT INTO api_keys ({KEY_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ),
                &[
                    &key.id,
                    &key.hash,
                    &key.environment,
                    &key.function,
                    &key.label,
                    &key.rate.map(|r| r.to_string()),
                    &key.created_at_ms,
                    &key.expires_at_ms,
                    &key.revoked_at_ms,
                    &key.created_by,
                ],
            )
            .map(drop)
            .map_err(db(action))
        })
    }

    fn api_keys(&self, environment: &str) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.run(|client| {
            client
                .query(
                    &format!(
                        "SELECT {KEY_COLUMNS} FROM api_keys WHERE environment = $1
                         ORDER BY created_ms, id"
                    ),
                    &[&environment],
                )
                .map_err(db("listing API keys"))?
                .iter()
                .map(key_row)
                .collect()
        })
    }

    fn revoke_api_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let action = "revoking an API key";
        self.change(action, |tx| {
            tx.execute(
                "UPDATE api_keys SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL",
                &[&id, &at_ms],
            )
            .map(|changed| changed > 0)
            .map_err(db(action))
        })
    }
}

impl SecretStore for PostgresStore {
    fn put_secret(
        &self,
        environment: &str,
        name: &str,
        secret: &StoredSecret,
    ) -> Result<(), StoreError> {
        let action = "storing a secret";
        self.change(action, |tx| {
            tx.execute(
                "INSERT INTO secrets (environment, name, nonce, ciphertext, updated_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (environment, name) DO UPDATE SET nonce = excluded.nonce,
                   ciphertext = excluded.ciphertext, updated_ms = excluded.updated_ms",
                &[
                    &environment,
                    &name,
                    &secret.nonce,
                    &secret.ciphertext,
                    &now_ms(),
                ],
            )
            .map(drop)
            .map_err(db(action))
        })
    }

    fn secret(&self, environment: &str, name: &str) -> Result<Option<StoredSecret>, StoreError> {
        self.run(|client| {
            client
                .query_opt(
                    "SELECT nonce, ciphertext FROM secrets WHERE environment = $1 AND name = $2",
                    &[&environment, &name],
                )
                .map(|row| {
                    row.map(|row| StoredSecret {
                        nonce: row.get(0),
                        ciphertext: row.get(1),
                    })
                })
                .map_err(db("reading a secret"))
        })
    }

    fn secrets(&self, environment: &str) -> Result<Vec<SecretInfo>, StoreError> {
        self.run(|client| {
            client
                .query(
                    "SELECT name, updated_ms FROM secrets WHERE environment = $1 ORDER BY name",
                    &[&environment],
                )
                .map(|rows| {
                    rows.iter()
                        .map(|row| SecretInfo {
                            name: row.get(0),
                            updated_at_ms: row.get(1),
                        })
                        .collect()
                })
                .map_err(db("listing secrets"))
        })
    }

    fn has_sealed_secrets(&self) -> Result<bool, StoreError> {
        self.run(|client| {
            client
                .query_one("SELECT EXISTS (SELECT 1 FROM secrets)", &[])
                .map(|row| row.get(0))
                .map_err(db("looking for sealed secrets"))
        })
    }
}

const JOB_COLUMNS: &str = "id, environment, function, source, request, state, attempts, \
    max_attempts, next_run_ms, last_error, result, scheduled_for_ms, created_ms, updated_ms";

fn job_row(row: &Row) -> Result<Job, StoreError> {
    let source: &str = row.get(3);
    let request: &str = row.get(4);
    let state: &str = row.get(5);
    let result: Option<&str> = row.get(10);
    Ok(Job {
        id: row.get(0),
        environment: row.get(1),
        function: row.get(2),
        source: match source {
            "queue" => JobSource::Queue,
            "schedule" => JobSource::Schedule,
            _ => return Err(corrupt("job source", source)),
        },
        request: serde_json::from_str::<JobRequest>(request)
            .map_err(|_| corrupt("job request", request))?,
        state: JobState::parse(state).ok_or_else(|| corrupt("job state", state))?,
        attempts: row.get::<_, i64>(6) as u32,
        max_attempts: row.get::<_, i64>(7) as u32,
        next_run_at_ms: row.get(8),
        last_error: row.get(9),
        result: result
            .map(|r| serde_json::from_str::<JobResult>(r).map_err(|_| corrupt("job result", r)))
            .transpose()?,
        scheduled_for_ms: row.get(11),
        created_at_ms: row.get(12),
        updated_at_ms: row.get(13),
    })
}

fn job_rows(rows: &[Row]) -> Result<Vec<Job>, StoreError> {
    rows.iter().map(job_row).collect()
}

fn result_json(result: Option<&JobResult>) -> Option<String> {
    result.map(|r| serde_json::to_string(r).expect("results serialise"))
}

fn insert_job(client: &mut impl postgres::GenericClient, job: &Job) -> Result<(), postgres::Error> {
    let source = match job.source {
        JobSource::Queue => "queue",
        JobSource::Schedule => "schedule",
    };
    client
        .execute(
            &format!(
                "INSERT INTO jobs ({JOB_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
            ),
            &[
                &job.id,
                &job.environment,
                &job.function,
                &source,
                &serde_json::to_string(&job.request).expect("requests serialise"),
                &job.state.as_str(),
                &i64::from(job.attempts),
                &i64::from(job.max_attempts),
                &job.next_run_at_ms,
                &job.last_error,
                &result_json(job.result.as_ref()),
                &job.scheduled_for_ms,
                &job.created_at_ms,
                &job.updated_at_ms,
            ],
        )
        .map(drop)
}

impl JobStore for PostgresStore {
    fn enqueue_job(&self, job: &Job) -> Result<(), StoreError> {
        // Durable when this returns: the commit waits for the write-ahead log to be flushed
        // whatever the server's default, as SQLite's full sync does for the same call.
        let action = "enqueueing a job";
        self.transaction(action, |tx| {
            tx.batch_execute("SET LOCAL synchronous_commit = on")
                .map_err(db(action))?;
            insert_job(tx, job).map_err(db(action))
        })
    }

    fn claim_jobs(
        &self,
        environment: Option<&str>,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        self.run(|client| {
            // SKIP LOCKED: nodes claiming at once take different jobs instead of waiting for
            // each other's claims to commit.
            let rows = client
                .query(
                    &format!(
                        "UPDATE jobs SET state = 'running', attempts = attempts + 1,
                           lease_until_ms = $3, updated_ms = $2
                         WHERE id IN (
                           SELECT id FROM jobs
                           WHERE ($1::TEXT IS NULL OR environment = $1::TEXT)
                             AND state = 'pending' AND next_run_ms <= $2
                           ORDER BY next_run_ms LIMIT $4 FOR UPDATE SKIP LOCKED)
                         RETURNING {JOB_COLUMNS}"
                    ),
                    &[&environment, &now_ms, &lease_until_ms, &i64::from(limit)],
                )
                .map_err(db("claiming due jobs"))?;
            let mut jobs = job_rows(&rows)?;
            // RETURNING has no order; hand them out in the order they became due.
            jobs.sort_by(|a, b| (a.next_run_at_ms, &a.id).cmp(&(b.next_run_at_ms, &b.id)));
            Ok(jobs)
        })
    }

    fn finish_job(
        &self,
        id: &str,
        claimed_attempts: u32,
        update: &JobUpdate,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.run(|client| {
            // Fenced on the claim: a worker whose lease ran out and whose job was claimed
            // again cannot overwrite the newer attempt.
            client
                .execute(
                    "UPDATE jobs SET state = $3, attempts = $4, next_run_ms = $5, last_error = $6,
                       result = COALESCE($7::TEXT, result), lease_until_ms = NULL, updated_ms = $8
                     WHERE id = $1 AND state = 'running' AND attempts = $2",
                    &[
                        &id,
                        &i64::from(claimed_attempts),
                        &update.state.as_str(),
                        &i64::from(update.attempts),
                        &update.next_run_at_ms,
                        &update.last_error.clone().map(without_nul),
                        &result_json(update.result.as_ref()),
                        &now_ms,
                    ],
                )
                .map(|changed| changed > 0)
                .map_err(db("recording a job attempt"))
        })
    }

    fn requeue_abandoned(
        &self,
        environment: Option<&str>,
        lease_before_ms: i64,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let action = "requeueing abandoned jobs";
        self.transaction(action, |tx| {
            // A job whose last allowed attempt was cut short may be what stops the node: it
            // goes to the dead-letter list rather than round again.
            let dead = tx
                .execute(
                    "UPDATE jobs SET state = 'dead', lease_until_ms = NULL, updated_ms = $3,
                       last_error = 'the node stopped during attempt ' || attempts || ' of '
                         || max_attempts || '; no attempts left'
                     WHERE ($1::TEXT IS NULL OR environment = $1::TEXT) AND state = 'running'
                       AND lease_until_ms <= $2 AND attempts >= max_attempts",
                    &[&environment, &lease_before_ms, &now_ms],
                )
                .map_err(db(action))?;
            let requeued = tx
                .execute(
                    "UPDATE jobs SET state = 'pending', next_run_ms = $3, lease_until_ms = NULL,
                       updated_ms = $3,
                       last_error = 'the node stopped during attempt ' || attempts
                         || '; it runs again'
                     WHERE ($1::TEXT IS NULL OR environment = $1::TEXT) AND state = 'running'
                       AND lease_until_ms <= $2",
                    &[&environment, &lease_before_ms, &now_ms],
                )
                .map_err(db(action))?;
            Ok((dead + requeued) as usize)
        })
    }

    fn extend_leases(
        &self,
        jobs: &[(String, u32)],
        lease_until_ms: i64,
    ) -> Result<u64, StoreError> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = jobs.iter().map(|(id, _)| id.as_str()).collect();
        let attempts: Vec<i64> = jobs.iter().map(|(_, n)| i64::from(*n)).collect();
        self.run(|client| {
            // Fenced on the claim, like finish_job: a job claimed again since is not ours.
            client
                .execute(
                    "UPDATE jobs SET lease_until_ms = $3
                     FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS mine(id, attempts)
                     WHERE jobs.id = mine.id AND jobs.attempts = mine.attempts
                       AND jobs.state = 'running'",
                    &[&ids, &attempts, &lease_until_ms],
                )
                .map_err(db("extending job leases"))
        })
    }

    fn job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        self.run(|client| {
            client
                .query_opt(
                    &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"),
                    &[&id],
                )
                .map_err(db("reading a job"))?
                .as_ref()
                .map(job_row)
                .transpose()
        })
    }

    fn jobs(
        &self,
        environment: &str,
        states: &[JobState],
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        self.run(|client| {
            let rows = client
                .query(
                    &format!(
                        "SELECT {JOB_COLUMNS} FROM jobs
                         WHERE environment = $1 AND state = ANY($2::TEXT[])
                         ORDER BY created_ms DESC, id LIMIT $3"
                    ),
                    &[&environment, &names, &i64::from(limit)],
                )
                .map_err(db("listing jobs"))?;
            job_rows(&rows)
        })
    }

    fn retry_job(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        self.run(|client| {
            client
                .execute(
                    "UPDATE jobs SET state = 'pending', attempts = 0, next_run_ms = $2,
                       updated_ms = $2
                     WHERE id = $1 AND state = 'dead'",
                    &[&id, &now_ms],
                )
                .map(|changed| changed > 0)
                .map_err(db("retrying a job"))
        })
    }

    fn last_tick(
        &self,
        environment: &str,
        function: &str,
        schedule: &str,
    ) -> Result<Option<i64>, StoreError> {
        self.run(|client| {
            client
                .query_opt(
                    "SELECT last_tick_ms FROM schedule_ticks
                     WHERE environment = $1 AND function = $2 AND schedule = $3",
                    &[&environment, &function, &schedule],
                )
                .map(|row| row.map(|row| row.get(0)))
                .map_err(db("reading a schedule's last tick"))
        })
    }

    fn claim_tick(&self, schedule: &str, tick_ms: i64, job: &Job) -> Result<bool, StoreError> {
        let action = "claiming a schedule tick";
        self.transaction(action, |tx| {
            // Nodes racing for one tick queue on the row's key; after the first commits, the
            // others' condition (an earlier tick) is false and they change nothing.
            let claimed = tx
                .execute(
                    "INSERT INTO schedule_ticks (environment, function, schedule, last_tick_ms)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (environment, function, schedule)
                     DO UPDATE SET last_tick_ms = excluded.last_tick_ms
                     WHERE schedule_ticks.last_tick_ms < excluded.last_tick_ms",
                    &[&job.environment, &job.function, &schedule, &tick_ms],
                )
                .map_err(db(action))?;
            if claimed == 0 {
                return Ok(false);
            }
            insert_job(tx, job).map_err(db("enqueueing a scheduled run"))?;
            Ok(true)
        })
    }
}

impl AuditStore for PostgresStore {
    fn append_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let action = "writing audit records";
        // Guest-supplied text (a key, a table name) may hold NUL, which PostgreSQL refuses.
        let column = |f: fn(&AuditRecord) -> &str| -> Vec<String> {
            records
                .iter()
                .map(|r| without_nul(f(r).to_owned()))
                .collect()
        };
        let at: Vec<i64> = records.iter().map(|r| r.at_ms).collect();
        let release: Vec<i64> = records.iter().map(|r| r.release as i64).collect();
        let environment = column(|r| &r.environment);
        let function = column(|r| &r.function);
        let capability = column(|r| &r.capability);
        let operation = column(|r| &r.operation);
        let target = column(|r| &r.target);
        let decision = column(|r| &r.decision);
        self.run(|client| {
            // One statement keeps the batch's order in its ids (WITH ORDINALITY).
            client
                .execute(
                    "INSERT INTO audit (at_ms, environment, function, release, capability,
                       operation, target, decision)
                     SELECT at_ms, environment, function, release, capability, operation,
                       target, decision
                     FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[],
                                 $6::TEXT[], $7::TEXT[], $8::TEXT[])
                       WITH ORDINALITY AS b(at_ms, environment, function, release, capability,
                                           operation, target, decision, n)
                     ORDER BY n",
                    &[
                        &at,
                        &environment,
                        &function,
                        &release,
                        &capability,
                        &operation,
                        &target,
                        &decision,
                    ],
                )
                .map(drop)
                .map_err(db(action))
        })
    }

    fn audit(
        &self,
        environment: &str,
        function: Option<&str>,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.run(|client| {
            client
                .query(
                    "SELECT id, at_ms, environment, function, release, capability, operation,
                       target, decision
                     FROM audit
                     WHERE environment = $1 AND ($2::TEXT IS NULL OR function = $2::TEXT)
                       AND id > $3
                     ORDER BY id LIMIT $4",
                    &[&environment, &function, &after_id, &i64::from(limit)],
                )
                .map(|rows| {
                    rows.iter()
                        .map(|row| AuditRecord {
                            id: row.get(0),
                            at_ms: row.get(1),
                            environment: row.get(2),
                            function: row.get(3),
                            release: row.get::<_, i64>(4) as u64,
                            capability: row.get(5),
                            operation: row.get(6),
                            target: row.get(7),
                            decision: row.get(8),
                        })
                        .collect()
                })
                .map_err(db("reading the audit log"))
        })
    }

    fn append_control_audit(&self, record: &ControlAuditRecord) -> Result<i64, StoreError> {
        self.run(|client| {
            client
                .query_one(
                    "INSERT INTO control_audit (at_ms, environment, actor, action, target,
                       status, outcome, detail)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                    &[
                        &record.at_ms,
                        &record.environment,
                        &record.actor,
                        &record.action,
                        &without_nul(record.target.clone()),
                        &i64::from(record.status),
                        &record.outcome,
                        &without_nul(record.detail.clone()),
                    ],
                )
                .map(|row| row.get(0))
                .map_err(db("writing the control-plane audit log"))
        })
    }

    fn control_audit(
        &self,
        environment: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<ControlAuditRecord>, StoreError> {
        self.run(|client| {
            client
                .query(
                    "SELECT id, at_ms, environment, actor, action, target, status, outcome, detail
                     FROM control_audit WHERE environment = $1 AND id > $2 ORDER BY id LIMIT $3",
                    &[&environment, &after_id, &i64::from(limit)],
                )
                .map(|rows| {
                    rows.iter()
                        .map(|row| ControlAuditRecord {
                            id: row.get(0),
                            at_ms: row.get(1),
                            environment: row.get(2),
                            actor: row.get(3),
                            action: row.get(4),
                            target: row.get(5),
                            status: row.get::<_, i64>(6) as u16,
                            outcome: row.get(7),
                            detail: row.get(8),
                        })
                        .collect()
                })
                .map_err(db("reading the control-plane audit log"))
        })
    }
}
