//! The other binaries `tally` runs: `tally-node` for the demo's nodes and for the offline
//! backup commands (the client links no storage engine), found as cargo builds them.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::exit::Failure;

pub const NODE: &str = "tally-node";

/// `flag` if given, else `name` next to this binary (as cargo builds them), else whatever
/// `name` is on PATH.
pub fn locate(name: &str, flag: Option<PathBuf>, current_exe: Option<PathBuf>) -> PathBuf {
    let bin_name = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    if let Some(path) = flag {
        return path;
    }
    let sibling = current_exe.as_deref().and_then(Path::parent).map(|dir| dir.join(&bin_name));
    sibling.filter(|path| path.is_file()).unwrap_or_else(|| PathBuf::from(bin_name))
}

/// What "not found" means for `bin`: how to build it, or point at it.
pub fn not_found(bin: &Path) -> Failure {
    Failure::failed(
        "NODE_BIN_NOT_FOUND",
        format!(
            "cannot find {}: build it with `cargo build -p tally-node`, \
             or give its path with TALLY_NODE_BIN (or `tally demo --node-bin`)",
            bin.display()
        ),
    )
}

/// Runs `tally-node <args>` (`TALLY_NODE_BIN` or the sibling), whose answer is one JSON
/// object on stdout: a report, or `{"error": {"code", "message"}}`.
pub async fn node_json(args: &[&std::ffi::OsStr]) -> anyhow::Result<Value> {
    let bin = locate(NODE, std::env::var_os("TALLY_NODE_BIN").map(PathBuf::from), std::env::current_exe().ok());
    let output = tokio::process::Command::new(&bin)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => not_found(&bin).into(),
            _ => anyhow::Error::new(error).context(format!("cannot start {}", bin.display())),
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(answer) = stdout.lines().rev().find_map(|line| serde_json::from_str::<Value>(line).ok()) else {
        // clap refused the arguments (its message is on stderr above): bad usage.
        if output.status.code() == Some(2) {
            return Err(Failure::usage(format!("{} refused the arguments", bin.display())).into());
        }
        let message = format!("{} answered nothing readable ({})", bin.display(), output.status);
        return Err(Failure::failed("FAILED", message).into());
    };
    match answer.get("error") {
        None if output.status.success() => Ok(answer),
        None => Err(Failure::failed("FAILED", format!("{} failed ({})", bin.display(), output.status)).into()),
        Some(error) => {
            let code = error["code"].as_str().unwrap_or("FAILED");
            let message = error["message"].as_str().unwrap_or("").to_string();
            Err(match code {
                "USAGE" => Failure::usage(message),
                code => Failure::failed(code, message),
            }
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_comes_from_the_flag_then_a_sibling_then_path() {
        let flag = Some(PathBuf::from("/opt/tally-node"));
        assert_eq!(locate(NODE, flag, None), PathBuf::from("/opt/tally-node"));
        assert_eq!(locate(NODE, None, None), PathBuf::from(NODE));
        let dir = std::env::temp_dir().join(format!("tally-sibling-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        assert_eq!(locate(NODE, None, Some(dir.join("tally"))), PathBuf::from(NODE));
        std::fs::write(dir.join(NODE), "").expect("write sibling");
        assert_eq!(locate(NODE, None, Some(dir.join("tally"))), dir.join(NODE));
        std::fs::remove_dir_all(dir).expect("clean up");
    }
}
