//! Group commit: one node-wide task turns whatever votes arrived while the previous log
//! entry was in flight into the next entry.
//!
//! openraft 0.9 appends and flushes each `client_write` one after another, so one vote per
//! entry would cost one fsync per vote. Here a burst of N concurrent votes costs one entry
//! and one fsync per node, whichever polls they are for.
//!
//! An entry's cost hardly depends on its size (a forward, an AppendEntries round per
//! follower, three fsyncs, three applies), so when votes are evidently streaming in (the
//! previous entry held at least two) the proposer lingers a moment for twice as many
//! before it proposes: Kafka's `linger.ms`. Once the entries are as large as the stream,
//! it waits only for as many as the last held. A lone client never waits for it.
//!
//! On the leader, followers' forwarded entries join as whole groups
//! ([`Proposer::try_enqueue_group`]), so that one entry carries every node's votes; no
//! entry lingers for them.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// The most votes of a batch queued as one group. A quarter of an entry, so that a group
/// that does not fit the entry being filled leaves at most a quarter of it empty, and
/// single votes queued ahead of a batch share an entry with its first group.
pub const GROUP_VOTES_MAX: usize = VOTES_PER_ENTRY_MAX / 4;

/// One outcome per vote of a group, in order, all from one entry.
type GroupResult = Result<(u64, Vec<VoteOutcome>), ProposeError>;

/// Votes queued together: they go into one entry, in order, and get one reply. A batch
/// request queues its votes as a few groups, so that its 1,000 votes cost a few channel
/// messages and reply channels, not 1,000. A single vote travels inline, without a
/// `Vec` of one each way.
struct Queued {
    votes: Votes,
    since: Instant,
    /// A follower's votes, forwarded here ([`Proposer::try_enqueue_group`]): they join an
    /// entry, but no entry waits for them (see [`next_entry`]).
    forwarded: bool,
}

enum Votes {
    One(VoteIntent, oneshot::Sender<Result<Decided, ProposeError>>),
    Group(Vec<VoteIntent>, oneshot::Sender<GroupResult>),
}

impl Queued {
    fn len(&self) -> usize {
        match &self.votes {
            Votes::One(..) => 1,
            Votes::Group(intents, _) => intents.len(),
        }
    }

    /// Votes of this node's own clients: what an entry lingers for.
    fn local_len(&self) -> usize {
        if self.forwarded {
            0
        } else {
            self.len()
        }
    }

    /// Answers every vote with `error`; none is proposed.
    fn refuse(self, error: ProposeError) {
        let reply = match self.votes {
            Votes::One(_, reply) => Reply::One(reply),
            Votes::Group(intents, reply) => Reply::Group(reply, intents.len()),
        };
        reply.failed(error);
    }

    /// Moves the votes into `entry` and returns where their outcomes go.
    fn take_into(self, entry: &mut Vec<VoteIntent>) -> Reply {
        match self.votes {
            Votes::One(intent, reply) => {
                entry.push(intent);
                Reply::One(reply)
            }
            Votes::Group(intents, reply) => {
                let size = intents.len();
                entry.extend(intents);
                Reply::Group(reply, size)
            }
        }
    }
}

enum Reply {
    One(oneshot::Sender<Result<Decided, ProposeError>>),
    Group(oneshot::Sender<GroupResult>, usize),
}

impl Reply {
    /// Sends the next outcomes of the entry at `log_index`, as many as this reply's votes.
    /// A caller that went away is no one's concern here.
    fn decided(self, log_index: u64, outcomes: &mut impl Iterator<Item = VoteOutcome>) {
        match self {
            Reply::One(reply) => {
                let decided = outcomes.next().map(|outcome| Decided { log_index, outcome });
                let _ = reply.send(decided.ok_or_else(|| ProposeError::Unknown("no outcome for the vote".into())));
            }
            Reply::Group(reply, size) => {
                let _ = reply.send(Ok((log_index, outcomes.take(size).collect())));
            }
        }
    }

    fn failed(self, error: ProposeError) {
        match self {
            Reply::One(reply) => {
                let _ = reply.send(Err(error));
            }
            Reply::Group(reply, _) => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// A queued vote's decision, to come.
pub struct Pending(oneshot::Receiver<Result<Decided, ProposeError>>);

impl Pending {
    pub async fn decided(self) -> Result<Decided, ProposeError> {
        self.0.await.unwrap_or(Err(ProposeError::ShuttingDown))
    }
}

/// A queued group's decisions, to come: the entry's log index and one outcome per vote.
pub struct PendingGroup(oneshot::Receiver<GroupResult>);

impl PendingGroup {
    pub async fn decided(self) -> GroupResult {
        self.0.await.unwrap_or(Err(ProposeError::ShuttingDown))
    }
}

#[derive(Debug, Default)]
pub struct ProposerStats {
    pub entries: AtomicU64,
    pub votes: AtomicU64,
    pub largest_entry_votes: AtomicU64,
    /// Votes of this node's own clients in its last entry: whether this node has a stream
    /// of its own for followers' votes to join (see `node::peer::join_next_entry`).
    pub last_entry_local_votes: AtomicU64,
}

/// Handle to the node-wide proposer task. Cheap to clone; the task ends when the last
/// handle is dropped.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<Queued>,
    /// Votes queued and not yet taken into an entry: the queue's bound is in votes, not
    /// in groups, so a group of 500 weighs as much as 500 single votes.
    queued: Arc<AtomicUsize>,
    capacity: usize,
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
    ///
    /// `linger` is the longest an entry waits to fill once votes are streaming in (zero:
    /// never).
    pub fn start(
        submitter: Arc<dyn VoteSubmitter>,
        queue_capacity: usize,
        wait_max: Duration,
        linger: Duration,
    ) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let stats = Arc::new(ProposerStats::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let mut task = JoinSet::new();
        let timing = Timing { wait_max, linger };
        task.spawn(run(receiver, queued.clone(), submitter, stats.clone(), timing).in_current_span());
        Self { queue, queued, capacity: queue_capacity, stats, _task: Arc::new(task) }
    }

    pub fn stats(&self) -> &ProposerStats {
        &self.stats
    }

    /// Queues `intent` now, in call order, and returns where its decision will arrive.
    pub fn enqueue(&self, intent: VoteIntent) -> Result<Pending, ProposeError> {
        self.reserve(1)?;
        let (reply, decided) = oneshot::channel();
        self.send(Queued { votes: Votes::One(intent, reply), since: Instant::now(), forwarded: false })?;
        Ok(Pending(decided))
    }

    /// Queues `intents` now, in order, as groups of at most [`GROUP_VOTES_MAX`] (each goes
    /// into one entry whole), and returns each group's size and where its decisions will
    /// arrive. Once a group is refused, every later one is refused with it, unqueued, so
    /// that no vote of the batch reaches the log after an earlier one was turned away.
    pub fn enqueue_batch(&self, intents: Vec<VoteIntent>) -> Vec<(usize, Result<PendingGroup, ProposeError>)> {
        // One stamp for the batch: were a later group younger, it could outlive an earlier
        // one refused as stale.
        let since = Instant::now();
        let chunk = GROUP_VOTES_MAX.min(self.capacity).max(1);
        let mut groups = Vec::with_capacity(intents.len().div_ceil(chunk));
        let mut refused: Option<ProposeError> = None;
        let mut intents = intents.into_iter().peekable();
        while intents.peek().is_some() {
            let group: Vec<VoteIntent> = intents.by_ref().take(chunk).collect();
            let size = group.len();
            let queued = match &refused {
                Some(error) => Err(error.clone()),
                None => self.reserve(size).and_then(|()| {
                    let (reply, decided) = oneshot::channel();
                    self.send(Queued { votes: Votes::Group(group, reply), since, forwarded: false })
                        .map(|()| PendingGroup(decided))
                }),
            };
            if let Err(error) = &queued {
                refused.get_or_insert_with(|| error.clone());
            }
            groups.push((size, queued));
        }
        groups
    }

    /// Queues `intents` as one group, which goes into one entry whole, and returns where
    /// its decisions will arrive: a follower's entry, forwarded to this node. When the queue
    /// has no room for it (or the proposer stopped), or it is empty or larger than an
    /// entry, the votes come back unqueued for the caller to propose some other way.
    pub fn try_enqueue_group(&self, intents: Vec<VoteIntent>) -> Result<PendingGroup, Vec<VoteIntent>> {
        let size = intents.len();
        if size == 0 || size > VOTES_PER_ENTRY_MAX || self.reserve(size).is_err() {
            return Err(intents);
        }
        let (reply, decided) = oneshot::channel();
        let queued = Queued { votes: Votes::Group(intents, reply), since: Instant::now(), forwarded: true };
        self.send_or_return(queued).map(|()| PendingGroup(decided))
    }

    /// Counts `size` more votes as queued, if the bound allows.
    fn reserve(&self, size: usize) -> Result<(), ProposeError> {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued + size <= self.capacity).then_some(queued + size)
            })
            .map(drop)
            .map_err(|_| ProposeError::Overloaded)
    }

    /// Sends votes that [`Proposer::reserve`] counted.
    fn send(&self, queued: Queued) -> Result<(), ProposeError> {
        self.send_or_return(queued).map_err(|_| ProposeError::ShuttingDown)
    }

    /// [`Proposer::send`], handing the votes back uncounted if the task has stopped.
    fn send_or_return(&self, queued: Queued) -> Result<(), Vec<VoteIntent>> {
        let size = queued.len();
        self.queue.send(queued).map_err(|refused| {
            self.queued.fetch_sub(size, Ordering::AcqRel);
            match refused.0.votes {
                Votes::Group(intents, _) => intents,
                Votes::One(intent, _) => vec![intent],
            }
        })
    }

    /// Whether this node's last entry held votes of its own clients: a stream that
    /// followers' forwarded votes can join (see `node::peer::join_next_entry`).
    pub fn has_own_clients(&self) -> bool {
        self.stats.last_entry_local_votes.load(Ordering::Relaxed) > 0
    }

    /// Queues `intent` and waits for the state machine's decision.
    pub async fn propose(&self, intent: VoteIntent) -> Result<Decided, ProposeError> {
        self.enqueue(intent)?.decided().await
    }

    /// How many votes wait for the next entry.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// How long votes may wait in the proposer.
#[derive(Clone, Copy)]
struct Timing {
    /// A vote that waited this long for its entry is refused, unproposed.
    wait_max: Duration,
    /// The longest an entry lingers for more votes.
    linger: Duration,
}

/// While the entries stay as large as the stream, one entry in this many still asks for
/// twice its predecessor, in case more clients joined or the stream split in two.
const PROBE_EVERY: u32 = 8;

/// How many votes the next entry waits for, from the entries before it.
///
/// Clients in a closed loop fall into step with their node's entries (all of an entry's
/// voters get their answers together, and send their next votes together), so what is
/// queued the moment an entry is decided says little; the previous entry says how many
/// clients are in the stream. Asking for twice as many merges the halves of a stream that
/// split across two entries, and lets the entries grow. Once an entry waited out the
/// linger short of twice its predecessor, the stream is all in: asking for twice again
/// would make every entry wait the whole linger for votes that cannot come (each client
/// has one vote in the entry already), so the next entries ask only for as many as the
/// last held, and go the moment those are in. After a lone client's entry of one,
/// nothing waits.
#[derive(Debug, Default)]
struct Stream {
    previous: usize,
    /// The entries are as large as the stream: the last probe for twice fell short.
    saturated: bool,
    since_probe: u32,
    /// The entry being filled asks for twice its predecessor.
    probing: bool,
}

impl Stream {
    fn target(&mut self, linger: Duration) -> usize {
        self.probing = false;
        if self.previous < 2 || linger.is_zero() {
            return 0;
        }
        self.since_probe += 1;
        if self.saturated && self.since_probe < PROBE_EVERY {
            return self.previous;
        }
        self.since_probe = 0;
        self.probing = true;
        (self.previous * 2).min(VOTES_PER_ENTRY_MAX)
    }

    /// An entry of `size` votes was proposed; it `reached` what [`Stream::target`] asked
    /// for, or the deadline ended its wait.
    fn entry(&mut self, size: usize, reached: bool) {
        if self.probing {
            self.saturated = !reached;
        }
        self.previous = size;
    }
}

/// Takes the next groups that fit one entry, oldest first; a group that does not fit
/// waits in `carry` for the next entry. `None` once the queue is closed and empty.
///
/// What is queued is taken at once; then the entry waits up to `linger` until it holds
/// `target` votes of this node's own clients ([`Stream`] says how many). Says, with the
/// groups, whether the entry reached its target rather than its deadline.
///
/// Followers' forwarded groups ride along but count for nothing here: they arrive out of
/// step with this node's entries (each follower lingers for its own clients first), so an
/// entry that waited for them would add a second linger in series to every follower's
/// vote, and the stream of a leader without clients of its own would be nothing but
/// them. Such a leader's entries go at once, with whatever queued while the last was in
/// flight.
async fn next_entry(
    receiver: &mut mpsc::UnboundedReceiver<Queued>,
    carry: &mut Option<Queued>,
    queued: &AtomicUsize,
    target: usize,
    linger: Duration,
) -> Option<(Vec<Queued>, bool)> {
    let first = match carry.take() {
        Some(first) => first,
        None => receiver.recv().await?,
    };
    let mut size = first.len();
    let mut local = first.local_len();
    let mut groups = vec![first];
    let deadline = Instant::now() + linger;
    while size < VOTES_PER_ENTRY_MAX {
        let next = match receiver.try_recv() {
            Ok(next) => next,
            Err(_) => {
                if local >= target {
                    break;
                }
                match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(Some(next)) => next,
                    Ok(None) | Err(_) => break,
                }
            }
        };
        if size + next.len() > VOTES_PER_ENTRY_MAX {
            *carry = Some(next);
            break;
        }
        size += next.len();
        local += next.local_len();
        groups.push(next);
    }
    // The carried group still counts as queued until an entry takes it.
    queued.fetch_sub(size, Ordering::AcqRel);
    let full = carry.is_some() || size >= VOTES_PER_ENTRY_MAX;
    Some((groups, full || local >= target))
}

async fn run(
    mut receiver: mpsc::UnboundedReceiver<Queued>,
    queued: Arc<AtomicUsize>,
    submitter: Arc<dyn VoteSubmitter>,
    stats: Arc<ProposerStats>,
    timing: Timing,
) {
    let mut carry = None;
    let mut stream = Stream::default();
    loop {
        let target = stream.target(timing.linger);
        let Some((groups, reached)) = next_entry(&mut receiver, &mut carry, &queued, target, timing.linger).await
        else {
            break;
        };
        // Exactly the entry's size: the command lives on in the log's cache of recent
        // entries, where room for 512 votes under an entry of 10 would be held for nothing.
        let mut intents = Vec::with_capacity(groups.iter().map(Queued::len).sum());
        let local: usize = groups.iter().map(Queued::local_len).sum();
        let mut replies = Vec::with_capacity(groups.len());
        for group in groups {
            if group.since.elapsed() >= timing.wait_max {
                group.refuse(ProposeError::Overloaded);
            } else {
                replies.push(group.take_into(&mut intents));
            }
        }
        if intents.is_empty() {
            continue;
        }
        stream.entry(local, reached);
        let size = intents.len() as u64;
        stats.entries.fetch_add(1, Ordering::Relaxed);
        stats.votes.fetch_add(size, Ordering::Relaxed);
        stats.largest_entry_votes.fetch_max(size, Ordering::Relaxed);
        stats.last_entry_local_votes.store(local as u64, Ordering::Relaxed);
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
                assert_eq!(outcomes.len() as u64, size, "one outcome per vote in entry {log_index}");
                let mut outcomes = outcomes.into_iter();
                for reply in replies {
                    reply.decided(log_index, &mut outcomes);
                }
            }
            Err(error) => {
                tracing::debug!(parent: &entry, %error, "entry not decided");
                for reply in replies {
                    reply.failed(error.clone());
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

    /// A proposer over a fresh [`Recorder`] that holds every entry until released.
    fn held(queue_capacity: usize, wait_max: Duration) -> (Arc<Recorder>, Proposer) {
        held_lingering(queue_capacity, wait_max, Duration::ZERO)
    }

    fn held_lingering(queue_capacity: usize, wait_max: Duration, linger: Duration) -> (Arc<Recorder>, Proposer) {
        let recorder = Arc::new(Recorder { sizes: Mutex::new(Vec::new()), gate: tokio::sync::Semaphore::new(0) });
        let proposer = Proposer::start(recorder.clone(), queue_capacity, wait_max, linger);
        (recorder, proposer)
    }

    /// Returns once the first entry is in flight (within 10 s).
    async fn first_entry_in_flight(recorder: &Recorder) {
        let started = async {
            while recorder.sizes.lock().unwrap().is_empty() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), started).await.expect("an entry within 10 s");
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
        let (recorder, proposer) = held(10_000, Duration::from_secs(3600));
        let first = tokio::spawn({
            let p = proposer.clone();
            async move { p.propose(intent(0)).await }
        });
        first_entry_in_flight(&recorder).await;
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

    const LINGER: Duration = Duration::from_millis(5);

    /// Queues a vote for each voter, in order.
    fn queue_votes(proposer: &Proposer, voters: std::ops::Range<usize>) -> Vec<Pending> {
        voters.map(|i| proposer.enqueue(intent(i)).unwrap()).collect()
    }

    /// Waits for every vote's decision, each of which must be a success.
    async fn all_decided(pending: impl IntoIterator<Item = Pending>) {
        for pending in pending {
            pending.decided().await.unwrap();
        }
    }

    /// Returns once `n` entries have been submitted, looking every (paused) millisecond:
    /// sleeping, not yielding, lets the paused clock move on to a lingering deadline.
    async fn entries_submitted(recorder: &Recorder, n: usize) {
        while recorder.sizes.lock().unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_vote_is_proposed_without_lingering() {
        let (recorder, proposer) = held_lingering(10_000, Duration::from_secs(3600), LINGER);
        recorder.gate.add_permits(1000);
        for voter in 0..3 {
            let before = Instant::now();
            proposer.propose(intent(voter)).await.unwrap();
            assert_eq!(before.elapsed(), Duration::ZERO, "vote {voter} waited for company");
        }
        assert_eq!(*recorder.sizes.lock().unwrap(), vec![1, 1, 1]);
    }

    /// A lingering proposer with an entry of two votes held in flight, and their replies.
    async fn entry_of_two_in_flight() -> (Arc<Recorder>, Proposer, Vec<Pending>) {
        let (recorder, proposer) = held_lingering(10_000, Duration::from_secs(3600), LINGER);
        let first = queue_votes(&proposer, 0..2);
        first_entry_in_flight(&recorder).await;
        (recorder, proposer, first)
    }

    #[tokio::test(start_paused = true)]
    async fn streaming_votes_linger_for_twice_the_previous_entry() {
        let (recorder, proposer, first) = entry_of_two_in_flight().await;
        // Three arrive while an entry of two is in flight: the next entry takes them, then
        // waits for a fourth, which comes within the linger.
        let during = queue_votes(&proposer, 2..5);
        let released = Instant::now();
        recorder.gate.add_permits(1000);
        tokio::time::sleep(LINGER / 2).await;
        assert_eq!(recorder.sizes.lock().unwrap().len(), 1, "the second entry is lingering");
        let later = queue_votes(&proposer, 5..6);
        entries_submitted(&recorder, 2).await;
        assert!(released.elapsed() < LINGER, "a full entry goes before its deadline");
        all_decided(first.into_iter().chain(during).chain(later)).await;
        assert_eq!(*recorder.sizes.lock().unwrap(), vec![2, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_linger_ends_at_its_deadline_with_what_came() {
        let (recorder, proposer, first) = entry_of_two_in_flight().await;
        let during = queue_votes(&proposer, 2..3);
        let released = Instant::now();
        recorder.gate.add_permits(1000);
        entries_submitted(&recorder, 2).await;
        let waited = released.elapsed();
        assert!(waited >= LINGER && waited <= LINGER + Duration::from_millis(1), "lingered {waited:?}");
        all_decided(first.into_iter().chain(during)).await;
        assert_eq!(*recorder.sizes.lock().unwrap(), vec![2, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn once_the_stream_is_all_in_an_entry_goes_when_it_holds_as_many_as_the_last() {
        let (recorder, proposer, first) = entry_of_two_in_flight().await;
        let second = queue_votes(&proposer, 2..4);
        recorder.gate.add_permits(1000);
        // The second entry asks for four and waits out the linger with two.
        entries_submitted(&recorder, 2).await;
        all_decided(first.into_iter().chain(second)).await;
        let started = Instant::now();
        let third = queue_votes(&proposer, 4..5);
        tokio::time::sleep(LINGER / 2).await;
        assert_eq!(recorder.sizes.lock().unwrap().len(), 2, "one vote of a stream of two waits for the other");
        let fourth = queue_votes(&proposer, 5..6);
        entries_submitted(&recorder, 3).await;
        assert!(started.elapsed() < LINGER, "the entry went when the stream was in, not at its deadline");
        all_decided(third.into_iter().chain(fourth)).await;
        assert_eq!(*recorder.sizes.lock().unwrap(), vec![2, 2, 2]);
    }

    #[test]
    fn a_full_stream_is_asked_for_twice_only_once_in_a_while() {
        let linger = LINGER;
        let mut stream = Stream::default();
        assert_eq!(stream.target(linger), 0, "nothing waits for a first vote");
        stream.entry(10, true);
        assert_eq!(stream.target(linger), 20);
        stream.entry(20, true);
        assert_eq!(stream.target(linger), 40, "still growing: ask for twice again");
        stream.entry(25, false);
        let targets: Vec<usize> = (0..PROBE_EVERY)
            .map(|_| {
                let target = stream.target(linger);
                stream.entry(25, true);
                target
            })
            .collect();
        let mut expected = vec![25; PROBE_EVERY as usize - 1];
        expected.push(50);
        assert_eq!(targets, expected, "as many as the last, and twice once in {PROBE_EVERY}");
        assert_eq!(stream.target(linger), 50, "a probe that was reached means the stream grew");
        stream.entry(1, false);
        assert_eq!(stream.target(linger), 0, "a lone client never waits");
        assert_eq!(stream.target(Duration::ZERO), 0);
    }

    fn group(from: usize, size: usize) -> Vec<VoteIntent> {
        (from..from + size).map(intent).collect()
    }

    #[tokio::test]
    async fn groups_stay_whole_and_one_that_does_not_fit_waits_for_the_next_entry() {
        let (recorder, proposer) = held(10_000, Duration::from_secs(3600));
        let first = proposer.enqueue(intent(0)).unwrap();
        first_entry_in_flight(&recorder).await;
        let singles: Vec<_> = (1..=3).map(|i| proposer.enqueue(intent(i)).unwrap()).collect();
        let groups = proposer.enqueue_batch(group(4, 700));
        let sizes: Vec<usize> = groups.iter().map(|(size, _)| *size).collect();
        assert_eq!(sizes, vec![128, 128, 128, 128, 128, 60]);
        assert_eq!(proposer.queued(), 703, "the bound counts votes, not groups");
        recorder.gate.add_permits(1000);
        first.decided().await.unwrap();
        let mut voter = 1;
        let mut check = |outcome: VoteOutcome| {
            let VoteOutcome::Recorded(receipt) = outcome else { panic!() };
            assert_eq!(receipt.vote_id, voter.to_string(), "each caller gets its own votes' outcomes, in order");
            voter += 1;
        };
        for single in singles {
            check(single.decided().await.unwrap().outcome);
        }
        for (_, pending) in groups {
            pending.unwrap().decided().await.unwrap().1.into_iter().for_each(&mut check);
        }
        assert_eq!(voter, 704);
        // 3 singles and three groups make 387; a fourth group would pass 512, so it waits.
        assert_eq!(*recorder.sizes.lock().unwrap(), vec![1, 387, 316]);
        assert_eq!(proposer.queued(), 0);
    }

    #[tokio::test]
    async fn after_a_refused_group_the_rest_of_the_batch_is_refused_unqueued() {
        let (recorder, proposer) = held(500, Duration::from_secs(3600));
        let _in_flight = proposer.enqueue(intent(0)).unwrap();
        first_entry_in_flight(&recorder).await;
        assert!(proposer.enqueue_batch(group(1, 300)).iter().all(|(_, queued)| queued.is_ok()));
        let second: Vec<_> = proposer.enqueue_batch(group(301, 300)).into_iter().map(|(_, q)| q.is_ok()).collect();
        // 128 more fit (428); the next 128 do not, and the last 44 would but must not
        // overtake them.
        assert_eq!(second, vec![true, false, false]);
        assert_eq!(proposer.queued(), 428, "refused groups leave no votes counted");
        assert!(proposer.enqueue(intent(601)).is_ok(), "what fits the bound is still taken");
    }

    #[tokio::test]
    async fn a_forwarded_group_shares_the_next_entry_whole_or_comes_back_unqueued() {
        let (recorder, proposer) = held(100, Duration::from_secs(3600));
        let _in_flight = proposer.enqueue(intent(0)).unwrap();
        first_entry_in_flight(&recorder).await;
        let mine = proposer.enqueue(intent(1)).unwrap();
        let forwarded = proposer.try_enqueue_group(group(2, 40)).map_err(|v| v.len()).expect("room for 40");
        // No room for 60 more (41 queued of 100): all of them come back, none counted.
        let refused = proposer.try_enqueue_group(group(42, 60)).err().expect("no room");
        assert_eq!((refused.len(), proposer.queued()), (60, 41));
        assert_eq!(proposer.try_enqueue_group(Vec::new()).err(), Some(Vec::new()), "an empty group is no group");
        recorder.gate.add_permits(2);
        let (index, outcomes) = forwarded.decided().await.unwrap();
        assert_eq!(mine.decided().await.unwrap().log_index, index, "one entry for both");
        let voters: Vec<_> = outcomes
            .iter()
            .map(|o| match o {
                VoteOutcome::Recorded(receipt) => receipt.vote_id.clone(),
                other => panic!("recorded, not {other:?}"),
            })
            .collect();
        assert_eq!(voters, (2..42).map(|v| v.to_string()).collect::<Vec<_>>(), "in order");
        assert_eq!(*recorder.sizes.lock().unwrap(), vec![1, 41]);
    }

    #[tokio::test]
    async fn a_bound_below_a_group_makes_smaller_groups() {
        let (recorder, proposer) = held(50, Duration::from_secs(3600));
        let _in_flight = proposer.enqueue(intent(0)).unwrap();
        first_entry_in_flight(&recorder).await;
        let queued: Vec<_> = proposer.enqueue_batch(group(1, 100)).into_iter().map(|(s, q)| (s, q.is_ok())).collect();
        assert_eq!(queued, vec![(50, true), (50, false)]);
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_not_grown() {
        let (recorder, proposer) = held(4, Duration::from_secs(3600));
        let spawn = |i| {
            let p = proposer.clone();
            tokio::spawn(async move { p.propose(intent(i)).await })
        };
        let _in_flight = spawn(0);
        first_entry_in_flight(&recorder).await;
        let _queued: Vec<_> = (1..=4).map(spawn).collect();
        while proposer.queued() < 4 {
            tokio::task::yield_now().await;
        }
        assert_eq!(proposer.propose(intent(99)).await, Err(ProposeError::Overloaded));
    }

    #[tokio::test]
    async fn dropping_the_last_handle_ends_the_task_even_with_an_entry_in_flight() {
        let (recorder, proposer) = held(16, Duration::from_secs(3600));
        let in_flight = proposer.enqueue(intent(0)).unwrap();
        first_entry_in_flight(&recorder).await;
        // Only the task holds the submitter now: it is gone exactly when the task is.
        let submitter = Arc::downgrade(&recorder);
        drop(recorder);
        let last = proposer.clone();
        drop(proposer);
        tokio::task::yield_now().await;
        assert!(submitter.upgrade().is_some(), "a handle is left, so the task runs on");
        drop(last);
        tokio::time::timeout(Duration::from_secs(10), async {
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
        let (recorder, proposer) = held(16, Duration::from_secs(5));
        let in_flight = proposer.enqueue(intent(0)).unwrap();
        first_entry_in_flight(&recorder).await;
        let stale = proposer.enqueue(intent(1)).unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        recorder.gate.add_permits(10);
        assert!(in_flight.decided().await.is_ok());
        assert_eq!(stale.decided().await, Err(ProposeError::Overloaded));
        assert_eq!(*recorder.sizes.lock().unwrap(), vec![1], "the stale vote never reached the log");
    }
}
