//! Environments: the registry, creating one from another (releases shared by digest, secrets
//! only when given), and removing one with everything in it.

use postgres::{GenericClient, Row, Transaction};
use runway_store::{
    EnvironmentRecord, EnvironmentRules, EnvironmentStore, StoreError, StoredSecret,
};

use crate::{PostgresStore, db};

/// Tables whose rows belong to one environment and leave with it. Invocation records, the
/// policy audit and the control-plane audit stay: they are the bill and the trail.
const OWNED_TABLES: [&str; 7] = [
    "functions",
    "releases",
    "secrets",
    "api_keys",
    "jobs",
    "schedule_ticks",
    "logs",
];

const ENV_COLUMNS: &str = "name, created_ms, expires_ms, created_by, source, rules";

fn record_from_row(row: &Row) -> Result<EnvironmentRecord, StoreError> {
    let rules: EnvironmentRules = serde_json::from_str(row.get(5))
        .map_err(|e| StoreError::Corrupt(format!("environment rules: {e}")))?;
    Ok(EnvironmentRecord {
        name: row.get(0),
        created_at_ms: row.get(1),
        expires_at_ms: row.get(2),
        created_by: row.get(3),
        source: row.get(4),
        rules,
    })
}

fn environment(
    client: &mut impl GenericClient,
    name: &str,
) -> Result<Option<EnvironmentRecord>, StoreError> {
    client
        .query_opt(
            &format!("SELECT {ENV_COLUMNS} FROM environments WHERE name = $1"),
            &[&name],
        )
        .map_err(db("reading an environment"))?
        .as_ref()
        .map(record_from_row)
        .transpose()
}

/// Deletes every row `name` owns, its budgets and their alerts, and revokes its tokens.
fn clear_owned(tx: &mut Transaction<'_>, name: &str, now_ms: i64) -> Result<(), StoreError> {
    for table in OWNED_TABLES {
        tx.execute(
            &format!("DELETE FROM {table} WHERE environment = $1"),
            &[&name],
        )
        .map_err(db("removing an environment's rows"))?;
    }
    let env_budget = format!("env:{name}");
    tx.execute(
        "DELETE FROM budget_alerts WHERE budget IN
           (SELECT id FROM budgets WHERE environment = $1 OR id = $2)",
        &[&name, &env_budget],
    )
    .map_err(db("removing an environment's budget alerts"))?;
    tx.execute(
        "DELETE FROM budgets WHERE environment = $1 OR id = $2",
        &[&name, &env_budget],
    )
    .map_err(db("removing an environment's budgets"))?;
    tx.execute(
        "UPDATE tokens SET revoked_ms = $2 WHERE environment = $1 AND revoked_ms IS NULL",
        &[&name, &now_ms],
    )
    .map_err(db("revoking an environment's tokens"))?;
    Ok(())
}

impl EnvironmentStore for PostgresStore {
    fn create_environment(
        &self,
        env: &EnvironmentRecord,
        secrets: &[(String, StoredSecret)],
    ) -> Result<Option<usize>, StoreError> {
        let rules = serde_json::to_string(&env.rules).expect("rules serialise");
        self.change("creating an environment", |tx| {
            let inserted = tx
                .execute(
                    "INSERT INTO environments (name, created_ms, expires_ms, created_by, source,
                       rules)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
                    &[
                        &env.name,
                        &env.created_at_ms,
                        &env.expires_at_ms,
                        &env.created_by,
                        &env.source,
                        &rules,
                    ],
                )
                .map_err(db("creating an environment"))?;
            if inserted == 0 {
                return Ok(None);
            }
            // Rows a removed environment of the same name left behind (a write that raced
            // its removal) must not come back to life, nor its tokens.
            clear_owned(tx, &env.name, env.created_at_ms)?;
            let mut copied = 0;
            if let Some(source) = &env.source {
                let origin = format!("copied from {source}");
                tx.execute(
                    "INSERT INTO releases (environment, function, number, digest, config,
                       config_hash, owner, created_ms, vetting, deployed_by, origin)
                     SELECT $1, r.function, r.number, r.digest, r.config, r.config_hash, r.owner,
                       $3, r.vetting, $4, $5::TEXT || ' release ' || r.number
                     FROM functions f JOIN releases r
                       ON r.environment = f.environment AND r.function = f.name
                         AND r.number = f.release
                     WHERE f.environment = $2",
                    &[
                        &env.name,
                        source,
                        &env.created_at_ms,
                        &env.created_by,
                        &origin,
                    ],
                )
                .map_err(db("copying releases"))?;
                copied = tx
                    .execute(
                        "INSERT INTO functions (environment, name, release, updated_ms, retired_ms)
                         SELECT $1, name, release, $3, retired_ms FROM functions
                         WHERE environment = $2",
                        &[&env.name, source, &env.created_at_ms],
                    )
                    .map_err(db("copying functions"))? as usize;
            }
            for (name, secret) in secrets {
                tx.execute(
                    "INSERT INTO secrets (environment, name, nonce, ciphertext, updated_ms)
                     VALUES ($1, $2, $3, $4, $5)",
                    &[
                        &env.name,
                        name,
                        &secret.nonce,
                        &secret.ciphertext,
                        &env.created_at_ms,
                    ],
                )
                .map_err(db("copying secrets"))?;
            }
            Ok(Some(copied))
        })
    }

    fn ensure_environment(&self, env: &EnvironmentRecord) -> Result<EnvironmentRecord, StoreError> {
        if let Some(found) = self.run(|client| environment(client, &env.name))? {
            return Ok(found);
        }
        // Registering the home environment keeps what it already holds: no source, no copy.
        let rules = serde_json::to_string(&env.rules).expect("rules serialise");
        self.change("registering an environment", |tx| {
            tx.execute(
                "INSERT INTO environments (name, created_ms, expires_ms, created_by, source, rules)
                 VALUES ($1, $2, $3, $4, NULL, $5) ON CONFLICT (name) DO NOTHING",
                &[
                    &env.name,
                    &env.created_at_ms,
                    &env.expires_at_ms,
                    &env.created_by,
                    &rules,
                ],
            )
            .map_err(db("registering an environment"))?;
            environment(tx, &env.name)?
                .ok_or_else(|| StoreError::Corrupt(format!("environment {} vanished", env.name)))
        })
    }

    fn environments(&self) -> Result<Vec<EnvironmentRecord>, StoreError> {
        self.run(|client| {
            client
                .query(
                    &format!("SELECT {ENV_COLUMNS} FROM environments ORDER BY name"),
                    &[],
                )
                .map_err(db("listing environments"))?
                .iter()
                .map(record_from_row)
                .collect()
        })
    }

    fn set_environment_rules(
        &self,
        name: &str,
        rules: &EnvironmentRules,
    ) -> Result<bool, StoreError> {
        let rules = serde_json::to_string(rules).expect("rules serialise");
        let action = "setting an environment's rules";
        self.change(action, |tx| {
            tx.execute(
                "UPDATE environments SET rules = $2 WHERE name = $1",
                &[&name, &rules],
            )
            .map(|changed| changed > 0)
            .map_err(db(action))
        })
    }

    fn remove_environment(&self, name: &str, now_ms: i64) -> Result<bool, StoreError> {
        self.change("removing an environment", |tx| {
            let removed = tx
                .execute("DELETE FROM environments WHERE name = $1", &[&name])
                .map_err(db("removing an environment"))?;
            if removed == 0 {
                return Ok(false);
            }
            clear_owned(tx, name, now_ms)?;
            Ok(true)
        })
    }
}
