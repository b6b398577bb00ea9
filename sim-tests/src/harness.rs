//! One simulated run from one seed: nodes, clients, the fault schedule applied between
//! simulation steps, then the checker over the history and the final states.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::{Digest, Sha256};
use tally_storage::MemDb;

use crate::checker::{self, NodeState, Violation};
use crate::faults::{self, Action, FaultKind, Scheduled};
use crate::history::{Event, History};
use crate::workload::Workload;
use crate::{host_name, run_node_with, Apps, SimClock};

/// A deliberate bug to switch on, to show that the checker catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bug {
    /// The leader answers votes as recorded when it proposes them, before commit.
    AckBeforeCommit,
    /// Apply records a second vote by the same voter.
    SkipDedup,
    /// A crash also loses the last log entry that was flushed.
    LoseLastFlushed,
}

impl Bug {
    pub const ALL: [Bug; 3] = [Bug::AckBeforeCommit, Bug::SkipDedup, Bug::LoseLastFlushed];

    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeCommit => "ack-before-commit",
            Bug::SkipDedup => "skip-dedup",
            Bug::LoseLastFlushed => "lose-last-flushed",
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
    pub polls: usize,
    pub voters: usize,
    pub bugs: Vec<Bug>,
}

impl SimOptions {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            nodes: 3,
            fault_phase: Duration::from_secs(30),
            heal_bound: Duration::from_secs(30),
            faults: faults::ALL.to_vec(),
            clients: 4,
            polls: 3,
            voters: 100,
            bugs: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct Report {
    pub seed: u64,
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
        let mut out = format!("seed {} FAILED (replay: tally sim --seed {} --verbose)\n", self.seed, self.seed);
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
            out += &format!(
                "... and {more} more violations (tally sim --seed {} --verbose shows the whole run)\n",
                self.seed
            );
        }
        out
    }
}

/// How many violations a failed seed's explanation shows with their history slices.
const VIOLATIONS_EXPLAINED_MAX: usize = 3;

/// Runs one seed to its verdict.
pub fn run(options: &SimOptions) -> Report {
    let seed = options.seed;
    tally_raft::bugs::set(tally_raft::bugs::Bugs {
        ack_before_commit: options.bugs.contains(&Bug::AckBeforeCommit),
        skip_dedup: options.bugs.contains(&Bug::SkipDedup),
    });
    let lose_last_flushed = options.bugs.contains(&Bug::LoseLastFlushed);
    let fault_phase_end = Duration::from_secs(3) + options.fault_phase;
    let total = fault_phase_end + options.heal_bound * 3;
    let mut sim = crate::simulation(seed, total);
    let history = Rc::new(RefCell::new(History::default()));
    let apps: Apps = Arc::new(Mutex::new(BTreeMap::new()));
    let clocks: Vec<SimClock> = (0..options.nodes).map(|_| SimClock::default()).collect();
    for id in 1..=options.nodes {
        let db = MemDb::new();
        let incarnation = Cell::new(0u64);
        let (clock, apps) = (clocks[id as usize - 1].clone(), apps.clone());
        let nodes = options.nodes;
        sim.host(host_name(id), move || {
            incarnation.set(incarnation.get() + 1);
            if incarnation.get() > 1 {
                // The host was crashed: what it had not flushed is gone.
                if lose_last_flushed {
                    db.crash_losing_last_flushed("log");
                } else {
                    db.crash();
                }
            }
            // A restarted node must not regenerate the ids of its previous life.
            let node_seed = seed ^ (id << 48) ^ (incarnation.get() << 32);
            run_node_with(id, nodes, db.clone(), node_seed, clock.clone(), Some(apps.clone()))
        });
    }
    let workload = Rc::new(Workload {
        seed,
        nodes: options.nodes,
        voters: options.voters,
        fault_phase_end,
        polls: RefCell::new(Vec::new()),
        history: history.clone(),
        timings: RefCell::new(Vec::new()),
    });
    sim.client("setup", workload.clone().setup(options.polls));
    for index in 0..options.clients {
        sim.client(format!("client{index}"), workload.clone().client(index));
    }
    sim.client("checker", workload.clone().liveness(options.heal_bound));

    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa_u64);
    let schedule = faults::schedule(&mut rng, &options.faults, options.nodes, Duration::from_secs(5), fault_phase_end);
    let mut chaos =
        Chaos { nodes: options.nodes, clients: options.clients, crashed: BTreeSet::new(), clocks, apps: apps.clone() };
    let mut pending = schedule.iter().peekable();
    let mut error = None;
    loop {
        while let Some(step) = pending.next_if(|s| s.at <= sim.elapsed()) {
            let what = chaos.apply(&mut sim, &step.action);
            history.borrow_mut().push(Event::Fault { at_ms: sim.elapsed().as_millis() as u64, what });
        }
        // A node that panics (an assertion in openraft or in our apply) is a finding, not
        // a crash of the harness: tokio_unstable makes its runtime shut down and turmoil
        // re-raise the panic here.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.step())) {
            Ok(Ok(true)) => break,
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                error = Some(e.to_string());
                break;
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a simulated host panicked".to_string());
                error = Some(format!("panic: {message}"));
                break;
            }
        }
    }
    let simulated = sim.elapsed();
    let nodes = final_states(&apps, options.nodes);
    let history = history.borrow().clone();
    let violations = if error.is_none() { checker::check(&history, &nodes) } else { Vec::new() };
    let trace = trace_hash(&history, &nodes);
    let timings = workload.timings.borrow().clone();
    let final_states = nodes.iter().map(|n| (n.id, n.applied_index, n.state.hash_hex())).collect();
    Report {
        seed,
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

/// Applies fault actions to the simulation from outside it.
struct Chaos {
    nodes: u64,
    clients: usize,
    crashed: BTreeSet<u64>,
    clocks: Vec<SimClock>,
    apps: Apps,
}

impl Chaos {
    fn others(&self, node: u64) -> Vec<String> {
        (1..=self.nodes).filter(|n| *n != node).map(host_name).collect()
    }

    fn everyone_else(&self, node: u64) -> Vec<String> {
        let mut hosts = self.others(node);
        hosts.extend((0..self.clients).map(|c| format!("client{c}")));
        hosts.extend(["setup".to_string(), "checker".to_string()]);
        hosts
    }

    fn leader(&self) -> Option<u64> {
        let apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.iter()
            .filter(|(id, _)| !self.crashed.contains(id))
            .find_map(|(_, app)| app.node.metrics().current_leader)
            .filter(|leader| !self.crashed.contains(leader))
    }

    fn repair_network(&self, sim: &mut turmoil::Sim<'_>) {
        for a in 1..=self.nodes {
            for b in self.everyone_else(a) {
                sim.repair(host_name(a), b.as_str());
                sim.release(host_name(a), b.as_str());
                sim.set_link_fail_rate(host_name(a), b.as_str(), 0.0);
                sim.set_link_max_message_latency(host_name(a), b.as_str(), crate::LINK_LATENCY_MAX);
            }
        }
    }

    /// Applies `action`; returns what it did, resolved (e.g. which node led).
    fn apply(&mut self, sim: &mut turmoil::Sim<'_>, action: &Action) -> String {
        match action {
            Action::IsolateLeader => match self.leader() {
                Some(leader) => {
                    for other in self.others(leader) {
                        sim.partition(host_name(leader), other.as_str());
                    }
                    format!("isolate the leader, node{leader}")
                }
                None => "isolate the leader: none known, nothing done".to_string(),
            },
            Action::Split(a, b) => {
                for x in a {
                    for y in b {
                        sim.partition(host_name(*x), host_name(*y));
                    }
                }
                action.to_string()
            }
            Action::OneWay { from, to } => {
                sim.partition_oneway(host_name(*from), host_name(*to));
                action.to_string()
            }
            Action::Hold(a, b) => {
                sim.hold(host_name(*a), host_name(*b));
                action.to_string()
            }
            Action::Release(a, b) => {
                sim.release(host_name(*a), host_name(*b));
                action.to_string()
            }
            Action::Latency { a, b, max_ms } => {
                sim.set_link_max_message_latency(host_name(*a), host_name(*b), Duration::from_millis(*max_ms));
                action.to_string()
            }
            Action::Loss { a, b, percent } => {
                sim.set_link_fail_rate(host_name(*a), host_name(*b), f64::from(*percent) / 100.0);
                action.to_string()
            }
            Action::Crash(nodes) => {
                for node in nodes {
                    if self.crashed.insert(*node) {
                        sim.crash(host_name(*node));
                        self.apps.lock().unwrap_or_else(|p| p.into_inner()).remove(node);
                    }
                }
                action.to_string()
            }
            Action::Restart(nodes) => {
                for node in nodes {
                    if self.crashed.remove(node) {
                        sim.bounce(host_name(*node));
                    }
                }
                action.to_string()
            }
            Action::Pause(node) => {
                for other in self.everyone_else(*node) {
                    sim.hold(host_name(*node), other.as_str());
                }
                action.to_string()
            }
            Action::Resume(node) => {
                for other in self.everyone_else(*node) {
                    sim.release(host_name(*node), other.as_str());
                }
                action.to_string()
            }
            Action::Skew { node, ms } => {
                self.clocks[*node as usize - 1].skew_ms.store(*ms, Ordering::Relaxed);
                action.to_string()
            }
            Action::RepairNetwork => {
                self.repair_network(sim);
                action.to_string()
            }
            Action::HealAll => {
                self.repair_network(sim);
                for node in std::mem::take(&mut self.crashed) {
                    sim.bounce(host_name(node));
                }
                for clock in &self.clocks {
                    clock.skew_ms.store(0, Ordering::Relaxed);
                }
                action.to_string()
            }
        }
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

fn trace_hash(history: &History, nodes: &[NodeState]) -> String {
    let mut hasher = Sha256::new();
    for event in &history.events {
        hasher.update(event.to_string().as_bytes());
        hasher.update(b"\n");
    }
    // The final state hashes are left out: they include the leader's timestamp of the
    // post-heal probe vote, and post-heal timing still varies by a few milliseconds
    // between runs of one seed (cause not yet found; the history before it does not).
    // The checker has already required them to agree across nodes.
    for node in nodes {
        hasher.update(format!("node{} {}\n", node.id, node.applied_index).as_bytes());
    }
    tally_raft::sm::hex(&hasher.finalize()[..8])
}
