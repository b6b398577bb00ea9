//! Finds, starts and retires poll actors.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ractor::Actor;
use tally_raft::model::PollId;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::poll_actor::{PollActor, PollArgs, PollHandle, Shared};
use crate::proposer::Proposer;
use crate::{PollSource, VoteError};

#[derive(Debug, Clone, Copy)]
pub struct RegistryConfig {
    /// Poll actors alive at once on this node.
    pub actors_max: usize,
    /// Messages queued per actor before callers are refused.
    pub mailbox_max: usize,
    /// An actor that saw no message for this long is stopped.
    pub idle_after: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self { actors_max: 10_000, mailbox_max: 10_000, idle_after: Duration::from_secs(120) }
    }
}

/// Milliseconds on tokio's clock (simulated under turmoil), since the registry started.
#[derive(Clone, Copy)]
pub(crate) struct IdleClock(tokio::time::Instant);

impl IdleClock {
    pub fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
}

/// Owns its poll actors and the task that retires idle ones: dropping the registry, or
/// [`PollRegistry::stop_all`], stops them all.
pub struct PollRegistry {
    actors: Mutex<BTreeMap<PollId, PollHandle>>,
    source: Arc<dyn PollSource>,
    proposer: Proposer,
    config: RegistryConfig,
    clock: IdleClock,
    /// The sweep, aborted when the registry stops or is dropped (a `JoinSet` aborts its
    /// tasks on drop); it holds the registry only weakly, so it never keeps it alive.
    sweeper: Mutex<JoinSet<()>>,
}

impl PollRegistry {
    pub fn start(source: Arc<dyn PollSource>, proposer: Proposer, config: RegistryConfig) -> Arc<Self> {
        Arc::new_cyclic(|registry| {
            let mut sweeper = JoinSet::new();
            sweeper.spawn(sweep(registry.clone(), config.idle_after / 2).in_current_span());
            Self {
                actors: Mutex::new(BTreeMap::new()),
                source,
                proposer,
                config,
                clock: IdleClock(tokio::time::Instant::now()),
                sweeper: Mutex::new(sweeper),
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PollId, PollHandle>> {
        self.actors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The actor of `poll_id`, started if it is not running.
    pub async fn handle(&self, poll_id: &PollId) -> Result<PollHandle, VoteError> {
        if let Some(handle) = self.lock().get(poll_id) {
            return Ok(handle.clone());
        }
        if self.lock().len() >= self.config.actors_max {
            return Err(VoteError::TooManyPolls);
        }
        let shared = Arc::new(Shared::default());
        shared.last_used_ms.store(self.clock.now_ms(), Ordering::Relaxed);
        let args = PollArgs { poll_id: poll_id.clone(), source: self.source.clone(), shared: shared.clone() };
        tracing::debug!(%poll_id, "starting the poll's actor");
        let (actor, _) = Actor::spawn(None, PollActor, args)
            .await
            .map_err(|_| VoteError::Propose(tally_raft::rpc::ProposeError::ShuttingDown))?;
        let handle = PollHandle {
            actor,
            shared,
            mailbox_max: self.config.mailbox_max,
            clock: self.clock,
            source: self.source.clone(),
            proposer: self.proposer.clone(),
        };
        let mut actors = self.lock();
        // Two callers may have raced to start the same poll: keep the first, stop ours.
        if let Some(existing) = actors.get(poll_id) {
            handle.actor.stop(None);
            return Ok(existing.clone());
        }
        actors.insert(poll_id.clone(), handle.clone());
        Ok(handle)
    }

    /// Called from the apply path: these polls changed. Never blocks.
    pub fn polls_changed<'a>(&self, polls: impl Iterator<Item = &'a PollId>) {
        let actors = self.lock();
        for poll_id in polls {
            if let Some(handle) = actors.get(poll_id) {
                handle.refresh();
            }
        }
    }

    /// Called when a snapshot replaced the whole state.
    pub fn everything_changed(&self) {
        for handle in self.lock().values() {
            handle.refresh();
        }
    }

    pub fn live_actors(&self) -> usize {
        self.lock().len()
    }

    /// Messages queued across all actors.
    pub fn mailbox_depth(&self) -> usize {
        self.lock().values().map(|h| h.shared.mailbox.load(Ordering::Relaxed)).sum()
    }

    fn stop_idle(&self) {
        let now = self.clock.now_ms();
        let idle_ms = self.config.idle_after.as_millis() as u64;
        self.lock().retain(|poll_id, handle| {
            let idle = now.saturating_sub(handle.shared.last_used_ms.load(Ordering::Relaxed)) >= idle_ms
                && handle.shared.mailbox.load(Ordering::Acquire) == 0
                && handle.shared.live.receiver_count() == 0;
            if idle {
                tracing::debug!(%poll_id, "retiring the poll's idle actor");
                handle.actor.stop(None);
            }
            !idle
        });
    }

    /// Stops every actor and the sweep, for a node that is stopping. An actor that a late
    /// request starts afterwards is stopped when the registry is dropped.
    pub fn stop_all(&self) {
        self.sweeper.lock().unwrap_or_else(|p| p.into_inner()).abort_all();
        for (_, handle) in std::mem::take(&mut *self.lock()) {
            handle.actor.stop(None);
        }
    }
}

impl Drop for PollRegistry {
    /// ractor actors outlive their `ActorRef`s: without this, a dropped registry's actors
    /// would run on, each holding the poll source.
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Sleeps first: it starts before the registry is built (`Arc::new_cyclic`), and a weak
/// reference that does not upgrade yet would end it at once.
async fn sweep(registry: Weak<PollRegistry>, period: Duration) {
    loop {
        tokio::time::sleep(period.max(Duration::from_millis(100))).await;
        let Some(registry) = registry.upgrade() else { return };
        registry.stop_idle();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use tally_raft::model::*;
    use tally_raft::rpc::ProposeError;
    use tally_raft::transport::BoxFuture;

    use super::*;
    use crate::{Decided, LiveResults, VoteSubmitter};

    /// A poll source whose counts the test sets, as apply would.
    struct Source {
        counts: Mutex<Vec<u64>>,
        index: AtomicU64,
    }

    fn poll() -> Poll {
        Poll {
            poll_id: PollId("p".into()),
            title: "t".into(),
            description: None,
            options: vec![PollOption { option_id: "o1".into(), text: "a".into() }],
            start_time_ms: 0,
            end_time_ms: None,
            settings: PollSettings::default(),
            owner: None,
            created_at_ms: 0,
            created_index: 1,
            closed_at_ms: None,
        }
    }

    impl PollSource for Source {
        fn results(&self, poll_id: &PollId) -> Option<LiveResults> {
            (poll_id.0 == "p").then(|| LiveResults {
                poll: poll(),
                counts: self.counts.lock().unwrap().clone(),
                applied_index: self.index.load(Ordering::SeqCst),
                as_of_ms: 0,
            })
        }

        fn final_outcome(&self, intent: &VoteIntent) -> Option<VoteOutcome> {
            (intent.voter_id.0 == "dup").then(|| {
                VoteOutcome::Rejected(VoteRejection::AlreadyVoted {
                    vote_id: "v1.0".into(),
                    option_id: "o1".into(),
                    voted_at_ms: 0,
                })
            })
        }
    }

    struct Refuse;

    impl VoteSubmitter for Refuse {
        fn submit(&self, _: Vec<VoteIntent>) -> BoxFuture<'_, Result<(u64, Vec<VoteOutcome>), ProposeError>> {
            Box::pin(async { Err(ProposeError::NoQuorum) })
        }
    }

    fn intent(voter: &str) -> VoteIntent {
        VoteIntent {
            poll_id: PollId("p".into()),
            voter_id: VoterId(voter.into()),
            option_id: "o1".into(),
            idempotency_key: "k".into(),
            attributes: Default::default(),
        }
    }

    #[tokio::test]
    async fn one_actor_per_poll_refreshed_by_apply_and_early_answers() {
        let source = Arc::new(Source { counts: Mutex::new(vec![0]), index: AtomicU64::new(1) });
        let registry = PollRegistry::start(
            source.clone(),
            Proposer::start(Arc::new(Refuse), 16, Duration::from_secs(60), Duration::ZERO),
            RegistryConfig::default(),
        );
        let p = PollId("p".into());
        let handle = registry.handle(&p).await.unwrap();
        registry.handle(&p).await.unwrap();
        assert_eq!(registry.live_actors(), 1);
        assert_eq!(handle.results().await.unwrap().unwrap().counts, vec![0]);

        *source.counts.lock().unwrap() = vec![5];
        source.index.store(9, Ordering::SeqCst);
        registry.polls_changed([p.clone()].iter());
        let live = handle.results().await.unwrap().unwrap();
        assert_eq!((live.counts, live.applied_index), (vec![5], 9));

        // A final answer comes from the actor; anything else goes to the log.
        let early = handle.vote(intent("dup")).await.unwrap();
        assert!(matches!(early.outcome, VoteOutcome::Rejected(VoteRejection::AlreadyVoted { .. })));
        assert_eq!(handle.vote(intent("new")).await, Err(VoteError::Propose(ProposeError::NoQuorum)));
        registry.stop_all();
        assert_eq!(registry.live_actors(), 0);
    }

    /// Answers every vote as recorded under its voter's name, one entry per submission.
    struct Echo(AtomicU64);

    impl VoteSubmitter for Echo {
        fn submit(&self, votes: Vec<VoteIntent>) -> BoxFuture<'_, Result<(u64, Vec<VoteOutcome>), ProposeError>> {
            let index = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            Box::pin(async move {
                let outcomes = votes
                    .into_iter()
                    .map(|v| {
                        VoteOutcome::Recorded(tally_raft::model::VoteReceipt {
                            vote_id: v.voter_id.0,
                            poll_id: v.poll_id,
                            option_id: v.option_id,
                            recorded_at_ms: 0,
                            log_index: index,
                            chain: Default::default(),
                        })
                    })
                    .collect();
                Ok((index, outcomes))
            })
        }
    }

    #[tokio::test]
    async fn a_batch_gets_one_reply_per_vote_in_order_across_entries() {
        let source = Arc::new(Source { counts: Mutex::new(vec![0]), index: AtomicU64::new(1) });
        let proposer =
            Proposer::start(Arc::new(Echo(AtomicU64::new(0))), 10_000, Duration::from_secs(60), Duration::ZERO);
        let registry = PollRegistry::start(source, proposer, RegistryConfig::default());
        let handle = registry.handle(&PollId("p".into())).await.unwrap();
        // More votes than one entry holds, with early answers among them.
        let voters: Vec<String> =
            (0..1_000).map(|i| if i % 97 == 0 { "dup".to_string() } else { format!("voter-{i}") }).collect();
        let replies = handle.vote_batch(voters.iter().map(|v| intent(v)).collect()).await;
        assert_eq!(replies.len(), voters.len());
        let mut entries = std::collections::BTreeSet::new();
        for (voter, reply) in voters.iter().zip(replies) {
            match reply.unwrap() {
                Decided { outcome: VoteOutcome::Recorded(receipt), log_index } => {
                    assert_eq!(&receipt.vote_id, voter, "each vote's own outcome, in order");
                    entries.insert(log_index);
                }
                Decided { outcome: VoteOutcome::Rejected(VoteRejection::AlreadyVoted { .. }), .. } => {
                    assert_eq!(voter, "dup", "only the early answers are answered early")
                }
                other => panic!("{voter}: {other:?}"),
            }
        }
        assert_eq!(entries.len(), 2, "989 votes to the log take two entries of at most 512");
        registry.stop_all();
    }

    #[tokio::test]
    async fn a_refused_batch_answers_every_vote() {
        let source = Arc::new(Source { counts: Mutex::new(vec![0]), index: AtomicU64::new(1) });
        let registry = PollRegistry::start(
            source,
            Proposer::start(Arc::new(Refuse), 10_000, Duration::from_secs(60), Duration::ZERO),
            RegistryConfig::default(),
        );
        let handle = registry.handle(&PollId("p".into())).await.unwrap();
        let replies = handle.vote_batch(vec![intent("a"), intent("dup"), intent("b")]).await;
        assert_eq!(replies[0], Err(VoteError::Propose(ProposeError::NoQuorum)));
        assert!(matches!(replies[1], Ok(Decided { outcome: VoteOutcome::Rejected(_), .. })));
        assert_eq!(replies[2], Err(VoteError::Propose(ProposeError::NoQuorum)));
        registry.stop_all();
    }

    /// Waits up to 10 s (of tokio's clock, paused or not) for `done`.
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        waited.await.unwrap_or_else(|_| panic!("{what}: not within 10 s"));
    }

    #[tokio::test]
    async fn stopping_ends_the_sweep_and_dropping_stops_the_actors() {
        let source = Arc::new(Source { counts: Mutex::new(vec![0]), index: AtomicU64::new(1) });
        let proposer = Proposer::start(Arc::new(Refuse), 16, Duration::from_secs(60), Duration::ZERO);
        let registry = PollRegistry::start(source.clone(), proposer, RegistryConfig::default());
        assert_eq!(Arc::weak_count(&registry), 1, "the sweep's reference");
        registry.stop_all();
        eventually("the sweep ends", || Arc::weak_count(&registry) == 0).await;

        let proposer = registry.proposer.clone();
        drop(registry);

        // A request that comes late starts an actor after the stop; the drop stops it.
        let registry = PollRegistry::start(source.clone(), proposer, RegistryConfig::default());
        drop(registry.handle(&PollId("p".into())).await.unwrap());
        assert!(Arc::strong_count(&source) > 2, "the actor and its handle hold the source");
        drop(registry);
        eventually("the actor stops", || Arc::strong_count(&source) == 1).await;
    }

    #[tokio::test(start_paused = true)]
    async fn idle_actors_are_stopped() {
        let source = Arc::new(Source { counts: Mutex::new(vec![0]), index: AtomicU64::new(1) });
        let config = RegistryConfig { idle_after: Duration::from_secs(10), ..RegistryConfig::default() };
        let registry = PollRegistry::start(
            source,
            Proposer::start(Arc::new(Refuse), 16, Duration::from_secs(60), Duration::ZERO),
            config,
        );
        registry.handle(&PollId("p".into())).await.unwrap();
        assert_eq!(registry.live_actors(), 1);
        tokio::time::sleep(Duration::from_secs(16)).await;
        assert_eq!(registry.live_actors(), 0);
    }
}
