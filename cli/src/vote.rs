//! `tally vote`: cast one vote, by option id or by the option's text.

use std::collections::BTreeMap;

use clap::ArgGroup;
use tally_api::v1::{BatchBody, BatchRequest, BatchVote, PollBody, VoteBody, VoteRequest};

use crate::client::{segment, Client, Request};
use crate::exit::Failure;
use crate::output::{self, render_fields};
use crate::poll::poll_path;
use crate::Settings;

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("choice").required(true).args(["option_id", "option"])))]
pub struct Args {
    pub poll_id: String,
    /// The option's id, as `tally poll get` shows it.
    #[arg(long)]
    pub option_id: Option<String>,
    /// The option's text; looked up in the poll first.
    #[arg(long, value_name = "TEXT")]
    pub option: Option<String>,
    /// Who votes (one vote per voter and poll). With `--token` the voter is the token's
    /// subject, and this may be left out.
    #[arg(long)]
    pub voter: Option<String>,
    /// Makes a retry safe: the same key returns the first reply instead of ALREADY_VOTED.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// An attribute for breakdowns, repeatable.
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attribute)]
    pub attributes: Vec<(String, String)>,
}

/// Parses `--attr key=value`; the value may itself contain `=`.
pub fn parse_attribute(raw: &str) -> Result<(String, String), String> {
    let (key, value) = raw.split_once('=').ok_or_else(|| format!("{raw}: expected KEY=VALUE"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("{raw}: the key is empty"));
    }
    Ok((key.to_string(), value.to_string()))
}

pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    let client = &settings.client;
    if args.voter.is_none() && !client.has_token() {
        return Err(Failure::usage("give --voter, or vote as a signed-in user with --token").into());
    }
    let option_id = match (&args.option_id, &args.option) {
        (Some(option_id), _) => option_id.clone(),
        (None, Some(text)) => {
            let poll: PollBody = client.call(&Request::get(poll_path(&args.poll_id))).await?;
            find_option_id(&poll, text)?
        }
        (None, None) => unreachable!("clap requires --option-id or --option"),
    };
    let body = vote_body(&option_id, args.voter.as_deref(), &args.attributes)?;
    let reply = cast(client, &args.poll_id, &body, args.idempotency_key.as_deref()).await?;
    output::emit_value(settings.format, &reply, render_reply)
}

/// Sends one vote; shared with the demo.
pub async fn cast(
    client: &Client,
    poll_id: &str,
    body: &VoteRequest,
    idempotency_key: Option<&str>,
) -> Result<VoteBody, Failure> {
    let mut request = Request::post(format!("/v1/polls/{}/votes", segment(poll_id)), body);
    if let Some(key) = idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    client.call(&request).await
}

/// Sends one vote as a trusted front end does, through `votes:batch` (admin only with auth
/// on), which names its voter; the vote's own error becomes the failure. Shared by the demo
/// and `tally simulate`.
pub async fn cast_as_front_end(client: &Client, poll_id: &str, vote: BatchVote) -> Result<VoteBody, Failure> {
    let body = BatchRequest { votes: vec![vote] };
    let request = Request::post(format!("/v1/polls/{}/votes:batch", segment(poll_id)), &body);
    let reply: BatchBody = client.call(&request).await?;
    match reply.results.into_iter().next().map(|result| result.into_result()) {
        Some(Ok(vote)) => Ok(vote),
        Some(Err(error)) => Err(Failure::failed(&error.error.code, error.error.message)),
        None => Err(Failure::failed("INVALID_RESPONSE", "the batch reply has no result for the vote")),
    }
}

pub fn vote_body(
    option_id: &str,
    voter: Option<&str>,
    attributes: &[(String, String)],
) -> Result<VoteRequest, Failure> {
    let mut body =
        VoteRequest { option_id: option_id.to_string(), voter_id: voter.map(str::to_string), attributes: None };
    if attributes.is_empty() {
        return Ok(body);
    }
    let mut by_key: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in attributes {
        if by_key.insert(key.clone(), value.clone()).is_some() {
            return Err(Failure::usage(format!("--attr {key} given twice")));
        }
    }
    body.attributes = Some(by_key);
    Ok(body)
}

/// Maps an option's text to its id: an exact match wins; otherwise a case-insensitive
/// match is taken when it is the only one, so `--option rust` finds "Rust"; otherwise an
/// option id, as `tally poll create` prints them, so `--option o1` works too.
pub fn find_option_id(poll: &PollBody, text: &str) -> Result<String, Failure> {
    let options: Vec<(&str, &str)> = poll.options.iter().map(|o| (o.option_id.as_str(), o.text.as_str())).collect();
    if let Some((id, _)) = options.iter().find(|(_, t)| *t == text) {
        return Ok(id.to_string());
    }
    let folded: Vec<&(&str, &str)> = options.iter().filter(|(_, t)| t.to_lowercase() == text.to_lowercase()).collect();
    if let [(id, _)] = folded.as_slice() {
        return Ok(id.to_string());
    }
    if let Some((id, _)) = options.iter().find(|(id, _)| *id == text) {
        return Ok(id.to_string());
    }
    let known: Vec<String> = options.iter().map(|(id, t)| format!("{id} {t:?}")).collect();
    Err(Failure::failed(
        "INVALID_OPTION",
        format!(
            "no option {text:?} in poll {} (by text or id); options: {} (or give --option-id)",
            poll.poll_id,
            known.join(", ")
        ),
    ))
}

fn render_reply(reply: &VoteBody) -> String {
    render_fields(&[
        ("status", reply.status.as_str().to_string()),
        ("vote_id", reply.vote_id.clone()),
        ("log_index", reply.log_index.to_string()),
        // The receipt, for `tally audit verify POLL --receipt VOTE_ID=CHAIN_HASH`.
        ("position", reply.receipt.position.to_string()),
        ("chain_hash", reply.receipt.chain_hash.clone()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A poll with these `(option_id, text)` options, through the API type.
    fn poll_with(options: &[(&str, &str)]) -> PollBody {
        let options: Vec<Value> = options
            .iter()
            .enumerate()
            .map(|(order, (id, text))| json!({"option_id": id, "text": text, "display_order": order}))
            .collect();
        serde_json::from_value(json!({"poll_id": "p1", "title": "Best?", "description": null, "status": "active",
            "options": options, "start_time": "2026-04-05T12:00:00.000Z", "end_time": null,
            "settings": {"show_results_during_voting": true, "allow_vote_change": false, "breakdowns": []},
            "created_at": "2026-04-05T12:00:00.000Z", "owner": null}))
        .expect("a PollBody")
    }

    fn poll() -> PollBody {
        poll_with(&[("o1", "Rust"), ("o2", "Go"), ("o3", "go"), ("o4", "C++")])
    }

    fn json_of(body: Result<VoteRequest, Failure>) -> Result<Value, Failure> {
        body.map(|body| serde_json::to_value(body).expect("serializes"))
    }

    #[test]
    fn attributes_parse_as_key_value() {
        assert_eq!(parse_attribute("region=CA"), Ok(("region".into(), "CA".into())));
        assert_eq!(parse_attribute("q=a=b"), Ok(("q".into(), "a=b".into())));
        assert_eq!(parse_attribute("empty="), Ok(("empty".into(), String::new())));
        assert!(parse_attribute("region").is_err());
        assert!(parse_attribute("=CA").is_err());
    }

    #[test]
    fn vote_body_has_attributes_only_when_given() {
        assert_eq!(json_of(vote_body("o1", Some("v"), &[])), Ok(json!({"option_id": "o1", "voter_id": "v"})));
        assert_eq!(json_of(vote_body("o1", None, &[])), Ok(json!({"option_id": "o1"})));
        let attributes = [("region".to_string(), "CA".to_string())];
        assert_eq!(
            json_of(vote_body("o1", Some("v"), &attributes)),
            Ok(json!({"option_id": "o1", "voter_id": "v", "attributes": {"region": "CA"}}))
        );
        let twice = [attributes[0].clone(), attributes[0].clone()];
        assert!(vote_body("o1", Some("v"), &twice).is_err());
    }

    #[test]
    fn option_text_maps_to_its_id() {
        assert_eq!(find_option_id(&poll(), "Rust"), Ok("o1".into()));
        assert_eq!(find_option_id(&poll(), "C++"), Ok("o4".into()));
        assert_eq!(find_option_id(&poll(), "rust"), Ok("o1".into()));
        // Exact wins over the case-insensitive twin.
        assert_eq!(find_option_id(&poll(), "go"), Ok("o3".into()));
        // An id, as `poll create` prints it, when no text matches.
        assert_eq!(find_option_id(&poll(), "o2"), Ok("o2".into()));
        let tricky = poll_with(&[("o1", "o2"), ("o2", "b")]);
        assert_eq!(find_option_id(&tricky, "o2"), Ok("o1".into()), "a text wins over an id");
    }

    #[test]
    fn unknown_or_ambiguous_text_is_an_error() {
        let failure = find_option_id(&poll(), "Zig").expect_err("no such option");
        assert_eq!(failure.code, "INVALID_OPTION");
        assert!(failure.message.contains("\"Rust\"") && failure.message.contains("--option-id"), "{}", failure.message);
        assert!(find_option_id(&poll(), "GO").is_err(), "two case-insensitive matches");
        assert!(find_option_id(&poll_with(&[]), "Rust").is_err());
    }
}
