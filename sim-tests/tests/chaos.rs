//! Chaos simulations: fixed seeds with every fault kind, determinism, and proof that the
//! checker catches injected bugs. `SIM_SEED=<n>` runs one seed of `seeds_pass_the_checker`.

use tally_sim_tests::{run, Bug, SimOptions};

/// One simulation at a time: under CPU contention from parallel runs, a few runs still
/// diverge (some real-time dependence not yet found; see README), so they are serialised.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Seeds CI runs on every change; `tally sim --seeds A..B` runs more.
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
