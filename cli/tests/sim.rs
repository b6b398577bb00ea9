//! `tally sim` as chaos testers run it: "the same seed gives the same trace" is checked
//! the way they rely on it, a seed from a range replayed by itself.

use std::process::Command;

/// Runs `tally` with `args`; returns the exit code and what it printed (stdout, then the
/// explanations of failed seeds from stderr).
fn tally(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tally")).args(args).output().expect("tally runs");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), printed)
}

fn traces(stdout: &str) -> Vec<String> {
    stdout.lines().filter(|line| line.starts_with("trace ")).map(str::to_string).collect()
}

#[test]
fn a_seed_replays_alone_exactly_as_it_ran_in_a_range() {
    // A chaos tester runs a range, then replays one seed of it by itself.
    let (code, range) = tally(&["sim", "--seeds", "72..76", "--jobs", "2"]);
    assert_eq!(code, 0, "{range}");
    let in_range = traces(&range);
    assert_eq!(in_range.len(), 4, "{range}");
    let alone: Vec<String> =
        (72..76).map(|seed| traces(&tally(&["sim", "--seed", &seed.to_string()]).1).concat()).collect();
    assert_eq!(in_range, alone, "a seed traced differently alone than in its range");
    // And a different seed is a different run.
    assert_ne!(in_range[0], in_range[1]);
}

#[test]
fn an_injected_bug_makes_the_run_fail_with_the_seed_and_its_history() {
    let (code, stdout) = tally(&["sim", "--seeds", "1..3", "--inject-bug", "skip-dedup"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("violation, rule 2"), "{stdout}");
    assert!(stdout.contains("replay: tally sim --seed"), "{stdout}");
    assert!(stdout.contains("fault schedule:"), "{stdout}");
}
