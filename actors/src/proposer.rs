//! Group commit: one node-wide task turns whatever votes arrived while the previous log
//! entry was in flight into the next entry.
//!
//! openraft 0.9 appends and flushes each `client_write` one after another, so one vote per
//! entry would cost one fsync per vote. Here a burst of N concurrent votes costs one entry
//! and one fsync per node, whichever polls they are for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::Duration;
use tally_raft::limits::VOTES_PER_ENTRY_MAX;
use tally_raft::model::{VoteIntent, VoteOutcome};
use tally_raft::rpc::ProposeError;
use tally_raft::transport::BoxFuture;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;

/// Puts a group of votes into the log (directly on the leader, forwarded elsewhere) and
/// returns the log index of the entry and one outcome per vote, in order.
pub trait VoteSubmitter: Send + Sync + 'static {
    fn submit(&self, votes: Vec<VoteIntent>) -> BoxFuture<'_, Result<(u64, Vec<VoteOutcome>), ProposeError>>;
}

/// A vote's fate as decided by the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub log_index: u64,
    pub outcome: VoteOutcome,
}

type Reply = oneshot::Sender<Result<Decided, ProposeError>>;

struct Queued {
    intent: VoteIntent,
    reply: Reply,
    since: Instant,
}

/// A queued vote's decision, to come.
pub struct Pending(oneshot::Receiver<Result<Decided, ProposeError>>);

impl Pending {
    pub async fn decided(self) -> Result<Decided, ProposeError> {
        self.0.await.unwrap_or(Err(ProposeError::ShuttingDown))
    }
}

#[derive(Debug, Default)]
pub struct ProposerStats {
    pub entries: AtomicU64,
    pub votes: AtomicU64,
    pub largest_entry_votes: AtomicU64,
}

/// Handle to the node-wide proposer task. Cheap to clone; the task ends when the last
/// handle is dropped.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Queued>,
    stats: Arc<ProposerStats>,
    /// Owns the task, which a `JoinSet` aborts when dropped. The closed queue alone would
    /// end it only after the entry in flight, which can wait out a whole write timeout.
    _task: Arc<JoinSet<()>>,
}

impl Proposer {
    /// Starts the task. `queue_capacity` bounds the votes waiting for the next entry; past
    /// it, callers get `Overloaded` at once rather than queueing without end. A vote that
    /// waited `wait_max` for its turn is refused (`Overloaded`, never proposed) rather
    /// than proposed long after its client gave up.
    pub fn start(submitter: Arc<dyn VoteSubmitter>, queue_capacity: usize, wait_max: Duration) -> Self {
        let (queue, receiver) = mpsc::channel(queue_capacity);
        let stats = Arc::new(ProposerStats::default());
        let mut task = JoinSet::new();
        task.spawn(run(receiver, submitter, stats.clone(), wait_max).in_current_span());
        Self { queue, stats, _task: Arc::new(task) }
    }

    pub fn stats(&self) -> &ProposerStats {
        &self.stats
    }

    /// Queues `intent` now, in call order, and returns where its decision will arrive.
    pub fn enqueue(&self, intent: VoteIntent) -> Result<Pending, ProposeError> {
        let (reply, decided) = oneshot::channel();
        self.queue.try_send(Queued { intent, reply, since: Instant::now() }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ProposeError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => ProposeError::ShuttingDown,
        })?;
        Ok(Pending(decided))
    }

    /// Queues `intent` and waits for the state machine's decision.
    pub async fn propose(&self, intent: VoteIntent) -> Result<Decided, ProposeError> {
        self.enqueue(intent)?.decided().await
    }

    /// How many votes wait for the next entry.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

async fn run(
    mut receiver: mpsc::Receiver<Queued>,
    submitter: Arc<dyn VoteSubmitter>,
    stats: Arc<ProposerStats>,
    wait_max: Duration,
) {
    let mut group = Vec::with_capacity(VOTES_PER_ENTRY_MAX);
    while receiver.recv_many(&mut group, VOTES_PER_ENTRY_MAX).await > 0 {
        let (mut intents, mut replies) = (Vec::with_capacity(group.len()), Vec::with_capacity(group.len()));
        for queued in group.drain(..) {
            if queued.since.elapsed() >= wait_max {
                let _ = queued.reply.send(Err(ProposeError::Overloaded));
            } else {
                intents.push(queued.intent);
                replies.push(queued.reply);
            }
        }
        if intents.is_empty() {
            continue;
        }
        let size = intents.len() as u64;
        stats.entries.fetch_add(1, Ordering::Relaxed);
        stats.votes.fetch_add(size, Ordering::Relaxed);
        stats.largest_entry_votes.fetch_max(size, Ordering::Relaxed);
        // The votes' own spans live on their requests' tasks: these events say which entry
        // took each one, and the entry's log index joins it to the leader's and every
        // node's apply.
        let entry = tracing::debug_span!("entry", votes = size);
        if tracing::enabled!(tracing::Level::TRACE) {
            for intent in &intents {
                tracing::trace!(parent: &entry, poll_id = %intent.poll_id, voter_id = %intent.voter_id, "vote in entry");
            }
        }
        match submitter.submit(intents).instrument(entry.clone()).await {
            Ok((log_index, outcomes)) => {
                tracing::debug!(parent: &entry, log_index, "entry decided");
                assert_eq!(outcomes.len(), replies.len(), "one outcome per vote in entry {log_index}");
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(Decided { log_index, outcome }));
                }
            }
            Err(error) => {
                tracing::debug!(parent: &entry, %error, "entry not decided");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tally_raft::model::{PollId, VoteReceipt, VoterId};

    use super::*;

    /// Records the size of every group and holds the first one until released, so that
    /// the test controls what arrives while an entry is in flight.
    struct Recorder {
        sizes: Mutex<Vec<usize>>,
        gate: tokio::sync::Semaphore,
    }

    impl VoteSubmitter for Recorder {
        fn submit(&self, votes: Vec<VoteIntent>) -> BoxFuture<'_, Result<(u64, Vec<VoteOutcome>), ProposeError>> {
            Box::pin(async move {
                self.sizes.lock().unwrap().push(votes.len());
                let _permit = self.gate.acquire().await.unwrap();
                let outcomes = votes
                    .iter()
                    .map(|v| {
                        VoteOutcome::Recorded(VoteReceipt {
                            vote_id: v.voter_id.0.clone(),
                            poll_id: v.poll_id.clone(),
                            option_id: v.option_id.clone(),
                            recorded_at_ms: 0,
                            log_index: 7,
                            chain: Default::default(),
                        })
                    })
                    .collect();
                Ok((7, outcomes))
            })
        }
    }

    fn intent(voter: usize) -> VoteIntent {
        VoteIntent {
            poll_id: PollId("p".into()),
            voter_id: VoterId(voter.to_string()),
            option_id: "o1".into(),
            idempotency_key: voter.to_string(),
            attributes: Default::default(),
        }
    }

    #[tokio::test]
    async fn votes_arriving_during_an_entry_share_the_next_one() {
        let recorder = Arc::new(Recorder { sizes: Mutex::new(Vec::new()), gate: tokio::sync::Semaphore::new(0) });
        let proposer = Proposer::start(recorder.clone(), 10_000, std::time::Duration::from_secs(3600));
        let first = tokio::spawn({
            let p = proposer.clone();
            async move { p.propose(intent(0)).await }
        });
        // Wait until the first entry is in flight.
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while recorder.sizes.lock().unwrap().is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let rest: Vec<_> = (1..=100)
            .map(|i| {
                let p = proposer.clone();
                tokio::spawn(async move { p.propose(intent(i)).await })
            })
            .collect();
        while proposer.queued() < 100 {
            tokio::task::yield_now().await;
        }
        recorder.gate.add_permits(1000);
        assert_eq!(first.await.unwrap().unwrap().log_index, 7);
        for (i, handle) in rest.into_iter().enumerate() {
            let decided = handle.await.unwrap().unwrap();
            let VoteOutcome::Recorded(receipt) = decided.outcome else { panic!() };
            assert_eq!(receipt.vote_id, (i + 1).to_string(), "outcomes go back to their own callers");
        }
        assert_eq!(*recorder.sizes.lock().unwrap(), vec![1, 100]);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_not_grown() {
        let recorder = Arc::new(Recorder { sizes: Mutex::new(Vec::new()), gate: tokio::sync::Semaphore::new(0) });
        let proposer = Proposer::start(recorder.clone(), 4, std::time::Duration::from_secs(3600));
        let spawn = |i| {
            let p = proposer.clone();
            tokio::spawn(async move { p.propose(intent(i)).await })
        };
        let _in_flight = spawn(0);
        while recorder.sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let _queued: Vec<_> = (1..=4).map(spawn).collect();
        while proposer.queued() < 4 {
            tokio::task::yield_now().await;
        }
        assert_eq!(proposer.propose(intent(99)).await, Err(ProposeError::Overloaded));
    }

    #[tokio::test]
    async fn dropping_the_last_handle_ends_the_task_even_with_an_entry_in_flight() {
        let recorder = Arc::new(Recorder { sizes: Mutex::new(Vec::new()), gate: tokio::sync::Semaphore::new(0) });
        let proposer = Proposer::start(recorder.clone(), 16, std::time::Duration::from_secs(3600));
        let in_flight = proposer.enqueue(intent(0)).unwrap();
        while recorder.sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // Only the task holds the submitter now: it is gone exactly when the task is.
        let submitter = Arc::downgrade(&recorder);
        drop(recorder);
        let last = proposer.clone();
        drop(proposer);
        tokio::task::yield_now().await;
        assert!(submitter.upgrade().is_some(), "a handle is left, so the task runs on");
        drop(last);
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while submitter.upgrade().is_some() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the task ended with its last handle");
        assert_eq!(in_flight.decided().await, Err(ProposeError::ShuttingDown));
    }

    #[tokio::test(start_paused = true)]
    async fn a_vote_that_waited_too_long_is_refused_unproposed() {
        let recorder = Arc::new(Recorder { sizes: Mutex::new(Vec::new()), gate: tokio::sync::Semaphore::new(0) });
        let proposer = Proposer::start(recorder.clone(), 16, std::time::Duration::from_secs(5));
        let in_flight = proposer.enqueue(intent(0)).unwrap();
        while recorder.sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let stale = proposer.enqueue(intent(1)).unwrap();
        tokio::time::advance(std::time::Duration::from_secs(6)).await;
        recorder.gate.add_permits(10);
        assert!(in_flight.decided().await.is_ok());
        assert_eq!(stale.decided().await, Err(ProposeError::Overloaded));
        assert_eq!(*recorder.sizes.lock().unwrap(), vec![1], "the stale vote never reached the log");
    }
}
