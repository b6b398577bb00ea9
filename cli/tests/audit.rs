//! An auditor's and a voter's check, as they would run it: `tally demo` starts a real
//! 3-node cluster, a voter keeps the receipt of a vote, and `tally audit verify` checks the
//! chain, the receipt and a recount against the cluster's results.

mod common;

use std::time::Duration;

use common::Demo;

const PORT_BASE: u16 = 17_401;

#[test]
fn a_voter_and_an_auditor_verify_a_poll_end_to_end() {
    let data = tempfile::tempdir().unwrap();
    let demo = Demo::start(PORT_BASE, data.path(), &[]);
    let tally = |args: &[&str]| demo.tally(args, &[]);

    // The demo is up once its sample poll is listed.
    let poll = demo.wait_for("the demo's sample poll", Duration::from_secs(90), || {
        let (code, listed, _) = tally(&["poll", "list"]);
        let first = listed["polls"][0]["poll_id"].as_str().map(str::to_string);
        first.filter(|_| code == 0)
    });
    // ... and seeded once its three votes are counted.
    demo.wait_for("the demo's seed votes", Duration::from_secs(30), || {
        let (_, results, _) = tally(&["results", &poll]);
        (results["total_votes"] == 3).then_some(())
    });

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
