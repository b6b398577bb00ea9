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
use serde_json::{json, Value};
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
    attributes: Value,
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
    // The electorate, and who votes when.
    let mut electorate: BTreeMap<String, u64> = BTreeMap::new();
    let mut attempts = Vec::new();
    let mut voting = 0u64;
    for n in 0..args.voters {
        let region = pick(&mut rng, &REGIONS);
        let age = pick(&mut rng, &AGE_GROUPS);
        *electorate.entry(region.to_string()).or_default() += 1;
        if !rng.gen_bool(args.turnout) {
            continue;
        }
        voting += 1;
        let region_index = REGIONS.iter().position(|(r, _)| *r == region).unwrap_or(0);
        let voter = format!("sim-{seed}-{n}");
        let mut attributes = serde_json::Map::new();
        for (name, value) in [("region", region), ("age_group", age)] {
            if breakdowns.iter().any(|b| b == name) {
                attributes.insert(name.to_string(), value.into());
            }
        }
        let attributes = Value::Object(attributes);
        let at = args.duration.mul_f64(vote_time(&mut rng, args.kind));
        let option_id = option_ids[preference(&mut rng, region_index, option_ids.len())].clone();
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
    if settings.format == Format::Table {
        println!(
            "simulating {} in poll {poll_id}: {} voters, {voting} will vote, {} requests over {:?} (seed {seed})",
            args.kind.describe(),
            args.voters,
            attempts.len(),
            args.duration
        );
    }

    let attempts = Arc::new(attempts);
    let next = Arc::new(AtomicUsize::new(0));
    let counters = Arc::new(Counters::default());
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let (attempts, next, counters, client, poll) =
            (attempts.clone(), next.clone(), counters.clone(), client.clone(), poll_id.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(attempt) = attempts.get(i) else { return };
                tokio::time::sleep_until(start + attempt.due).await;
                send(&client, &poll, attempt, &counters).await;
            }
        }));
    }
    let mut ticker = tokio::time::interval(STANDINGS_EVERY);
    ticker.tick().await;
    while workers.iter().any(|w| !w.is_finished()) {
        ticker.tick().await;
        if settings.format == Format::Table {
            if let Ok(results) = client.send(&Request::get(format!("/v1/polls/{}/results", segment(&poll_id)))).await {
                println!("{:>5.1}s  {}  {}", start.elapsed().as_secs_f64(), standings(&results), progress(&counters));
            }
        }
    }
    for worker in workers {
        worker.await?;
    }
    finish(client, settings.format, &poll_id, &electorate, &counters, seed, args.poll.is_none()).await
}

async fn send(client: &Client, poll: &str, attempt: &Attempt, counters: &Counters) {
    // Any node: a random one per request.
    let endpoints = client.endpoints();
    let node = client.only(&endpoints[rand::thread_rng().gen_range(0..endpoints.len())]);
    counters.sent.fetch_add(1, Ordering::Relaxed);
    let outcome = if client.has_token() {
        send_as_front_end(&node, poll, attempt).await
    } else {
        let body = json!({"voter_id": attempt.voter, "option_id": attempt.option_id, "attributes": attempt.attributes});
        let request = Request::post(format!("/v1/polls/{}/votes", segment(poll)), body)
            .header("Idempotency-Key", attempt.key.clone());
        node.send(&request).await.map_err(|failure| failure.code)
    };
    let counter = match outcome {
        Ok(reply) if reply.get("replayed").and_then(Value::as_bool) == Some(true) => &counters.replayed,
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
async fn send_as_front_end(node: &Client, poll: &str, attempt: &Attempt) -> Result<Value, String> {
    let vote = json!({"voter_id": attempt.voter, "option_id": attempt.option_id,
        "attributes": attempt.attributes, "idempotency_key": attempt.key});
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

fn standings(results: &Value) -> String {
    let options = results["options"].as_array().cloned().unwrap_or_default();
    let parts: Vec<String> = options
        .iter()
        .map(|o| format!("{} {} ({}%)", o["label"].as_str().unwrap_or("?"), o["votes"], o["percentage"]))
        .collect();
    parts.join(" · ")
}

async fn create_poll(client: &Client, kind: Kind) -> Result<(String, Vec<String>, Vec<String>), Failure> {
    let (title, options, breakdowns): (&str, &[&str], &[&str]) = match kind {
        Kind::Election => ("Simulated election", &CANDIDATES, &["region", "age_group"]),
        Kind::Viral => ("Best pizza?", &TOPPINGS, &["region"]),
    };
    let body = json!({"title": title, "options": options, "settings": {"breakdowns": breakdowns}});
    let poll = client.send(&Request::post("/v1/polls", body)).await?;
    poll_parts(&poll)
}

async fn existing_poll(client: &Client, poll: &str) -> Result<(String, Vec<String>, Vec<String>), Failure> {
    poll_parts(&client.send(&Request::get(format!("/v1/polls/{}", segment(poll)))).await?)
}

fn poll_parts(poll: &Value) -> Result<(String, Vec<String>, Vec<String>), Failure> {
    let id = poll["poll_id"].as_str().ok_or_else(|| Failure::failed("INVALID_RESPONSE", "no poll_id"))?;
    let items = |list: &Value| list.as_array().cloned().unwrap_or_default();
    let option_ids =
        items(&poll["options"]).iter().filter_map(|o| o["option_id"].as_str().map(str::to_string)).collect();
    let breakdowns =
        items(&poll["settings"]["breakdowns"]).iter().filter_map(|b| b.as_str().map(str::to_string)).collect();
    Ok((id.to_string(), option_ids, breakdowns))
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
    let request = Request::get(path).query("consistency", "linearizable").query("breakdown", "region");
    let results = match client.send(&request).await {
        Ok(results) => results,
        // A poll without a region breakdown.
        Err(failure) if failure.code == "INVALID_REQUEST" => {
            client
                .send(
                    &Request::get(format!("/v1/polls/{}/results", segment(poll_id)))
                        .query("consistency", "linearizable"),
                )
                .await?
        }
        Err(failure) => return Err(failure.into()),
    };
    let by_region = results["breakdown"]["region"].as_object().cloned().unwrap_or_default();
    let turnout: BTreeMap<String, Value> = electorate
        .iter()
        .map(|(region, size)| {
            let votes: u64 = by_region
                .get(region)
                .and_then(Value::as_object)
                .map_or(0, |o| o.values().filter_map(Value::as_u64).sum());
            let share = (votes as f64 * 1000.0 / *size as f64).round() / 10.0;
            (region.clone(), json!({"electorate": size, "votes": votes, "turnout_percent": share}))
        })
        .collect();
    let recorded = counters.recorded.load(Ordering::Relaxed);
    let summary = json!({
        "poll_id": poll_id,
        "seed": seed,
        "sent": counters.sent.load(Ordering::Relaxed),
        "recorded": recorded,
        "replayed": counters.replayed.load(Ordering::Relaxed),
        "already_voted": counters.already_voted.load(Ordering::Relaxed),
        "errors": counters.errors.load(Ordering::Relaxed),
        "total_votes": results["total_votes"],
        "standings": results["options"],
        "turnout_by_region": turnout,
    });
    if format == Format::Json {
        output::emit_json(&summary)?;
    } else {
        println!("final   {}  {}", standings(&results), progress(counters));
        println!("\nREGION   ELECTORATE  VOTES  TURNOUT");
        for (region, row) in &turnout {
            let number = |key: &str| row[key].as_u64().unwrap_or(0);
            let share = row["turnout_percent"].as_f64().unwrap_or(0.0);
            println!("{region:<8} {:>10}  {:>5}  {share:>6.1}%", number("electorate"), number("votes"));
        }
    }
    let errors = counters.errors.load(Ordering::Relaxed);
    if let (0, Some(code)) = (recorded + counters.replayed.load(Ordering::Relaxed), counters.first_error.get()) {
        let hint =
            if code == "FORBIDDEN" { " (with --auth jwt, simulating voters needs an admin's token)" } else { "" };
        let message = format!("no vote was recorded: {errors} requests failed, the first with {code}{hint}");
        return Err(Failure::failed(code, message).into());
    }
    let total = results["total_votes"].as_u64().unwrap_or(0);
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
