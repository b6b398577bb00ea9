//! TLS against real processes: https on the API, mutual TLS between nodes in which a
//! peer's certificate names its node (issue 9, finding 2), and `--client-cert-auth`.

mod common;

use std::time::Duration;

use common::{tls_client, Cluster};
use reqwest::StatusCode;
use serde_json::Value;

fn metric(text: &str, name: &str) -> f64 {
    text.lines().find_map(|line| line.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0)
}

/// Votes through every node (so followers forward to the leader over the peers' TLS),
/// then every node counts them; plain HTTP and clients that do not trust the CA get no
/// answer from the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_cluster_serves_https_and_nothing_else() {
    let (cluster, _ca) = Cluster::start_tls(3, Vec::new(), |_| None).await;
    let (poll, options) = cluster.create_poll(1, &["a", "b"]).await;
    for i in 0..9 {
        let vote = cluster.vote(i % 3, &poll, &format!("voter-{i}"), &options[i % 2], &format!("k{i}")).await;
        assert!(
            matches!(vote, Some((200, _))),
            "vote {i} through node {}: {vote:?}\n{}",
            i % 3 + 1,
            cluster.log_tail()
        );
    }
    cluster.converged(Duration::from_secs(30)).await;
    for node in 0..3 {
        let results = cluster.results(node, &poll).await.expect("results");
        let counts: Vec<u64> =
            results["options"].as_array().unwrap().iter().map(|o| o["votes"].as_u64().unwrap()).collect();
        assert_eq!(counts, [5, 4], "node {}: {results}", node + 1);
    }

    let plain = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    let over_http = plain.get(format!("http://127.0.0.1:{}/health", cluster.ports[0])).send().await;
    assert!(over_http.is_err(), "plain HTTP got an answer: {over_http:?}");
    let other_ca = tally_node::tls::dev::Ca::new("somebody else").expect("CA");
    let untrusting = tls_client(&other_ca.cert_pem(), None);
    assert!(
        untrusting.get(format!("{}/health", cluster.url(0))).send().await.is_err(),
        "a client trusted a stranger's certificate"
    );

    // The server learns of a refused handshake a moment after the client gave up.
    let counted = common::eventually(Duration::from_secs(10), || async {
        let metrics = cluster.http.get(format!("{}/metrics", cluster.url(0))).send().await.ok()?;
        let text = metrics.text().await.ok()?;
        (metric(&text, "tally_tls_handshakes_failed_total") >= 2.0).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the two refused handshakes were not counted");
}

/// The cluster secret alone no longer makes a peer: `/raft/*` needs a certificate from the
/// peer CA, and a Raft message is taken only from the node that certificate names. A
/// holder of node 2's certificate cannot speak as node 9, and one signed by another CA
/// does not get through the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_messages_are_taken_only_from_the_node_the_certificate_names() {
    use tally_raft::openraft::raft::{AppendEntriesRequest, VoteRequest};
    use tally_raft::openraft::Vote;
    let (cluster, ca) = Cluster::start_tls(3, Vec::new(), |_| None).await;
    let (poll, options) = cluster.create_poll(0, &["a", "b"]).await;
    let term = cluster.status(0).await.expect("status")["term"].as_u64().expect("term");
    let as_node = |id| {
        let append: tally_raft::typ::AppendEntriesRequest = AppendEntriesRequest {
            vote: Vote::new_committed(term + 1, id),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        };
        let campaign: tally_raft::typ::ElectionVoteRequest =
            VoteRequest { vote: Vote::new(term + 1, id), last_log_id: None };
        [
            ("/raft/append", tally_raft::codec::encode(&append).expect("frame")),
            ("/raft/vote", tally_raft::codec::encode(&campaign).expect("frame")),
        ]
    };
    let node_two = ca.issue_node(2, &[], &[]).expect("certificate");
    let holder_of_node_two = tls_client(&ca.cert_pem(), Some(&node_two));
    let without_certificate = &cluster.http;
    let stranger_ca = tally_node::tls::dev::Ca::new("a stranger's CA").expect("CA");
    let forged = tls_client(&ca.cert_pem(), Some(&stranger_ca.issue_node(9, &[], &[]).expect("certificate")));
    for round in 0..5 {
        for node in 0..3 {
            for (path, frame) in as_node(9) {
                let url = format!("{}{path}", cluster.url(node));
                let secret = ("x-tally-cluster-secret", cluster.secret());
                let answer = holder_of_node_two.post(&url).header(secret.0, secret.1).body(frame.clone()).send().await;
                let (status, body) = match answer {
                    Ok(response) => (response.status(), response.text().await.unwrap_or_default()),
                    Err(e) => panic!("{path} on node {}: {e}", node + 1),
                };
                assert_eq!(status, StatusCode::FORBIDDEN, "{path} as node 9 with node 2's certificate: {body}");
                assert!(body.contains("does not name node 9"), "{body}");
                let status = without_certificate.post(&url).header(secret.0, secret.1).body(frame.clone()).send().await;
                assert_eq!(status.expect("an answer").status(), StatusCode::FORBIDDEN, "{path} without a certificate");
                let refused = forged.post(&url).header(secret.0, secret.1).body(frame).send().await;
                assert!(refused.is_err(), "a certificate from another CA got through: {refused:?}");
            }
        }
        let vote = cluster.vote(round % 3, &poll, &format!("voter-{round}"), &options[0], &format!("k{round}")).await;
        assert!(matches!(vote, Some((200, _))), "round {round}: {vote:?}\n{}", cluster.log_tail());
    }
    for node in 0..3 {
        let status = cluster.status(node).await.expect("status");
        assert_ne!(status["leader_id"], 9, "node {} follows the impostor: {status}", node + 1);
        assert_eq!(status["term"].as_u64(), Some(term), "node {}: the impostor moved the term: {status}", node + 1);
    }
}

/// With `--client-cert-auth`, a connection without a certificate from the clients' CA (or
/// the peers') is refused in the handshake; one with it is served, and the nodes still
/// talk to each other with their own certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_cert_auth_refuses_clients_without_a_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clients_ca = tally_node::tls::dev::Ca::new("clients' CA").expect("CA");
    let clients_ca_file = dir.path().join("clients-ca.pem");
    std::fs::write(&clients_ca_file, clients_ca.cert_pem()).expect("write");
    let client_cert = clients_ca.issue(&["front-end".to_string()], &[]).expect("client certificate");
    let flags =
        vec!["--client-cert-auth".to_string(), "--trusted-ca-file".to_string(), clients_ca_file.display().to_string()];
    let (cluster, ca) = Cluster::start_tls(3, flags, |_| Some(client_cert)).await;
    let (poll, options) = cluster.create_poll(2, &["a", "b"]).await;
    let vote = cluster.vote(1, &poll, "alice", &options[0], "k1").await;
    assert!(matches!(vote, Some((200, _))), "{vote:?}\n{}", cluster.log_tail());

    let anonymous = tls_client(&ca.cert_pem(), None);
    let refused = anonymous.get(format!("{}/health", cluster.url(0))).send().await;
    assert!(refused.is_err(), "served a client without a certificate: {refused:?}");
    let other = tally_node::tls::dev::Ca::new("nobody's CA").expect("CA");
    let untrusted = tls_client(&ca.cert_pem(), Some(&other.issue(&["x".to_string()], &[]).expect("cert")));
    let refused = untrusted.get(format!("{}/health", cluster.url(0))).send().await;
    assert!(refused.is_err(), "served a certificate from an unknown CA: {refused:?}");

    // A client certificate is not a peer's: the clients' CA cannot mint node identities.
    let minted = clients_ca.issue_node(9, &[], &[]).expect("certificate");
    let impostor = tls_client(&ca.cert_pem(), Some(&minted));
    let response = impostor
        .post(format!("{}/raft/read-index", cluster.url(0)))
        .header("x-tally-cluster-secret", cluster.secret())
        .send()
        .await
        .expect("an answer");
    let status = response.status();
    let body: Value = serde_json::from_str(&response.text().await.unwrap_or_default()).unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}
