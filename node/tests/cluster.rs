//! Three real `tally-node` processes on loopback: votes through every node, races,
//! SIGKILLs of the leader and of the whole cluster, and a minority that must refuse.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, Cluster};
use serde_json::Value;

/// Clusters are heavy for a 2-core machine: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CONVERGE: Duration = Duration::from_secs(60);

/// What a client learned about one voter's vote.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    Recorded(String),
    Unknown,
}

/// Votes once for `voter` with a fixed key, trying node after node on anything that is
/// not a definite answer, at most `attempts` times.
async fn vote_until_definite(
    cluster: &Cluster,
    start: usize,
    poll: &str,
    voter: &str,
    option: &str,
    attempts: usize,
) -> Fate {
    for attempt in 0..attempts {
        let node = (start + attempt) % cluster.ports.len();
        match cluster.vote(node, poll, voter, option, &format!("key-{voter}")).await {
            Some((200, body)) => return Fate::Recorded(body["vote_id"].as_str().expect("vote_id").to_string()),
            Some((409, body)) => panic!("{voter} got a conflict on its first and only key: {body}"),
            Some((status @ (400..=499), body)) => panic!("{voter}: unexpected {status}: {body}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Fate::Unknown
}

async fn totals(cluster: &Cluster, poll: &str) -> Vec<(u64, Vec<u64>)> {
    let mut all = Vec::new();
    for i in cluster.running() {
        let results = cluster.results(i, poll).await.expect("results");
        let counts = results["options"].as_array().unwrap().iter().map(|o| o["votes"].as_u64().unwrap()).collect();
        all.push((results["total_votes"].as_u64().unwrap(), counts));
    }
    all
}

/// Waits until every running node serves the same counts for `poll`, and returns them.
async fn agreed_totals(cluster: &Cluster, poll: &str) -> (u64, Vec<u64>) {
    cluster.converged(CONVERGE).await;
    let agreed = eventually(CONVERGE, || async {
        let all = totals(cluster, poll).await;
        all.iter().all(|t| *t == all[0]).then(|| all[0].clone())
    })
    .await;
    agreed.unwrap_or_else(|| panic!("nodes disagree on counts\n{}", cluster.log_tail()))
}

async fn my_vote(cluster: &Cluster, node: usize, poll: &str, voter: &str) -> Value {
    let url = format!("{}/v1/polls/{poll}/votes/me?voter_id={voter}", cluster.url(node));
    cluster.http.get(url).send().await.expect("votes/me").json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn votes_through_every_node_are_counted_on_every_node() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3).await;
    let (poll, options) = cluster.create_poll(0, &["Go", "Rust", "Zig"]).await;
    let mut expected = vec![0u64; 3];
    for n in 0..30 {
        let option = n % 3 == 0;
        let pick = usize::from(option);
        let (status, body) =
            cluster.vote(n % 3, &poll, &format!("voter-{n}"), &options[pick], &format!("k{n}")).await.expect("answer");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "recorded");
        expected[pick] += 1;
        // Read your write on the node you wrote to, without waiting.
        let results = cluster.results(n % 3, &poll).await.expect("results");
        assert!(results["options"][pick]["votes"].as_u64().unwrap() >= 1);
    }
    assert_eq!(agreed_totals(&cluster, &poll).await, (30, expected));
    // The followers' votes joined the leader's own entries, through its proposer: every
    // node's proposer counts its own clients' votes (30 in all), and the leader's counts
    // the followers' again. Summed, so that a change of leader mid-test cannot fail it.
    let mut proposed = 0.0;
    for i in 0..3 {
        let metrics =
            cluster.http.get(format!("{}/metrics", cluster.url(i))).send().await.unwrap().text().await.unwrap();
        let line = metrics.lines().find_map(|l| l.strip_prefix("tally_proposer_votes_total ")).expect("the metric");
        proposed += line.parse::<f64>().unwrap();
    }
    assert!(proposed > 30.0, "the proposers took {proposed} votes: no forwarded entry joined the leader's");
    // A stray client cannot speak Raft: peer RPC needs the cluster secret.
    for secret in [None, Some("wrong")] {
        let mut request = cluster.http.post(format!("{}/raft/vote", cluster.url(0))).body(vec![0u8; 16]);
        if let Some(secret) = secret {
            request = request.header("x-tally-cluster-secret", secret);
        }
        assert_eq!(request.send().await.unwrap().status(), 401);
    }
    // Linearizable reads on every node see all 30 at once.
    for i in 0..3 {
        let url = format!("{}/v1/polls/{poll}/results?consistency=linearizable", cluster.url(i));
        let results: Value = cluster.http.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(results["total_votes"], 30, "{results}");
        assert_eq!(results["served_by"], i as u64 + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_log_format_json_every_line_a_node_logs_is_a_json_object() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start_with(3, vec!["--log-format".into(), "json".into()]).await;
    cluster.wait_ready(Duration::from_secs(30)).await;
    for i in 0..3 {
        let log = cluster.log(i);
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "node {} logged nothing", i + 1);
        for line in lines {
            let object: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(object["level"].is_string() && object["fields"].is_object(), "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_racing_requests_of_one_voter_record_exactly_one() {
    let _serial = SERIAL.lock().await;
    let cluster = Arc::new(Cluster::start(3).await);
    let (poll, options) = cluster.create_poll(1, &["yes", "no"]).await;
    let racers: Vec<_> = (0..30)
        .map(|n| {
            let (cluster, poll, option) = (cluster.clone(), poll.clone(), options[n % 2].clone());
            tokio::spawn(async move { cluster.vote(n % 3, &poll, "racer", &option, &format!("race-{n}")).await })
        })
        .collect();
    let mut recorded = Vec::new();
    let mut conflicts = Vec::new();
    for (n, racer) in racers.into_iter().enumerate() {
        let (status, body) = racer.await.unwrap().expect("an answer");
        match status {
            200 => recorded.push((n, body)),
            409 => conflicts.push(body),
            other => panic!("racer {n}: unexpected {other}: {body}"),
        }
    }
    assert_eq!(recorded.len(), 1, "exactly one recorded: {recorded:?}");
    let (winner, receipt) = &recorded[0];
    for conflict in &conflicts {
        assert_eq!(conflict["error"]["code"], "ALREADY_VOTED");
        assert_eq!(conflict["error"]["vote_id"], receipt["vote_id"], "409s name the vote that was recorded");
    }
    // The winner's retry is a replay, on any node.
    for node in 0..3 {
        // A retry repeats its request (another option with the same key would be a 422).
        let option = &options[winner % 2];
        let (status, again) = cluster.vote(node, &poll, "racer", option, &format!("race-{winner}")).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(again["vote_id"], receipt["vote_id"]);
    }
    assert_eq!(agreed_totals(&cluster, &poll).await.0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_under_load_loses_and_doubles_nothing() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3).await;
    let (poll, options) = cluster.create_poll(0, &["a", "b", "c"]).await;
    let leader = cluster.leader().await;
    let shared = Arc::new(cluster);
    const WORKERS: usize = 6;
    const VOTES_PER_WORKER: usize = 60;
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (cluster, poll, options, acked) = (shared.clone(), poll.clone(), options.clone(), acked.clone());
            tokio::spawn(async move {
                let mut fates = BTreeMap::new();
                for n in 0..VOTES_PER_WORKER {
                    let voter = format!("w{w}-{n}");
                    let fate = vote_until_definite(&cluster, w + n, &poll, &voter, &options[n % 3], 20).await;
                    if matches!(fate, Fate::Recorded(_)) {
                        acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    fates.insert(voter, fate);
                }
                fates
            })
        })
        .collect();
    // Kill the leader once the load is well under way.
    let under_way = eventually(Duration::from_secs(60), || async {
        (acked.load(std::sync::atomic::Ordering::SeqCst) >= 40).then_some(())
    })
    .await;
    assert!(under_way.is_some(), "load never got going\n{}", shared.log_tail());
    let mut fates = BTreeMap::new();
    shared.kill_shared(leader);
    for worker in workers {
        fates.extend(worker.await.unwrap());
    }
    let mut cluster = Arc::try_unwrap(shared).unwrap_or_else(|_| panic!("workers are done"));
    cluster.spawn(leader);
    cluster.wait_ready(Duration::from_secs(60)).await;
    // Learn the fate of every unknown outcome with the same key: after this every voter
    // is recorded exactly once, so the counts must equal the number of voters.
    for (voter, fate) in fates.iter_mut() {
        if *fate == Fate::Unknown {
            *fate = vote_until_definite(&cluster, 0, &poll, voter, &options[0], 50).await;
            assert!(matches!(fate, Fate::Recorded(_)), "{voter} still unknown on a healed cluster");
        }
    }
    let (total, _) = agreed_totals(&cluster, &poll).await;
    assert_eq!(total, (WORKERS * VOTES_PER_WORKER) as u64, "every voter counted exactly once");
    for (voter, fate) in &fates {
        let Fate::Recorded(vote_id) = fate else { unreachable!() };
        for node in 0..3 {
            let mine = my_vote(&cluster, node, &poll, voter).await;
            assert_eq!(mine["vote_id"].as_str(), Some(vote_id.as_str()), "{voter} on node {node}: {mine}");
        }
    }
    let statuses = cluster.converged(CONVERGE).await;
    assert!(
        statuses.iter().any(|s| !s["snapshot_index"].is_null()),
        "the load should have made snapshots, so that purge and install ran: {statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_sigkilled_and_restarted_keeps_every_acknowledged_vote() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3).await;
    let (poll, options) = cluster.create_poll(2, &["x", "y"]).await;
    let mut receipts = BTreeMap::new();
    for n in 0..40 {
        let voter = format!("v{n}");
        match vote_until_definite(&cluster, n, &poll, &voter, &options[n % 2], 10).await {
            Fate::Recorded(vote_id) => receipts.insert(voter, (vote_id, options[n % 2].clone())),
            Fate::Unknown => panic!("healthy cluster did not answer for {voter}"),
        };
    }
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    cluster.wait_ready(Duration::from_secs(60)).await;
    assert_eq!(agreed_totals(&cluster, &poll).await, (40, vec![20, 20]));
    for (n, (voter, (vote_id, option))) in receipts.iter().enumerate() {
        // Dedup survived the crash: a new request is refused naming the old vote...
        let (status, body) = cluster.vote(n % 3, &poll, voter, &options[0], "a-new-key").await.unwrap();
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["vote_id"].as_str(), Some(vote_id.as_str()));
        // ...and the original key still replays the original receipt.
        let (status, body) = cluster.vote(n % 3, &poll, voter, option, &format!("key-{voter}")).await.unwrap();
        assert_eq!((status, body["vote_id"].as_str()), (200, Some(vote_id.as_str())));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_without_quorum_refuses_writes() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3).await;
    let (poll, options) = cluster.create_poll(0, &["x", "y"]).await;
    let leader = cluster.leader().await;
    let survivor = (leader + 1) % 3;
    for i in 0..3 {
        if i != survivor {
            cluster.stop(i);
        }
    }
    let (status, body) = cluster.vote(survivor, &poll, "lonely", &options[0], "lonely-key").await.expect("an answer");
    assert!(status == 503 || status == 504, "a write without quorum must be refused, got {status}: {body}");
    let code = body["error"]["code"].as_str().unwrap_or_default().to_string();
    assert!(code == "UNAVAILABLE" || code == "TIMEOUT", "{body}");
    let results = cluster.results(survivor, &poll).await.expect("eventual reads still work");
    assert_eq!(results["total_votes"], 0);
    for i in 0..3 {
        if i != survivor {
            cluster.spawn(i);
        }
    }
    cluster.wait_ready(Duration::from_secs(60)).await;
    let (total, _) = agreed_totals(&cluster, &poll).await;
    if code == "UNAVAILABLE" {
        // 503 promises the vote was not recorded.
        assert_eq!(total, 0);
        assert_eq!(my_vote(&cluster, survivor, &poll, "lonely").await["has_voted"], false);
    }
}

/// Reads server-sent events from `response` until one's `total_votes` reaches `until`;
/// returns every total seen, in order.
async fn stream_totals(response: &mut reqwest::Response, until: u64) -> Vec<u64> {
    let mut buffer = String::new();
    let mut totals = Vec::new();
    while totals.last() != Some(&until) {
        let chunk = response.chunk().await.expect("stream stays open").expect("stream does not end");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if !event.lines().any(|line| line == "event: results") {
                continue; // a keep-alive comment
            }
            let data: String = event.lines().filter_map(|line| line.strip_prefix("data: ")).collect();
            let results: Value = serde_json::from_str(&data).expect("event data is JSON");
            totals.push(results["total_votes"].as_u64().expect("total_votes"));
        }
    }
    totals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_results_stream_on_one_node_follows_votes_cast_through_another() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3).await;
    let (poll, options) = cluster.create_poll(0, &["x", "y"]).await;
    let url = format!("{}/v1/polls/{poll}/results/stream", cluster.url(1));
    let mut response = cluster.http.get(&url).timeout(Duration::from_secs(60)).send().await.expect("stream opens");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // The current results come at once, before any vote.
    assert_eq!(stream_totals(&mut response, 0).await, vec![0]);
    for n in 0..12 {
        let (status, body) = cluster.vote(2, &poll, &format!("s{n}"), &options[n % 2], &format!("s{n}")).await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let totals = tokio::time::timeout(Duration::from_secs(30), stream_totals(&mut response, 12))
        .await
        .unwrap_or_else(|_| panic!("the stream never showed all 12 votes\n{}", cluster.log_tail()));
    println!("totals seen by the stream: {totals:?}");
    assert!(totals.windows(2).all(|w| w[0] <= w[1]), "counts went backwards: {totals:?}");
    // The node counts its open stream and every event it sent (what the dashboard shows).
    let metrics = cluster.http.get(format!("{}/metrics", cluster.url(1))).send().await.unwrap().text().await.unwrap();
    let metric = |name: &str| {
        metrics.lines().find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok()).unwrap_or(-1.0)
    };
    assert_eq!(metric("tally_results_streams "), 1.0, "{metrics}");
    assert!(metric("tally_results_stream_events_total ") >= totals.len() as f64, "{metrics}");
    // An unknown poll is a 404 in the contract's shape, not an empty stream.
    let missing = cluster.http.get(format!("{}/v1/polls/nope/results/stream", cluster.url(0))).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_results_stream_on_a_follower_survives_the_leader_being_killed() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3).await;
    let (poll, options) = cluster.create_poll(0, &["x", "y"]).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let url = format!("{}/v1/polls/{poll}/results/stream", cluster.url(follower));
    let mut response = cluster.http.get(&url).timeout(Duration::from_secs(120)).send().await.expect("stream opens");
    assert_eq!(stream_totals(&mut response, 0).await, vec![0]);
    for n in 0..3 {
        let fate = vote_until_definite(&cluster, follower, &poll, &format!("before{n}"), &options[n % 2], 50).await;
        assert!(matches!(fate, Fate::Recorded(_)), "before{n}: {fate:?}");
    }
    tokio::time::timeout(Duration::from_secs(30), stream_totals(&mut response, 3))
        .await
        .unwrap_or_else(|_| panic!("the stream never showed the first 3 votes\n{}", cluster.log_tail()));
    // The leader dies; the two left elect another. The stream, served from the follower's
    // own applied state, stays open and shows the votes the new leader commits.
    cluster.kill(leader);
    for n in 0..3 {
        let fate = vote_until_definite(&cluster, follower, &poll, &format!("after{n}"), &options[n % 2], 100).await;
        assert!(matches!(fate, Fate::Recorded(_)), "after{n}: {fate:?}\n{}", cluster.log_tail());
    }
    let totals = tokio::time::timeout(Duration::from_secs(60), stream_totals(&mut response, 6))
        .await
        .unwrap_or_else(|_| panic!("the stream never showed the votes after the leader died\n{}", cluster.log_tail()));
    assert!(totals.windows(2).all(|w| w[0] <= w[1]), "counts went backwards: {totals:?}");
}

async fn post_json(cluster: &Cluster, url: String, body: Value) -> Value {
    let response = cluster.http.post(url).json(&body).send().await.expect("an answer");
    response.json().await.expect("a JSON reply")
}

/// The audit stream read through one node holds every version of every vote cast through
/// the others, in chain order, and each voter's receipt checks out on a third node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_stream_and_receipts_agree_across_nodes() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3).await;
    let created = post_json(
        &cluster,
        format!("{}/v1/polls", cluster.url(0)),
        serde_json::json!({"title": "board", "options": ["yes", "no"],
            "settings": {"allow_vote_change": true, "breakdowns": ["region"]}}),
    )
    .await;
    let poll = created["poll_id"].as_str().expect("poll id").to_string();
    let mut receipts = Vec::new();
    for (n, (voter, option, region)) in
        [("a", "o1", "CA"), ("b", "o2", "NY"), ("a", "o2", "NY"), ("c", "o1", "CA")].into_iter().enumerate()
    {
        let body = serde_json::json!({"voter_id": voter, "option_id": option, "attributes": {"region": region}});
        let reply = post_json(&cluster, format!("{}/v1/polls/{poll}/votes", cluster.url(n % 3)), body).await;
        assert_eq!(reply["receipt"]["position"], n as u64, "{reply}");
        receipts.push(reply["receipt"].clone());
    }
    let response = cluster.http.get(format!("{}/v1/polls/{poll}/audit", cluster.url(1))).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let head = response.headers()["tally-chain-head"].to_str().unwrap().to_string();
    let lines: Vec<Value> =
        response.text().await.unwrap().lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 4);
    let mut hash = tally_raft::audit::genesis(&poll);
    for (line, receipt) in lines.iter().zip(&receipts) {
        assert_eq!(line["vote_id"], receipt["vote_id"]);
        assert_eq!(line["chain_hash"], receipt["chain_hash"]);
        let attributes: BTreeMap<String, String> = serde_json::from_value(line["attributes"].clone()).unwrap();
        let fields = tally_raft::audit::LinkFields {
            vote_id: line["vote_id"].as_str().unwrap(),
            voter_id: line["voter_id"].as_str().unwrap(),
            option_id: line["option_id"].as_str().unwrap(),
            attributes: &attributes,
            recorded_at_ms: line["recorded_at_ms"].as_i64().unwrap(),
            log_index: line["log_index"].as_u64().unwrap(),
            replaces: line["replaces"].as_str(),
        };
        hash = tally_raft::audit::next_link(&hash, line["position"].as_u64().unwrap(), &fields);
        assert_eq!(line["chain_hash"].as_str().unwrap(), tally_raft::audit::to_hex(&hash));
    }
    assert_eq!(head, tally_raft::audit::to_hex(&hash));
    // a's first vote was replaced by the third.
    assert_eq!(lines[0]["current"], false);
    assert_eq!(lines[2]["replaces"], lines[0]["vote_id"]);
    for receipt in &receipts {
        let url = format!("{}/v1/polls/{poll}/receipts/{}", cluster.url(2), receipt["vote_id"].as_str().unwrap());
        // Node 2 answers from its own applied state, which may trail node 1 by an entry.
        let check = eventually(Duration::from_secs(10), || async {
            let check: Value = cluster.http.get(&url).send().await.ok()?.json().await.ok()?;
            (check["chain_head"] == head.as_str()).then_some(check)
        })
        .await
        .expect("node 2 applies the whole chain");
        assert_eq!(check["chain_hash"], receipt["chain_hash"], "{check}");
        assert_eq!(check["chain_head"], head.as_str());
    }
    let missing = cluster.http.get(format!("{}/v1/polls/{poll}/receipts/v999.0", cluster.url(2))).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}

/// A poll closes at its end_time with no request arriving: a results stream opened before
/// the end receives the closed status by itself, and later votes are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poll_closes_at_its_end_time_and_streams_say_so() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3).await;
    let end = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let end = end.format(&time::format_description::well_known::Rfc3339).unwrap();
    let created = post_json(
        &cluster,
        format!("{}/v1/polls", cluster.url(0)),
        serde_json::json!({"title": "timed", "options": ["a", "b"], "end_time": end}),
    )
    .await;
    let poll = created["poll_id"].as_str().expect("poll id").to_string();
    let url = format!("{}/v1/polls/{poll}/results/stream", cluster.url(1));
    let mut stream = cluster.http.get(url).send().await.expect("stream opens");
    let mut buffer = String::new();
    let closed = tokio::time::timeout(CONVERGE, async {
        loop {
            let chunk = stream.chunk().await.expect("stream stays open").expect("stream does not end");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            if buffer.contains("\"status\":\"closed\"") {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "no closed event within {CONVERGE:?}: {buffer}\n{}", cluster.log_tail());
    let (status, body) = cluster.vote(2, &poll, "late", "o1", "late-1").await.expect("an answer");
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("POLL_CLOSED")), "{body}");
    for i in 0..3 {
        let poll: Value =
            cluster.http.get(format!("{}/v1/polls/{poll}", cluster.url(i))).send().await.unwrap().json().await.unwrap();
        assert_eq!(poll["status"], "closed");
    }
}

/// Sends one vote with `Prefer: respond-async` through `node`; returns the 202 body.
async fn vote_async(cluster: &Cluster, node: usize, poll: &str, voter: &str, option: &str) -> Value {
    let response = cluster
        .http
        .post(format!("{}/v1/polls/{poll}/votes", cluster.url(node)))
        .header("Prefer", "respond-async, wait=1")
        .json(&serde_json::json!({"voter_id": voter, "option_id": option}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["preference-applied"], "respond-async");
    response.json().await.unwrap()
}

/// Polls a request's status on `node` until it reaches `state`.
async fn request_reaches(cluster: &Cluster, node: usize, poll: &str, accepted: &Value, state: &str) -> Value {
    let request_id = accepted["request_id"].as_str().expect("a request id");
    let url = format!("{}/v1/polls/{poll}/votes/requests/{request_id}", cluster.url(node));
    let reached = common::eventually(CONVERGE, || async {
        let status: Value = cluster.http.get(&url).send().await.ok()?.json().await.ok()?;
        (status["state"] == state).then_some(status)
    })
    .await;
    reached.unwrap_or_else(|| panic!("request {request_id} never became {state}"))
}

/// `Prefer: respond-async`: 202 at once, the outcome at the request-status route of every
/// node (API.md: any node serves the whole API), even once the accepting node is gone, and
/// the same vote again by its idempotency key through any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_votes_are_accepted_then_completed() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3).await;
    let (poll, options) = cluster.create_poll(0, &["x", "y"]).await;
    let accepted = vote_async(&cluster, 1, &poll, "later", &options[1]).await;
    let completed = request_reaches(&cluster, 1, &poll, &accepted, "completed").await;
    let vote_id = completed["vote_id"].as_str().expect("a vote id");
    assert_eq!(completed["result"]["status"], "recorded", "{completed}");
    for node in [0, 2] {
        let elsewhere = request_reaches(&cluster, node, &poll, &accepted, "completed").await;
        assert_eq!(elsewhere["result"]["vote_id"], completed["result"]["vote_id"], "node {node}: {elsewhere}");
        assert_eq!(elsewhere["result"]["receipt"], completed["result"]["receipt"], "node {node}: {elsewhere}");
    }
    let key = accepted["idempotency_key"].as_str().expect("a key");
    let (status, again) = cluster.vote(2, &poll, "later", &options[1], key).await.expect("an answer");
    assert_eq!((status, again["vote_id"].as_str()), (200, Some(vote_id)), "{again}");
    // A vote refused in the background is reported as failed, with the API's error, by the
    // accepting node and, asked on their behalf, by the others.
    let refused = vote_async(&cluster, 1, &poll, "later", &options[0]).await;
    for node in [1, 2, 0] {
        let failed = request_reaches(&cluster, node, &poll, &refused, "failed").await;
        assert_eq!(failed["error"]["code"], "ALREADY_VOTED", "node {node}: {failed}");
    }
    // An id that names no request, on a poll that exists, is a 404 everywhere; so is a
    // real request's id asked under another poll, even one where the voter used the key.
    let made_up = format!("{}/v1/polls/{poll}/votes/requests/r.2.x.cA.bm9ib2R5.a2V5", cluster.url(0));
    assert_eq!(cluster.http.get(made_up).send().await.unwrap().status(), 404);
    let (other, other_options) = cluster.create_poll(0, &["x", "y"]).await;
    let (status, _) = cluster.vote(0, &other, "later", &other_options[0], key).await.expect("an answer");
    assert_eq!(status, 200);
    let request_id = accepted["request_id"].as_str().unwrap();
    for node in 0..3 {
        let elsewhere = format!("{}/v1/polls/{other}/votes/requests/{request_id}", cluster.url(node));
        assert_eq!(cluster.http.get(elsewhere).send().await.unwrap().status(), 404, "node {node}");
    }
    // With the accepting node gone, the recorded vote is still told from the replicated
    // state; the refused one cannot be, and the answer says so instead of guessing.
    cluster.kill(1);
    let survivor = request_reaches(&cluster, 2, &poll, &accepted, "completed").await;
    assert_eq!(survivor["result"]["vote_id"], completed["result"]["vote_id"], "{survivor}");
    let request_id = refused["request_id"].as_str().unwrap();
    let url = format!("{}/v1/polls/{poll}/votes/requests/{request_id}", cluster.url(2));
    let response = cluster.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");
}

/// `applied_index` in results is the answering node's applied index at the read, not the
/// index of the poll's last change: a quiet poll on a busy node is fresh, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn results_report_the_nodes_applied_index_not_the_polls_last_change() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3).await;
    let (quiet, quiet_options) = cluster.create_poll(0, &["a", "b"]).await;
    let (status, _) = cluster.vote(0, &quiet, "q", &quiet_options[0], "q-1").await.expect("an answer");
    assert_eq!(status, 200);
    let (busy, busy_options) = cluster.create_poll(0, &["a", "b"]).await;
    let mut last = 0;
    for i in 0..20 {
        let (status, body) =
            cluster.vote(i % 3, &busy, &format!("v{i}"), &busy_options[0], &format!("k{i}")).await.unwrap();
        assert_eq!(status, 200, "{body}");
        last = last.max(body["log_index"].as_u64().unwrap());
    }
    for node in 0..3 {
        // Every node applies the busy poll's last vote, then answers for the quiet poll.
        let caught_up = eventually(CONVERGE, || async {
            let status = cluster.status(node).await?;
            (status["applied_index"].as_u64()? >= last).then_some(())
        })
        .await;
        assert!(caught_up.is_some(), "node {node} never applied {last}");
        for consistency in ["eventual", "linearizable"] {
            let url = format!("{}/v1/polls/{quiet}/results?consistency={consistency}", cluster.url(node));
            let body: Value = cluster.http.get(url).send().await.unwrap().json().await.unwrap();
            assert_eq!(body["total_votes"], 1, "{body}");
            let index = body["applied_index"].as_u64().expect("applied_index");
            assert!(index >= last, "node {node}, {consistency}: applied_index {index} < {last}, the node's: {body}");
        }
        // The stream's first event is a read too.
        let url = format!("{}/v1/polls/{quiet}/results/stream", cluster.url(node));
        let mut stream = cluster.http.get(url).send().await.unwrap();
        let mut text = String::new();
        let first = tokio::time::timeout(CONVERGE, async {
            loop {
                text.push_str(&String::from_utf8_lossy(&stream.chunk().await.unwrap().expect("an event")));
                if let Some(data) = text.lines().find_map(|l| l.strip_prefix("data:")) {
                    if text.contains("\n\n") {
                        return serde_json::from_str::<Value>(data.trim()).expect("JSON data");
                    }
                }
            }
        })
        .await
        .expect("a first event");
        let index = first["applied_index"].as_u64().expect("applied_index");
        assert!(index >= last, "node {node}, first stream event: applied_index {index} < {last}: {first}");
    }
}

/// Reads NDJSON lines from a streamed response until `done` holds for the lines so far.
async fn read_until(response: &mut reqwest::Response, lines: &mut Vec<Value>, done: impl Fn(&[Value]) -> bool) {
    let mut pending = String::new();
    let reached = tokio::time::timeout(CONVERGE, async {
        while !done(lines) {
            let chunk = response.chunk().await.expect("the stream stays open").expect("the stream does not end");
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find('\n') {
                let line: String = pending.drain(..=end).collect();
                lines.push(serde_json::from_str(&line).expect("an NDJSON line"));
            }
        }
    })
    .await;
    assert!(reached.is_ok(), "the stream never got there: {lines:?}");
}

/// The audit feed of API.md: `after` resumes where a consumer stopped, `follow` streams
/// each new vote as it is applied, on any node, and heartbeats while nothing happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_feed_resumes_after_a_position_and_follows_new_votes() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(3).await;
    let (poll, options) = cluster.create_poll(0, &["a", "b"]).await;
    for i in 0..5 {
        let (status, body) =
            cluster.vote(i % 3, &poll, &format!("v{i}"), &options[i % 2], &format!("k{i}")).await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let audit = |node: usize, query: &str| format!("{}/v1/polls/{poll}/audit?{query}", cluster.url(node));
    let text = cluster.http.get(audit(1, "after=2")).send().await.unwrap().text().await.unwrap();
    let positions: Vec<u64> =
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["position"].as_u64().unwrap()).collect();
    assert_eq!(positions, [3, 4], "after=2 starts at 3: {text}");
    let text = cluster.http.get(audit(1, "after=4")).send().await.unwrap().text().await.unwrap();
    assert_eq!(text, "", "nothing after the last position");

    // A follower of node 3 sees votes cast through node 1, in order, each once.
    let client = reqwest::Client::new();
    let mut followed = client.get(audit(2, "after=1&follow=true")).send().await.unwrap();
    assert_eq!(followed.status(), 200);
    let mut lines = Vec::new();
    read_until(&mut followed, &mut lines, |lines| lines.len() == 3).await;
    for i in 5..8 {
        let (status, body) = cluster.vote(0, &poll, &format!("v{i}"), &options[0], &format!("k{i}")).await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    read_until(&mut followed, &mut lines, |lines| lines.iter().filter(|l| l.get("position").is_some()).count() == 6)
        .await;
    let positions: Vec<u64> = lines.iter().filter_map(|l| l["position"].as_u64()).collect();
    assert_eq!(positions, [2, 3, 4, 5, 6, 7], "{lines:?}");
    assert_eq!(lines[5]["voter_id"], "v7");
    // Quiet: a heartbeat within 15 s (and a little), saying how far the chain is.
    read_until(&mut followed, &mut lines, |lines| lines.iter().any(|l| l["heartbeat"] == true)).await;
    let heartbeat = lines.iter().find(|l| l["heartbeat"] == true).unwrap();
    assert_eq!(heartbeat["chain_length"], 8, "{heartbeat}");
}

/// A killed member is reported unreachable on the leader, with how long it has been
/// silent, instead of staying "voter, lag 0"; the survivors stay reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_member_is_reported_unreachable_by_the_leader() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let member = |status: &Value, id: usize| -> Value {
        let members = status["members"].as_array().expect("members");
        members.iter().find(|m| m["node_id"] == id as u64 + 1).cloned().expect("the member")
    };
    let all_reachable = eventually(CONVERGE, || async {
        let status = cluster.status(leader).await?;
        (0..3).all(|i| member(&status, i)["reachable"] == true).then_some(status)
    })
    .await;
    let status = all_reachable.expect("every member reachable on the leader");
    assert_eq!(member(&status, leader)["last_heard_ms"], 0, "{status}");
    let victim = (leader + 1) % 3;
    let survivor = (leader + 2) % 3;
    cluster.kill(victim);
    let reported = eventually(CONVERGE, || async {
        let status = cluster.status(leader).await?;
        (member(&status, victim)["reachable"] == false).then_some(status)
    })
    .await;
    let status = reported.unwrap_or_else(|| panic!("node {} never reported down", victim + 1));
    let silent = member(&status, victim)["last_heard_ms"].as_u64().expect("heard once, before the kill");
    assert!(silent > 0, "{status}");
    assert_eq!(member(&status, survivor)["reachable"], true, "{status}");
    // A follower tells only of itself and the leader.
    let seen = cluster.status(survivor).await.expect("the survivor answers");
    assert_eq!(member(&seen, leader)["reachable"], true, "{seen}");
    assert!(member(&seen, victim)["reachable"].is_null(), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fresh_node_exports_every_rejection_reason_at_zero_and_logs_plain_text() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(1).await;
    let metrics = cluster.http.get(format!("{}/metrics", cluster.url(0))).send().await.unwrap().text().await.unwrap();
    for reason in ["already_voted", "poll_closed", "rate_limited", "timeout", "unavailable", "idempotency_key_reused"] {
        let series = format!("tally_votes_rejected_total{{reason=\"{reason}\"}} 0");
        assert!(metrics.lines().any(|line| line == series), "no {series:?} before any vote");
    }
    // The node's log goes to a file here: no terminal colour codes in it.
    let log = std::fs::read_to_string(cluster.dir.path().join("node1.log")).expect("the node's log");
    assert!(log.contains("serving"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a log file: {log}");
}
