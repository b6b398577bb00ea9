//! An operator's backup and restore, as they would run it: `tally backup save` from a real
//! demo cluster with an election's votes (regions, duplicates, a changed vote), then a new
//! cluster on other ports started from the file, two members by `tally-node --restore`
//! and one by `tally backup restore`. Counts, state hash, audit chains and receipts must
//! come out identical, and the new cluster must go on taking votes and refusing
//! duplicates of the old ones, and bring a learner up to date through the restored
//! snapshot.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Demo;
use serde_json::Value;

const PORT_BASE: u16 = 17_521;
const RESTORED_PORT_BASE: u16 = 17_531;

fn node_bin() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tally")).with_file_name("tally-node")
}

/// The new cluster's processes, SIGKILLed when dropped.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A poll's whole audit feed, one JSON line per chain position (`tally audit tail`).
fn audit_feed(endpoints: &str, poll: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["--endpoints", endpoints, "-o", "json", "audit", "tail", poll, "--no-follow"])
        .output()
        .expect("tally runs");
    assert!(output.status.success(), "audit tail: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_backup_restores_into_a_new_cluster_with_identical_counts_hash_and_chains() {
    let data = tempfile::tempdir().unwrap();
    let demo = Demo::start(PORT_BASE, data.path(), &[]);
    let secret_file = data.path().join("cluster-secret");
    let secret_file = secret_file.to_str().unwrap();
    let poll = demo.wait_for("the demo's sample poll", Duration::from_secs(90), || {
        let (code, listed, _) = demo.tally(&["poll", "list"], &[]);
        listed["polls"][0]["poll_id"].as_str().map(str::to_string).filter(|_| code == 0)
    });
    let (code, sim, stderr) =
        demo.tally(&["simulate", "--voters", "400", "--duration", "3s", "--connections", "8", "--seed", "5"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let election = sim["poll_id"].as_str().unwrap().to_string();

    // Without the cluster secret, no backup.
    let file = data.path().join("backup.bin");
    let file_arg = file.to_str().unwrap();
    let (code, _, stderr) = demo.tally(&["backup", "save", file_arg], &[]);
    assert_ne!(code, 0, "a backup without credentials: {stderr}");
    assert!(!file.exists());
    let (code, saved, stderr) = demo.tally(&["--cluster-secret-file", secret_file, "backup", "save", file_arg], &[]);
    assert_eq!(code, 0, "{stderr}");
    let (code, inspected, stderr) = demo.tally(&["backup", "inspect", file_arg], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(saved["sha256"], inspected["sha256"]);
    assert_eq!(saved["votes"], sim["total_votes"].as_u64().unwrap() + 3, "{saved} {sim}");

    // What the old cluster says, to compare with: results, status, audit feeds.
    let (_, old_status, _) = demo.tally(&["cluster", "status"], &[]);
    let old_hash = old_status[0]["status"]["state_hash"].clone();
    assert_eq!(old_hash, saved["state_hash"], "{old_status}");
    let (_, old_results, _) = demo.tally(&["results", &election], &[]);
    let old_audit = audit_feed(&demo.endpoints(), &election);
    let old_sample = audit_feed(&demo.endpoints(), &poll);
    drop(demo);

    // A new cluster on other ports from the file.
    let restored = tempfile::tempdir().unwrap();
    let peers: String =
        (1..=3).map(|id| format!("{id}=127.0.0.1:{}", RESTORED_PORT_BASE + id - 1)).collect::<Vec<_>>().join(",");
    let dir = |id: u16| restored.path().join(id.to_string());
    let node3 = dir(3);
    let restore_node3 = || {
        demo_less_tally(&[
            "backup",
            "restore",
            file_arg,
            "--data-dir",
            node3.to_str().unwrap(),
            "--id",
            "3",
            "--peers",
            &peers,
        ])
    };
    let (code, prepared, stderr) = restore_node3();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(prepared["state_hash"], saved["state_hash"]);
    let (code, _, stderr) = restore_node3();
    assert_ne!(code, 0, "a second restore into a used data dir must be refused");
    assert!(stderr.contains("already holds"), "{stderr}");
    let mut nodes = Nodes(Vec::new());
    for id in 1..=3u16 {
        let log = std::fs::File::create(restored.path().join(format!("node{id}.log"))).unwrap();
        let mut command = Command::new(node_bin());
        command
            .args(["--id", &id.to_string(), "--addr", &format!("127.0.0.1:{}", RESTORED_PORT_BASE + id - 1)])
            .arg("--data-dir")
            .arg(dir(id))
            .args(["--peers", &peers])
            .env("TALLY_CLUSTER_SECRET", "restored-cluster")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        if id < 3 {
            command.arg("--restore").arg(&file);
        }
        nodes.0.push(command.spawn().expect("tally-node starts"));
    }
    let endpoints: String =
        (0..3).map(|i| format!("http://127.0.0.1:{}", RESTORED_PORT_BASE + i)).collect::<Vec<_>>().join(",");
    let tally = |args: &[&str]| {
        let mut all = vec!["--endpoints", endpoints.as_str()];
        all.extend_from_slice(args);
        demo_less_tally(&all)
    };
    let logs = || {
        (1..=3)
            .map(|id| std::fs::read_to_string(restored.path().join(format!("node{id}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let new_status = loop {
        let (code, status, _) = tally(&["cluster", "status"]);
        let nodes = status.as_array().cloned().unwrap_or_default();
        let agreed = nodes.len() == 3
            && nodes.iter().all(|n| n["status"]["leader_id"].is_u64() && n["status"]["state_hash"] == old_hash);
        if code == 0 && agreed {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the restored cluster did not form: {status}\n{}", logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(new_status[0]["status"]["applied_index"].as_u64() >= saved["applied_index"].as_u64());

    let (_, new_results, _) = tally(&["results", &election]);
    for field in ["total_votes", "options"] {
        assert_eq!(new_results[field], old_results[field], "{field}: {new_results} vs {old_results}");
    }
    assert_eq!(audit_feed(&endpoints, &election), old_audit, "the election's audit feed");
    assert_eq!(audit_feed(&endpoints, &poll), old_sample, "the sample poll's audit feed");
    let (code, report, stderr) = tally(&["audit", "verify", &election]);
    assert_eq!((code, &report["total_votes"]), (0, &old_results["total_votes"]), "{stderr}");

    // It goes on: a new voter is taken, an old one is still a duplicate.
    let (code, _, stderr) = tally(&["vote", &poll, "--option", "Go", "--voter", "after-restore"]);
    assert_eq!(code, 0, "{stderr}\n{}", logs());
    let first_voter = old_sample.lines().find_map(|line| {
        let entry: Value = serde_json::from_str(line).ok()?;
        entry["voter_id"].as_str().map(str::to_string)
    });
    let first_voter = first_voter.expect("a voter in the sample poll's feed");
    let (code, _, stderr) = tally(&["vote", &poll, "--option", "Go", "--voter", &first_voter]);
    assert_ne!(code, 0, "{first_voter} voted twice across the restore");
    assert!(stderr.contains("ALREADY_VOTED"), "{stderr}");

    // A learner joins. The restored cluster's log starts after the backup's index, so the
    // learner can only catch up through the restored snapshot, streamed from the block
    // journal of whichever node leads.
    let learner_addr = format!("127.0.0.1:{}", RESTORED_PORT_BASE + 3);
    let log = std::fs::File::create(restored.path().join("node4.log")).unwrap();
    nodes.0.push(
        Command::new(node_bin())
            .args(["--id", "4", "--addr", &learner_addr])
            .arg("--data-dir")
            .arg(dir(4))
            .env("TALLY_CLUSTER_SECRET", "restored-cluster")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("tally-node starts"),
    );
    let secret = restored.path().join("secret");
    std::fs::write(&secret, "restored-cluster").unwrap();
    let secret = secret.to_str().unwrap();
    let (code, _, stderr) = tally(&[
        "--cluster-secret-file",
        secret,
        "cluster",
        "add-member",
        "--node-id",
        "4",
        "--addr",
        &learner_addr,
        "--learner",
    ]);
    assert_eq!(code, 0, "{stderr}\n{}", logs());
    let learner = format!("http://{learner_addr}");
    let status_of = |endpoints: &str| demo_less_tally(&["--endpoints", endpoints, "cluster", "status"]).1;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (leader, mine) = (status_of(&endpoints)[0]["status"].clone(), status_of(&learner)[0]["status"].clone());
        let caught_up = mine["applied_index"].is_u64() && mine["applied_index"] == leader["applied_index"];
        if caught_up && mine["state_hash"] == leader["state_hash"] {
            break;
        }
        let learner_log = std::fs::read_to_string(restored.path().join("node4.log")).unwrap_or_default();
        assert!(
            std::time::Instant::now() < deadline,
            "the learner did not catch up: {mine} vs {leader}\n{learner_log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let learner_log = std::fs::read_to_string(restored.path().join("node4.log")).unwrap_or_default();
    assert!(learner_log.contains("snapshot installed"), "the learner caught up without a snapshot:\n{learner_log}");
    let (_, learner_results, _) = demo_less_tally(&["--endpoints", &learner, "results", &election]);
    for field in ["total_votes", "options"] {
        assert_eq!(learner_results[field], old_results[field], "{field} on the learner: {learner_results}");
    }
    assert_eq!(audit_feed(&learner, &election), old_audit, "the election's audit feed on the learner");
}

/// `tally args -o json` against whatever endpoints `args` name.
fn demo_less_tally(args: &[&str]) -> (i32, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .args(["-o", "json"])
        .env_remove("TALLY_TOKEN")
        .output()
        .expect("tally runs");
    let stdout = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), stdout, String::from_utf8_lossy(&output.stderr).into_owned())
}
