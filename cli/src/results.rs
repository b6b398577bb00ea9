//! `tally results`: a poll's counts as a table with bars, once or watched until Ctrl-C.

use std::io::IsTerminal;
use std::pin::pin;
use std::time::Duration;

use serde_json::Value;

use crate::client::{segment, Client, Request};
use crate::exit::{Exit, Failure};
use crate::output::{self, cell, Format, Table};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    Eventual,
    Linearizable,
}

impl Consistency {
    fn as_str(self) -> &'static str {
        match self {
            Consistency::Eventual => "eventual",
            Consistency::Linearizable => "linearizable",
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

async fn fetch(client: &Client, args: &Args) -> Result<Value, Failure> {
    let path = format!("/v1/polls/{}/results", segment(&args.poll_id));
    let request = Request::get(path).query("consistency", args.consistency.as_str());
    client.send(&request).await
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

fn emit_block(results: &Value, format: Format, redraw: bool) -> anyhow::Result<()> {
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
    applied_index: Option<u64>,
    votes: Vec<(String, u64)>,
}

fn fingerprint(results: &Value) -> Fingerprint {
    let votes =
        options(results).map(|option| (cell(&option["option_id"]), option["votes"].as_u64().unwrap_or(0))).collect();
    Fingerprint { applied_index: results["applied_index"].as_u64(), votes }
}

fn options(results: &Value) -> impl Iterator<Item = &Value> {
    results["options"].as_array().into_iter().flatten()
}

/// Title line, one row per option with a bar, and a footer saying how fresh it is.
pub fn render_results(results: &Value) -> String {
    let total_votes =
        results["total_votes"].as_u64().unwrap_or_else(|| options(results).filter_map(|o| o["votes"].as_u64()).sum());
    let mut table = Table::new(&["OPTION", "VOTES", "PERCENT", ""]).right_align(1).right_align(2);
    for option in options(results) {
        let percentage = percentage(option, total_votes);
        table.push(vec![
            label(option),
            cell(&option["votes"]),
            format!("{percentage:.1}%"),
            bar(percentage, BAR_WIDTH),
        ]);
    }
    let footer = format!(
        "total_votes {total_votes}  applied_index {}  served_by {}  consistency {}",
        cell(&results["applied_index"]),
        cell(&results["served_by"]),
        cell(&results["consistency"]),
    );
    let title = format!("{} ({})", cell(&results["title"]), cell(&results["status"]));
    format!("{title}\n{}\n{footer}", table.render())
}

fn label(option: &Value) -> String {
    option["label"]
        .as_str()
        .or_else(|| option["text"].as_str())
        .map_or_else(|| cell(&option["option_id"]), str::to_string)
}

/// The server's rounded percentage when it sent one, else computed from the counts.
fn percentage(option: &Value, total_votes: u64) -> f64 {
    if let Some(percentage) = option["percentage"].as_f64() {
        return percentage;
    }
    let votes = option["votes"].as_u64().unwrap_or(0);
    if total_votes == 0 {
        return 0.0;
    }
    // Vote counts stay far below 2^52, so the conversions are exact.
    votes as f64 * 100.0 / total_votes as f64
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
            "applied_index": 17, "served_by": 2, "consistency": "eventual"});
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

    #[test]
    fn missing_percentages_and_totals_are_computed() {
        let results = json!({"options": [{"option_id": "o1", "votes": 1}, {"option_id": "o2", "votes": 3}]});
        let text = render_results(&results);
        assert!(text.contains("o1          1    25.0%  ████████"), "{text}");
        assert!(text.contains("total_votes 4  applied_index -"), "{text}");
    }

    #[test]
    fn fingerprint_changes_with_counts_or_applied_index_only() {
        let base = json!({"applied_index": 5, "as_of": "t1", "options": [{"option_id": "o1", "votes": 1}]});
        let later_same = json!({"applied_index": 5, "as_of": "t2", "options": [{"option_id": "o1", "votes": 1}]});
        let applied = json!({"applied_index": 6, "options": [{"option_id": "o1", "votes": 1}]});
        let counted = json!({"applied_index": 5, "options": [{"option_id": "o1", "votes": 2}]});
        assert_eq!(fingerprint(&base), fingerprint(&later_same));
        assert_ne!(fingerprint(&base), fingerprint(&applied));
        assert_ne!(fingerprint(&base), fingerprint(&counted));
    }
}
