//! `tally-sim`: deterministic chaos simulations of a cluster running the real node code,
//! for chaos testers. Each seed gives a verdict and a trace hash; the same seed (and the
//! same build) replays the same run.
//!
//! A binary of its own, built only when asked for (`cargo build --release -p
//! tally-sim-tests`): it compiles the node's deliberate bugs (`--inject-bug`), which the
//! product's `tally-node` and `tally` must not carry.
//!
//! Every seed runs in a fresh process of this same binary (`--child`): a simulation that
//! runs after others in one process can diverge (some process-wide state in a dependency),
//! so a seed from a range run would not always replay alone. Processes also let the seeds
//! use every core (`--jobs`).

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Range;
use std::process::{Command, ExitCode, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use clap::Parser;
use tally_sim_tests::faults::{self, FaultKind};
use tally_sim_tests::{run, Bug, SimOptions};

/// Exit status: 0 every seed passed, 1 a seed found a violation (or a run failed), 2 bad
/// usage.
fn main() -> ExitCode {
    let args = Args::parse();
    match run_seeds(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
        // A reader that stopped early (`| head`) is not a failure of the run.
        Err(Failure::ClosedOutput) => ExitCode::SUCCESS,
    }
}

enum Failure {
    Usage(String),
    Failed(String),
    ClosedOutput,
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::BrokenPipe => Failure::ClosedOutput,
            _ => Failure::Failed(error.to_string()),
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Failed(message)
    }
}

impl From<serde_json::Error> for Failure {
    fn from(error: serde_json::Error) -> Self {
        Failure::Failed(error.to_string())
    }
}

/// Deterministic chaos simulations of a Tally cluster running the real node code.
#[derive(Parser, Debug)]
#[command(name = "tally-sim", version)]
pub struct Args {
    /// Run one seed.
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Run a range of seeds, `A..B` (B excluded).
    #[arg(long, value_parser = parse_range)]
    pub seeds: Option<Range<u64>>,
    /// Draw each run's shape from its seed (clients, duration, voters, polls, read mix,
    /// fault kinds), as TigerBeetle's VOPR does; options given here are kept as given.
    #[arg(long)]
    pub swarm: bool,
    /// Nodes in the simulated cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(3..=5))]
    pub nodes: u64,
    /// Fault kinds to draw from, comma-separated (default: all): isolate-leader, split,
    /// one-way, flap, hold, latency, loss, crash, crash-majority, pause, clock-skew,
    /// crash-in-flush, crash-after-apply, crash-leader-first, failed-fsync, disk-full,
    /// torn-write.
    #[arg(long, value_delimiter = ',', value_parser = parse_fault)]
    pub faults: Vec<FaultKind>,
    /// Simulated seconds of the fault phase [default: 30].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub duration_secs: Option<u64>,
    /// Simulated clients sending votes and reads [default: 4].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub clients: Option<u64>,
    /// Simulated hosts the clients share [default: one per client].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub client_hosts: Option<u64>,
    /// Polls the clients vote in [default: 3].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub polls: Option<u64>,
    /// Voters per poll [default: 3 per client and simulated second, at least 100].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub voters: Option<u64>,
    /// Share of requests that are linearizable reads, `N/D` [default: 1/8].
    #[arg(long, value_parser = parse_ratio)]
    pub read_ratio: Option<(u32, u32)>,
    /// For this long after each restart, crash and leader change, half the requests are
    /// linearizable reads; 0 turns it off [default: 1000].
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub read_burst_ms: Option<u64>,
    /// Print the fault schedule and every client event of each run.
    #[arg(long)]
    pub verbose: bool,
    /// Switch on a deliberate bug, to see the checker catch it: ack-before-commit,
    /// skip-dedup, lose-last-flushed or resume-leadership.
    #[arg(long, value_parser = parse_bug)]
    pub inject_bug: Vec<Bug>,
    /// Seeds run at once, each in its own process (default: the number of cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub jobs: Option<u64>,
    /// Internal: run the one `--seed` here and print its result as JSON.
    #[arg(long, hide = true, requires = "seed")]
    pub child: bool,
}

impl Args {
    /// The options of the run of `seed`: the swarm's picks or the defaults, then every
    /// option given on the command line.
    fn options(&self, seed: u64) -> SimOptions {
        let mut options = if self.swarm { SimOptions::swarm(seed, self.nodes) } else { SimOptions::new(seed) };
        options.nodes = self.nodes;
        options.bugs = self.inject_bug.clone();
        if !self.faults.is_empty() {
            options.faults = self.faults.clone();
        }
        if let Some(secs) = self.duration_secs {
            options.fault_phase = Duration::from_secs(secs);
        }
        if let Some(clients) = self.clients {
            options.clients = clients as usize;
        }
        // One host per client unless asked (or the swarm picked) otherwise.
        options.client_hosts = match self.client_hosts {
            Some(hosts) => hosts as usize,
            None if self.swarm => options.client_hosts,
            None => options.clients,
        };
        options.client_hosts = options.client_hosts.min(options.clients);
        if let Some(polls) = self.polls {
            options.polls = polls as usize;
        }
        if let Some(voters) = self.voters {
            options.voters = Some(voters as usize);
        } else if self.swarm && (self.clients.is_some() || self.duration_secs.is_some()) {
            // The swarm's pool was for its own clients and length.
            options.voters = None;
        }
        if let Some(ratio) = self.read_ratio {
            options.read_ratio = ratio;
        }
        if let Some(ms) = self.read_burst_ms {
            options.read_burst = Duration::from_millis(ms);
        }
        options
    }
}

/// What a child process reports for its seed.
#[derive(Debug, Serialize, Deserialize)]
struct SeedResult {
    seed: u64,
    passed: bool,
    acknowledged: usize,
    requests: usize,
    faults: usize,
    violations: usize,
    simulated_secs: f64,
    trace: String,
    /// The options the seed ran with, as flags (the swarm's picks spelled out).
    shape: String,
    /// `--verbose` output, then (on failure) the explanation.
    verbose: String,
    explanation: String,
}

/// Marks the child's result line among anything else it prints.
const RESULT_PREFIX: &str = "tally-sim-result ";

fn parse_range(text: &str) -> Result<Range<u64>, String> {
    let (start, end) = text.split_once("..").ok_or_else(|| format!("{text:?} is not A..B"))?;
    let start: u64 = start.parse().map_err(|_| format!("{start:?} is not a number"))?;
    let end: u64 = end.parse().map_err(|_| format!("{end:?} is not a number"))?;
    if end <= start {
        return Err(format!("{text:?} is empty"));
    }
    Ok(start..end)
}

fn parse_ratio(text: &str) -> Result<(u32, u32), String> {
    let (n, d) = text.split_once('/').ok_or_else(|| format!("{text:?} is not N/D"))?;
    let n: u32 = n.parse().map_err(|_| format!("{n:?} is not a number"))?;
    let d: u32 = d.parse().map_err(|_| format!("{d:?} is not a number"))?;
    if d == 0 || n > d {
        return Err(format!("{text:?} is not a share between 0/1 and 1/1"));
    }
    Ok((n, d))
}

fn parse_fault(text: &str) -> Result<FaultKind, String> {
    FaultKind::parse(text).ok_or_else(|| {
        let names: Vec<_> = faults::ALL.iter().map(|k| k.name()).collect();
        format!("unknown fault {text:?}; one of {}", names.join(", "))
    })
}

fn parse_bug(text: &str) -> Result<Bug, String> {
    Bug::parse(text).ok_or_else(|| {
        format!("unknown bug {text:?}; one of ack-before-commit, skip-dedup, lose-last-flushed, resume-leadership")
    })
}

/// Runs the seeds, printing a verdict and a trace per seed and a summary; fails if any
/// seed found a violation.
fn run_seeds(args: Args) -> Result<(), Failure> {
    if args.child {
        return run_child(&args);
    }
    let seeds = match (args.seed, &args.seeds) {
        (Some(seed), _) => seed..seed + 1,
        (None, Some(range)) => range.clone(),
        (None, None) => return Err(Failure::Usage("give --seed N or --seeds A..B".into())),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let jobs = args.jobs.unwrap_or(cores).min(seeds.end - seeds.start).max(1);
    // Written with `?`, so that a closed pipe (`| head`) ends the run quietly.
    let mut out = std::io::stdout().lock();
    let started = Instant::now();
    let mut totals = Totals::default();
    let queue = Mutex::new(seeds.clone());
    let (results, finished) = mpsc::channel::<Finished>();
    std::thread::scope(|scope| -> Result<(), Failure> {
        for _ in 0..jobs {
            let (queue, results, args) = (&queue, results.clone(), &args);
            scope.spawn(move || run_queue(args, queue, results));
        }
        drop(results);
        print_in_order(&mut out, &args, &seeds, finished, &mut totals)
    })?;
    totals.print_summary(&mut out, seeds.end - seeds.start, jobs, started.elapsed())
}

/// A seed that has run: its result, and how long it took.
type Finished = (u64, Result<SeedResult, String>, Duration);

/// One worker: runs seeds from the queue until it is empty or the printer has gone.
fn run_queue(args: &Args, queue: &Mutex<Range<u64>>, results: mpsc::Sender<Finished>) {
    loop {
        let Some(seed) = queue.lock().unwrap_or_else(|p| p.into_inner()).next() else { return };
        let seed_started = Instant::now();
        let result = run_in_child(args, seed);
        if results.send((seed, result, seed_started.elapsed())).is_err() {
            return;
        }
    }
}

/// Prints each seed's verdict in seed order, whichever child finishes first.
fn print_in_order(
    out: &mut impl Write,
    args: &Args,
    seeds: &Range<u64>,
    finished: mpsc::Receiver<Finished>,
    totals: &mut Totals,
) -> Result<(), Failure> {
    let total = seeds.end - seeds.start;
    let mut waiting = BTreeMap::new();
    let mut next = seeds.start;
    for (seed, result, took) in finished {
        waiting.insert(seed, (result, took));
        while let Some((result, took)) = waiting.remove(&next) {
            let done = next - seeds.start + 1;
            let r = result.map_err(|e| format!("seed {next}: {e}"))?;
            out.write_all(r.verbose.as_bytes())?;
            let verdict = if r.passed { "PASS" } else { "FAIL" };
            writeln!(
                out,
                "[{done}/{total}] seed {}: {verdict}  acknowledged {}  requests {}  faults {}  simulated {:.1}s  in {:.1}s",
                r.seed, r.acknowledged, r.requests, r.faults, r.simulated_secs, took.as_secs_f64()
            )?;
            writeln!(out, "trace {}", r.trace)?;
            if args.swarm {
                writeln!(out, "shape {}", r.shape)?;
            }
            if !r.passed {
                eprint!("{}", r.explanation);
            }
            totals.add(&r);
            next += 1;
        }
    }
    Ok(())
}

/// What the seeds printed so far add up to.
#[derive(Default)]
struct Totals {
    failed: Vec<u64>,
    acknowledged: usize,
    faults_injected: usize,
    violations: usize,
}

impl Totals {
    fn add(&mut self, result: &SeedResult) {
        if !result.passed {
            self.failed.push(result.seed);
        }
        self.acknowledged += result.acknowledged;
        self.faults_injected += result.faults;
        self.violations += result.violations;
    }

    /// The summary line; fails if any seed did.
    fn print_summary(&self, out: &mut impl Write, total: u64, jobs: u64, took: Duration) -> Result<(), Failure> {
        let Totals { failed, acknowledged, faults_injected, violations } = self;
        let minutes = took.as_secs_f64() / 60.0;
        writeln!(
            out,
            "summary: {total} seeds in {:.1} min ({:.0} seeds/min, {jobs} at once), {acknowledged} votes acknowledged, {faults_injected} faults injected, {violations} violations{}",
            minutes,
            total as f64 / minutes.max(1e-9),
            if failed.is_empty() { String::new() } else { format!(", failing seeds {failed:?}") }
        )?;
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Failure::Failed(format!("VIOLATION: {} of {total} seeds found violations", failed.len())))
        }
    }
}

/// Runs `seed` in a fresh process of this binary, with the same options.
fn run_in_child(args: &Args, seed: u64) -> Result<SeedResult, String> {
    let mut command = Command::new(std::env::current_exe().map_err(|e| e.to_string())?);
    command.args(["--child", "--seed", &seed.to_string(), "--nodes", &args.nodes.to_string()]);
    if args.swarm {
        command.arg("--swarm");
    }
    let given = [
        ("--duration-secs", args.duration_secs),
        ("--clients", args.clients),
        ("--client-hosts", args.client_hosts),
        ("--polls", args.polls),
        ("--voters", args.voters),
        ("--read-burst-ms", args.read_burst_ms),
    ];
    for (flag, value) in given {
        if let Some(value) = value {
            command.args([flag, &value.to_string()]);
        }
    }
    if let Some((n, d)) = args.read_ratio {
        command.args(["--read-ratio", &format!("{n}/{d}")]);
    }
    if !args.faults.is_empty() {
        let names: Vec<&str> = args.faults.iter().map(|f| f.name()).collect();
        command.args(["--faults", &names.join(",")]);
    }
    for bug in &args.inject_bug {
        command.args(["--inject-bug", bug.name()]);
    }
    if args.verbose {
        command.arg("--verbose");
    }
    let output = command.stdin(Stdio::null()).stderr(Stdio::inherit()).output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find_map(|line| line.strip_prefix(RESULT_PREFIX));
    match line {
        Some(json) => serde_json::from_str(json).map_err(|e| e.to_string()),
        None => Err(format!("the simulation process ended without a result ({})", output.status)),
    }
}

/// The child's side: one seed, in this process.
fn run_child(args: &Args) -> Result<(), Failure> {
    let seed = args.seed.ok_or_else(|| Failure::Usage("--child needs --seed".into()))?;
    let options = args.options(seed);
    init_logs();
    let report = run(&options);
    let mut verbose = String::new();
    if args.verbose {
        verbose += &format!("seed {seed}: {}\n", report.replay);
        verbose += &format!("seed {seed}: fault schedule\n");
        for step in &report.schedule {
            verbose += &format!("  {:>7}ms {}\n", step.at.as_millis(), step.action);
        }
        verbose += &format!("seed {seed}: events\n");
        for event in &report.history.events {
            verbose += &format!("  {event}\n");
        }
        for (what, ms) in &report.timings {
            verbose += &format!("  after the heal: {what} in {ms}ms\n");
        }
        for (node, index, hash) in &report.final_states {
            verbose += &format!("  final state of node{node}: index {index}, state {hash}\n");
        }
    }
    let result = SeedResult {
        seed,
        passed: report.passed(),
        acknowledged: report.votes_acknowledged,
        requests: report.requests,
        faults: report.faults_injected,
        violations: report.violations.len() + usize::from(report.error.is_some()),
        simulated_secs: report.simulated.as_secs_f64(),
        trace: report.trace.clone(),
        shape: report.replay.clone(),
        verbose,
        explanation: if report.passed() { String::new() } else { report.explain() },
    };
    println!("{RESULT_PREFIX}{}", serde_json::to_string(&result)?);
    Ok(())
}

/// Logs the nodes' events to stderr when `RUST_LOG` is set, each stamped with the
/// simulated time (not the wall clock, so that two runs' logs diff line by line).
fn init_logs() {
    let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() else { return };
    struct SimTime;
    impl tracing_subscriber::fmt::time::FormatTime for SimTime {
        fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
            match turmoil::sim_elapsed() {
                Some(elapsed) => write!(w, "{:>9.3}ms", elapsed.as_secs_f64() * 1e3),
                None => write!(w, "{:>11}", "-"),
            }
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(SimTime)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_names_parse() {
        assert_eq!(parse_range("3..7"), Ok(3..7));
        assert!(parse_range("7..3").is_err());
        assert!(parse_range("7").is_err());
        assert_eq!(parse_fault("crash-majority"), Ok(FaultKind::CrashMajority));
        assert!(parse_fault("meteor").is_err());
        assert_eq!(parse_bug("skip-dedup"), Ok(Bug::SkipDedup));
    }

    #[test]
    fn the_command_line_is_consistent() {
        <Args as clap::CommandFactory>::command().debug_assert();
    }
}
