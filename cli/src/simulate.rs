//! `tally simulate`: a realistic election or viral poll against a real cluster.
//!
//! An electorate with regions and age groups, each region leaning its own way; a turnout
//! curve over the run (an election's morning, lunch and evening peaks, or a viral poll's
//! surge and long tail); voters who try twice (ALREADY_VOTED) or retry a request with the
//! same key (the original answer again); every request to a random node. It prints the
//! standings as they change and ends with turnout by region, checked against the cluster.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tally_api::v1::{
    BatchVote, Consistency, CreatePollRequest, OptionInput, OptionResult, PollBody, ResultsBody, ResultsQuery,
    SettingsInput, VoteBody, VoteRequest,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{segment, Client, Request};
use crate::exit::Failure;
use crate::output::{self, Format};
use crate::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Three candidates, regional leanings, turnout peaking morning, noon and evening.
    Election,
    /// Five options, a surge in the first fifth of the run, then a long tail.
    Viral,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Election => "an election",
            Kind::Viral => "a viral poll",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value_t = Kind::Election)]
    pub kind: Kind,
    /// Vote in this existing poll (its options and breakdowns are used as they are);
    /// default: create one for the run.
    #[arg(long)]
    pub poll: Option<String>,
    /// Size of the electorate.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub voters: u64,
    /// Share of the electorate that votes.
    #[arg(long, default_value_t = 0.7, value_parser = crate::bench::parse_ratio)]
    pub turnout: f64,
    /// How long the voting lasts; the turnout curve is spread over it.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=512))]
    pub connections: u64,
    /// Share of voters who try to vote a second time (a new request: ALREADY_VOTED).
    #[arg(long, default_value_t = 0.03, value_parser = crate::bench::parse_ratio)]
    pub duplicate_ratio: f64,
    /// Share of votes resent with the same idempotency key (a client retry).
    #[arg(long, default_value_t = 0.05, value_parser = crate::bench::parse_ratio)]
    pub retry_ratio: f64,
    /// Seed of the electorate and the schedule (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
}

const REGIONS: [(&str, f64); 6] =
    [("north", 0.22), ("south", 0.25), ("east", 0.18), ("west", 0.2), ("centre", 0.1), ("islands", 0.05)];
const AGE_GROUPS: [(&str, f64); 4] = [("18-29", 0.2), ("30-44", 0.27), ("45-64", 0.33), ("65+", 0.2)];
const CANDIDATES: [&str; 3] = ["Alvarez", "Baker", "Chen"];
const TOPPINGS: [&str; 5] = ["Margherita", "Pepperoni", "Mushroom", "Pineapple", "Four cheese"];
const STANDINGS_EVERY: Duration = Duration::from_secs(1);
/// The breakdown the final turnout is counted by.
const REGION: &str = "region";

fn pick<'a>(rng: &mut StdRng, weighted: &[(&'a str, f64)]) -> &'a str {
    let total: f64 = weighted.iter().map(|(_, w)| w).sum();
    let mut roll = rng.gen::<f64>() * total;
    for (name, weight) in weighted {
        if roll < *weight {
            return name;
        }
        roll -= weight;
    }
    weighted[weighted.len() - 1].0
}

/// When a voter votes, as a fraction of the run.
fn vote_time(rng: &mut StdRng, kind: Kind) -> f64 {
    match kind {
        // Three bumps (morning, lunch, evening: the biggest) over a low steady trickle.
        Kind::Election => {
            let (centre, width) = match rng.gen_range(0..10) {
                0..=2 => (0.2, 0.07),
                3..=4 => (0.5, 0.05),
                5..=8 => (0.82, 0.08),
                _ => (0.5, 1.0),
            };
            let spread: f64 = (0..4).map(|_| rng.gen::<f64>() - 0.5).sum::<f64>() * width;
            (centre + spread).clamp(0.0, 0.999)
        }
        // Exponential decay from the start: most votes in the first fifth.
        Kind::Viral => (-rng.gen::<f64>().max(1e-9).ln() / 8.0).min(0.999),
    }
}

/// One voter's preference: each region leans to one option.
fn preference(rng: &mut StdRng, region_index: usize, options: usize) -> usize {
    if rng.gen_bool(0.45) {
        region_index % options
    } else {
        rng.gen_range(0..options)
    }
}

struct Attempt {
    due: Duration,
    voter: String,
    option_id: String,
    attributes: BTreeMap<String, String>,
    key: String,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    recorded: AtomicU64,
    replayed: AtomicU64,
    already_voted: AtomicU64,
    errors: AtomicU64,
    /// The first error's code, to say why if nothing was recorded.
    first_error: std::sync::OnceLock<String>,
}

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    let client = &settings.client;
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let (poll_id, option_ids, breakdowns) = match &args.poll {
        Some(poll) => existing_poll(client, poll).await?,
        None => create_poll(client, args.kind).await?,
    };
    let plan = plan(&args, seed, &mut rng, &option_ids, &breakdowns);
    if settings.format == Format::Table {
        println!(
            "simulating {} in poll {poll_id}: {} voters, {} will vote, {} requests over {:?} (seed {seed})",
            args.kind.describe(),
            args.voters,
            plan.voting,
            plan.attempts.len(),
            args.duration
        );
    }
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let workers = spawn_senders(args.connections, plan.attempts, client, &poll_id, &counters, start);
    print_standings_until_done(client, settings.format, &poll_id, &counters, start, &workers).await;
    for worker in workers {
        worker.await?;
    }
    finish(client, settings.format, &poll_id, &plan.electorate, &counters, seed, args.poll.is_none()).await
}

/// The electorate, and who votes when.
struct Plan {
    /// Voters per region.
    electorate: BTreeMap<String, u64>,
    /// Every request to send, in the order they fall due.
    attempts: Vec<Attempt>,
    /// Voters who vote at all.
    voting: u64,
}

/// Draws the electorate and its votes from `rng`: a voter's region, age group, whether
/// they vote, when, for what, and whether they retry or try again.
fn plan(args: &Args, seed: u64, rng: &mut StdRng, option_ids: &[String], breakdowns: &[String]) -> Plan {
    let mut electorate: BTreeMap<String, u64> = BTreeMap::new();
    let mut attempts = Vec::new();
    let mut voting = 0u64;
    for n in 0..args.voters {
        let region = pick(rng, &REGIONS);
        let age = pick(rng, &AGE_GROUPS);
        *electorate.entry(region.to_string()).or_default() += 1;
        if !rng.gen_bool(args.turnout) {
            continue;
        }
        voting += 1;
        let region_index = REGIONS.iter().position(|(r, _)| *r == region).unwrap_or(0);
        let voter = format!("sim-{seed}-{n}");
        let mut attributes = BTreeMap::new();
        for (name, value) in [(REGION, region), ("age_group", age)] {
            if breakdowns.iter().any(|b| b == name) {
                attributes.insert(name.to_string(), value.to_string());
            }
        }
        let at = args.duration.mul_f64(vote_time(rng, args.kind));
        let option_id = option_ids[preference(rng, region_index, option_ids.len())].clone();
        let key = format!("{voter}-1");
        if rng.gen_bool(args.retry_ratio) {
            let retry_at = at + Duration::from_millis(rng.gen_range(50..500));
            let (voter, option_id, attributes, key) =
                (voter.clone(), option_id.clone(), attributes.clone(), key.clone());
            attempts.push(Attempt { due: retry_at, voter, option_id, attributes, key });
        }
        if rng.gen_bool(args.duplicate_ratio) {
            let again_at = at + Duration::from_millis(rng.gen_range(200..3_000));
            let other = option_ids[rng.gen_range(0..option_ids.len())].clone();
            let key = format!("{voter}-2");
            attempts.push(Attempt {
                due: again_at,
                voter: voter.clone(),
                option_id: other,
                attributes: attributes.clone(),
                key,
            });
        }
        attempts.push(Attempt { due: at, voter, option_id, attributes, key });
    }
    attempts.sort_by_key(|a| a.due);
    Plan { electorate, attempts, voting }
}

/// `connections` workers taking the attempts in turn, each sent when it falls due.
fn spawn_senders(
    connections: u64,
    attempts: Vec<Attempt>,
    client: &Client,
    poll_id: &str,
    counters: &Arc<Counters>,
    start: Instant,
) -> Vec<JoinHandle<()>> {
    let attempts = Arc::new(attempts);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (attempts, next, counters, client, poll) =
            (attempts.clone(), next.clone(), counters.clone(), client.clone(), poll_id.to_string());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(attempt) = attempts.get(i) else { return };
                tokio::time::sleep_until(start + attempt.due).await;
                send(&client, &poll, attempt, &counters).await;
            }
        }));
    }
    workers
}

/// Every second until the workers are done, the standings (on a table only).
async fn print_standings_until_done(
    client: &Client,
    format: Format,
    poll_id: &str,
    counters: &Counters,
    start: Instant,
    workers: &[JoinHandle<()>],
) {
    let mut ticker = tokio::time::interval(STANDINGS_EVERY);
    ticker.tick().await;
    while workers.iter().any(|w| !w.is_finished()) {
        ticker.tick().await;
        if format == Format::Table {
            let request = Request::get(format!("/v1/polls/{}/results", segment(poll_id)));
            if let Ok(results) = client.call::<ResultsBody>(&request).await {
                println!("{:>5.1}s  {}  {}", start.elapsed().as_secs_f64(), standings(&results), progress(counters));
            }
        }
    }
}

async fn send(client: &Client, poll: &str, attempt: &Attempt, counters: &Counters) {
    // Any node: a random one per request.
    let endpoints = client.endpoints();
    let node = client.only(&endpoints[rand::thread_rng().gen_range(0..endpoints.len())]);
    counters.sent.fetch_add(1, Ordering::Relaxed);
    let outcome = if client.has_token() {
        send_as_front_end(&node, poll, attempt).await
    } else {
        let body = VoteRequest {
            option_id: attempt.option_id.clone(),
            voter_id: Some(attempt.voter.clone()),
            attributes: Some(attempt.attributes.clone()),
        };
        let request = Request::post(format!("/v1/polls/{}/votes", segment(poll)), &body)
            .header("Idempotency-Key", attempt.key.clone());
        node.call::<VoteBody>(&request).await.map_err(|failure| failure.code)
    };
    let counter = match outcome {
        Ok(reply) if reply.replayed => &counters.replayed,
        Ok(_) => &counters.recorded,
        Err(code) if code == "ALREADY_VOTED" => &counters.already_voted,
        Err(code) => {
            let _ = counters.first_error.set(code);
            &counters.errors
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// With auth on, the voter of a single vote is the token's subject, so the simulated
/// voters are sent as a trusted front end sends them: through `votes:batch` (admin only),
/// one vote per request to keep the turnout curve.
async fn send_as_front_end(node: &Client, poll: &str, attempt: &Attempt) -> Result<VoteBody, String> {
    let vote = BatchVote {
        poll_id: None,
        option_id: attempt.option_id.clone(),
        voter_id: Some(attempt.voter.clone()),
        idempotency_key: Some(attempt.key.clone()),
        attributes: Some(attempt.attributes.clone()),
    };
    crate::vote::cast_as_front_end(node, poll, vote).await.map_err(|failure| failure.code)
}

fn progress(counters: &Counters) -> String {
    format!(
        "[sent {} recorded {} replayed {} already-voted {} errors {}]",
        counters.sent.load(Ordering::Relaxed),
        counters.recorded.load(Ordering::Relaxed),
        counters.replayed.load(Ordering::Relaxed),
        counters.already_voted.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed)
    )
}

fn standings(results: &ResultsBody) -> String {
    let parts: Vec<String> =
        results.options.iter().map(|o| format!("{} {} ({}%)", o.label, o.votes, output::float(o.percentage))).collect();
    parts.join(" · ")
}

async fn create_poll(client: &Client, kind: Kind) -> Result<(String, Vec<String>, Vec<String>), Failure> {
    let (title, options, breakdowns): (&str, &[&str], &[&str]) = match kind {
        Kind::Election => ("Simulated election", &CANDIDATES, &[REGION, "age_group"]),
        Kind::Viral => ("Best pizza?", &TOPPINGS, &[REGION]),
    };
    let body = CreatePollRequest {
        title: title.to_string(),
        description: None,
        options: options.iter().map(|text| OptionInput::Text(text.to_string())).collect(),
        start_time: None,
        end_time: None,
        settings: Some(SettingsInput {
            breakdowns: Some(breakdowns.iter().map(|b| b.to_string()).collect()),
            ..SettingsInput::default()
        }),
    };
    let poll: PollBody = client.call(&Request::post("/v1/polls", &body)).await?;
    Ok(poll_parts(poll))
}

async fn existing_poll(client: &Client, poll: &str) -> Result<(String, Vec<String>, Vec<String>), Failure> {
    Ok(poll_parts(client.call(&Request::get(format!("/v1/polls/{}", segment(poll)))).await?))
}

fn poll_parts(poll: PollBody) -> (String, Vec<String>, Vec<String>) {
    let option_ids = poll.options.into_iter().map(|o| o.option_id).collect();
    (poll.poll_id, option_ids, poll.settings.breakdowns)
}

/// One region's turnout in the summary.
#[derive(Debug, Serialize)]
struct Turnout {
    electorate: u64,
    votes: u64,
    turnout_percent: f64,
}

/// What `tally simulate -o json` prints at the end.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    poll_id: &'a str,
    seed: u64,
    sent: u64,
    recorded: u64,
    replayed: u64,
    already_voted: u64,
    errors: u64,
    total_votes: u64,
    standings: &'a [OptionResult],
    turnout_by_region: &'a BTreeMap<String, Turnout>,
}

/// Final standings and turnout by region, read linearizably, and a check that the poll
/// counts every vote recorded during the run (for a poll this run created).
async fn finish(
    client: &Client,
    format: Format,
    poll_id: &str,
    electorate: &BTreeMap<String, u64>,
    counters: &Counters,
    seed: u64,
    created: bool,
) -> anyhow::Result<()> {
    let path = format!("/v1/polls/{}/results", segment(poll_id));
    let linearizable = Some(Consistency::Linearizable);
    let by_region = ResultsQuery { consistency: linearizable, breakdown: Some(REGION.to_string()) };
    let results: ResultsBody = match client.call(&Request::get(&path).params(&by_region)).await {
        Ok(results) => results,
        // A poll without a region breakdown.
        Err(failure) if failure.code == "INVALID_REQUEST" => {
            let query = ResultsQuery { consistency: linearizable, breakdown: None };
            client.call(&Request::get(&path).params(&query)).await?
        }
        Err(failure) => return Err(failure.into()),
    };
    let by_region = results.breakdown.as_ref().and_then(|breakdown| breakdown.get(REGION));
    let turnout: BTreeMap<String, Turnout> = electorate
        .iter()
        .map(|(region, size)| {
            let votes: u64 = by_region.and_then(|by_region| by_region.get(region)).map_or(0, |o| o.values().sum());
            let share = (votes as f64 * 1000.0 / *size as f64).round() / 10.0;
            (region.clone(), Turnout { electorate: *size, votes, turnout_percent: share })
        })
        .collect();
    let recorded = counters.recorded.load(Ordering::Relaxed);
    if format == Format::Json {
        output::emit_json(&Summary {
            poll_id,
            seed,
            sent: counters.sent.load(Ordering::Relaxed),
            recorded,
            replayed: counters.replayed.load(Ordering::Relaxed),
            already_voted: counters.already_voted.load(Ordering::Relaxed),
            errors: counters.errors.load(Ordering::Relaxed),
            total_votes: results.total_votes,
            standings: &results.options,
            turnout_by_region: &turnout,
        })?;
    } else {
        println!("final   {}  {}", standings(&results), progress(counters));
        println!("\nREGION   ELECTORATE  VOTES  TURNOUT");
        for (region, row) in &turnout {
            let share = row.turnout_percent;
            println!("{region:<8} {:>10}  {:>5}  {share:>6.1}%", row.electorate, row.votes);
        }
    }
    let errors = counters.errors.load(Ordering::Relaxed);
    if let (0, Some(code)) = (recorded + counters.replayed.load(Ordering::Relaxed), counters.first_error.get()) {
        let hint =
            if code == "FORBIDDEN" { " (with --auth jwt, simulating voters needs an admin's token)" } else { "" };
        let message = format!("no vote was recorded: {errors} requests failed, the first with {code}{hint}");
        return Err(Failure::failed(code, message).into());
    }
    let total = results.total_votes;
    // A poll this run created holds exactly its recorded votes; an existing one, at least.
    if total < recorded || (created && total != recorded) {
        return Err(Failure::failed(
            "COUNT_MISMATCH",
            format!("{recorded} votes were recorded but the poll counts {total}"),
        )
        .into());
    }
    Ok(())
}
