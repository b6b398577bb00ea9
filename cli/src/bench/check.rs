//! The end of a run: every unknown outcome resolved by its idempotency key, then every
//! node must serve exactly the votes before the run plus those acknowledged.

use super::*;

#[derive(Debug, Serialize)]
pub(super) struct CheckReport {
    pub(super) ok: bool,
    /// Unknown outcomes that stayed unknown after resolution: the check is then inexact.
    pub(super) unresolved: u64,
    pub(super) polls: Vec<PollCheck>,
}

#[derive(Debug, Serialize)]
pub(super) struct PollCheck {
    pub(super) poll_id: String,
    pub(super) votes_before: u64,
    pub(super) acknowledged: u64,
    pub(super) expected_total: u64,
    /// Node id → total_votes it served.
    pub(super) nodes: BTreeMap<u64, Option<u64>>,
}

/// Learns the fate of every unknown vote, then waits for every node to serve exactly
/// the votes before the run plus those acknowledged.
pub(super) async fn check(run: &Run, nodes: &[Discovered]) -> CheckReport {
    let unknown = std::mem::take(&mut run.recorder().unknown);
    let mut unresolved = run.recorder().unknown_untracked;
    for vote in &unknown {
        let mut resolved = false;
        for attempt in 0..RESOLVE_ATTEMPTS_MAX {
            let endpoint = run.endpoint().to_string();
            let reply = run.send_vote(&endpoint, vote).await;
            match judge(reply.as_ref().map(|(s, b)| (*s, b.as_ref()))).1 {
                Fate::Counted => run.recorder().counted[vote.poll] += 1,
                Fate::NotCounted => {}
                Fate::Unknown => {
                    tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await;
                    continue;
                }
            }
            resolved = true;
            break;
        }
        unresolved += u64::from(!resolved);
    }
    let counted = run.recorder().counted.clone();
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    loop {
        let mut polls = Vec::new();
        for (target, acknowledged) in run.targets.iter().zip(&counted) {
            let expected_total = target.votes_before + acknowledged;
            let mut totals = BTreeMap::new();
            for node in nodes {
                let url = format!("{}/v1/polls/{}/results", node.endpoint, segment(&target.poll_id));
                let total = match run.http.get(url).send().await {
                    Ok(response) => response.json::<ResultsBody>().await.ok().map(|results| results.total_votes),
                    Err(_) => None,
                };
                totals.insert(node.node_id, total);
            }
            polls.push(PollCheck {
                poll_id: target.poll_id.clone(),
                votes_before: target.votes_before,
                acknowledged: *acknowledged,
                expected_total,
                nodes: totals,
            });
        }
        let exact = polls.iter().all(|p| p.nodes.values().all(|t| *t == Some(p.expected_total)));
        if (exact && unresolved == 0) || Instant::now() >= deadline {
            return CheckReport { ok: exact && unresolved == 0, unresolved, polls };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
