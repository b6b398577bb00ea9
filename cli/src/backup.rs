//! `tally backup ...`: save a consistent backup from a running cluster, check one, and
//! prepare a new cluster's data directories from it (after `etcdctl snapshot`).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{self, root_cause};
use crate::exit::Failure;
use crate::output::{self, Format};
use crate::Settings;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Save a consistent backup of the cluster's state (everything acknowledged before
    /// the call) to FILE. Needs the cluster secret or, with `--auth jwt`, an admin token.
    Save {
        file: PathBuf,
        /// How long the node may take to encode and send the backup, in seconds.
        #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        timeout_secs: u64,
    },
    /// Check a backup file whole (magic, checksums, decoding) and say what it holds.
    Inspect { file: PathBuf },
    /// Write a backup into an empty data directory, as node --id of a new cluster of
    /// --peers; then start `tally-node` on it with the same --id, --data-dir and --peers.
    /// Do it for every member, with the same file and --peers
    /// (`tally-node --restore FILE` does the same as it starts).
    Restore {
        file: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        /// This member's id in the new cluster.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        id: u64,
        /// The new cluster, as ID=HOST:PORT pairs separated by commas.
        #[arg(long, value_delimiter = ',', value_parser = crate::cluster::parse_member, required = true)]
        peers: Vec<crate::cluster::Member>,
    },
}

pub async fn run(command: Command, settings: &Settings) -> anyhow::Result<()> {
    let report = match command {
        Command::Save { file, timeout_secs } => save(settings, &file, timeout_secs).await?,
        Command::Inspect { file } => inspect(&file).await?,
        Command::Restore { file, data_dir, id, peers } => restore(&file, &data_dir, id, &peers).await?,
    };
    match settings.format {
        Format::Json => output::emit_json(&report),
        Format::Table => Ok(output::emit(&output::render_object(&report))?),
    }
}

async fn save(settings: &Settings, file: &Path, timeout_secs: u64) -> anyhow::Result<Value> {
    let client = &settings.client;
    let http = client.http_builder().timeout(std::time::Duration::from_secs(timeout_secs)).build()?;
    let partial = file.with_extension("partial");
    let mut tried = Vec::new();
    for endpoint in client.endpoints() {
        let mut request = client.authorize(http.get(format!("{endpoint}/v1/cluster/backup")));
        if let Some(secret) = &settings.cluster_secret {
            request = request.header(client::CLUSTER_SECRET_HEADER, secret);
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            // Nothing was written anywhere: the next node may answer.
            Err(error) => {
                tried.push(format!("{endpoint} ({})", root_cause(&error)));
                continue;
            }
        };
        let status = response.status();
        if !status.is_success() {
            let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
            let body = response.text().await.unwrap_or_default();
            let failure = client::failure_from_response(status.as_u16(), &body, retry_after.as_deref());
            if status.as_u16() == 503 {
                tried.push(format!("{endpoint} ({failure})"));
                continue;
            }
            return Err(failure.into());
        }
        // Written as it arrives, then checked whole, then moved into place: FILE is either
        // a complete, checked backup or untouched.
        let mut out = std::fs::File::create(&partial)
            .map_err(|e| Failure::usage(format!("cannot write {}: {e}", partial.display())))?;
        let written: anyhow::Result<()> = async {
            while let Some(chunk) = response.chunk().await.map_err(|e| {
                Failure::unavailable(
                    "CONNECTION_LOST",
                    format!("{endpoint}: the backup was cut short: {}", root_cause(&e)),
                )
            })? {
                out.write_all(&chunk)?;
            }
            Ok(out.sync_all()?)
        }
        .await;
        drop(out);
        if let Err(error) = written {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
        let report = match check_saved(&partial).await {
            Ok(report) => report,
            Err(error) => {
                let _ = std::fs::remove_file(&partial);
                return Err(error);
            }
        };
        std::fs::rename(&partial, file)?;
        let mut report = report;
        report["file"] = json!(file.display().to_string());
        report["served_by"] = json!(endpoint);
        return Ok(report);
    }
    Err(Failure::unavailable("UNAVAILABLE", format!("no node gave a backup: {}", tried.join(", "))).into())
}

/// A saved file checked whole (digest, frames, every record) by `tally-node backup
/// inspect`; where no `tally-node` is at hand, by its SHA-256 digest alone, and the report
/// says so.
async fn check_saved(file: &Path) -> anyhow::Result<Value> {
    match inspect(file).await {
        Err(error) if error.downcast_ref::<Failure>().is_some_and(|f| f.code == "NODE_BIN_NOT_FOUND") => {
            let (bytes, sha256) = tokio::task::spawn_blocking({
                let file = file.to_path_buf();
                move || digest_only(&file)
            })
            .await??;
            Ok(json!({"bytes": bytes, "sha256": sha256, "checked": "digest only (no tally-node for the full check)"}))
        }
        other => other,
    }
}

/// A backup is MAGIC, a stream, and the stream's SHA-256: checks the magic, and the last
/// against the middle. The file's length and the digest in hex.
fn digest_only(file: &Path) -> anyhow::Result<(u64, String)> {
    use sha2::Digest;
    use std::io::Read;
    use tally_api::backup_file::{DIGEST_BYTES, MAGIC};
    let mut opened = std::fs::File::open(file)?;
    let len = opened.metadata()?.len();
    let invalid = |why: &str| Failure::failed("BACKUP_INVALID", format!("{}: {why}", file.display()));
    let frame = (MAGIC.len() + DIGEST_BYTES) as u64;
    if len < frame {
        return Err(invalid("the backup is cut short").into());
    }
    let mut magic = [0u8; MAGIC.len()];
    opened.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(invalid("not a Tally backup (or of another format version)").into());
    }
    let mut body = std::io::BufReader::with_capacity(1 << 20, opened).take(len - frame);
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut body, &mut hasher)?;
    let mut stored = [0u8; DIGEST_BYTES];
    body.into_inner().read_exact(&mut stored)?;
    let computed: [u8; 32] = hasher.finalize().into();
    if computed != stored {
        return Err(invalid("the backup's checksum does not match: it is damaged or cut short").into());
    }
    Ok((len, tally_api::audit::to_hex(&computed)))
}

/// Backup files are read and data directories written by `tally-node backup ...`, with
/// the node's own storage code; this client links none of it.
async fn inspect(file: &Path) -> anyhow::Result<Value> {
    // `--` first: a FILE that starts with `-` is still a file.
    let args = ["backup".as_ref(), "inspect".as_ref(), "--".as_ref(), file.as_os_str()];
    let mut report = crate::sibling::node_json(&args).await?;
    report["file"] = json!(file.display().to_string());
    Ok(report)
}

async fn restore(file: &Path, data_dir: &Path, id: u64, peers: &[crate::cluster::Member]) -> anyhow::Result<Value> {
    if !peers.iter().any(|m| m.node_id == id) {
        return Err(Failure::usage(format!("--peers does not include this member (--id {id})")).into());
    }
    let peers_flag = peers.iter().map(|m| format!("{}={}", m.node_id, m.addr)).collect::<Vec<_>>().join(",");
    // Each flag with its value in one word, and `--` before FILE: paths that start with
    // `-` stay paths.
    let mut data_dir_flag = std::ffi::OsString::from("--data-dir=");
    data_dir_flag.push(data_dir);
    let (id_flag, peers_flag) = (format!("--id={id}"), format!("--peers={peers_flag}"));
    let args: [&std::ffi::OsStr; 7] = [
        "backup".as_ref(),
        "restore".as_ref(),
        &data_dir_flag,
        id_flag.as_ref(),
        peers_flag.as_ref(),
        "--".as_ref(),
        file.as_os_str(),
    ];
    let mut report = crate::sibling::node_json(&args).await?;
    report["data_dir"] = json!(data_dir.display().to_string());
    report["next"] = json!(format!(
        "tally-node --id {id} --data-dir {} --peers {} (and the other members likewise)",
        data_dir.display(),
        peers.iter().map(|m| format!("{}={}", m.node_id, m.addr)).collect::<Vec<_>>().join(",")
    ));
    Ok(report)
}
