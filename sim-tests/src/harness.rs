//! One simulated run from one seed: nodes, clients, the fault schedule applied between
//! simulation steps, then the checker over the history and the final states.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::iter::Peekable;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tally_storage::{CrashPoint, MemDb};

use crate::checker::{self, NodeState, Violation};
use crate::faults::{self, Action, FaultKind, Scheduled};
use crate::history::{Event, History};
use crate::workload::Workload;
use crate::{host_name, run_node_with, Apps, SimClock};

mod chaos;

use chaos::Chaos;

/// A deliberate bug to switch on, to show that the checker catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bug {
    /// The leader answers votes as recorded when it proposes them, before commit.
    AckBeforeCommit,
    /// Apply records a second vote by the same voter.
    SkipDedup,
    /// A crash also loses the last log entry that was flushed.
    LoseLastFlushed,
    /// A restarted leader resumes its old term without an election (seed 95059's bug).
    ResumeLeadership,
}

impl Bug {
    pub const ALL: [Bug; 4] = [Bug::AckBeforeCommit, Bug::SkipDedup, Bug::LoseLastFlushed, Bug::ResumeLeadership];

    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeCommit => "ack-before-commit",
            Bug::SkipDedup => "skip-dedup",
            Bug::LoseLastFlushed => "lose-last-flushed",
            Bug::ResumeLeadership => "resume-leadership",
        }
    }

    pub fn parse(name: &str) -> Option<Bug> {
        Bug::ALL.iter().copied().find(|b| b.name() == name)
    }
}

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    /// 3 or 5.
    pub nodes: u64,
    /// Simulated time with faults on (the cluster forms in the first seconds).
    pub fault_phase: Duration,
    /// After the heal, the cluster must converge, and take a new vote, within this.
    pub heal_bound: Duration,
    pub faults: Vec<FaultKind>,
    pub clients: usize,
    /// Simulated hosts the clients run on (at most `clients`). Fewer hosts make a run
    /// faster, since turmoil's work per tick grows with the links between hosts.
    pub client_hosts: usize,
    pub polls: usize,
    /// Voters per poll; `None`: scaled with the run, [`SimOptions::scaled_voters`].
    pub voters: Option<usize>,
    /// Of the clients' requests, this share are linearizable reads.
    pub read_ratio: (u32, u32),
    /// After each restart, crash and leader change, half the requests are linearizable
    /// reads for this long (zero: never).
    pub read_burst: Duration,
    /// These options were drawn from the seed ([`SimOptions::swarm`]).
    pub swarm: bool,
    pub bugs: Vec<Bug>,
}

/// Voters per poll per client and simulated second, when the pool scales with the run: a
/// client sends about 12 votes a second over the polls, so most votes are new voters
/// while duplicates and races stay common.
const VOTERS_PER_CLIENT_SECOND: usize = 3;
/// The smallest voter pool a poll gets when it scales.
const VOTERS_MIN: usize = 100;

impl SimOptions {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            nodes: 3,
            fault_phase: Duration::from_secs(30),
            heal_bound: Duration::from_secs(30),
            faults: faults::ALL.to_vec(),
            clients: 4,
            client_hosts: 4,
            polls: 3,
            voters: None,
            read_ratio: (1, 8),
            read_burst: Duration::from_secs(1),
            swarm: false,
            bugs: Vec::new(),
        }
    }

    /// Options drawn from the seed, as TigerBeetle's VOPR does ("swarm testing"): one
    /// range of seeds covers many shapes of run. Only `nodes` is the caller's.
    pub fn swarm(seed: u64, nodes: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5a_a7_u64);
        let pick = |rng: &mut StdRng, from: &[u64]| from[rng.gen_range(0..from.len())];
        // Short and small runs weigh more, as in the VOPR: many shapes per hour of CPU.
        let clients = pick(&mut rng, &[4, 4, 6, 8, 12, 16, 24, 32]) as usize;
        let fault_phase = Duration::from_secs(pick(&mut rng, &[5, 5, 10, 10, 15, 20, 30, 45, 60]));
        // Mostly few hosts, for speed; sometimes one per client, as real clients are.
        let client_hosts = if rng.gen_ratio(1, 5) { clients } else { rng.gen_range(1..=4) };
        let polls = rng.gen_range(1..=5);
        // From a crowd voting twice on purpose to nearly every vote a new voter.
        let per_client_second = pick(&mut rng, &[0, 1, 3, 10]) as usize;
        let voters = (clients * fault_phase.as_secs() as usize * per_client_second).max(20);
        let read_ratio = (1, pick(&mut rng, &[2, 4, 8, 16]) as u32);
        let read_burst = Duration::from_millis(pick(&mut rng, &[0, 500, 1_000, 3_000]));
        let faults = if rng.gen_ratio(1, 8) {
            faults::ALL.to_vec()
        } else {
            let some: Vec<FaultKind> = faults::ALL.iter().copied().filter(|_| rng.gen_bool(0.5)).collect();
            if some.is_empty() {
                vec![faults::ALL[rng.gen_range(0..faults::ALL.len())]]
            } else {
                some
            }
        };
        Self {
            nodes,
            fault_phase,
            faults,
            clients,
            client_hosts,
            polls,
            voters: Some(voters),
            read_ratio,
            read_burst,
            swarm: true,
            ..Self::new(seed)
        }
    }

    /// Voters per poll: given, or scaled with the clients and the length of the run.
    pub fn voters(&self) -> usize {
        self.voters.unwrap_or_else(|| Self::scaled_voters(self.clients, self.fault_phase))
    }

    pub fn scaled_voters(clients: usize, fault_phase: Duration) -> usize {
        (clients * fault_phase.as_secs() as usize * VOTERS_PER_CLIENT_SECOND).max(VOTERS_MIN)
    }

    /// The command that replays this run, every option spelled out (a swarm's picks too).
    pub fn replay_command(&self) -> String {
        let faults: Vec<&str> = self.faults.iter().map(|f| f.name()).collect();
        let mut command = format!(
            "tally-sim --seed {} --nodes {} --clients {} --client-hosts {} --duration-secs {} --polls {} --voters {} --read-ratio {}/{} --read-burst-ms {} --faults {}",
            self.seed,
            self.nodes,
            self.clients,
            self.client_hosts,
            self.fault_phase.as_secs(),
            self.polls,
            self.voters(),
            self.read_ratio.0,
            self.read_ratio.1,
            self.read_burst.as_millis(),
            faults.join(",")
        );
        for bug in &self.bugs {
            command += &format!(" --inject-bug {}", bug.name());
        }
        command
    }
}

#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    /// The command that replays this run ([`SimOptions::replay_command`]).
    pub replay: String,
    /// Hash of the whole history and the final states: equal for equal runs.
    pub trace: String,
    pub violations: Vec<Violation>,
    pub schedule: Vec<Scheduled>,
    pub history: History,
    pub votes_acknowledged: usize,
    pub requests: usize,
    pub faults_injected: usize,
    pub simulated: Duration,
    /// How long convergence and the probe vote took after the heal (ms).
    pub timings: Vec<(&'static str, u64)>,
    /// (node, applied index, state hash) at the end.
    pub final_states: Vec<(u64, u64, String)>,
    /// The simulation itself failed (a host panicked, time ran out).
    pub error: Option<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.error.is_none()
    }

    /// What to print on a violation: the seed, the schedule and the minimal slice of
    /// history that shows each violation.
    pub fn explain(&self) -> String {
        let mut out = format!("seed {} FAILED (replay: {} --verbose)\n", self.seed, self.replay);
        if let Some(error) = &self.error {
            out += &format!("simulation error: {error}\n");
        }
        out += "fault schedule:\n";
        for step in &self.schedule {
            out += &format!("  {:>7}ms {}\n", step.at.as_millis(), step.action);
        }
        // One broken invariant usually breaks it for many voters; the first few slices
        // show it, and the rest would bury the schedule above them.
        for violation in self.violations.iter().take(VIOLATIONS_EXPLAINED_MAX) {
            out += &format!("violation, {violation}\n");
            if let Some((poll, voter)) = &violation.about {
                for event in self.history.slice(poll, voter) {
                    out += &format!("    {event}\n");
                }
            }
        }
        if let Some(more) = self.violations.len().checked_sub(VIOLATIONS_EXPLAINED_MAX).filter(|m| *m > 0) {
            out += &format!("... and {more} more violations ({} --verbose shows the whole run)\n", self.replay);
        }
        out
    }
}

/// How many violations a failed seed's explanation shows with their history slices.
const VIOLATIONS_EXPLAINED_MAX: usize = 3;

/// Runs one seed to its verdict.
pub fn run(options: &SimOptions) -> Report {
    switch_on_bugs(&options.bugs);
    let fault_phase_end = Duration::from_secs(3) + options.fault_phase;
    let total = fault_phase_end + options.heal_bound * 3 + crate::workload::CLIENT_DRAIN_MAX;
    let mut sim = crate::simulation(options.seed, total);
    let apps: Apps = Arc::new(Mutex::new(BTreeMap::new()));
    let clocks: Vec<SimClock> = (0..options.nodes).map(|_| SimClock::default()).collect();
    let dbs: Vec<MemDb> = (0..options.nodes).map(|_| MemDb::new()).collect();
    add_nodes(&mut sim, options, &clocks, &dbs, &apps);
    let workload = Rc::new(Workload {
        seed: options.seed,
        nodes: options.nodes,
        voters: options.voters(),
        read_ratio: options.read_ratio,
        read_burst_until_ms: Cell::new(0),
        fault_phase_end,
        clients_running: Cell::new(options.clients),
        polls: RefCell::new(Vec::new()),
        history: Rc::new(RefCell::new(History::default())),
        timings: RefCell::new(Vec::new()),
    });
    let client_hosts = add_clients(&mut sim, options, &workload);

    let mut rng = StdRng::seed_from_u64(options.seed ^ 0xfa_u64);
    let schedule = faults::schedule(&mut rng, &options.faults, options.nodes, Duration::from_secs(5), fault_phase_end);
    let mut chaos = Chaos::new(options.nodes, client_hosts, clocks, dbs, apps.clone());
    let error = drive(&mut sim, &mut chaos, &schedule, &workload, options.read_burst);
    let simulated = sim.elapsed();
    report(options, schedule, simulated, &apps, &workload, error)
}

/// Tells the node code which deliberate bugs to carry; the harness plays the one that is
/// a storage bug itself (`add_nodes`).
fn switch_on_bugs(bugs: &[Bug]) {
    tally_raft::bugs::set(tally_raft::bugs::Bugs {
        ack_before_commit: bugs.contains(&Bug::AckBeforeCommit),
        skip_dedup: bugs.contains(&Bug::SkipDedup),
        resume_leadership: bugs.contains(&Bug::ResumeLeadership),
    });
}

/// One host per node. Turmoil runs a host's closure again when the host restarts after a
/// crash, so each closure counts its incarnations.
fn add_nodes(sim: &mut turmoil::Sim<'_>, options: &SimOptions, clocks: &[SimClock], dbs: &[MemDb], apps: &Apps) {
    let (seed, nodes) = (options.seed, options.nodes);
    let lose_last_flushed = options.bugs.contains(&Bug::LoseLastFlushed);
    for id in 1..=nodes {
        let db = dbs[id as usize - 1].clone();
        let incarnation = Cell::new(0u64);
        let (clock, apps) = (clocks[id as usize - 1].clone(), apps.clone());
        sim.host(host_name(id), move || {
            incarnation.set(incarnation.get() + 1);
            if incarnation.get() > 1 {
                // The host was crashed: what it had not flushed is gone.
                if lose_last_flushed {
                    db.crash_losing_last_synced("raft-log");
                } else {
                    db.crash();
                }
            }
            // A restarted node must not regenerate the ids of its previous life.
            let node_seed = seed ^ (id << 48) ^ (incarnation.get() << 32);
            run_node_with(id, nodes, db.clone(), node_seed, clock.clone(), Some(apps.clone()))
        });
    }
}

/// The setup client, the voting clients spread over their hosts, and the liveness
/// checker; returns how many client hosts there are.
fn add_clients(sim: &mut turmoil::Sim<'_>, options: &SimOptions, workload: &Rc<Workload>) -> usize {
    sim.client("setup", workload.clone().setup(options.polls));
    let client_hosts = options.client_hosts.clamp(1, options.clients.max(1));
    for host in 0..client_hosts {
        let indexes: Vec<usize> = (host..options.clients).step_by(client_hosts).collect();
        match indexes[..] {
            // Run as its host's own task, as before hosts were shared: old seeds replay.
            [index] => sim.client(format!("client{host}"), workload.clone().client(index)),
            _ => sim.client(format!("client{host}"), workload.clone().clients(indexes)),
        }
    }
    sim.client("checker", workload.clone().liveness(options.heal_bound));
    client_hosts
}

/// Steps the simulation to its end, applying the schedule between steps; returns why the
/// simulation itself failed, if it did.
fn drive(
    sim: &mut turmoil::Sim<'_>,
    chaos: &mut Chaos,
    schedule: &[Scheduled],
    workload: &Workload,
    read_burst: Duration,
) -> Option<String> {
    let mut pending = schedule.iter().peekable();
    let mut leader = None;
    loop {
        let now_ms = sim.elapsed().as_millis() as u64;
        let shaken = apply_due(sim, chaos, &mut pending, &workload.history, now_ms);
        if !read_burst.is_zero() {
            let now_leader = chaos.leader();
            if shaken || (now_leader.is_some() && now_leader != leader) {
                workload.read_burst_until_ms.set(now_ms + read_burst.as_millis() as u64);
            }
            leader = now_leader.or(leader);
        }
        match step(sim) {
            Ok(true) => return None,
            Ok(false) => {}
            Err(error) => return Some(error),
        }
    }
}

/// Applies the scheduled actions that are due, then crashes the nodes that reached an
/// armed crash point, recording each in the history; returns whether any of them may
/// have moved the leadership (a read burst tests the read barrier then).
fn apply_due(
    sim: &mut turmoil::Sim<'_>,
    chaos: &mut Chaos,
    pending: &mut Peekable<std::slice::Iter<'_, Scheduled>>,
    history: &RefCell<History>,
    now_ms: u64,
) -> bool {
    let mut shaken = false;
    while let Some(step) = pending.next_if(|s| s.at <= sim.elapsed()) {
        let what = chaos.apply(sim, &step.action);
        shaken |= matches!(
            step.action,
            Action::Restart(_)
                | Action::RestartOldLeader
                | Action::RestartWithoutOldLeader
                | Action::HealAll
                | Action::IsolateLeader
        );
        history.borrow_mut().push(Event::Fault { at_ms: now_ms, what });
    }
    for what in chaos.crash_tripped(sim) {
        shaken = true;
        history.borrow_mut().push(Event::Fault { at_ms: now_ms, what });
    }
    shaken
}

/// One simulation step: `Ok(true)` once every client is done, or why the simulation
/// failed.
fn step(sim: &mut turmoil::Sim<'_>) -> Result<bool, String> {
    // A node that panics (an assertion in openraft or in our apply) is a finding, not
    // a crash of the harness: tokio_unstable makes its runtime shut down and turmoil
    // re-raise the panic here.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.step())) {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(e.to_string()),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a simulated host panicked".to_string());
            Err(format!("panic: {message}"))
        }
    }
}

/// The verdict: the checker over the history and the final states (unless the simulation
/// itself failed), and what the run did.
fn report(
    options: &SimOptions,
    schedule: Vec<Scheduled>,
    simulated: Duration,
    apps: &Apps,
    workload: &Workload,
    error: Option<String>,
) -> Report {
    let nodes = final_states(apps, options.nodes);
    let history = workload.history.borrow().clone();
    let violations = if error.is_none() { checker::check(&history, &nodes) } else { Vec::new() };
    let timings = workload.timings.borrow().clone();
    let trace = trace_hash(&history, &nodes, &timings);
    let final_states = nodes.iter().map(|n| (n.id, n.applied_index, n.state.hash_hex())).collect();
    Report {
        seed: options.seed,
        replay: options.replay_command(),
        trace,
        violations,
        votes_acknowledged: history.votes().filter(|v| v.acknowledged().is_some()).count(),
        requests: history.votes().count() + history.reads().count(),
        faults_injected: schedule.iter().filter(|s| s.action != Action::HealAll).count(),
        schedule,
        history,
        simulated,
        timings,
        final_states,
        error,
    }
}

fn final_states(apps: &Apps, nodes: u64) -> Vec<NodeState> {
    let apps = apps.lock().unwrap_or_else(|p| p.into_inner());
    (1..=nodes)
        .filter_map(|id| {
            let app = apps.get(&id)?;
            let applied = app.node.sm.read();
            Some(NodeState {
                id,
                applied_index: applied.last_applied.map_or(0, |l| l.index),
                state: applied.state.clone(),
            })
        })
        .collect()
}

fn trace_hash(history: &History, nodes: &[NodeState], timings: &[(&'static str, u64)]) -> String {
    let mut hasher = Sha256::new();
    for event in &history.events {
        hasher.update(event.to_string().as_bytes());
        hasher.update(b"\n");
    }
    // The post-heal timings and the final states (whose hash includes the leader's
    // timestamp of the probe vote) are hashed too: they replay like the rest. They once
    // varied by a few milliseconds between runs of one seed, until every hyper pool in
    // the simulation held a single host (`net`'s module documentation says why).
    for (what, ms) in timings {
        hasher.update(format!("{what} {ms}ms\n").as_bytes());
    }
    for node in nodes {
        hasher.update(format!("node{} {} {}\n", node.id, node.applied_index, node.state.hash_hex()).as_bytes());
    }
    tally_raft::sm::hex(&hasher.finalize()[..8])
}
