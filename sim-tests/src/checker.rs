//! The verdict on a run, from the clients' history and the nodes' final states alone.
//!
//! 1. Every vote acknowledged `200` is recorded, with the acknowledged vote id, on every
//!    node after the heal.
//! 2. No (poll, voter) has two acknowledged vote ids, and every `ALREADY_VOTED` names the
//!    vote that really was recorded.
//! 3. Every node's counts equal a recount of its votes, and all nodes end at the same
//!    applied index with the same state hash.
//! 4. Linearizable reads include every vote acknowledged before they began, and never go
//!    backwards.
//! 5. Liveness: after the heal the nodes converge and a new vote is acknowledged, within
//!    the bound (the workload's notes say whether they did).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use tally_raft::model::{PollId, VoterId};
use tally_raft::sm::State;

use crate::history::{Event, History};
use crate::net::Answer;

/// A node's state at the end of a run.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub id: u64,
    pub applied_index: u64,
    pub state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which of the checker's rules (1 to 5).
    pub rule: u8,
    pub what: String,
    /// The (poll, voter) whose history explains it, if one does.
    pub about: Option<(String, String)>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {}: {}", self.rule, self.what)
    }
}

/// The voter's recorded vote id on `node`; an unreadable record shows as none (and so as
/// a violation).
fn recorded_vote_id(node: &NodeState, poll: &str, voter: &str) -> Option<String> {
    let poll = node.state.polls.get(&PollId(poll.to_string()))?;
    poll.vote_of(&VoterId(voter.to_string())).ok().flatten().map(|r| r.vote_id())
}

pub fn check(history: &History, nodes: &[NodeState]) -> Vec<Violation> {
    let mut found = Found::default();
    // Rule 3 first: the rest compares against these states.
    states_agree(nodes, &mut found);
    acknowledged_votes_are_recorded(history, nodes, &mut found);
    already_voted_names_the_recorded_vote(history, nodes, &mut found);
    reads_are_linearizable(history, &mut found);
    liveness_held(history, &mut found);
    found.0
}

/// The violations found so far, in the order the rules are checked.
#[derive(Default)]
struct Found(Vec<Violation>);

impl Found {
    fn add(&mut self, rule: u8, what: String, about: Option<(String, String)>) {
        self.0.push(Violation { rule, what, about });
    }
}

/// Rule 3: every node's counts recount, and every node ends where the first one does.
fn states_agree(nodes: &[NodeState], found: &mut Found) {
    for node in nodes {
        if let Err(e) = node.state.check_invariants() {
            found.add(3, format!("node{}: {e}", node.id), None);
        }
    }
    let Some(first) = nodes.first() else { return };
    for node in &nodes[1..] {
        if (node.applied_index, node.state.hash) != (first.applied_index, first.state.hash) {
            found.add(
                3,
                format!(
                    "node{} ends at index {} state {}, node{} at index {} state {}",
                    first.id,
                    first.applied_index,
                    &first.state.hash_hex()[..16],
                    node.id,
                    node.applied_index,
                    &node.state.hash_hex()[..16]
                ),
                None,
            );
        }
    }
}

/// Rules 1 and 2: one acknowledged vote id per (poll, voter), recorded on every node.
fn acknowledged_votes_are_recorded(history: &History, nodes: &[NodeState], found: &mut Found) {
    let mut acknowledged: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for vote in history.votes() {
        if let Some(vote_id) = vote.acknowledged() {
            acknowledged.entry((vote.poll.clone(), vote.voter.clone())).or_default().insert(vote_id.to_string());
        }
    }
    for ((poll, voter), vote_ids) in &acknowledged {
        let about = Some((poll.clone(), voter.clone()));
        if vote_ids.len() > 1 {
            found.add(2, format!("{voter} on poll {poll} was acknowledged twice: {vote_ids:?}"), about.clone());
        }
        for node in nodes {
            let recorded = recorded_vote_id(node, poll, voter);
            if !vote_ids.iter().any(|id| Some(id) == recorded.as_ref()) {
                found.add(
                    1,
                    format!(
                        "{voter} on poll {poll} was acknowledged as {vote_ids:?} but node{} has {recorded:?}",
                        node.id
                    ),
                    about.clone(),
                );
            }
        }
    }
}

/// Rule 2: an `ALREADY_VOTED` names the vote that was recorded. The nodes must agree
/// (rule 3), so the first one stands for all.
fn already_voted_names_the_recorded_vote(history: &History, nodes: &[NodeState], found: &mut Found) {
    let Some(node) = nodes.first() else { return };
    for vote in history.votes() {
        let Some(Answer::Refused(409, Some(error))) = &vote.reply else { continue };
        if error.code != "ALREADY_VOTED" {
            continue;
        }
        let named = error.context_str("vote_id");
        let recorded = recorded_vote_id(node, &vote.poll, &vote.voter);
        if named.is_none() || named != recorded.as_deref() {
            found.add(
                2,
                format!(
                    "ALREADY_VOTED to {} on poll {} named {named:?} but the recorded vote is {recorded:?}",
                    vote.voter, vote.poll
                ),
                Some((vote.poll.clone(), vote.voter.clone())),
            );
        }
    }
}

/// Rule 4: a linearizable read counts every vote acknowledged before it began, and no
/// fewer than a read that ended before it began.
fn reads_are_linearizable(history: &History, found: &mut Found) {
    let mut acked_at: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
    for vote in history.votes() {
        if vote.acknowledged().is_some() {
            acked_at.entry(vote.poll.as_str()).or_default().push((vote.done_ms, vote.voter.as_str()));
        }
    }
    let reads: Vec<_> = history.reads().collect();
    for read in &reads {
        let before: BTreeSet<&str> = acked_at
            .get(read.poll.as_str())
            .map(|acks| acks.iter().filter(|(at, _)| *at < read.sent_ms).map(|(_, voter)| *voter).collect())
            .unwrap_or_default();
        if (before.len() as u64) > read.total_votes {
            found.add(
                4,
                format!(
                    "linearizable read of poll {} on node{} at {}ms saw {} votes; {} were acknowledged before it began",
                    read.poll,
                    read.node,
                    read.sent_ms,
                    read.total_votes,
                    before.len()
                ),
                None,
            );
        }
        for earlier in &reads {
            if earlier.poll == read.poll && earlier.done_ms < read.sent_ms && earlier.total_votes > read.total_votes {
                found.add(
                    4,
                    format!(
                        "linearizable reads of poll {} went backwards: {} at {}ms, then {} at {}ms",
                        read.poll, earlier.total_votes, earlier.done_ms, read.total_votes, read.sent_ms
                    ),
                    None,
                );
            }
        }
    }
}

/// Rule 5: the workload's liveness phase notes each bound it saw missed as `LIVENESS: …`.
fn liveness_held(history: &History, found: &mut Found) {
    for event in &history.events {
        if let Event::Note { what, .. } = event {
            if what.starts_with("LIVENESS") {
                found.add(5, what.clone(), None);
            }
        }
    }
}
