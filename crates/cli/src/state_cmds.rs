//! `runway backup` (online, through the admin API) and `runway restore` (offline, into a
//! data folder no node is using).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::client::{AdminClient, ServerArgs};

#[derive(clap::Args)]
pub struct BackupArgs {
    /// Where to write the backup (a tar file; refused if it exists).
    pub file: PathBuf,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// A file written by `runway backup`.
    pub file: PathBuf,
    /// Data folder to restore into; no node may be running on it.
    #[arg(long, env = "RUNWAY_DATA_DIR", default_value = ".runway")]
    pub data_dir: PathBuf,
    /// Move whatever the folder holds aside (into DATA_DIR/lost+found-*) instead of refusing.
    #[arg(long)]
    pub replace: bool,
}

pub fn backup(args: BackupArgs) -> anyhow::Result<ExitCode> {
    if args.file.exists() {
        bail!(
            "{} exists; choose a new file name (a backup never overwrites one)",
            args.file.display()
        );
    }
    let client = AdminClient::new(&args.server)?;
    let mut response = client.send(client.post("/v1/backup"))?;
    if !response.status().is_success() {
        return crate::client::decode::<serde_json::Value>(response).map(|_| ExitCode::FAILURE);
    }
    let partial = args.file.with_extension("partial");
    let mut out = std::fs::File::create(&partial)
        .with_context(|| format!("while creating {}", partial.display()))?;
    let written = response
        .copy_to(&mut out)
        .with_context(|| format!("while writing {}", partial.display()))?;
    out.flush()
        .and_then(|()| out.sync_all())
        .with_context(|| format!("while writing {}", partial.display()))?;
    std::fs::rename(&partial, &args.file)
        .with_context(|| format!("while renaming {} into place", partial.display()))?;
    println!(
        "backed up the node to {} ({} KiB); restore it with `runway restore {} --data-dir DIR`",
        args.file.display(),
        written.div_ceil(1024),
        args.file.display()
    );
    println!(
        "note: the backup does not hold the secrets key; keep a copy of the node's secrets.key \
         apart from it"
    );
    Ok(ExitCode::SUCCESS)
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    let report = runway_server::backup::restore(&args.file, &args.data_dir, args.replace)?;
    if let Some(aside) = &report.moved_aside {
        println!(
            "moved the folder's previous contents to {}",
            aside.display()
        );
    }
    let functions: usize = report.functions.iter().map(|(_, n)| n).sum();
    println!(
        "restored {} into {}: {functions} functions in {} environments, {} artifacts (taken {} by runway {})",
        args.file.display(),
        args.data_dir.display(),
        report.functions.len(),
        report.manifest.artifacts,
        runway_server::format_ms(report.manifest.created_at_ms),
        report.manifest.runway_version
    );
    if report.sealed_secrets && !args.data_dir.join("secrets.key").exists() {
        println!(
            "the store holds sealed secrets: copy the original secrets.key into {} (or start \
             with --secret-key-file) before `runway serve`",
            args.data_dir.display()
        );
    }
    println!(
        "start it with `runway serve --data-dir {}`",
        args.data_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
