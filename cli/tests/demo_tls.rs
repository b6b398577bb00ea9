//! `tally demo --tls` as a new user meets it: the demo makes a CA and node certificates,
//! the nodes serve https and check each other's certificates, and the CLI and the
//! benchmark work against them with `--cacert` (and fail clearly without it).

mod common;

use std::time::Duration;

use common::Demo;

const PORT_BASE: u16 = 17_441;

#[test]
fn a_tls_demo_serves_the_cli_and_the_benchmark_over_https() {
    let data = tempfile::tempdir().unwrap();
    let demo = Demo::start(PORT_BASE, data.path(), &["--tls"]);
    let ca = data.path().join("tls").join("ca.pem");
    let ca = ca.to_str().expect("utf-8 path");
    let with_ca = [("TALLY_CACERT", ca)];
    let poll = demo.wait_for("the demo's sample poll, over https", Duration::from_secs(90), || {
        let (code, listed, _) = demo.tally(&["poll", "list"], &with_ca);
        let poll = listed["polls"][0]["poll_id"].as_str().filter(|_| code == 0)?.to_string();
        let (_, results, _) = demo.tally(&["results", &poll], &with_ca);
        (results["total_votes"] == 3).then_some(poll)
    });

    // Without the CA, the CLI cannot trust the nodes, and says so.
    let (code, _, stderr) = demo.tally(&["poll", "list"], &[]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    // A vote through a follower reaches the leader over the nodes' mutual TLS.
    let node2 = format!("https://127.0.0.1:{}", PORT_BASE + 1);
    let vote = ["vote", &poll, "--option", "Go", "--voter", "tls-voter"];
    let (code, voted, stderr) = demo.tally_at(&node2, &vote, &with_ca);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(voted["status"], "recorded", "{voted}");
    let (code, status, stderr) = demo.tally(&["cluster", "status"], &with_ca);
    assert_eq!(code, 0, "{stderr}");
    let answered = status.as_array().map(|nodes| nodes.iter().filter(|n| n["status"]["leader_id"].is_u64()).count());
    assert_eq!(answered, Some(3), "{status}");

    // On a terminal, `results --watch` redraws in place; Ctrl-C (ETX on the terminal) ends it.
    let watch = ["--endpoints", &node2, "results", &poll, "--watch"];
    let (code, screen) = common::on_a_terminal(&watch, &with_ca, "total_votes", "\x03");
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("\x1b[H\x1b[2J"), "no redraw: {screen:?}");

    // The benchmark checks its own exact counts on every node at the end.
    let bench = ["bench", "--duration", "2s", "--connections", "4"];
    let (code, report, stderr) = demo.tally(&bench, &with_ca);
    assert_eq!(code, 0, "{stderr}\n{report}");
    assert!(report["votes_acknowledged"].as_u64().is_some_and(|votes| votes > 0), "{report}");
    assert_eq!(report["check"]["ok"], true, "{report}");
    let (_, listed, _) = demo.tally(&["poll", "list"], &with_ca);
    let titles: Vec<String> =
        listed["polls"].as_array().expect("polls").iter().map(|p| p["title"].to_string()).collect();
    // The bench's poll carries the run's start, to tell runs apart in a poll list.
    assert!(titles.iter().any(|t| t.starts_with("\"bench 20") && t.ends_with(" #0\"")), "{titles:?}");

    // A second run on the same data shows the same sample poll, not a second one.
    drop(demo);
    let restarted = std::time::SystemTime::now();
    let demo = Demo::start_on(PORT_BASE, data.path(), &["--tls"]);
    // The demo notes its sample poll's id once it has created or found it.
    let noted = data.path().join("sample-poll");
    demo.wait_for("the re-run's sample poll", Duration::from_secs(90), || {
        let modified = std::fs::metadata(&noted).and_then(|m| m.modified()).ok()?;
        (modified >= restarted).then_some(())
    });
    let samples = demo.wait_for("the demo to be back", Duration::from_secs(30), || {
        let (code, listed, _) = demo.tally(&["poll", "list"], &with_ca);
        let polls = listed["polls"].as_array().filter(|_| code == 0)?.clone();
        let samples: Vec<String> = polls
            .iter()
            .filter(|p| p["title"] == "Best systems language?")
            .map(|p| p["poll_id"].as_str().unwrap_or_default().to_string())
            .collect();
        let (_, results, _) = demo.tally(&["results", &poll], &with_ca);
        (results["total_votes"] == 4).then_some(samples)
    });
    assert_eq!(samples, std::slice::from_ref(&poll), "the re-run made another sample poll");
}
