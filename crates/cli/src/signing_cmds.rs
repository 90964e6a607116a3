//! Artifact signing and revocation: `keys generate`, `sign`, `revoke`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use runway_server::{RevokeRequest, RevokeResponse, RevokedArtifact};
use runway_signing::KeyPair;
use sha2::{Digest as _, Sha256};

use crate::client::{AdminClient, ServerArgs};
use crate::table::{self, time};

/// Where the signature of `component` lives: `FILE.wasm.sig` beside it.
pub fn signature_path(component: &Path) -> PathBuf {
    let mut name = component.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Create a signing key pair: NAME.key (private, mode 0600) and NAME.pub.
    Generate {
        /// Path prefix of the two files.
        name: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

pub fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    let KeysCommand::Generate { name, force } = command;
    // Appended, not replacing an extension: `team.v2` gives `team.v2.key`.
    let with = |suffix: &str| {
        let mut path = name.as_os_str().to_owned();
        path.push(suffix);
        PathBuf::from(path)
    };
    let private = with(".key");
    let public = with(".pub");
    for path in [&private, &public] {
        if path.exists() && !force {
            bail!(
                "{} exists; choose another name or pass --force to replace it",
                path.display()
            );
        }
    }
    let pair = KeyPair::generate();
    write_private(&private, &pair.to_secret_text())?;
    std::fs::write(&public, format!("{}\n", pair.public()))
        .with_context(|| format!("while writing {}", public.display()))?;
    println!(
        "created signing key {}: {} (private, keep it secret) and {} (public: add it to a node's --trusted-keys file)",
        pair.public().id(),
        private.display(),
        public.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes a new file readable by its owner only, then moves it into place, so neither an
/// existing file's looser mode nor a symlink at `path` decides who can read the key.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("while creating {}", temporary.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("while writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("while moving the key into {}", path.display()))
}

#[derive(clap::Args)]
pub struct SignArgs {
    /// The component to sign.
    pub file: PathBuf,
    /// The private key (made by `runway keys generate`).
    #[arg(long)]
    pub key: PathBuf,
}

/// `runway sign FILE --key KEY`: writes FILE.sig, which `runway deploy` uploads.
pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let pair = KeyPair::read(&args.key)?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("while reading {}", args.file.display()))?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let signature = pair.sign(&digest);
    let out = signature_path(&args.file);
    std::fs::write(&out, serde_json::to_string_pretty(&signature)? + "\n")
        .with_context(|| format!("while writing {}", out.display()))?;
    println!(
        "signed {} (sha256 {}) with key {}: {}",
        args.file.display(),
        &digest[..12],
        pair.public().id(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
pub struct RevokeArgs {
    /// The artifact's SHA-256 (as `runway releases` shows it).
    pub digest: Option<String>,
    /// Why (shown in the audit log).
    #[arg(long)]
    pub reason: Option<String>,
    /// List revoked artifacts instead.
    #[arg(long, conflicts_with = "digest")]
    pub list: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `runway revoke DIGEST`: every release running it stops serving at once.
pub fn revoke(args: RevokeArgs) -> anyhow::Result<ExitCode> {
    let client = AdminClient::new(&args.server)?;
    if args.list {
        let revoked: Vec<RevokedArtifact> = client.json(client.get("/v1/artifacts/revoked"))?;
        let rows: Vec<Vec<String>> = revoked
            .iter()
            .map(|r| {
                vec![
                    r.digest.clone(),
                    time(r.revoked_at_ms),
                    r.actor.clone(),
                    r.reason.clone(),
                ]
            })
            .collect();
        table::print(&["DIGEST", "REVOKED", "BY", "REASON"], &rows);
        return Ok(ExitCode::SUCCESS);
    }
    let Some(digest) = args.digest else {
        bail!("name the artifact to revoke (its full SHA-256), or pass --list");
    };
    let response: RevokeResponse =
        client.json(client.post(&format!("/v1/artifacts/{digest}/revoke")).json(
            &RevokeRequest {
                reason: args.reason,
            },
        ))?;
    if response.stopped.is_empty() {
        println!("revoked {}; no function was serving it", response.digest);
    } else {
        println!(
            "revoked {}; stopped at once (503): {}",
            response.digest,
            response.stopped.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
