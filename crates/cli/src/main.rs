//! The `runway` binary: `serve` and `up` run a node; every other command is a client of a
//! node's admin API. This crate is the only place that prints and decides exit codes.

mod access_cmds;
mod budget_cmds;
mod client;
mod cluster_cmds;
mod commands;
mod env_cmds;
mod node;
mod policy_cmds;
mod signing_cmds;
mod state_cmds;
mod table;
mod tune_cmds;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for a failed command (bad input, unreachable node, refused deploy).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code when `runway invoke` ran the function but the invocation did not end `ok`.
pub const EXIT_INVOCATION_FAILED: u8 = 3;

/// Runway: a self-hosted serverless platform for WebAssembly functions.
#[derive(Parser)]
#[command(name = "runway", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the gateway and the admin API.
    Serve(node::ServeArgs),
    /// Run a node and deploy every example under `examples/` (the two-minute start).
    Up(node::UpArgs),
    /// Write a consistent backup of a running node (every environment's releases, data,
    /// bill and audit logs, and the artifacts) to a file.
    Backup(state_cmds::BackupArgs),
    /// Restore a backup into a data folder, for a node that is not running yet.
    Restore(state_cmds::RestoreArgs),
    /// Build, upload and deploy the functions of a runway.toml.
    Deploy(commands::DeployArgs),
    /// List deployed functions with their size, timeout, release, routes and cost.
    Ls(commands::LsArgs),
    /// Invoke a function through the admin API and print its response and REPORT line.
    Invoke(commands::InvokeArgs),
    /// Print a function's logs: its stdout and stderr, failures and REPORT lines.
    Logs(commands::LogsArgs),
    /// Invocations, GB-seconds and cost per function over a period.
    Cost(commands::CostArgs),
    /// List a function's releases.
    Releases(commands::ReleasesArgs),
    /// Print a component's imports and exports and the least policy it needs (no node).
    Inspect(policy_cmds::InspectArgs),
    /// Show policy denials (and audit-mode would-be denials).
    Audit(policy_cmds::AuditArgs),
    /// Manage secrets: values from stdin, encrypted at rest, never printed.
    #[command(subcommand)]
    Secret(policy_cmds::SecretCommand),
    /// The environment's SQL database, as its operator.
    #[command(subcommand)]
    Sql(policy_cmds::SqlCommand),
    /// Least-privilege policies.
    #[command(subcommand)]
    Policy(policy_cmds::PolicyCommand),
    /// Control-plane tokens: admin, deployer and viewer, optionally scoped to one environment.
    #[command(subcommand)]
    Token(access_cmds::TokenCommand),
    /// API keys that callers present to functions whose routes have auth = "api-key".
    #[command(subcommand)]
    Key(access_cmds::KeyCommand),
    /// Asynchronous and scheduled jobs: pending, dead-lettered, retry.
    #[command(subcommand)]
    Queue(access_cmds::QueueCommand),
    /// Move a function's expiry later (a new release; audited).
    Extend(access_cmds::ExtendArgs),
    /// Serve an earlier (or any existing) release again, atomically.
    Rollback(access_cmds::RollbackArgs),
    /// Artifact signing keys (not API keys: see `runway key`).
    #[command(subcommand)]
    Keys(signing_cmds::KeysCommand),
    /// Sign a component: writes FILE.sig, which `runway deploy` uploads with it.
    Sign(signing_cmds::SignArgs),
    /// Revoke an artifact: every release running it stops serving at once (503).
    Revoke(signing_cmds::RevokeArgs),
    /// Environments: isolated, cheap, disposable; created from another in milliseconds.
    #[command(subcommand)]
    Env(env_cmds::EnvCommand),
    /// Deploy to one environment exactly the release another one serves.
    Promote(env_cmds::PromoteArgs),
    /// Run a function at several memory sizes in a throwaway environment and recommend one.
    Tune(tune_cmds::TuneArgs),
    /// Monthly budgets per function, environment and owner: alerts, throttle, stop.
    #[command(subcommand)]
    Budget(budget_cmds::BudgetCommand),
    /// Peak concurrency and memory per function, and the nodes a growth factor needs.
    Capacity(budget_cmds::CapacityArgs),
    /// The nodes sharing this node's store: addresses, version, last report, load.
    Nodes(cluster_cmds::NodesArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => node::serve(args),
        Command::Up(args) => node::up(args),
        Command::Backup(args) => state_cmds::backup(args),
        Command::Restore(args) => state_cmds::restore(args),
        Command::Deploy(args) => commands::deploy(args),
        Command::Ls(args) => commands::ls(args),
        Command::Invoke(args) => commands::invoke(args),
        Command::Logs(args) => commands::logs(args),
        Command::Cost(args) => commands::cost(args),
        Command::Releases(args) => commands::releases(args),
        Command::Inspect(args) => policy_cmds::inspect(args),
        Command::Audit(args) => policy_cmds::audit(args),
        Command::Secret(command) => policy_cmds::secret(command),
        Command::Sql(command) => policy_cmds::sql(command),
        Command::Policy(command) => policy_cmds::policy(command),
        Command::Token(command) => access_cmds::token(command),
        Command::Key(command) => access_cmds::key(command),
        Command::Queue(command) => access_cmds::queue(command),
        Command::Extend(args) => access_cmds::extend(args),
        Command::Rollback(args) => access_cmds::rollback(args),
        Command::Keys(command) => signing_cmds::keys(command),
        Command::Sign(args) => signing_cmds::sign(args),
        Command::Revoke(args) => signing_cmds::revoke(args),
        Command::Env(command) => env_cmds::env(command),
        Command::Promote(args) => env_cmds::promote(args),
        Command::Tune(args) => tune_cmds::tune(args),
        Command::Budget(command) => budget_cmds::budget(command),
        Command::Capacity(args) => budget_cmds::capacity(args),
        Command::Nodes(args) => cluster_cmds::nodes(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
