//! The actor of one poll on one node.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tally_raft::model::{Poll, PollId, VoteIntent};
use tally_raft::rpc::ProposeError;
use tokio::sync::{oneshot, watch};

use crate::proposer::{Decided, Proposer};
use crate::{PollSource, VoteError};

/// A poll's live counts as this node has applied them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveResults {
    pub poll: Poll,
    pub counts: Vec<u64>,
    pub applied_index: u64,
    /// The leader's timestamp of the last entry applied here: how fresh the counts are.
    pub as_of_ms: i64,
}

pub type VoteReply = Result<Decided, VoteError>;

pub(crate) enum PollMsg {
    /// The applied state of this poll changed; re-read it.
    Refresh,
    Results {
        reply: oneshot::Sender<Option<LiveResults>>,
    },
}

/// What a results subscriber sees: the latest live counts, `None` until first read.
pub type LiveFeed = watch::Receiver<Option<Arc<LiveResults>>>;

/// Shared between the handle and the actor: what the registry needs to route, bound and
/// retire actors without asking them.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Messages sent and not yet handled: ractor's mailboxes are unbounded, so we bound.
    pub mailbox: AtomicUsize,
    /// A `Refresh` is already queued; the next apply need not queue another.
    pub refresh_pending: AtomicBool,
    /// Milliseconds since the registry started, at the last message.
    pub last_used_ms: AtomicU64,
    /// The actor publishes every change of its counts here, once, however many subscribe:
    /// each subscriber holds at most the latest value, so a slow reader costs no memory
    /// and never holds the actor up (changes in between coalesce).
    pub live: watch::Sender<Option<Arc<LiveResults>>>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            mailbox: AtomicUsize::new(0),
            refresh_pending: AtomicBool::new(false),
            last_used_ms: AtomicU64::new(0),
            live: watch::Sender::new(None),
        }
    }
}

/// The only way callers talk to a poll actor.
#[derive(Clone)]
pub struct PollHandle {
    pub(crate) actor: ActorRef<PollMsg>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) mailbox_max: usize,
    pub(crate) clock: crate::registry::IdleClock,
    pub(crate) source: Arc<dyn PollSource>,
    pub(crate) proposer: Proposer,
}

impl PollHandle {
    fn send(&self, message: PollMsg) -> Result<(), VoteError> {
        if self.shared.mailbox.fetch_add(1, Ordering::AcqRel) >= self.mailbox_max {
            self.shared.mailbox.fetch_sub(1, Ordering::AcqRel);
            return Err(ProposeError::Overloaded.into());
        }
        self.shared.last_used_ms.store(self.clock.now_ms(), Ordering::Relaxed);
        self.actor.cast(message).map_err(|_| {
            self.shared.mailbox.fetch_sub(1, Ordering::AcqRel);
            VoteError::Propose(ProposeError::ShuttingDown)
        })
    }

    /// Waits for the state machine's decision on a vote (or gives an early answer that
    /// no later entry can change).
    ///
    /// The vote goes from the caller's task straight to the proposer's queue, not through
    /// the actor: a mailbox hop and a relay task per vote cost more than the actor could
    /// decide. It is queued when the future is first polled, so futures polled in order
    /// (a batch) keep their order, and of two votes by one voter the log sees the first
    /// one first.
    ///
    /// Its span, on the node that took the request, names the vote until the log gives it
    /// an id; the decision's `log_index` then joins it to the entry's spans on every node.
    #[tracing::instrument(
        level = "debug", name = "vote", skip_all,
        fields(poll_id = %intent.poll_id, voter_id = %intent.voter_id),
    )]
    pub async fn vote(&self, intent: VoteIntent) -> VoteReply {
        self.shared.last_used_ms.store(self.clock.now_ms(), Ordering::Relaxed);
        if let Some(outcome) = self.source.final_outcome(&intent) {
            let log_index = self.shared.live.borrow().as_ref().map_or(0, |live| live.applied_index);
            tracing::debug!(outcome = outcome.kind(), vote_id = outcome.vote_id(), "answered before the log");
            return Ok(Decided { log_index, outcome });
        }
        let decided = self.proposer.enqueue(intent)?.decided().await;
        match &decided {
            // An event rather than fields recorded on the span: nothing happens in the span
            // after it, and with its level off an event costs a level check, no lookup.
            Ok(Decided { log_index, outcome }) => {
                tracing::debug!(log_index, vote_id = outcome.vote_id(), outcome = outcome.kind(), "decided")
            }
            Err(error) => tracing::debug!(%error, "not decided"),
        }
        Ok(decided?)
    }

    /// [`PollHandle::vote`] for many votes at once, in order: one look at the applied
    /// state for all of them, and the rest queued together ([`Proposer::enqueue_batch`]),
    /// a reply channel per group rather than per vote. One reply per vote, in order.
    #[tracing::instrument(level = "debug", name = "votes", skip_all, fields(poll_id = batch_poll_id(&intents), votes = intents.len()))]
    pub async fn vote_batch(&self, intents: Vec<VoteIntent>) -> Vec<VoteReply> {
        self.shared.last_used_ms.store(self.clock.now_ms(), Ordering::Relaxed);
        // Were the source to answer for fewer votes, the rest go to the log to be judged.
        let early = self.source.final_outcomes(&intents).into_iter().chain(std::iter::repeat(None));
        let log_index = || self.shared.live.borrow().as_ref().map_or(0, |live| live.applied_index);
        let mut replies: Vec<Option<VoteReply>> = Vec::with_capacity(intents.len());
        let mut to_log = Vec::with_capacity(intents.len());
        for (intent, early) in intents.into_iter().zip(early) {
            match early {
                Some(outcome) => replies.push(Some(Ok(Decided { log_index: log_index(), outcome }))),
                None => {
                    replies.push(None);
                    to_log.push(intent);
                }
            }
        }
        let mut decided = Vec::with_capacity(to_log.len());
        for (size, pending) in self.proposer.enqueue_batch(to_log) {
            let result = match pending {
                Ok(pending) => pending.decided().await,
                Err(error) => Err(error),
            };
            match result {
                Ok((log_index, outcomes)) => {
                    decided.extend(outcomes.into_iter().map(|outcome| Ok(Decided { log_index, outcome })))
                }
                Err(error) => decided.extend(std::iter::repeat_n(Err(VoteError::from(error)), size)),
            }
        }
        tracing::debug!(early = replies.iter().filter(|r| r.is_some()).count(), "decided");
        let mut decided = decided.into_iter();
        replies
            .into_iter()
            .map(|early| early.or_else(|| decided.next()).unwrap_or(Err(ProposeError::ShuttingDown.into())))
            .collect()
    }

    /// The live counts this node has applied; `None` if the poll is unknown here.
    pub async fn results(&self) -> Result<Option<LiveResults>, VoteError> {
        let (reply, results) = oneshot::channel();
        self.send(PollMsg::Results { reply })?;
        results.await.map_err(|_| VoteError::Propose(ProposeError::ShuttingDown))
    }

    /// A feed of this poll's counts on this node. The actor is not retired while anyone
    /// holds one.
    pub fn subscribe(&self) -> LiveFeed {
        self.shared.live.subscribe()
    }

    pub(crate) fn refresh(&self) {
        if !self.shared.refresh_pending.swap(true, Ordering::AcqRel) {
            // Refresh bypasses the mailbox bound: at most one is ever queued.
            self.shared.mailbox.fetch_add(1, Ordering::AcqRel);
            if self.actor.cast(PollMsg::Refresh).is_err() {
                self.shared.mailbox.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// A batch's poll (all its votes name the same one), for its span.
fn batch_poll_id(intents: &[VoteIntent]) -> &str {
    intents.first().map_or("", |intent| intent.poll_id.as_str())
}

pub(crate) struct PollActor;

pub(crate) struct PollArgs {
    pub poll_id: PollId,
    pub source: Arc<dyn PollSource>,
    pub shared: Arc<Shared>,
}

pub(crate) struct PollActorState {
    args: PollArgs,
    live: Option<LiveResults>,
}

impl Actor for PollActor {
    type Msg = PollMsg;
    type State = PollActorState;
    type Arguments = PollArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<PollMsg>,
        args: PollArgs,
    ) -> Result<PollActorState, ActorProcessingErr> {
        let live = args.source.results(&args.poll_id);
        publish(&args.shared, &live);
        Ok(PollActorState { args, live })
    }

    async fn handle(
        &self,
        _myself: ActorRef<PollMsg>,
        message: PollMsg,
        state: &mut PollActorState,
    ) -> Result<(), ActorProcessingErr> {
        state.args.shared.mailbox.fetch_sub(1, Ordering::AcqRel);
        tracing::trace_span!("poll_actor", poll_id = %state.args.poll_id).in_scope(|| handle_message(message, state));
        Ok(())
    }
}

fn handle_message(message: PollMsg, state: &mut PollActorState) {
    match message {
        PollMsg::Refresh => {
            // Cleared before reading, so an apply that lands during the read queues
            // another refresh rather than being missed.
            state.args.shared.refresh_pending.store(false, Ordering::Release);
            state.live = state.args.source.results(&state.args.poll_id);
            let applied_index = state.live.as_ref().map(|live| live.applied_index);
            tracing::trace!(applied_index, "refreshed");
            publish(&state.args.shared, &state.live);
        }
        PollMsg::Results { reply } => {
            if state.live.is_none() {
                state.live = state.args.source.results(&state.args.poll_id);
            }
            let _ = reply.send(state.live.clone());
        }
    }
}

/// Tells subscribers, if the counts (or how fresh they are) changed.
fn publish(shared: &Shared, live: &Option<LiveResults>) {
    shared.live.send_if_modified(|published| {
        if published.as_deref() == live.as_ref() {
            return false;
        }
        *published = live.clone().map(Arc::new);
        true
    });
}
