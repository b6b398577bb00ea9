//! The whole cluster crashes right after votes were acknowledged, and restarts at once.
//!
//! Before a crash a node's commit index is persisted only with the next flush, so a node
//! comes back knowing less committed than it had acknowledged. A leader that resumed its
//! old term after the restart would serve read indexes from that stale commit index, and a
//! linearizable read could miss acknowledged votes (sim seed 95059). Every restarted node
//! must win, or see, a new election first: the first leader after the restart has a
//! greater term, and every linearizable read from the first millisecond on sees every vote.
//!
//! The old leader comes back first and its followers a second later, so that reads are
//! waiting on it when its quorum returns: the moment a resumed term would answer stale.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use tally_api::v1::{CreatePollRequest, PollBody, ResultsBody, StatusBody};
use tally_sim_tests::net::Answer;
use tally_sim_tests::{eventually, host_name, run_node, seed, simulation, SimClient};
use tally_storage::MemDb;

const NODES: u64 = 3;
const VOTES: u64 = 20;
/// How long after the old leader its followers restart.
const FOLLOWERS_LATER: Duration = Duration::from_secs(1);

/// Where the scenario stands, shared with the harness loop that crashes the hosts.
#[derive(Default)]
struct Phase {
    /// Set by the client: every vote is acknowledged and applied everywhere; crash now,
    /// and restart this node (the leader) first.
    crash_now: Cell<Option<u64>>,
    /// Set by the harness: the hosts were crashed and the leader restarted.
    restarted: Cell<bool>,
}

async fn status(client: &SimClient, node: u64) -> Option<StatusBody> {
    client.get(node, "/v1/cluster/status").await?.success()
}

async fn scenario(phase: Rc<Phase>) -> turmoil::Result {
    let client = SimClient::new(Duration::from_secs(10));
    let leader = eventually(Duration::from_secs(30), || async { status(&client, 1).await?.leader_id })
        .await
        .ok_or("no leader")?;
    let create = CreatePollRequest::new("restart", ["a", "b"]);
    let created = client.post::<PollBody>(leader, "/v1/polls", &create).await.ok_or("no poll")?;
    assert_eq!(created.status(), 201, "{created:?}");
    let poll_id = created.success().ok_or("no poll")?.poll_id;
    for n in 0..VOTES {
        let answer = client.vote(leader, &poll_id, &format!("voter-{n}"), "o1", &format!("key-{n}")).await;
        assert!(matches!(answer, Some(Answer::Success(200, _))), "vote {n}: {answer:?}");
    }
    let term_before = status(&client, leader).await.ok_or("no status")?.term;
    // Every node has applied every vote, so a read that misses one went back in time.
    let results = format!("/v1/polls/{poll_id}/results");
    for node in 1..=NODES {
        eventually(Duration::from_secs(10), || async {
            let counts = client.get::<ResultsBody>(node, &results).await?.success()?;
            (counts.total_votes == VOTES).then_some(())
        })
        .await
        .ok_or(format!("node{node} did not apply every vote"))?;
    }
    phase.crash_now.set(Some(leader));
    while !phase.restarted.get() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let linearizable = format!("{results}?consistency=linearizable");
    let mut reads = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        for node in [leader, leader % NODES + 1] {
            if let Some(Answer::Success(200, body)) = client.get::<ResultsBody>(node, &linearizable).await {
                reads += 1;
                assert_eq!(body.total_votes, VOTES, "a linearizable read on node{node} after the restart");
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(reads > 0, "no linearizable read succeeded within 5 s of the restart");
    let after = eventually(Duration::from_secs(10), || async {
        let view = status(&client, leader).await?;
        view.leader_id.and(Some(view.term))
    })
    .await
    .ok_or("no leader after the restart")?;
    assert!(after > term_before, "a leader after the restart kept the old term {term_before}");
    println!("{reads} linearizable reads after the restart, all {VOTES} votes; term {term_before} -> {after}");
    Ok(())
}

#[test]
fn after_a_whole_cluster_restart_linearizable_reads_miss_nothing() {
    let seed = seed();
    let mut sim = simulation(seed, Duration::from_secs(120));
    let dbs: Vec<MemDb> = (1..=NODES).map(|_| MemDb::new()).collect();
    for id in 1..=NODES {
        let db = dbs[id as usize - 1].clone();
        let incarnation = Cell::new(0u64);
        sim.host(host_name(id), move || {
            incarnation.set(incarnation.get() + 1);
            if incarnation.get() > 1 {
                db.crash();
            }
            run_node(id, NODES, db.clone(), seed ^ (id << 48) ^ (incarnation.get() << 32))
        });
    }
    let phase = Rc::new(Phase::default());
    sim.client("client", scenario(phase.clone()));
    let mut followers_restart_at = None;
    loop {
        if let (Some(leader), false) = (phase.crash_now.get(), phase.restarted.get()) {
            for id in 1..=NODES {
                sim.crash(host_name(id));
            }
            sim.bounce(host_name(leader));
            followers_restart_at = Some((sim.elapsed() + FOLLOWERS_LATER, leader));
            phase.restarted.set(true);
        }
        if let Some((_, leader)) = followers_restart_at.filter(|(at, _)| sim.elapsed() >= *at) {
            for id in (1..=NODES).filter(|id| *id != leader) {
                sim.bounce(host_name(id));
            }
            followers_restart_at = None;
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => panic!("simulation failed (replay with SIM_SEED={seed}): {error}"),
        }
    }
}
