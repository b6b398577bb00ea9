//! `/v1/polls/{poll_id}/votes`: one vote, a batch, and "have I voted?".

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use tally_actors::Decided;
use tally_api::v1::{
    AcceptedBody, BatchBody, BatchRequest, BatchResult, MeBody, MeQuery, ReceiptBody, VoteBody, VoteRequest, VoteStatus,
};
use tally_raft::limits::*;
use tally_raft::model::{Poll, VoteIntent, VoteOutcome, VoteReceipt, VoterId};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{has_unsafe_chars, ApiJson, ApiQuery};
use super::polls::check_name;
use crate::auth::Identity;
use crate::clock::format_ms;
use crate::App;

/// The reply for a vote that `receipt` describes.
pub(super) fn vote_body(status: VoteStatus, receipt: &VoteReceipt, replayed: bool) -> VoteBody {
    VoteBody {
        status,
        vote_id: receipt.vote_id.clone(),
        poll_id: receipt.poll_id.0.clone(),
        option_id: receipt.option_id.clone(),
        recorded_at: format_ms(receipt.recorded_at_ms),
        log_index: receipt.log_index,
        replayed,
        receipt: ReceiptBody {
            vote_id: receipt.vote_id.clone(),
            position: receipt.chain.position,
            chain_hash: tally_raft::audit::to_hex(&receipt.chain.hash),
        },
    }
}

fn check_voter(voter_id: Option<String>) -> ApiResult<VoterId> {
    let voter = voter_id.ok_or_else(|| ApiError::invalid("voter_id is required"))?;
    if voter.trim().is_empty() || voter.len() > VOTER_ID_BYTES_MAX || has_unsafe_chars(&voter, false) {
        return Err(ApiError::invalid(format!("voter_id must be 1 to {VOTER_ID_BYTES_MAX} bytes of printable text")));
    }
    Ok(VoterId(voter))
}

fn check_key(key: &str) -> ApiResult<()> {
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(format!(
            "the idempotency key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} visible ASCII characters"
        )));
    }
    Ok(())
}

fn check_attributes(poll: &Poll, attributes: Option<BTreeMap<String, String>>) -> ApiResult<BTreeMap<String, String>> {
    let attributes = attributes.unwrap_or_default();
    if attributes.len() > ATTRIBUTES_MAX {
        return Err(ApiError::invalid(format!("at most {ATTRIBUTES_MAX} attributes")));
    }
    for (key, value) in &attributes {
        check_name("attribute", key)?;
        if !poll.settings.breakdowns.contains(key) {
            return Err(ApiError::invalid(format!("attribute {key:?} is not one of the poll's breakdowns")));
        }
        if value.is_empty() || value.len() > ATTRIBUTE_BYTES_MAX || has_unsafe_chars(value, false) {
            return Err(ApiError::invalid(format!("attribute {key:?} must be 1 to {ATTRIBUTE_BYTES_MAX} bytes")));
        }
    }
    Ok(attributes)
}

/// The voter of a request: the body's `voter_id` while auth is off, the token's subject
/// while it is on (a body naming someone else is refused).
fn voter_of(identity: &Identity, named: Option<String>) -> ApiResult<VoterId> {
    match identity.subject() {
        None => check_voter(named),
        Some(subject) if named.as_deref().is_none_or(|n| n == subject) => check_voter(Some(subject.to_string())),
        Some(subject) => Err(ApiError::forbidden(format!("the token is {subject}'s; it cannot vote as someone else"))),
    }
}

/// Turns a request into a vote intent, every field checked. Without a client key, the
/// node makes one up so that its own retries are recognised.
fn intent(
    app: &App,
    poll: &Poll,
    voter_id: VoterId,
    request: VoteRequest,
    key: Option<String>,
) -> ApiResult<VoteIntent> {
    if let Some(key) = &key {
        check_key(key)?;
    }
    if request.option_id.is_empty() || request.option_id.len() > ID_BYTES_MAX {
        return Err(ApiError::invalid("option_id is missing or too long"));
    }
    Ok(VoteIntent {
        poll_id: poll.poll_id.clone(),
        voter_id,
        option_id: request.option_id,
        idempotency_key: key.unwrap_or_else(|| app.new_request_key()),
        attributes: check_attributes(poll, request.attributes)?,
    })
}

/// The HTTP answer for a decided vote.
fn reply(decided: &Decided, voter_id: &str) -> Result<VoteBody, ApiError> {
    match &decided.outcome {
        VoteOutcome::Recorded(receipt) => Ok(vote_body(VoteStatus::Recorded, receipt, false)),
        VoteOutcome::Replayed { receipt, changed: false } => Ok(vote_body(VoteStatus::Recorded, receipt, true)),
        VoteOutcome::Replayed { receipt, changed: true } => Ok(vote_body(VoteStatus::Changed, receipt, true)),
        VoteOutcome::Changed(receipt) => Ok(vote_body(VoteStatus::Changed, receipt, false)),
        VoteOutcome::Rejected(rejection) => Err(ApiError::from_rejection(rejection, voter_id)),
    }
}

/// Cast a vote.
///
/// Answers 200 once the vote is committed on a majority and applied. `Idempotency-Key`
/// makes retries safe; `Prefer: respond-async` answers 202 at once with a request id.
#[utoipa::path(post, path = "/v1/polls/{poll_id}/votes", operation_id = "castVote", tag = "votes", request_body = VoteRequest,
    params(("poll_id" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "1 to 128 visible ASCII characters naming this request: \
            a retry with the same key and body gets the original reply"),
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 at once (RFC 7240)")),
    responses((status = 200, description = "recorded (or changed), committed on a majority and applied", body = VoteBody),
        (status = 202, description = "with `Prefer: respond-async`: accepted; ask `/votes/requests/{request_id}`", body = AcceptedBody),
        (status = 400, description = "INVALID_REQUEST, also for attributes that are not the poll's breakdowns", body = ErrorBody),
        (status = 401, description = "UNAUTHENTICATED: with --auth jwt, no valid bearer token", body = ErrorBody),
        (status = 403, description = "FORBIDDEN: the token is someone else's than the body's voter_id", body = ErrorBody),
        (status = 404, description = "POLL_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "ALREADY_VOTED (also for a vote changed the most times allowed), POLL_CLOSED or POLL_NOT_OPEN", body = ErrorBody),
        (status = 422, description = "INVALID_OPTION or IDEMPOTENCY_KEY_REUSED", body = ErrorBody),
        (status = 429, description = "RATE_LIMITED, with Retry-After", body = ErrorBody),
        (status = 503, description = "UNAVAILABLE: not recorded; retry", body = ErrorBody),
        (status = 504, description = "TIMEOUT: the outcome is unknown; retry with the same Idempotency-Key", body = ErrorBody)))]
pub async fn cast(
    State(app): State<Arc<App>>,
    Path(poll_id): Path<String>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<VoteRequest>,
) -> ApiResult<Response> {
    let poll = app.known_poll(&poll_id).await?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            Some(value.to_str().map_err(|_| ApiError::invalid("the Idempotency-Key is not ASCII"))?.to_string())
        }
    };
    let voter_id = voter_of(&identity, request.voter_id.clone())?;
    // A retry of a decided request only reads its answer from the state, so a voter over the
    // limit still learns whether the vote counted.
    let retry = key.as_deref().is_some_and(|key| {
        let applied = app.node.sm.read();
        // A record that cannot be read: not known to be decided, so the limits apply.
        applied
            .state
            .polls
            .get(&poll.poll_id)
            .is_some_and(|state| state.decided_request(&voter_id, key).unwrap_or(false))
    });
    if !retry {
        if let Err(limited) = app.limits.rate.check_voter(&identity, voter_id.as_str()) {
            app.metrics.votes_rejected.with_label_values(&["rate_limited"]).inc();
            return Err(limited);
        }
    }
    let intent = intent(&app, &poll, voter_id, request, key)?;
    if prefers_async(&headers) {
        return accept_async(app, intent);
    }
    let voter = intent.voter_id.0.clone();
    let decided = app.vote(intent).await?;
    Ok(Json(reply(&decided, &voter)?).into_response())
}

/// `Prefer: respond-async` (RFC 7240), possibly among other preferences.
fn prefers_async(headers: &HeaderMap) -> bool {
    let values = headers.get_all("prefer").into_iter().filter_map(|v| v.to_str().ok());
    values.flat_map(|v| v.split(',')).any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

/// Answers 202 now and casts the vote in the background; the outcome goes to the request
/// table (`/votes/requests/{request_id}`).
fn accept_async(app: Arc<App>, intent: VoteIntent) -> ApiResult<Response> {
    let name = super::requests::RequestName {
        node: app.node.id,
        poll: intent.poll_id.0.clone(),
        voter: intent.voter_id.clone(),
        key: intent.idempotency_key.clone(),
    };
    let request_id = name.format(&app.new_request_key());
    app.votes.requests.accept(&request_id, intent.poll_id.as_str())?;
    let body = AcceptedBody {
        status: "accepted".to_string(),
        request_id: request_id.clone(),
        poll_id: intent.poll_id.0.clone(),
        idempotency_key: intent.idempotency_key.clone(),
    };
    let task_app = app.clone();
    let task_id = request_id.clone();
    tokio::spawn(async move {
        let voter = intent.voter_id.0.clone();
        let outcome = match task_app.vote(intent).await {
            Ok(decided) => reply(&decided, &voter),
            Err(error) => Err(error),
        };
        task_app.votes.requests.finish(&task_id, outcome);
    });
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    response.headers_mut().insert("preference-applied", HeaderValue::from_static("respond-async"));
    Ok(response)
}

/// Cast up to 1,000 votes in one request.
///
/// For trusted front ends (admins, with auth on): every vote is judged alone and gets its
/// own result, in order.
#[utoipa::path(post, path = "/v1/polls/{poll_id}/votes:batch", operation_id = "castVotes", tag = "votes", request_body = BatchRequest,
    params(("poll_id" = String, Path)), responses((status = 200, body = BatchBody)))]
pub async fn batch(
    State(app): State<Arc<App>>,
    Path(poll_id): Path<String>,
    Extension(identity): Extension<Identity>,
    ApiJson(request): ApiJson<BatchRequest>,
) -> ApiResult<Json<BatchBody>> {
    // Bulk ingestion names its voters: only trusted front ends (admins) may, with auth on.
    identity.require_admin()?;
    if request.votes.is_empty() || request.votes.len() > VOTES_PER_BATCH_REQUEST_MAX {
        return Err(ApiError::invalid(format!("a batch holds 1 to {VOTES_PER_BATCH_REQUEST_MAX} votes")));
    }
    let poll = app.known_poll(&poll_id).await?;
    let handle = app.votes.registry.handle(&poll.poll_id).await?;
    // Votes that fail validation get their error in place; the rest go to the poll in
    // request order, as one batch.
    let checked: Vec<ApiResult<VoteIntent>> = request
        .votes
        .into_iter()
        .map(|vote| {
            if let Some(named) = vote.poll_id.filter(|named| *named != poll.poll_id.0) {
                return Err(ApiError::invalid(format!(
                    "this vote names poll {named:?}, but the batch is for poll {:?}",
                    poll.poll_id.0
                )));
            }
            let voter_id = check_voter(vote.voter_id)?;
            let single = VoteRequest { option_id: vote.option_id, voter_id: None, attributes: vote.attributes };
            intent(&app, &poll, voter_id, single, vote.idempotency_key)
        })
        .collect();
    let mut voters = Vec::with_capacity(checked.len());
    let mut intents = Vec::with_capacity(checked.len());
    let mut slots: Vec<Result<(), ApiError>> = Vec::with_capacity(checked.len());
    for checked in checked {
        match checked {
            Ok(intent) => {
                voters.push(intent.voter_id.0.clone());
                intents.push(intent);
                slots.push(Ok(()));
            }
            Err(error) => slots.push(Err(error)),
        }
    }
    let mut decided = app.vote_batch(&handle, intents).await.into_iter().zip(voters);
    let results = slots
        .into_iter()
        .map(|slot| {
            let body = slot.and_then(|()| {
                let (result, voter) = decided.next().expect("one decision per vote cast");
                reply(&result?, &voter)
            });
            match body {
                Ok(body) => BatchResult::Vote(body),
                Err(error) => BatchResult::Error(error.body()),
            }
        })
        .collect();
    Ok(Json(BatchBody { results }))
}

/// Whether a voter has voted, and how.
#[utoipa::path(get, path = "/v1/polls/{poll_id}/votes/me", operation_id = "getMyVote", tag = "votes", params(("poll_id" = String, Path), MeQuery),
    responses((status = 200, body = MeBody)))]
pub async fn me(
    State(app): State<Arc<App>>,
    Path(poll_id): Path<String>,
    Extension(identity): Extension<Identity>,
    ApiQuery(query): ApiQuery<MeQuery>,
) -> ApiResult<Json<MeBody>> {
    let poll = app.known_poll(&poll_id).await?;
    let voter = voter_of(&identity, query.voter_id)?;
    let applied = app.node.sm.read();
    let state = applied.state.polls.get(&poll.poll_id).ok_or_else(|| ApiError::poll_not_found(&poll_id))?;
    let body = match state.vote_of(&voter)? {
        None => MeBody { has_voted: false, option_id: None, vote_id: None, voted_at: None },
        Some(record) => MeBody {
            has_voted: true,
            option_id: state.poll.options.get(record.option_index as usize).map(|o| o.option_id.clone()),
            vote_id: Some(record.vote_id()),
            voted_at: Some(format_ms(record.recorded_at_ms)),
        },
    };
    Ok(Json(body))
}
