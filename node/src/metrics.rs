//! Prometheus metrics, one registry per node (several nodes share a process in the
//! simulation). Gauges that mirror Raft or storage state are read at scrape time; the
//! names, types and labels are listed in docs/operations.md (Observability) and are what
//! `grafana/dashboards/tally.json` queries.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use tally_raft::model::PollId;
use tally_raft::transport::{BoxFuture, PeerTransport, TransportError};

use crate::App;

/// Polls whose option counts and turnout are exported: the most recently changed ones.
/// Bounded so that label sets stay bounded however many polls the cluster holds.
pub const POLLS_EXPORTED_MAX: usize = 10;
/// Values exported per breakdown attribute of an exported poll (the largest by turnout).
pub const ATTRIBUTE_VALUES_EXPORTED_MAX: usize = 50;
// Exported values are a subset of the values a poll can hold.
const _: () = assert!(ATTRIBUTE_VALUES_EXPORTED_MAX <= tally_raft::limits::ATTRIBUTE_VALUES_MAX);

/// Every `reason` label of `tally_votes_rejected_total` (`App::vote_with`, the rate limit).
pub const VOTE_REJECTION_REASONS: [&str; 12] = [
    "replayed",
    "already_voted",
    "poll_closed",
    "poll_not_open",
    "invalid_option",
    "invalid_attributes",
    "poll_not_found",
    "idempotency_key_reused",
    "no_space",
    "timeout",
    "unavailable",
    "rate_limited",
];

pub struct Metrics {
    registry: Registry,
    pub votes_received: IntCounter,
    pub votes_recorded: IntCounter,
    pub votes_rejected: IntCounterVec,
    pub forwarded_commands_received: IntCounter,
    pub peer_rejected: IntCounter,
    /// Connections closed on arrival because the node had `--http-connections-max` open.
    pub connections_refused: IntCounter,
    /// TLS handshakes that failed or timed out (a plain-HTTP client, an untrusted
    /// certificate, a stalled client).
    pub tls_handshakes_failed: IntCounter,
    pub leader_changes: IntCounter,
    /// Events the results streams sent: the fan-out's work, bounded by the event budget.
    pub stream_events: IntCounter,
    /// Votes per entry handed to Raft (group commit at work).
    pub entry_votes: Histogram,
    /// One durable log flush (flush + fsync).
    pub log_flush_duration: Histogram,
    pub peer_rpc_duration: HistogramVec,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    vote_duration: Histogram,
    mirrored: Mirrored,
    pub recent_polls: Arc<RecentPolls>,
}

/// Gauges and counters whose values live elsewhere (openraft's metrics, atomics in the
/// stores and the proposer) and are copied in at scrape time.
struct Mirrored {
    raft_term: IntGauge,
    raft_leader_id: IntGauge,
    raft_is_leader: IntGauge,
    raft_last_log_index: IntGauge,
    raft_committed_index: IntGauge,
    raft_applied_index: IntGauge,
    replication_matched: IntGaugeVec,
    replication_lag: IntGaugeVec,
    votes_forwarded: MirroredCounter,
    log_flushes: MirroredCounter,
    log_entries_flushed: MirroredCounter,
    log_flush_seconds: MirroredCounter,
    proposer_entries: MirroredCounter,
    proposer_votes: MirroredCounter,
    snapshots_built: MirroredCounter,
    snapshot_bytes: IntGauge,
    poll_actors: IntGauge,
    mailbox_depth: IntGauge,
    results_streams: IntGauge,
    storage_bytes: IntGauge,
    storage_free_bytes: IntGauge,
    storage_failed: IntGauge,
    storage_alarm: IntGauge,
    poll_option_votes: IntGaugeVec,
    poll_turnout: IntGaugeVec,
    poll_info: IntGaugeVec,
}

fn must<T>(result: prometheus::Result<T>) -> T {
    // Only fails on a malformed metric name or a duplicate registration: a programming
    // error that every test run would hit at start.
    result.expect("metric definitions are valid")
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    must(registry.register(Box::new(collector.clone())));
    collector
}

/// Latency buckets from 0.5 ms to about 16 s.
fn latency_buckets() -> Vec<f64> {
    must(prometheus::exponential_buckets(0.0005, 2.0, 16))
}

/// Defines metrics in one registry: each helper registers what it makes.
struct Definer<'a>(&'a Registry);

impl Definer<'_> {
    fn counter(&self, name: &str, help: &str) -> IntCounter {
        register(self.0, must(IntCounter::new(name, help)))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        register(self.0, must(IntCounterVec::new(Opts::new(name, help), labels)))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        register(self.0, must(IntGauge::new(name, help)))
    }

    fn mirrored_counter(&self, name: &str, help: &str) -> MirroredCounter {
        register(self.0, MirroredCounter::new(name, help))
    }

    fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        register(self.0, must(IntGaugeVec::new(Opts::new(name, help), labels)))
    }

    fn histogram(&self, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
        register(self.0, must(Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))))
    }

    fn latency_vec(&self, name: &str, help: &str, label: &str) -> HistogramVec {
        register(self.0, must(HistogramVec::new(HistogramOpts::new(name, help).buckets(latency_buckets()), &[label])))
    }

    /// Every reason from the start, at 0, as Prometheus advises: a series that appears
    /// only with its first rejection leaves a healthy cluster's "rejected by reason"
    /// panel empty and its rate() undefined.
    fn rejections(&self) -> IntCounterVec {
        let rejected = self.counter_vec("tally_votes_rejected_total", "Votes not recorded, by reason", &["reason"]);
        for reason in VOTE_REJECTION_REASONS {
            rejected.with_label_values(&[reason]);
        }
        rejected
    }
}

impl Mirrored {
    /// What `mirror` copies from Raft's metrics, the stores and the actors at each scrape.
    fn new(d: &Definer) -> Self {
        Mirrored {
            raft_term: d.gauge("tally_raft_term", "Current Raft term"),
            raft_leader_id: d.gauge("tally_raft_leader_id", "The leader this node knows, 0 for none"),
            raft_is_leader: d.gauge("tally_raft_is_leader", "1 on the leader"),
            raft_last_log_index: d.gauge("tally_raft_last_log_index", "Last index in this node's log"),
            raft_committed_index: d.gauge("tally_raft_committed_index", "Greatest index this node knows committed"),
            raft_applied_index: d.gauge("tally_raft_applied_index", "Greatest index applied to the state machine"),
            replication_matched: d.gauge_vec(
                "tally_raft_replication_matched_index",
                "Leader only: each member's last index known replicated",
                &["follower"],
            ),
            replication_lag: d.gauge_vec(
                "tally_raft_replication_lag_entries",
                "Leader only: entries each member is behind the leader's log",
                &["follower"],
            ),
            votes_forwarded: d.mirrored_counter("tally_votes_forwarded_total", "Votes forwarded to the leader"),
            log_flushes: d.mirrored_counter("tally_log_flushes_total", "Durable log flushes (one fsync each)"),
            log_entries_flushed: d.mirrored_counter("tally_log_entries_flushed_total", "Log entries made durable"),
            log_flush_seconds: d.mirrored_counter("tally_log_flush_seconds_total", "Time spent in durable log flushes"),
            proposer_entries: d
                .mirrored_counter("tally_proposer_entries_total", "Vote entries this node's proposer made: on the leader, log entries (followers' forwarded votes join them); on a follower, forwards"),
            proposer_votes: d.mirrored_counter("tally_proposer_votes_total", "Votes in those entries"),
            snapshots_built: d.mirrored_counter("tally_snapshots_built_total", "State machine snapshots built"),
            snapshot_bytes: d.gauge("tally_snapshot_bytes", "Size of the last snapshot built or installed"),
            poll_actors: d.gauge("tally_poll_actors", "Poll actors alive on this node"),
            mailbox_depth: d.gauge("tally_poll_actor_mailbox_depth", "Messages queued across poll actors"),
            results_streams: d.gauge("tally_results_streams", "Results streams (server-sent events) open on this node"),
            storage_bytes: d.gauge("tally_storage_bytes", "The node's data (state and log) on disk"),
            storage_free_bytes: d
                .gauge("tally_storage_free_bytes", "Free space on the data directory's file system (-1: unknown)"),
            storage_failed: d.gauge("tally_storage_failed", "1 once a storage error stopped this node's Raft core"),
            storage_alarm: d.gauge(
                "tally_storage_alarm",
                "Members whose low-disk alarm is up in this node's applied state: votes are refused while above 0",
            ),
            poll_option_votes: d.gauge_vec(
                "tally_poll_option_votes",
                "Votes per option, for the most recently active polls",
                &["poll_id", "option_id", "option"],
            ),
            poll_turnout: d.gauge_vec(
                "tally_poll_turnout",
                "Recorded votes per breakdown attribute value, for the most recently active polls",
                &["poll_id", "attribute", "value"],
            ),
            poll_info: d.gauge_vec(
                "tally_poll_info",
                "1 for each of the most recently active polls, with its title (dashboards label polls by it)",
                &["poll_id", "title"],
            ),
        }
    }
}

impl Metrics {
    pub fn new(node_id: u64) -> Self {
        // The node is told apart by Prometheus's `instance` label; `tally_node_id` names it.
        let registry = Registry::new();
        let d = Definer(&registry);
        d.gauge("tally_node_id", "This node's id").set(node_id as i64);
        Self {
            votes_received: d.counter("tally_votes_received_total", "Vote requests received by this node"),
            votes_recorded: d.counter("tally_votes_recorded_total", "Votes this node acknowledged as recorded"),
            votes_rejected: d.rejections(),
            forwarded_commands_received: d.counter(
                "tally_forwarded_commands_received_total",
                "Commands followers forwarded to this node as leader",
            ),
            peer_rejected: d.counter(
                "tally_peer_requests_rejected_total",
                "Peer requests refused: no cluster secret, no peer certificate, or a sender that is not theirs",
            ),
            tls_handshakes_failed: d.counter(
                "tally_tls_handshakes_failed_total",
                "TLS handshakes that failed or did not finish within --http-header-timeout-ms",
            ),
            connections_refused: d.counter(
                "tally_http_connections_refused_total",
                "Connections closed on arrival: the node had --http-connections-max open",
            ),
            leader_changes: d.counter("tally_raft_leader_changes_total", "Times this node saw a new leader"),
            stream_events: d.counter("tally_results_stream_events_total", "Events sent on results streams"),
            entry_votes: d.histogram(
                "tally_proposer_entry_votes",
                "Votes per entry this node proposed or forwarded",
                must(prometheus::exponential_buckets(1.0, 2.0, 10)),
            ),
            log_flush_duration: d.histogram(
                "tally_log_flush_duration_seconds",
                "One durable log flush (flush + fsync)",
                latency_buckets(),
            ),
            peer_rpc_duration: d.latency_vec(
                "tally_peer_rpc_duration_seconds",
                "Outgoing peer RPCs, answered or not",
                "rpc",
            ),
            http_requests: d.counter_vec(
                "tally_http_requests_total",
                "HTTP requests by route and status",
                &["method", "route", "status"],
            ),
            http_duration: d.latency_vec("tally_http_request_duration_seconds", "HTTP request latency", "route"),
            vote_duration: d.histogram(
                "tally_vote_duration_seconds",
                "Time from a vote request to its decision",
                latency_buckets(),
            ),
            mirrored: Mirrored::new(&d),
            recent_polls: Arc::default(),
            registry,
        }
    }

    pub fn observe_http(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.http_requests.with_label_values(&[method, route, &status.to_string()]).inc();
        self.http_duration.with_label_values(&[route]).observe(elapsed.as_secs_f64());
    }

    pub fn observe_vote(&self, elapsed: Duration) {
        self.vote_duration.observe(elapsed.as_secs_f64());
    }

    /// Reads the mirrored state, then renders the text format.
    pub fn render(&self, app: &App) -> String {
        self.mirror(app);
        let mut buffer = Vec::new();
        if TextEncoder::new().encode(&self.registry.gather(), &mut buffer).is_err() {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }

    fn mirror(&self, app: &App) {
        let m = &self.mirrored;
        let raft = app.node.metrics();
        let last_log_index = raft.last_log_index.unwrap_or(0);
        m.raft_term.set(raft.current_term as i64);
        m.raft_leader_id.set(raft.current_leader.unwrap_or(0) as i64);
        m.raft_is_leader.set(i64::from(raft.state == openraft::ServerState::Leader));
        m.raft_last_log_index.set(last_log_index as i64);
        m.raft_committed_index.set(app.node.committed_index() as i64);
        m.raft_applied_index.set(app.node.sm.applied_index() as i64);
        // Reset so that a node that stopped leading stops reporting its followers.
        m.replication_matched.reset();
        m.replication_lag.reset();
        for (follower, matched) in raft.replication.iter().flatten() {
            let matched = matched.map_or(0, |log_id| log_id.index);
            let follower = follower.to_string();
            m.replication_matched.with_label_values(&[&follower]).set(matched as i64);
            m.replication_lag.with_label_values(&[&follower]).set(last_log_index.saturating_sub(matched) as i64);
        }
        m.votes_forwarded.set(app.node.votes_forwarded.load(Ordering::Relaxed) as f64);
        let log = &app.node.log_stats;
        m.log_flushes.set(log.flushes.load(Ordering::Relaxed) as f64);
        m.log_entries_flushed.set(log.entries_flushed.load(Ordering::Relaxed) as f64);
        m.log_flush_seconds.set(log.flush_micros_total.load(Ordering::Relaxed) as f64 / 1e6);
        let proposer = app.votes.proposer.stats();
        m.proposer_entries.set(proposer.entries.load(Ordering::Relaxed) as f64);
        m.proposer_votes.set(proposer.votes.load(Ordering::Relaxed) as f64);
        m.snapshots_built.set(app.node.sm.snapshots_built.load(Ordering::Relaxed) as f64);
        m.snapshot_bytes.set(app.node.sm.last_snapshot_bytes.load(Ordering::Relaxed) as i64);
        m.poll_actors.set(app.votes.registry.live_actors() as i64);
        m.mailbox_depth.set(app.votes.registry.mailbox_depth() as i64);
        m.results_streams.set(app.streams.open.load(Ordering::Relaxed) as i64);
        m.storage_bytes.set(app.db.size_on_disk() as i64);
        m.storage_free_bytes.set(app.db.free_space().map_or(-1, |free| free as i64));
        m.storage_failed.set(i64::from(app.node.failure().is_some()));
        m.storage_alarm.set(app.node.sm.read().state.alarms.len() as i64);
        self.mirror_polls(app);
    }

    /// Option counts and turnout of the recently active polls, from one read of the state.
    fn mirror_polls(&self, app: &App) {
        let m = &self.mirrored;
        m.poll_option_votes.reset();
        m.poll_turnout.reset();
        m.poll_info.reset();
        let polls = self.recent_polls.list();
        let now_ms = app.node.clock.now_ms();
        let applied = app.node.sm.read();
        for poll_id in &polls {
            let Some(state) = applied.state.polls.get(poll_id) else { continue };
            // `/metrics` is open to anyone: hidden results stay out until the poll closes,
            // and so does the poll itself (the dashboard could show nothing of it).
            if state.poll.results_hidden_at(now_ms) {
                continue;
            }
            m.poll_info.with_label_values(&[&poll_id.0, &state.poll.title]).set(1);
            for (option, votes) in state.poll.options.iter().zip(&state.counts) {
                m.poll_option_votes
                    .with_label_values(&[&poll_id.0, &option.option_id, &option.text])
                    .set(*votes as i64);
            }
            for (attribute, values) in &state.breakdowns {
                let mut turnout: Vec<(&String, u64)> =
                    values.iter().map(|(value, per_option)| (value, per_option.iter().sum())).collect();
                turnout.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
                for (value, votes) in turnout.into_iter().take(ATTRIBUTE_VALUES_EXPORTED_MAX) {
                    m.poll_turnout.with_label_values(&[&poll_id.0, attribute, value]).set(votes as i64);
                }
            }
        }
    }
}

/// A counter whose value is kept elsewhere (an atomic in another crate) and copied in at
/// scrape time. The prometheus crate's counters only go up by `inc`, so this reports the
/// copied value with the counter type, which `rate()` and Grafana expect for `_total`.
#[derive(Clone)]
struct MirroredCounter {
    desc: Desc,
    value: Arc<Mutex<f64>>,
}

impl MirroredCounter {
    fn new(name: &str, help: &str) -> Self {
        let desc = must(Desc::new(name.to_string(), help.to_string(), Vec::new(), Default::default()));
        Self { desc, value: Arc::new(Mutex::new(0.0)) }
    }

    fn set(&self, value: f64) {
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = value;
    }
}

impl Collector for MirroredCounter {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let value = *self.value.lock().unwrap_or_else(|p| p.into_inner());
        let mut counter = prometheus::proto::Counter::default();
        counter.set_value(value);
        let mut metric = prometheus::proto::Metric::default();
        metric.set_counter(counter);
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(prometheus::proto::MetricType::COUNTER);
        family.set_metric(vec![metric]);
        vec![family]
    }
}

/// The polls most recently changed by apply, newest first, at most [`POLLS_EXPORTED_MAX`].
#[derive(Default)]
pub struct RecentPolls(Mutex<VecDeque<PollId>>);

impl RecentPolls {
    pub fn touch<'a>(&self, polls: impl IntoIterator<Item = &'a PollId>) {
        let mut recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for poll in polls {
            if let Some(at) = recent.iter().position(|p| p == poll) {
                recent.remove(at);
            }
            recent.push_front(poll.clone());
            recent.truncate(POLLS_EXPORTED_MAX);
        }
    }

    pub fn list(&self) -> Vec<PollId> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }
}

/// Times every outgoing peer RPC, by the path's last segment (`append`, `forward`, ...).
pub struct TimedTransport {
    inner: Arc<dyn PeerTransport>,
    duration: HistogramVec,
}

impl TimedTransport {
    pub fn new(inner: Arc<dyn PeerTransport>, duration: HistogramVec) -> Self {
        Self { inner, duration }
    }
}

impl PeerTransport for TimedTransport {
    fn post(
        &self,
        addr: &str,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, TransportError>> {
        let rpc = path.rsplit('/').next().unwrap_or(path);
        let histogram = self.duration.with_label_values(&[rpc]);
        let call = self.inner.post(addr, path, body, timeout);
        Box::pin(async move {
            let started = Instant::now();
            let result = call.await;
            histogram.observe(started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use tally_raft::model::VoteRejection;

    use super::*;

    #[test]
    fn every_rejection_reason_is_exported_from_the_start() {
        let rejections = [
            VoteRejection::PollNotFound,
            VoteRejection::PollClosed,
            VoteRejection::PollNotOpen,
            VoteRejection::InvalidOption,
            VoteRejection::InvalidAttributes("a".into()),
            VoteRejection::AlreadyVoted { vote_id: "v".into(), option_id: "o1".into(), voted_at_ms: 0 },
            VoteRejection::TooManyChanges { vote_id: "v".into(), option_id: "o1".into() },
            VoteRejection::IdempotencyKeyReused { vote_id: "v".into() },
            VoteRejection::NoSpace { nodes: vec![1] },
        ];
        for rejection in &rejections {
            assert!(VOTE_REJECTION_REASONS.contains(&rejection.reason()), "{rejection:?} has no series");
        }
        let metrics = Metrics::new(1);
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&metrics.registry.gather(), &mut buffer).expect("encodes");
        let text = String::from_utf8(buffer).expect("utf-8");
        for reason in VOTE_REJECTION_REASONS {
            assert!(text.contains(&format!("tally_votes_rejected_total{{reason=\"{reason}\"}} 0")), "{reason}");
        }
    }

    #[test]
    fn recent_polls_keep_the_newest_and_stay_bounded() {
        let recent = RecentPolls::default();
        let ids: Vec<PollId> = (0..POLLS_EXPORTED_MAX + 3).map(|i| PollId(format!("p{i}"))).collect();
        recent.touch(&ids);
        recent.touch([&ids[0]]);
        let list = recent.list();
        assert_eq!(list.len(), POLLS_EXPORTED_MAX);
        assert_eq!(list[0], ids[0], "a touched poll moves to the front");
        assert_eq!(list[1], ids[POLLS_EXPORTED_MAX + 2]);
        assert!(!list.contains(&ids[1]), "the oldest fell out");
    }

    #[test]
    fn mirrored_counters_render_as_counters() {
        let metrics = Metrics::new(7);
        metrics.mirrored.log_flushes.set(42.0);
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&metrics.registry.gather(), &mut buffer).expect("encodes");
        let text = String::from_utf8(buffer).expect("utf-8");
        assert!(text.contains("# TYPE tally_log_flushes_total counter"), "{text}");
        assert!(text.contains("tally_log_flushes_total 42"), "{text}");
        assert!(text.contains("tally_node_id 7"), "{text}");
    }
}
