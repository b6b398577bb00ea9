//! `tally-sim` as chaos testers run it: "the same seed gives the same trace" is checked
//! the way they rely on it, a seed from a range replayed by itself.

use std::process::Command;

/// Runs `tally-sim` with `args`; returns the exit code and what it printed (stdout, then the
/// explanations of failed seeds from stderr).
fn tally_sim(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tally-sim")).args(args).output().expect("tally-sim runs");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap_or(-1), printed)
}

fn traces(stdout: &str) -> Vec<String> {
    stdout.lines().filter(|line| line.starts_with("trace ")).map(str::to_string).collect()
}

#[test]
fn a_seed_replays_alone_exactly_as_it_ran_in_a_range() {
    // A chaos tester runs a range, then replays one seed of it by itself.
    let (code, range) = tally_sim(&["--seeds", "72..76", "--jobs", "2"]);
    assert_eq!(code, 0, "{range}");
    let in_range = traces(&range);
    assert_eq!(in_range.len(), 4, "{range}");
    let alone: Vec<String> =
        (72..76).map(|seed| traces(&tally_sim(&["--seed", &seed.to_string()]).1).concat()).collect();
    assert_eq!(in_range, alone, "a seed traced differently alone than in its range");
    // And a different seed is a different run.
    assert_ne!(in_range[0], in_range[1]);
}

#[test]
fn an_injected_bug_makes_the_run_fail_with_the_seed_and_its_history() {
    let (code, stdout) = tally_sim(&["--seeds", "1..3", "--inject-bug", "skip-dedup"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("violation, rule 2"), "{stdout}");
    assert!(stdout.contains("replay: tally-sim --seed"), "{stdout}");
    assert!(stdout.contains("fault schedule:"), "{stdout}");
}

/// The `(replay: ...)` command of the first failing seed, as words after `tally-sim`.
fn replay_words(printed: &str) -> Vec<String> {
    let line = printed.lines().find_map(|l| l.split_once("(replay: tally-sim ")).map(|(_, r)| r.trim_end_matches(')'));
    let line = line.unwrap_or_else(|| panic!("no replay command in:\n{printed}"));
    line.split_whitespace().filter(|w| *w != "--verbose").map(str::to_string).collect()
}

#[test]
fn a_failing_seed_prints_a_replay_command_with_every_option_that_replays_it() {
    let args = [
        "--seed",
        "1",
        "--clients",
        "6",
        "--client-hosts",
        "2",
        "--duration-secs",
        "8",
        "--polls",
        "2",
        "--voters",
        "30",
        "--read-ratio",
        "1/4",
        "--read-burst-ms",
        "500",
        "--faults",
        "crash,split",
        "--inject-bug",
        "skip-dedup",
    ];
    let (code, printed) = tally_sim(&args);
    assert_eq!(code, 1, "{printed}");
    let replay = replay_words(&printed).join(" ");
    for flag in [
        "--seed 1",
        "--nodes 3",
        "--clients 6",
        "--client-hosts 2",
        "--duration-secs 8",
        "--polls 2",
        "--voters 30",
        "--read-ratio 1/4",
        "--read-burst-ms 500",
        "--faults crash,split",
        "--inject-bug skip-dedup",
    ] {
        assert!(replay.contains(flag), "{flag:?} missing from the replay command {replay:?}");
    }
    let words = replay_words(&printed);
    let (again, replayed) = tally_sim(&words.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(again, 1, "{replayed}");
    assert_eq!(traces(&printed), traces(&replayed), "the replay command ran another history");
}

#[test]
fn a_swarm_seed_spells_out_its_shape_and_the_shape_replays_it() {
    let (code, printed) = tally_sim(&["--swarm", "--seeds", "17..19"]);
    assert_eq!(code, 0, "{printed}");
    let shapes: Vec<&str> = printed.lines().filter_map(|l| l.strip_prefix("shape tally-sim ")).collect();
    assert_eq!(shapes.len(), 2, "{printed}");
    assert_ne!(shapes[0].replace("--seed 17", ""), shapes[1].replace("--seed 18", ""), "two seeds, one shape");
    let (again, replayed) = tally_sim(&shapes[0].split_whitespace().collect::<Vec<_>>());
    assert_eq!(again, 0, "{replayed}");
    assert_eq!(traces(&printed)[0], traces(&replayed)[0], "the swarm's shape, spelled out, ran another history");
}
