//! `runway budget set|ls|rm`: monthly budgets per function, environment and owner.

use std::process::ExitCode;

use runway_manifest::{BudgetAction, Usd};
use runway_server::{Budget, BudgetKind, BudgetStatus, SetBudgetRequest};

use crate::client::{AdminClient, ServerArgs};
use crate::table;

/// What a budget covers, as typed.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Kind {
    /// One function of `--env`.
    Function,
    /// Every function of `--env`.
    Env,
    /// Every function declaring this owner, in every environment.
    Owner,
}

/// At 100 percent.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Action {
    /// Alerts only.
    Alert,
    /// One invocation at a time.
    Throttle,
    /// No invocation until the month ends or the budget grows (402).
    Stop,
}

#[derive(clap::Subcommand)]
pub enum BudgetCommand {
    /// Set a monthly budget: `function NAME`, `env` (the `--env` one) or `owner NAME`.
    Set {
        /// What it covers.
        #[arg(value_enum)]
        kind: Kind,
        /// The function or owner (not for `env`).
        name: Option<String>,
        /// The most a calendar month (UTC) may cost, e.g. "20 USD".
        #[arg(long)]
        monthly: Usd,
        /// What happens at 100 percent (alerts go out at 50, 80 and 100 in every case).
        #[arg(long, value_enum, default_value = "alert")]
        action: Action,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Budgets with this month's spending, burn rate and month-end projection.
    Ls {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Remove a budget by id (`function:prod/orders`, `env:prod`, `owner:payments`).
    Rm {
        /// The budget's id.
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub fn budget(command: BudgetCommand) -> anyhow::Result<ExitCode> {
    match command {
        BudgetCommand::Set {
            kind,
            name,
            monthly,
            action,
            server,
        } => {
            let kind = match kind {
                Kind::Function => BudgetKind::Function,
                Kind::Env => BudgetKind::Environment,
                Kind::Owner => BudgetKind::Owner,
            };
            if kind != BudgetKind::Environment && name.is_none() {
                anyhow::bail!(
                    "name the function or owner: `runway budget set function NAME --monthly \"20 USD\"`"
                );
            }
            let action = match action {
                Action::Alert => BudgetAction::Alert,
                Action::Throttle => BudgetAction::Throttle,
                Action::Stop => BudgetAction::Stop,
            };
            let client = AdminClient::new(&server)?;
            let budget: Budget =
                client.json(client.put("/v1/budgets").json(&SetBudgetRequest {
                    kind,
                    scope: name,
                    monthly,
                    action,
                }))?;
            println!(
                "budget {}: {} a month, alerts at 50/80/100%, then {}",
                budget.id,
                monthly,
                action.as_str()
            );
        }
        BudgetCommand::Ls { json, server } => {
            let client = AdminClient::new(&server)?;
            let budgets: Vec<BudgetStatus> = client.json(client.get("/v1/budgets"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&budgets)?);
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = budgets
                .iter()
                .map(|s| {
                    vec![
                        s.budget.id.clone(),
                        format!("${:.2}", s.budget.monthly_pusd as f64 / 1e12),
                        table::usd(s.spent),
                        format!("{:.1}%", s.used * 100.0),
                        format!("${:.4}/day", s.burn_per_day_usd),
                        format!("${:.2}", s.projected_usd),
                        s.budget.action.as_str().to_owned(),
                        if s.enforced {
                            "ENFORCED".to_owned()
                        } else if s.reached > 0 {
                            format!("alerted {}%", s.reached)
                        } else {
                            "ok".to_owned()
                        },
                        s.budget.source.clone(),
                    ]
                })
                .collect();
            table::print(
                &[
                    "BUDGET",
                    "MONTHLY",
                    "SPENT",
                    "USED",
                    "BURN",
                    "PROJECTED",
                    "ACTION",
                    "STATE",
                    "FROM",
                ],
                &rows,
            );
        }
        BudgetCommand::Rm { id, server } => {
            let client = AdminClient::new(&server)?;
            let _: serde_json::Value = client.json(client.delete(&format!("/v1/budgets/{id}")))?;
            println!("removed budget {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct CapacityArgs {
    /// Period to read, ending now.
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// Growth factor to plan for (2 = twice the traffic).
    #[arg(long, default_value_t = 1.0)]
    pub growth: f64,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `runway capacity`: peak use per function, and the nodes a growth factor would need.
pub fn capacity(args: CapacityArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args.server)?;
    let scope = if args.server.env.is_some() {
        "env"
    } else {
        "all"
    };
    let report: runway_server::CapacityReport =
        client.json(client.get("/v1/capacity").query(&[
            ("since", args.since.as_str()),
            ("growth", &args.growth.to_string()),
            ("scope", scope),
        ]))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let gib = |mb: u64| format!("{:.1} GiB", mb as f64 / 1024.0);
    let rows: Vec<Vec<String>> = report
        .observed
        .functions
        .iter()
        .map(|f| {
            vec![
                format!("{}/{}", f.environment, f.function),
                format!("{}MiB", f.memory_mb),
                f.peak_concurrency.to_string(),
                gib(f.memory_mb * u64::from(f.peak_concurrency)),
                format!(
                    "{:.1} MiB",
                    f.max_memory_used_bytes as f64 / (1 << 20) as f64
                ),
                f.invocations.to_string(),
                format!(
                    "{:.2} ms",
                    f.duration_us as f64 / 1000.0 / f.invocations.max(1) as f64
                ),
            ]
        })
        .collect();
    println!("since {}:", table::time(report.observed.since_ms));
    table::print(
        &[
            "FUNCTION",
            "MEMORY",
            "PEAK CONCURRENCY",
            "MEMORY AT PEAK",
            "MAX USED",
            "INVOCATIONS",
            "MEAN DURATION",
        ],
        &rows,
    );
    match &report.observed.busiest {
        None => println!("nothing ran in the period"),
        Some(b) => {
            println!(
                "busiest hour {}: {} instances at once, {} of memory, {:.2} cores",
                table::time(b.hour_ms),
                b.instances,
                gib(b.memory_mb),
                b.cores
            );
            println!(
                "at ×{}: {} instances, {}, {:.2} cores → {} node(s) like this one ({} cores, {} of memory of which 80% for functions, {} instance slots), limited by {}",
                report.growth,
                report.needed_instances,
                gib(report.needed_memory_mb),
                report.needed_cores,
                report.nodes_needed,
                report.node_cores,
                gib(report.node_memory_bytes >> 20),
                report.node_instances,
                report.limited_by
            );
        }
    }
    println!(
        "monthly cost: ${:.4} at this period's rate, ${:.4} at ×{}",
        report.monthly_cost_usd, report.monthly_cost_at_growth_usd, report.growth
    );
    Ok(ExitCode::SUCCESS)
}
