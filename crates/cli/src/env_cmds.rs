//! Environments and promotion: `runway env create|ls|rm` and `runway promote`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use runway_server::{
    CreateEnvironmentRequest, CreatedEnvironment, EnvironmentInfo, PromoteRequest, PromoteResponse,
    RemovedEnvironment,
};

use crate::client::{AdminClient, ServerArgs};
use crate::table;

#[derive(clap::Subcommand)]
pub enum EnvCommand {
    /// Create an environment, empty or from another one's releases (shared by digest, with
    /// its SQL schema; data and secrets only when asked).
    Create {
        /// Its name: lower-case letters, digits and hyphens (reached as NAME.localhost).
        name: String,
        /// Start with this environment's releases and SQL schema.
        #[arg(long)]
        from: Option<String>,
        /// Remove it with everything in it after this long, e.g. 72h, 14d.
        #[arg(long)]
        ttl: Option<String>,
        /// Copy the SQL rows and the key-value store too.
        #[arg(long, requires = "from")]
        copy_data: bool,
        /// Copy the secrets too.
        #[arg(long, requires = "from")]
        copy_secrets: bool,
        /// Require every artifact deployed here to be signed by one of these public keys.
        #[arg(long, value_name = "FILE")]
        trusted_keys: Option<PathBuf>,
        /// Refuse components that import a capability their policy does not grant.
        #[arg(long)]
        strict_vetting: bool,
        /// Refuse functions in policy audit mode.
        #[arg(long)]
        production: bool,
        /// Fire the copied functions' schedules (a copy's schedules are paused by default, so
        /// it does not repeat the source's scheduled work).
        #[arg(long)]
        schedules: bool,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List environments: age, time left, functions and cost so far.
    Ls {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove an environment with its functions, data, secrets, API keys and tokens.
    Rm {
        /// The environment.
        name: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(clap::Args)]
pub struct PromoteArgs {
    /// The function.
    pub name: String,
    /// The environment whose serving release is promoted.
    #[arg(long)]
    pub from: String,
    /// The environment that receives it (default: --env, else the node's home environment).
    #[arg(long)]
    pub to: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `1 function`, `2 functions`.
fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// A duration for tables, to the minute.
fn span(ms: i64) -> String {
    let minutes = (ms.max(0) / 60_000) as u64;
    if minutes == 0 {
        return "<1m".into();
    }
    humantime::format_duration(Duration::from_secs(minutes * 60)).to_string()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn rules(env: &EnvironmentInfo) -> String {
    let mut rules = Vec::new();
    if !env.trusted_keys.is_empty() {
        rules.push(format!("signed({})", env.trusted_keys.join(",")));
    }
    if env.strict_vetting {
        rules.push("strict".to_owned());
    }
    if env.production {
        rules.push("production".to_owned());
    }
    if env.schedules_paused {
        rules.push("schedules-paused".to_owned());
    }
    if rules.is_empty() {
        "-".into()
    } else {
        rules.join(" ")
    }
}

pub fn env(command: EnvCommand) -> anyhow::Result<ExitCode> {
    match command {
        EnvCommand::Create {
            name,
            from,
            ttl,
            copy_data,
            copy_secrets,
            trusted_keys,
            strict_vetting,
            production,
            schedules,
            json,
            server,
        } => {
            let trusted_keys = trusted_keys
                .map(|path| {
                    std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read --trusted-keys {}", path.display()))
                })
                .transpose()?;
            let client = AdminClient::new(&server)?.for_env(None);
            let created: CreatedEnvironment =
                client.json(client.post("/v1/envs").json(&CreateEnvironmentRequest {
                    name,
                    from: from.clone(),
                    ttl,
                    copy_data,
                    copy_secrets,
                    trusted_keys,
                    strict_vetting,
                    production,
                    schedules: schedules.then_some(true),
                }))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
                return Ok(ExitCode::SUCCESS);
            }
            let env = &created.environment;
            match &from {
                Some(from) => println!(
                    "created environment {} from {from} in {:.1} ms: {} serving (shared by digest), SQL schema{}, {} copied",
                    env.name,
                    created.took_ms,
                    count(created.copied_functions, "function"),
                    if created.copied_data {
                        " and data, key-value data"
                    } else {
                        " (no rows)"
                    },
                    count(created.copied_secrets, "secret")
                ),
                None => println!(
                    "created empty environment {} in {:.1} ms",
                    env.name, created.took_ms
                ),
            }
            println!("  reach it at {}", env.url);
            println!("  deploy to it with `runway deploy --env {}`", env.name);
            if let Some(at) = env.expires_at_ms {
                println!(
                    "  removed with everything in it at {} (in {})",
                    table::time(at),
                    span(at - now_ms())
                );
            }
        }
        EnvCommand::Ls { json, server } => {
            let client = AdminClient::new(&server)?.for_env(None);
            let envs: Vec<EnvironmentInfo> = client.json(client.get("/v1/envs"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&envs)?);
                return Ok(ExitCode::SUCCESS);
            }
            let now = now_ms();
            let rows: Vec<Vec<String>> = envs
                .iter()
                .map(|e| {
                    vec![
                        if e.home {
                            format!("{} (home)", e.name)
                        } else {
                            e.name.clone()
                        },
                        span(now - e.created_at_ms),
                        e.expires_at_ms
                            .map_or_else(|| "never".to_owned(), |at| span(at - now)),
                        e.functions.to_string(),
                        e.invocations.to_string(),
                        table::usd(e.cost),
                        e.source.clone().unwrap_or_else(|| "-".into()),
                        rules(e),
                        e.url.clone(),
                    ]
                })
                .collect();
            table::print(
                &[
                    "ENVIRONMENT",
                    "AGE",
                    "TIME LEFT",
                    "FUNCTIONS",
                    "INVOCATIONS",
                    "COST",
                    "FROM",
                    "RULES",
                    "URL",
                ],
                &rows,
            );
        }
        EnvCommand::Rm { name, server } => {
            let client = AdminClient::new(&server)?.for_env(None);
            let removed: RemovedEnvironment =
                client.json(client.delete(&format!("/v1/envs/{name}")))?;
            println!(
                "removed environment {} with its {}, data, secrets, API keys and tokens",
                removed.name,
                count(removed.functions, "function")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn promote(args: PromoteArgs) -> anyhow::Result<ExitCode> {
    let to = args.to.clone().or_else(|| args.server.env.clone());
    let client = AdminClient::new(&args.server)?.for_env(to);
    let response: PromoteResponse = client.json(
        client
            .post(&format!("/v1/functions/{}/promote", args.name))
            .json(&PromoteRequest {
                from: args.from.clone(),
            }),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&response)?);
        return Ok(ExitCode::SUCCESS);
    }
    let release = &response.result.release;
    println!(
        "promoted {} release {} from {} to {}: now release {}{} there, artifact {}",
        response.function,
        response.from_release,
        response.from,
        response.to,
        release.number,
        if response.result.created {
            ""
        } else {
            " (unchanged: already its latest)"
        },
        release.digest.short()
    );
    for warning in &response.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(ExitCode::SUCCESS)
}
