//! The adapters that let the actors read the applied state and write to the log, and let
//! the state machine tell the actors what changed.

use std::sync::{Arc, OnceLock, Weak};

use tally_actors::{LiveResults, PollRegistry, PollSource, VoteSubmitter};
use tally_raft::model::{Command, PollId, Response, VoteIntent, VoteOutcome, VoteRejection};
use tally_raft::rpc::ProposeError;
use tally_raft::sm::{judge_vote, Judgement};
use tally_raft::state_machine::{Applied, ApplyListener, SmShared};
use tally_raft::transport::BoxFuture;

use crate::cluster::RaftNode;
use crate::metrics::RecentPolls;

pub struct StateSource(pub Arc<SmShared>);

/// Votes judged early under one read lock of the applied state.
const FINAL_OUTCOMES_PER_LOCK: usize = 64;

/// A poll's counts in `applied`, with how fresh they are: what its actor publishes and
/// what a results read serves.
pub fn live_results(applied: &Applied, poll_id: &PollId) -> Option<LiveResults> {
    let poll = applied.state.polls.get(poll_id)?;
    Some(LiveResults {
        poll: poll.poll.clone(),
        counts: poll.counts.clone(),
        applied_index: applied.last_applied.map_or(0, |l| l.index),
        as_of_ms: applied.state.last_timestamp_ms,
    })
}

impl PollSource for StateSource {
    fn results(&self, poll_id: &PollId) -> Option<LiveResults> {
        live_results(&self.0.read(), poll_id)
    }

    fn final_outcome(&self, intent: &VoteIntent) -> Option<VoteOutcome> {
        early_answer(&self.0.read(), intent)
    }

    fn final_outcomes(&self, intents: &[VoteIntent]) -> Vec<Option<VoteOutcome>> {
        // The lock is taken again every few votes: a judgement may read a record from
        // disk, and apply waits for the lock.
        let mut outcomes = Vec::with_capacity(intents.len());
        for chunk in intents.chunks(FINAL_OUTCOMES_PER_LOCK) {
            let applied = self.0.read();
            outcomes.extend(chunk.iter().map(|intent| early_answer(&applied, intent)));
        }
        outcomes
    }
}

/// [`PollSource::final_outcome`] from `applied`.
fn early_answer(applied: &Applied, intent: &VoteIntent) -> Option<VoteOutcome> {
    let poll = applied.state.polls.get(&intent.poll_id)?;
    // The state machine judges the schedule by the leader's timestamp, which this node
    // does not know. A poll open since its creation and without an end has the same
    // status at every later time (only a close by hand changes it, and that is applied
    // here already), so its judgement here is the state machine's.
    let timeless = poll.poll.end_time_ms.is_none() && poll.poll.start_time_ms <= poll.poll.created_at_ms;
    if !timeless && poll.poll.closed_at_ms.is_none() {
        return None;
    }
    // A record that cannot be read decides nothing early: the log will judge.
    match judge_vote(poll, intent, applied.state.last_timestamp_ms).ok()? {
        Judgement::Final(outcome) => Some(outcome),
        Judgement::Record { .. } | Judgement::Change { .. } => None,
    }
}

/// Tells the poll actors what apply changed (the registry is set once it exists), and
/// the metrics which polls are active.
pub struct ActorNotifier {
    /// Weak: the state machine holds this notifier and the proposer's task holds the node
    /// and so the state machine; a strong reference would close the cycle through the
    /// registry's handles of the proposer, and neither would ever stop.
    pub registry: OnceLock<Weak<PollRegistry>>,
    pub recent_polls: Arc<RecentPolls>,
}

impl ApplyListener for ActorNotifier {
    fn polls_changed(&self, polls: &mut dyn Iterator<Item = &PollId>, _index: u64) {
        let polls: Vec<&PollId> = polls.collect();
        self.recent_polls.touch(polls.iter().copied());
        if let Some(registry) = self.registry.get().and_then(Weak::upgrade) {
            registry.polls_changed(&mut polls.into_iter());
        }
    }

    fn state_replaced(&self, _index: u64) {
        if let Some(registry) = self.registry.get().and_then(Weak::upgrade) {
            registry.everything_changed();
        }
    }
}

pub struct RaftSubmitter {
    pub node: Arc<RaftNode>,
    /// Votes per entry: how well group commit is grouping.
    pub entry_votes: prometheus::Histogram,
}

impl VoteSubmitter for RaftSubmitter {
    fn submit(&self, votes: Vec<VoteIntent>) -> BoxFuture<'_, Result<(u64, Vec<VoteOutcome>), ProposeError>> {
        Box::pin(async move {
            if self.node.sm.alarm_up() {
                return self.submit_under_alarm(votes).await;
            }
            self.propose(votes).await
        })
    }
}

impl RaftSubmitter {
    async fn propose(&self, votes: Vec<VoteIntent>) -> Result<(u64, Vec<VoteOutcome>), ProposeError> {
        tally_raft::model::assert_vote_entry(&votes);
        let expected = votes.len();
        self.entry_votes.observe(expected as f64);
        let committed = self.node.propose(Command::CastVotes(votes)).await?;
        match committed.response {
            Response::Votes(outcomes) if outcomes.len() == expected => Ok((committed.log_index, outcomes)),
            other => Err(ProposeError::Unknown(format!("state machine answered {other:?} to a vote entry"))),
        }
    }

    /// While a member is short of disk, new votes are refused here, before the log (the
    /// state machine refuses them too, whatever gets through); retries of decided requests
    /// still go to the log, which answers them as it did the first time.
    async fn submit_under_alarm(&self, votes: Vec<VoteIntent>) -> Result<(u64, Vec<VoteOutcome>), ProposeError> {
        let (decided, nodes): (Vec<bool>, Vec<_>) = {
            let applied = self.node.sm.read();
            let decided = votes
                .iter()
                .map(|v| {
                    let poll = applied.state.polls.get(&v.poll_id);
                    // Unreadable: not known to be decided, so refused like a new vote.
                    poll.is_some_and(|p| p.decided_request(&v.voter_id, &v.idempotency_key).unwrap_or(false))
                })
                .collect();
            (decided, applied.state.alarms.iter().copied().collect())
        };
        let refused = || VoteOutcome::Rejected(VoteRejection::NoSpace { nodes: nodes.clone() });
        let retries: Vec<VoteIntent> =
            votes.into_iter().zip(&decided).filter(|(_, decided)| **decided).map(|(v, _)| v).collect();
        let (log_index, mut answered) = match retries.is_empty() {
            true => (self.node.sm.applied_index(), Vec::new().into_iter()),
            false => {
                let (index, outcomes) = self.propose(retries).await?;
                (index, outcomes.into_iter())
            }
        };
        let outcomes = decided.iter().map(|decided| if *decided { answered.next() } else { None });
        Ok((log_index, outcomes.map(|o| o.unwrap_or_else(refused)).collect()))
    }
}
