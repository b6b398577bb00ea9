//! A leader partitioned away from the other two: the majority elects a new leader and
//! keeps recording votes, the isolated leader acknowledges nothing, and after the heal it
//! catches up until all three agree on counts and state hash.

use std::time::Duration;

use tally_api::v1::{CreatePollRequest, MeBody, PollBody, ResultsBody, StatusBody};
use tally_sim_tests::{eventually, host_name, run_node, seed, simulation, SimClient};
use tally_storage::MemDb;

const NODES: u64 = 3;

async fn status(client: &SimClient, node: u64) -> Option<StatusBody> {
    client.get(node, "/v1/cluster/status").await?.success()
}

async fn leader(client: &SimClient, among: &[u64]) -> Option<u64> {
    let mut agreed = None;
    for &node in among {
        let leader = status(client, node).await?.leader_id?;
        if agreed.is_some_and(|l| l != leader) || !among.contains(&leader) {
            return None;
        }
        agreed = Some(leader);
    }
    agreed
}

/// Votes with one key until a definite answer, trying `nodes` in turn; returns the status.
async fn vote_until_definite(client: &SimClient, nodes: &[u64], poll: &str, voter: &str, option: &str) -> u16 {
    for attempt in 0..40 {
        let node = nodes[attempt % nodes.len()];
        match client.vote(node, poll, voter, option, &format!("key-{voter}")).await {
            Some(answer) if answer.status() < 500 => return answer.status(),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    panic!("{voter}: no definite answer from {nodes:?}");
}

async fn scenario() -> turmoil::Result {
    let client = SimClient::new(Duration::from_secs(10));
    let all: Vec<u64> = (1..=NODES).collect();
    let first = eventually(Duration::from_secs(30), || leader(&client, &all)).await.ok_or("no leader")?;
    let create = CreatePollRequest::new("sim", ["a", "b"]);
    let created = client.post::<PollBody>(1, "/v1/polls", &create).await.ok_or("no answer")?;
    assert_eq!(created.status(), 201, "{created:?}");
    let poll_id = created.success().ok_or("no poll")?.poll_id;

    for n in 0..9u64 {
        let answer = vote_until_definite(&client, &[n % NODES + 1], &poll_id, &format!("before-{n}"), "o1").await;
        assert_eq!(answer, 200);
    }

    let majority: Vec<u64> = all.iter().copied().filter(|&n| n != first).collect();
    for &other in &majority {
        turmoil::partition(host_name(first), host_name(other));
    }
    // The isolated leader may still believe it leads, but it cannot commit.
    let isolated = client.vote(first, &poll_id, "isolated", "o2", "isolated-key").await;
    if let Some(answer) = &isolated {
        let code = answer.status();
        assert!(code == 503 || code == 504, "isolated leader acknowledged: {answer:?}");
    }
    let second =
        eventually(Duration::from_secs(30), || leader(&client, &majority)).await.ok_or("majority elected no leader")?;
    assert_ne!(second, first);
    println!("leader {first} partitioned away; node {second} now leads; isolated vote got {isolated:?}");
    for n in 0..12u64 {
        let answer = vote_until_definite(&client, &majority, &poll_id, &format!("during-{n}"), "o2").await;
        assert_eq!(answer, 200);
    }

    for &other in &majority {
        turmoil::repair(host_name(first), host_name(other));
    }
    let converged = eventually(Duration::from_secs(60), || async {
        let mut seen = Vec::new();
        for &node in &all {
            let view = status(&client, node).await?;
            let results = client.get::<ResultsBody>(node, &format!("/v1/polls/{poll_id}/results")).await?.success()?;
            seen.push((view.applied_index, view.state_hash, results.total_votes));
        }
        seen.iter().all(|s| *s == seen[0]).then(|| seen[0].clone())
    })
    .await
    .ok_or("nodes did not converge after the heal")?;
    println!("healed and converged at {converged:?} after {:?} of simulated time", turmoil::elapsed());
    // 9 before, 12 during; the isolated vote was never committed.
    assert_eq!(converged.2, 21, "converged on {converged:?}");
    let mine = client.get::<MeBody>(first, &format!("/v1/polls/{poll_id}/votes/me?voter_id=isolated")).await;
    let mine = mine.ok_or("no answer")?.success().ok_or("no reply to votes/me")?;
    assert!(!mine.has_voted);
    Ok(())
}

#[test]
fn partitioned_leader_catches_up_and_counts_agree() {
    let seed = seed();
    let mut sim = simulation(seed, Duration::from_secs(600));
    for id in 1..=NODES {
        let db = MemDb::new();
        let incarnation = std::cell::Cell::new(0u64);
        sim.host(host_name(id), move || {
            // A restarted node must not regenerate the ids of its previous life.
            incarnation.set(incarnation.get() + 1);
            run_node(id, NODES, db.clone(), seed ^ (id << 48) ^ (incarnation.get() << 32))
        });
    }
    sim.client("client", scenario());
    if let Err(error) = sim.run() {
        panic!("simulation failed (replay with SIM_SEED={seed}): {error}");
    }
}
