//! `tally-node backup inspect|restore`: the commands that read backup files and write data
//! directories with the node's own storage code. The `tally` client runs them as a child
//! process (it links no storage engine); an operator can run them by hand.
//!
//! Each prints one JSON object on stdout: the report, or `{"error": {"code", "message"}}`
//! with exit status 1 (bad usage is clap's, status 2).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use tally_raft::NodeId;

/// Offline commands on backup files.
#[derive(Parser, Debug)]
#[command(name = "tally-node backup")]
struct BackupTool {
    #[command(subcommand)]
    command: BackupCommand,
}

#[derive(Subcommand, Debug)]
enum BackupCommand {
    /// Check a backup file whole (magic, checksums, decoding) and say what it holds.
    Inspect { file: PathBuf },
    /// Write a backup into an empty data directory, as member --id of a new cluster of
    /// --peers (what `--restore FILE` does as a node starts).
    Restore {
        file: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        id: NodeId,
        #[arg(long, value_delimiter = ',', value_parser = crate::config::parse_peer, required = true)]
        peers: Vec<(NodeId, String)>,
    },
}

/// Whether the process was started as `tally-node backup ...`.
pub fn is_backup_command(args: &[OsString]) -> bool {
    args.get(1).is_some_and(|a| a == "backup")
}

/// Runs `tally-node backup ...`; `args` is the whole command line.
pub fn run(args: Vec<OsString>) -> ExitCode {
    let tool =
        BackupTool::parse_from(std::iter::once(OsString::from("tally-node backup")).chain(args.into_iter().skip(2)));
    let outcome = match tool.command {
        BackupCommand::Inspect { file } => inspect(&file),
        BackupCommand::Restore { file, data_dir, id, peers } => restore(&file, &data_dir, id, peers),
    };
    let (printed, status) = match outcome {
        Ok(report) => (report, ExitCode::SUCCESS),
        Err((code, message)) => (json!({"error": {"code": code, "message": message}}), ExitCode::FAILURE),
    };
    println!("{printed}");
    status
}

type Failed = (&'static str, String);

fn check(file: &Path) -> Result<tally_raft::backup::BackupInfo, Failed> {
    let (reader, len) = crate::open_backup(file).map_err(|e| ("USAGE", e.to_string()))?;
    tally_raft::backup::inspect(reader, len).map_err(|e| ("BACKUP_INVALID", format!("{}: {e}", file.display())))
}

fn report(info: &tally_raft::backup::BackupInfo) -> Result<Value, Failed> {
    serde_json::to_value(info).map_err(|e| ("FAILED", e.to_string()))
}

fn inspect(file: &Path) -> Result<Value, Failed> {
    report(&check(file)?)
}

fn restore(file: &Path, data_dir: &Path, id: NodeId, peers: Vec<(NodeId, String)>) -> Result<Value, Failed> {
    let members: BTreeMap<NodeId, String> = peers.into_iter().collect();
    if !members.contains_key(&id) {
        return Err(("USAGE", format!("--peers does not include this member (--id {id})")));
    }
    check(file)?;
    let db = crate::open_data_dir(data_dir, 64).map_err(|e| ("RESTORE_FAILED", e.to_string()))?;
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| ("FAILED", e.to_string()))?;
    let info =
        runtime.block_on(crate::restore_backup(&db, file, &members)).map_err(|e| ("RESTORE_FAILED", e.to_string()))?;
    report(&info)
}
