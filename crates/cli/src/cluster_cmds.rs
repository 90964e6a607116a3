//! `runway nodes`: the nodes sharing a store, as one of them reports them.

use std::process::ExitCode;

use runway_server::NodesResponse;

use crate::client::{AdminClient, ServerArgs};
use crate::table;

/// Arguments of `runway nodes`.
#[derive(clap::Args)]
pub struct NodesArgs {
    /// Also list nodes that stopped reporting in the last hour.
    #[arg(long)]
    pub all: bool,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `runway nodes`: id, addresses, version, start, last report, requests in flight and
/// compiled artifacts of every node.
pub fn nodes(args: NodesArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args.server)?;
    let all = if args.all { "true" } else { "false" };
    let report: NodesResponse = client.json(client.get("/v1/nodes").query(&[("all", all)]))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = report
        .nodes
        .iter()
        .map(|info| {
            let node = &info.node;
            let mut id = node.id.clone();
            if node.id == report.this_node {
                id.push_str(" (this)");
            }
            let state = if node.draining {
                "draining"
            } else if info.live {
                "live"
            } else {
                "gone"
            };
            vec![
                id,
                state.to_owned(),
                node.gateway.clone(),
                node.admin.clone(),
                node.version.clone(),
                table::time(node.started_at_ms),
                table::time(node.last_seen_ms),
                node.in_flight.to_string(),
                node.compiled_artifacts.to_string(),
            ]
        })
        .collect();
    table::print(
        &[
            "NODE",
            "STATE",
            "GATEWAY",
            "ADMIN",
            "VERSION",
            "STARTED",
            "LAST SEEN",
            "IN FLIGHT",
            "COMPILED",
        ],
        &rows,
    );
    println!(
        "this node splits cluster-wide limits as rank {} of {} live nodes",
        report.rank, report.live_nodes
    );
    Ok(ExitCode::SUCCESS)
}
