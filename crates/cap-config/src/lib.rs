//! `wasi:config` for functions: their own `[function.config]` values and, by name, the
//! secrets their policy grants. Secrets are sealed at rest by a [`Vault`].
//!
//! A key that is neither the function's configuration nor a granted secret is refused and
//! audited, whether or not a secret of that name exists, so a function cannot probe for
//! secrets it was not given. Values are never part of an error or an audit event.

mod vault;

use std::collections::BTreeMap;
use std::sync::Arc;

use runway_policy::{Attempt, Capability, Guard};
use wasmtime::component::{HasData, Linker};

pub use vault::{Sealed, Vault, VaultError};

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "wasi:config/imports",
    });
}

use generated::wasi::config::store;

/// Where granted secrets are read from (the server: its store and vault).
pub trait SecretSource: Send + Sync {
    /// The value of secret `name` in `environment`, if it is set.
    fn secret(&self, environment: &str, name: &str) -> Result<Option<String>, String>;
}

/// One release's configuration and secret access.
pub struct FunctionConfigAccess {
    config: BTreeMap<String, String>,
    guard: Guard,
    secrets: Arc<dyn SecretSource>,
}

impl FunctionConfigAccess {
    /// Access to `config` and, through `guard`'s policy, to secrets from `secrets`.
    pub fn new(
        config: BTreeMap<String, String>,
        guard: Guard,
        secrets: Arc<dyn SecretSource>,
    ) -> Self {
        FunctionConfigAccess {
            config,
            guard,
            secrets,
        }
    }
}

/// One invocation's view of `wasi:config`; remembers which secret values it handed out so
/// they can be redacted from the invocation's captured output.
pub struct ConfigHost {
    access: Option<Arc<FunctionConfigAccess>>,
    revealed: Vec<String>,
}

impl ConfigHost {
    /// Configuration for one invocation; `None` gives an empty configuration and no secrets.
    pub fn new(access: Option<Arc<FunctionConfigAccess>>) -> ConfigHost {
        ConfigHost {
            access,
            revealed: Vec::new(),
        }
    }

    /// The secret values this invocation read.
    pub fn revealed(&self) -> &[String] {
        &self.revealed
    }

    fn secret(
        &mut self,
        access: &FunctionConfigAccess,
        name: &str,
    ) -> Result<Option<String>, store::Error> {
        let environment = &access.guard.caller().environment;
        let value = access
            .secrets
            .secret(environment, name)
            .map_err(store::Error::Io)?;
        if let Some(value) = &value
            && !value.is_empty()
        {
            self.revealed.push(value.clone());
        }
        Ok(value)
    }
}

impl store::Host for ConfigHost {
    fn get(&mut self, key: String) -> Result<Option<String>, store::Error> {
        let Some(access) = self.access.clone() else {
            return Ok(None);
        };
        if let Some(value) = access.config.get(&key) {
            return Ok(Some(value.clone()));
        }
        let granted = access.guard.policy().allows_secret(&key);
        access
            .guard
            .decide(granted, || {
                Attempt::new(Capability::Secrets, "get", key.as_str())
            })
            .map_err(|denied| store::Error::Upstream(denied.to_string()))?;
        self.secret(&access, &key)
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, store::Error> {
        let Some(access) = self.access.clone() else {
            return Ok(Vec::new());
        };
        let mut all: Vec<(String, String)> = access
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for name in &access.guard.policy().secrets {
            if let Some(value) = self.secret(&access, name.as_str())? {
                all.push((name.to_string(), value));
            }
        }
        Ok(all)
    }
}

/// The shortest secret a node accepts, in bytes. Redaction replaces every occurrence of a
/// revealed value in the logs, so a short value would be given away by where the markers
/// fall (a one-character secret turns every such character into a marker); anything that
/// short is no credential anyway.
pub const MIN_SECRET_BYTES: usize = 8;

/// Replaces every occurrence of each revealed secret in `output` with a marker. Values
/// shorter than [`MIN_SECRET_BYTES`] (set before that rule) are left alone, since marking
/// them would reveal them.
pub fn redact(output: &mut Vec<u8>, revealed: &[String]) {
    for secret in revealed {
        let needle = secret.as_bytes();
        if needle.len() < MIN_SECRET_BYTES || output.len() < needle.len() {
            continue;
        }
        let mut redacted = Vec::with_capacity(output.len());
        let mut rest = &output[..];
        while let Some(at) = rest.windows(needle.len()).position(|w| w == needle) {
            redacted.extend_from_slice(&rest[..at]);
            redacted.extend_from_slice(b"[redacted secret]");
            rest = &rest[at + needle.len()..];
        }
        redacted.extend_from_slice(rest);
        *output = redacted;
    }
}

struct HasConfig;

impl HasData for HasConfig {
    type Data<'a> = &'a mut ConfigHost;
}

/// Adds `wasi:config/store` to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    host: fn(&mut T) -> &mut ConfigHost,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, HasConfig>(linker, host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use runway_policy::{Caller, MemoryAudit, Policy, PolicyMode};
    use store::Host as _;

    struct Fixed;
    impl SecretSource for Fixed {
        fn secret(&self, _environment: &str, name: &str) -> Result<Option<String>, String> {
            Ok(match name {
                "PAYMENT_KEY" => Some("sk_live_123".into()),
                "DB_PASSWORD" => Some("hunter2".into()),
                _ => None,
            })
        }
    }

    fn host(mode: PolicyMode, sink: Arc<MemoryAudit>) -> ConfigHost {
        let policy: Policy = toml::from_str("secrets = [\"PAYMENT_KEY\", \"UNSET\"]").unwrap();
        let caller = Caller {
            environment: "prod".into(),
            function: "pay".into(),
            release: 1,
        };
        let guard = Guard::new(caller, Arc::new(policy), mode, sink);
        let config = BTreeMap::from([("REGION".to_owned(), "eu".to_owned())]);
        ConfigHost::new(Some(Arc::new(FunctionConfigAccess::new(
            config,
            guard,
            Arc::new(Fixed),
        ))))
    }

    #[test]
    fn config_and_granted_secrets_only() {
        let sink = Arc::new(MemoryAudit::default());
        let mut host = host(PolicyMode::Enforce, sink.clone());
        assert_eq!(host.get("REGION".into()).unwrap().as_deref(), Some("eu"));
        assert_eq!(
            host.get("PAYMENT_KEY".into()).unwrap().as_deref(),
            Some("sk_live_123")
        );
        assert_eq!(host.get("UNSET".into()).unwrap(), None);
        let Err(store::Error::Upstream(message)) = host.get("DB_PASSWORD".into()) else {
            panic!("an ungranted secret must be refused");
        };
        assert!(
            message.contains("DB_PASSWORD") && !message.contains("hunter2"),
            "{message}"
        );
        let Err(store::Error::Upstream(_)) = host.get("NO_SUCH_NAME".into()) else {
            panic!("ungranted names are refused whether or not they exist");
        };
        let all = host.get_all().unwrap();
        assert_eq!(
            all,
            [
                ("REGION".to_owned(), "eu".to_owned()),
                ("PAYMENT_KEY".to_owned(), "sk_live_123".to_owned())
            ]
        );
        let events = sink.take();
        let targets: Vec<&str> = events.iter().map(|e| e.attempt.target.as_str()).collect();
        assert_eq!(targets, ["DB_PASSWORD", "NO_SUCH_NAME"]);
        let mut output = b"paying with sk_live_123 now; sk_live_123".to_vec();
        redact(&mut output, host.revealed());
        assert_eq!(
            output,
            b"paying with [redacted secret] now; [redacted secret]"
        );
    }

    #[test]
    fn audit_mode_reveals_and_records() {
        let sink = Arc::new(MemoryAudit::default());
        let mut host = host(PolicyMode::Audit, sink.clone());
        assert_eq!(
            host.get("DB_PASSWORD".into()).unwrap().as_deref(),
            Some("hunter2")
        );
        assert!(!sink.take()[0].enforced);
    }
}
