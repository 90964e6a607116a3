//! Function API keys: minting, storing and revoking them, and keeping the gateway's key table
//! of their environment in step with the store.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use runway_access::Rate;
use runway_store::{ApiKeyRecord, ControlStore, StoreError};

use crate::cluster::ClusterView;
use crate::environments::Environment;
use crate::invocation::ApiKeyTable;

/// Lifetime of a key created without one.
pub(crate) const DEFAULT_TTL: &str = "90d";

/// What is asked for when a key is created.
pub(crate) struct NewApiKey {
    /// The function it may invoke.
    pub(crate) function: String,
    /// Its lifetime (`90d`); default [`DEFAULT_TTL`].
    pub(crate) ttl: Option<String>,
    /// Requests per period it may make (`100/s`); none is unlimited.
    pub(crate) rate: Option<String>,
    /// Who holds it.
    pub(crate) label: Option<String>,
}

/// A key just created: its record and its secret, which is never shown again.
pub(crate) struct CreatedApiKey {
    pub(crate) record: ApiKeyRecord,
    pub(crate) secret: String,
}

/// Why a key was not created or revoked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiKeyError {
    /// The lifetime does not parse or is out of range.
    #[error("{0}")]
    InvalidTtl(String),
    /// The rate does not parse.
    #[error("{0}")]
    InvalidRate(String),
    /// No unrevoked key of that id in the environment.
    #[error("no unrevoked API key `{0}` in this environment; `runway key ls` lists them")]
    NoSuchKey(String),
    /// The environment was removed while the change waited.
    #[error("environment `{0}` does not exist; `runway env ls` lists them")]
    NoSuchEnvironment(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The API-key service of a node.
pub(crate) struct ApiKeys<'a> {
    store: &'a dyn ControlStore,
    /// Held across a change and the reload of the key table, so two changes cannot swap in
    /// tables out of order.
    access_lock: &'a Mutex<()>,
    cluster: &'a ClusterView,
}

impl<'a> ApiKeys<'a> {
    /// The service over a node's store, access lock and place in the cluster.
    pub(crate) fn new(
        store: &'a dyn ControlStore,
        access_lock: &'a Mutex<()>,
        cluster: &'a ClusterView,
    ) -> ApiKeys<'a> {
        ApiKeys {
            store,
            access_lock,
            cluster,
        }
    }

    /// Creates a key for `request.function` of `env` on behalf of `caller`, stores it (its
    /// hash, never its secret) and puts it in the gateway's table.
    pub(crate) fn create(
        &self,
        env: &Environment,
        caller: &str,
        request: NewApiKey,
        now_ms: i64,
    ) -> Result<CreatedApiKey, ApiKeyError> {
        let lifetime = lifetime(request.ttl.as_deref())?;
        let rate = request
            .rate
            .as_deref()
            .map(str::parse::<Rate>)
            .transpose()
            .map_err(ApiKeyError::InvalidRate)?;
        let minted = runway_access::mint_api_key();
        let record = ApiKeyRecord {
            id: minted.id,
            hash: minted.hash.0,
            environment: env.name.clone(),
            function: request.function,
            label: request.label.unwrap_or_default(),
            rate,
            created_at_ms: now_ms,
            expires_at_ms: Some(now_ms.saturating_add(lifetime.as_millis() as i64)),
            revoked_at_ms: None,
            created_by: caller.to_owned(),
        };
        let _changing = self.access_lock.lock().unwrap_or_else(|e| e.into_inner());
        present(env)?;
        self.store.create_api_key(&record)?;
        self.reload(env)?;
        Ok(CreatedApiKey {
            record,
            secret: minted.secret,
        })
    }

    /// Revokes key `id` of `env`; the gateway refuses it from the next request.
    pub(crate) fn revoke(
        &self,
        env: &Environment,
        id: &str,
        now_ms: i64,
    ) -> Result<(), ApiKeyError> {
        let _changing = self.access_lock.lock().unwrap_or_else(|e| e.into_inner());
        present(env)?;
        let exists = self.store.api_keys(&env.name)?.iter().any(|k| k.id == id);
        if !(exists && self.store.revoke_api_key(id, now_ms)?) {
            return Err(ApiKeyError::NoSuchKey(id.to_owned()));
        }
        self.reload(env)
    }

    /// Rebuilds the environment's key table from the store, keeping rate buckets.
    fn reload(&self, env: &Environment) -> Result<(), ApiKeyError> {
        let previous = env.api_keys.load_full();
        let table = ApiKeyTable::load(self.store, &env.name, &previous, self.cluster)?;
        env.api_keys.store(Arc::new(table));
        Ok(())
    }
}

fn lifetime(text: Option<&str>) -> Result<Duration, ApiKeyError> {
    runway_access::parse_ttl(text.unwrap_or(DEFAULT_TTL)).map_err(ApiKeyError::InvalidTtl)
}

fn present(env: &Environment) -> Result<(), ApiKeyError> {
    if env.removed.load(std::sync::atomic::Ordering::Acquire) {
        return Err(ApiKeyError::NoSuchEnvironment(env.name.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use runway_store::AccessStore;
    use runway_store_sqlite::SqliteStore;

    use super::*;

    use crate::services::test_environment as env;

    fn request(ttl: Option<&str>, rate: Option<&str>) -> NewApiKey {
        NewApiKey {
            function: "hello".into(),
            ttl: ttl.map(str::to_owned),
            rate: rate.map(str::to_owned),
            label: Some("web".into()),
        }
    }

    #[test]
    fn a_created_key_is_stored_by_hash_and_served_at_once_then_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let (lock, cluster) = (Mutex::new(()), ClusterView::new());
        let keys = ApiKeys::new(&store, &lock, &cluster);
        let prod = env("prod");
        let created = keys
            .create(&prod, "t-dev", request(Some("1d"), Some("10/min")), 1_000)
            .unwrap();
        assert!(created.secret.starts_with("rwk_"));
        assert_eq!(created.record.expires_at_ms, Some(1_000 + 86_400_000));
        let stored = store.api_keys("prod").unwrap();
        assert_eq!(stored, vec![created.record.clone()]);
        assert!(!stored[0].hash.contains(&created.secret));
        assert!(prod.api_keys.load().contains(&created.record.hash));

        keys.revoke(&prod, &created.record.id, 2_000).unwrap();
        assert!(!prod.api_keys.load().is_active(&created.record.hash));
        assert!(matches!(
            keys.revoke(&prod, &created.record.id, 3_000),
            Err(ApiKeyError::NoSuchKey(_))
        ));
    }

    #[test]
    fn bad_input_and_a_removed_environment_store_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let (lock, cluster) = (Mutex::new(()), ClusterView::new());
        let keys = ApiKeys::new(&store, &lock, &cluster);
        let prod = env("prod");
        let bad_rate = keys.create(&prod, "t-dev", request(None, Some("10 per minute")), 0);
        assert!(
            matches!(&bad_rate, Err(ApiKeyError::InvalidRate(m)) if m.contains("10 per minute")),
            "{:?}",
            bad_rate.err()
        );
        let bad_ttl = keys.create(&prod, "t-dev", request(Some("forever"), None), 0);
        assert!(matches!(bad_ttl, Err(ApiKeyError::InvalidTtl(_))));
        prod.removed
            .store(true, std::sync::atomic::Ordering::Release);
        let gone = keys.create(&prod, "t-dev", request(None, None), 0);
        assert!(matches!(gone, Err(ApiKeyError::NoSuchEnvironment(_))));
        assert!(store.api_keys("prod").unwrap().is_empty());
    }
}
