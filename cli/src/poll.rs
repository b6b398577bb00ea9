//! `tally poll ...`: create, show, list and close polls.

use clap::Subcommand;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::client::{segment, Client, Request};
use crate::output::{self, cell, render_fields, Format, Table};
use crate::Settings;

/// Polls asked for per page; the API's example page size, which every server accepts.
const PAGE_SIZE_MAX: usize = 50;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a poll; prints its id and its options' ids.
    Create(CreateArgs),
    /// Show one poll.
    Get { poll_id: String },
    /// List polls, following pages up to --limit.
    List(ListArgs),
    /// Close a poll now; a closed poll never reopens.
    Close { poll_id: String },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The question, as voters see it.
    #[arg(long)]
    pub title: String,
    /// An option's text, repeatable, in display order.
    #[arg(long = "option", value_name = "TEXT")]
    pub options: Vec<String>,
    /// Longer text shown under the title.
    #[arg(long)]
    pub description: Option<String>,
    /// When voting opens (RFC 3339); until then the poll is scheduled. Default: now.
    #[arg(long, value_parser = parse_rfc3339)]
    pub start_time: Option<String>,
    /// When voting ends (RFC 3339, e.g. 2026-04-05T12:00:00Z); default: never.
    #[arg(long, value_parser = parse_rfc3339)]
    pub end_time: Option<String>,
    /// Let voters change their vote.
    #[arg(long)]
    pub allow_vote_change: bool,
    /// Hide the results until the poll closes (voters see only their own vote).
    #[arg(long)]
    pub hide_results: bool,
    /// A vote attribute to count results by (turnout by region, say), repeatable; votes
    /// then carry it as `tally vote --attr KEY=VALUE`.
    #[arg(long = "breakdown", value_name = "ATTRIBUTE")]
    pub breakdowns: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[arg(long, value_enum)]
    pub status: Option<Status>,
    /// At most this many polls.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub limit: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Status {
    Active,
    Scheduled,
    Closed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Scheduled => "scheduled",
            Status::Closed => "closed",
        }
    }
}

/// Checks the timestamp here, so a typo is a usage error rather than a round trip; the
/// server still gets the text exactly as typed.
fn parse_rfc3339(raw: &str) -> Result<String, String> {
    OffsetDateTime::parse(raw, &Rfc3339)
        .map(|_| raw.to_string())
        .map_err(|error| format!("not an RFC 3339 timestamp ({error})"))
}

pub async fn run(command: Command, settings: &Settings) -> anyhow::Result<()> {
    let client = &settings.client;
    let poll = match command {
        Command::Create(args) => client.send(&Request::post("/v1/polls", create_body(&args))).await?,
        Command::Get { poll_id } => client.send(&Request::get(poll_path(&poll_id))).await?,
        Command::Close { poll_id } => {
            let body = json!({"status": "closed"});
            client.send(&Request::patch(poll_path(&poll_id), body)).await?
        }
        Command::List(args) => return list(client, &args, settings.format).await,
    };
    output::emit_value(settings.format, &poll, render_poll)
}

pub fn poll_path(poll_id: &str) -> String {
    format!("/v1/polls/{}", segment(poll_id))
}

/// Only fields the user gave are sent, so the server's defaults apply to the rest.
pub fn create_body(args: &CreateArgs) -> Value {
    let mut body = Map::new();
    body.insert("title".into(), json!(args.title));
    body.insert("options".into(), json!(args.options));
    if let Some(description) = &args.description {
        body.insert("description".into(), json!(description));
    }
    if let Some(start_time) = &args.start_time {
        body.insert("start_time".into(), json!(start_time));
    }
    if let Some(end_time) = &args.end_time {
        body.insert("end_time".into(), json!(end_time));
    }
    let mut settings = Map::new();
    if args.allow_vote_change {
        settings.insert("allow_vote_change".into(), json!(true));
    }
    if args.hide_results {
        settings.insert("show_results_during_voting".into(), json!(false));
    }
    if !args.breakdowns.is_empty() {
        settings.insert("breakdowns".into(), json!(args.breakdowns));
    }
    if !settings.is_empty() {
        body.insert("settings".into(), Value::Object(settings));
    }
    Value::Object(body)
}

/// Follows `next_cursor` until `limit` polls are in hand or the server has no more. Each
/// page adds at least one poll or ends the loop, so it runs at most `limit` times.
async fn list(client: &Client, args: &ListArgs, format: Format) -> anyhow::Result<()> {
    let limit = usize::try_from(args.limit)?;
    let mut polls: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    while polls.len() < limit {
        let page_size = (limit - polls.len()).min(PAGE_SIZE_MAX);
        let mut request = Request::get("/v1/polls").query("limit", page_size.to_string());
        if let Some(status) = args.status {
            request = request.query("status", status.as_str());
        }
        if let Some(cursor) = &cursor {
            request = request.query("cursor", cursor.clone());
        }
        let page = client.send(&request).await?;
        let items = page["polls"].as_array().cloned().unwrap_or_default();
        polls.extend(items.iter().take(page_size).cloned());
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if items.is_empty() || cursor.is_none() {
            break;
        }
    }
    let listing = json!({"polls": polls, "next_cursor": cursor});
    output::emit_value(format, &listing, render_list)
}

/// The poll's fields, then its options with the ids a vote needs.
pub fn render_poll(poll: &Value) -> String {
    let mut fields = vec![("poll_id", cell(&poll["poll_id"])), ("title", cell(&poll["title"]))];
    if let Some(description) = poll["description"].as_str().filter(|d| !d.is_empty()) {
        fields.push(("description", description.to_string()));
    }
    fields.push(("status", cell(&poll["status"])));
    fields.push(("start_time", cell(&poll["start_time"])));
    fields.push(("end_time", cell(&poll["end_time"])));
    let mut options = Table::new(&["OPTION_ID", "TEXT"]);
    for option in poll["options"].as_array().into_iter().flatten() {
        options.push(vec![cell(&option["option_id"]), cell(&option["text"])]);
    }
    format!("{}\n\n{}", render_fields(&fields), options.render())
}

fn render_list(listing: &Value) -> String {
    let mut table = Table::new(&["POLL_ID", "STATUS", "OPTIONS", "END_TIME", "TITLE"]).right_align(2);
    for poll in listing["polls"].as_array().into_iter().flatten() {
        let option_count = poll["options"].as_array().map_or(0, Vec::len);
        table.push(vec![
            cell(&poll["poll_id"]),
            cell(&poll["status"]),
            option_count.to_string(),
            cell(&poll["end_time"]),
            cell(&poll["title"]),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create_args() -> CreateArgs {
        CreateArgs {
            title: "Best?".into(),
            options: vec!["Go".into(), "Rust".into()],
            description: None,
            start_time: None,
            end_time: None,
            allow_vote_change: false,
            hide_results: false,
            breakdowns: Vec::new(),
        }
    }

    #[test]
    fn create_body_sends_only_given_fields() {
        assert_eq!(create_body(&create_args()), json!({"title": "Best?", "options": ["Go", "Rust"]}));
        let args = CreateArgs {
            description: Some("d".into()),
            end_time: Some("2026-04-05T12:00:00Z".into()),
            allow_vote_change: true,
            ..create_args()
        };
        assert_eq!(
            create_body(&args),
            json!({"title": "Best?", "options": ["Go", "Rust"], "description": "d",
                   "end_time": "2026-04-05T12:00:00Z", "settings": {"allow_vote_change": true}})
        );
        let args = CreateArgs {
            start_time: Some("2026-04-05T10:00:00Z".into()),
            hide_results: true,
            breakdowns: vec!["region".into(), "age".into()],
            ..create_args()
        };
        assert_eq!(
            create_body(&args),
            json!({"title": "Best?", "options": ["Go", "Rust"], "start_time": "2026-04-05T10:00:00Z",
                   "settings": {"show_results_during_voting": false, "breakdowns": ["region", "age"]}})
        );
    }

    #[test]
    fn end_time_must_be_rfc3339() {
        assert!(parse_rfc3339("2026-04-05T12:00:01.234Z").is_ok());
        assert!(parse_rfc3339("2026-04-05 12:00").is_err());
    }

    #[test]
    fn poll_renders_fields_then_option_ids() {
        let poll = json!({"poll_id": "p1", "title": "Best?", "status": "active",
            "start_time": "2026-04-05T12:00:00.000Z", "end_time": null,
            "options": [{"option_id": "o1", "text": "Go"}, {"option_id": "o2", "text": "Rust"}]});
        let expected = "\
poll_id     p1
title       Best?
status      active
start_time  2026-04-05T12:00:00.000Z
end_time    -

OPTION_ID  TEXT
o1         Go
o2         Rust";
        assert_eq!(render_poll(&poll), expected);
    }
}
