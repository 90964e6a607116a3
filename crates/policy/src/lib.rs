//! Least privilege: what a function is granted, and the one place every check is decided.
//!
//! A [`Policy`] is the `[function.policy]` table of a manifest: SQL operations per table,
//! key-value prefixes, outbound origins and secret names. Nothing is granted unless listed.
//! The capability crates ask a [`Guard`] before each operation; the guard records every
//! refusal (or, in audit mode, every would-be refusal) through an [`AuditSink`] and hands the
//! function a [`Denied`] error it can handle. Deploy-time vetting ([`vet`]) compares a
//! component's imports with its policy using the same model, and [`suggest`] turns observed
//! use back into the least policy that covers it.

pub mod address;
mod grant;
mod suggest;
mod vetting;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use grant::{
    GrantError, KvAccess, KvGrant, OutboundGrant, Scheme, SecretName, SqlGrant, SqlOperation,
};
pub use suggest::suggest;
pub use vetting::{ImportVerdict, VettedImport, VettingReport, vet};

/// The `[function.policy]` table: everything a function may do beyond answering HTTP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Policy {
    /// `operation:table` grants for the environment's SQL database.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sql: Vec<SqlGrant>,
    /// `read:` and `write:` grants on key-value keys or prefixes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kv: Vec<KvGrant>,
    /// Origins outbound HTTP may reach.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<OutboundGrant>,
    /// Secrets the function may read through `wasi:config`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretName>,
}

impl Policy {
    /// Whether `operation` on `table` is granted (table names compare case-insensitively).
    pub fn allows_sql(&self, operation: SqlOperation, table: &str) -> bool {
        self.sql
            .iter()
            .any(|g| g.operation == operation && g.table.eq_ignore_ascii_case(table))
    }

    /// Whether `access` to `key` is granted.
    pub fn allows_kv(&self, access: KvAccess, key: &str) -> bool {
        self.kv.iter().any(|g| g.covers(access, key))
    }

    /// The grant covering a request to `scheme://host:port`, if any.
    pub fn outbound_grant(&self, scheme: Scheme, host: &str, port: u16) -> Option<&OutboundGrant> {
        self.outbound.iter().find(|g| g.covers(scheme, host, port))
    }

    /// Whether the secret `name` is granted.
    pub fn allows_secret(&self, name: &str) -> bool {
        self.secrets.iter().any(|s| s.as_str() == name)
    }

    /// Whether nothing at all is granted.
    pub fn is_empty(&self) -> bool {
        self.sql.is_empty()
            && self.kv.is_empty()
            && self.outbound.is_empty()
            && self.secrets.is_empty()
    }

    /// The policy as a `[function.policy]` table, ready to paste into `runway.toml`.
    pub fn to_toml(&self) -> String {
        fn list<T: fmt::Display>(items: &[T]) -> String {
            let quoted: Vec<String> = items.iter().map(|i| format!("\"{i}\"")).collect();
            format!("[{}]", quoted.join(", "))
        }
        let mut out = String::from("[function.policy]\n");
        if !self.sql.is_empty() {
            out.push_str(&format!("sql = {}\n", list(&self.sql)));
        }
        if !self.kv.is_empty() {
            out.push_str(&format!("kv = {}\n", list(&self.kv)));
        }
        if !self.outbound.is_empty() {
            out.push_str(&format!("outbound = {}\n", list(&self.outbound)));
        }
        if !self.secrets.is_empty() {
            out.push_str(&format!("secrets = {}\n", list(&self.secrets)));
        }
        out
    }
}

/// Whether calls beyond the policy are refused, or let through and recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PolicyMode {
    /// Calls beyond the policy are refused and audited.
    #[default]
    Enforce,
    /// Calls beyond the policy succeed and are audited as would-be denials; for discovering
    /// a function's least policy, never in production.
    Audit,
}

impl PolicyMode {
    /// `enforce` or `audit`.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Enforce => "enforce",
            PolicyMode::Audit => "audit",
        }
    }
}

/// A host capability a policy can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Capability {
    /// The environment's SQL database (`runway:platform/sql`).
    Sql,
    /// Key-value storage (`wasi:keyvalue`).
    Kv,
    /// Outbound HTTP (`wasi:http/outgoing-handler`).
    Outbound,
    /// Secrets (`wasi:config`).
    Secrets,
}

impl Capability {
    /// The lower-case name, as in the policy table and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Sql => "sql",
            Capability::Kv => "kv",
            Capability::Outbound => "outbound",
            Capability::Secrets => "secrets",
        }
    }

    /// Parses the lower-case name.
    pub fn parse(text: &str) -> Option<Capability> {
        Some(match text {
            "sql" => Capability::Sql,
            "kv" => Capability::Kv,
            "outbound" => Capability::Outbound,
            "secrets" => Capability::Secrets,
            _ => return None,
        })
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An attempted operation beyond the policy: what a grant would have to cover.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attempt {
    /// Which capability.
    pub capability: Capability,
    /// The operation: `select`/`insert`/`update`/`delete`, `read`/`write`, `GET`..., `get`,
    /// or a statement kind SQL never grants (`pragma`, `attach`, `schema`, ...).
    pub operation: String,
    /// The table, key, origin or secret name.
    pub target: String,
}

impl Attempt {
    /// A new attempt. Operation and target come from the function, so they are cut to
    /// [`MAX_ATTEMPT_TEXT`] bytes: a function cannot grow the audit log by its own choice.
    pub fn new(
        capability: Capability,
        operation: impl Into<String>,
        target: impl Into<String>,
    ) -> Attempt {
        Attempt {
            capability,
            operation: truncate(operation.into()),
            target: truncate(target.into()),
        }
    }

    /// The grant that would allow this attempt, if any grant can.
    pub fn grant_hint(&self) -> Option<String> {
        match self.capability {
            Capability::Sql => SqlGrant::parse(&format!("{}:{}", self.operation, self.target))
                .ok()
                .map(|g| format!("sql = [\"{g}\"]")),
            Capability::Kv => Some(format!("kv = [\"{}:{}\"]", self.operation, self.target)),
            Capability::Outbound => Some(format!("outbound = [\"{}\"]", self.target)),
            Capability::Secrets => Some(format!("secrets = [\"{}\"]", self.target)),
        }
    }
}

/// The longest operation or target an audit record keeps, in bytes.
pub const MAX_ATTEMPT_TEXT: usize = 256;

fn truncate(mut text: String) -> String {
    if text.len() > MAX_ATTEMPT_TEXT {
        let mut cut = MAX_ATTEMPT_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Who made a call: the identity every audit event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The environment the function runs in.
    pub environment: String,
    /// The function's name.
    pub function: String,
    /// The release number that made the call.
    pub release: u64,
}

/// One refusal (or, in audit mode, one would-be refusal) of a call beyond the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// When it happened.
    pub at: SystemTime,
    /// Who attempted it.
    pub caller: Arc<Caller>,
    /// What was attempted.
    pub attempt: Attempt,
    /// `true` if the call was refused; `false` if audit mode let it through.
    pub enforced: bool,
}

/// Where audit events go: the server counts them and writes them off the request path.
pub trait AuditSink: Send + Sync {
    /// Records one event; must not block.
    fn record(&self, event: AuditEvent);
}

/// An audit sink that drops everything, for tools that vet without running.
#[derive(Debug, Default)]
pub struct DiscardAudit;

impl AuditSink for DiscardAudit {
    fn record(&self, _event: AuditEvent) {}
}

/// An audit sink that keeps events in memory, for tests and tools that vet in-process.
#[derive(Debug, Default)]
pub struct MemoryAudit(std::sync::Mutex<Vec<AuditEvent>>);

impl MemoryAudit {
    /// Removes and returns the events recorded so far.
    pub fn take(&self) -> Vec<AuditEvent> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl AuditSink for MemoryAudit {
    fn record(&self, event: AuditEvent) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}

/// A call the policy refused: the error a function receives, naming what and how to grant it.
///
/// It never contains a secret's value, only names, tables, keys and origins.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Denied {
    /// What was attempted.
    pub attempt: Attempt,
    /// The function that attempted it.
    pub function: String,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Attempt {
            capability,
            operation,
            target,
        } = &self.attempt;
        write!(
            f,
            "denied by policy: {capability} {operation} `{target}` is not granted to function `{}`",
            self.function
        )?;
        match self.attempt.grant_hint() {
            Some(hint) => write!(f, " (to allow it, add {hint} to [function.policy])"),
            None => write!(f, " (functions are never allowed this)"),
        }
    }
}

/// The per-release gatekeeper the capability crates consult before every operation.
#[derive(Clone)]
pub struct Guard {
    caller: Arc<Caller>,
    policy: Arc<Policy>,
    mode: PolicyMode,
    sink: Arc<dyn AuditSink>,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("caller", &self.caller)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// A guard for one release of one function.
    pub fn new(
        caller: Caller,
        policy: Arc<Policy>,
        mode: PolicyMode,
        sink: Arc<dyn AuditSink>,
    ) -> Guard {
        Guard {
            caller: Arc::new(caller),
            policy,
            mode,
            sink,
        }
    }

    /// The policy this guard enforces.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Enforce or audit.
    pub fn mode(&self) -> PolicyMode {
        self.mode
    }

    /// Who the guard speaks for.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Decides an attempt the caller has already checked against the policy: allowed
    /// attempts pass silently; others are recorded and refused (or, in audit mode, passed).
    pub fn decide(&self, allowed: bool, attempt: impl FnOnce() -> Attempt) -> Result<(), Denied> {
        if allowed {
            return Ok(());
        }
        self.refuse(attempt())
    }

    /// Records an attempt beyond the policy; refuses it unless the mode is audit.
    pub fn refuse(&self, attempt: Attempt) -> Result<(), Denied> {
        let enforced = self.mode == PolicyMode::Enforce;
        self.sink.record(AuditEvent {
            at: SystemTime::now(),
            caller: self.caller.clone(),
            attempt: attempt.clone(),
            enforced,
        });
        if enforced {
            Err(Denied {
                attempt,
                function: self.caller.function.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// Records an attempt no policy may allow (PRAGMA, ATTACH, schema changes); refused even
    /// in audit mode, because audit mode discovers grants and these have none.
    pub fn refuse_always(&self, attempt: Attempt) -> Denied {
        self.sink.record(AuditEvent {
            at: SystemTime::now(),
            caller: self.caller.clone(),
            attempt: attempt.clone(),
            enforced: true,
        });
        Denied {
            attempt,
            function: self.caller.function.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        toml::from_str(text).unwrap()
    }

    fn guard(mode: PolicyMode, sink: Arc<MemoryAudit>) -> Guard {
        let caller = Caller {
            environment: "prod".into(),
            function: "orders-api".into(),
            release: 3,
        };
        Guard::new(
            caller,
            Arc::new(policy("sql = [\"select:orders\"]")),
            mode,
            sink,
        )
    }

    #[test]
    fn policy_parses_from_toml_and_names_malformed_grants() {
        let p = policy(
            "sql = [\"select:orders\", \"insert:audit_log\"]\nkv = [\"read:cache/*\"]\n\
             outbound = [\"https://api.example.com\"]\nsecrets = [\"PAYMENT_KEY\"]\n",
        );
        assert!(p.allows_sql(SqlOperation::Select, "ORDERS"));
        assert!(!p.allows_sql(SqlOperation::Update, "orders"));
        assert!(!p.allows_sql(SqlOperation::Select, "customers"));
        assert!(p.allows_kv(KvAccess::Read, "cache/x"));
        assert!(!p.allows_kv(KvAccess::Write, "cache/x"));
        assert!(
            p.outbound_grant(Scheme::Https, "api.example.com", 443)
                .is_some()
        );
        assert!(
            p.outbound_grant(Scheme::Http, "api.example.com", 80)
                .is_none()
        );
        assert!(p.allows_secret("PAYMENT_KEY"));
        assert!(!p.allows_secret("payment_key"));
        let back: Policy = toml::from_str(&p.to_toml().replace("[function.policy]\n", "")).unwrap();
        assert_eq!(back, p);
        let err = toml::from_str::<Policy>("sql = [\"drop:orders\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`drop:orders`"), "{err}");
    }

    #[test]
    fn attempts_are_cut_to_a_bounded_size() {
        let long = "é".repeat(10_000);
        let attempt = Attempt::new(Capability::Secrets, "get", long);
        assert!(attempt.target.len() <= MAX_ATTEMPT_TEXT + '…'.len_utf8());
        assert!(attempt.target.ends_with('…'));
    }

    #[test]
    fn enforce_mode_refuses_and_records() {
        let sink = Arc::new(MemoryAudit::default());
        let guard = guard(PolicyMode::Enforce, sink.clone());
        assert!(guard.decide(true, || unreachable!()).is_ok());
        let denied = guard
            .decide(false, || {
                Attempt::new(Capability::Sql, "select", "customers")
            })
            .unwrap_err();
        let message = denied.to_string();
        assert!(message.contains("`customers`"), "{message}");
        assert!(
            message.contains("sql = [\"select:customers\"]"),
            "{message}"
        );
        let events = sink.take();
        assert_eq!(events.len(), 1);
        assert!(events[0].enforced);
        assert_eq!(events[0].caller.release, 3);
    }

    #[test]
    fn audit_mode_lets_through_but_records() {
        let sink = Arc::new(MemoryAudit::default());
        let guard = guard(PolicyMode::Audit, sink.clone());
        assert!(
            guard
                .decide(false, || Attempt::new(Capability::Kv, "write", "x"))
                .is_ok()
        );
        let denied = guard.refuse_always(Attempt::new(Capability::Sql, "pragma", "table_info"));
        assert!(denied.to_string().contains("never allowed"), "{denied}");
        let events = sink.take();
        assert_eq!((events[0].enforced, events[1].enforced), (false, true));
    }
}
