//! The node's host capabilities: each environment's SQL database and key-value store, the
//! secret vault, outbound networking, and the audit log every policy decision writes to.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use runway_cap_config::{FunctionConfigAccess, SecretSource, Vault};
use runway_cap_kv::KvStore;
use runway_cap_outbound::{OutboundNetwork, Resolver};
use runway_cap_sql::SqlDatabase;
use runway_policy::{AuditEvent, AuditSink, Caller, Guard};
use runway_runtime::Capabilities;
use runway_store::{AuditRecord, ControlStore, Release, StoredSecret};

use crate::metrics::Metrics;

/// Why the capabilities could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    /// The secret key file is unusable.
    #[error(transparent)]
    Vault(#[from] runway_cap_config::VaultError),
    /// An environment's SQL database could not be opened.
    #[error(transparent)]
    Sql(#[from] runway_cap_sql::DatabaseError),
    /// An environment's key-value store could not be opened.
    #[error(transparent)]
    Kv(#[from] runway_cap_kv::OpenError),
    /// An outbound resolve override is malformed.
    #[error(transparent)]
    Resolve(#[from] runway_cap_outbound::OverrideError),
    /// The extra trusted certificates for outbound https are unusable.
    #[error(transparent)]
    CaFile(#[from] runway_cap_outbound::CaFileError),
}

/// Everything the node gives functions beyond HTTP.
pub(crate) struct PlatformCapabilities {
    envs_dir: PathBuf,
    sql: Mutex<HashMap<String, SqlDatabase>>,
    kv: Mutex<HashMap<String, KvStore>>,
    pub(crate) vault: Arc<Vault>,
    secrets: Arc<StoreSecrets>,
    network: OutboundNetwork,
    pub(crate) audit: Arc<AuditLog>,
}

impl PlatformCapabilities {
    pub(crate) fn new(
        data_dir: &Path,
        secret_key_file: &Path,
        resolve_overrides: &[String],
        outbound_ca_file: Option<&Path>,
        store: Arc<dyn ControlStore>,
        metrics: Arc<Metrics>,
    ) -> Result<PlatformCapabilities, CapabilityError> {
        let vault = Arc::new(Vault::open_or_create(secret_key_file)?);
        let resolver = Resolver::with_overrides(resolve_overrides)?;
        let extra_roots = match outbound_ca_file {
            Some(path) => runway_cap_outbound::load_ca_file(path)?,
            None => Vec::new(),
        };
        Ok(PlatformCapabilities {
            envs_dir: data_dir.join("envs"),
            sql: Mutex::new(HashMap::new()),
            kv: Mutex::new(HashMap::new()),
            secrets: Arc::new(StoreSecrets {
                store: store.clone(),
                vault: vault.clone(),
            }),
            vault,
            network: OutboundNetwork::new(resolver, extra_roots),
            audit: AuditLog::start(store, metrics),
        })
    }

    /// Checkpoints every open SQL and key-value database (at shutdown); failures are
    /// logged, since the data stays safe in the write-ahead log.
    pub(crate) fn checkpoint(&self) {
        for (environment, db) in self.sql.lock().expect("sql lock").iter() {
            if let Err(err) = db.checkpoint() {
                tracing::warn!(environment, error = %err, "could not checkpoint the SQL database");
            }
        }
        for (environment, store) in self.kv.lock().expect("kv lock").iter() {
            if let Err(err) = store.checkpoint() {
                tracing::warn!(environment, error = %err, "could not checkpoint the key-value store");
            }
        }
    }

    /// The SQL database of `environment`, opened on first use.
    pub(crate) fn sql_database(&self, environment: &str) -> Result<SqlDatabase, CapabilityError> {
        let mut open = self.sql.lock().expect("sql lock");
        if let Some(db) = open.get(environment) {
            return Ok(db.clone());
        }
        let db = SqlDatabase::open(&self.envs_dir.join(environment))?;
        open.insert(environment.to_owned(), db.clone());
        Ok(db)
    }

    fn kv_store(&self, environment: &str) -> Result<KvStore, CapabilityError> {
        let mut open = self.kv.lock().expect("kv lock");
        if let Some(store) = open.get(environment) {
            return Ok(store.clone());
        }
        let store = KvStore::open(&self.envs_dir.join(environment))?;
        open.insert(environment.to_owned(), store.clone());
        Ok(store)
    }

    /// Gives `target` a copy of `source`'s SQL schema (with rows and the key-value store when
    /// `with_data`). The copies are opened as `target`'s databases.
    pub(crate) fn copy_environment_data(
        &self,
        source: &str,
        target: &str,
        with_data: bool,
    ) -> Result<(), CapabilityError> {
        let dir = self.envs_dir.join(target);
        let sql = self.sql_database(source)?.copy_to(&dir, with_data)?;
        self.sql
            .lock()
            .expect("sql lock")
            .insert(target.to_owned(), sql);
        if with_data {
            let kv = self.kv_store(source)?.copy_to(&dir)?;
            self.kv
                .lock()
                .expect("kv lock")
                .insert(target.to_owned(), kv);
        }
        Ok(())
    }

    /// Consistent copies of an environment's SQL and key-value databases into `dir`, for a
    /// backup; databases the environment never created are skipped.
    pub(crate) fn backup_environment(
        &self,
        environment: &str,
        dir: &Path,
    ) -> Result<(), CapabilityError> {
        let source = self.envs_dir.join(environment);
        if source.join("sql.db").exists() {
            self.sql_database(environment)?.copy_to(dir, true)?;
        }
        if source.join("kv.db").exists() {
            self.kv_store(environment)?.copy_to(dir)?;
        }
        Ok(())
    }

    /// Closes an environment's databases and deletes its data folder. Releases still
    /// finishing a request keep their open handles until they end.
    pub(crate) fn forget_environment(&self, environment: &str) {
        self.sql.lock().expect("sql lock").remove(environment);
        self.kv.lock().expect("kv lock").remove(environment);
        let dir = self.envs_dir.join(environment);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::error!(folder = %dir.display(), error = %err, "deleting an environment's data failed")
            }
        }
    }

    /// The capabilities of one release, each bound to a guard for its policy.
    pub(crate) fn for_release(&self, release: &Release) -> Result<Capabilities, CapabilityError> {
        let config = &release.config;
        let guard = Guard::new(
            Caller {
                environment: release.environment.clone(),
                function: config.name.to_string(),
                release: u64::from(release.number),
            },
            Arc::new(config.policy.clone()),
            config.policy_mode,
            self.audit.clone(),
        );
        let environment = &release.environment;
        // A query result can never be larger than the memory the function could hold it in.
        let max_result_bytes = usize::try_from(config.memory.bytes()).unwrap_or(usize::MAX);
        Ok(Capabilities {
            sql: Some(Arc::new(
                self.sql_database(environment)?
                    .for_function(guard.clone(), max_result_bytes),
            )),
            kv: Some(Arc::new(
                self.kv_store(environment)?.for_function(guard.clone()),
            )),
            config: Some(Arc::new(FunctionConfigAccess::new(
                config.config.clone(),
                guard.clone(),
                self.secrets.clone(),
            ))),
            outbound: Some(self.network.for_function(guard)),
        })
    }
}

/// Secrets read from the store and opened with the node's vault.
struct StoreSecrets {
    store: Arc<dyn ControlStore>,
    vault: Arc<Vault>,
}

impl SecretSource for StoreSecrets {
    fn secret(&self, environment: &str, name: &str) -> Result<Option<String>, String> {
        let Some(sealed) = self
            .store
            .secret(environment, name)
            .map_err(|err| format!("cannot read secret `{name}`: {err}"))?
        else {
            return Ok(None);
        };
        let sealed = runway_cap_config::Sealed {
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
        };
        self.vault
            .open(environment, name, &sealed)
            .map(Some)
            .map_err(|err| err.to_string())
    }
}

/// Seals `value` and stores it as secret `name` of `environment`.
pub(crate) fn store_secret(
    store: &dyn ControlStore,
    vault: &Vault,
    environment: &str,
    name: &str,
    value: &str,
) -> Result<(), runway_store::StoreError> {
    let sealed = vault.seal(environment, name, value);
    store.put_secret(
        environment,
        name,
        &StoredSecret {
            nonce: sealed.nonce,
            ciphertext: sealed.ciphertext,
        },
    )
}

enum AuditMessage {
    Record(AuditRecord),
    Flush(mpsc::SyncSender<()>),
}

/// The audit sink: counts each event in `/metrics` at once and hands it to a writer thread,
/// so a denial never waits on the database.
///
/// The queue is bounded: a function that floods denials faster than the store can write
/// them (millions per second from a tight loop) cannot grow the node's memory without end.
/// Records beyond the queue are dropped and counted in `runway_audit_dropped_total`; the
/// denial counters in `/metrics` still count every one.
pub(crate) struct AuditLog {
    sender: mpsc::SyncSender<AuditMessage>,
    metrics: Arc<Metrics>,
}

/// Records written per database transaction, at most.
const AUDIT_BATCH: usize = 512;
/// Records waiting for the writer, at most (about 20 MB).
const AUDIT_QUEUE: usize = 100_000;

impl AuditLog {
    fn start(store: Arc<dyn ControlStore>, metrics: Arc<Metrics>) -> Arc<AuditLog> {
        let (sender, receiver) = mpsc::sync_channel::<AuditMessage>(AUDIT_QUEUE);
        std::thread::Builder::new()
            .name("runway-audit".into())
            .spawn(move || write_audit(store.as_ref(), &receiver))
            .expect("spawning the audit writer thread");
        Arc::new(AuditLog { sender, metrics })
    }

    /// Waits until every event recorded so far is in the store.
    pub(crate) fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.sender.send(AuditMessage::Flush(done)).is_ok() {
            _ = wait.recv_timeout(Duration::from_secs(10));
        }
    }
}

fn write_audit(store: &dyn ControlStore, receiver: &mpsc::Receiver<AuditMessage>) {
    while let Ok(first) = receiver.recv() {
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                AuditMessage::Record(record) => batch.push(record),
                AuditMessage::Flush(done) => flushes.push(done),
            }
            next = if batch.len() < AUDIT_BATCH {
                receiver.try_recv().ok()
            } else {
                None
            };
        }
        for attempt in 1..=5 {
            match store.append_audit(&batch) {
                Ok(()) => break,
                Err(err) => {
                    tracing::error!(error = %err, attempt, records = batch.len(), "cannot write audit records; retrying");
                    std::thread::sleep(Duration::from_millis(100 * attempt));
                }
            }
        }
        for done in flushes {
            _ = done.send(());
        }
    }
}

impl AuditSink for AuditLog {
    fn record(&self, event: AuditEvent) {
        let caller = &event.caller;
        let capability = event.attempt.capability.as_str();
        let labels = [
            capability,
            caller.environment.as_str(),
            caller.function.as_str(),
        ];
        if event.enforced {
            self.metrics.policy_denials.with_label_values(&labels).inc();
        } else {
            self.metrics
                .policy_audit_only
                .with_label_values(&labels)
                .inc();
        }
        tracing::debug!(
            target: "runway::audit",
            function = %caller.function,
            capability,
            operation = %event.attempt.operation,
            target_name = %event.attempt.target,
            enforced = event.enforced,
            "policy {}", if event.enforced { "denial" } else { "would deny (audit mode)" }
        );
        let at_ms = event
            .at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let record = AuditRecord {
            id: 0,
            at_ms,
            environment: caller.environment.clone(),
            function: caller.function.clone(),
            release: caller.release,
            capability: capability.to_owned(),
            operation: event.attempt.operation,
            target: event.attempt.target,
            decision: if event.enforced { "denied" } else { "allowed" }.to_owned(),
        };
        if let Err(mpsc::TrySendError::Full(_)) = self.sender.try_send(AuditMessage::Record(record))
        {
            self.metrics.audit_dropped.inc();
        }
    }
}
