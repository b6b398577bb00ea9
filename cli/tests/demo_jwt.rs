//! `tally demo --auth jwt` as a new user meets it: a real 3-node cluster that checks
//! tokens, an admin account made by the demo, accounts made with the CLI, votes as the
//! signed-in user, and a simulated election ingested as a trusted front end.

mod common;

use std::time::Duration;

use common::Demo;

const PORT_BASE: u16 = 17_421;

#[test]
fn a_jwt_demo_takes_accounts_tokens_and_front_end_ingestion() {
    let data = tempfile::tempdir().unwrap();
    let demo = Demo::start(PORT_BASE, data.path(), &["--auth", "jwt"]);
    let password_file = data.path().join("admin-password");

    // The demo writes the admin's password, registers the account and logs in with it.
    let admin_password = demo.wait_for("the admin password file", Duration::from_secs(90), || {
        std::fs::read_to_string(&password_file).ok().map(|text| text.trim().to_string()).filter(|p| !p.is_empty())
    });
    let login = |user: &str, password: &str| demo.tally(&["user", "login", user], &[("TALLY_PASSWORD", password)]);
    let admin = demo.wait_for("the admin account", Duration::from_secs(90), || {
        let (code, token, _) = login("admin", &admin_password);
        token["access_token"].as_str().filter(|_| code == 0).map(str::to_string)
    });
    let as_admin = |args: &[&str]| demo.tally(args, &[("TALLY_TOKEN", admin.as_str())]);
    let poll = demo.wait_for("the demo's seeded poll", Duration::from_secs(60), || {
        let (code, listed, _) = as_admin(&["poll", "list"]);
        let poll = listed["polls"][0]["poll_id"].as_str().filter(|_| code == 0)?.to_string();
        let (_, results, _) = as_admin(&["results", &poll]);
        (results["total_votes"] == 3).then_some(poll)
    });

    // Without a token, nothing but the open routes answers.
    let (code, _, stderr) = demo.tally(&["poll", "list"], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("UNAUTHENTICATED"), "{stderr}");
    let (code, _, stderr) = login("admin", "not the password");
    assert_eq!(code, 1, "{stderr}");

    // A voter makes an account, logs in and votes as themself, once.
    let (code, _, stderr) = demo.tally(&["user", "create", "dana"], &[("TALLY_PASSWORD", "dana's long secret")]);
    assert_eq!(code, 0, "{stderr}");
    let (code, token, stderr) = login("dana", "dana's long secret");
    assert_eq!(code, 0, "{stderr}");
    let dana = token["access_token"].as_str().expect("a token").to_string();
    // On a terminal, with no --password-stdin and no TALLY_PASSWORD, login asks.
    let login_dana = ["--endpoints", &demo.endpoints(), "user", "login", "dana"];
    let (code, typed) = common::on_a_terminal(&login_dana, &[], "Password for", "dana's long secret\n");
    assert_eq!(code, 0, "{typed}");
    assert!(typed.contains("Password for dana"), "{typed}");
    assert!(typed.lines().any(|line| line.trim().starts_with("ey")), "no token printed: {typed}");
    let as_dana = |args: &[&str]| demo.tally(args, &[("TALLY_TOKEN", dana.as_str())]);
    let (code, reply, stderr) = as_dana(&["vote", &poll, "--option", "Go"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(reply["status"], "recorded", "{reply}");
    let (code, _, stderr) = as_dana(&["vote", &poll, "--option", "Zig"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("ALREADY_VOTED"), "{stderr}");
    let (code, _, stderr) = as_dana(&["vote", &poll, "--option", "Zig", "--voter", "demo-alice"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("FORBIDDEN"), "{stderr}");
    // The audit is the owner's and admins'.
    let (code, _, stderr) = as_dana(&["audit", "verify", &poll]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("FORBIDDEN"), "{stderr}");

    // dana changes her password: her old token stops working, the printed one works.
    let change = [
        ("TALLY_TOKEN", dana.as_str()),
        ("TALLY_PASSWORD", "dana's long secret"),
        ("TALLY_NEW_PASSWORD", "dana's newer secret"),
    ];
    let (code, token, stderr) = demo.tally(&["user", "password", "dana"], &change);
    assert_eq!(code, 0, "{stderr}");
    let renewed = token["access_token"].as_str().expect("a new token").to_string();
    let (code, _, stderr) = as_dana(&["poll", "list"]);
    assert_eq!(code, 1, "the old token still works: {stderr}");
    assert!(stderr.contains("revoked"), "{stderr}");
    let (code, _, stderr) = demo.tally(&["poll", "list"], &[("TALLY_TOKEN", renewed.as_str())]);
    assert_eq!(code, 0, "{stderr}");
    // The admin resets it without knowing it.
    let reset = [("TALLY_TOKEN", admin.as_str()), ("TALLY_NEW_PASSWORD", "set by the admin")];
    let (code, _, stderr) = demo.tally(&["user", "password", "dana", "--reset"], &reset);
    assert_eq!(code, 0, "{stderr}");
    let (code, token, stderr) = login("dana", "set by the admin");
    assert_eq!(code, 0, "{stderr}");
    let dana = token["access_token"].as_str().expect("a token").to_string();
    let as_dana = |args: &[&str]| demo.tally(args, &[("TALLY_TOKEN", dana.as_str())]);

    // The admin simulates an election as a trusted front end (votes:batch) and audits.
    let (code, sim, stderr) =
        as_admin(&["simulate", "--voters", "200", "--duration", "2s", "--connections", "8", "--seed", "5"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(sim["errors"], 0, "{sim}");
    assert_eq!(sim["total_votes"], sim["recorded"], "{sim}");
    assert!(sim["already_voted"].as_u64().unwrap() + sim["replayed"].as_u64().unwrap() > 0, "{sim}");
    let (code, report, stderr) = as_admin(&["audit", "verify", &poll]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(report["total_votes"], 4, "{report}");
    // A front end's votes are not the signed-in voter's own: dana cannot batch.
    let (code, _, stderr) = as_dana(&["simulate", "--voters", "5", "--duration", "1s", "--seed", "6"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("FORBIDDEN"), "{stderr}");
}
