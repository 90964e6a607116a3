//! `runway.toml`: the types a team writes, parsed once into validated values.
//!
//! This crate owns the manifest's shape, its human-readable units (`128MiB`, `3s`), its
//! routes and the whole-document checks (duplicate names, conflicting routes). It turns a
//! manifest into [`FunctionConfig`] values: the frozen per-function configuration that the
//! server stores with each release and that the runtime reads. It also holds the two pure
//! checks the gateway makes before matching a route: whether a request path is canonical
//! ([`non_canonical_path`]) and which environment a `Host` names ([`environment_label`]).
//! It has no wasmtime, network or storage dependency, so the CLI and the server validate
//! with exactly the same code, and the fuzz targets in `fuzz/` can reach all of it.

mod host;
#[cfg(feature = "openapi")]
mod openapi;
mod route;
mod triggers;
mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use host::environment_label;
pub use route::{Method, Route, RouteConflict, RouteKind, non_canonical_path};
pub use runway_access::{JwtSettings, Rate};
pub use runway_policy::{Policy, PolicyMode};
pub use triggers::{
    CronExpr, Expiry, InvocationAuth, MAX_ATTEMPTS, MissedTicks, QueueTrigger, ScheduleTrigger,
    Zone,
};
pub use units::{ByteSize, HumanDuration};

/// The file name `runway deploy` looks for in a folder.
pub const MANIFEST_FILE: &str = "runway.toml";

/// Memory size a function gets when its manifest does not say.
pub const DEFAULT_MEMORY: ByteSize = ByteSize::mib(128);
/// Timeout a function gets when its manifest does not say.
pub const DEFAULT_TIMEOUT: HumanDuration = HumanDuration::from_millis(10_000);
/// Smallest memory size a function may ask for.
pub const MIN_MEMORY: ByteSize = ByteSize::mib(1);
/// Largest memory size a function may ask for: the 32-bit linear memory limit.
pub const MAX_MEMORY: ByteSize = ByteSize::mib(4096);
/// Longest timeout a function may ask for (AWS Lambda's maximum, 15 minutes).
pub const MAX_TIMEOUT: HumanDuration = HumanDuration::from_millis(900_000);

/// Everything that can be wrong with a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The TOML is malformed, or a key or value is not what the manifest allows.
    #[error("{path}: {message}")]
    Syntax {
        /// The manifest file.
        path: PathBuf,
        /// The parser's message, with line, column and the offending text.
        message: String,
    },
    /// The document parsed, but its functions contradict each other or the platform's limits.
    #[error("{path}: {}", problems.join("\n  "))]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// Every problem found, one sentence each.
        problems: Vec<String>,
    },
}

/// A function's name: lower-case letters, digits and dashes, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String, pattern = "^[a-z][a-z0-9-]{0,62}$", example = "hello"))]
pub struct FunctionName(String);

impl FunctionName {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FunctionName {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        let valid_chars = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let starts_with_letter = name.starts_with(|c: char| c.is_ascii_lowercase());
        if name.is_empty() || name.len() > 63 || !valid_chars || !starts_with_letter {
            return Err(format!(
                "invalid function name `{name}`: use 1 to 63 lower-case letters, digits and \
                 dashes, starting with a letter (for example `orders-api`)"
            ));
        }
        Ok(FunctionName(name))
    }
}

impl TryFrom<&str> for FunctionName {
    type Error = String;

    fn try_from(name: &str) -> Result<Self, String> {
        FunctionName::try_from(name.to_owned())
    }
}

impl From<FunctionName> for String {
    fn from(name: FunctionName) -> String {
        name.0
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An HTTP trigger: the route a function answers and, optionally, the methods it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HttpTrigger {
    /// Exact path (`/hello`) or prefix (`/orders/...`).
    pub route: Route,
    /// Accepted methods; empty means every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Method>,
    /// Who may call this route; default `public`.
    #[serde(default, skip_serializing_if = "InvocationAuth::is_public")]
    pub auth: InvocationAuth,
}

/// The frozen configuration of one function: what a release records and the runtime reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionConfig {
    /// The function's name, unique per environment.
    pub name: FunctionName,
    /// Linear memory the function may use; also the size it is billed for.
    pub memory: ByteSize,
    /// Wall-clock time an invocation may take before it is interrupted.
    pub timeout: HumanDuration,
    /// Environment variables the function sees; it sees no others.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// HTTP routes that invoke the function.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpTrigger>,
    /// Configuration values the function reads through `wasi:config` (not secret).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// What the function may do beyond answering HTTP; nothing unless listed.
    #[serde(default, skip_serializing_if = "Policy::is_empty")]
    pub policy: Policy,
    /// Enforce the policy (the default) or only audit calls beyond it.
    #[serde(default, skip_serializing_if = "is_enforce")]
    pub policy_mode: PolicyMode,
    /// Cron schedules that invoke the function.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleTrigger>,
    /// Present when the function accepts asynchronous invocations, with their retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueTrigger>,
    /// The key set and claims that `auth = "jwt"` routes check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSettings>,
    /// Invocations that may run at once; beyond it callers get 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// When the function stops serving (410 Gone) and is retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Expiry>,
    /// How much CPU it gets: a share growing with its memory (the default), or a full core.
    #[serde(default, skip_serializing_if = "Cpu::is_proportional")]
    pub cpu: Cpu,
    /// The team or person who pays for it (`runway cost --by owner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Its monthly budget (`[function.budget]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<FunctionBudget>,
}

/// `[function.budget]`: the most a calendar month (UTC) may cost, and what happens then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FunctionBudget {
    /// `"20 USD"`, `"$20"` or `"0.50 USD"`.
    pub monthly: Usd,
    /// `alert` (default), `throttle` or `stop` at 100 percent.
    #[serde(default)]
    pub action: BudgetAction,
}

/// What happens when a budget is spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum BudgetAction {
    /// Alerts only (at 50, 80 and 100 percent).
    #[default]
    Alert,
    /// Alerts, and at 100 percent one invocation at a time per function.
    Throttle,
    /// Alerts, and at 100 percent no invocation until the month ends or the budget grows.
    Stop,
}

impl BudgetAction {
    /// The name as written.
    pub fn as_str(&self) -> &'static str {
        match self {
            BudgetAction::Alert => "alert",
            BudgetAction::Throttle => "throttle",
            BudgetAction::Stop => "stop",
        }
    }
}

/// An amount of US dollars, exact to the pico-dollar: `"20 USD"`, `"$20"`, `"0.5"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Usd {
    /// Pico-dollars (10⁻¹² USD).
    pub pico: u64,
}

impl std::str::FromStr for Usd {
    type Err = String;

    fn from_str(text: &str) -> Result<Usd, String> {
        let bad = || {
            format!(
                "invalid amount `{text}`: write US dollars, e.g. \"20 USD\", \"$20\" or \"0.50 USD\""
            )
        };
        let number = text.trim();
        let number = number
            .strip_suffix("USD")
            .or_else(|| number.strip_suffix("usd"))
            .unwrap_or(number)
            .trim();
        let number = number.strip_prefix('$').unwrap_or(number).trim();
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
            || fraction.len() > 12
        {
            return Err(bad());
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let fraction: u64 = format!("{fraction:0<12}").parse().map_err(|_| bad())?;
        let pico = whole
            .checked_mul(1_000_000_000_000)
            .and_then(|p| p.checked_add(fraction))
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                format!("invalid amount `{text}`: give more than 0 and at most $18,000,000")
            })?;
        Ok(Usd { pico })
    }
}

#[cfg(test)]
mod usd_tests {
    use super::Usd;

    #[test]
    fn amounts_parse_exactly_and_print_back() {
        for (text, pico, shown) in [
            ("20 USD", 20_000_000_000_000, "20 USD"),
            ("$20", 20_000_000_000_000, "20 USD"),
            ("0.5", 500_000_000_000, "0.5 USD"),
            ("0.000001 USD", 1_000_000, "0.000001 USD"),
            (" 12.34usd ", 12_340_000_000_000, "12.34 USD"),
        ] {
            let usd: Usd = text.parse().unwrap();
            assert_eq!(usd.pico, pico, "{text}");
            assert_eq!(usd.to_string(), shown);
        }
        for bad in [
            "",
            "USD",
            "twenty",
            "-5",
            "1.0000000000001",
            "0",
            "1e3",
            "99999999 USD",
        ] {
            assert!(bad.parse::<Usd>().is_err(), "{bad}");
        }
    }
}

impl std::fmt::Display for Usd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let whole = self.pico / 1_000_000_000_000;
        let fraction = self.pico % 1_000_000_000_000;
        if fraction == 0 {
            write!(f, "{whole} USD")
        } else {
            let digits = format!("{fraction:012}");
            write!(f, "{whole}.{} USD", digits.trim_end_matches('0'))
        }
    }
}

impl Serialize for Usd {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Usd, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A function's CPU: `cpu = "proportional"` (the default: a share of one core that grows
/// with its memory size, a full core at 1,769 MiB, as on AWS Lambda) or `"unthrottled"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Cpu {
    /// A share of one core proportional to the memory size.
    #[default]
    Proportional,
    /// A full core whatever the memory size (for latency-critical functions; the node's
    /// operator pays for the CPU the memory price does not cover).
    Unthrottled,
}

impl Cpu {
    fn is_proportional(&self) -> bool {
        *self == Cpu::Proportional
    }

    /// The name as written in the manifest.
    pub fn as_str(&self) -> &'static str {
        match self {
            Cpu::Proportional => "proportional",
            Cpu::Unthrottled => "unthrottled",
        }
    }
}

fn is_enforce(mode: &PolicyMode) -> bool {
    *mode == PolicyMode::Enforce
}

impl FunctionConfig {
    /// A function with the default size and timeout and nothing else: no routes, no grants.
    pub fn new(name: FunctionName) -> FunctionConfig {
        FunctionConfig {
            name,
            memory: DEFAULT_MEMORY,
            timeout: DEFAULT_TIMEOUT,
            env: BTreeMap::new(),
            http: Vec::new(),
            config: BTreeMap::new(),
            policy: Policy::default(),
            policy_mode: PolicyMode::Enforce,
            schedules: Vec::new(),
            queue: None,
            jwt: None,
            max_concurrency: None,
            expires: None,
            cpu: Cpu::Proportional,
            owner: None,
            budget: None,
        }
    }

    /// Problems with this function on its own, each a full sentence.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let name = &self.name;
        if self.memory < MIN_MEMORY || self.memory > MAX_MEMORY {
            problems.push(format!(
                "function `{name}`: memory = \"{}\" is outside the allowed range {MIN_MEMORY} to \
                 {MAX_MEMORY}",
                self.memory
            ));
        }
        if !self.memory.bytes().is_multiple_of(ByteSize::mib(1).bytes()) {
            problems.push(format!(
                "function `{name}`: memory = \"{}\" must be a whole number of MiB (it is billed \
                 per MB, as on AWS Lambda)",
                self.memory
            ));
        }
        if self.timeout.millis() == 0 || self.timeout > MAX_TIMEOUT {
            problems.push(format!(
                "function `{name}`: timeout = \"{}\" is outside the allowed range 1ms to \
                 {MAX_TIMEOUT}",
                self.timeout
            ));
        }
        for key in self.env.keys() {
            let valid = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                problems.push(format!(
                    "function `{name}`: env key `{key}` is not a valid variable name (letters, \
                     digits and `_`, not starting with a digit)"
                ));
            }
        }
        for key in self.config.keys() {
            if key.is_empty() || key.len() > 256 {
                problems.push(format!(
                    "function `{name}`: config key `{key}` must be 1 to 256 characters"
                ));
            }
            if self.policy.allows_secret(key) {
                problems.push(format!(
                    "function `{name}`: config key `{key}` is also a granted secret; a function \
                     reads both through wasi:config, so rename one of them"
                ));
            }
        }
        if let Some(owner) = &self.owner
            && (owner.trim().is_empty() || owner.len() > 64 || owner.chars().any(char::is_control))
        {
            problems.push(format!(
                "function `{name}`: owner = {owner:?} must be 1 to 64 printable characters (a team or a person)"
            ));
        }
        for trigger in &self.http {
            // Checked here rather than when a route is parsed, so that a release stored before
            // this check still loads.
            if let Some(problem) = non_canonical_path(trigger.route.base()) {
                problems.push(format!(
                    "function `{name}`: route `{}` can never match: the gateway refuses request \
                     paths with {problem}",
                    trigger.route
                ));
            }
        }
        if self.max_concurrency == Some(0) {
            problems.push(format!(
                "function `{name}`: max_concurrency = 0 would refuse every call; use 1 or more, \
                 or leave it out for no limit"
            ));
        }
        if let Some(queue) = &self.queue {
            problems.extend(queue.problems(name.as_str()));
        }
        for schedule in &self.schedules {
            problems.extend(schedule.problems(name.as_str()));
        }
        let jwt_routes = self
            .http
            .iter()
            .filter(|t| t.auth == InvocationAuth::Jwt)
            .count();
        match &self.jwt {
            None if jwt_routes > 0 => problems.push(format!(
                "function `{name}`: a route has auth = \"jwt\" but there is no [function.jwt] \
                 table with `jwks`, `issuer` and `audience`"
            )),
            Some(_) if jwt_routes == 0 => problems.push(format!(
                "function `{name}`: [function.jwt] is set but no route has auth = \"jwt\"; \
                 remove it or set auth on a route"
            )),
            Some(jwt) => {
                if let Err(err) = runway_access::JwtVerifier::new(jwt) {
                    problems.push(format!("function `{name}`: [function.jwt]: {err}"));
                }
                if jwt.leeway_seconds > runway_access::MAX_LEEWAY.as_secs() {
                    problems.push(format!(
                        "function `{name}`: [function.jwt] leeway is over {}s",
                        runway_access::MAX_LEEWAY.as_secs()
                    ));
                }
            }
            None => {}
        }
        problems
    }
}

/// One `[[function]]` table as written in the manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFunction {
    name: FunctionName,
    component: PathBuf,
    #[serde(default)]
    build: Option<String>,
    #[serde(default = "default_memory")]
    memory: ByteSize,
    #[serde(default = "default_timeout")]
    timeout: HumanDuration,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    trigger: Vec<triggers::RawTrigger>,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    policy: Policy,
    #[serde(default)]
    policy_mode: PolicyMode,
    #[serde(default)]
    jwt: Option<triggers::RawJwt>,
    #[serde(default)]
    max_concurrency: Option<u32>,
    #[serde(default)]
    expires: Option<Expiry>,
    #[serde(default)]
    cpu: Cpu,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    budget: Option<FunctionBudget>,
}

fn default_memory() -> ByteSize {
    DEFAULT_MEMORY
}

fn default_timeout() -> HumanDuration {
    DEFAULT_TIMEOUT
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    function: Vec<RawFunction>,
}

/// A function as the manifest describes it: its configuration plus where its code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSource {
    /// The configuration that will be frozen into a release.
    pub config: FunctionConfig,
    /// The component file, resolved against the manifest's folder.
    pub component: PathBuf,
    /// A shell command that builds the component, run in the manifest's folder.
    pub build: Option<String>,
}

/// A parsed and validated `runway.toml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file.
    pub path: PathBuf,
    /// The folder holding the manifest; relative paths resolve against it.
    pub dir: PathBuf,
    /// Its functions, in the order written.
    pub functions: Vec<FunctionSource>,
}

impl Manifest {
    /// Reads a manifest from `path`, which may be the file or a folder holding `runway.toml`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let file = if path.is_dir() {
            path.join(MANIFEST_FILE)
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Read {
            path: file.clone(),
            source,
        })?;
        Manifest::parse(&file, &text)
    }

    /// Parses manifest text; `path` names the file in messages and anchors relative paths.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse_with(path, text, |file| std::fs::read_to_string(file))
    }

    /// Parses manifest text as [`Manifest::parse`] does, but reads the files it names (a
    /// function's JWKS) through `read_file` rather than from disk, as the fuzz target does.
    pub fn parse_with(
        path: &Path,
        text: &str,
        read_file: impl Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|err| ManifestError::Syntax {
            path: path.to_path_buf(),
            message: err.to_string().trim_end().to_owned(),
        })?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let mut problems = Vec::new();
        let functions: Vec<FunctionSource> = raw
            .function
            .into_iter()
            .map(|f| {
                let name = f.name.clone();
                let mut http = Vec::new();
                let mut schedules = Vec::new();
                let mut queue = None;
                for (index, trigger) in f.trigger.into_iter().enumerate() {
                    let kinds = usize::from(trigger.http.is_some())
                        + usize::from(trigger.schedule.is_some())
                        + usize::from(trigger.queue.is_some());
                    if kinds != 1 {
                        problems.push(format!(
                            "function `{name}`: trigger {} must set exactly one of `http`, \
                             `schedule` or `queue` (it sets {kinds})",
                            index + 1
                        ));
                    }
                    http.extend(trigger.http);
                    schedules.extend(trigger.schedule);
                    if let Some(settings) = trigger.queue {
                        if queue.is_some() {
                            problems.push(format!(
                                "function `{name}`: more than one queue trigger; a function has \
                                 one queue"
                            ));
                        } else {
                            queue = Some(settings);
                        }
                    }
                }
                let jwt = f.jwt.and_then(|raw| {
                    let file = dir.join(&raw.jwks);
                    match read_file(&file) {
                        Ok(jwks) => Some(JwtSettings {
                            issuer: raw.issuer,
                            audience: raw.audience,
                            jwks,
                            leeway_seconds: raw.leeway.map_or(0, |l| l.millis() / 1000),
                        }),
                        Err(err) => {
                            problems.push(format!(
                                "function `{name}`: cannot read the JWKS file {}: {err}",
                                file.display()
                            ));
                            None
                        }
                    }
                });
                FunctionSource {
                    component: dir.join(&f.component),
                    build: f.build,
                    config: FunctionConfig {
                        name: f.name,
                        memory: f.memory,
                        timeout: f.timeout,
                        env: f.env,
                        http,
                        config: f.config,
                        policy: f.policy,
                        policy_mode: f.policy_mode,
                        schedules,
                        queue,
                        jwt,
                        max_concurrency: f.max_concurrency,
                        expires: f.expires,
                        cpu: f.cpu,
                        owner: f.owner,
                        budget: f.budget,
                    },
                }
            })
            .collect();
        if functions.is_empty() {
            problems.push(
                "no functions: add a [[function]] table with at least `name` and `component`"
                    .to_owned(),
            );
        }
        let configs: Vec<&FunctionConfig> = functions.iter().map(|f| &f.config).collect();
        problems.extend(check_functions(&configs));
        if !problems.is_empty() {
            return Err(ManifestError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        Ok(Manifest {
            path: path.to_path_buf(),
            dir,
            functions,
        })
    }
}

/// Whole-set checks: each function's own problems, duplicate names and conflicting routes.
///
/// The server runs the same checks on the set it is about to serve, so a manifest that
/// passes here can still conflict with functions deployed from another manifest.
pub fn check_functions(functions: &[&FunctionConfig]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen: BTreeMap<&FunctionName, usize> = BTreeMap::new();
    for (index, function) in functions.iter().enumerate() {
        problems.extend(function.problems());
        if let Some(first) = seen.insert(&function.name, index) {
            problems.push(format!(
                "function `{}` is defined twice (functions {} and {}): names must be unique",
                function.name,
                first + 1,
                index + 1
            ));
        }
    }
    let triggers: Vec<(&FunctionName, &HttpTrigger)> = functions
        .iter()
        .flat_map(|f| f.http.iter().map(move |t| (&f.name, t)))
        .collect();
    for (i, (name_a, a)) in triggers.iter().enumerate() {
        for (name_b, b) in &triggers[i + 1..] {
            if let Some(conflict) = route::conflict(a, b) {
                problems.push(format!(
                    "route `{}` of function `{name_a}` conflicts with route `{}` of function \
                     `{name_b}`: {conflict}",
                    a.route, b.route
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("app/runway.toml"), text)
    }

    #[test]
    fn applies_defaults_and_resolves_component_against_manifest_folder() {
        let m = parse(
            "[[function]]\nname = \"hello\"\ncomponent = \"hello.wasm\"\n\
             [[function.trigger]]\nhttp = { route = \"/hello\" }\n",
        )
        .unwrap();
        let f = &m.functions[0];
        assert_eq!(f.config.memory, ByteSize::mib(128));
        assert_eq!(f.config.timeout.millis(), 10_000);
        assert_eq!(f.component, PathBuf::from("app/hello.wasm"));
        assert_eq!(f.config.http[0].route.to_string(), "/hello");
    }

    #[test]
    fn rejects_unknown_keys_naming_them() {
        let err = parse("[[function]]\nname = \"a\"\ncomponent = \"a.wasm\"\nmemroy = \"1MiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("app/runway.toml"), "{err}");
        assert!(err.contains("memroy"), "{err}");
    }

    #[test]
    fn rejects_bad_size_naming_the_value() {
        let err = parse("[[function]]\nname = \"a\"\ncomponent = \"a.wasm\"\nmemory = \"12XB\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("12XB"), "{err}");
        assert!(err.contains("memory"), "{err}");
    }

    #[test]
    fn reports_every_duplicate_and_conflict_at_once() {
        let err = parse(
            "[[function]]\nname = \"a\"\ncomponent = \"a.wasm\"\n\
             [[function.trigger]]\nhttp = { route = \"/x\" }\n\
             [[function]]\nname = \"a\"\ncomponent = \"b.wasm\"\n\
             [[function]]\nname = \"c\"\ncomponent = \"c.wasm\"\n\
             [[function.trigger]]\nhttp = { route = \"/x\", methods = [\"GET\"] }\n",
        )
        .unwrap_err();
        let ManifestError::Invalid { problems, .. } = err else {
            panic!("expected Invalid, got {err}");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("defined twice"));
        assert!(problems[1].contains("conflicts"));
    }

    #[test]
    fn disjoint_methods_on_one_route_do_not_conflict() {
        parse(
            "[[function]]\nname = \"a\"\ncomponent = \"a.wasm\"\n\
             [[function.trigger]]\nhttp = { route = \"/x\", methods = [\"GET\"] }\n\
             [[function]]\nname = \"b\"\ncomponent = \"b.wasm\"\n\
             [[function.trigger]]\nhttp = { route = \"/x\", methods = [\"POST\"] }\n",
        )
        .unwrap();
    }

    #[test]
    fn rejects_memory_outside_limits() {
        let err = parse("[[function]]\nname = \"a\"\ncomponent = \"a.wasm\"\nmemory = \"8GiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the allowed range"), "{err}");
    }

    #[test]
    fn config_round_trips_through_json() {
        let m = parse(
            "[[function]]\nname = \"a\"\ncomponent = \"a.wasm\"\nmemory = \"256MiB\"\n\
             timeout = \"1500ms\"\n[[function.trigger]]\nhttp = { route = \"/a/...\" }\n",
        )
        .unwrap();
        let json = serde_json::to_string(&m.functions[0].config).unwrap();
        let back: FunctionConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m.functions[0].config);
        assert!(json.contains("\"256MiB\""), "{json}");
    }
}
