//! The Raft side of a node: proposing commands (locally on the leader, forwarded from a
//! follower), read indexes for linearizable reads, membership changes.
//!
//! What a non-leader does is spelled out here: it forwards the command to the leader
//! itself. It retries only where that is safe and only within the write timeout: every
//! command is idempotent in the state machine (votes carry an idempotency key, polls a
//! fresh id, updates are absolute), so a retry after an unknown outcome cannot double
//! anything.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use tally_raft::log_store::LogStats;
use tally_raft::model::{Command, Request};
use tally_raft::network::Network;
use tally_raft::rpc::{AdminError, Committed, ProposeError};
use tally_raft::state_machine::SmShared;
use tally_raft::transport::TransportError;
use tally_raft::typ;
use tally_raft::NodeId;
use tokio::time::Instant;

use crate::clock::Clock;

/// Attempts at one command. The write timeout is the real bound: with pauses growing to
/// `PROPOSE_PAUSE_MAX`, this many attempts outlast the default 5 s, so a follower whose
/// leader hint is stale through an election keeps trying until the window closes rather
/// than giving up (as 504) after a second and a half.
const PROPOSE_ATTEMPTS_MAX: u32 = 24;
/// Longest pause between attempts: about one election timeout.
const PROPOSE_PAUSE_MAX: Duration = Duration::from_millis(400);
/// How long a node that just committed a write waits for its own state machine to catch
/// up before answering, so that a client reads its own write from the node it wrote to.
const LOCAL_APPLY_WAIT: Duration = Duration::from_secs(2);
/// Bound on a membership change, learner catch-up included.
const MEMBERSHIP_CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The attempts of one request through whichever node leads: at most
/// `PROPOSE_ATTEMPTS_MAX`, all within one deadline, with pauses of 25 ms doubling to
/// `PROPOSE_PAUSE_MAX` between them (about what an election takes).
struct Attempts {
    deadline: Instant,
    made: u32,
}

impl Attempts {
    fn within(timeout: Duration) -> Self {
        Attempts { deadline: Instant::now() + timeout, made: 0 }
    }

    /// The time left for the next attempt; `None` once the attempts or the time ran out.
    fn next(&mut self) -> Option<Duration> {
        let remaining = self.remaining();
        if self.made >= PROPOSE_ATTEMPTS_MAX || remaining.is_zero() {
            return None;
        }
        self.made += 1;
        Some(remaining)
    }

    fn made(&self) -> u32 {
        self.made
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Before the next attempt; never past the deadline.
    async fn pause(&self) {
        let pause = Duration::from_millis(25 << self.made.saturating_sub(1).min(4)).min(PROPOSE_PAUSE_MAX);
        tokio::time::sleep(pause.min(self.remaining())).await;
    }
}

pub struct RaftNode {
    pub id: NodeId,
    pub raft: typ::Raft,
    pub network: Network,
    pub sm: Arc<SmShared>,
    pub log_stats: Arc<LogStats>,
    pub clock: Arc<dyn Clock>,
    pub write_timeout: Duration,
    /// Votes this node sent on to a leader, retries included.
    pub votes_forwarded: AtomicU64,
    /// Commands this node has sent to a leader and not yet heard back about. While one is
    /// out, a follower's forwarded entry does not join this node's proposer (see
    /// `peer::join_next_entry`): that proposer may be waiting on the very node that sent it.
    pub forwards_in_flight: AtomicUsize,
    /// Where [`Request::entropy`] comes from when this node leads (seeded, so that a
    /// simulation replays).
    pub entropy: std::sync::Mutex<rand::rngs::StdRng>,
    /// A storage failure seen outside openraft (a full disk, which can wedge sled's
    /// writes rather than fail them): set once, never cleared but by a restart.
    pub storage_failed: std::sync::OnceLock<String>,
}

impl RaftNode {
    pub fn metrics(&self) -> typ::RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    /// The leader's id and address, if this node knows one.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    /// A member's address, as this node's membership knows it.
    pub fn member_addr(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.membership_config.membership().get_node(&id).map(|node| node.addr.clone())
    }

    /// The greatest index this node knows committed, as openraft last told the log store.
    pub fn committed_index(&self) -> u64 {
        self.log_stats.committed_index.load(Ordering::Relaxed)
    }

    /// Why this node's Raft core stopped, if it stopped on its own: a storage error (a
    /// failed write or fsync, a full disk) or a panic. openraft stops rather than risk
    /// acknowledging what is not on disk; from then on the node can neither take writes
    /// nor apply, so it says so at once instead of letting requests wait out a timeout.
    pub fn failure(&self) -> Option<String> {
        match &self.raft.metrics().borrow().running_state {
            Err(openraft::error::Fatal::Stopped) | Ok(()) => self.storage_failed.get().cloned(),
            Err(fatal) => Some(fatal.to_string()),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Proposes `command` through whichever node leads, retrying safely until the write
    /// timeout. Returns once this node has applied the entry (or waited long enough).
    ///
    /// The final error says "not recorded" (anything but `Unknown`) only if no attempt
    /// could have put the command in the log.
    #[tracing::instrument(level = "debug", skip_all, fields(command = command.kind(), votes = command.votes().len()))]
    pub async fn propose(&self, command: Command) -> Result<Committed, ProposeError> {
        // Each attempt shares it: an entry of a thousand votes is not copied per attempt.
        let command = Arc::new(command);
        let mut attempts = Attempts::within(self.write_timeout);
        let mut last_error = ProposeError::NotLeader { leader: None };
        let mut maybe_in_log = false;
        while let Some(remaining) = attempts.next() {
            if let Some(reason) = self.failure() {
                last_error = ProposeError::StorageFailed(reason);
                break;
            }
            let (result, sent) = match self.leader() {
                Some((leader, _)) if leader == self.id => (self.propose_local(command.clone(), remaining).await, true),
                Some((_, addr)) => self.forward(&addr, command.clone(), remaining).await,
                None => (Err(ProposeError::NotLeader { leader: None }), false),
            };
            match result {
                Ok(committed) => {
                    self.wait_applied(committed.log_index, LOCAL_APPLY_WAIT).await;
                    return Ok(committed);
                }
                Err(error @ (ProposeError::NotLeader { .. } | ProposeError::NoQuorum | ProposeError::Unknown(_))) => {
                    // openraft 0.9 also answers ForwardToLeader for an entry it appended and
                    // then truncated; in clusters of five or more such an entry can still be
                    // committed by another leader. So any answer from a proposer counts.
                    maybe_in_log |= sent;
                    tracing::debug!(attempt = attempts.made(), %error, "propose: retrying");
                    last_error = error;
                }
                Err(other) => {
                    maybe_in_log |= sent && matches!(other, ProposeError::ShuttingDown);
                    last_error = other;
                    break;
                }
            }
            attempts.pause().await;
        }
        if maybe_in_log {
            return Err(ProposeError::Unknown(format!("no definite answer within the write timeout ({last_error})")));
        }
        Err(last_error)
    }

    /// Proposes on this node, which must be the leader. Used for the node's own writes and
    /// for commands that followers forward and that do not join this node's proposer (those
    /// are never forwarded again, so never a loop).
    ///
    /// The `log_index` it logs is the key that joins a vote's spans across nodes (the
    /// follower's `entry` and `forward`, every node's `apply`).
    #[tracing::instrument(
        level = "debug", skip_all,
        fields(command = command.kind(), votes = command.votes().len()),
    )]
    pub async fn propose_local(&self, command: Arc<Command>, timeout: Duration) -> Result<Committed, ProposeError> {
        if let Some(reason) = self.failure() {
            return Err(ProposeError::StorageFailed(reason));
        }
        let entropy = rand::Rng::gen(&mut *self.entropy.lock().unwrap_or_else(|p| p.into_inner()));
        let request = Request { timestamp_ms: self.clock.now_ms(), entropy, command };
        #[cfg(feature = "bug-injection")]
        if tally_raft::bugs::ack_before_commit() {
            return self.acknowledge_before_commit(request).await;
        }
        match tokio::time::timeout(timeout, self.raft.client_write(request)).await {
            Err(_) => Err(ProposeError::Unknown("not committed within the write timeout".into())),
            Ok(Ok(response)) => {
                tracing::debug!(log_index = response.log_id.index, "committed");
                Ok(Committed { log_index: response.log_id.index, response: response.data })
            }
            // Returned before the entry was appended, or after it was truncated away: the
            // command is not in the log and never will be.
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                Err(ProposeError::NotLeader { leader: forward.leader_id })
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                Err(ProposeError::Unknown(e.to_string()))
            }
            // Raft stopped with the request pending: it may have been appended and
            // replicated, and another leader may commit it.
            Ok(Err(RaftError::Fatal(fatal))) => Err(ProposeError::Unknown(format!("raft stopped: {fatal}"))),
        }
    }

    /// Forwards to the leader. The flag says whether the leader may have seen it.
    #[tracing::instrument(level = "debug", skip_all, fields(leader = addr))]
    async fn forward(
        &self,
        addr: &str,
        command: Arc<Command>,
        timeout: Duration,
    ) -> (Result<Committed, ProposeError>, bool) {
        if let Command::CastVotes(votes) = &*command {
            self.votes_forwarded.fetch_add(votes.len() as u64, Ordering::Relaxed);
        }
        let _in_flight = InFlight::start(&self.forwards_in_flight);
        match self.network.forward(addr, command, timeout).await {
            // A leader whose storage failed refused before proposing: nothing is in the
            // log, and another node leads once it stops sending heartbeats.
            Ok(Err(ProposeError::StorageFailed(reason))) => {
                tracing::debug!(%reason, "propose: the leader's storage failed");
                (Err(ProposeError::NotLeader { leader: None }), false)
            }
            Ok(reply) => {
                match &reply {
                    Ok(committed) => tracing::debug!(log_index = committed.log_index, "the leader committed it"),
                    Err(error) => tracing::debug!(%error, "the leader did not commit it"),
                }
                (reply, true)
            }
            // Could not connect: the leader never saw the command.
            Err(TransportError::Unreachable { .. }) => (Err(ProposeError::NotLeader { leader: None }), false),
            Err(error) => (Err(ProposeError::Unknown(error.to_string())), true),
        }
    }

    /// The leader's read index, after confirming leadership with a quorum. Leader only.
    pub async fn read_index_local(&self, timeout: Duration) -> Result<u64, ProposeError> {
        match tokio::time::timeout(timeout, self.raft.ensure_linearizable()).await {
            Err(_) => Err(ProposeError::NoQuorum),
            Ok(Ok(log_id)) => Ok(log_id.map_or(0, |l| l.index)),
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(ProposeError::NotLeader { leader: f.leader_id })
            }
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::QuorumNotEnough(_)))) => {
                Err(ProposeError::NoQuorum)
            }
            Ok(Err(RaftError::Fatal(_))) => Err(ProposeError::ShuttingDown),
        }
    }

    /// Waits until this node has applied everything committed before the call began, as
    /// confirmed by the leader: after it, a local read is linearizable.
    pub async fn linearizable_barrier(&self) -> Result<u64, ProposeError> {
        let mut attempts = Attempts::within(self.write_timeout);
        let mut last_error = ProposeError::NotLeader { leader: None };
        while let Some(remaining) = attempts.next() {
            if let Some(reason) = self.failure() {
                // This node cannot apply any more: a linearizable read here cannot be had.
                return Err(ProposeError::StorageFailed(reason));
            }
            let result = match self.leader() {
                Some((leader, _)) if leader == self.id => self.read_index_local(remaining).await,
                Some((_, addr)) => match self.network.read_index(&addr, remaining).await {
                    // A leader whose core stopped is no leader: retry until another leads.
                    Ok(Err(ProposeError::ShuttingDown | ProposeError::StorageFailed(_))) => {
                        Err(ProposeError::NotLeader { leader: None })
                    }
                    Ok(reply) => reply,
                    Err(e) => Err(ProposeError::Unknown(e.to_string())),
                },
                None => Err(ProposeError::NotLeader { leader: None }),
            };
            match result {
                Ok(index) => {
                    return if self.wait_applied(index, attempts.remaining()).await {
                        Ok(index)
                    } else {
                        Err(ProposeError::Unknown(format!("index {index} not applied in time")))
                    };
                }
                Err(ProposeError::ShuttingDown) => return Err(ProposeError::ShuttingDown),
                Err(error) => last_error = error,
            }
            attempts.pause().await;
        }
        Err(last_error)
    }

    /// Whether this node applied `index` within `timeout`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        if self.sm.applied_index() >= index {
            return true;
        }
        self.raft.wait(Some(timeout)).applied_index_at_least(Some(index), "wait_applied").await.is_ok()
    }

    /// Forms a cluster from a pristine node. `NotAllowed` (already initialized) is fine.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> Result<bool, AdminError> {
        let nodes: BTreeMap<NodeId, BasicNode> =
            members.into_iter().map(|(id, addr)| (id, BasicNode { addr })).collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(AdminError::Refused(e.to_string())),
        }
    }

    /// Adds a node as a learner, waits for it to catch up, then (for a voter) promotes it.
    /// Leader only; never retried, so an operator sees every failure.
    pub async fn add_member(&self, id: NodeId, addr: String, voter: bool) -> Result<(), AdminError> {
        // openraft waits without end for a learner to catch up; a wrong address never does.
        let added =
            tokio::time::timeout(MEMBERSHIP_CHANGE_TIMEOUT, self.raft.add_learner(id, BasicNode { addr }, true));
        added
            .await
            .map_err(|_| AdminError::CatchUpTimeout { node_id: id, waited_secs: MEMBERSHIP_CHANGE_TIMEOUT.as_secs() })?
            .map_err(|e| AdminError::Refused(e.to_string()))?;
        if voter {
            let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
            self.change_membership(change).await?;
        }
        Ok(())
    }

    async fn change_membership(&self, change: ChangeMembers<NodeId, BasicNode>) -> Result<(), AdminError> {
        match tokio::time::timeout(MEMBERSHIP_CHANGE_TIMEOUT, self.raft.change_membership(change, false)).await {
            Err(_) => Err(AdminError::CommitTimeout { waited_secs: MEMBERSHIP_CHANGE_TIMEOUT.as_secs() }),
            Ok(result) => result.map(|_| ()).map_err(|e| AdminError::Refused(e.to_string())),
        }
    }

    pub async fn remove_member(&self, id: NodeId) -> Result<(), AdminError> {
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let is_voter = membership.voter_ids().any(|v| v == id);
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else if membership.get_node(&id).is_some() {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            return Err(AdminError::NotMember(id));
        };
        self.change_membership(change).await
    }
}

impl RaftNode {
    /// Runs a membership change on the leader, forwarding it there once if need be.
    pub async fn admin(&self, request: tally_raft::rpc::AdminRequest) -> tally_raft::rpc::AdminReply {
        use tally_raft::rpc::AdminRequest;
        match self.leader() {
            Some((leader, _)) if leader == self.id => match request {
                AdminRequest::AddMember { node_id, addr, voter } => self.add_member(node_id, addr, voter).await,
                AdminRequest::RemoveMember { node_id } => self.remove_member(node_id).await,
            },
            Some((_, addr)) => {
                // Adding a learner waits for it to catch up, which can take a while.
                let timeout = MEMBERSHIP_CHANGE_TIMEOUT + self.write_timeout;
                match self.network.admin(&addr, &request, timeout).await {
                    Ok(reply) => reply,
                    Err(e) => Err(AdminError::Forward(e.to_string())),
                }
            }
            None => Err(AdminError::NoLeader),
        }
    }
}

/// One forward counted out until dropped, however the call ends (a dropped future too).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(feature = "bug-injection")]
impl RaftNode {
    /// The injected bug: answer votes as recorded once proposed, before any commit, with
    /// the receipts the entry would get if it were committed at the next index.
    async fn acknowledge_before_commit(&self, request: Request) -> Result<Committed, ProposeError> {
        use tally_raft::model::{Response, VoteOutcome, VoteReceipt};
        let Command::CastVotes(votes) = &*request.command else {
            return self.propose_local_committed(request).await;
        };
        let log_index = self.metrics().last_log_index.unwrap_or(0) + 1;
        let outcomes = votes
            .iter()
            .enumerate()
            .map(|(slot, vote)| {
                VoteOutcome::Recorded(VoteReceipt {
                    vote_id: tally_raft::sm::vote_id(&request.entropy, log_index, slot),
                    poll_id: vote.poll_id.clone(),
                    option_id: vote.option_id.clone(),
                    recorded_at_ms: request.timestamp_ms,
                    log_index,
                    chain: Default::default(),
                })
            })
            .collect();
        self.raft.client_write_ff(request).await.map_err(|_| ProposeError::ShuttingDown)?;
        Ok(Committed { log_index, response: Response::Votes(outcomes) })
    }

    async fn propose_local_committed(&self, request: Request) -> Result<Committed, ProposeError> {
        match self.raft.client_write(request).await {
            Ok(response) => Ok(Committed { log_index: response.log_id.index, response: response.data }),
            Err(e) => Err(ProposeError::Unknown(e.to_string())),
        }
    }
}
