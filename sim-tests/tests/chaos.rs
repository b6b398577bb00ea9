//! Chaos simulations: fixed seeds with every fault kind, determinism, and proof that the
//! checker catches injected bugs. `SIM_SEED=<n>` runs one seed of `seeds_pass_the_checker`.

use tally_sim_tests::{run, Bug, SimOptions};

/// One simulation at a time: under CPU contention from parallel runs, a few runs still
/// diverge (some real-time dependence not yet found; see README), so they are serialised.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Seeds CI runs on every change; `tally-sim --seeds A..B` runs more.
const CI_SEEDS: std::ops::Range<u64> = 1..9;

fn check_seed(options: &SimOptions) {
    let report = run(options);
    println!(
        "seed {} trace {} acknowledged {} requests {} faults {} simulated {:?}",
        report.seed, report.trace, report.votes_acknowledged, report.requests, report.faults_injected, report.simulated
    );
    if let Ok(path) = std::env::var("SIM_EVENTS_FILE") {
        let mut events: Vec<String> = report.history.events.iter().map(|e| e.to_string()).collect();
        events.extend(report.final_states.iter().map(|s| format!("{s:?}")));
        events.push(format!("trace {}", report.trace));
        std::fs::write(path, events.join("\n")).expect("events file");
    }
    assert!(report.passed(), "{}", report.explain());
}

#[test]
fn seeds_pass_the_checker() {
    let _serial = serial();
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SIM_SEED is a number")],
        Err(_) => CI_SEEDS.collect(),
    };
    for seed in seeds {
        check_seed(&SimOptions::new(seed));
    }
}

#[test]
fn five_node_seeds_pass_the_checker() {
    let _serial = serial();
    for seed in 100..103 {
        let mut options = SimOptions::new(seed);
        options.nodes = 5;
        check_seed(&options);
    }
}

/// Issue 14: right after a majority crash, a linearizable read on the restarted old leader
/// saw 99 votes where 100 had been acknowledged and read back. The options are the run's
/// as it was found (`tally-sim --seed 95059 --clients 16 --duration-secs 60`, before
/// voters scaled and reads burst). Up to the HTTP server rewrite (`node::server`) this
/// replayed the report exactly and failed without the fix in `LogStore::read_vote`; the
/// server's timers shifted its schedule since, so the bug itself is now held by
/// `the_checker_catches_a_leader_resuming_its_term_after_a_restart` and
/// `tests/restart.rs`, and this seed by its own history.
#[test]
fn seed_95059_a_restarted_leader_serves_no_stale_linearizable_read() {
    let _serial = serial();
    let mut options = SimOptions::new(95059);
    options.clients = 16;
    options.client_hosts = 16;
    options.fault_phase = std::time::Duration::from_secs(60);
    options.voters = Some(100);
    options.read_burst = std::time::Duration::ZERO;
    options.faults = tally_sim_tests::faults::WITHOUT_CRASH_POINTS.to_vec();
    check_seed(&options);
}

/// Seed 95059's bug as a switch: a restarted leader resuming its old term. The
/// `crash-leader-first` fault (every node down, the old leader back first) must expose it
/// within a few seeds, and the same seeds must pass without it.
#[test]
fn the_checker_catches_a_leader_resuming_its_term_after_a_restart() {
    use tally_sim_tests::faults::FaultKind;
    let caught = caught_within(Bug::ResumeLeadership, &[FaultKind::CrashLeaderFirst], 1..11);
    let seed = caught.expect("no violation in 10 seeds with a restarted leader resuming its term");
    let _serial = serial();
    let mut options = SimOptions::new(seed);
    options.faults = vec![FaultKind::CrashLeaderFirst];
    check_seed(&options);
}

/// A few seeds of the swarm, whose shapes (clients, length, voters, read mix, faults) come
/// from the seed; `tally-sim --swarm --seeds A..B` runs many more.
#[test]
fn swarm_seeds_pass_the_checker() {
    let _serial = serial();
    for (seed, nodes) in [(6, 3), (17, 3), (18, 3), (16, 5)] {
        check_seed(&SimOptions::swarm(seed, nodes));
    }
}

/// The crash points are reached (a node dies inside a flush, and right after an apply it
/// had not persisted), and the cluster survives them.
#[test]
fn nodes_crash_inside_a_flush_and_after_an_unpersisted_apply() {
    use tally_sim_tests::faults::FaultKind;
    let _serial = serial();
    let mut options = SimOptions::new(3);
    options.faults = vec![FaultKind::CrashInFlush, FaultKind::CrashAfterApply];
    let report = run(&options);
    let faults: Vec<String> = report
        .history
        .events
        .iter()
        .filter_map(|e| match e {
            tally_sim_tests::history::Event::Fault { what, .. } => Some(what.clone()),
            _ => None,
        })
        .collect();
    println!("{}", faults.join("\n"));
    assert!(report.passed(), "{}", report.explain());
    for (scheduled, reached) in [
        ("in its next flush", "crashed inside a flush"),
        ("after its next write to sm", "crashed right after a write to sm"),
    ] {
        assert!(faults.iter().any(|f| f.contains(scheduled)), "no crash {scheduled:?} was scheduled");
        assert!(faults.iter().any(|f| f.ends_with(reached)), "no node {reached:?}: {faults:?}");
    }
}

// That a seed replays as the same trace is tested where chaos testers rely on it, one
// process per run: `cli/tests/sim.rs`.

/// The first seed in `seeds` on which the checker reports a violation with `bug` on.
fn caught_within(bug: Bug, faults: &[tally_sim_tests::faults::FaultKind], seeds: std::ops::Range<u64>) -> Option<u64> {
    let _serial = serial();
    seeds.into_iter().find(|&seed| {
        let mut options = SimOptions::new(seed);
        options.bugs = vec![bug];
        if !faults.is_empty() {
            options.faults = faults.to_vec();
        }
        let report = run(&options);
        println!("{} seed {seed}: {} violations", bug.name(), report.violations.len());
        if let Some(first) = report.violations.first() {
            println!("  first: {first}");
        }
        !report.passed()
    })
}

#[test]
fn the_checker_catches_acknowledgement_before_commit() {
    let caught = caught_within(Bug::AckBeforeCommit, &[], 1..11);
    assert!(caught.is_some(), "no violation in 10 seeds with votes acknowledged before commit");
}

#[test]
fn the_checker_catches_a_skipped_dedup_check() {
    let caught = caught_within(Bug::SkipDedup, &[], 1..11);
    assert!(caught.is_some(), "no violation in 10 seeds with the dedup check skipped");
}

#[test]
fn the_checker_catches_a_lost_flushed_entry() {
    use tally_sim_tests::faults::FaultKind;
    let caught = caught_within(Bug::LoseLastFlushed, &[FaultKind::CrashMajority, FaultKind::Crash], 1..21);
    assert!(caught.is_some(), "no violation in 20 seeds with the last flushed entry lost on restart");
}
