//! Least-privilege commands: inspect, audit, secret, sql, policy.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use runway_policy::{ImportVerdict, Policy, vet};
use runway_server::{
    AuditResponse, ControlAuditResponse, SecretInfo, SecretsResponse, SqlRowsResponse,
    SuggestResponse,
};

use crate::client::{AdminClient, ServerArgs};
use crate::table;

use crate::table::time;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// A component file (.wasm), or the name of a deployed function.
    pub file: PathBuf,
    /// With a function name: this release instead of the one being served.
    #[arg(long)]
    pub release: Option<u32>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn verdict_text(verdict: &ImportVerdict) -> String {
    match verdict {
        ImportVerdict::Provided => "provided to every function".to_owned(),
        ImportVerdict::Granted { .. } => "granted by the policy".to_owned(),
        ImportVerdict::NotGranted { needs } => format!("not granted: calls refused ({needs})"),
        ImportVerdict::NeverProvided { why } => format!("never provided: {why}"),
    }
}

/// `runway inspect NAME [--release N]`: a release's stored vetting report.
fn inspect_release(args: &InspectArgs, name: &str) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args.server)?;
    let releases: Vec<runway_server::ReleaseInfo> =
        client.json(client.get(&format!("/v1/functions/{name}/releases")))?;
    let release = match args.release {
        Some(number) => releases
            .iter()
            .find(|r| r.number == number)
            .with_context(|| {
                format!(
                    "function `{name}` has no release {number}; `runway releases {name}` lists them"
                )
            })?,
        None => releases
            .iter()
            .find(|r| r.current)
            .or_else(|| releases.first())
            .with_context(|| format!("function `{name}` has no releases"))?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(release)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{name} release {}{}",
        release.number,
        if release.current { " (serving)" } else { "" }
    );
    println!(
        "artifact   sha256:{}{}",
        release.digest,
        if release.revoked {
            " (REVOKED: it can never serve again)"
        } else {
            ""
        }
    );
    println!("created    {}", time(release.created_at_ms));
    println!("memory     {}, timeout {}", release.memory, release.timeout);
    println!("policy     {}", release.policy_mode.as_str());
    let Some(vetting) = &release.vetting else {
        println!("vetting    none recorded (released before vetting existed)");
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(size) = vetting.size_bytes {
        println!("size       {} KiB", size.div_ceil(1024));
    }
    println!(
        "signature  {}",
        vetting.signed_by.as_deref().map_or_else(
            || "not checked (the node requires none)".to_owned(),
            |key| format!("verified, trusted key {key}")
        )
    );
    println!(
        "
imports:"
    );
    let rows: Vec<Vec<String>> = vetting
        .imports
        .iter()
        .map(|i| vec![format!("  {}", i.import), verdict_text(&i.verdict)])
        .collect();
    table::print(&["  INTERFACE", "VERDICT"], &rows);
    Ok(ExitCode::SUCCESS)
}

/// `runway inspect FILE`: the component's interface and the policy its imports need.
pub fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    if !args.file.exists()
        && let Some(name) = args
            .file
            .to_str()
            .filter(|n| runway_manifest::FunctionName::try_from(*n).is_ok())
    {
        return inspect_release(&args, name);
    }
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let interfaces = runway_runtime::component_interfaces(&bytes)
        .with_context(|| format!("{} is not a deployable component", args.file.display()))?;
    let report = vet(&interfaces.imports, &Policy::default());
    if args.json {
        let json = serde_json::json!({
            "file": args.file,
            "imports": report.imports,
            "exports": interfaces.exports,
            "least_policy": report.least_policy(),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", args.file.display());
    println!("\nimports:");
    let rows: Vec<Vec<String>> = report
        .imports
        .iter()
        .map(|i| {
            let what = match &i.verdict {
                ImportVerdict::Provided => "provided to every function".to_owned(),
                ImportVerdict::Granted { .. } => "configuration (no grant needed)".to_owned(),
                ImportVerdict::NotGranted { needs } => format!("needs a grant: {needs}"),
                ImportVerdict::NeverProvided { why } => format!("never provided: {why}"),
            };
            vec![format!("  {}", i.import), what]
        })
        .collect();
    table::print(&["  INTERFACE", "RUNWAY"], &rows);
    println!("\nexports:");
    for export in &interfaces.exports {
        println!("  {export}");
    }
    println!(
        "\nleast policy (fill in the placeholders; `runway policy suggest` fills them from \
         observed use):\n"
    );
    print!("{}", report.least_policy());
    Ok(ExitCode::SUCCESS)
}

/// Which part of the audit log `runway audit` shows.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// Control-plane actions and policy denials.
    All,
    /// Control-plane actions: who did what, to what, when, and how it ended.
    Control,
    /// Policy denials and audit-mode would-be denials.
    Policy,
}

#[derive(clap::Args)]
pub struct AuditArgs {
    /// Only this function (policy records, and control-plane actions that target it).
    #[arg(long)]
    pub function: Option<String>,
    /// At most this many records of each kind (the newest).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Which records.
    #[arg(long, value_enum, default_value = "all")]
    pub kind: AuditKind,
    /// Print as JSON: an array for one kind, `{"control": [...], "policy": [...]}` for all.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

fn newest<T>(mut records: Vec<T>, limit: u32) -> Vec<T> {
    let skip = records.len().saturating_sub(limit as usize);
    records.drain(..skip);
    records
}

/// `runway audit`: control-plane actions and policy denials, oldest first.
pub fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args.server)?;
    let mut control = Vec::new();
    if args.kind != AuditKind::Policy {
        let mut after = 0;
        loop {
            let page: ControlAuditResponse = client.json(
                client
                    .get("/v1/audit/control")
                    .query(&[("after", after.to_string())]),
            )?;
            if page.records.is_empty() {
                break;
            }
            after = page.next_after;
            control.extend(
                page.records
                    .into_iter()
                    .filter(|r| args.function.as_ref().is_none_or(|f| r.target == *f)),
            );
        }
    }
    let mut policy = Vec::new();
    if args.kind != AuditKind::Control {
        let mut after = 0;
        loop {
            let mut request = client
                .get("/v1/audit")
                .query(&[("after", after.to_string())]);
            if let Some(function) = &args.function {
                request = request.query(&[("function", function)]);
            }
            let page: AuditResponse = client.json(request)?;
            if page.records.is_empty() {
                break;
            }
            after = page.next_after;
            policy.extend(page.records);
        }
    }
    let control = newest(control, args.limit);
    let policy = newest(policy, args.limit);
    if args.json {
        let json = match args.kind {
            AuditKind::Control => serde_json::to_string_pretty(&control)?,
            AuditKind::Policy => serde_json::to_string_pretty(&policy)?,
            AuditKind::All => serde_json::to_string_pretty(
                &serde_json::json!({ "control": control, "policy": policy }),
            )?,
        };
        println!("{json}");
        return Ok(ExitCode::SUCCESS);
    }
    if args.kind != AuditKind::Policy {
        if control.is_empty() {
            println!("no control-plane actions recorded");
        } else {
            let rows: Vec<Vec<String>> = control
                .iter()
                .map(|r| {
                    vec![
                        time(r.at_ms),
                        r.actor.clone(),
                        r.action.clone(),
                        r.target.clone(),
                        format!("{} {}", r.outcome, r.status),
                        r.detail.clone(),
                    ]
                })
                .collect();
            table::print(
                &["TIME", "TOKEN", "ACTION", "TARGET", "OUTCOME", "DETAIL"],
                &rows,
            );
        }
    }
    if args.kind == AuditKind::All {
        println!();
    }
    if args.kind != AuditKind::Control {
        if policy.is_empty() {
            println!("no policy denials recorded");
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = policy
            .iter()
            .map(|r| {
                vec![
                    time(r.at_ms),
                    r.environment.clone(),
                    r.function.clone(),
                    r.release.to_string(),
                    r.capability.clone(),
                    r.operation.clone(),
                    r.target.clone(),
                    r.decision.clone(),
                ]
            })
            .collect();
        table::print(
            &[
                "TIME",
                "ENV",
                "FUNCTION",
                "RELEASE",
                "CAPABILITY",
                "OPERATION",
                "TARGET",
                "DECISION",
            ],
            &rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Subcommand)]
pub enum SecretCommand {
    /// Set a secret; the value is read from standard input (one trailing newline dropped).
    Set {
        /// The secret's name, e.g. PAYMENT_KEY.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List secret names (never values).
    Ls {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `runway secret set|ls`.
pub fn secret(command: SecretCommand) -> anyhow::Result<ExitCode> {
    match command {
        SecretCommand::Set { name, server } => {
            let mut value = String::new();
            std::io::stdin()
                .read_to_string(&mut value)
                .context("cannot read the secret's value from standard input")?;
            let value = value
                .strip_suffix('\n')
                .map(|v| v.strip_suffix('\r').unwrap_or(v))
                .unwrap_or(&value)
                .to_owned();
            if value.is_empty() {
                bail!(
                    "no value on standard input: pipe it in, e.g. `printf %s \"$VALUE\" | runway \
                     secret set {name}` (values are never taken as arguments, which shells log)"
                );
            }
            let client = AdminClient::new(&server)?;
            let request = client.put(&format!("/v1/secrets/{name}")).body(value);
            let info: SecretInfo = client.json(request)?;
            println!("secret {} set ({})", info.name, time(info.updated_at_ms));
        }
        SecretCommand::Ls { json, server } => {
            let client = AdminClient::new(&server)?;
            let request = client.get("/v1/secrets");
            let list: SecretsResponse = client.json(request)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let rows: Vec<Vec<String>> = list
                    .secrets
                    .iter()
                    .map(|s| vec![s.name.clone(), time(s.updated_at_ms)])
                    .collect();
                table::print(&["NAME", "UPDATED"], &rows);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Subcommand)]
pub enum SqlCommand {
    /// Apply a SQL file (schema, seed data) to the environment's database in one transaction.
    Apply {
        /// The SQL file.
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Run a read-only query as the operator.
    Query {
        /// The SQL statement.
        statement: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `runway sql apply|query`.
pub fn sql(command: SqlCommand) -> anyhow::Result<ExitCode> {
    match command {
        SqlCommand::Apply { file, server } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let client = AdminClient::new(&server)?;
            let request = client.post("/v1/sql/apply").body(text);
            let answer: serde_json::Value = client
                .json(request)
                .with_context(|| format!("while applying {}", file.display()))?;
            println!(
                "applied {} to environment {}",
                file.display(),
                answer["environment"].as_str().unwrap_or("?")
            );
        }
        SqlCommand::Query {
            statement,
            json,
            server,
        } => {
            let client = AdminClient::new(&server)?;
            let request = client.post("/v1/sql/query").body(statement);
            let rows: SqlRowsResponse = client.json(request)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                let header: Vec<&str> = rows.columns.iter().map(String::as_str).collect();
                let cells: Vec<Vec<String>> = rows
                    .rows
                    .iter()
                    .map(|row| {
                        row.iter()
                            .map(|v| match v {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            })
                            .collect()
                    })
                    .collect();
                table::print(&header, &cells);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Subcommand)]
pub enum PolicyCommand {
    /// Print the least [function.policy] covering what the function was observed doing.
    Suggest {
        /// The function.
        name: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// `runway policy suggest NAME`.
pub fn policy(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    let PolicyCommand::Suggest { name, json, server } = command;
    let client = AdminClient::new(&server)?;
    let suggestion: SuggestResponse =
        client.json(client.get(&format!("/v1/functions/{name}/policy/suggest")))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&suggestion)?);
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "# {} audit record(s) observed for `{name}`; paste into its [[function]] in runway.toml",
        suggestion.observed
    );
    print!("{}", suggestion.toml);
    for attempt in &suggestion.never_grantable {
        eprintln!(
            "# not grantable, the function must stop: {} {} `{}`",
            attempt.capability, attempt.operation, attempt.target
        );
    }
    Ok(ExitCode::SUCCESS)
}
