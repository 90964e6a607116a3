//! A small pool of connections: made on demand up to a maximum, handed to one caller at a
//! time, and dropped rather than reused once the server has closed them.

use std::ops::{Deref, DerefMut};
use std::sync::{Condvar, Mutex, MutexGuard};

use postgres::{Client, Config, NoTls};
use runway_store::StoreError;

/// Where a connection goes, for messages: user, host, port and database, never the password.
#[derive(Debug, Clone)]
pub(crate) struct Target(String);

impl Target {
    pub(crate) fn of(config: &Config) -> Target {
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|host| match host {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
        Target(format!(
            "postgres://{}@{}:{}/{}",
            config.get_user().unwrap_or(""),
            if hosts.is_empty() {
                "localhost".to_owned()
            } else {
                hosts.join(",")
            },
            if ports.is_empty() {
                "5432".to_owned()
            } else {
                ports.join(",")
            },
            config.get_dbname().unwrap_or("")
        ))
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A connection that could not be made, naming where it was going.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to PostgreSQL at {target}: {source}")]
pub(crate) struct ConnectError {
    target: Target,
    #[source]
    source: postgres::Error,
}

/// Opens one connection named `application` (it shows in `pg_stat_activity`).
pub(crate) fn connect(
    config: &Config,
    target: &Target,
    application: &str,
) -> Result<Client, StoreError> {
    let mut config = config.clone();
    config.application_name(application);
    config
        .connect(NoTls)
        .map_err(|source| StoreError::Unavailable {
            action: "connecting to PostgreSQL",
            source: Box::new(ConnectError {
                target: target.clone(),
                source,
            }),
        })
}

/// Up to `max` connections, shared by the store's calls; a call waits for a free one when
/// all are busy.
pub(crate) struct Pool {
    config: Config,
    target: Target,
    max: usize,
    state: Mutex<PoolState>,
    returned: Condvar,
}

struct PoolState {
    idle: Vec<Client>,
    open: usize,
}

impl Pool {
    pub(crate) fn new(config: Config, target: Target, max: usize) -> Pool {
        Pool {
            config,
            target,
            max,
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            returned: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection for one call: an idle one, a new one while fewer than `max` are open,
    /// or the next one returned.
    pub(crate) fn get(&self) -> Result<Pooled<'_>, StoreError> {
        let mut state = self.state();
        loop {
            if let Some(client) = state.idle.pop() {
                if client.is_closed() {
                    state.open -= 1;
                    continue;
                }
                return Ok(Pooled {
                    pool: self,
                    client: Some(client),
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match connect(&self.config, &self.target, "runway") {
                    Ok(client) => Ok(Pooled {
                        pool: self,
                        client: Some(client),
                    }),
                    Err(err) => {
                        self.state().open -= 1;
                        self.returned.notify_one();
                        Err(err)
                    }
                };
            }
            state = self.returned.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let idle = std::mem::take(&mut self.state().idle);
        crate::close(idle);
    }
}

/// A connection on loan from the pool; back in the pool when dropped, unless it is closed.
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<Client>,
}

impl Deref for Pooled<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let mut state = self.pool.state();
        // A connection the server closed (a restart, a terminated backend) would fail every
        // later call: drop it, and the next call makes a new one.
        if client.is_closed() {
            state.open -= 1;
        } else {
            state.idle.push(client);
        }
        drop(state);
        self.pool.returned.notify_one();
    }
}
