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
        // `v` and 32 hex digits: the entry's index (public in the receipt too), then 80
        // bits of digest that say nothing of where the next vote is.
        assert!(id.len() == 33 && id.starts_with('v') && id[1..].bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        // The same entry with another digest is nobody's vote.
        let last = if id.ends_with('0') { '1' } else { '0' };
        let guess = format!("{}{last}", &id[..32]);
        let (status, _) =
            send(cluster.http.get(format!("{}/v1/polls/{poll_id}/receipts/{guess}", cluster.url(1)))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{guess}");
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

/// Reads from `stream` until the server closes it (or `bound` passes); whether it closed.
async fn closed_within(stream: &mut tokio::net::TcpStream, bound: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buffer = [0u8; 4096];
    let closed = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(bound, closed).await.is_ok()
}

async fn connect(cluster: &Cluster, node: usize) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(("127.0.0.1", cluster.ports[node])).await.expect("connect")
}

/// Slow, stalled and idle clients used to hold their connections for as long as they
/// liked (partial headers, a byte every half second, idle keep-alive, a body announced
/// and never sent), and enough idle sockets made the node unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_stalled_and_idle_connections_are_closed_and_connections_are_capped() {
    use tokio::io::AsyncWriteExt;
    let args = ["--http-header-timeout-ms", "1000", "--http-body-timeout-ms", "1000", "--http-connections-max", "48"];
    let cluster = Cluster::start_with(3, args.iter().map(|s| s.to_string()).collect()).await;
    // Well past the 1 s timeouts, well short of forever.
    let bound = Duration::from_secs(8);

    let mut partial = connect(&cluster, 0).await;
    partial.write_all(b"GET /health HTTP/1.1\r\nHost: tally\r\n").await.unwrap();
    assert!(closed_within(&mut partial, bound).await, "partial headers kept their connection");

    let mut trickle = connect(&cluster, 0).await;
    let trickling = async {
        for byte in
            b"GET /health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle().take(60)
        {
            if trickle.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        false
    };
    assert!(tokio::time::timeout(bound * 2, trickling).await.unwrap_or(false), "headers at a byte per 300 ms held on");

    let mut idle = connect(&cluster, 1).await;
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: tally\r\n\r\n").await.unwrap();
    assert!(!closed_within(&mut idle, Duration::from_millis(300)).await, "the request itself was refused");
    assert!(closed_within(&mut idle, bound).await, "an idle keep-alive connection stayed open");

    let mut announced = connect(&cluster, 2).await;
    let lie = b"POST /v1/polls HTTP/1.1\r\nHost: tally\r\nContent-Type: application/json\r\nContent-Length: 100000000000\r\n\r\n{}";
    announced.write_all(lie).await.unwrap();
    assert!(closed_within(&mut announced, bound).await, "a body announced and never sent held its connection");
    let mut stalled = connect(&cluster, 2).await;
    let short = b"GET /health HTTP/1.1\r\nHost: tally\r\nContent-Length: 1000\r\n\r\n{}";
    stalled.write_all(short).await.unwrap();
    assert!(closed_within(&mut stalled, bound).await, "a stalled body held its connection");

    // The cap: idle sockets fill node 1's places, the one past the cap is closed at once,
    // and once the idle ones time out the node answers again.
    let mut idle_sockets = Vec::new();
    for _ in 0..60 {
        idle_sockets.push(connect(&cluster, 0).await);
    }
    let mut refused = 0;
    for socket in idle_sockets.iter_mut().skip(48) {
        refused += usize::from(closed_within(socket, Duration::from_millis(500)).await);
    }
    assert!(refused > 0, "no connection past --http-connections-max was closed");
    let health = format!("{}/health", cluster.url(0));
    let answered = common::eventually(Duration::from_secs(15), || async {
        cluster.http.get(&health).send().await.ok().filter(|r| r.status() == 200).map(|_| ())
    });
    assert!(answered.await.is_some(), "the node stayed unreachable after the idle sockets timed out");
    let metrics = cluster.http.get(format!("{}/metrics", cluster.url(0))).send().await.unwrap().text().await.unwrap();
    let line = metrics.lines().find(|l| l.starts_with("tally_http_connections_refused_total ")).expect("the counter");
    assert_ne!(line, "tally_http_connections_refused_total 0", "{line}");
}

/// A leader asked to stop while clients held half-sent requests stopped listening but kept
/// leading until they gave up: votes through the followers got 503 for 25 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_leader_steps_aside_at_once_and_exits_within_its_drain() {
    use tokio::io::AsyncWriteExt;
    let args = ["--shutdown-drain-ms", "1000"];
    let mut cluster = Cluster::start_with(3, args.iter().map(|s| s.to_string()).collect()).await;
    let leader = cluster.leader().await;
    let (poll, options) = cluster.create_poll(leader, &["a", "b"]).await;
    // Clients that never finish their requests (a byte a second, for a minute).
    let mut holders = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&cluster, leader).await;
        holders.push(tokio::spawn(async move {
            for byte in b"POST /v1/polls HTTP/1.1\r\nContent-Length: 10\r\n\r\n{".iter().cycle().take(60) {
                if stream.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let took = cluster.stop_within(leader, Duration::from_secs(20));
    assert!(took.is_some_and(|t| t < Duration::from_secs(10)), "the leader took {took:?} to stop");
    let follower = (leader + 1) % 3;
    let recorded = common::eventually(Duration::from_secs(10), || async {
        match cluster.vote(follower, &poll, "after-the-stop", &options[0], "k-after").await {
            Some((200, _)) => Some(()),
            _ => None,
        }
    });
    assert!(recorded.await.is_some(), "no vote recorded through a follower after the leader stopped");
    for holder in holders {
        holder.abort();
    }
}

/// The smaller holes: each once worked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smaller_holes_are_closed() {
    let cluster = Cluster::start(3).await;
    let url = |node: usize, path: &str| format!("{}{path}", cluster.url(node));
    let (poll, options) = cluster.create_poll(0, &["a", "b"]).await;
    let (other, _) = cluster.create_poll(0, &["c", "d"]).await;

    // A batch vote naming another poll is refused, not counted in the URL's poll.
    let batch = json!({"votes": [
        {"poll_id": other, "voter_id": "moved", "option_id": options[0]},
        {"poll_id": poll, "voter_id": "stays", "option_id": options[0]},
    ]});
    let (status, body) = send(cluster.http.post(url(1, &format!("/v1/polls/{poll}/votes:batch"))).json(&batch)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(code(&body["results"][0]), "INVALID_REQUEST", "{body}");
    assert_eq!(body["results"][1]["status"], "recorded", "{body}");

    // An Idempotency-Key reused with another body is refused and moves nothing.
    let vote = |option: &str| {
        cluster
            .http
            .post(url(2, &format!("/v1/polls/{poll}/votes")))
            .header("Idempotency-Key", "key-once")
            .json(&json!({"voter_id": "keyholder", "option_id": option}))
    };
    assert_eq!(send(vote(&options[0])).await.0, StatusCode::OK);
    let (status, body) = send(vote(&options[1])).await;
    assert_eq!((status, code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED"), "{body}");
    let (status, body) = send(vote(&options[0])).await;
    assert_eq!((status, body["replayed"].as_bool()), (StatusCode::OK, Some(true)), "{body}");
    let results = cluster.results(2, &poll).await.expect("results");
    assert_eq!(results["total_votes"], 2, "{results}");

    // Control and bidirectional-override characters are refused in stored text.
    for bad in [
        json!({"title": "nul\u{0}", "options": ["x", "y"]}),
        json!({"title": "ok", "options": ["\u{1b}[2J", "y"]}),
        json!({"title": "\u{202E}reversed", "options": ["x", "y"]}),
    ] {
        let (status, body) = send(cluster.http.post(url(0, "/v1/polls")).json(&bad)).await;
        assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"), "{bad}: {body}");
    }
    let sneaky = json!({"voter_id": "bob\u{200F}", "option_id": options[0]});
    let (status, body) = send(cluster.http.post(url(0, &format!("/v1/polls/{poll}/votes"))).json(&sneaky)).await;
    assert_eq!((status, code(&body)), (StatusCode::BAD_REQUEST, "INVALID_REQUEST"), "{body}");

    // A body over the limit gets API.md's JSON shape, here too. (Twice the 64 KiB limit:
    // a body much larger is still being sent when the node answers and closes, and the
    // client then sees a reset rather than the answer.)
    let huge = vec![b' '; 128 << 10];
    let (status, body) = send(cluster.http.post(url(0, "/v1/cluster/init")).body(huge)).await;
    assert_eq!((status, code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"), "{body}");

    // The page may not be framed, and loads only its own code.
    let page = cluster.http.get(url(0, "/")).send().await.expect("the page");
    let policy = page.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(policy.contains("frame-ancestors 'none'") && policy.contains("script-src 'self'"), "{policy:?}");
}

/// With `--auth jwt`, requests refused for a bad token escaped the per-address limit, so
/// guessing tokens was the one thing it never slowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_tokens_count_against_the_address_limit() {
    let args = [
        "--auth",
        "jwt",
        "--jwt-secret",
        "0123456789abcdef0123456789abcdef",
        "--rate-limit-addr-per-sec",
        "1",
        "--rate-limit-addr-burst",
        "5",
    ];
    let cluster = Cluster::start_with(1, args.iter().map(|s| s.to_string()).collect()).await;
    let mut statuses = Vec::new();
    // 30 at once: at 1 a second with a burst of 5, most are over, however slow the machine.
    for n in 0..30 {
        let request = cluster.http.get(format!("{}/v1/polls", cluster.url(0))).bearer_auth(format!("guess.{n}.token"));
        statuses.push(send(request).await.0);
    }
    let limited = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert!(limited > 0, "30 bad tokens from one address, none limited: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::TOO_MANY_REQUESTS));
}

/// Eight threads once guessed 85 passwords a second, with no limit per account.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_guessing_is_limited_per_account() {
    let args =
        ["--auth", "jwt", "--jwt-secret", "0123456789abcdef0123456789abcdef", "--login-attempts-per-minute", "5"];
    let cluster = Cluster::start_with(1, args.iter().map(|s| s.to_string()).collect()).await;
    let users = format!("{}/v1/users", cluster.url(0));
    let login = format!("{}/v1/auth/token", cluster.url(0));
    let alice = json!({"username": "alice", "password": "alice-password"});
    assert_eq!(send(cluster.http.post(&users).json(&alice)).await.0, StatusCode::CREATED);
    let mut statuses = Vec::new();
    for n in 0..12 {
        let guess = json!({"username": "alice", "password": format!("guess-{n}-password")});
        statuses.push(send(cluster.http.post(&login).json(&guess)).await.0);
    }
    let limited = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert!(limited >= 6, "12 guesses at 5 a minute, {limited} limited: {statuses:?}");
    // Her right password waits too (the limit is the account's), but another account's
    // log-in is not slowed by it, and an unknown name is a plain 401.
    let (status, _) = send(cluster.http.post(&login).json(&alice)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let bob = json!({"username": "bob", "password": "bob-password"});
    assert_eq!(send(cluster.http.post(&users).json(&bob)).await.0, StatusCode::CREATED);
    assert_eq!(send(cluster.http.post(&login).json(&bob)).await.0, StatusCode::OK);
    let nobody = json!({"username": "nobody", "password": "whatever-password"});
    assert_eq!(send(cluster.http.post(&login).json(&nobody)).await.0, StatusCode::UNAUTHORIZED);
}

/// Anyone holding the cluster secret could send `/raft/append` as node 9 (not a member)
/// with the next term and no entries: every node took it, and votes got 503 for as long
/// as the sender kept it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_member_cannot_speak_raft_even_with_the_secret() {
    use tally_raft::openraft::raft::{AppendEntriesRequest, VoteRequest};
    use tally_raft::openraft::Vote;
    let cluster = Cluster::start(3).await;
    let (poll, options) = cluster.create_poll(0, &["a", "b"]).await;
    let term = cluster.status(0).await.expect("status")["term"].as_u64().expect("term");
    let append: tally_raft::typ::AppendEntriesRequest = AppendEntriesRequest {
        vote: Vote::new_committed(term + 1, 9),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    let campaign: tally_raft::typ::ElectionVoteRequest =
        VoteRequest { vote: Vote::new(term + 1, 9), last_log_id: None };
    let frames = [
        ("/raft/append", tally_raft::codec::encode(&append).expect("frame")),
        ("/raft/vote", tally_raft::codec::encode(&campaign).expect("frame")),
    ];
    // The stranger keeps it up while voters vote.
    for round in 0..10 {
        for node in 0..3 {
            for (path, frame) in &frames {
                let request = cluster
                    .http
                    .post(format!("{}{path}", cluster.url(node)))
                    .header("x-tally-cluster-secret", cluster.secret())
                    .body(frame.clone());
                let status = request.send().await.expect("an answer").status();
                assert_eq!(status, StatusCode::FORBIDDEN, "{path} as node 9 on node {node}");
            }
        }
        let vote = cluster.vote(round % 3, &poll, &format!("voter-{round}"), &options[0], &format!("k{round}")).await;
        assert!(matches!(vote, Some((200, _))), "round {round}: {vote:?}");
    }
    for node in 0..3 {
        let status = cluster.status(node).await.expect("status");
        assert_ne!(status["leader_id"], 9, "node {node} follows the stranger: {status}");
    }
}

/// A forwarded vote entry that the state machine would stop on (here a vote without an
/// idempotency key: apply asserts every vote has one) is refused at the door, never
/// proposed, and the cluster goes on taking votes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_forwarded_entry_is_refused_not_proposed() {
    use tally_raft::model::{Command, PollId, VoteIntent, VoterId};
    let cluster = Cluster::start(3).await;
    let (poll, options) = cluster.create_poll(0, &["a", "b"]).await;
    let leader = cluster.leader().await;
    let keyless = VoteIntent {
        poll_id: PollId(poll.clone()),
        voter_id: VoterId("mallory".into()),
        option_id: options[0].clone(),
        idempotency_key: String::new(),
        attributes: Default::default(),
    };
    let forward = tally_raft::rpc::ForwardRequest { command: std::sync::Arc::new(Command::CastVotes(vec![keyless])) };
    let response = cluster
        .http
        .post(format!("{}/raft/forward", cluster.url(leader)))
        .header("x-tally-cluster-secret", cluster.secret())
        .body(tally_raft::codec::encode(&forward).expect("frame"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.text().await.unwrap().contains("idempotency key"));
    for node in 0..3 {
        let vote = cluster.vote(node, &poll, &format!("voter-{node}"), &options[1], &format!("k{node}")).await;
        assert!(matches!(vote, Some((200, _))), "node {node}: {vote:?}");
    }
    let results = cluster.results(leader, &poll).await.expect("results");
    assert_eq!(results["total_votes"], 3, "{results}");
}
