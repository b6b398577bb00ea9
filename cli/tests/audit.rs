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

const TAIL_PORT_BASE: u16 = 17_461;

/// The positions in the complete NDJSON lines of a `tally audit tail -o json` output file
/// (a killed consumer may leave half a line).
fn tailed(path: &std::path::Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("an audit line");
            (value["position"].as_u64().expect("a position"), value["vote_id"].as_str().unwrap().to_string())
        })
        .collect()
}

/// A downstream consumer of a poll's votes is killed, then resumes from the last line it
/// printed: together its two runs saw every vote once, in chain order.
#[test]
fn a_killed_consumer_resumes_the_audit_feed_missing_nothing_and_repeating_nothing() {
    let data = tempfile::tempdir().unwrap();
    let demo = Demo::start(TAIL_PORT_BASE, data.path(), &[]);
    let tally = |args: &[&str]| demo.tally(args, &[]);
    let poll = demo.wait_for("the demo's sample poll", Duration::from_secs(90), || {
        let (code, listed, _) = tally(&["poll", "list"]);
        listed["polls"][0]["poll_id"].as_str().map(str::to_string).filter(|_| code == 0)
    });
    let vote = |voter: String| {
        let (code, _, stderr) = tally(&["vote", &poll, "--option", "Go", "--voter", &voter]);
        assert_eq!(code, 0, "{stderr}");
    };
    let consume = |out: &std::path::Path, endpoints: &str, after: Option<u64>| {
        let mut args = vec!["audit".to_string(), "tail".into(), poll.clone(), "-o".into(), "json".into()];
        args.extend(["--endpoints".to_string(), endpoints.to_string()]);
        args.extend(after.map(|a| format!("--after={a}")));
        std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(&args)
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
            .spawn()
            .expect("tally audit tail starts")
    };
    let wait_for_position = |path: &std::path::Path, position: u64| {
        demo.wait_for(&format!("position {position} in {}", path.display()), Duration::from_secs(30), || {
            tailed(path).last().filter(|(p, _)| *p >= position).map(|_| ())
        })
    };
    demo.wait_for("the demo's seed votes", Duration::from_secs(30), || {
        let (_, results, _) = tally(&["results", &poll]);
        (results["total_votes"] == 3).then_some(())
    });

    let first = data.path().join("first.ndjson");
    let mut consumer = consume(&first, &demo.endpoints(), None);
    (0..5).for_each(|i| vote(format!("tail-a{i}")));
    wait_for_position(&first, 7);
    consumer.kill().unwrap();
    consumer.wait().unwrap();
    (0..5).for_each(|i| vote(format!("tail-b{i}")));

    // The second run starts after the last complete line of the first, and its first
    // endpoint is down: it moves on to the next.
    let last = tailed(&first).last().map(|(p, _)| *p).expect("the first run printed");
    let second = data.path().join("second.ndjson");
    let endpoints = format!("http://127.0.0.1:1,{}", demo.endpoints());
    let mut consumer = consume(&second, &endpoints, Some(last));
    (0..5).for_each(|i| vote(format!("tail-c{i}")));
    wait_for_position(&second, 17);
    consumer.kill().unwrap();
    consumer.wait().unwrap();

    let seen: Vec<(u64, String)> = tailed(&first).into_iter().chain(tailed(&second)).collect();
    let positions: Vec<u64> = seen.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, (0..=17).collect::<Vec<_>>(), "missed or repeated");
    // The same votes as a one-off read of the whole feed.
    let whole = data.path().join("whole.ndjson");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["audit", "tail", &poll, "--no-follow", "-o", "json", "--endpoints", &demo.endpoints()])
        .stdout(std::fs::File::create(&whole).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(tailed(&whole), seen);
}
