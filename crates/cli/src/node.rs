//! `runway serve` and `runway up`: run a node in this process until a signal arrives.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use runway_manifest::{ByteSize, MANIFEST_FILE};
use runway_meter::{PicoUsd, Pricing};
use runway_server::{Bootstrap, Node, NodeConfig, Role};
use tokio::signal::unix::{SignalKind, signal};

use crate::client::AdminClient;

/// Node settings: each flag is also a `RUNWAY_*` environment variable (flag wins).
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Gateway address; port 0 picks a free port.
    #[arg(long, env = "RUNWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin API address; port 0 picks a free port.
    #[arg(long, env = "RUNWAY_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,
    /// Folder for the database, artifacts and compile cache.
    #[arg(long, env = "RUNWAY_DATA_DIR", default_value = ".runway")]
    pub data_dir: PathBuf,
    /// Price of one GB-second in US dollars (default: AWS Lambda x86).
    #[arg(long, env = "RUNWAY_PRICE_GB_SECOND", default_value = "0.0000166667")]
    pub price_gb_second: PicoUsd,
    /// Price of one request in US dollars (default: AWS Lambda, $0.20 per million).
    #[arg(long, env = "RUNWAY_PRICE_REQUEST", default_value = "0.0000002")]
    pub price_request: PicoUsd,
    /// Largest request body the gateway accepts.
    #[arg(long, env = "RUNWAY_MAX_REQUEST_BODY", default_value = "6MiB")]
    pub max_request_body: ByteSize,
    /// Largest component a deploy accepts.
    #[arg(long, env = "RUNWAY_MAX_ARTIFACT_SIZE", default_value = "100MiB")]
    pub max_artifact_size: ByteSize,
    /// Linear memory kept mapped between instances in a pool slot (faster reuse, more RSS).
    #[arg(long, env = "RUNWAY_MEMORY_KEEP_RESIDENT", default_value = "2MiB")]
    pub memory_keep_resident: ByteSize,
    /// Memory size that buys one full core: a smaller function gets a proportional share of
    /// one, as on AWS Lambda ("off": every function gets a full core).
    #[arg(long, env = "RUNWAY_CPU_FULL_CORE_AT", default_value = "1769MiB", value_parser = parse_full_core)]
    pub cpu_full_core_at: u64,
    /// Instances that may run at once across all functions.
    #[arg(long, env = "RUNWAY_MAX_INSTANCES", default_value_t = 1000)]
    pub max_instances: u32,
    /// Home environment: refuse deploys whose component imports a capability its policy
    /// does not grant.
    #[arg(long, env = "RUNWAY_STRICT_VETTING")]
    pub strict_vetting: bool,
    /// Home environment serves production: refuse functions in policy audit mode.
    #[arg(long, env = "RUNWAY_PRODUCTION")]
    pub production: bool,
    /// The home environment: served on plain host names, never removed.
    #[arg(long, env = "RUNWAY_HOME_ENV", default_value = "prod")]
    pub home_env: String,
    /// A domain whose subdomains name environments, as `NAME.localhost` always does:
    /// `--env-domain fn.example.com` serves environment `dev` at dev.fn.example.com
    /// (repeatable).
    #[arg(long = "env-domain", env = "RUNWAY_ENV_DOMAIN", value_delimiter = ',')]
    pub env_domains: Vec<String>,
    /// Key that seals secrets at rest (created if missing) [default: DATA_DIR/secrets.key].
    #[arg(long, env = "RUNWAY_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
    /// Fixed DNS answer for functions' outbound requests, HOST=IP (repeatable).
    #[arg(
        long = "outbound-resolve",
        env = "RUNWAY_OUTBOUND_RESOLVE",
        value_delimiter = ','
    )]
    pub outbound_resolve: Vec<String>,
    /// PEM certificates (e.g. an internal CA) trusted for functions' outbound https.
    #[arg(long, env = "RUNWAY_OUTBOUND_CA_FILE")]
    pub outbound_ca_file: Option<PathBuf>,
    /// Serve the admin API without tokens (refused unless it listens on loopback).
    #[arg(long, env = "RUNWAY_NO_AUTH")]
    pub no_auth: bool,
    /// Public signing keys (`runway keys generate`), one per line: deploys to the home
    /// environment then need an artifact signed by one of them.
    #[arg(long, env = "RUNWAY_TRUSTED_KEYS")]
    pub trusted_keys: Option<PathBuf>,
    /// Gateway connections open at once; more clients wait in the kernel's backlog (lowered
    /// at start if the open-file limit cannot hold it).
    #[arg(long, env = "RUNWAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Admin API connections open at once.
    #[arg(long, env = "RUNWAY_ADMIN_MAX_CONNECTIONS", default_value_t = 256)]
    pub admin_max_connections: usize,
    /// How long a connection may go without a complete request head (idle between
    /// keep-alive requests, or sending its headers slowly) before it is closed.
    #[arg(long, env = "RUNWAY_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_idle_timeout)]
    pub idle_timeout: Duration,
    /// Raw invocation records are deleted after this long ("forever" keeps them); bills,
    /// budgets and capacity read the hourly rollups, which are always kept.
    #[arg(long, env = "RUNWAY_RETAIN_INVOCATIONS", default_value = "7d", value_parser = parse_retention)]
    pub retain_invocations: Retention,
    /// Function log lines are deleted after this long ("forever" keeps them).
    #[arg(long, env = "RUNWAY_RETAIN_LOGS", default_value = "7d", value_parser = parse_retention)]
    pub retain_logs: Retention,
    /// Succeeded jobs are deleted after this long (dead-lettered ones are kept).
    #[arg(long, env = "RUNWAY_RETAIN_JOBS", default_value = "7d", value_parser = parse_retention)]
    pub retain_jobs: Retention,
    /// Policy audit records (denials) are deleted after this long.
    #[arg(long, env = "RUNWAY_RETAIN_AUDIT", default_value = "90d", value_parser = parse_retention)]
    pub retain_audit: Retention,
    /// Control-plane audit records (who did what) are deleted after this long.
    #[arg(long, env = "RUNWAY_RETAIN_CONTROL_AUDIT", default_value = "400d", value_parser = parse_retention)]
    pub retain_control_audit: Retention,
    /// When the data folder's store is missing or damaged, start with an empty one instead
    /// of refusing, moving what is left into DATA_DIR/lost+found-* (nothing is deleted; a
    /// healthy store is never touched).
    #[arg(long, env = "RUNWAY_START_OVER")]
    pub start_over: bool,
    /// The PostgreSQL store every node of a cluster shares
    /// (postgres://USER:PASSWORD@HOST:PORT/DATABASE); without it the node keeps its own SQLite
    /// store in --data-dir. Prefer the variable: flags show in `ps`.
    #[arg(long, env = "RUNWAY_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// Where budget alerts (50, 80 and 100 percent) are POSTed as JSON.
    #[arg(long, env = "RUNWAY_BUDGET_WEBHOOK", value_parser = parse_webhook)]
    pub budget_webhook: Option<String>,
}

/// `--budget-webhook`: an http:// URL (alerting relays usually sit inside the network).
fn parse_webhook(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .ok_or_else(|| format!("{text} is not an http:// URL (https webhooks are not supported yet; point it at a relay inside your network)"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{text} names no host"));
    }
    Ok(text.to_owned())
}

/// A retention period: how long rows are kept, or `None` for ever.
type Retention = Option<Duration>;

/// `--retain-*`: a duration such as `7d` or `12h`, or `forever`.
fn parse_retention(text: &str) -> Result<Retention, String> {
    if text.eq_ignore_ascii_case("forever") {
        return Ok(None);
    }
    let keep = humantime::parse_duration(text)
        .map_err(|err| format!("{text} is not a duration like 7d or 12h, nor `forever`: {err}"))?;
    if keep < Duration::from_secs(3600) {
        return Err(format!(
            "{text} is too short: keep rows at least 1h (the last hour is what `runway cost` \
             reads from raw records)"
        ));
    }
    Ok(Some(keep))
}

/// `--idle-timeout`: a duration of at least one second.
fn parse_idle_timeout(text: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(text)
        .map_err(|err| format!("{text} is not a duration like 30s: {err}"))?;
    if timeout < Duration::from_secs(1) {
        return Err(format!("{text} is too short: allow clients at least 1s"));
    }
    Ok(timeout)
}

/// `--cpu-full-core-at`: a memory size, or `off` (0).
fn parse_full_core(text: &str) -> Result<u64, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    let size: ByteSize = text.parse()?;
    if size.bytes() < 64 << 20 {
        return Err(format!(
            "{text} is too small: a full core must take at least 64MiB (or `off`)"
        ));
    }
    Ok(size.bytes())
}

impl ServeArgs {
    fn node_config(&self) -> NodeConfig {
        let mut config = NodeConfig::new(self.data_dir.clone());
        config.listen = self.listen;
        config.admin_listen = self.admin_listen;
        config.pricing = Pricing {
            per_gb_second: self.price_gb_second,
            per_request: self.price_request,
        };
        config.max_request_body = self.max_request_body.bytes();
        config.runtime.max_artifact_bytes = self.max_artifact_size.bytes();
        config.runtime.memory_keep_resident = self.memory_keep_resident.bytes();
        config.runtime.cpu_full_core_bytes = self.cpu_full_core_at;
        config.runtime.max_instances = self.max_instances;
        config.strict_vetting = self.strict_vetting;
        config.production = self.production;
        config.environment = self.home_env.clone();
        config.env_domains = self.env_domains.clone();
        config.secret_key_file = self.secret_key_file.clone();
        config.outbound_resolve = self.outbound_resolve.clone();
        config.outbound_ca_file = self.outbound_ca_file.clone();
        config.auth = !self.no_auth;
        config.trusted_keys = self.trusted_keys.clone();
        config.budget_webhook = self.budget_webhook.clone();
        config.start_over = self.start_over;
        config.database = self.database.clone().filter(|url| !url.is_empty());
        config.gateway_connections = runway_server::ConnectionLimits {
            max_connections: self.max_connections.max(1),
            idle_timeout: self.idle_timeout,
        };
        config.admin_connections = runway_server::ConnectionLimits {
            max_connections: self.admin_max_connections.max(1),
            idle_timeout: self.idle_timeout,
        };
        config.retention = runway_server::retention::Retention {
            invocations: self.retain_invocations,
            logs: self.retain_logs,
            succeeded_jobs: self.retain_jobs,
            policy_audit: self.retain_audit,
            control_audit: self.retain_control_audit,
        };
        // An environment variable only, never a flag: flags show in `ps`.
        config.bootstrap_token = std::env::var("RUNWAY_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        config
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Folder whose sub-folders each hold a runway.toml to deploy.
    #[arg(long, default_value = "examples")]
    pub examples: PathBuf,
}

/// Log lines waiting for a slow stderr before new ones are dropped (and counted).
const LOG_BUFFER_LINES: usize = 64 * 1024;

/// Logs go to stderr through a buffer on a thread of their own: a reader that stalls (a
/// full pipe, a paused terminal) drops log lines rather than stalling the node, whose meter
/// writer also emits the REPORT lines. The guard flushes what is buffered at exit.
fn init_tracing() -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .thread_name("runway-log")
        .finish(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer)
        .init();
    guard
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("while starting the async runtime")
}

async fn start(args: &ServeArgs) -> anyhow::Result<Node> {
    let node = match Node::start(args.node_config()).await {
        Ok(node) => node,
        Err(err) if err.is_refused_state() => anyhow::bail!("{err}"),
        Err(err) => {
            return Err(anyhow::Error::new(err).context(format!(
                "while starting a node on data folder {}",
                args.data_dir.display()
            )));
        }
    };
    if let Some(aside) = node.moved_aside() {
        println!(
            "runway: --start-over: the missing or damaged store's leftovers were moved to {}",
            aside.display()
        );
    }
    let restored = node.restored();
    println!(
        "runway: gateway listening on http://{}",
        node.gateway_addr()
    );
    println!(
        "runway: admin API listening on http://{}",
        node.admin_addr()
    );
    let others = node.environment_count() - 1;
    let source = match &args.database {
        Some(url) if !url.is_empty() => runway_server::redacted_database_url(url),
        _ => args.data_dir.display().to_string(),
    };
    println!(
        "runway: serving {} functions from {} ({} compiled code from cache, {} compiled now){}",
        node.function_count(),
        source,
        restored.from_cache,
        restored.compiled,
        if others > 0 {
            format!("; {others} more environments (`runway env ls`)")
        } else {
            String::new()
        }
    );
    for failed in &restored.failed {
        println!("runway: cannot serve {failed}");
    }
    match node.bootstrap() {
        Bootstrap::Generated { id, secret } => {
            println!(
                "runway: created the bootstrap admin token {id}; it is shown this once and only \
                 its hash is kept:"
            );
            println!("runway:   export RUNWAY_TOKEN={secret}");
        }
        Bootstrap::FromEnvironment { id } => {
            println!("runway: stored RUNWAY_ADMIN_TOKEN as the bootstrap admin token {id}");
        }
        Bootstrap::Disabled => {
            println!("runway: admin API authentication is OFF (--no-auth); loopback only");
        }
        Bootstrap::LockedOut => {
            println!(
                "runway: no unscoped admin token is usable (all expired or revoked); restart \
                 with RUNWAY_ADMIN_TOKEN set to store a recovery admin token"
            );
        }
        Bootstrap::Existing => {
            if std::env::var_os("RUNWAY_ADMIN_TOKEN").is_some() {
                println!(
                    "runway: RUNWAY_ADMIN_TOKEN is ignored: this store already has tokens \
                     (it only sets the first token); unset it"
                );
            }
        }
    }
    Ok(node)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut terminate =
        signal(SignalKind::terminate()).context("while installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

async fn run_until_signal(node: Node) -> anyhow::Result<ExitCode> {
    wait_for_signal().await?;
    println!(
        "runway: shutting down: no new requests; finishing those in flight (a second signal quits at once)"
    );
    tokio::spawn(async {
        if wait_for_signal().await.is_ok() {
            eprintln!("runway: second signal: quitting now; unflushed invocation records are lost");
            std::process::exit(130);
        }
    });
    let report = node.shutdown().await;
    println!(
        "runway: stopped; {} invocation records written{}",
        report.records_written,
        if report.drained {
            ""
        } else {
            " (some invocations were still running at the drain timeout)"
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let _logs = init_tracing();
    runtime()?.block_on(async {
        let node = start(&args).await?;
        run_until_signal(node).await
    })
}

pub fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let _logs = init_tracing();
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&args.examples)
        .with_context(|| {
            format!(
                "while listing the examples folder {}",
                args.examples.display()
            )
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path().join(MANIFEST_FILE)))
        .filter(|path| path.is_file())
        .collect();
    manifests.sort();
    runtime()?.block_on(async {
        let node = start(&args.serve).await?;
        let admin = format!("http://{}", node.admin_addr());
        let gateway = node.gateway_addr();
        // The session's token: the one just printed, else a fresh 12-hour admin token (the
        // operator owns this data folder, so it could mint one anyway).
        let token = match node.bootstrap() {
            Bootstrap::Generated { secret, .. } => Some(secret.clone()),
            Bootstrap::Disabled => None,
            Bootstrap::FromEnvironment { .. } | Bootstrap::Existing | Bootstrap::LockedOut => {
                let secret = node
                    .issue_token(Role::Admin, Duration::from_secs(12 * 3600), "runway up session")
                    .context("while creating the session token for `runway up`")?;
                println!("runway: session admin token for the next 12 hours:");
                println!("runway:   export RUNWAY_TOKEN={secret}");
                Some(secret)
            }
        };
        let client_token = token.clone();
        let deployed =
            tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(String, String)>> {
                let client = AdminClient::with_token(&admin, client_token.as_deref())?;
                let mut routes = Vec::new();
                for manifest in &manifests {
                    // An example that keeps data ships its schema; the operator's step,
                    // done here so the first start needs no other command.
                    let schema = manifest.with_file_name("schema.sql");
                    if schema.is_file() {
                        let sql = std::fs::read_to_string(&schema)
                            .with_context(|| format!("while reading {}", schema.display()))?;
                        let _: serde_json::Value = client
                            .json(client.post("/v1/sql/apply").body(sql))
                            .with_context(|| format!("while applying {}", schema.display()))?;
                        println!("applied {}", schema.display());
                    }
                    let response = crate::commands::deploy_manifest(&client, manifest, true)
                        .with_context(|| format!("while deploying {}", manifest.display()))?;
                    crate::commands::print_deploy(&response);
                    for result in response.functions {
                        let name = result.release.config.name.to_string();
                        for trigger in &result.release.config.http {
                            let method = match trigger.methods.first() {
                                Some(method) if method.as_str() != "GET" => {
                                    format!("-X {} ", method.as_str())
                                }
                                _ => String::new(),
                            };
                            let hint = match trigger.auth {
                                runway_manifest::InvocationAuth::Public => String::new(),
                                runway_manifest::InvocationAuth::ApiKey => format!(
                                    "   (API key: KEY=$(runway key create --function {name}); add -H \"Authorization: Bearer $KEY\")"
                                ),
                                runway_manifest::InvocationAuth::Jwt => {
                                    "   (needs a JWT from the function's issuer)".to_owned()
                                }
                            };
                            routes.push((
                                name.clone(),
                                format!("{method}http://{gateway}{}{hint}", trigger.route.base()),
                            ));
                        }
                    }
                }
                Ok(routes)
            })
            .await
            .context("the deploy task failed")?;
        match deployed {
            Ok(routes) => {
                println!("runway: ready. Try:");
                for (name, command) in routes {
                    println!("  {name:<10} curl {command}");
                }
                println!(
                    "  runway ls --server http://{}   (with RUNWAY_TOKEN exported as above; Ctrl-C stops the node)",
                    node.admin_addr()
                );
            }
            Err(err) => {
                eprintln!("error: {err:#}");
                node.shutdown().await;
                return Ok(ExitCode::from(crate::EXIT_FAILURE));
            }
        }
        run_until_signal(node).await
    })
}
