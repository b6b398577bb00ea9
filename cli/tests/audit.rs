//! An auditor's and a voter's check, as they would run it: `tally demo` starts a real
//! 3-node cluster, a voter keeps the receipt of a vote, and `tally audit verify` checks the
//! chain, the receipt and a recount against the cluster's results.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PORT_BASE: u16 = 17_401;

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        // SIGTERM lets the demo stop its nodes; `kill` keeps this test free of unsafe code.
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
    }
}

fn endpoints() -> String {
    (0..3).map(|i| format!("http://127.0.0.1:{}", PORT_BASE + i)).collect::<Vec<_>>().join(",")
}

/// Runs `tally --endpoints <demo> args -o json`: exit code, stdout as JSON (or null), stderr.
fn tally(args: &[&str]) -> (i32, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .args(["--endpoints", &endpoints(), "-o", "json"])
        .output()
        .expect("tally runs");
    let stdout = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), stdout, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_voter_and_an_auditor_verify_a_poll_end_to_end() {
    let data = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["demo", "--fresh", "--port-base", &PORT_BASE.to_string(), "--data-dir"])
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tally demo starts");
    let _demo = Demo(child);

    // The demo is up once its sample poll is listed.
    let deadline = Instant::now() + Duration::from_secs(90);
    let poll = loop {
        let (code, listed, _) = tally(&["poll", "list"]);
        let first = listed["polls"][0]["poll_id"].as_str().map(str::to_string);
        match first {
            Some(poll) if code == 0 => break poll,
            _ if Instant::now() > deadline => panic!("the demo did not come up: {listed}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };

    let (code, reply, stderr) = tally(&["vote", &poll, "--option", "Go", "--voter", "auditor-test"]);
    assert_eq!(code, 0, "{stderr}");
    let receipt = &reply["receipt"];
    let vote_id = receipt["vote_id"].as_str().expect("a receipt in the reply");
    let hash = receipt["chain_hash"].as_str().expect("a chain hash");
    // The demo's three seed votes come first in the chain.
    assert_eq!(receipt["position"], 3, "{reply}");

    let keep = format!("{vote_id}={hash}");
    let (code, report, stderr) = tally(&["audit", "verify", &poll, "--receipt", &keep]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["verified"], true);
    assert_eq!(report["total_votes"], 4, "{report}");
    assert_eq!(report["chain_length"], 4, "{report}");

    // A simulated election through every node; the auditor's recount then agrees with it.
    let (code, sim, stderr) =
        tally(&["simulate", "--voters", "300", "--duration", "3s", "--connections", "8", "--seed", "11"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(sim["errors"], 0, "{sim}");
    assert_eq!(sim["total_votes"], sim["recorded"], "{sim}");
    assert!(sim["already_voted"].as_u64().unwrap() + sim["replayed"].as_u64().unwrap() > 0, "{sim}");
    let regions = sim["turnout_by_region"].as_object().expect("turnout by region");
    let voted: u64 = regions.values().map(|r| r["votes"].as_u64().unwrap()).sum();
    assert_eq!(Some(voted), sim["total_votes"].as_u64(), "{sim}");
    let election = sim["poll_id"].as_str().unwrap();
    let (code, report, stderr) = tally(&["audit", "verify", election]);
    assert_eq!((code, &report["total_votes"]), (0, &sim["total_votes"]), "{stderr}");

    // A receipt the cluster never issued is caught.
    let forged = format!("{vote_id}={}", "0".repeat(64));
    let (code, _, stderr) = tally(&["audit", "verify", &poll, "--receipt", &forged]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("AUDIT_MISMATCH"), "{stderr}");
}
