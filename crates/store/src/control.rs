//! Control-plane records beyond releases: tokens, API keys, the control-plane audit log,
//! queued jobs and retirement.

use runway_access::{Rate, Role};
use serde::{Deserialize, Serialize};

/// A control-plane token as stored: its hash, never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (`t-…`).
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// What it may do.
    pub role: Role,
    /// The only environment it may act on; `None` means every environment.
    pub environment: Option<String>,
    /// A note on what it is for.
    pub label: String,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// When it stops working; `None` never (only the bootstrap token).
    pub expires_at_ms: Option<i64>,
    /// When it was revoked.
    pub revoked_at_ms: Option<i64>,
    /// The token that created it (`bootstrap` for the first).
    pub created_by: String,
}

/// A function API key as stored: its hash, never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Public id (`k-…`).
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// Environment of the function.
    pub environment: String,
    /// The function it may invoke.
    pub function: String,
    /// A note on who holds it.
    pub label: String,
    /// Requests per period it may make; `None` is unlimited.
    pub rate: Option<Rate>,
    /// When it was created.
    pub created_at_ms: i64,
    /// When it stops working.
    pub expires_at_ms: Option<i64>,
    /// When it was revoked.
    pub revoked_at_ms: Option<i64>,
    /// The control-plane token that created it.
    pub created_by: String,
}

/// One control-plane action: who, what, on what, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ControlAuditRecord {
    /// Increasing id (0 before it is stored).
    pub id: i64,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The node's environment.
    pub environment: String,
    /// The token id that acted (`anonymous` when none was valid, `system` for the node).
    pub actor: String,
    /// What was done (`deploy`, `token.create`, `function.extend`, ...).
    pub action: String,
    /// What it was done to (function, token id, secret name, path).
    pub target: String,
    /// HTTP status of the answer.
    pub status: u16,
    /// `ok`, `denied` or `failed`.
    pub outcome: String,
    /// What changed, or why it was refused.
    pub detail: String,
}

/// The longest target a control audit record keeps, in bytes (a request path can be long).
pub const MAX_AUDIT_TARGET: usize = 256;
/// The longest detail a control audit record keeps, in bytes.
pub const MAX_AUDIT_DETAIL: usize = 1024;

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
fn bounded(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

impl ControlAuditRecord {
    /// A record of an action that happened now; the store assigns its id. The target and
    /// detail, which can carry a caller's input, are cut to [`MAX_AUDIT_TARGET`] and
    /// [`MAX_AUDIT_DETAIL`] bytes.
    pub fn now(
        environment: &str,
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        status: u16,
        outcome: &str,
        detail: impl Into<String>,
    ) -> ControlAuditRecord {
        ControlAuditRecord {
            id: 0,
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
            environment: environment.to_owned(),
            actor: actor.into(),
            action: action.into(),
            target: bounded(target.into(), MAX_AUDIT_TARGET),
            status,
            outcome: outcome.to_owned(),
            detail: bounded(detail.into(), MAX_AUDIT_DETAIL),
        }
    }
}

/// Where a job came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobSource {
    /// `runway invoke --async` or the enqueue endpoint.
    Queue,
    /// A cron tick.
    Schedule,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobState {
    /// Waiting for its next attempt.
    Pending,
    /// An attempt is running.
    Running,
    /// An attempt succeeded.
    Succeeded,
    /// Every attempt failed: in the dead-letter list.
    Dead,
}

impl JobState {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
        }
    }

    /// The state a name stands for.
    pub fn parse(text: &str) -> Option<JobState> {
        Some(match text {
            "pending" => JobState::Pending,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "dead" => JobState::Dead,
            _ => return None,
        })
    }
}

/// The HTTP request a job delivers to its function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Body, base64 in JSON.
    #[serde(default, with = "base64_bytes")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, content_encoding = "base64"))]
    pub body: Vec<u8>,
}

/// How the last attempt that ran to completion answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobResult {
    /// HTTP status.
    pub status: u16,
    /// Body as text (lossy), cut at 64 KiB.
    pub body: String,
    /// The invocation's request id (`runway logs` shows its output).
    pub request_id: String,
}

/// A queued or scheduled invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    /// Id (`j-…`).
    pub id: String,
    /// Environment.
    pub environment: String,
    /// Function.
    pub function: String,
    /// Queue or schedule.
    pub source: JobSource,
    /// What to send.
    pub request: JobRequest,
    /// Where it is.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed before the dead-letter list.
    pub max_attempts: u32,
    /// When the next attempt may start.
    pub next_run_at_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The last completed attempt's answer.
    pub result: Option<JobResult>,
    /// For scheduled runs: the tick it is for.
    pub scheduled_for_ms: Option<i64>,
    /// When it was enqueued.
    pub created_at_ms: i64,
    /// When it last changed.
    pub updated_at_ms: i64,
}

/// How an attempt ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobUpdate {
    /// The new state (pending for a retry).
    pub state: JobState,
    /// Attempts to record (one less than claimed when the attempt never started).
    pub attempts: u32,
    /// When the next attempt may start (for a retry).
    pub next_run_at_ms: i64,
    /// Why it failed.
    pub last_error: Option<String>,
    /// What it answered.
    pub result: Option<JobResult>,
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// A detached signature over an artifact digest, as uploaded with `runway deploy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactSignature {
    /// The artifact's digest, 64 hex digits.
    pub digest: String,
    /// The signing key's id.
    pub key_id: String,
    /// The signature, base64.
    pub signature: String,
}

/// An artifact that must never run again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevokedArtifact {
    /// Its digest, 64 hex digits.
    pub digest: String,
    /// When, in milliseconds since the Unix epoch.
    pub revoked_at_ms: i64,
    /// The token that revoked it.
    pub actor: String,
    /// Why.
    pub reason: String,
}

/// What an environment demands of every release deployed to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentRules {
    /// Public keys (the text of a trusted-keys file) one of which must sign every artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_keys: Option<String>,
    /// Refuse components that import a capability their policy does not grant.
    #[serde(default)]
    pub strict_vetting: bool,
    /// Refuse functions in policy audit mode.
    #[serde(default)]
    pub production: bool,
    /// Schedules do not fire (the default for copies: a copy of prod must not charge cards
    /// on prod's cron).
    #[serde(default)]
    pub paused_schedules: bool,
}

/// An environment: its own functions, data, key-value store, secrets, API keys and tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentRecord {
    /// Its name, also the host name it is reached by (`NAME.localhost`).
    pub name: String,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// When it is removed with everything in it; `None` keeps it until `env rm`.
    pub expires_at_ms: Option<i64>,
    /// Who created it (a token id, or `system`).
    pub created_by: String,
    /// The environment it was created from, if any.
    pub source: Option<String>,
    /// Its signing and vetting rules.
    pub rules: EnvironmentRules,
}

/// What a budget covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BudgetKind {
    /// One function of one environment.
    Function,
    /// Every function of one environment.
    #[serde(rename = "env")]
    Environment,
    /// Every function declaring this owner, in every environment.
    Owner,
}

pub use runway_manifest::BudgetAction;

/// A monthly budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Budget {
    /// `function:ENV/NAME`, `env:ENV` or `owner:NAME`.
    pub id: String,
    /// What it covers.
    pub kind: BudgetKind,
    /// The function, environment or owner name.
    pub scope: String,
    /// The environment of a function budget.
    pub environment: Option<String>,
    /// The most a calendar month (UTC) may cost, in pico-dollars.
    pub monthly_pusd: u64,
    /// What happens at 100 percent.
    pub action: BudgetAction,
    /// `manifest` (from `[function.budget]`) or `cli`.
    pub source: String,
    /// When it was last set, in milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
    /// Who set it.
    pub updated_by: String,
}

impl Budget {
    /// The id of a budget of `kind` over `scope` (and `environment` for a function).
    pub fn id_for(kind: BudgetKind, scope: &str, environment: Option<&str>) -> String {
        match kind {
            BudgetKind::Function => {
                format!("function:{}/{scope}", environment.unwrap_or_default())
            }
            BudgetKind::Environment => format!("env:{scope}"),
            BudgetKind::Owner => format!("owner:{scope}"),
        }
    }
}
