//! `tally bench`: a load generator that ends with a correctness check.
//!
//! Closed loop (each connection sends its next request when the last is answered) or an
//! open model (`--rate`: requests fall due on a fixed schedule, and latency counts from
//! when each was due, so a slow cluster cannot hide its queueing). Latencies go into HDR
//! histograms. At the end, every vote whose outcome was unknown (504, or no answer) is
//! re-sent with its idempotency key until the cluster says what became of it, and then
//! every node must serve exactly the votes the run saw acknowledged.

use std::collections::{BTreeMap, VecDeque};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tally_api::v1::{
    BatchBody, BatchRequest, BatchResult, BatchVote, Consistency, CreatePollRequest, ErrorBody, OptionInput, PollBody,
    ResultsBody, ResultsQuery, SettingsInput, StatusBody, VoteBody, VoteRequest,
};

use crate::client::{segment, Client, Request};
use crate::exit::Failure;
use crate::output::{self, Format, Table};
use crate::Settings;

mod check;
mod report;

use check::{check, CheckReport};
use report::{render, report, Subscribers};

/// Unknown outcomes remembered for the final resolution; past this they are only counted.
const UNKNOWN_TRACKED_MAX: usize = 100_000;
/// Voters remembered per poll as candidates for duplicate attempts.
const RECENT_VOTERS_MAX: usize = 10_000;
/// Attempts to learn one unknown outcome after the run.
const RESOLVE_ATTEMPTS_MAX: u32 = 10;
/// How long the final check waits for every node to apply the last votes.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);
/// Open model: requests due but not yet taken by a connection, before new ones are dropped.
const BACKLOG_MAX: usize = 100_000;
/// Slowest latency the histograms record (longer ones are clamped to it).
const LATENCY_US_MAX: u64 = 120_000_000;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How long to send load: 30s, 2m, ...
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Requests in flight at once (one per connection).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub connections: u64,
    /// Requests per second, on a fixed schedule (open model). Without it: closed loop.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub rate: Option<u64>,
    /// Polls to create for the run (ignored with --poll).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub polls: u64,
    /// Vote on this existing poll instead (repeatable). The check assumes no other writer.
    #[arg(long = "poll")]
    pub poll_ids: Vec<String>,
    /// Share of votes that repeat an earlier voter with a new key (expect ALREADY_VOTED).
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    pub duplicate_ratio: f64,
    /// Weights of request kinds: vote=90,batch=5,results=5.
    #[arg(long, default_value = "vote=100", value_parser = parse_mix)]
    pub mix: Mix,
    /// Votes per batch request.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch_size: u64,
    /// Values of the `region` attribute to spread votes over; "" for no attributes.
    #[arg(long, value_delimiter = ',', default_value = "north,south,east,west")]
    pub regions: Vec<String>,
    /// Which nodes get the load.
    #[arg(long, value_enum, default_value_t = Via::All)]
    pub via: Via,
    /// Skip resolving unknown outcomes and checking the cluster's counts.
    #[arg(long)]
    pub no_check: bool,
    /// No progress bar (it only shows on a terminal anyway).
    #[arg(long, short)]
    pub quiet: bool,
    /// Seed for the choice of options, regions, kinds and duplicates.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Results streams (SSE) to hold open on the first poll during the run, spread over
    /// the endpoints: shows what live subscribers cost the voting.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=30_000))]
    pub subscribers: u64,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// Every endpoint, in turn.
    All,
    /// Only the node that leads when the run starts.
    Leader,
    /// Only the nodes that follow when the run starts.
    Followers,
}

impl Via {
    /// How the report names it: the nodes the load went to.
    fn describe(self) -> &'static str {
        match self {
            Via::All => "to every node",
            Via::Leader => "to the leader",
            Via::Followers => "to the followers",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Mix {
    pub vote: u32,
    pub batch: u32,
    pub results: u32,
}

fn parse_mix(raw: &str) -> Result<Mix, String> {
    let mut mix = Mix { vote: 0, batch: 0, results: 0 };
    for part in raw.split(',').filter(|p| !p.is_empty()) {
        let (kind, weight) = part.split_once('=').ok_or_else(|| format!("{part:?} is not kind=weight"))?;
        let weight: u32 = weight.parse().map_err(|_| format!("{weight:?} is not a whole number"))?;
        match kind {
            "vote" => mix.vote = weight,
            "batch" => mix.batch = weight,
            "results" => mix.results = weight,
            other => return Err(format!("unknown kind {other:?}; one of vote, batch, results")),
        }
    }
    // `results=1` alone is a read-only load, e.g. beside another bench's votes.
    if mix.vote == 0 && mix.batch == 0 && mix.results == 0 {
        return Err("the mix needs some weight".into());
    }
    Ok(mix)
}

pub(crate) fn parse_ratio(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("{raw:?} is not a number from 0 to 1")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Vote,
    Batch,
    Results,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Vote => "vote",
            Kind::Batch => "batch",
            Kind::Results => "results",
        }
    }
}

/// A poll under load, as the run knows it.
struct Target {
    poll_id: String,
    options: Vec<String>,
    with_regions: bool,
    votes_before: u64,
}

/// One vote as sent, kept when its outcome is unknown so that it can be re-sent as is.
#[derive(Clone)]
struct SentVote {
    poll: usize,
    body: VoteRequest,
    key: String,
}

impl SentVote {
    /// The vote as an item of a batch, with its key.
    fn batch_item(&self) -> BatchVote {
        BatchVote {
            poll_id: None,
            option_id: self.body.option_id.clone(),
            voter_id: self.body.voter_id.clone(),
            idempotency_key: Some(self.key.clone()),
            attributes: self.body.attributes.clone(),
        }
    }
}

/// A vote's reply as the run reads it: the HTTP status and the body, decoded as the
/// contract says (a [`VoteBody`] on success, an [`ErrorBody`] otherwise) or `None` if it
/// did not decode. A batch item is the same: its vote reply or its error.
type VoteReply = (u16, Option<BatchResult>);

/// What one vote's reply says about whether it counts.
enum Fate {
    /// Recorded now or earlier under this key: in the counts.
    Counted,
    /// Definitely not in the counts (refused, or 503).
    NotCounted,
    /// 504 or no answer: find out later.
    Unknown,
}

/// Everything the workers record. One lock: the CLI runs on one thread.
struct Recorder {
    latency_us: BTreeMap<Kind, Histogram<u64>>,
    requests_ok: BTreeMap<Kind, u64>,
    outcomes: BTreeMap<String, u64>,
    counted: Vec<u64>,
    unknown: Vec<SentVote>,
    unknown_untracked: u64,
    recent_voters: Vec<VecDeque<String>>,
    rng: StdRng,
}

impl Recorder {
    fn record_latency(&mut self, kind: Kind, latency: Duration, ok: bool) {
        let micros = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
        if let Some(histogram) = self.latency_us.get_mut(&kind) {
            let _ = histogram.record(micros);
        }
        if ok {
            *self.requests_ok.entry(kind).or_default() += 1;
        }
    }

    fn outcome(&mut self, name: &str) {
        *self.outcomes.entry(name.to_string()).or_default() += 1;
    }

    fn vote_fate(&mut self, vote: &SentVote, fate: Fate, voter: &str) {
        match fate {
            Fate::Counted => {
                self.counted[vote.poll] += 1;
                let recent = &mut self.recent_voters[vote.poll];
                if recent.len() == RECENT_VOTERS_MAX {
                    recent.pop_front();
                }
                recent.push_back(voter.to_string());
            }
            Fate::NotCounted => {}
            Fate::Unknown if self.unknown.len() < UNKNOWN_TRACKED_MAX => self.unknown.push(vote.clone()),
            Fate::Unknown => self.unknown_untracked += 1,
        }
    }
}

/// The outcome name and fate of a single vote's reply (`None`: no HTTP answer). A batch
/// item is judged as a 200 reply: its error, if any, is in the body.
fn judge(reply: Option<(u16, Option<&BatchResult>)>) -> (String, Fate) {
    match reply {
        None => ("NO_ANSWER".into(), Fate::Unknown),
        Some((200, Some(BatchResult::Vote(vote)))) => (vote.status.as_str().to_string(), Fate::Counted),
        // A 200 whose body is no reply the run can read still recorded the vote.
        Some((200, None)) => ("recorded".into(), Fate::Counted),
        Some((status, body)) => {
            let code = match body {
                Some(BatchResult::Error(error)) => error.error.code.clone(),
                _ => format!("HTTP_{status}"),
            };
            // API.md: 503 promises the vote was not recorded; 504 (and any other server
            // failure) leaves it open until a retry with the same key tells.
            let fate = match code.as_str() {
                "TIMEOUT" => Fate::Unknown,
                "UNAVAILABLE" => Fate::NotCounted,
                _ if status >= 500 => Fate::Unknown,
                _ => Fate::NotCounted,
            };
            (code, fate)
        }
    }
}

/// Shared by the workers.
struct Run {
    http: reqwest::Client,
    endpoints: Vec<String>,
    targets: Vec<Target>,
    args: Args,
    run_id: String,
    next_voter: AtomicU64,
    next_endpoint: AtomicU64,
    recorder: Mutex<Recorder>,
    stop: AtomicBool,
}

impl Run {
    fn recorder(&self) -> std::sync::MutexGuard<'_, Recorder> {
        self.recorder.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn endpoint(&self) -> &str {
        let n = self.next_endpoint.fetch_add(1, Ordering::Relaxed) as usize;
        &self.endpoints[n % self.endpoints.len()]
    }

    fn pick_kind(&self) -> Kind {
        let mix = self.args.mix;
        let roll = self.recorder().rng.gen_range(0..mix.vote + mix.batch + mix.results);
        if roll < mix.vote {
            Kind::Vote
        } else if roll < mix.vote + mix.batch {
            Kind::Batch
        } else {
            Kind::Results
        }
    }

    /// A new vote: a fresh voter, or (at the duplicate ratio) one already counted.
    fn new_vote(&self) -> (SentVote, String) {
        let n = self.next_voter.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.recorder();
        // Through a plain reference, so that its fields borrow apart.
        let recorder = &mut *guard;
        let poll = recorder.rng.gen_range(0..self.targets.len());
        let target = &self.targets[poll];
        let duplicate = recorder.rng.gen_bool(self.args.duplicate_ratio) && !recorder.recent_voters[poll].is_empty();
        let voter = if duplicate {
            let recent = &recorder.recent_voters[poll];
            recent[recorder.rng.gen_range(0..recent.len())].clone()
        } else {
            format!("bench-{}-{n}", self.run_id)
        };
        let option = &target.options[recorder.rng.gen_range(0..target.options.len())];
        let mut body = VoteRequest { option_id: option.clone(), voter_id: Some(voter.clone()), attributes: None };
        if target.with_regions {
            let region = &self.args.regions[recorder.rng.gen_range(0..self.args.regions.len())];
            body.attributes = Some(BTreeMap::from([("region".to_string(), region.clone())]));
        }
        let key = format!("bench-{}-{n}", self.run_id);
        (SentVote { poll, body, key }, voter)
    }

    async fn post(&self, url: String, key: Option<&str>, body: &impl Serialize) -> Option<reqwest::Response> {
        let mut request = self.http.post(url).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.ok()
    }

    async fn send_vote(&self, endpoint: &str, vote: &SentVote) -> Option<VoteReply> {
        let poll_id = segment(&self.targets[vote.poll].poll_id);
        let response = self.post(format!("{endpoint}/v1/polls/{poll_id}/votes"), Some(&vote.key), &vote.body).await?;
        let status = response.status();
        let body = match status.is_success() {
            true => response.json::<VoteBody>().await.ok().map(BatchResult::Vote),
            false => response.json::<ErrorBody>().await.ok().map(BatchResult::Error),
        };
        Some((status.as_u16(), body))
    }

    /// Sends one request of `kind`; `due` is when it should have started.
    async fn one(&self, kind: Kind, due: Instant) {
        let endpoint = self.endpoint().to_string();
        match kind {
            Kind::Vote => {
                let (vote, voter) = self.new_vote();
                let reply = self.send_vote(&endpoint, &vote).await;
                let latency = due.elapsed();
                let (name, fate) = judge(reply.as_ref().map(|(s, b)| (*s, b.as_ref())));
                let mut recorder = self.recorder();
                recorder.record_latency(kind, latency, reply.as_ref().is_some_and(|(s, _)| *s < 500));
                recorder.outcome(&name);
                recorder.vote_fate(&vote, fate, &voter);
            }
            Kind::Batch => {
                let votes: Vec<(SentVote, String)> = (0..self.args.batch_size).map(|_| self.new_vote()).collect();
                // One poll per batch request: the route names the poll.
                let poll = votes[0].0.poll;
                let votes: Vec<(SentVote, String)> =
                    votes.into_iter().map(|(v, voter)| (SentVote { poll, ..v }, voter)).collect();
                let body = BatchRequest { votes: votes.iter().map(|(v, _)| v.batch_item()).collect() };
                let poll_id = segment(&self.targets[poll].poll_id);
                let url = format!("{endpoint}/v1/polls/{poll_id}/votes:batch");
                let reply = match self.post(url, None, &body).await {
                    None => None,
                    Some(response) if response.status().as_u16() == 200 => {
                        let results = response.json::<BatchBody>().await.map_or_else(|_| Vec::new(), |b| b.results);
                        Some((200, Ok(results)))
                    }
                    Some(response) => {
                        let status = response.status().as_u16();
                        Some((status, Err(response.json::<ErrorBody>().await.ok().map(BatchResult::Error))))
                    }
                };
                let latency = due.elapsed();
                let mut recorder = self.recorder();
                recorder.record_latency(kind, latency, reply.as_ref().is_some_and(|(s, _)| *s == 200));
                for (i, (vote, voter)) in votes.iter().enumerate() {
                    let item = match &reply {
                        Some((200, Ok(results))) => match results.get(i) {
                            Some(item) => judge(Some((200, Some(item)))),
                            // A 200 without this item's result cannot have recorded it unseen.
                            None => judge(None),
                        },
                        // The whole request failed: its error is every item's.
                        Some((status, Err(error))) => judge(Some((*status, error.as_ref()))),
                        Some((_, Ok(_))) | None => judge(None),
                    };
                    recorder.outcome(&item.0);
                    recorder.vote_fate(vote, item.1, voter);
                }
            }
            Kind::Results => {
                let poll = self.recorder().rng.gen_range(0..self.targets.len());
                let url = format!("{endpoint}/v1/polls/{}/results", segment(&self.targets[poll].poll_id));
                let ok = matches!(self.http.get(url).send().await, Ok(r) if r.status().is_success());
                let mut recorder = self.recorder();
                recorder.record_latency(kind, due.elapsed(), ok);
                recorder.outcome(if ok { "results_ok" } else { "results_failed" });
            }
        }
    }
}

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    let discovered = discover(&settings.client).await?;
    let endpoints: Vec<String> = discovered
        .iter()
        .filter(|node| match args.via {
            Via::All => true,
            Via::Leader => node.is_leader,
            Via::Followers => !node.is_leader,
        })
        .map(|node| node.endpoint.clone())
        .collect();
    if endpoints.is_empty() {
        return Err(Failure::unavailable("NO_TARGET", format!("no endpoint is a {:?} node", args.via)).into());
    }
    let regions: Vec<String> = args.regions.iter().filter(|r| !r.is_empty()).cloned().collect();
    let targets = prepare_polls(&args, &regions, &settings.client).await?;
    let seed = args.seed.unwrap_or_else(|| rand::thread_rng().gen());
    let run_id: String = format!("{:08x}", StdRng::seed_from_u64(seed ^ now_nanos()).gen::<u32>());
    let histogram = || Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds");
    let recorder = Recorder {
        latency_us: [Kind::Vote, Kind::Batch, Kind::Results].into_iter().map(|k| (k, histogram())).collect(),
        requests_ok: BTreeMap::new(),
        outcomes: BTreeMap::new(),
        counted: vec![0; targets.len()],
        unknown: Vec::new(),
        unknown_untracked: 0,
        recent_voters: vec![VecDeque::new(); targets.len()],
        rng: StdRng::seed_from_u64(seed),
    };
    let http = settings
        .client
        .http_builder()
        .timeout(settings.client.timeout())
        .pool_max_idle_per_host(args.connections as usize)
        .build()?;
    let format = settings.format;
    let run = Arc::new(Run {
        http,
        endpoints,
        targets,
        args: Args { regions, ..args },
        run_id,
        next_voter: AtomicU64::new(0),
        next_endpoint: AtomicU64::new(0),
        recorder: Mutex::new(recorder),
        stop: AtomicBool::new(false),
    });
    let subscribers = Subscribers::open(&run, &settings.client).await?;
    let started = Instant::now();
    let not_sent = drive(run.clone()).await;
    let elapsed = started.elapsed();
    let streams = subscribers.close();
    let check = if run.args.no_check { None } else { Some(check(&run, &discovered).await) };
    let mut report = report(&run, elapsed, not_sent, check);
    report.subscribers = streams;
    match format {
        Format::Json => output::emit_json(&report)?,
        Format::Table => output::emit(&render(&report))?,
    }
    if report.check.as_ref().is_some_and(|c| !c.ok) {
        return Err(Failure::failed("CHECK_FAILED", "the cluster's counts differ from the votes acknowledged").into());
    }
    Ok(())
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

struct Discovered {
    endpoint: String,
    node_id: u64,
    is_leader: bool,
}

/// Each endpoint's node id, and which one leads.
async fn discover(client: &Client) -> anyhow::Result<Vec<Discovered>> {
    let mut nodes = Vec::new();
    for endpoint in client.endpoints() {
        let status: StatusBody = client.only(endpoint).call(&Request::get("/v1/cluster/status")).await?;
        let node_id = status.node_id;
        let is_leader = status.leader_id == Some(node_id);
        nodes.push(Discovered { endpoint: endpoint.clone(), node_id, is_leader });
    }
    Ok(nodes)
}

async fn prepare_polls(args: &Args, regions: &[String], client: &Client) -> anyhow::Result<Vec<Target>> {
    let mut polls = Vec::new();
    if args.poll_ids.is_empty() {
        // The run's start in the title tells one run's polls from another's in a poll list.
        let started = crate::output::now_utc_millis();
        for n in 0..args.polls {
            let breakdowns: Vec<String> = if regions.is_empty() { vec![] } else { vec!["region".to_string()] };
            let body = CreatePollRequest {
                title: format!("bench {started} #{n}"),
                description: None,
                options: ["red", "green", "blue", "yellow"].map(|text| OptionInput::Text(text.to_string())).to_vec(),
                start_time: None,
                end_time: None,
                settings: Some(SettingsInput { breakdowns: Some(breakdowns), ..SettingsInput::default() }),
            };
            polls.push(client.call::<PollBody>(&Request::post("/v1/polls", &body)).await?);
        }
    } else {
        for poll_id in &args.poll_ids {
            polls.push(client.call::<PollBody>(&Request::get(format!("/v1/polls/{}", segment(poll_id)))).await?);
        }
    }
    let mut targets = Vec::new();
    let query = ResultsQuery { consistency: Some(Consistency::Linearizable), breakdown: None };
    for poll in polls {
        let path = format!("/v1/polls/{}/results", segment(&poll.poll_id));
        let results: ResultsBody = client.call(&Request::get(path).params(&query)).await?;
        let has_region = poll.settings.breakdowns.iter().any(|b| b == "region");
        targets.push(Target {
            options: poll.options.into_iter().map(|o| o.option_id).collect(),
            with_regions: has_region && !regions.is_empty(),
            votes_before: results.total_votes,
            poll_id: poll.poll_id,
        });
    }
    Ok(targets)
}

/// Sends load until the duration is over; returns how many due requests the open model
/// dropped because every connection was busy and the backlog was full.
async fn drive(run: Arc<Run>) -> u64 {
    let deadline = Instant::now() + run.args.duration;
    let progress = progress_bar(&run);
    let not_sent = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    match run.args.rate {
        None => spawn_closed_loop(&mut workers, &run, deadline),
        Some(rate) => spawn_open_model(&mut workers, &run, deadline, rate, &not_sent),
    }
    let ticker = spawn_progress(&run, &progress);
    while workers.join_next().await.is_some() {}
    ticker.abort();
    progress.finish_and_clear();
    not_sent.load(Ordering::Relaxed)
}

/// Closed loop: each connection sends its next request as soon as the last is answered.
fn spawn_closed_loop(workers: &mut tokio::task::JoinSet<()>, run: &Arc<Run>, deadline: Instant) {
    for _ in 0..run.args.connections {
        let run = run.clone();
        workers.spawn(async move {
            while Instant::now() < deadline && !run.stop.load(Ordering::Relaxed) {
                let kind = run.pick_kind();
                run.one(kind, Instant::now()).await;
            }
        });
    }
}

/// Open model: a pacer makes `rate` requests a second fall due, whether or not the
/// connections keep up; a request's latency counts from when it fell due.
fn spawn_open_model(
    workers: &mut tokio::task::JoinSet<()>,
    run: &Arc<Run>,
    deadline: Instant,
    rate: u64,
    not_sent: &Arc<AtomicU64>,
) {
    let (due_tx, due_rx) = tokio::sync::mpsc::channel::<Instant>(BACKLOG_MAX);
    let due_rx = Arc::new(tokio::sync::Mutex::new(due_rx));
    for _ in 0..run.args.connections {
        let (run, due_rx) = (run.clone(), due_rx.clone());
        workers.spawn(async move {
            loop {
                let Some(due) = due_rx.lock().await.recv().await else { break };
                let kind = run.pick_kind();
                run.one(kind, due).await;
            }
        });
    }
    let not_sent = not_sent.clone();
    workers.spawn(async move {
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let start = Instant::now();
        for n in 0u64.. {
            let due = start + interval.mul_f64(n as f64);
            if due >= deadline {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            if due_tx.try_send(due).is_err() {
                not_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
}

/// Updates the progress bar four times a second, until aborted.
fn spawn_progress(run: &Arc<Run>, progress: &ProgressBar) -> tokio::task::JoinHandle<()> {
    let (run, progress) = (run.clone(), progress.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let recorder = run.recorder();
            let ok: u64 = recorder.counted.iter().sum();
            let errors: u64 = recorder
                .outcomes
                .iter()
                .filter(|(name, _)| !matches!(name.as_str(), "recorded" | "changed" | "results_ok"))
                .map(|(_, n)| n)
                .sum();
            let rate = ok as f64 / started.elapsed().as_secs_f64().max(0.001);
            progress.set_position(started.elapsed().as_millis() as u64);
            progress.set_message(format!("{ok} recorded, {rate:.0} votes/s, {errors} other outcomes"));
        }
    })
}

fn progress_bar(run: &Run) -> ProgressBar {
    let visible = !run.args.quiet && std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(
        Some(run.args.duration.as_millis() as u64),
        if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {elapsed}/{duration} {msg}") {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_need_some_weight() {
        assert_eq!(parse_mix("vote=90,batch=5,results=5"), Ok(Mix { vote: 90, batch: 5, results: 5 }));
        assert_eq!(parse_mix("results=5"), Ok(Mix { vote: 0, batch: 0, results: 5 }));
        assert!(parse_mix("vote=0").is_err());
        assert!(parse_mix("vote=x").is_err());
        assert!(parse_mix("poke=1").is_err());
        assert!(parse_ratio("1.5").is_err());
        assert_eq!(parse_ratio("0.1"), Ok(0.1));
    }

    #[test]
    fn replies_decide_whether_a_vote_counts() {
        use serde_json::json;
        let item = |value: serde_json::Value| -> BatchResult { serde_json::from_value(value).expect("a batch item") };
        let error = |code: &str| item(json!({"error": {"code": code, "message": "m"}}));
        let recorded = item(json!({"status": "recorded", "vote_id": "v1", "poll_id": "p1", "option_id": "o1",
            "recorded_at": "2026-04-05T12:00:00.000Z", "log_index": 7,
            "receipt": {"vote_id": "v1", "position": 0, "chain_hash": "00"}}));
        assert!(matches!(recorded, BatchResult::Vote(_)));
        assert!(matches!(judge(Some((200, Some(&recorded)))), (ref n, Fate::Counted) if n == "recorded"));
        let already = error("ALREADY_VOTED");
        assert!(matches!(judge(Some((409, Some(&already)))), (ref n, Fate::NotCounted) if n == "ALREADY_VOTED"));
        let unavailable = error("UNAVAILABLE");
        assert!(matches!(judge(Some((503, Some(&unavailable)))).1, Fate::NotCounted));
        let timeout = error("TIMEOUT");
        assert!(matches!(judge(Some((504, Some(&timeout)))).1, Fate::Unknown));
        // Batch items: the error sits in a 200 reply's item.
        assert!(matches!(judge(Some((200, Some(&timeout)))).1, Fate::Unknown));
        assert!(matches!(judge(Some((200, Some(&already)))).1, Fate::NotCounted));
        assert!(matches!(judge(None), (ref n, Fate::Unknown) if n == "NO_ANSWER"));
        // A body that did not decode: an error status's code is its HTTP status.
        assert!(matches!(judge(Some((502, None))), (ref n, Fate::Unknown) if n == "HTTP_502"));
        assert!(matches!(judge(Some((400, None))), (ref n, Fate::NotCounted) if n == "HTTP_400"));
    }
}
