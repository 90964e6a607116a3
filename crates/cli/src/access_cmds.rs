//! Access, triggers and lifespan commands: `token`, `key`, `queue` and `extend`.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use runway_server::{
    ApiKeyInfo, CreateKeyRequest, CreateTokenRequest, CreatedKey, CreatedToken, DeployResponse,
    ExtendRequest, Job, JobState, JobsResponse, Role, TokenInfo,
};

use crate::client::{AdminClient, ServerArgs};
use crate::table::{self, time};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn status(expires: Option<i64>, revoked: Option<i64>) -> String {
    if let Some(at) = revoked {
        return format!("revoked {}", time(at));
    }
    match expires {
        None => "never expires".into(),
        Some(at) if at <= now_ms() => format!("expired {}", time(at)),
        Some(at) => format!("expires {}", time(at)),
    }
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a control-plane token; its secret is printed once. With `--env NAME` it may
    /// act on that environment only; without, on every environment.
    Create {
        /// admin, deployer or viewer.
        #[arg(long)]
        role: Role,
        /// Lifetime, e.g. 30d, 12h.
        #[arg(long, default_value = "30d")]
        ttl: String,
        /// What it is for.
        #[arg(long)]
        label: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List tokens (never their secrets).
    Ls {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke a token at once.
    Revoke {
        /// The token id (`t-…`).
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub fn token(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create {
            role,
            ttl,
            label,
            json,
            server,
        } => {
            let client = AdminClient::new(&server)?;
            let created: CreatedToken =
                client.json(client.post("/v1/tokens").json(&CreateTokenRequest {
                    role,
                    environment: server.env,
                    ttl: Some(ttl),
                    label,
                }))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                let token = &created.token;
                eprintln!(
                    "created token {} (role {}, {}, {}); the secret below is shown once:",
                    token.id,
                    token.role,
                    token.environment.as_deref().map_or_else(
                        || "every environment".to_owned(),
                        |e| format!("environment {e}")
                    ),
                    status(token.expires_at_ms, None)
                );
                println!("{}", created.secret);
            }
        }
        TokenCommand::Ls { json, server } => {
            let client = AdminClient::new(&server)?;
            let tokens: Vec<TokenInfo> = client.json(client.get("/v1/tokens"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        t.role.to_string(),
                        t.environment.clone().unwrap_or_else(|| "*".into()),
                        t.label.clone(),
                        time(t.created_at_ms),
                        status(t.expires_at_ms, t.revoked_at_ms),
                        t.created_by.clone(),
                    ]
                })
                .collect();
            table::print(
                &[
                    "ID",
                    "ROLE",
                    "ENV",
                    "LABEL",
                    "CREATED",
                    "STATUS",
                    "CREATED BY",
                ],
                &rows,
            );
        }
        TokenCommand::Revoke { id, server } => {
            let client = AdminClient::new(&server)?;
            let _: serde_json::Value = client.json(client.delete(&format!("/v1/tokens/{id}")))?;
            println!("revoked token {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// Create an API key for one function; its secret is printed once.
    Create {
        /// The function it may invoke.
        #[arg(long)]
        function: String,
        /// Lifetime, e.g. 7d.
        #[arg(long, default_value = "90d")]
        ttl: String,
        /// Request rate it may use, e.g. 100/s or 600/min (default: unlimited).
        #[arg(long)]
        rate: Option<String>,
        /// Who holds it.
        #[arg(long)]
        label: Option<String>,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List API keys (never their secrets).
    Ls {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Revoke an API key at once.
    Revoke {
        /// The key id (`k-…`).
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub fn key(command: KeyCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeyCommand::Create {
            function,
            ttl,
            rate,
            label,
            json,
            server,
        } => {
            let client = AdminClient::new(&server)?;
            let created: CreatedKey =
                client.json(client.post("/v1/keys").json(&CreateKeyRequest {
                    function,
                    ttl: Some(ttl),
                    rate,
                    label,
                }))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&created)?);
            } else {
                let key = &created.key;
                eprintln!(
                    "created API key {} for function {} ({}, rate {}); the secret below is shown once:",
                    key.id,
                    key.function,
                    status(key.expires_at_ms, None),
                    key.rate
                        .map_or_else(|| "unlimited".to_owned(), |r| r.to_string())
                );
                if let Some(warning) = &created.warning {
                    eprintln!("warning: {warning}");
                }
                println!("{}", created.secret);
            }
        }
        KeyCommand::Ls { json, server } => {
            let client = AdminClient::new(&server)?;
            let keys: Vec<ApiKeyInfo> = client.json(client.get("/v1/keys"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.clone(),
                        k.function.clone(),
                        k.label.clone(),
                        k.rate.map_or_else(|| "-".to_owned(), |r| r.to_string()),
                        time(k.created_at_ms),
                        status(k.expires_at_ms, k.revoked_at_ms),
                    ]
                })
                .collect();
            table::print(
                &["ID", "FUNCTION", "LABEL", "RATE", "CREATED", "STATUS"],
                &rows,
            );
        }
        KeyCommand::Revoke { id, server } => {
            let client = AdminClient::new(&server)?;
            let _: serde_json::Value = client.json(client.delete(&format!("/v1/keys/{id}")))?;
            println!("revoked API key {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Subcommand)]
pub enum QueueCommand {
    /// List pending, running and dead-lettered jobs (newest first).
    Ls {
        /// Also list succeeded jobs.
        #[arg(long)]
        all: bool,
        /// Only dead-lettered jobs.
        #[arg(long, conflicts_with = "all")]
        dead: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A job's state, attempts, last error and result.
    Show {
        /// The job id (`j-…`).
        id: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Send a dead-lettered job back to the queue with fresh attempts.
    Retry {
        /// The job id (`j-…`).
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

fn job_line(job: &Job) -> Vec<String> {
    vec![
        job.id.clone(),
        job.function.clone(),
        format!("{:?}", job.source).to_lowercase(),
        job.state.as_str().to_owned(),
        format!("{}/{}", job.attempts, job.max_attempts),
        time(job.created_at_ms),
        job.last_error.clone().unwrap_or_default(),
    ]
}

pub fn queue(command: QueueCommand) -> anyhow::Result<ExitCode> {
    match command {
        QueueCommand::Ls {
            all,
            dead,
            limit,
            json,
            server,
        } => {
            let client = AdminClient::new(&server)?;
            let states = if dead {
                "dead"
            } else if all {
                "pending,running,succeeded,dead"
            } else {
                "pending,running,dead"
            };
            let page: JobsResponse = client.json(
                client
                    .get("/v1/jobs")
                    .query(&[("state", states), ("limit", &limit.to_string())]),
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page.jobs)?);
                return Ok(ExitCode::SUCCESS);
            }
            if page.jobs.is_empty() {
                println!("no jobs ({states})");
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = page.jobs.iter().map(job_line).collect();
            table::print(
                &[
                    "ID",
                    "FUNCTION",
                    "SOURCE",
                    "STATE",
                    "ATTEMPTS",
                    "CREATED",
                    "LAST ERROR",
                ],
                &rows,
            );
        }
        QueueCommand::Show { id, json, server } => {
            let client = AdminClient::new(&server)?;
            let job: Job = client.json(client.get(&format!("/v1/jobs/{id}")))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("job        {}", job.id);
            println!("function   {}", job.function);
            println!("source     {:?}", job.source);
            if let Some(tick) = job.scheduled_for_ms {
                println!("tick       {}", time(tick));
            }
            println!("request    {} {}", job.request.method, job.request.path);
            println!("state      {}", job.state.as_str());
            println!("attempts   {} of {}", job.attempts, job.max_attempts);
            if job.state == JobState::Pending {
                println!("next run   {}", time(job.next_run_at_ms));
            }
            println!("created    {}", time(job.created_at_ms));
            println!("updated    {}", time(job.updated_at_ms));
            if let Some(error) = &job.last_error {
                println!("last error {error}");
            }
            if let Some(result) = &job.result {
                println!(
                    "result     HTTP {} (request {})",
                    result.status, result.request_id
                );
                if !result.body.is_empty() {
                    println!("{}", result.body.trim_end());
                }
            }
        }
        QueueCommand::Retry { id, server } => {
            let client = AdminClient::new(&server)?;
            let job: Job = client.json(client.post(&format!("/v1/jobs/{id}/retry")))?;
            println!(
                "job {} is {} again with {} attempts",
                job.id,
                job.state.as_str(),
                job.max_attempts
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct ExtendArgs {
    /// The function.
    pub name: String,
    /// New expiry: a date (serves through its end, UTC) or an RFC 3339 time.
    #[arg(long)]
    pub until: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `runway extend NAME --until DATE`: a new release with the later expiry.
pub fn extend(args: ExtendArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args.server)?;
    let response: DeployResponse = client.json(
        client
            .post(&format!("/v1/functions/{}/extend", args.name))
            .json(&ExtendRequest { until: args.until }),
    )?;
    for result in &response.functions {
        println!(
            "{} now expires {} (release {})",
            result.release.config.name,
            result
                .release
                .config
                .expires
                .as_ref()
                .map_or("never", |e| e.as_str()),
            result.release.number
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses `--expiring 30d`.
pub fn within(text: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(text).map_err(|err| {
        anyhow::anyhow!("invalid --expiring `{text}`: {err}; use a duration such as `30d`")
    })
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    /// The function.
    pub name: String,
    /// The release to serve (default: the newest one older than the current).
    #[arg(long)]
    pub to: Option<u32>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `runway rollback NAME [--to N]`: switch atomically to an existing release.
pub fn rollback(args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args.server)?;
    let response: runway_server::RollbackResponse = client.json(
        client
            .post(&format!("/v1/functions/{}/rollback", args.name))
            .json(&runway_server::RollbackRequest { to: args.to }),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&response)?);
    } else {
        println!(
            "{} now serves release {} (was {}; artifact {})",
            response.function,
            response.release.number,
            response.from,
            response.release.digest.short()
        );
    }
    Ok(ExitCode::SUCCESS)
}
