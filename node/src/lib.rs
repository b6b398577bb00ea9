//! The Tally node: wiring of the Raft layer, the poll actors and the HTTP API.
//!
//! [`Node::start`] takes everything that differs between production and simulation (the
//! database, the peer transport, the clock, the seed of the id generator) and [`serve`]
//! takes any axum listener, so the simulation runs this same code over turmoil.

pub mod api;
pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod disk;
pub mod metrics;
pub mod offline;
pub mod peer;
pub mod ratelimit;
pub mod schedule;
pub mod server;
pub mod source;
pub mod tls;
pub mod web;

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tally_actors::{Decided, PollRegistry, Proposer, RegistryConfig};
use tally_raft::log_store::LogStore;
use tally_raft::model::{Poll, PollId, VoteIntent, VoteOutcome};
use tally_raft::network::Network;
use tally_raft::state_machine::StateMachineStore;
use tally_raft::transport::{HyperTransport, PeerTransport};
use tally_storage::Database;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::api::error::{ApiError, ApiResult};
use crate::clock::Clock;
use crate::cluster::RaftNode;
use crate::config::Config;
use crate::metrics::{Metrics, TimedTransport};
use crate::source::{ActorNotifier, RaftSubmitter, StateSource};

/// What a node needs from its environment.
pub struct NodeOptions {
    pub config: Config,
    pub db: Arc<dyn Database>,
    pub transport: Arc<dyn PeerTransport>,
    pub clock: Arc<dyn Clock>,
    /// Seeds the generator of poll ids and request keys (fixed in simulation).
    pub seed: u64,
    /// TLS on the port (`--cert-file`); `None` serves plain HTTP, as the simulation does.
    pub tls: Option<Arc<tls::ServerTls>>,
}

/// Shared by every handler, in groups, so that a function can take the one it uses.
pub struct App {
    /// Raft, the applied state, the clock: what every request reads or proposes through.
    pub node: Arc<RaftNode>,
    pub votes: Votes,
    pub streams: Streams,
    pub access: Access,
    pub limits: Limits,
    pub metrics: Metrics,
    pub db: Arc<dyn Database>,
    pub advertise_addr: String,
    rng: Mutex<StdRng>,
}

/// What a handler that only reads this node's replica or proposes through it takes
/// (`State<Replica>`), rather than the whole [`App`]: Raft, the applied state, the clock.
#[derive(Clone)]
pub struct Replica(pub Arc<RaftNode>);

impl axum::extract::FromRef<Arc<App>> for Replica {
    fn from_ref(app: &Arc<App>) -> Self {
        Replica(app.node.clone())
    }
}

/// The vote path above Raft.
pub struct Votes {
    /// One actor per active poll.
    pub registry: Arc<PollRegistry>,
    /// Groups votes into log entries.
    pub proposer: Proposer,
    /// Votes accepted with `Prefer: respond-async`, by request id (this node only).
    pub requests: api::requests::Requests,
}

/// Results streams (server-sent events) on this node.
pub struct Streams {
    /// Open now (bounded by `api::results::STREAMS_MAX`).
    pub open: api::results::StreamCount,
    /// The latest results event of each streamed poll, serialised once.
    pub events: api::results::EventCache,
    /// `--stream-events-per-sec`: the fan-out budget of all streams together.
    pub event_budget: u64,
}

/// Who may do what: accounts, tokens, the cluster secret, peer certificates.
pub struct Access {
    /// `--auth jwt`'s verifier; `None` with `--auth none`.
    pub jwt: Option<auth::JwtAuth>,
    /// Lets operators and peers in (membership changes, Raft RPC).
    pub cluster_secret: Option<String>,
    /// Built-in accounts' token fingerprints found revoked.
    pub stale_fingerprints: auth::StaleFingerprints,
    /// Password hashing is CPU- and memory-hungry (argon2): a few at a time.
    pub password_work: tokio::sync::Semaphore,
    /// With TLS on, peer RPC needs a peer certificate that names its sender.
    pub tls: Option<Arc<tls::ServerTls>>,
}

/// Bounds on what clients may ask of this node.
pub struct Limits {
    /// Per voter, per address and per login.
    pub rate: Arc<ratelimit::Limits>,
    /// The HTTP server's timeouts, connection cap and drain (`--http-*`).
    pub http: server::HttpLimits,
    /// Backups being encoded and sent (`api::cluster::BACKUPS_MAX`).
    pub backups: Arc<tokio::sync::Semaphore>,
}

/// A peer that does not accept a connection within this is down for this attempt.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Keeps the log's entropy stream apart from the id generator's, which shares the seed.
const ENTROPY_SEED_SALT: u64 = 0x7a11_e47a_0b1e_5eed;

const ID_ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl App {
    fn random_string(&self, len: usize) -> String {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        (0..len).map(|_| ID_ALPHABET[rng.gen_range(0..ID_ALPHABET.len())] as char).collect()
    }

    /// 12 base-62 characters: about 71 bits, unguessable enough for poll links.
    pub fn new_poll_id(&self) -> PollId {
        PollId(self.random_string(12))
    }

    /// A key for a vote whose client sent none: unique to this request.
    pub fn new_request_key(&self) -> String {
        format!("node{}-{}", self.node.id, self.random_string(22))
    }

    pub fn poll(&self, poll_id: &PollId) -> Option<Poll> {
        self.node.sm.read().state.polls.get(poll_id).map(|p| p.poll.clone())
    }

    /// The poll named by a path segment. A poll created through another node may not be
    /// applied here yet: before answering 404, catch up with the leader once.
    pub async fn known_poll(&self, raw: &str) -> ApiResult<Poll> {
        let well_formed = !raw.is_empty()
            && raw.len() <= tally_raft::limits::ID_BYTES_MAX
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(ApiError::poll_not_found(raw));
        }
        let poll_id = PollId(raw.to_string());
        if let Some(poll) = self.poll(&poll_id) {
            return Ok(poll);
        }
        self.node.linearizable_barrier().await?;
        self.poll(&poll_id).ok_or_else(|| ApiError::poll_not_found(raw))
    }

    /// Casts one vote through the poll's actor and counts the outcome.
    pub async fn vote(&self, intent: VoteIntent) -> ApiResult<Decided> {
        let handle = self.votes.registry.handle(&intent.poll_id).await?;
        self.vote_with(&handle, intent).await
    }

    /// Like [`App::vote`] with the actor already found. The vote reaches the actor when
    /// the future is first polled, so futures polled in order keep their order.
    pub async fn vote_with(&self, handle: &tally_actors::PollHandle, intent: VoteIntent) -> ApiResult<Decided> {
        let started = Instant::now();
        self.metrics.votes_received.inc();
        let result = handle.vote(intent).await;
        self.count_vote(&result, started.elapsed());
        Ok(result?)
    }

    /// Many votes for one poll, as [`tally_actors::PollHandle::vote_batch`] casts them:
    /// one reply per vote, in order, each counted as a vote.
    pub async fn vote_batch(
        &self,
        handle: &tally_actors::PollHandle,
        intents: Vec<VoteIntent>,
    ) -> Vec<Result<Decided, tally_actors::VoteError>> {
        let started = Instant::now();
        self.metrics.votes_received.inc_by(intents.len() as u64);
        let results = handle.vote_batch(intents).await;
        let elapsed = started.elapsed();
        for result in &results {
            self.count_vote(result, elapsed);
        }
        results
    }

    fn count_vote(&self, result: &Result<Decided, tally_actors::VoteError>, elapsed: std::time::Duration) {
        self.metrics.observe_vote(elapsed);
        let reason = match result {
            Ok(Decided { outcome: VoteOutcome::Recorded(_) | VoteOutcome::Changed(_), .. }) => {
                self.metrics.votes_recorded.inc();
                None
            }
            Ok(Decided { outcome: VoteOutcome::Replayed { .. }, .. }) => Some("replayed"),
            Ok(Decided { outcome: VoteOutcome::Rejected(rejection), .. }) => Some(rejection.reason()),
            Err(tally_actors::VoteError::Propose(tally_raft::rpc::ProposeError::Unknown(_))) => Some("timeout"),
            Err(_) => Some("unavailable"),
        };
        if let Some(reason) = reason {
            self.metrics.votes_rejected.with_label_values(&[reason]).inc();
        }
    }
}

/// A running node: its Raft instance, actors and API, and the tasks it runs beside them.
///
/// Who stops what: [`Node::shutdown`] stops the node's own tasks (`tasks`), the poll
/// actors and their sweep (`PollRegistry::stop_all`), and Raft; dropping the node aborts
/// whatever of `tasks` is left. The proposer's task ends with the last handle of
/// `App::proposer`, and actors that late requests started go with `App::registry`: both
/// go with the `App` once no request holds it, so that no client waits on a vote the
/// proposer dropped.
pub struct Node {
    pub app: Arc<App>,
    /// Closing polls at their end, the disk watch, the leader-change count, forgetting
    /// rate-limit keys and, in a process, the exit after a storage failure. A `JoinSet`
    /// aborts its tasks when dropped.
    tasks: Mutex<JoinSet<()>>,
    /// `node{node_id}`, at debug level: the parent span of the node's tasks, connections
    /// and Raft core, so that a log of several nodes (a simulation) tells them apart.
    pub(crate) span: tracing::Span,
}

impl Node {
    pub async fn start(options: NodeOptions) -> anyhow::Result<Node> {
        let span = tracing::debug_span!("node", node_id = options.config.id);
        // Tasks spawned while it starts (the proposer's, the registry's, openraft's) take
        // the span along.
        Self::start_in(options, span.clone()).instrument(span).await
    }

    async fn start_in(options: NodeOptions, span: tracing::Span) -> anyhow::Result<Node> {
        let NodeOptions { config, db, transport, clock, seed, tls } = options;
        let mut tasks = JoinSet::new();
        let jwt = config.jwt_auth().map_err(anyhow::Error::msg)?;
        let limits = Arc::new(ratelimit::Limits::from_config(&config));
        if let Some(forgetting) = limits.forgetting() {
            tasks.spawn(forgetting.in_current_span());
        }
        let members = config.initial_members().map_err(anyhow::Error::msg)?;
        let metrics = Metrics::new(config.id);
        let node = open_raft(&config, &*db, transport, clock, seed, &metrics).await?;
        let sm = node.sm.clone();
        tasks.spawn(count_leader_changes(&node.raft, metrics.leader_changes.clone()).in_current_span());
        if let Some(watch) = disk::alarm_watch(node.clone(), db.clone(), config.disk_limits()) {
            tasks.spawn(watch.in_current_span());
        }
        tasks.spawn(schedule::closer(node.clone()).in_current_span());
        let notifier =
            Arc::new(ActorNotifier { registry: OnceLock::new(), recent_polls: metrics.recent_polls.clone() });
        sm.set_listener(notifier.clone());
        // A vote that waited a whole write timeout for its turn is refused unproposed.
        let submitter = RaftSubmitter { node: node.clone(), entry_votes: metrics.entry_votes.clone() };
        let proposer = Proposer::start(
            Arc::new(submitter),
            config.proposer_queue_max,
            config.write_timeout(),
            Duration::from_micros(config.entry_linger_us),
        );
        let registry =
            PollRegistry::start(Arc::new(StateSource(sm.clone())), proposer.clone(), RegistryConfig::default());
        let _ = notifier.registry.set(Arc::downgrade(&registry));
        if config.cluster_secret.is_none() {
            tracing::warn!("no --cluster-secret: anyone who reaches this port can speak Raft to this node");
        }
        if !members.is_empty() && !node.raft.is_initialized().await? {
            // Every initial member does this with the same membership, which openraft
            // allows; it is what lets the cluster form with any one node late.
            if node.initialize(members).await.map_err(|e| anyhow::anyhow!("cannot form the initial cluster: {e}"))? {
                tracing::info!("formed the initial cluster");
            }
        }
        let app = Arc::new(App {
            node,
            votes: Votes { registry, proposer, requests: Default::default() },
            streams: Streams {
                open: Default::default(),
                events: Default::default(),
                event_budget: config.stream_events_per_sec,
            },
            access: Access {
                jwt,
                cluster_secret: config.cluster_secret.clone(),
                stale_fingerprints: Default::default(),
                password_work: tokio::sync::Semaphore::new(api::users::PASSWORD_WORK_MAX),
                tls,
            },
            limits: Limits {
                rate: limits,
                http: config.http_limits(),
                backups: Arc::new(tokio::sync::Semaphore::new(api::cluster::BACKUPS_MAX)),
            },
            metrics,
            db,
            advertise_addr: config.advertise_addr(),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        });
        Ok(Node { app, tasks: Mutex::new(tasks), span })
    }

    /// Runs `task` until the node stops (see [`Node`]).
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).spawn(task.instrument(self.span.clone()));
    }

    pub fn router(&self) -> axum::Router {
        api::router(self.app.clone())
    }

    /// Stops the node's tasks, the actors and Raft, and makes the state machine durable,
    /// so that a restart does not even need to re-apply.
    pub async fn shutdown(&self) {
        self.app.votes.registry.stop_all();
        // Before Raft, so that no close or alarm is being proposed while it stops.
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        tasks.shutdown().await;
        if let Err(e) = self.app.node.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        if let Err(e) = self.app.node.sm.persist_now() {
            tracing::warn!("final write of the state: {e}");
        }
        if let Err(e) = self.app.db.flush() {
            tracing::warn!("final flush: {e}");
        }
    }
}

/// The node's Raft instance over its log and state machine in `db`, with the network
/// through `transport`, timed into `metrics`.
async fn open_raft(
    config: &Config,
    db: &dyn Database,
    transport: Arc<dyn PeerTransport>,
    clock: Arc<dyn Clock>,
    seed: u64,
    metrics: &Metrics,
) -> anyhow::Result<Arc<RaftNode>> {
    let raft_config = config.raft_config().map_err(anyhow::Error::msg)?;
    let log_store = LogStore::open(db)?;
    let log_stats = log_store.stats();
    let flush_duration = metrics.log_flush_duration.clone();
    let _ = log_stats.flush_observer.set(Box::new(move |elapsed| flush_duration.observe(elapsed.as_secs_f64())));
    let sm_store = StateMachineStore::open(db).await?;
    let sm = sm_store.shared();
    let network = Network::new(Arc::new(TimedTransport::new(transport, metrics.peer_rpc_duration.clone())));
    let raft = openraft::Raft::new(config.id, Arc::new(raft_config), network.clone(), log_store, sm_store).await?;
    Ok(Arc::new(RaftNode {
        id: config.id,
        raft,
        network,
        sm,
        log_stats,
        clock,
        write_timeout: config.write_timeout(),
        votes_forwarded: Default::default(),
        forwards_in_flight: Default::default(),
        entropy: Mutex::new(StdRng::seed_from_u64(seed ^ ENTROPY_SEED_SALT)),
        storage_failed: Default::default(),
    }))
}

/// The task that counts every change to a new known leader, as this node sees them. It
/// also ends by itself when Raft stops and drops its metrics channel.
fn count_leader_changes(
    raft: &tally_raft::typ::Raft,
    changes: prometheus::IntCounter,
) -> impl Future<Output = ()> + Send + 'static {
    let mut metrics = raft.metrics();
    async move {
        let mut leader = metrics.borrow().current_leader;
        while metrics.changed().await.is_ok() {
            let now = metrics.borrow().current_leader;
            if now.is_some() && now != leader {
                changes.inc();
            }
            leader = now.or(leader);
        }
    }
}

/// Serves the API and peer RPC on `listener` until `shutdown` resolves, then stops the node.
pub async fn serve<L>(
    node: &Node,
    listener: L,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: Into<Option<std::net::SocketAddr>>,
{
    server::serve(node, listener, node.app.limits.http, shutdown).await
}

/// The production store: sled under `data_dir`.
pub fn open_data_dir(data_dir: &std::path::Path, sled_cache_mb: u64) -> anyhow::Result<tally_storage::SledDb> {
    tally_storage::SledDb::open(
        data_dir,
        tally_storage::SledOptions { cache_capacity_bytes: sled_cache_mb * 1024 * 1024, flush_every_ms: Some(1000) },
    )
    .map_err(|e| anyhow::anyhow!("cannot open the data directory {}: {e}", data_dir.display()))
}

/// Writes the backup `file` into the empty store `db` as the state of a new cluster of
/// `members` (`tally-node --restore`, `tally backup restore`), reading it a piece at a time.
pub async fn restore_backup(
    db: &dyn tally_storage::Database,
    file: &std::path::Path,
    members: &std::collections::BTreeMap<tally_raft::NodeId, String>,
) -> anyhow::Result<tally_raft::backup::BackupInfo> {
    let (reader, len) = open_backup(file)?;
    tally_raft::backup::restore(db, reader, len, members)
        .await
        .map_err(|e| anyhow::anyhow!("cannot restore {}: {e}", file.display()))
}

/// A backup file to read, and its length.
pub fn open_backup(file: &std::path::Path) -> anyhow::Result<(std::io::BufReader<std::fs::File>, u64)> {
    let opened =
        std::fs::File::open(file).map_err(|e| anyhow::anyhow!("cannot read the backup {}: {e}", file.display()))?;
    let len = opened.metadata().map_err(|e| anyhow::anyhow!("cannot read the backup {}: {e}", file.display()))?.len();
    Ok((std::io::BufReader::with_capacity(1 << 20, opened), len))
}

/// The production process: sled on disk, tokio TCP, the system clock.
pub async fn run_process(config: Config) -> anyhow::Result<()> {
    let db = open_data_dir(&config.data_dir, config.sled_cache_mb)?;
    if let Some(file) = &config.restore {
        let members = config.initial_members().map_err(anyhow::Error::msg)?;
        let info = restore_backup(&db, file, &members).await?;
        tracing::info!(
            file = %file.display(), applied_index = info.applied_index, votes = info.votes,
            state_hash = %info.state_hash, "restored a backup: a new cluster starts from it"
        );
    }
    let listener = tokio::net::TcpListener::bind(&config.addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.addr))?;
    let secret = config.cluster_secret.clone().unwrap_or_default();
    let tls = tls::load(&config).map_err(|e| anyhow::anyhow!(e))?;
    let transport: Arc<dyn PeerTransport> = match &tls {
        None => Arc::new(HyperTransport::tcp(&secret, PEER_CONNECT_TIMEOUT)),
        Some(tls) => Arc::new(HyperTransport::tls(&secret, PEER_CONNECT_TIMEOUT, tls.peer_client.clone())),
    };
    let seed = rand::thread_rng().gen();
    let exit_after_failure = Duration::from_millis(config.storage_failure_exit_ms);
    let (id, addr, scheme) = (config.id, config.addr.clone(), if tls.is_some() { "https" } else { "http" });
    let node = Node::start(NodeOptions {
        config,
        db: Arc::new(db),
        transport,
        clock: Arc::new(clock::SystemClock),
        seed,
        tls: tls.map(|tls| tls.server),
    })
    .await?;
    if let Some(exit) = disk::exit_on_failure(node.app.node.clone(), exit_after_failure) {
        node.spawn(exit);
    }
    tracing::info!(node_id = id, %addr, scheme, "serving");
    serve(&node, listener, shutdown_signal()).await?;
    tracing::info!(node_id = id, "stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;

    use clap::Parser;

    use super::*;

    /// A one-member node on sled in `dir` (so that the disk watch runs), with a rate limit
    /// (so that the key forgetting runs) and the exit after a storage failure.
    async fn start(dir: &std::path::Path) -> Node {
        let args = ["tally-node", "--id", "1", "--peers", "1=127.0.0.1:1", "--data-dir"];
        let mut config = Config::parse_from(args.into_iter().chain([dir.to_str().unwrap()]));
        config.rate_limit_voter_per_sec = 10;
        let node = Node::start(NodeOptions {
            config,
            db: Arc::new(open_data_dir(dir, 8).unwrap()),
            transport: Arc::new(HyperTransport::tcp("", PEER_CONNECT_TIMEOUT)),
            clock: Arc::new(clock::SystemClock),
            seed: 1,
            tls: None,
        })
        .await
        .unwrap();
        node.spawn(disk::exit_on_failure(node.app.node.clone(), Duration::from_secs(60)).unwrap());
        assert_eq!(node.tasks.lock().unwrap().len(), 5, "the node owns its tasks");
        node
    }

    /// Every task a node started holds its `RaftNode`, its registry or its limits: once
    /// none of them can be upgraded, the tasks are gone.
    async fn assert_tasks_end(node: Node) {
        let raft_node: Weak<cluster::RaftNode> = Arc::downgrade(&node.app.node);
        let registry = Arc::downgrade(&node.app.votes.registry);
        let limits = Arc::downgrade(&node.app.limits.rate);
        drop(node);
        let gone = || raft_node.upgrade().is_none() && registry.upgrade().is_none() && limits.upgrade().is_none();
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while !gone() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        waited.await.expect("the node's tasks ended with it");
    }

    #[tokio::test]
    async fn a_node_shut_down_and_dropped_leaves_no_task_behind() {
        let dir = tempfile::tempdir().unwrap();
        let node = start(dir.path()).await;
        node.shutdown().await;
        assert!(node.tasks.lock().unwrap().is_empty(), "shutdown ends the node's own tasks");
        assert_tasks_end(node).await;
    }

    #[tokio::test]
    async fn a_node_dropped_without_shutdown_leaves_no_task_behind() {
        let dir = tempfile::tempdir().unwrap();
        assert_tasks_end(start(dir.path()).await).await;
    }
}
