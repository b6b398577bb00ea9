//! `tally audit verify`: an auditor's end-to-end check of one poll; `tally audit tail`: a
//! poll's votes as they are recorded, for a downstream consumer.
//!
//! It recomputes the poll's hash chain from the audit stream alone, checks every link and
//! the head the cluster reports, checks voters' receipts against it, recounts the current
//! votes and compares the recount with the cluster's results.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use tally_api::audit::{from_hex, genesis, next_link, to_hex, LinkFields};
use tally_api::v1::{AuditLine, AuditQuery, Consistency, Heartbeat, ResultsBody, ResultsQuery};

use crate::client::{segment, Client, Request};
use crate::exit::Failure;
use crate::output::{self, render_fields};
use crate::Settings;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Recompute a poll's audit chain, check receipts, recount and compare with the results.
    Verify(VerifyArgs),
    /// Print a poll's votes (and changes) as they are recorded, one line each, from the
    /// start or after a chain position; follows through node failures by moving on to the
    /// next endpoint, resuming after the last line printed.
    Tail(TailArgs),
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    pub poll_id: String,
    /// Start after this chain position: the last one a previous run printed.
    #[arg(long, value_name = "POSITION")]
    pub after: Option<u64>,
    /// Print what is recorded now and exit, instead of following.
    #[arg(long)]
    pub no_follow: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    pub poll_id: String,
    /// A voter's receipt to check, repeatable: the `vote_id` and `chain_hash` of a vote reply.
    #[arg(long = "receipt", value_name = "VOTE_ID=CHAIN_HASH", value_parser = parse_receipt)]
    pub receipts: Vec<(String, [u8; 32])>,
    /// Tries while the poll keeps changing between reads (votes still arriving).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub attempts: u32,
}

fn parse_receipt(raw: &str) -> Result<(String, [u8; 32]), String> {
    let (vote_id, hash) = raw.split_once('=').ok_or_else(|| format!("{raw}: expected VOTE_ID=CHAIN_HASH"))?;
    let hash = from_hex(hash).ok_or_else(|| format!("{raw}: the chain hash is not 64 hex digits"))?;
    Ok((vote_id.to_string(), hash))
}

/// What the chain check found.
#[derive(Debug, PartialEq, Eq)]
struct Chain {
    length: u64,
    head: [u8; 32],
    /// Option id → current votes.
    recount: BTreeMap<String, u64>,
    hashes: BTreeMap<String, [u8; 32]>,
}

fn mismatch(message: impl Into<String>) -> Failure {
    Failure::failed("AUDIT_MISMATCH", message)
}

/// Checks the stream's links in order and recounts the votes still current.
fn check_chain(poll_id: &str, ndjson: &str) -> Result<Chain, Failure> {
    let mut head = genesis(poll_id);
    let mut recount = BTreeMap::new();
    let mut hashes = BTreeMap::new();
    let mut current_voters = BTreeSet::new();
    let mut replaced = BTreeSet::new();
    let mut current_ids = BTreeSet::new();
    let mut length = 0u64;
    for (number, text) in ndjson.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let line: AuditLine = serde_json::from_str(text)
            .map_err(|e| Failure::failed("INVALID_RESPONSE", format!("audit line {}: {e}", number + 1)))?;
        if line.position != length {
            return Err(mismatch(format!(
                "vote {} sits at position {} where {length} was due",
                line.vote_id, line.position
            )));
        }
        let fields = LinkFields {
            vote_id: &line.vote_id,
            voter_id: &line.voter_id,
            option_id: &line.option_id,
            attributes: &line.attributes,
            recorded_at_ms: line.recorded_at_ms,
            log_index: line.log_index,
            replaces: line.replaces.as_deref(),
        };
        head = next_link(&head, length, &fields);
        if from_hex(&line.chain_hash) != Some(head) {
            return Err(mismatch(format!("the chain breaks at position {length} (vote {})", line.vote_id)));
        }
        if let Some(previous) = &line.replaces {
            replaced.insert(previous.clone());
        }
        if line.current {
            if !current_voters.insert(line.voter_id.clone()) {
                return Err(mismatch(format!("voter {} has two current votes", line.voter_id)));
            }
            *recount.entry(line.option_id.clone()).or_insert(0) += 1;
            current_ids.insert(line.vote_id.clone());
        }
        hashes.insert(line.vote_id, head);
        length += 1;
    }
    if let Some(stale) = hashes.keys().find(|id| !replaced.contains(*id) && !current_ids.contains(*id)) {
        return Err(mismatch(format!("vote {stale} is neither current nor replaced")));
    }
    Ok(Chain { length, head, recount, hashes })
}

/// Option id → votes, for the options with votes.
fn counts(results: &ResultsBody) -> BTreeMap<String, u64> {
    results.options.iter().filter(|o| o.votes > 0).map(|o| (o.option_id.clone(), o.votes)).collect()
}

async fn linearizable_results(client: &Client, poll: &str) -> Result<ResultsBody, Failure> {
    let query = ResultsQuery { consistency: Some(Consistency::Linearizable), breakdown: None };
    client.call(&Request::get(format!("/v1/polls/{poll}/results")).params(&query)).await
}

/// What `audit verify` found, as `-o json` prints it.
#[derive(Debug, Serialize)]
struct VerifyReport {
    verified: bool,
    poll_id: String,
    chain_length: u64,
    chain_head: String,
    total_votes: u64,
    recount: BTreeMap<String, u64>,
    receipts_checked: usize,
}

pub async fn run(command: Command, settings: &Settings) -> anyhow::Result<()> {
    match command {
        Command::Verify(args) => verify(args, settings).await,
        Command::Tail(args) => tail(args, settings).await,
    }
}

async fn verify(args: VerifyArgs, settings: &Settings) -> anyhow::Result<()> {
    let client = &settings.client;
    let poll = segment(&args.poll_id);
    for _ in 0..args.attempts {
        // The audit is read between two linearizable results: equal counts on both sides
        // mean the audit saw the same votes.
        let before = linearizable_results(client, &poll).await?;
        let audit = client.send_raw(&Request::get(format!("/v1/polls/{poll}/audit"))).await?;
        let after = linearizable_results(client, &poll).await?;
        let chain = check_chain(&args.poll_id, &audit.body)?;
        let reported_head = audit.header("tally-chain-head").and_then(from_hex);
        let reported_length = audit.header("tally-chain-length").and_then(|v| v.parse::<u64>().ok());
        if reported_head != Some(chain.head) || reported_length != Some(chain.length) {
            return Err(mismatch(format!(
                "the stream's {} links end at {} but the node reports {} links ending at {}",
                chain.length,
                to_hex(&chain.head),
                reported_length.map_or("?".into(), |l| l.to_string()),
                audit.header("tally-chain-head").unwrap_or("?")
            ))
            .into());
        }
        for (vote_id, hash) in &args.receipts {
            match chain.hashes.get(vote_id) {
                Some(found) if found == hash => {}
                Some(_) => return Err(mismatch(format!("receipt {vote_id}: the chain holds another hash")).into()),
                None => return Err(mismatch(format!("receipt {vote_id}: no such vote in the audit stream")).into()),
            }
        }
        if counts(&before) != counts(&after) {
            continue;
        }
        if chain.recount != counts(&after) {
            return Err(mismatch(format!(
                "the recount {:?} differs from the results {:?}",
                chain.recount,
                counts(&after)
            ))
            .into());
        }
        let total: u64 = chain.recount.values().sum();
        let report = VerifyReport {
            verified: true,
            poll_id: args.poll_id,
            chain_length: chain.length,
            chain_head: to_hex(&chain.head),
            total_votes: total,
            recount: chain.recount,
            receipts_checked: args.receipts.len(),
        };
        return output::emit_value(settings.format, &report, render_report);
    }
    Err(Failure::unavailable(
        "POLL_CHANGING",
        format!("votes kept arriving during {} attempts; verify again, or once the poll is closed", args.attempts),
    )
    .into())
}

fn render_report(report: &VerifyReport) -> String {
    render_fields(&[
        ("verified", "chain, receipts and recount all match".to_string()),
        ("chain length", report.chain_length.to_string()),
        ("chain head", report.chain_head.clone()),
        ("total votes", report.total_votes.to_string()),
        ("receipts checked", report.receipts_checked.to_string()),
    ])
}

/// A followed stream sends a line at least every 15 s (a heartbeat when nothing happens):
/// silence for this long means the node is gone.
const TAIL_SILENCE_MAX: Duration = Duration::from_secs(45);
/// Consecutive failed connections (to any endpoint) before `tail` gives up.
const TAIL_FAILURES_MAX: u32 = 30;
/// A line longer than this is not an audit line.
const TAIL_LINE_BYTES_MAX: usize = 64 * 1024;

/// How one connection of `tail` ended.
enum StreamEnd {
    /// The node closed the stream: the end of the chain without `follow`, else a node
    /// going away.
    Finished,
    /// The connection failed or stalled: try the next endpoint.
    Lost(String),
}

async fn tail(args: TailArgs, settings: &Settings) -> anyhow::Result<()> {
    let client = &settings.client;
    let http = client.http_builder().connect_timeout(Duration::from_secs(5)).read_timeout(TAIL_SILENCE_MAX).build()?;
    let poll = segment(&args.poll_id);
    let mut after = args.after;
    let mut failures = 0u32;
    for endpoint in client.endpoints().iter().cycle() {
        let query = AuditQuery { after, follow: Some(!args.no_follow) };
        let request = http.get(format!("{endpoint}/v1/polls/{poll}/audit")).query(&query);
        let reason = match client.authorize(request).send().await {
            Ok(response) if response.status().is_success() => {
                let length = response.headers().get("tally-chain-length").and_then(|v| v.to_str().ok()?.parse().ok());
                match read_lines(response, &mut after, &mut failures, settings.format).await? {
                    StreamEnd::Finished if args.no_follow => return check_complete(after, length),
                    StreamEnd::Finished => "the node closed the stream".to_string(),
                    StreamEnd::Lost(reason) => reason,
                }
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                let failure = crate::client::failure_from_response(status, &body, None);
                // Only an unavailable node is worth trying the next one for.
                if !matches!(status, 429 | 502..=504) {
                    return Err(failure.into());
                }
                failure.to_string()
            }
            Err(error) => crate::client::root_cause(&error),
        };
        failures += 1;
        if failures >= TAIL_FAILURES_MAX {
            let message = format!("{failures} connections in a row failed, the last to {endpoint}: {reason}");
            return Err(Failure::unavailable("UNAVAILABLE", message).into());
        }
        let resume = after.map_or("the start".to_string(), |a| format!("after position {a}"));
        eprintln!("{endpoint}: {reason}; resuming from {resume} on the next endpoint");
        tokio::time::sleep(Duration::from_millis(200) * failures.min(10)).await;
    }
    Err(Failure::usage("no endpoints").into())
}

/// Without `follow`, the stream must end at the chain length the node announced.
fn check_complete(after: Option<u64>, length: Option<u64>) -> anyhow::Result<()> {
    match length {
        Some(length) if after.map_or(0, |a| a + 1) < length => {
            let got = after.map_or("nothing".to_string(), |a| format!("up to position {a}"));
            Err(Failure::unavailable("INCOMPLETE", format!("the stream ended at {got} of a chain of {length}")).into())
        }
        _ => Ok(()),
    }
}

/// Prints the stream's audit lines, each the one due after `after`, and moves `after` on.
/// Every line received (a heartbeat too) shows the node is serving, so it clears
/// `failures`.
async fn read_lines(
    mut response: reqwest::Response,
    after: &mut Option<u64>,
    failures: &mut u32,
    format: output::Format,
) -> anyhow::Result<StreamEnd> {
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            // Half a line at the end is a cut connection, not the end of the chain.
            Ok(None) if !pending.is_empty() => return Ok(StreamEnd::Lost("the stream ended inside a line".into())),
            Ok(None) => return Ok(StreamEnd::Finished),
            Err(error) => return Ok(StreamEnd::Lost(crate::client::root_cause(&error))),
        };
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            print_line(&line[..end], after, format)?;
            *failures = 0;
        }
        if pending.len() > TAIL_LINE_BYTES_MAX {
            return Err(Failure::failed("INVALID_RESPONSE", "an audit line longer than 64 KiB").into());
        }
    }
}

/// A line of a followed stream: an [`AuditLine`], or a [`Heartbeat`] (`None`).
fn parse_line(text: &[u8]) -> Result<Option<AuditLine>, Failure> {
    match serde_json::from_slice::<AuditLine>(text) {
        Ok(line) => Ok(Some(line)),
        Err(_) if serde_json::from_slice::<Heartbeat>(text).is_ok() => Ok(None),
        Err(e) if e.is_data() => Err(Failure::failed("INVALID_RESPONSE", format!("not an audit line: {e}"))),
        Err(e) => Err(Failure::failed("INVALID_RESPONSE", format!("an audit line is not JSON: {e}"))),
    }
}

fn print_line(text: &[u8], after: &mut Option<u64>, format: output::Format) -> anyhow::Result<()> {
    let Some(line) = parse_line(text)? else {
        return Ok(());
    };
    // The stream resumes after the last position printed: anything else is a gap or a
    // repeat, which a consumer must hear about rather than skip.
    let due = after.map_or(0, |a| a + 1);
    if line.position != due {
        return Err(mismatch(format!("the stream sent position {} where {due} was due", line.position)).into());
    }
    let text = match format {
        output::Format::Json => serde_json::to_string(&line)?,
        output::Format::Table => {
            let replaces = line.replaces.as_ref().map_or(String::new(), |r| format!("  (replaces {r})"));
            format!(
                "{:>8}  {}  {}  voter {}  option {}{replaces}",
                line.position, line.recorded_at, line.vote_id, line.voter_id, line.option_id
            )
        }
    };
    if output::emit(&text).is_err() {
        // A closed pipe (`| head`): the reader has what it wanted.
        std::process::exit(0);
    }
    *after = Some(line.position);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(
        position: u64,
        previous: &[u8; 32],
        vote: (&str, &str, &str),
        replaces: Option<&str>,
        current: bool,
    ) -> (String, [u8; 32]) {
        let (vote_id, voter_id, option_id) = vote;
        let attributes = BTreeMap::new();
        let fields = LinkFields {
            vote_id,
            voter_id,
            option_id,
            attributes: &attributes,
            recorded_at_ms: 5,
            log_index: position + 2,
            replaces,
        };
        let hash = next_link(previous, position, &fields);
        let text = json!({"position": position, "vote_id": vote_id, "voter_id": voter_id, "option_id": option_id,
            "attributes": {}, "recorded_at": "1970-01-01T00:00:00.005Z", "recorded_at_ms": 5, "log_index": position + 2, "replaces": replaces,
            "current": current, "chain_hash": to_hex(&hash)});
        (text.to_string(), hash)
    }

    fn stream() -> String {
        let (a, h0) = line(0, &genesis("p"), ("v2.0", "alice", "o1"), None, false);
        let (b, h1) = line(1, &h0, ("v3.0", "bob", "o1"), None, true);
        let (c, _) = line(2, &h1, ("v4.0", "alice", "o2"), Some("v2.0"), true);
        format!("{a}\n{b}\n{c}\n")
    }

    #[test]
    fn a_good_stream_recounts_current_votes_only() {
        let chain = check_chain("p", &stream()).unwrap();
        assert_eq!(chain.length, 3);
        assert_eq!(chain.recount, BTreeMap::from([("o1".to_string(), 1), ("o2".to_string(), 1)]));
    }

    #[test]
    fn any_edit_or_reorder_is_caught() {
        let good = stream();
        let edited = good.replacen("\"bob\"", "\"mallory\"", 1);
        assert_eq!(check_chain("p", &edited).unwrap_err().code, "AUDIT_MISMATCH");
        let lines: Vec<&str> = good.lines().collect();
        let dropped = format!("{}\n{}\n", lines[0], lines[2]);
        assert_eq!(check_chain("p", &dropped).unwrap_err().code, "AUDIT_MISMATCH");
        assert_eq!(check_chain("another poll", &good).unwrap_err().code, "AUDIT_MISMATCH");
        let uncounted = good.replacen("\"current\":true", "\"current\":false", 1);
        assert_eq!(check_chain("p", &uncounted).unwrap_err().code, "AUDIT_MISMATCH");
    }

    #[test]
    fn stream_lines_are_audit_lines_or_heartbeats() {
        let good = stream();
        let first = good.lines().next().expect("a line");
        assert_eq!(parse_line(first.as_bytes()).expect("an audit line").map(|l| l.position), Some(0));
        let heartbeat = r#"{"heartbeat": true, "chain_length": 3, "applied_index": 9}"#;
        assert_eq!(parse_line(heartbeat.as_bytes()), Ok(None));
        let failure = parse_line(br#"{"position": 0}"#).expect_err("not an audit line");
        assert!(failure.message.starts_with("not an audit line"), "{}", failure.message);
        let failure = parse_line(b"{").expect_err("not JSON");
        assert!(failure.message.starts_with("an audit line is not JSON"), "{}", failure.message);
    }
}
