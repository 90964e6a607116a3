//! `runway tune NAME`: runs a function at several memory sizes in a throwaway environment
//! made from its own, and recommends the size that fits a strategy, with the figures, a
//! chart, a timeout and the monthly saving at the function's real traffic.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use runway_manifest::{ByteSize, HumanDuration};
use runway_meter::{InvocationStatus, PicoUsd};
use runway_server::{
    ConfigureRequest, CostResponse, CreateEnvironmentRequest, CreatedEnvironment, DeployResponse,
    FunctionInfo, InvokeRequest, InvokeResponse,
};
use serde::Serialize;

use crate::client::{AdminClient, ServerArgs};
use crate::table;

/// What the recommendation optimises.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The cheapest size per invocation.
    Cost,
    /// The fastest size (median duration).
    Speed,
    /// The smallest product of relative cost and relative duration.
    Balanced,
}

#[derive(clap::Args)]
pub struct TuneArgs {
    /// The function.
    pub name: String,
    /// Memory sizes to measure (the current size is always measured too).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "128MiB,256MiB,512MiB,1GiB,2GiB"
    )]
    pub memory: Vec<ByteSize>,
    /// Invocations per size.
    #[arg(long, default_value_t = 10)]
    pub runs: u32,
    /// Path and query to request (default: the function's first route).
    #[arg(long)]
    pub path: Option<String>,
    /// HTTP method (default GET, or POST with --data).
    #[arg(long)]
    pub method: Option<String>,
    /// A file whose contents are the request body.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// What the recommendation optimises.
    #[arg(long, value_enum, default_value = "balanced")]
    pub strategy: Strategy,
    /// Write a chart of cost against duration to this SVG file.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Deploy the recommended size as a new release of the function.
    #[arg(long)]
    pub apply: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// The figures of one memory size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeResult {
    /// The memory size.
    pub memory: ByteSize,
    /// The function's size now.
    pub current: bool,
    /// Its share of one core.
    pub cpu_share: f64,
    /// Invocations that ended `ok` with a 2xx or 3xx answer.
    pub ok: u32,
    /// Invocations that failed otherwise (error status, trap, refusal).
    pub errors: u32,
    /// Invocations stopped at the memory size.
    pub out_of_memory: u32,
    /// Invocations stopped at the timeout.
    pub timeouts: u32,
    /// Median duration, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile duration, milliseconds.
    pub p95_ms: f64,
    /// Slowest run, milliseconds.
    pub max_ms: f64,
    /// Mean cost of one invocation.
    pub cost_per_invocation: PicoUsd,
    /// Cost of a million invocations, US dollars.
    pub cost_per_million_usd: f64,
    /// Largest memory used, bytes.
    pub max_memory_used_bytes: u64,
}

impl SizeResult {
    fn clean(&self) -> bool {
        self.errors == 0 && self.out_of_memory == 0 && self.timeouts == 0 && self.ok > 0
    }
}

/// What `runway tune` found.
#[derive(Debug, Clone, Serialize)]
pub struct TuneReport {
    /// The function.
    pub function: String,
    /// Its environment.
    pub environment: String,
    /// The request sent, `METHOD path`.
    pub request: String,
    /// Invocations per size.
    pub runs: u32,
    /// The strategy.
    pub strategy: Strategy,
    /// One entry per size, smallest first.
    pub sizes: Vec<SizeResult>,
    /// The recommended size, if any size ran cleanly.
    pub recommended: Option<ByteSize>,
    /// Why that size (or why none).
    pub reason: String,
    /// A timeout from the observed tail at the recommended size.
    pub recommended_timeout: Option<HumanDuration>,
    /// The function's invocations over the last 30 days (or its environment's life, if
    /// shorter), scaled to 30 days.
    pub monthly_invocations: u64,
    /// What a month costs at the current size and at the recommended one, US dollars.
    pub monthly_cost_now_usd: f64,
    /// As above, at the recommended size.
    pub monthly_cost_recommended_usd: f64,
    /// The difference (negative: the recommendation costs more, for speed).
    pub monthly_saving_usd: f64,
    /// What the measurement itself cost (its invocations are metered like any other).
    pub tuning_cost_usd: f64,
    /// The release `--apply` deployed.
    pub applied_release: Option<u32>,
}

/// The least traffic history a monthly projection is made from.
const MIN_HISTORY: Duration = Duration::from_secs(3600);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Picks a size by `strategy` among those that ran without a failure.
pub fn recommend(sizes: &[SizeResult], strategy: Strategy) -> (Option<usize>, String) {
    let clean: Vec<usize> = (0..sizes.len()).filter(|&i| sizes[i].clean()).collect();
    if clean.is_empty() {
        return (
            None,
            "no size ran every invocation cleanly; fix the failures shown (or give a longer \
             timeout or larger sizes) and tune again"
                .into(),
        );
    }
    let cost = |i: usize| sizes[i].cost_per_invocation.0 as f64;
    let speed = |i: usize| sizes[i].p50_ms;
    let min_cost = clean
        .iter()
        .map(|&i| cost(i))
        .fold(f64::MAX, f64::min)
        .max(1.0);
    let min_speed = clean
        .iter()
        .map(|&i| speed(i))
        .fold(f64::MAX, f64::min)
        .max(1e-3);
    let score = |i: usize| match strategy {
        Strategy::Cost => (cost(i), speed(i)),
        Strategy::Speed => (speed(i), cost(i)),
        Strategy::Balanced => ((cost(i) / min_cost) * (speed(i) / min_speed), cost(i)),
    };
    let best = clean
        .iter()
        .copied()
        .min_by(|&a, &b| {
            score(a)
                .partial_cmp(&score(b))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .expect("clean is not empty");
    let size = &sizes[best];
    let why = match strategy {
        Strategy::Cost => format!(
            "{} is the cheapest per invocation ({} per million)",
            size.memory,
            usd(size.cost_per_million_usd)
        ),
        Strategy::Speed => format!(
            "{} is the fastest (median {:.1} ms)",
            size.memory, size.p50_ms
        ),
        Strategy::Balanced => format!(
            "{} has the best cost × duration (median {:.1} ms at {} per million)",
            size.memory,
            size.p50_ms,
            usd(size.cost_per_million_usd)
        ),
    };
    (Some(best), why)
}

/// A timeout with room above the slowest run seen: three times it, rounded up to 100 ms,
/// and at least one second.
pub fn timeout_for(max_ms: f64) -> HumanDuration {
    let ms = ((max_ms * 3.0 / 100.0).ceil() * 100.0).max(1000.0) as u64;
    HumanDuration::from_millis(ms)
}

fn usd(amount: f64) -> String {
    if amount.abs() >= 1.0 {
        format!("${amount:.2}")
    } else {
        format!("${amount:.6}")
    }
}

/// Removes the throwaway environment when tuning ends, however it ends.
struct Throwaway<'a> {
    client: &'a AdminClient,
    name: String,
}

impl Drop for Throwaway<'_> {
    fn drop(&mut self) {
        let request = self.client.delete(&format!("/v1/envs/{}", self.name));
        if let Err(err) = self.client.send(request) {
            eprintln!(
                "warning: could not remove the tuning environment {} ({err}); `runway env rm` it, or it goes at its TTL",
                self.name
            );
        }
    }
}

pub fn tune(args: TuneArgs) -> anyhow::Result<ExitCode> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let client = AdminClient::new(&args.server)?;
    let function: FunctionInfo =
        client.json(client.get(&format!("/v1/functions/{}", args.name)))?;
    let body = args
        .data
        .as_ref()
        .map(|path| {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --data {}", path.display()))
        })
        .transpose()?;
    let mut sizes: Vec<ByteSize> = args.memory.clone();
    if !sizes.contains(&function.memory) {
        sizes.push(function.memory);
    }
    sizes.sort();
    sizes.dedup();

    // A throwaway copy of the function's environment, data and secrets included, so the
    // function behaves as it does for real while its real data is never touched.
    // A name unique to this run whatever the function's name (environment names are DNS
    // labels of at most 32 characters).
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let digest =
        runway_server::Digest::of(format!("{}{stamp}{}", args.name, std::process::id()).as_bytes());
    let scratch = format!("tune-{}", &digest.as_str()[..16]);
    // It outlives the longest possible run, and is removed at the end (or on Ctrl-C).
    let longest =
        sizes.len() as u64 * u64::from(args.runs) * function.timeout.as_duration().as_secs().max(1);
    let ttl = format!("{}s", (longest + 600).clamp(3600, 30 * 24 * 3600));
    let admin = AdminClient::new(&args.server)?.for_env(None);
    let created: CreatedEnvironment =
        admin.json(admin.post("/v1/envs").json(&CreateEnvironmentRequest {
            name: scratch.clone(),
            from: Some(function.environment.clone()),
            ttl: Some(ttl),
            copy_data: true,
            copy_secrets: true,
            ..CreateEnvironmentRequest::default()
        }))?;
    {
        let (server, token, name) = (
            args.server.server.clone(),
            args.server.token.clone(),
            scratch.clone(),
        );
        // Interrupted: the copy (with the real data and secrets) must not linger.
        ctrlc::set_handler(move || {
            if let Ok(client) = AdminClient::with_token(&server, token.as_deref()) {
                _ = client.send(client.delete(&format!("/v1/envs/{name}")));
            }
            eprintln!("interrupted: removed the tuning environment {name}");
            std::process::exit(130);
        })
        .context("while installing the Ctrl-C handler")?;
    }
    let _cleanup = Throwaway {
        client: &admin,
        name: created.environment.name,
    };
    let scratch_client = AdminClient::new(&args.server)?.for_env(Some(scratch));

    let total = sizes.len() as u64 * u64::from(args.runs);
    let progress = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    progress.set_style(
        ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} invocations, {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let invoke = InvokeRequest {
        method: args.method.clone(),
        path: args.path.clone(),
        body: body.clone(),
        headers: Default::default(),
    };
    let mut results = Vec::new();
    let mut tuning_cost = 0u64;
    let mut request_line = String::new();
    for memory in &sizes {
        progress.set_message(memory.to_string());
        let _: DeployResponse = scratch_client.json(
            scratch_client
                .post(&format!("/v1/functions/{}/configure", args.name))
                .json(&ConfigureRequest {
                    memory: Some(*memory),
                    timeout: None,
                }),
        )?;
        let info: FunctionInfo =
            scratch_client.json(scratch_client.get(&format!("/v1/functions/{}", args.name)))?;
        let mut durations = Vec::new();
        let mut costs = 0u64;
        let (mut ok, mut errors, mut oom, mut timeouts, mut peak) = (0, 0, 0, 0, 0u64);
        for _ in 0..args.runs {
            let answer = scratch_client.send(
                scratch_client
                    .post(&format!("/v1/functions/{}/invoke", args.name))
                    .json(&invoke),
            )?;
            progress.inc(1);
            if !answer.status().is_success() {
                errors += 1;
                continue;
            }
            let answer: InvokeResponse = answer
                .json()
                .context("while reading an invocation's answer")?;
            if request_line.is_empty() {
                request_line = format!(
                    "{} {}",
                    args.method.clone().unwrap_or_else(|| if body.is_some() {
                        "POST".into()
                    } else {
                        "GET".into()
                    }),
                    args.path.clone().unwrap_or_else(|| function
                        .routes
                        .first()
                        .cloned()
                        .unwrap_or_default())
                );
            }
            let record = &answer.record;
            durations.push(record.duration_us as f64 / 1000.0);
            costs += record.cost.0;
            peak = peak.max(record.max_memory_bytes);
            match record.status {
                InvocationStatus::Ok if answer.status < 400 => ok += 1,
                InvocationStatus::OutOfMemory => oom += 1,
                InvocationStatus::Timeout => timeouts += 1,
                _ => errors += 1,
            }
        }
        tuning_cost += costs;
        durations.sort_by(f64::total_cmp);
        let measured = durations.len().max(1) as u64;
        let per_invocation = PicoUsd(costs / measured);
        results.push(SizeResult {
            memory: *memory,
            current: *memory == function.memory,
            cpu_share: info.cpu_share,
            ok,
            errors,
            out_of_memory: oom,
            timeouts,
            p50_ms: percentile(&durations, 0.5),
            p95_ms: percentile(&durations, 0.95),
            max_ms: durations.last().copied().unwrap_or(0.0),
            cost_per_invocation: per_invocation,
            cost_per_million_usd: per_invocation.as_usd() * 1e6,
            max_memory_used_bytes: peak,
        });
    }
    progress.finish_and_clear();

    let (best, reason) = recommend(&results, args.strategy);
    let recommended = best.map(|i| results[i].memory);
    let recommended_timeout = best.map(|i| timeout_for(results[i].max_ms));
    // Real traffic, from the meter of the function's own environment.
    let traffic: CostResponse = client.json(client.get("/v1/cost").query(&[("since", "30d")]))?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let window = Duration::from_millis((now_ms - traffic.since_ms).max(1) as u64);
    let seen = traffic
        .functions
        .iter()
        .find(|u| u.function == args.name)
        .map_or(0, |u| u.invocations);
    let month = Duration::from_secs(30 * 24 * 3600);
    // An hour of history is the least a month is projected from; less would turn a few
    // test calls into millions.
    let monthly_invocations = if window >= MIN_HISTORY {
        (seen as f64 * month.as_secs_f64() / window.as_secs_f64()) as u64
    } else {
        0
    };
    let current = results.iter().find(|r| r.current).expect("measured");
    let now_cost = current.cost_per_invocation.as_usd() * monthly_invocations as f64;
    let recommended_cost = best.map_or(now_cost, |i| {
        results[i].cost_per_invocation.as_usd() * monthly_invocations as f64
    });
    let mut report = TuneReport {
        function: args.name.clone(),
        environment: function.environment.clone(),
        request: request_line,
        runs: args.runs,
        strategy: args.strategy,
        sizes: results,
        recommended,
        reason,
        recommended_timeout,
        monthly_invocations,
        monthly_cost_now_usd: now_cost,
        monthly_cost_recommended_usd: recommended_cost,
        monthly_saving_usd: now_cost - recommended_cost,
        tuning_cost_usd: PicoUsd(tuning_cost).as_usd(),
        applied_release: None,
    };
    if let Some(path) = &args.chart {
        std::fs::write(path, chart(&report))
            .with_context(|| format!("cannot write --chart {}", path.display()))?;
    }
    if args.apply {
        match recommended {
            Some(memory) if memory != function.memory => {
                let deployed: DeployResponse = client.json(
                    client
                        .post(&format!("/v1/functions/{}/configure", args.name))
                        .json(&ConfigureRequest {
                            memory: Some(memory),
                            timeout: None,
                        }),
                )?;
                report.applied_release = deployed.functions.first().map(|r| r.release.number);
            }
            Some(_) => {}
            None => bail!("nothing to apply: {}", report.reason),
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, window, seen, args.chart.as_deref(), args.apply);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(
    report: &TuneReport,
    window: Duration,
    seen: u64,
    chart: Option<&std::path::Path>,
    apply: bool,
) {
    println!(
        "{} in {}: {} × {} per size, strategy {:?}",
        report.function, report.environment, report.runs, report.request, report.strategy
    );
    let rows: Vec<Vec<String>> = report
        .sizes
        .iter()
        .map(|s| {
            vec![
                format!(
                    "{}{}{}",
                    s.memory,
                    if s.current { " (now)" } else { "" },
                    if Some(s.memory) == report.recommended {
                        " *"
                    } else {
                        ""
                    }
                ),
                format!("{:.0}%", s.cpu_share * 100.0),
                format!("{:.1} ms", s.p50_ms),
                format!("{:.1} ms", s.p95_ms),
                table::usd(s.cost_per_invocation),
                usd(s.cost_per_million_usd),
                s.errors.to_string(),
                s.out_of_memory.to_string(),
                s.timeouts.to_string(),
                format!(
                    "{:.1} MiB",
                    s.max_memory_used_bytes as f64 / (1 << 20) as f64
                ),
            ]
        })
        .collect();
    table::print(
        &[
            "MEMORY",
            "CPU",
            "P50",
            "P95",
            "COST/INVOCATION",
            "PER MILLION",
            "ERRORS",
            "OOM",
            "TIMEOUTS",
            "MAX USED",
        ],
        &rows,
    );
    match report.recommended {
        Some(memory) => {
            println!("recommended: {memory} — {}", report.reason);
            if let Some(timeout) = report.recommended_timeout {
                println!("timeout: {timeout} (3× the slowest run at {memory}, at least 1s)");
            }
        }
        None => println!("no recommendation: {}", report.reason),
    }
    let history = humantime::format_duration(Duration::from_secs(window.as_secs() / 60 * 60));
    if window < MIN_HISTORY {
        println!(
            "traffic: {seen} invocations in {history} of history; a monthly projection needs an hour or more"
        );
    } else {
        println!(
            "traffic: {seen} invocations in the last {history} → {} a month: {} now, {} at the recommendation ({} {})",
            report.monthly_invocations,
            usd(report.monthly_cost_now_usd),
            usd(report.monthly_cost_recommended_usd),
            if report.monthly_saving_usd >= 0.0 {
                "saves"
            } else {
                "costs"
            },
            usd(report.monthly_saving_usd.abs())
        );
    }
    println!(
        "tuning itself cost {} (its invocations are metered)",
        usd(report.tuning_cost_usd)
    );
    if let Some(path) = chart {
        println!("chart: {}", path.display());
    }
    match report.applied_release {
        Some(release) => println!(
            "applied: {} serves release {release} with {}",
            report.function,
            report
                .recommended
                .map(|m| m.to_string())
                .unwrap_or_default()
        ),
        None if apply => println!("nothing applied: the function already has the recommended size"),
        None => {}
    }
}

/// An SVG chart: cost per million invocations against median duration, one point per size.
pub fn chart(report: &TuneReport) -> String {
    let (width, height, margin) = (720.0, 440.0, 70.0);
    let max_x = report
        .sizes
        .iter()
        .map(|s| s.p50_ms)
        .fold(0.0, f64::max)
        .max(0.001)
        * 1.15;
    let max_y = report
        .sizes
        .iter()
        .map(|s| s.cost_per_million_usd)
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.15;
    let x = |v: f64| margin + v / max_x * (width - 2.0 * margin);
    let y = |v: f64| height - margin - v / max_y * (height - 2.0 * margin);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}: cost against duration by memory size</text>\n",
        width / 2.0,
        xml(&report.function)
    );
    // Axes, ticks and labels.
    svg.push_str(&format!(
        "<line x1=\"{margin}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{margin}\" y1=\"{margin}\" x2=\"{margin}\" y2=\"{}\" stroke=\"black\"/>\n",
        height - margin,
        width - margin,
        height - margin,
        height - margin
    ));
    for i in 0..=5 {
        let fx = max_x * f64::from(i) / 5.0;
        let fy = max_y * f64::from(i) / 5.0;
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{fx:.1}</text>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            x(fx),
            height - margin + 18.0,
            margin - 6.0,
            y(fy) + 4.0,
            usd(fy)
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">median duration (ms)</text>\n\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">cost per million invocations</text>\n",
        width / 2.0,
        height - 20.0,
        height / 2.0,
        height / 2.0
    ));
    let points: Vec<String> = report
        .sizes
        .iter()
        .map(|s| format!("{:.1},{:.1}", x(s.p50_ms), y(s.cost_per_million_usd)))
        .collect();
    svg.push_str(&format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>\n",
        points.join(" ")
    ));
    for s in &report.sizes {
        let recommended = Some(s.memory) == report.recommended;
        let color = if !s.clean() {
            "#c0392b"
        } else if recommended {
            "#1e8449"
        } else {
            "#2471a3"
        };
        svg.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{}\" fill=\"{color}\"{}/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">{}{}</text>\n",
            x(s.p50_ms),
            y(s.cost_per_million_usd),
            if recommended { 7 } else { 5 },
            if s.current {
                " stroke=\"black\" stroke-width=\"2\""
            } else {
                ""
            },
            x(s.p50_ms) + 9.0,
            y(s.cost_per_million_usd) - 6.0,
            s.memory,
            if recommended { " (recommended)" } else { "" }
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(memory_mib: u64, p50_ms: f64, cost: u64, errors: u32) -> SizeResult {
        SizeResult {
            memory: ByteSize::mib(memory_mib),
            current: memory_mib == 128,
            cpu_share: 1.0,
            ok: 10 - errors,
            errors,
            out_of_memory: 0,
            timeouts: 0,
            p50_ms,
            p95_ms: p50_ms,
            max_ms: p50_ms,
            cost_per_invocation: PicoUsd(cost),
            cost_per_million_usd: PicoUsd(cost).as_usd() * 1e6,
            max_memory_used_bytes: 0,
        }
    }

    #[test]
    fn each_strategy_picks_its_size_and_failing_sizes_are_never_picked() {
        let sizes = vec![
            size(64, 900.0, 1_000, 2),
            size(128, 800.0, 2_000, 0),
            size(512, 200.0, 1_800, 0),
            size(2048, 100.0, 3_500, 0),
        ];
        assert_eq!(recommend(&sizes, Strategy::Cost).0, Some(2));
        assert_eq!(recommend(&sizes, Strategy::Speed).0, Some(3));
        // 512: 1.0 × 2.0 = 2.0; 2048: 1.94 × 1.0 = 1.94; 128: 1.11 × 8 = 8.9.
        assert_eq!(recommend(&sizes, Strategy::Balanced).0, Some(3));
        let failing = vec![size(128, 1.0, 1, 1)];
        let (none, why) = recommend(&failing, Strategy::Cost);
        assert_eq!(none, None);
        assert!(why.contains("no size ran every invocation cleanly"));
    }

    #[test]
    fn the_timeout_leaves_room_above_the_tail() {
        assert_eq!(timeout_for(120.0), HumanDuration::from_millis(1000));
        assert_eq!(timeout_for(850.0), HumanDuration::from_millis(2600));
    }

    #[test]
    fn the_chart_is_svg_with_a_point_per_size() {
        let report = TuneReport {
            function: "a<b".into(),
            environment: "prod".into(),
            request: "GET /".into(),
            runs: 1,
            strategy: Strategy::Cost,
            sizes: vec![size(128, 10.0, 100, 0), size(512, 3.0, 150, 0)],
            recommended: Some(ByteSize::mib(128)),
            reason: String::new(),
            recommended_timeout: None,
            monthly_invocations: 0,
            monthly_cost_now_usd: 0.0,
            monthly_cost_recommended_usd: 0.0,
            monthly_saving_usd: 0.0,
            tuning_cost_usd: 0.0,
            applied_release: None,
        };
        let svg = chart(&report);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("128MiB (recommended)"));
        assert!(svg.contains("a&lt;b"), "names are escaped");
    }
}
