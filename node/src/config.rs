//! `tally-node`'s flags. Every flag has a `TALLY_*` environment variable for containers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tally_raft::NodeId;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "tally-node",
    version,
    // A flag given twice (say, once in a compose file and once by hand) takes the last value.
    args_override_self = true,
    about = "A Tally node: one member of a Raft-replicated voting cluster",
    long_about = "A Tally node: serves the HTTP API (API.md) and the peer RPC on one address, and stores its \
                  Raft log and state machine in sled under --data-dir.\n\n\
                  Three nodes started with the same --peers form a cluster by themselves on first start; a \
                  restart with the same flags rejoins it.\n\n\
                  `tally-node backup inspect FILE` and `tally-node backup restore FILE --data-dir DIR --id N \
                  --peers ...` work on backup files offline (`tally-node backup --help`)."
)]
pub struct Config {
    /// This node's id, a positive integer unique in the cluster.
    #[arg(long, env = "TALLY_ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub id: NodeId,

    /// Address to listen on, for the HTTP API and the peer RPC alike.
    #[arg(long, env = "TALLY_ADDR", default_value = "127.0.0.1:7001")]
    pub addr: String,

    /// Address the other nodes reach this one at, if not --addr (e.g. a container's name
    /// when listening on 0.0.0.0).
    #[arg(long, env = "TALLY_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,

    /// Directory for this node's sled database (created if missing).
    #[arg(long, env = "TALLY_DATA_DIR")]
    pub data_dir: PathBuf,

    /// The initial cluster, as ID=HOST:PORT pairs separated by commas, this node included.
    /// Given on first start, the nodes form the cluster by themselves; on later starts it
    /// is harmless. Without it, the node waits for `POST /v1/cluster/init` or to be added
    /// to an existing cluster.
    #[arg(long, env = "TALLY_PEERS", value_delimiter = ',', value_parser = parse_peer)]
    pub peers: Vec<(NodeId, String)>,

    /// Start a new cluster from a backup file (`tally backup save`): written into an
    /// empty --data-dir as the state at the backup's index, under the members of
    /// --peers, before the node starts. Every member of the new cluster is started with
    /// the same file and --peers. A data dir that already holds data is refused, so drop
    /// the flag for later restarts.
    #[arg(long, env = "TALLY_RESTORE", value_name = "FILE")]
    pub restore: Option<PathBuf>,

    /// Shared secret that every peer RPC must carry. Without it, anyone who can reach the
    /// port can speak Raft to the node: set it outside a laptop.
    #[arg(long, env = "TALLY_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,

    /// PEM certificate (chain) this node serves TLS with, to API clients and peers alike
    /// (they share the port). Without it the node speaks plain HTTP.
    #[arg(long, env = "TALLY_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,

    /// PEM private key of --cert-file.
    #[arg(long, env = "TALLY_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,

    /// PEM CA that signs the nodes' certificates: this node checks the others' against it,
    /// when they connect and when it connects to them. Needed with --cert-file.
    #[arg(long, env = "TALLY_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,

    /// PEM certificate this node shows the others when it connects to them; its DNS names
    /// must include `node-<id>`. Defaults to --cert-file (one certificate can serve both).
    #[arg(long, env = "TALLY_PEER_CERT_FILE", requires = "peer_key_file")]
    pub peer_cert_file: Option<PathBuf>,

    /// PEM private key of --peer-cert-file.
    #[arg(long, env = "TALLY_PEER_KEY_FILE", requires = "peer_cert_file")]
    pub peer_key_file: Option<PathBuf>,

    /// Every connection must show a client certificate, signed by --trusted-ca-file (API
    /// clients) or --peer-trusted-ca-file (nodes).
    #[arg(long, env = "TALLY_CLIENT_CERT_AUTH")]
    pub client_cert_auth: bool,

    /// PEM CA that signs API clients' certificates, with --client-cert-auth.
    #[arg(long, env = "TALLY_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,

    /// Raft heartbeat interval.
    #[arg(long, env = "TALLY_HEARTBEAT_INTERVAL_MS", default_value_t = 100)]
    pub heartbeat_interval_ms: u64,

    /// Lower bound of the randomised election timeout.
    #[arg(long, env = "TALLY_ELECTION_TIMEOUT_MS_MIN", default_value_t = 800)]
    pub election_timeout_ms_min: u64,

    /// Upper bound of the randomised election timeout.
    #[arg(long, env = "TALLY_ELECTION_TIMEOUT_MS_MAX", default_value_t = 1600)]
    pub election_timeout_ms_max: u64,

    /// Log entries between snapshots; older entries are then purged. A snapshot costs a
    /// header and a flush (its votes are the block journal's, not a copy), so it is taken
    /// often: the log then holds about 3,000 entries, not every vote a second time.
    #[arg(long, env = "TALLY_SNAPSHOT_INTERVAL_ENTRIES", default_value_t = 2_000)]
    pub snapshot_interval_entries: u64,

    /// Log entries kept behind a snapshot for followers that fall behind; one further
    /// behind is sent the snapshot instead.
    #[arg(long, env = "TALLY_SNAPSHOT_KEEP_ENTRIES", default_value_t = 1_000)]
    pub snapshot_keep_entries: u64,

    /// How long a write may wait for commit before the client gets 503/504.
    #[arg(long, env = "TALLY_WRITE_TIMEOUT_MS", default_value_t = 5_000)]
    pub write_timeout_ms: u64,

    /// sled's page cache, in MiB.
    #[arg(long, env = "TALLY_SLED_CACHE_MB", default_value_t = 64)]
    pub sled_cache_mb: u64,

    /// Votes waiting for the next log entry on this node before new ones are refused (503).
    #[arg(long, env = "TALLY_PROPOSER_QUEUE_MAX", default_value_t = 20_000)]
    pub proposer_queue_max: usize,

    /// Once votes are streaming in, the longest a log entry waits for more before it is
    /// proposed, in µs (0: never; at most 100,000). A lone vote never waits. One entry costs
    /// about the same whatever it holds, so fuller entries cost less CPU per vote
    /// (BENCHMARKS.md). The cap keeps a typo from adding seconds to every streaming vote.
    #[arg(long, env = "TALLY_ENTRY_LINGER_US", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub entry_linger_us: u64,

    /// `none`: anyone may call anything and votes name their voter (the demo's mode).
    /// `jwt`: every request but /health, /ready, /metrics, the web page, POST /v1/users and
    /// POST /v1/auth/token carries `Authorization: Bearer <JWT>`; the voter is its `sub`.
    #[arg(long, env = "TALLY_AUTH", value_enum, default_value_t = AuthMode::None)]
    pub auth: AuthMode,

    /// HS256 secret (at least 32 bytes): verifies tokens and signs the built-in accounts'.
    #[arg(long, env = "TALLY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM file of an RSA or Ed25519 public key: accepts RS256/EdDSA tokens from an outside
    /// identity provider.
    #[arg(long, env = "TALLY_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Built-in accounts whose tokens carry `"role": "admin"` (comma separated).
    #[arg(long = "admin", env = "TALLY_ADMINS", value_delimiter = ',')]
    pub admins: Vec<String>,

    /// Lifetime of the tokens that POST /v1/auth/token issues.
    #[arg(long, env = "TALLY_TOKEN_TTL_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(60..=30 * 24 * 3600))]
    pub token_ttl_secs: u64,

    /// Tokens whose `exp` is further away than this are refused, whoever signed them.
    #[arg(long, env = "TALLY_TOKEN_LIFETIME_MAX_SECS", default_value_t = 24 * 3600,
          value_parser = clap::value_parser!(u64).range(60..=30 * 24 * 3600))]
    pub token_lifetime_max_secs: u64,

    /// Votes a second per voter (0: no limit); over it, 429 RATE_LIMITED. Admins are exempt.
    #[arg(long, env = "TALLY_RATE_LIMIT_VOTER_PER_SEC", default_value_t = 10)]
    pub rate_limit_voter_per_sec: u32,

    /// Burst allowed per voter above the steady rate.
    #[arg(long, env = "TALLY_RATE_LIMIT_VOTER_BURST", default_value_t = 20)]
    pub rate_limit_voter_burst: u32,

    /// `/v1` requests a second per client IP address (0: no limit, the default: behind a
    /// proxy or in a load test, many clients share one address). Cluster routes and
    /// admins are exempt.
    #[arg(long, env = "TALLY_RATE_LIMIT_ADDR_PER_SEC", default_value_t = 0)]
    pub rate_limit_addr_per_sec: u32,

    /// Burst allowed per client address above the steady rate.
    #[arg(long, env = "TALLY_RATE_LIMIT_ADDR_BURST", default_value_t = 0)]
    pub rate_limit_addr_burst: u32,

    /// Log-in attempts per account a minute (a burst of that many, then one every
    /// minute / that many); over it, 429 before any password is hashed. 0: no limit.
    #[arg(long, env = "TALLY_LOGIN_ATTEMPTS_PER_MINUTE", default_value_t = 10)]
    pub login_attempts_per_minute: u32,

    /// Log-in attempts per client address a minute, whichever accounts they name.
    #[arg(long, env = "TALLY_LOGIN_ATTEMPTS_PER_MINUTE_PER_ADDRESS", default_value_t = 60)]
    pub login_attempts_per_minute_per_address: u32,

    /// Events a second that all of this node's results streams together may send. Past a
    /// tenth of it in streams, each stream's interval grows from 100 ms, so that thousands
    /// of viewers cost the node a bounded amount of work, taken from the votes' CPU.
    #[arg(long, env = "TALLY_STREAM_EVENTS_PER_SEC", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
    pub stream_events_per_sec: u64,

    /// Milliseconds a connection may take to send a request's headers, counted from its
    /// first byte, or from the end of the previous response: idle keep-alive connections
    /// close after it too. Slow or stalled headers cannot hold a connection longer.
    #[arg(long, env = "TALLY_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub http_header_timeout_ms: u64,

    /// Milliseconds a request's body may take to arrive, from the end of its headers.
    #[arg(long, env = "TALLY_HTTP_BODY_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub http_body_timeout_ms: u64,

    /// Open connections on the port (clients, results streams and peers together); past
    /// it, new ones are closed at once. Above the 10,000 results streams a node serves,
    /// and well under the process's file limit (`ulimit -n`).
    #[arg(long, env = "TALLY_HTTP_CONNECTIONS_MAX", default_value_t = 12_288,
          value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub http_connections_max: u64,

    /// On SIGTERM or Ctrl-C: Raft stops at once (the others elect a new leader), then
    /// requests in flight get this many milliseconds to finish before they are closed.
    #[arg(long, env = "TALLY_SHUTDOWN_DRAIN_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub shutdown_drain_ms: u64,

    /// Low-disk watermark: when the data directory's file system has less than this many
    /// MiB free, this node raises a replicated NOSPACE alarm and the whole cluster refuses
    /// new votes (503 NO_SPACE) until space is back above one and a half times it; reads
    /// go on. It leaves room for the entries already on their way. 0: no watermark.
    #[arg(long, env = "TALLY_STORAGE_MIN_FREE_MB", default_value_t = 64)]
    pub storage_min_free_mb: u64,

    /// The most this node's data (state and log) may take on disk, in MiB, after etcd's
    /// --quota-backend-bytes: past it, the same alarm as --storage-min-free-mb, cleared
    /// below nine tenths of it. 0: no quota.
    #[arg(long, env = "TALLY_STORAGE_QUOTA_MB", default_value_t = 0)]
    pub storage_quota_mb: u64,

    /// After a storage error stops this node's Raft core (a failed write or fsync, a full
    /// disk), the process exits with status 74 this many milliseconds later, so that a
    /// supervisor restarts it; meanwhile /health and /ready answer 503 and writes are
    /// refused at once. 0: stay up, failed, until stopped.
    #[arg(long, env = "TALLY_STORAGE_FAILURE_EXIT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub storage_failure_exit_ms: u64,

    /// Log filter, in tracing's EnvFilter syntax (RUST_LOG overrides it).
    #[arg(long, env = "TALLY_LOG", default_value = "info,openraft=warn,sled=warn")]
    pub log: String,
    /// `text` for people, or `json`: one object per line with the level, message, fields
    /// and spans, for a log shipper.
    #[arg(long, env = "TALLY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Threads of the async runtime (0: half the cores, at least one). Each hand-off
    /// between threads costs a wake-up, and the node has threads of its own beside these
    /// (the log's fsync thread, sled's flusher): more workers than that add switching.
    #[arg(long, env = "TALLY_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    None,
    Jwt,
}

pub(crate) fn parse_peer(text: &str) -> Result<(NodeId, String), String> {
    let (id, addr) = text.split_once('=').ok_or_else(|| format!("{text:?} is not ID=HOST:PORT"))?;
    let id: NodeId = id.trim().parse().map_err(|_| format!("{id:?} is not a node id"))?;
    if id == 0 {
        return Err("node ids start at 1".into());
    }
    let addr = addr.trim();
    if !addr.contains(':') {
        return Err(format!("{addr:?} is not HOST:PORT"));
    }
    Ok((id, addr.to_string()))
}

impl Config {
    pub fn advertise_addr(&self) -> String {
        self.advertise_addr.clone().unwrap_or_else(|| self.addr.clone())
    }

    pub fn disk_limits(&self) -> crate::disk::DiskLimits {
        crate::disk::DiskLimits {
            min_free_bytes: self.storage_min_free_mb.saturating_mul(1 << 20),
            quota_bytes: self.storage_quota_mb.saturating_mul(1 << 20),
        }
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    pub fn http_limits(&self) -> crate::server::HttpLimits {
        crate::server::HttpLimits {
            header_read_timeout: Duration::from_millis(self.http_header_timeout_ms),
            body_read_timeout: Duration::from_millis(self.http_body_timeout_ms),
            connections_max: self.http_connections_max as usize,
            drain_timeout: Duration::from_millis(self.shutdown_drain_ms),
        }
    }

    /// The initial members, checked: unique ids, this node among them.
    pub fn initial_members(&self) -> Result<BTreeMap<NodeId, String>, String> {
        let mut members = BTreeMap::new();
        for (id, addr) in &self.peers {
            if members.insert(*id, addr.clone()).is_some() {
                return Err(format!("--peers names node {id} twice"));
            }
        }
        if !members.is_empty() && !members.contains_key(&self.id) {
            return Err(format!("--peers does not include this node ({})", self.id));
        }
        Ok(members)
    }

    /// `--auth jwt`'s verifier, or `None` with `--auth none`.
    pub fn jwt_auth(&self) -> Result<Option<crate::auth::JwtAuth>, String> {
        if self.auth == AuthMode::None {
            if self.jwt_secret.is_some() || self.jwt_public_key.is_some() {
                return Err("--jwt-secret and --jwt-public-key need --auth jwt".into());
            }
            return Ok(None);
        }
        let pem = match &self.jwt_public_key {
            None => None,
            Some(path) => Some(std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?),
        };
        let admins = self.admins.iter().map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
        crate::auth::JwtAuth::new(
            self.jwt_secret.as_deref(),
            pem.as_deref(),
            admins,
            Duration::from_secs(self.token_ttl_secs),
        )?
        .with_token_lifetime_max(Duration::from_secs(self.token_lifetime_max_secs))
        .map(Some)
    }

    /// openraft's settings, every field set here rather than left to its defaults.
    pub fn raft_config(&self) -> Result<openraft::Config, String> {
        let config = openraft::Config {
            cluster_name: "tally".into(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_ms_min,
            election_timeout_max: self.election_timeout_ms_max,
            install_snapshot_timeout: 10_000,
            // Below the peer frame limit even when every entry is full (asserted in `limits`).
            max_payload_entries: tally_raft::limits::ENTRIES_PER_APPEND_MAX as u64,
            replication_lag_threshold: 5_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_interval_entries),
            snapshot_max_chunk_size: 4 * 1024 * 1024,
            max_in_snapshot_log_to_keep: self.snapshot_keep_entries,
            purge_batch_size: 1_000,
            enable_tick: true,
            enable_heartbeat: true,
            enable_elect: true,
            // Deprecated in 0.9 (snapshots are no longer sent in chunks) but still a field:
            // 0 leaves every send to `install_snapshot_timeout`. Named, not defaulted, so a
            // new field in an openraft upgrade fails the build until someone chooses it.
            #[allow(deprecated)]
            send_snapshot_timeout: 0,
        };
        config.validate().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(["tally-node"].iter().chain(args))
    }

    #[test]
    fn parses_the_documented_flags() {
        let config = parse(&[
            "--id",
            "1",
            "--addr",
            "127.0.0.1:7001",
            "--data-dir",
            "./data/1",
            "--peers",
            "1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003",
        ])
        .unwrap();
        assert_eq!(config.initial_members().unwrap().len(), 3);
        assert!(config.raft_config().is_ok());
    }

    #[test]
    fn refuses_bad_peers() {
        assert!(parse(&["--id", "1", "--data-dir", "d", "--peers", "1:7001"]).is_err());
        assert!(parse(&["--id", "0", "--data-dir", "d"]).is_err());
        let missing_self = parse(&["--id", "4", "--data-dir", "d", "--peers", "1=a:1,2=b:2"]).unwrap();
        assert!(missing_self.initial_members().is_err());
        let twice = parse(&["--id", "1", "--data-dir", "d", "--peers", "1=a:1,1=b:2"]).unwrap();
        assert!(twice.initial_members().is_err());
    }

    #[test]
    fn bounds_the_entry_linger() {
        let base = ["--id", "1", "--data-dir", "d"];
        let with = |linger: &str| parse(&[&base[..], &["--entry-linger-us", linger]].concat());
        assert_eq!(with("0").unwrap().entry_linger_us, 0);
        assert_eq!(with("100000").unwrap().entry_linger_us, 100_000);
        let too_long = with("100001").unwrap_err().to_string();
        assert!(too_long.contains("--entry-linger-us"), "{too_long}");
        assert!(with("-1").is_err());
    }

    #[test]
    fn refuses_inconsistent_timeouts() {
        let config = parse(&["--id", "1", "--data-dir", "d", "--election-timeout-ms-min", "50"]).unwrap();
        assert!(config.raft_config().is_err());
    }
}
