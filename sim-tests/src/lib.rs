//! Deterministic simulation of a Tally cluster: the real node code (`tally_node::Node`) on
//! turmoil hosts, simulated TCP for the API and the peer RPC, an in-memory store per host
//! that survives a crash only as far as it was flushed, simulated clients, a fault
//! schedule, and a checker that reads the clients' history and the nodes' final states.
//!
//! - [`harness`]: one run from one seed ([`run`]), with its [`Report`].
//! - [`workload`]: the simulated clients; [`history`]: what they saw.
//! - [`faults`]: the fault schedule a seed picks; [`checker`]: the verdict.
//! - [`net`]: turmoil plumbing (listener, connector, clock, JSON client).
//!
//! Everything random comes from the seed: turmoil's network, openraft's election
//! timeouts (`tally_raft::runtime::seed_thread_rng`), the nodes' id generators, the
//! workload and the faults. Same seed, same build: same history and trace hash.

pub mod checker;
pub mod faults;
pub mod harness;
pub mod history;
pub mod net;
pub mod workload;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use harness::{run, Bug, Report, SimOptions};
pub use net::{SimClient, SimClock};
use tally_node::{App, Node, NodeOptions};
use tally_storage::MemDb;

use crate::net::{SimListener, SimTransport};

pub const PORT: u16 = 7001;
/// Message latency on a healthy link: up to this, at random.
pub const LINK_LATENCY_MAX: Duration = Duration::from_millis(10);
pub const SECRET: &str = "sim-secret";

/// The seed of this run: `SIM_SEED` if set, else a fresh one. Printed, so that any run
/// can be replayed with `SIM_SEED=<seed> cargo test -p tally-sim-tests`.
pub fn seed() -> u64 {
    let seed = match std::env::var("SIM_SEED") {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("SIM_SEED={text:?} is not a number")),
        Err(_) => rand::random(),
    };
    println!("SIM_SEED={seed}");
    seed
}

/// A simulation whose every random choice comes from `seed`: turmoil's network, the
/// order of its hosts, and openraft's election timeouts.
pub fn simulation<'a>(seed: u64, duration: Duration) -> turmoil::Sim<'a> {
    tally_raft::runtime::seed_thread_rng(seed);
    turmoil::Builder::new()
        .rng_seed(seed)
        // A fixed epoch: the leader's timestamps enter the log and so the state hash.
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(1_767_225_600))
        .simulation_duration(duration)
        .tick_duration(Duration::from_millis(1))
        .max_message_latency(LINK_LATENCY_MAX)
        // Turmoil panics when a link's buffer fills; snapshots and batches are large.
        .tcp_capacity(65_536)
        .build()
}

pub fn host_name(id: u64) -> String {
    format!("node{id}")
}

fn peers(nodes: u64) -> String {
    (1..=nodes).map(|id| format!("{id}={}:{PORT}", host_name(id))).collect::<Vec<_>>().join(",")
}

use clap_free::config_for;

mod clap_free {
    use tally_node::config::Config;

    /// The same flags an operator passes, parsed by the real parser.
    pub fn config_for(id: u64, nodes: u64) -> Config {
        let addr = format!("{}:{}", super::host_name(id), super::PORT);
        let peers = super::peers(nodes);
        let args = [
            "tally-node",
            "--id",
            &id.to_string(),
            "--addr",
            &addr,
            "--data-dir",
            "/simulated",
            "--peers",
            &peers,
            "--cluster-secret",
            super::SECRET,
            "--heartbeat-interval-ms",
            "50",
            "--election-timeout-ms-min",
            "300",
            "--election-timeout-ms-max",
            "600",
            "--write-timeout-ms",
            "3000",
            "--snapshot-interval-entries",
            "100",
            // Fewer entries kept behind a snapshot than in production: a node that was down
            // or cut off for a while catches up through a streamed snapshot, so the faults
            // reach snapshot installs too (a few seeds in a hundred).
            "--snapshot-keep-entries",
            "20",
            // governor's limiters run on the wall clock, which a simulation does not control.
            "--rate-limit-voter-per-sec",
            "0",
            // A MemDb has no free space to watch (the disk-full fault fills it instead),
            // and the watch's once-a-second task alone made seed 75 replay differently
            // from run to run (an unexplained source of nondeterminism it exposes).
            "--storage-min-free-mb",
            "0",
        ];
        <Config as clap::Parser>::try_parse_from(args).expect("simulation flags parse")
    }
}

/// Polls `check` every 50 ms of simulated time until it returns `Some` or `timeout` of
/// simulated time passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The running nodes' shared state, for the checker to read at the end.
pub type Apps = Arc<Mutex<std::collections::BTreeMap<u64, Arc<App>>>>;

/// The body of a simulated node: the production `Node` over simulated TCP and `db`.
/// `seed` seeds its id generator: give each incarnation of a node its own.
pub async fn run_node(id: u64, nodes: u64, db: MemDb, seed: u64) -> turmoil::Result {
    run_node_with(id, nodes, db, seed, SimClock::default(), None).await
}

/// [`run_node`] with the node's clock given, and its `App` published to `apps`.
pub async fn run_node_with(
    id: u64,
    nodes: u64,
    db: MemDb,
    seed: u64,
    clock: SimClock,
    apps: Option<Apps>,
) -> turmoil::Result {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    let transport = Arc::new(SimTransport::new(SECRET));
    let config = config_for(id, nodes);
    let options = NodeOptions { config, db: Arc::new(db), transport, clock: Arc::new(clock), seed, tls: None };
    let node = Node::start(options).await.map_err(|e| e.to_string())?;
    if let Some(apps) = apps {
        apps.lock().unwrap_or_else(|p| p.into_inner()).insert(id, node.app.clone());
    }
    tally_node::serve(&node, SimListener(listener), std::future::pending()).await?;
    Ok(())
}
