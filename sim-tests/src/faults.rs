//! The fault schedule: which faults a seed injects, when, and for how long.
//!
//! A run has a fault phase, built here as a sequence of episodes (each fault and its
//! undoing), then `HealAll` at the end of the phase, after which the cluster must converge.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use tally_storage::{CrashPoint, StorageFault};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// The leader cut off from every other node.
    IsolateLeader,
    /// The nodes split in two groups (a minority and a majority).
    Split,
    /// Messages from one node to another are dropped, not the reverse.
    OneWay,
    /// A partition that comes and goes several times.
    Flap,
    /// A link's messages held, then released all at once.
    Hold,
    /// Slow links: messages delayed up to 150 ms.
    Latency,
    /// Lossy links: some messages dropped (a TCP connection breaks with them).
    Loss,
    /// A node crashes (losing what it had not flushed) and restarts.
    Crash,
    /// A majority of nodes crash together and restart.
    CrashMajority,
    /// A node stops answering anyone for a while (all its links held).
    Pause,
    /// A node's clock runs ahead or behind by up to ten minutes.
    ClockSkew,
    /// A node crashes in the middle of its next flush (a log append, a saved vote), then
    /// restarts: what it wrote since its last flush is lost and the flush never returns.
    CrashInFlush,
    /// A node crashes right after its next apply, whose results it had not persisted, then
    /// restarts.
    CrashAfterApply,
    /// Every node crashes at once (a power loss); the old leader restarts first and the
    /// others a moment later, so that reads reach it while it alone is up in its old term.
    CrashLeaderFirst,
    /// A node's fsync fails, and every one after it; the node stays up with its Raft core
    /// stopped (refusing writes, serving stale reads) until its supervisor restarts it.
    FailedFsync,
    /// A node's disk is full: every write fails, until it restarts with space again.
    DiskFull,
    /// A node crashes inside its next flush, and the records of the append being synced
    /// reached the disk, all but the last one, torn and dropped at open.
    TornWrite,
}

pub const ALL: [FaultKind; 17] = [
    FaultKind::IsolateLeader,
    FaultKind::Split,
    FaultKind::OneWay,
    FaultKind::Flap,
    FaultKind::Hold,
    FaultKind::Latency,
    FaultKind::Loss,
    FaultKind::Crash,
    FaultKind::CrashMajority,
    FaultKind::Pause,
    FaultKind::ClockSkew,
    FaultKind::CrashInFlush,
    FaultKind::CrashAfterApply,
    FaultKind::CrashLeaderFirst,
    FaultKind::FailedFsync,
    FaultKind::DiskFull,
    FaultKind::TornWrite,
];

/// The kinds before the crash points were added (the first 11 of [`ALL`]); seed 95059's
/// flags name these.
pub const WITHOUT_CRASH_POINTS: &[FaultKind] = ALL.split_at(11).0;

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::Split => "split",
            FaultKind::OneWay => "one-way",
            FaultKind::Flap => "flap",
            FaultKind::Hold => "hold",
            FaultKind::Latency => "latency",
            FaultKind::Loss => "loss",
            FaultKind::Crash => "crash",
            FaultKind::CrashMajority => "crash-majority",
            FaultKind::Pause => "pause",
            FaultKind::ClockSkew => "clock-skew",
            FaultKind::CrashInFlush => "crash-in-flush",
            FaultKind::CrashAfterApply => "crash-after-apply",
            FaultKind::CrashLeaderFirst => "crash-leader-first",
            FaultKind::FailedFsync => "failed-fsync",
            FaultKind::DiskFull => "disk-full",
            FaultKind::TornWrite => "torn-write",
        }
    }

    pub fn parse(name: &str) -> Option<FaultKind> {
        ALL.iter().copied().find(|k| k.name() == name)
    }
}

/// One step of the schedule, applied by the harness between simulation steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Resolved when applied: whoever leads then.
    IsolateLeader,
    Split(Vec<u64>, Vec<u64>),
    OneWay {
        from: u64,
        to: u64,
    },
    Hold(u64, u64),
    Release(u64, u64),
    Latency {
        a: u64,
        b: u64,
        max_ms: u64,
    },
    Loss {
        a: u64,
        b: u64,
        percent: u8,
    },
    Crash(Vec<u64>),
    /// Crash `node` when its store reaches `point` (the harness watches for it).
    CrashAt {
        node: u64,
        point: CrashPoint,
    },
    Restart(Vec<u64>),
    /// `node`'s store starts failing; the node runs on until crashed.
    Inject {
        node: u64,
        fault: StorageFault,
    },
    /// `node` crashes inside its next flush, with part of the append on disk (a torn write).
    CrashTorn(u64),
    /// Every node crashes; the leader of the moment is remembered.
    CrashWithLeader,
    /// Restarts the leader that `CrashWithLeader` crashed.
    RestartOldLeader,
    /// Restarts the rest of what `CrashWithLeader` crashed.
    RestartWithoutOldLeader,
    Pause(u64),
    Resume(u64),
    Skew {
        node: u64,
        ms: i64,
    },
    /// Undo network faults (partitions, holds, latency, loss); nodes stay as they are.
    RepairNetwork,
    /// Everything back to normal: network repaired, crashed nodes restarted, clocks right.
    HealAll,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::IsolateLeader => write!(f, "isolate the leader"),
            Action::Split(a, b) => write!(f, "partition {a:?} | {b:?}"),
            Action::OneWay { from, to } => write!(f, "drop messages node{from} -> node{to}"),
            Action::Hold(a, b) => write!(f, "hold node{a} <-> node{b}"),
            Action::Release(a, b) => write!(f, "release node{a} <-> node{b}"),
            Action::Latency { a, b, max_ms } => write!(f, "latency node{a} <-> node{b} up to {max_ms}ms"),
            Action::Loss { a, b, percent } => write!(f, "loss node{a} <-> node{b} {percent}%"),
            Action::Crash(nodes) => write!(f, "crash {nodes:?}"),
            Action::CrashAt { node, point: CrashPoint::InFlush } => write!(f, "crash node{node} in its next flush"),
            Action::CrashAt { node, point: CrashPoint::AfterWrite(keyspace) } => {
                write!(f, "crash node{node} after its next write to {keyspace}")
            }
            Action::Restart(nodes) => write!(f, "restart {nodes:?}"),
            Action::Inject { node, fault: StorageFault::FailedSync } => write!(f, "node{node}'s fsyncs fail"),
            Action::Inject { node, fault: StorageFault::DiskFull } => write!(f, "node{node}'s disk is full"),
            Action::CrashTorn(node) => write!(f, "crash node{node} in its next flush, tearing the append"),
            Action::CrashWithLeader => write!(f, "crash every node"),
            Action::RestartOldLeader => write!(f, "restart the old leader"),
            Action::RestartWithoutOldLeader => write!(f, "restart the others"),
            Action::Pause(node) => write!(f, "pause node{node}"),
            Action::Resume(node) => write!(f, "resume node{node}"),
            Action::Skew { node, ms } => write!(f, "clock of node{node} skewed by {ms}ms"),
            Action::RepairNetwork => write!(f, "repair the network"),
            Action::HealAll => write!(f, "heal everything"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    pub at: Duration,
    pub action: Action,
}

fn pick_two(rng: &mut StdRng, nodes: u64) -> (u64, u64) {
    let a = rng.gen_range(1..=nodes);
    let mut b = rng.gen_range(1..nodes);
    if b >= a {
        b += 1;
    }
    (a, b)
}

fn minority(rng: &mut StdRng, nodes: u64) -> Vec<u64> {
    let mut all: Vec<u64> = (1..=nodes).collect();
    all.shuffle(rng);
    let size = rng.gen_range(1..=(nodes - 1) / 2);
    let mut chosen = all[..size as usize].to_vec();
    chosen.sort_unstable();
    chosen
}

fn rest(nodes: u64, group: &[u64]) -> Vec<u64> {
    (1..=nodes).filter(|n| !group.contains(n)).collect()
}

/// The schedule for one run: episodes of the enabled kinds from `start` until
/// `fault_phase_end`, then `HealAll`.
pub fn schedule(
    rng: &mut StdRng,
    kinds: &[FaultKind],
    nodes: u64,
    start: Duration,
    fault_phase_end: Duration,
) -> Vec<Scheduled> {
    let mut plan = Vec::new();
    let mut at = start;
    while !kinds.is_empty() {
        let kind = kinds[rng.gen_range(0..kinds.len())];
        let length = Duration::from_millis(rng.gen_range(500..4_000));
        if at + length >= fault_phase_end {
            break;
        }
        let episode = Episode { nodes, at, length };
        match kind {
            FaultKind::IsolateLeader
            | FaultKind::Split
            | FaultKind::OneWay
            | FaultKind::Flap
            | FaultKind::Hold
            | FaultKind::Latency
            | FaultKind::Loss => episode.network(rng, kind, &mut plan),
            FaultKind::Crash | FaultKind::CrashMajority | FaultKind::CrashLeaderFirst => {
                episode.crash(rng, kind, &mut plan)
            }
            FaultKind::CrashInFlush
            | FaultKind::CrashAfterApply
            | FaultKind::FailedFsync
            | FaultKind::DiskFull
            | FaultKind::TornWrite => episode.storage(rng, kind, &mut plan),
            FaultKind::Pause | FaultKind::ClockSkew => episode.node(rng, kind, &mut plan),
        }
        at = episode.end() + Duration::from_millis(rng.gen_range(200..2_000));
    }
    plan.push(Scheduled { at: fault_phase_end, action: Action::HealAll });
    plan.sort_by_key(|s| s.at);
    plan
}

/// One fault and its undoing: the fault at `at`, undone at `at + length` (or, for some,
/// soon after).
///
/// A seed's schedule depends on the order of each method's draws from `rng`, and on the
/// order of its pushes too: `schedule`'s sort is stable, so it breaks ties between steps.
struct Episode {
    nodes: u64,
    at: Duration,
    length: Duration,
}

impl Episode {
    fn end(&self) -> Duration {
        self.at + self.length
    }

    /// Partitions, held messages, slow or lossy links; `RepairNetwork` (or a release)
    /// undoes them.
    fn network(&self, rng: &mut StdRng, kind: FaultKind, plan: &mut Vec<Scheduled>) {
        let (nodes, at, end) = (self.nodes, self.at, self.end());
        let mut push = |at: Duration, action: Action| plan.push(Scheduled { at, action });
        match kind {
            FaultKind::IsolateLeader => {
                push(at, Action::IsolateLeader);
                push(end, Action::RepairNetwork);
            }
            FaultKind::Split => {
                let small = minority(rng, nodes);
                push(at, Action::Split(small.clone(), rest(nodes, &small)));
                push(end, Action::RepairNetwork);
            }
            FaultKind::OneWay => {
                let (from, to) = pick_two(rng, nodes);
                push(at, Action::OneWay { from, to });
                push(end, Action::RepairNetwork);
            }
            FaultKind::Flap => {
                let small = minority(rng, nodes);
                let flaps = rng.gen_range(2..6u32);
                for i in 0..flaps {
                    let down = at + self.length * (2 * i) / (2 * flaps);
                    let up = at + self.length * (2 * i + 1) / (2 * flaps);
                    push(down, Action::Split(small.clone(), rest(nodes, &small)));
                    push(up, Action::RepairNetwork);
                }
            }
            FaultKind::Hold => {
                let (a, b) = pick_two(rng, nodes);
                push(at, Action::Hold(a, b));
                push(end, Action::Release(a, b));
            }
            FaultKind::Latency => {
                let (a, b) = pick_two(rng, nodes);
                push(at, Action::Latency { a, b, max_ms: rng.gen_range(20..150) });
                push(end, Action::RepairNetwork);
            }
            FaultKind::Loss => {
                let (a, b) = pick_two(rng, nodes);
                push(at, Action::Loss { a, b, percent: rng.gen_range(1..10) });
                push(end, Action::RepairNetwork);
            }
            _ => unreachable!("{kind:?} is not a network fault"),
        }
    }

    /// Nodes crashing outright, then restarting.
    fn crash(&self, rng: &mut StdRng, kind: FaultKind, plan: &mut Vec<Scheduled>) {
        let (nodes, at, end) = (self.nodes, self.at, self.end());
        let mut push = |at: Duration, action: Action| plan.push(Scheduled { at, action });
        match kind {
            FaultKind::Crash => {
                let node = rng.gen_range(1..=nodes);
                push(at, Action::Crash(vec![node]));
                push(end, Action::Restart(vec![node]));
            }
            FaultKind::CrashMajority => {
                let small = minority(rng, nodes);
                let majority = rest(nodes, &small);
                push(at, Action::Crash(majority.clone()));
                push(end, Action::Restart(majority));
            }
            FaultKind::CrashLeaderFirst => {
                push(at, Action::CrashWithLeader);
                push(end, Action::RestartOldLeader);
                push(end + Duration::from_millis(rng.gen_range(100..2_000)), Action::RestartWithoutOldLeader);
            }
            _ => unreachable!("{kind:?} is not a crash"),
        }
    }

    /// A node's store failing or crashing at a chosen point, then the node restarting.
    fn storage(&self, rng: &mut StdRng, kind: FaultKind, plan: &mut Vec<Scheduled>) {
        let (nodes, at, end) = (self.nodes, self.at, self.end());
        let mut push = |at: Duration, action: Action| plan.push(Scheduled { at, action });
        match kind {
            FaultKind::CrashInFlush | FaultKind::CrashAfterApply => {
                let node = rng.gen_range(1..=nodes);
                let point =
                    if kind == FaultKind::CrashInFlush { CrashPoint::InFlush } else { CrashPoint::AfterWrite("sm") };
                push(at, Action::CrashAt { node, point });
                push(end, Action::Restart(vec![node]));
            }
            FaultKind::FailedFsync | FaultKind::DiskFull => {
                let node = rng.gen_range(1..=nodes);
                let fault =
                    if kind == FaultKind::FailedFsync { StorageFault::FailedSync } else { StorageFault::DiskFull };
                push(at, Action::Inject { node, fault });
                // The node's exit, then its supervisor's restart.
                push(end, Action::Crash(vec![node]));
                push(end + Duration::from_millis(rng.gen_range(100..1_000)), Action::Restart(vec![node]));
            }
            FaultKind::TornWrite => {
                let node = rng.gen_range(1..=nodes);
                push(at, Action::CrashTorn(node));
                push(end, Action::Restart(vec![node]));
            }
            _ => unreachable!("{kind:?} is not a storage fault"),
        }
    }

    /// A node that stays up but misbehaves: silent for a while, or on a wrong clock.
    fn node(&self, rng: &mut StdRng, kind: FaultKind, plan: &mut Vec<Scheduled>) {
        let (nodes, at, end) = (self.nodes, self.at, self.end());
        let mut push = |at: Duration, action: Action| plan.push(Scheduled { at, action });
        match kind {
            FaultKind::Pause => {
                let node = rng.gen_range(1..=nodes);
                push(at, Action::Pause(node));
                push(end, Action::Resume(node));
            }
            // The skew stays until `HealAll`: a wrong clock is not repaired by itself.
            FaultKind::ClockSkew => {
                let node = rng.gen_range(1..=nodes);
                let ms = rng.gen_range(1_000..600_000) * if rng.gen_bool(0.5) { 1 } else { -1 };
                push(at, Action::Skew { node, ms });
            }
            _ => unreachable!("{kind:?} is not a node fault"),
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_seed_fixes_the_schedule_and_it_ends_healed() {
        let plan =
            |seed| schedule(&mut StdRng::seed_from_u64(seed), &ALL, 5, Duration::from_secs(3), Duration::from_secs(30));
        assert_eq!(plan(7), plan(7));
        assert_ne!(plan(7), plan(8));
        let last = plan(7).pop().unwrap();
        assert_eq!(last.action, Action::HealAll);
        assert!(plan(7).windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn minorities_are_minorities() {
        let mut rng = StdRng::seed_from_u64(1);
        for nodes in [3, 5] {
            for _ in 0..100 {
                let small = minority(&mut rng, nodes);
                assert!(!small.is_empty() && (small.len() as u64) * 2 < nodes, "{small:?} of {nodes}");
            }
        }
    }
}
