//! Actors: one ractor actor per poll on every node, the registry that starts and stops
//! them, and the node-wide [`Proposer`] that groups votes into log entries.
//!
//! This crate reaches the applied state only through [`PollSource`] and the log only
//! through [`VoteSubmitter`]; the node crate implements both. It knows nothing of axum or
//! openraft's API.

mod poll_actor;
mod proposer;
mod registry;

pub use poll_actor::{LiveFeed, LiveResults, PollHandle, VoteReply};
pub use proposer::{Decided, Pending, PendingGroup, Proposer, ProposerStats, VoteSubmitter, GROUP_VOTES_MAX};
pub use registry::{PollRegistry, RegistryConfig};

use tally_raft::model::{PollId, VoteIntent, VoteOutcome};
use tally_raft::rpc::ProposeError;

/// Read access to the node's applied state, as the actors need it.
pub trait PollSource: Send + Sync + 'static {
    /// The live counts of a poll and the applied index they reflect; `None` if the poll is
    /// unknown here.
    fn results(&self, poll_id: &PollId) -> Option<LiveResults>;

    /// An answer for `intent` that no later log entry can change (a replay, a voter who
    /// already voted, an option the poll does not have, a poll closed by hand), or `None`
    /// if only the state machine can decide.
    fn final_outcome(&self, intent: &VoteIntent) -> Option<VoteOutcome>;

    /// [`PollSource::final_outcome`] of each vote, in order: a batch's votes are all for
    /// one poll, which an implementation may look up once.
    fn final_outcomes(&self, intents: &[VoteIntent]) -> Vec<Option<VoteOutcome>> {
        intents.iter().map(|intent| self.final_outcome(intent)).collect()
    }
}

/// Why a vote could not be handed to the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteError {
    #[error(transparent)]
    Propose(#[from] ProposeError),
    #[error("too many polls active on this node")]
    TooManyPolls,
}
