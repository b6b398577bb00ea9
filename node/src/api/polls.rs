//! `/v1/polls`: create, get, list, patch (close).

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use tally_api::v1::{CreatePollRequest, ListQuery, OptionBody, PatchPollRequest, PollBody, PollList, SettingsBody};
use tally_raft::limits::*;
use tally_raft::model::{Command, Poll, PollId, PollPatch, PollSettings, PollSpec, Response};
use tally_raft::sm::PollState;

use super::error::{ApiError, ApiResult};
use super::extract::{has_unsafe_chars, ApiJson, ApiQuery};
use crate::auth::Identity;
use crate::clock::{format_ms, parse_ms};
use crate::{App, Replica};

/// A poll as the API shows it, its status by this node's clock at `now_ms`.
pub fn poll_body(poll: &Poll, now_ms: i64) -> PollBody {
    PollBody {
        poll_id: poll.poll_id.0.clone(),
        title: poll.title.clone(),
        description: poll.description.clone(),
        status: poll.status_at(now_ms),
        options: poll
            .options
            .iter()
            .enumerate()
            .map(|(i, o)| OptionBody { option_id: o.option_id.clone(), text: o.text.clone(), display_order: i })
            .collect(),
        start_time: format_ms(poll.start_time_ms),
        end_time: poll.end_time_ms.map(format_ms),
        settings: SettingsBody {
            show_results_during_voting: poll.settings.show_results_during_voting,
            allow_vote_change: poll.settings.allow_vote_change,
            breakdowns: poll.settings.breakdowns.clone(),
        },
        created_at: format_ms(poll.created_at_ms),
        owner: poll.owner.clone(),
        total_votes: None,
    }
}

/// A poll in a list: with its count of votes, unless its results are hidden now.
fn listed_poll_body(state: &PollState, now_ms: i64) -> PollBody {
    let mut body = poll_body(&state.poll, now_ms);
    if !state.poll.results_hidden_at(now_ms) {
        body.total_votes = Some(state.total_votes());
    }
    body
}

fn check_text(field: &str, text: &str, max: usize, required: bool) -> ApiResult<()> {
    if required && text.trim().is_empty() {
        return Err(ApiError::invalid(format!("{field} must not be empty")));
    }
    if text.len() > max {
        return Err(ApiError::invalid(format!("{field} is longer than {max} bytes")));
    }
    // Only a description may break lines; a title or an option is one line.
    if has_unsafe_chars(text, field == "description") {
        return Err(ApiError::invalid(format!("{field} holds control or bidirectional-override characters")));
    }
    Ok(())
}

/// A name that can key an attribute: short, printable, no spaces.
pub fn check_name(field: &str, name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= ATTRIBUTE_BYTES_MAX
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!("{field} {name:?} must be 1 to {ATTRIBUTE_BYTES_MAX} of [A-Za-z0-9_-]")))
    }
}

fn validate(request: CreatePollRequest, poll_id: PollId, now_ms: i64) -> ApiResult<PollSpec> {
    check_text("title", &request.title, POLL_TITLE_BYTES_MAX, true)?;
    if let Some(description) = &request.description {
        check_text("description", description, POLL_DESCRIPTION_BYTES_MAX, false)?;
    }
    let count = request.options.len();
    if !(POLL_OPTIONS_MIN..=POLL_OPTIONS_MAX).contains(&count) {
        return Err(ApiError::invalid(format!(
            "a poll has {POLL_OPTIONS_MIN} to {POLL_OPTIONS_MAX} options, not {count}"
        )));
    }
    let mut seen = BTreeSet::new();
    let mut options = Vec::with_capacity(count);
    for option in &request.options {
        let text = option.text().trim();
        check_text("option text", text, OPTION_TEXT_BYTES_MAX, true)?;
        if !seen.insert(text.to_lowercase()) {
            return Err(ApiError::invalid(format!("option {text:?} appears twice")));
        }
        options.push(text.to_string());
    }
    let start_time_ms = request.start_time.as_deref().map(parse_ms).transpose().map_err(ApiError::invalid)?;
    let end_time_ms = request.end_time.as_deref().map(parse_ms).transpose().map_err(ApiError::invalid)?;
    if let Some(end) = end_time_ms {
        if end <= start_time_ms.unwrap_or(now_ms) {
            return Err(ApiError::invalid("end_time must be after start_time (default: now)"));
        }
    }
    let settings = request.settings.unwrap_or_default();
    let breakdowns = settings.breakdowns.unwrap_or_default();
    if breakdowns.len() > BREAKDOWNS_MAX {
        return Err(ApiError::invalid(format!("at most {BREAKDOWNS_MAX} breakdowns")));
    }
    for name in &breakdowns {
        check_name("breakdown", name)?;
    }
    if breakdowns.iter().collect::<BTreeSet<_>>().len() != breakdowns.len() {
        return Err(ApiError::invalid("breakdowns repeat a name"));
    }
    Ok(PollSpec {
        poll_id,
        title: request.title.trim().to_string(),
        description: request.description,
        options,
        start_time_ms,
        end_time_ms,
        settings: PollSettings {
            show_results_during_voting: settings.show_results_during_voting.unwrap_or(true),
            allow_vote_change: settings.allow_vote_change.unwrap_or(false),
            breakdowns,
        },
        owner: None,
    })
}

fn poll_reply(response: Response, poll_id: &PollId) -> ApiResult<Poll> {
    match response {
        Response::Poll(Ok(poll)) => Ok(poll),
        Response::Poll(Err(rejection)) => Err(ApiError::from_poll_rejection(rejection, &poll_id.0)),
        other => Err(ApiError::unexpected(&other)),
    }
}

/// Create a poll.
///
/// Options get ids `o1`, `o2`, … in the order given. With `--auth jwt` the caller owns the
/// poll.
#[utoipa::path(post, path = "/v1/polls", operation_id = "createPoll", tag = "polls", request_body = CreatePollRequest,
    responses((status = 201, body = PollBody), (status = 400, description = "INVALID_REQUEST")))]
pub async fn create(
    State(app): State<std::sync::Arc<App>>,
    Extension(identity): Extension<Identity>,
    ApiJson(request): ApiJson<CreatePollRequest>,
) -> ApiResult<(StatusCode, Json<PollBody>)> {
    let now_ms = app.node.clock.now_ms();
    let poll_id = app.new_poll_id();
    let mut spec = validate(request, poll_id.clone(), now_ms)?;
    spec.owner = identity.subject().map(str::to_string);
    let committed = app.node.propose(Command::CreatePoll(spec)).await?;
    let poll = poll_reply(committed.response, &poll_id)?;
    Ok((StatusCode::CREATED, Json(poll_body(&poll, app.node.clock.now_ms()))))
}

/// Get a poll.
#[utoipa::path(get, path = "/v1/polls/{poll_id}", operation_id = "getPoll", tag = "polls", params(("poll_id" = String, Path)),
    responses((status = 200, body = PollBody), (status = 404, description = "POLL_NOT_FOUND")))]
pub async fn get(State(app): State<std::sync::Arc<App>>, Path(poll_id): Path<String>) -> ApiResult<Json<PollBody>> {
    let poll = app.known_poll(&poll_id).await?;
    Ok(Json(poll_body(&poll, app.node.clock.now_ms())))
}

/// List polls.
///
/// Oldest first, a page at a time (`limit`, `cursor`), optionally by status. Each entry
/// carries `total_votes` unless its results are hidden.
#[utoipa::path(get, path = "/v1/polls", operation_id = "listPolls", tag = "polls", params(ListQuery), responses((status = 200, body = PollList)))]
pub async fn list(
    State(Replica(node)): State<Replica>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<PollList>> {
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > POLLS_PAGE_MAX {
        return Err(ApiError::invalid(format!("limit must be 1 to {POLLS_PAGE_MAX}")));
    }
    let after: u64 = match &query.cursor {
        None => 0,
        Some(cursor) => cursor.parse().map_err(|_| ApiError::invalid("cursor is not one this API gave"))?,
    };
    let now_ms = node.clock.now_ms();
    let applied = node.sm.read();
    let mut polls: Vec<&PollState> = applied
        .state
        .polls
        .values()
        .filter(|p| p.poll.created_index > after)
        .filter(|p| query.status.is_none_or(|s| p.poll.status_at(now_ms) == s))
        .collect();
    polls.sort_by_key(|p| p.poll.created_index);
    let next_cursor = (polls.len() > limit).then(|| polls[limit - 1].poll.created_index.to_string());
    let polls = polls.into_iter().take(limit).map(|p| listed_poll_body(p, now_ms)).collect();
    Ok(Json(PollList { polls, next_cursor }))
}

/// Edit or close a poll.
///
/// The owner or an admin may change the title, description or end time, or close the poll
/// for good.
#[utoipa::path(patch, path = "/v1/polls/{poll_id}", operation_id = "updatePoll", tag = "polls", params(("poll_id" = String, Path)),
    request_body = PatchPollRequest, responses((status = 200, body = PollBody)))]
pub async fn patch(
    State(app): State<std::sync::Arc<App>>,
    Path(poll_id): Path<String>,
    Extension(identity): Extension<Identity>,
    ApiJson(request): ApiJson<PatchPollRequest>,
) -> ApiResult<Json<PollBody>> {
    let poll = app.known_poll(&poll_id).await?;
    if !identity.may_manage(poll.owner.as_deref()) {
        return Err(ApiError::forbidden("only the poll's owner or an admin may change it"));
    }
    if let Some(title) = &request.title {
        check_text("title", title, POLL_TITLE_BYTES_MAX, true)?;
    }
    if let Some(description) = &request.description {
        check_text("description", description, POLL_DESCRIPTION_BYTES_MAX, false)?;
    }
    let close = match request.status.as_deref() {
        None => false,
        Some("closed") => true,
        Some(other) => return Err(ApiError::invalid(format!("status can only be set to \"closed\", not {other:?}"))),
    };
    let end_time_ms = request.end_time.as_deref().map(parse_ms).transpose().map_err(ApiError::invalid)?;
    let patch = PollPatch {
        title: request.title.map(|t| t.trim().to_string()),
        description: request.description,
        end_time_ms,
        close,
    };
    let committed = app.node.propose(Command::UpdatePoll { poll_id: poll.poll_id.clone(), patch }).await?;
    let poll = poll_reply(committed.response, &poll.poll_id)?;
    Ok(Json(poll_body(&poll, app.node.clock.now_ms())))
}
