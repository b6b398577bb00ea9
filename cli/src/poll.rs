//! `tally poll ...`: create, show, list and close polls.

use clap::Subcommand;
use tally_api::v1::{
    CreatePollRequest, ListQuery, OptionInput, PatchPollRequest, PollBody, PollList, PollStatus, SettingsInput,
};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::client::{segment, Client, Request};
use crate::output::{self, or_dash, render_fields, Format, Table};
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
    fn api(self) -> PollStatus {
        match self {
            Status::Active => PollStatus::Active,
            Status::Scheduled => PollStatus::Scheduled,
            Status::Closed => PollStatus::Closed,
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
    let poll: PollBody = match command {
        Command::Create(args) => client.call(&Request::post("/v1/polls", &create_body(&args))).await?,
        Command::Get { poll_id } => client.call(&Request::get(poll_path(&poll_id))).await?,
        Command::Close { poll_id } => {
            let body = PatchPollRequest { status: Some("closed".to_string()), ..PatchPollRequest::default() };
            client.call(&Request::patch(poll_path(&poll_id), &body)).await?
        }
        Command::List(args) => return list(client, &args, settings.format).await,
    };
    output::emit_value(settings.format, &poll, render_poll)
}

pub fn poll_path(poll_id: &str) -> String {
    format!("/v1/polls/{}", segment(poll_id))
}

/// Only fields the user gave are sent, so the server's defaults apply to the rest.
pub fn create_body(args: &CreateArgs) -> CreatePollRequest {
    let settings = SettingsInput {
        show_results_during_voting: args.hide_results.then_some(false),
        allow_vote_change: args.allow_vote_change.then_some(true),
        breakdowns: (!args.breakdowns.is_empty()).then(|| args.breakdowns.clone()),
    };
    CreatePollRequest {
        title: args.title.clone(),
        description: args.description.clone(),
        options: args.options.iter().cloned().map(OptionInput::Text).collect(),
        start_time: args.start_time.clone(),
        end_time: args.end_time.clone(),
        settings: (settings != SettingsInput::default()).then_some(settings),
    }
}

/// Follows `next_cursor` until `limit` polls are in hand or the server has no more. Each
/// page adds at least one poll or ends the loop, so it runs at most `limit` times.
async fn list(client: &Client, args: &ListArgs, format: Format) -> anyhow::Result<()> {
    let limit = usize::try_from(args.limit)?;
    let mut polls: Vec<PollBody> = Vec::new();
    let mut cursor: Option<String> = None;
    while polls.len() < limit {
        let page_size = (limit - polls.len()).min(PAGE_SIZE_MAX);
        let query = ListQuery { status: args.status.map(Status::api), limit: Some(page_size), cursor: cursor.clone() };
        let page: PollList = client.call(&Request::get("/v1/polls").params(&query)).await?;
        let empty = page.polls.is_empty();
        polls.extend(page.polls.into_iter().take(page_size));
        cursor = page.next_cursor;
        if empty || cursor.is_none() {
            break;
        }
    }
    let listing = PollList { polls, next_cursor: cursor };
    output::emit_value(format, &listing, render_list)
}

/// The poll's fields, then its options with the ids a vote needs.
pub fn render_poll(poll: &PollBody) -> String {
    let mut fields = vec![("poll_id", poll.poll_id.clone()), ("title", poll.title.clone())];
    if let Some(description) = poll.description.as_deref().filter(|d| !d.is_empty()) {
        fields.push(("description", description.to_string()));
    }
    fields.push(("status", poll.status.to_string()));
    fields.push(("start_time", poll.start_time.clone()));
    fields.push(("end_time", or_dash(poll.end_time.as_deref())));
    let mut options = Table::new(&["OPTION_ID", "TEXT"]);
    for option in &poll.options {
        options.push(vec![option.option_id.clone(), option.text.clone()]);
    }
    format!("{}\n\n{}", render_fields(&fields), options.render())
}

fn render_list(listing: &PollList) -> String {
    let mut table = Table::new(&["POLL_ID", "STATUS", "OPTIONS", "END_TIME", "TITLE"]).right_align(2);
    for poll in &listing.polls {
        table.push(vec![
            poll.poll_id.clone(),
            poll.status.to_string(),
            poll.options.len().to_string(),
            or_dash(poll.end_time.as_deref()),
            poll.title.clone(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The request body as it goes on the wire.
    fn wire(body: CreatePollRequest) -> Value {
        serde_json::to_value(body).expect("serializes")
    }

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
        assert_eq!(wire(create_body(&create_args())), json!({"title": "Best?", "options": ["Go", "Rust"]}));
        let args = CreateArgs {
            description: Some("d".into()),
            end_time: Some("2026-04-05T12:00:00Z".into()),
            allow_vote_change: true,
            ..create_args()
        };
        assert_eq!(
            wire(create_body(&args)),
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
            wire(create_body(&args)),
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
        let poll: PollBody = serde_json::from_value(json!({"poll_id": "p1", "title": "Best?", "description": null,
            "status": "active", "start_time": "2026-04-05T12:00:00.000Z", "end_time": null,
            "options": [{"option_id": "o1", "text": "Go", "display_order": 0},
                        {"option_id": "o2", "text": "Rust", "display_order": 1}],
            "settings": {"show_results_during_voting": true, "allow_vote_change": false, "breakdowns": []},
            "created_at": "2026-04-05T12:00:00.000Z", "owner": null}))
        .expect("a PollBody");
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
