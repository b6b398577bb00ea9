//! `tally results`: a poll's counts as a table with bars, once or watched until Ctrl-C.

use std::io::IsTerminal;
use std::pin::pin;
use std::time::Duration;

use tally_api::v1::{self, ResultsBody, ResultsQuery};

use crate::client::{segment, Client, Request};
use crate::exit::{Exit, Failure};
use crate::output::{self, Format, Table};
use crate::Settings;

/// Characters of a 100 % bar: wide enough to compare, narrow enough for 80 columns.
const BAR_WIDTH: usize = 30;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub poll_id: String,
    /// eventual: the answering node's own state; linearizable: every vote recorded before
    /// the request (read through the leader).
    #[arg(long, value_enum, default_value_t = Consistency::Eventual)]
    pub consistency: Consistency,
    /// Keep polling and print a new block whenever the results change, until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// How often --watch asks, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub interval_ms: u64,
}

/// `--consistency`: the command line's face of `v1::Consistency` (clap's derive lists the
/// choices in `--help`, which the API type, free of clap, cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    Eventual,
    Linearizable,
}

impl Consistency {
    fn api(self) -> v1::Consistency {
        match self {
            Consistency::Eventual => v1::Consistency::Eventual,
            Consistency::Linearizable => v1::Consistency::Linearizable,
        }
    }
}

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    if args.watch {
        return watch(&args, settings).await;
    }
    let results = fetch(&settings.client, &args).await?;
    output::emit_value(settings.format, &results, render_results)
}

async fn fetch(client: &Client, args: &Args) -> Result<ResultsBody, Failure> {
    let path = format!("/v1/polls/{}/results", segment(&args.poll_id));
    let query = ResultsQuery { consistency: Some(args.consistency.api()), breakdown: None };
    client.call(&Request::get(path).params(&query)).await
}

/// Polls until Ctrl-C. An unavailable cluster is reported and waited out (watching a
/// failover is the point); any other error, such as an unknown poll, ends the watch.
async fn watch(args: &Args, settings: &Settings) -> anyhow::Result<()> {
    let mut interrupt = pin!(tokio::signal::ctrl_c());
    let interval = Duration::from_millis(args.interval_ms);
    // On a terminal each block replaces the last, as watch(1) does; into a file or a pipe
    // the blocks follow each other, timestamped, so the history stays readable.
    let redraw = settings.format == Format::Table && std::io::stdout().is_terminal();
    let mut last_shown: Option<Fingerprint> = None;
    loop {
        let fetched = tokio::select! {
            fetched = fetch(&settings.client, args) => fetched,
            signal = &mut interrupt => return Ok(signal?),
        };
        match fetched {
            Ok(results) => {
                let fingerprint = fingerprint(&results);
                if last_shown.as_ref() != Some(&fingerprint) {
                    emit_block(&results, settings.format, redraw)?;
                    last_shown = Some(fingerprint);
                }
            }
            Err(failure) if failure.exit == Exit::Unavailable => {
                eprintln!("error: {failure} (still watching)");
            }
            Err(failure) => return Err(failure.into()),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            signal = &mut interrupt => return Ok(signal?),
        }
    }
}

/// Moves the cursor home and clears the screen (ANSI; every terminal emulator has it).
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

fn emit_block(results: &ResultsBody, format: Format, redraw: bool) -> anyhow::Result<()> {
    if format == Format::Json {
        return output::emit_json(results);
    }
    let now = output::now_utc_millis();
    let clear = if redraw { CLEAR_SCREEN } else { "" };
    output::emit(&format!("{clear}--- {now}\n{}\n", render_results(results)))?;
    Ok(())
}

/// What --watch compares: a block is printed only when one of these changed.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    applied_index: u64,
    votes: Vec<(String, u64)>,
}

fn fingerprint(results: &ResultsBody) -> Fingerprint {
    let votes = results.options.iter().map(|option| (option.option_id.clone(), option.votes)).collect();
    Fingerprint { applied_index: results.applied_index, votes }
}

/// Title line, one row per option with a bar, and a footer saying how fresh it is.
pub fn render_results(results: &ResultsBody) -> String {
    let mut table = Table::new(&["OPTION", "VOTES", "PERCENT", ""]).right_align(1).right_align(2);
    for option in &results.options {
        // The server's percentage, rounded to one decimal.
        let percentage = option.percentage;
        table.push(vec![
            option.label.clone(),
            option.votes.to_string(),
            format!("{percentage:.1}%"),
            bar(percentage, BAR_WIDTH),
        ]);
    }
    let footer = format!(
        "total_votes {}  applied_index {}  served_by {}  consistency {}",
        results.total_votes,
        results.applied_index,
        results.served_by,
        results.consistency.as_str(),
    );
    let title = format!("{} ({})", results.title, results.status);
    format!("{title}\n{}\n{footer}", table.render())
}

/// A bar of `round(percentage / 100 * width)` blocks, clamped to `0..=width`.
pub fn bar(percentage: f64, width: usize) -> String {
    let fraction = if percentage.is_finite() { (percentage / 100.0).clamp(0.0, 1.0) } else { 0.0 };
    // In 0..=width after the clamp, so the cast neither truncates nor wraps.
    let blocks = (fraction * width as f64).round() as usize;
    "█".repeat(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Results at `applied_index` with these `(option_id, votes)` counts, through the API type.
    fn counted(applied_index: u64, as_of: &str, votes: &[(&str, u64)]) -> ResultsBody {
        let options: Vec<serde_json::Value> = votes
            .iter()
            .map(|(id, votes)| json!({"option_id": id, "label": id, "votes": votes, "percentage": 0.0}))
            .collect();
        serde_json::from_value(json!({"poll_id": "p1", "title": "Best?", "status": "active", "total_votes": 0,
            "options": options, "as_of": as_of, "applied_index": applied_index, "served_by": 1,
            "consistency": "eventual"}))
        .expect("a ResultsBody")
    }

    #[test]
    fn bar_width_follows_the_percentage() {
        assert_eq!(bar(0.0, 30), "");
        assert_eq!(bar(50.0, 30).chars().count(), 15);
        assert_eq!(bar(100.0, 30).chars().count(), 30);
        assert_eq!(bar(56.1, 30).chars().count(), 17);
        assert_eq!(bar(1.6, 30).chars().count(), 0);
        assert_eq!(bar(1.7, 30).chars().count(), 1);
    }

    #[test]
    fn bar_is_clamped() {
        assert_eq!(bar(250.0, 10).chars().count(), 10);
        assert_eq!(bar(-5.0, 10), "");
        assert_eq!(bar(f64::NAN, 10), "");
    }

    #[test]
    fn results_render_as_a_table_with_bars_and_a_footer() {
        let results = json!({"poll_id": "p1", "title": "Best?", "status": "active", "total_votes": 3,
            "options": [{"option_id": "o1", "label": "Rust", "votes": 2, "percentage": 66.7},
                        {"option_id": "o2", "label": "Go", "votes": 1, "percentage": 33.3},
                        {"option_id": "o3", "label": "Zig", "votes": 0, "percentage": 0.0}],
            "as_of": "2026-04-05T12:00:00.000Z", "applied_index": 17, "served_by": 2, "consistency": "eventual"});
        let results: ResultsBody = serde_json::from_value(results).expect("a ResultsBody");
        let expected = format!(
            "Best? (active)\n\
             OPTION  VOTES  PERCENT\n\
             Rust        2    66.7%  {}\n\
             Go          1    33.3%  {}\n\
             Zig         0     0.0%\n\
             total_votes 3  applied_index 17  served_by 2  consistency eventual",
            "█".repeat(20),
            "█".repeat(10),
        );
        assert_eq!(render_results(&results), expected);
    }

    /// Percentages and totals are the contract's (ResultsBody requires them): a reply
    /// without them is no longer rendered with computed ones but refused as an invalid
    /// response, naming the type.
    #[test]
    fn replies_without_percentages_and_totals_are_invalid() {
        let reply = json!({"options": [{"option_id": "o1", "votes": 1}, {"option_id": "o2", "votes": 3}]});
        let failure =
            crate::client::decode_success::<ResultsBody>(&reply.to_string()).expect_err("not the results contract");
        assert_eq!(failure.code, "INVALID_RESPONSE");
        assert!(failure.message.starts_with("the server's reply is not a ResultsBody: "), "{}", failure.message);
    }

    #[test]
    fn fingerprint_changes_with_counts_or_applied_index_only() {
        let base = counted(5, "t1", &[("o1", 1)]);
        let later_same = counted(5, "t2", &[("o1", 1)]);
        let applied = counted(6, "t1", &[("o1", 1)]);
        let counted = counted(5, "t1", &[("o1", 2)]);
        assert_eq!(fingerprint(&base), fingerprint(&later_same));
        assert_ne!(fingerprint(&base), fingerprint(&applied));
        assert_ne!(fingerprint(&base), fingerprint(&counted));
    }
}
