//! Client commands: each talks to a node's admin API.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, bail};
use reqwest::StatusCode;
use runway_manifest::Manifest;
use runway_meter::InvocationStatus;
use runway_server::{
    CostResponse, DeployFunction, DeployRequest, DeployResponse, FunctionInfo, InvokeRequest,
    InvokeResponse, LogsResponse, ReleaseInfo,
};
use sha2::{Digest as _, Sha256};

use crate::client::{AdminClient, ServerArgs};
use crate::table;

#[derive(clap::Args)]
pub struct DeployArgs {
    /// A runway.toml, or a folder holding one.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Skip the manifest's `build` commands and upload the component files as they are.
    #[arg(long)]
    pub no_build: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args.server)?;
    let response = deploy_manifest(&client, &args.path, !args.no_build)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&response)?);
    } else {
        print_deploy(&response);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn print_deploy(response: &DeployResponse) {
    for result in &response.functions {
        let release = &result.release;
        let what = if result.created {
            "deployed"
        } else {
            "unchanged,"
        };
        let routes: Vec<String> = release
            .config
            .http
            .iter()
            .map(|t| t.route.to_string())
            .collect();
        println!(
            "{} {what} release {} ({} memory, {} timeout, artifact {}) {}",
            release.config.name,
            release.number,
            release.config.memory,
            release.config.timeout,
            release.digest.short(),
            routes.join(" "),
        );
        if release.config.policy_mode == runway_policy::PolicyMode::Audit {
            println!(
                "  policy_mode = audit: calls beyond the policy are let through and recorded \
                 (see `runway policy suggest {}`)",
                release.config.name
            );
        }
        if let Some(vetting) = &release.vetting {
            for (import, needs) in vetting.not_granted() {
                println!("  not granted, calls refused and audited: {import} (allow with {needs})");
            }
        }
        for schedule in &release.config.schedules {
            println!(
                "  schedule: {} ({}) POST {}",
                schedule.cron.as_str(),
                String::from(schedule.timezone),
                schedule.path
            );
        }
    }
    for warning in &response.warnings {
        println!("warning: {warning}");
    }
}

/// Builds, uploads and deploys a manifest; shared by `deploy` and `up`.
pub fn deploy_manifest(
    client: &AdminClient,
    path: &Path,
    build: bool,
) -> anyhow::Result<DeployResponse> {
    let manifest = Manifest::load(path)?;
    if build {
        let mut done = BTreeSet::new();
        for function in &manifest.functions {
            let Some(command) = &function.build else {
                continue;
            };
            if !done.insert(command.clone()) {
                continue;
            }
            let targets = runway_cli::toolchain::targets_in_command(command);
            for state in
                runway_cli::toolchain::ensure_targets(&manifest.dir, &targets).map_err(|err| {
                    anyhow::anyhow!(
                        "{}: cannot build function `{}`: {err}",
                        manifest.path.display(),
                        function.config.name
                    )
                })?
            {
                if let runway_cli::toolchain::TargetState::Installed(target) = state {
                    eprintln!("installed the Rust target {target} (rustup target add {target})");
                }
            }
            eprintln!("building {}: {command}", function.config.name);
            let status = Command::new("sh")
                .arg("-c")
                .arg(command)
                .current_dir(&manifest.dir)
                .stdout(std::process::Stdio::inherit())
                .status()
                .with_context(|| {
                    format!(
                        "while running the build command of `{}`",
                        function.config.name
                    )
                })?;
            if !status.success() {
                bail!(
                    "{}: the build command of function `{}` failed ({status}); nothing was deployed",
                    manifest.path.display(),
                    function.config.name
                );
            }
        }
    }
    let mut functions = Vec::new();
    for function in &manifest.functions {
        let bytes = std::fs::read(&function.component).with_context(|| {
            format!(
                "{}: cannot read the component of function `{}` at {}{}",
                manifest.path.display(),
                function.config.name,
                function.component.display(),
                if function.build.is_some() {
                    " (did its build produce it?)"
                } else {
                    ""
                }
            )
        })?;
        let digest = hex::encode(Sha256::digest(&bytes));
        let exists = client.send(client.head(&format!("/v1/artifacts/{digest}")))?;
        if exists.status() == StatusCode::NOT_FOUND {
            eprintln!(
                "uploading {} ({} KiB, sha256 {})",
                function.config.name,
                bytes.len().div_ceil(1024),
                &digest[..12]
            );
            let response = client.send(
                client
                    .put(&format!("/v1/artifacts/{digest}"))
                    .header("content-type", "application/wasm")
                    .body(bytes),
            )?;
            let _: serde_json::Value = crate::client::decode(response).with_context(|| {
                format!(
                    "the node refused the component of function `{}`",
                    function.config.name
                )
            })?;
        }
        // A signature made by `runway sign` travels with the component.
        let signature_file = crate::signing_cmds::signature_path(&function.component);
        if signature_file.is_file() {
            let text = std::fs::read_to_string(&signature_file)
                .with_context(|| format!("while reading {}", signature_file.display()))?;
            let signature =
                runway_signing::parse_signature(&text, &signature_file.display().to_string())?;
            if signature.digest != digest {
                bail!(
                    "{} signs artifact {} but {} is now {}: it was rebuilt after signing; \
                     sign it again with `runway sign` (nothing was deployed)",
                    signature_file.display(),
                    &signature.digest[..12.min(signature.digest.len())],
                    function.component.display(),
                    &digest[..12]
                );
            }
            let response = client.send(
                client
                    .put(&format!("/v1/artifacts/{digest}/signature"))
                    .header("content-type", "application/json")
                    .body(text),
            )?;
            let _: serde_json::Value = crate::client::decode(response).with_context(|| {
                format!(
                    "the node refused the signature {}",
                    signature_file.display()
                )
            })?;
        }
        functions.push(DeployFunction {
            digest: digest.try_into().map_err(anyhow::Error::msg)?,
            config: function.config.clone(),
        });
    }
    client
        .json(client.post("/v1/deploy").json(&DeployRequest { functions }))
        .with_context(|| {
            format!(
                "the node refused to deploy {}; nothing changed",
                manifest.path.display()
            )
        })
}

#[derive(clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Only functions that expire within this long (e.g. 30d), or already have.
    #[arg(long, value_name = "DURATION")]
    pub expiring: Option<String>,
}

pub fn ls(args: LsArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args.server)?;
    let mut functions: Vec<FunctionInfo> = client.json(client.get("/v1/functions"))?;
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    if let Some(window) = &args.expiring {
        let window = crate::access_cmds::within(window)?.as_millis() as i64;
        functions.retain(|f| f.expires_at_ms.is_some_and(|at| at - now <= window));
        functions.sort_by_key(|f| f.expires_at_ms);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&functions)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = functions
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                f.memory.to_string(),
                format!("{:.0}%", f.cpu_share * 100.0),
                f.timeout.to_string(),
                if f.revoked {
                    format!("{} (revoked)", f.release)
                } else {
                    f.release.to_string()
                },
                triggers(f),
                f.invocations.to_string(),
                table::usd(f.cost),
                expiry(f, now),
            ]
        })
        .collect();
    if args.expiring.is_some() && rows.is_empty() {
        println!(
            "no function expires within {}",
            args.expiring.unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    table::print(
        &[
            "NAME",
            "MEMORY",
            "CPU",
            "TIMEOUT",
            "RELEASE",
            "TRIGGERS",
            "INVOCATIONS",
            "COST",
            "EXPIRES",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

/// Routes, schedules and the queue, in one cell.
fn triggers(f: &FunctionInfo) -> String {
    let mut parts = f.routes.clone();
    parts.extend(f.schedules.iter().map(|s| format!("cron({s})")));
    if f.queue {
        parts.push("queue".into());
    }
    parts.join(" ")
}

/// `-`, the expiry time, with a warning inside 14 days, or `retired`.
fn expiry(f: &FunctionInfo, now: i64) -> String {
    let Some(at) = f.expires_at_ms else {
        return "-".into();
    };
    if f.retired || at <= now {
        return format!("retired ({})", table::time(at));
    }
    let days = (at - now) / 86_400_000;
    if at - now <= runway_server::EXPIRY_WARNING.as_millis() as i64 {
        format!("{} (in {days}d!)", table::time(at))
    } else {
        format!("{} (in {days}d)", table::time(at))
    }
}

#[derive(clap::Args)]
pub struct InvokeArgs {
    /// The function to invoke.
    pub name: String,
    /// Path and query to send (default: the function's first route).
    #[arg(long)]
    pub path: Option<String>,
    /// Request body; the method defaults to POST when given.
    #[arg(long)]
    pub data: Option<String>,
    /// HTTP method.
    #[arg(long)]
    pub method: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print the response and record as JSON.
    #[arg(long)]
    pub json: bool,
    /// Enqueue instead of waiting: prints the job id at once (the function needs a queue
    /// trigger); `runway queue show ID` follows it.
    #[arg(long = "async")]
    pub asynchronous: bool,
}

pub fn invoke(args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args.server)?;
    let request = InvokeRequest {
        method: args.method,
        path: args.path,
        body: args.data,
        headers: Default::default(),
    };
    if args.asynchronous {
        let queued: runway_server::EnqueueResponse = client.json(
            client
                .post(&format!("/v1/functions/{}/enqueue", args.name))
                .json(&request),
        )?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&queued)?);
        } else {
            println!("{}", queued.id);
            eprintln!("queued; `runway queue show {}` follows it", queued.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let response: InvokeResponse = client.json(
        client
            .post(&format!("/v1/functions/{}/invoke", args.name))
            .json(&request),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&response)?);
    } else {
        print!("{}", response.body);
        if !response.body.is_empty() && !response.body.ends_with('\n') {
            println!();
        }
        if response.body_truncated {
            eprintln!(
                "(response body truncated at {} bytes)",
                runway_server::INVOKE_BODY_LIMIT
            );
        }
        eprintln!(
            "HTTP {} status={}",
            response.status,
            response.record.status.as_str()
        );
        if let Some(error) = &response.record.error {
            eprintln!("ERROR {error}");
        }
        eprintln!("{}", response.report);
    }
    Ok(if response.record.status == InvocationStatus::Ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_INVOCATION_FAILED)
    })
}

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The function whose logs to print.
    pub name: String,
    /// Keep printing new lines as they arrive.
    #[arg(long, short)]
    pub follow: bool,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

pub fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args.server)?;
    let mut follower = LogFollower::default();
    loop {
        // Each round reads from the last settled line, so a line that became visible below
        // one already printed is still printed, once.
        let mut after = follower.floor;
        loop {
            let page: LogsResponse = client.json(
                client
                    .get(&format!("/v1/functions/{}/logs", args.name))
                    .query(&[("after", after)]),
            )?;
            let now = Instant::now();
            for entry in page.entries.iter().filter(|e| follower.fresh(e.id, now)) {
                if args.json {
                    println!("{}", serde_json::to_string(entry)?);
                } else {
                    let at = humantime::format_rfc3339_millis(
                        UNIX_EPOCH + Duration::from_millis(entry.at_ms as u64),
                    );
                    println!("{at} {:<8} {}", entry.stream.as_str(), entry.line);
                }
            }
            if page.entries.is_empty() {
                break;
            }
            after = page.next_after;
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        follower.settle(Instant::now());
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Which log lines `runway logs --follow` has printed. A line's id is given when it is
/// written and it becomes visible when its batch commits, so a line may appear below one
/// already printed: another node's batch, or the other half of a large batch. Lines are
/// re-read until they are [`LOG_SETTLE`] old, and each is printed once.
#[derive(Default)]
struct LogFollower {
    /// Every line at or below this id has been printed or will never appear.
    floor: i64,
    /// Lines above the floor already printed, with when they were first seen.
    seen: std::collections::BTreeMap<i64, Instant>,
}

/// How long a batch may take to commit after another's lines were seen; far longer than a
/// batch takes.
const LOG_SETTLE: Duration = Duration::from_secs(2);

impl LogFollower {
    /// Whether line `id` is new (and now counted as printed).
    fn fresh(&mut self, id: i64, now: Instant) -> bool {
        if id <= self.floor || self.seen.contains_key(&id) {
            return false;
        }
        self.seen.insert(id, now);
        true
    }

    /// Raises the floor over the lowest lines seen at least [`LOG_SETTLE`] ago.
    fn settle(&mut self, now: Instant) {
        while let Some((&id, &at)) = self.seen.first_key_value() {
            if now.duration_since(at) < LOG_SETTLE {
                break;
            }
            self.floor = id;
            self.seen.remove(&id);
        }
    }
}

#[derive(clap::Args)]
pub struct CostArgs {
    /// Period to sum, ending now (e.g. `1h`, `24h`, `30d`).
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Group by function, env, release or owner, across every environment (or only `--env`).
    #[arg(long, value_enum)]
    pub by: Option<CostBy>,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `runway cost --by` groups by.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum CostBy {
    Function,
    Env,
    Release,
    Owner,
}

fn cost_breakdown(args: &CostArgs, by: CostBy) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args.server)?;
    let by_name = match by {
        CostBy::Function => "function",
        CostBy::Env => "env",
        CostBy::Release => "release",
        CostBy::Owner => "owner",
    };
    let scope = if args.server.env.is_some() {
        "env"
    } else {
        "all"
    };
    let report: runway_server::CostBreakdown =
        client.json(client.get("/v1/cost/breakdown").query(&[
            ("by", by_name),
            ("since", &args.since),
            ("scope", scope),
        ]))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let group = |r: &runway_server::CostRow| match by {
        CostBy::Function => format!(
            "{}/{}",
            r.environment.as_deref().unwrap_or("?"),
            r.function.as_deref().unwrap_or("?")
        ),
        CostBy::Env => r.environment.clone().unwrap_or_default(),
        CostBy::Release => format!(
            "{}/{}@{}",
            r.environment.as_deref().unwrap_or("?"),
            r.function.as_deref().unwrap_or("?"),
            r.release.unwrap_or(0)
        ),
        CostBy::Owner => match r.owner.as_deref() {
            Some("") | None => "(no owner)".to_owned(),
            Some(owner) => owner.to_owned(),
        },
    };
    let rows: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|r| {
            vec![
                group(r),
                r.invocations.to_string(),
                r.failures.to_string(),
                format!("{:.6}", r.gb_seconds),
                table::usd(r.cost),
                format!(
                    "{:.2} ms",
                    r.duration_us as f64 / 1000.0 / r.invocations.max(1) as f64
                ),
            ]
        })
        .collect();
    println!(
        "since {} ({}), by {by_name}:",
        args.since,
        report.environments.join(", ")
    );
    table::print(
        &[
            &by_name.to_uppercase(),
            "INVOCATIONS",
            "FAILURES",
            "GB-SECONDS",
            "COST",
            "MEAN DURATION",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

pub fn cost(args: CostArgs) -> anyhow::Result<ExitCode> {
    if let Some(by) = args.by {
        return cost_breakdown(&args, by);
    }
    let client = AdminClient::new(&args.server)?;
    let report: CostResponse =
        client.json(client.get("/v1/cost").query(&[("since", &args.since)]))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let row = |u: &runway_server::Usage| {
        vec![
            u.function.clone(),
            u.invocations.to_string(),
            u.failures.to_string(),
            format!("{:.6}", u.gb_seconds),
            table::usd(u.cost),
        ]
    };
    let mut rows: Vec<Vec<String>> = report.functions.iter().map(row).collect();
    rows.push(row(&report.total));
    println!("since {}:", args.since);
    table::print(
        &["FUNCTION", "INVOCATIONS", "FAILURES", "GB-SECONDS", "COST"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct ReleasesArgs {
    /// The function whose releases to list.
    pub name: String,
    #[command(flatten)]
    pub server: ServerArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `enforce, 3 grants, 1 import not granted` for the releases table.
fn policy_summary(release: &ReleaseInfo) -> String {
    let policy = &release.policy;
    let grants = policy.sql.len() + policy.kv.len() + policy.outbound.len() + policy.secrets.len();
    let mut summary = format!("{}, {grants} grants", release.policy_mode.as_str());
    if let Some(vetting) = &release.vetting {
        let refused = vetting.not_granted().count();
        if refused > 0 {
            summary.push_str(&format!(", {refused} imports not granted"));
        }
    }
    summary
}

pub fn releases(args: ReleasesArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args.server)?;
    let releases: Vec<ReleaseInfo> =
        client.json(client.get(&format!("/v1/functions/{}/releases", args.name)))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&releases)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = releases
        .iter()
        .map(|r| {
            vec![
                format!(
                    "{}{}{}",
                    r.number,
                    if r.current { " *" } else { "" },
                    if r.revoked { " (revoked)" } else { "" }
                ),
                r.digest.short().to_owned(),
                r.memory.to_string(),
                r.timeout.to_string(),
                r.routes.join(" "),
                humantime::format_rfc3339_seconds(
                    UNIX_EPOCH + Duration::from_millis(r.created_at_ms as u64),
                )
                .to_string(),
                policy_summary(r),
                r.deployed_by.clone().unwrap_or_else(|| "-".into()),
                r.origin.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table::print(
        &[
            "RELEASE", "ARTIFACT", "MEMORY", "TIMEOUT", "ROUTES", "CREATED", "POLICY", "BY",
            "ORIGIN",
        ],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_that_appears_below_one_printed_is_printed_once() {
        let start = Instant::now();
        let mut follower = LogFollower::default();
        // Lines 1, 2 and 4 are visible; 3's batch has not committed yet.
        assert!([1, 2, 4].iter().all(|id| follower.fresh(*id, start)));
        follower.settle(start + Duration::from_millis(500));
        assert_eq!(follower.floor, 0, "nothing has settled yet");
        // The next round reads from the floor again: 3 is new, the others are not.
        let later = start + Duration::from_millis(600);
        assert!(follower.fresh(3, later));
        assert!(![1, 2, 4].iter().any(|id| follower.fresh(*id, later)));
        // Two seconds on, 1, 2 and 4 are settled; 3 (seen later) holds the floor below it.
        follower.settle(start + LOG_SETTLE);
        assert_eq!(follower.floor, 2);
        follower.settle(later + LOG_SETTLE);
        assert_eq!(follower.floor, 4);
        assert!(!follower.fresh(3, later + LOG_SETTLE));
    }
}
