//! A hostile client against real `tally-node` processes: each attack that once worked is
//! replayed here and must now fail, with the cluster unharmed.

mod common;

use std::time::Duration;

use common::Cluster;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("an answer");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// `--auth none`, the default: being able to reach a node used to be enough to add a node
/// of one's own (which the leader then fed the log and the cluster secret), remove one,
/// or form a cluster on a blank node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strangers_cannot_change_membership() {
    let cluster = Cluster::start(3).await;
    // The stranger's "node": the leader connecting to it is the leak.
    let stranger = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let member = json!({"node_id": 9, "addr": stranger.local_addr().unwrap().to_string(), "voter": false});
    for node in 0..3 {
        for secret in [None, Some("a-guess")] {
            let with = |request: reqwest::RequestBuilder| match secret {
                Some(secret) => request.header("x-tally-cluster-secret", secret),
                None => request,
            };
            let url = |path: &str| format!("{}{path}", cluster.url(node));
            let attempts = [
                with(cluster.http.post(url("/v1/cluster/members")).json(&member)),
                with(cluster.http.delete(url("/v1/cluster/members/2"))),
                with(cluster.http.post(url("/v1/cluster/init")).json(&json!({}))),
            ];
            for attempt in attempts {
                let (status, body) = send(attempt).await;
                assert_eq!((status, code(&body)), (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"), "{body}");
            }
        }
    }
    // Nobody connected to the stranger's address. (A refused change must send nothing, so
    // this waits out a window in which the old code had always connected.)
    let connected = tokio::time::timeout(Duration::from_secs(3), stranger.accept()).await;
    assert!(connected.is_err(), "a node connected to the stranger's address");
    for node in 0..3 {
        let (_, status) = send(cluster.http.get(format!("{}/v1/cluster/status", cluster.url(node)))).await;
        let members = status["members"].as_array().expect("members");
        assert_eq!(members.len(), 3, "node {node}: {status}");
    }
    // The operator's secret gets through the check (removing a non-member then fails).
    let remove = cluster.http.delete(format!("{}/v1/cluster/members/7", cluster.url(1)));
    let (status, body) = send(remove.header("x-tally-cluster-secret", cluster.secret())).await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "MEMBERSHIP_CHANGE_FAILED"), "{body}");
}

/// Hidden results used to leak: `/metrics` carried the poll's counts, and anyone could read
/// another voter's choice from a receipt, walking the sequential vote ids `v{index}.{slot}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hidden_results_stay_hidden_and_vote_ids_cannot_be_walked() {
    let cluster = Cluster::start(3).await;
    let poll = json!({"title": "secret ballot", "options": ["yes", "no"],
                      "settings": {"show_results_during_voting": false}});
    let (status, created) = send(cluster.http.post(format!("{}/v1/polls", cluster.url(0))).json(&poll)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let poll_id = created["poll_id"].as_str().expect("poll id").to_string();
    let mut vote_ids = Vec::new();
    for (n, option) in ["o1", "o2", "o1"].iter().enumerate() {
        let vote = cluster
            .http
            .post(format!("{}/v1/polls/{poll_id}/votes", cluster.url(n)))
            .json(&json!({"voter_id": format!("voter-{n}"), "option_id": option}));
        let (status, body) = send(vote).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        vote_ids.push(body["vote_id"].as_str().expect("vote id").to_string());
    }
    for id in &vote_ids {
        // `v` and 20 hex digits: nothing in it says where the next vote is.
        assert!(id.len() == 21 && id.starts_with('v') && id[1..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        let (status, receipt) =
            send(cluster.http.get(format!("{}/v1/polls/{poll_id}/receipts/{id}", cluster.url(2)))).await;
        assert_eq!(status, StatusCode::OK, "{receipt}");
        assert_eq!(receipt["option_id"], Value::Null, "a receipt on a hidden poll told the choice: {receipt}");
        assert!(receipt["chain_hash"].is_string(), "{receipt}");
    }
    for guess in ["v1.0", "v5.0", "v6.0", "v7.1"] {
        let (status, _) =
            send(cluster.http.get(format!("{}/v1/polls/{poll_id}/receipts/{guess}", cluster.url(0)))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{guess}");
    }
    for node in 0..3 {
        let metrics = cluster.http.get(format!("{}/metrics", cluster.url(node))).send().await.expect("metrics");
        let text = metrics.text().await.expect("text");
        assert!(text.contains("tally_votes_recorded_total"), "node {node}: {text}");
        assert!(!text.contains(&poll_id), "node {node}'s /metrics shows the hidden poll");
    }
    // Closed, the results and receipts are public.
    let close = cluster.http.patch(format!("{}/v1/polls/{poll_id}", cluster.url(0))).json(&json!({"status": "closed"}));
    let (status, body) = send(close).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, receipt) =
        send(cluster.http.get(format!("{}/v1/polls/{poll_id}/receipts/{}", cluster.url(0), vote_ids[1]))).await;
    assert_eq!(receipt["option_id"], "o2", "{receipt}");
}
