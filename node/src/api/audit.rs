//! `/v1/polls/{poll_id}/audit` (every version of every vote, in log order, as NDJSON) and
//! `/v1/polls/{poll_id}/receipts/{vote_id}` (one vote's place in the poll's hash chain).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde::Serialize;
use tally_raft::audit::to_hex;
use tally_raft::sm::AuditEntry;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use crate::auth::Identity;
use crate::clock::format_ms;
use crate::App;

/// Lines per chunk of the audit body: the stream is written a chunk at a time.
const LINES_PER_CHUNK: usize = 1024;

/// One line of the audit stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLine {
    pub position: u64,
    pub vote_id: String,
    pub voter_id: String,
    pub option_id: String,
    pub attributes: BTreeMap<String, String>,
    pub recorded_at: String,
    /// The leader's timestamp in milliseconds, as the chain hashes it.
    pub recorded_at_ms: i64,
    pub log_index: u64,
    /// The vote id this one replaced (a changed vote).
    pub replaces: Option<String>,
    /// Still the voter's vote: counted in the results.
    pub current: bool,
    pub chain_hash: String,
}

impl From<AuditEntry> for AuditLine {
    fn from(entry: AuditEntry) -> Self {
        Self {
            position: entry.chain.position,
            vote_id: entry.vote_id,
            voter_id: entry.voter_id.0,
            option_id: entry.option_id,
            attributes: entry.attributes,
            recorded_at: format_ms(entry.recorded_at_ms),
            recorded_at_ms: entry.recorded_at_ms,
            log_index: entry.log_index,
            replaces: entry.replaces,
            current: entry.current,
            chain_hash: to_hex(&entry.chain.hash),
        }
    }
}

#[utoipa::path(get, path = "/v1/polls/{poll_id}/audit", params(("poll_id" = String, Path)),
    responses((status = 200, description = "application/x-ndjson: one `AuditLine` per recorded vote or change, in log order. \
        Headers `Tally-Chain-Length`, `Tally-Chain-Head` and `Tally-Applied-Index` describe the state it was read from."),
        (status = 404, description = "POLL_NOT_FOUND")))]
pub async fn audit(
    State(app): State<Arc<App>>,
    Path(poll_id): Path<String>,
    Extension(identity): Extension<Identity>,
) -> ApiResult<Response> {
    let poll = app.known_poll(&poll_id).await?;
    if !identity.may_manage(poll.owner.as_deref()) {
        return Err(ApiError::forbidden("the audit stream is for the poll's owner and admins"));
    }
    // Everything recorded before the request began, as for linearizable results.
    app.node.linearizable_barrier().await?;
    let (trail, head, length, applied_index) = {
        let applied = app.node.sm.read();
        let state = applied.state.polls.get(&poll.poll_id).ok_or_else(|| ApiError::poll_not_found(&poll_id))?;
        (state.audit_trail(), state.chain_head, state.chain_len, applied.last_applied.map_or(0, |l| l.index))
    };
    let mut lines = trail.into_iter().map(AuditLine::from).peekable();
    let chunks = std::iter::from_fn(move || {
        lines.peek()?;
        let mut chunk = Vec::new();
        for line in lines.by_ref().take(LINES_PER_CHUNK) {
            // Plain strings, numbers and maps: serialising cannot fail.
            serde_json::to_writer(&mut chunk, &line).unwrap_or_default();
            chunk.push(b'\n');
        }
        Some(Ok::<_, std::convert::Infallible>(chunk))
    });
    let mut response = Body::from_stream(futures::stream::iter(chunks)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    headers.insert("tally-chain-length", HeaderValue::from(length));
    headers.insert("tally-applied-index", HeaderValue::from(applied_index));
    if let Ok(head) = HeaderValue::from_str(&to_hex(&head)) {
        headers.insert("tally-chain-head", head);
    }
    Ok(response)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptCheck {
    pub poll_id: String,
    pub vote_id: String,
    pub position: u64,
    pub chain_hash: String,
    /// Null while the poll hides its results, except to the vote's own voter, the poll's
    /// owner and admins: a receipt must not tell anyone else how someone voted.
    pub option_id: Option<String>,
    pub recorded_at: String,
    pub log_index: u64,
    pub replaces: Option<String>,
    /// False once a later change replaced this vote.
    pub current: bool,
    /// The chain as it stands now on the answering node.
    pub chain_length: u64,
    pub chain_head: String,
}

#[utoipa::path(get, path = "/v1/polls/{poll_id}/receipts/{vote_id}",
    params(("poll_id" = String, Path), ("vote_id" = String, Path)),
    responses((status = 200, body = ReceiptCheck), (status = 404, description = "POLL_NOT_FOUND or NOT_FOUND")))]
pub async fn receipt(
    State(app): State<Arc<App>>,
    Path((poll_id, vote_id)): Path<(String, String)>,
    Extension(identity): Extension<Identity>,
) -> ApiResult<Json<ReceiptCheck>> {
    let poll = app.known_poll(&poll_id).await?;
    let find = |app: &App| {
        let applied = app.node.sm.read();
        let state = applied.state.polls.get(&poll.poll_id)?;
        Some((state.find_vote(&vote_id)?, state.chain_len, state.chain_head))
    };
    // A receipt handed out by another node may not be applied here yet.
    let found = match find(&app) {
        Some(found) => Some(found),
        None => {
            app.node.linearizable_barrier().await?;
            find(&app)
        }
    };
    let (entry, chain_length, head) =
        found.ok_or_else(|| ApiError::not_found(format!("no vote {vote_id:?} in this poll")))?;
    let privileged = match &identity {
        Identity::User { subject, admin } => {
            *admin || poll.owner.as_deref() == Some(subject.as_str()) || *subject == entry.voter_id.0
        }
        Identity::Open | Identity::Anonymous => false,
    };
    let shown = privileged || !poll.results_hidden_at(app.node.clock.now_ms());
    Ok(Json(ReceiptCheck {
        poll_id: poll.poll_id.0,
        vote_id: entry.vote_id,
        position: entry.chain.position,
        chain_hash: to_hex(&entry.chain.hash),
        option_id: shown.then_some(entry.option_id),
        recorded_at: format_ms(entry.recorded_at_ms),
        log_index: entry.log_index,
        replaces: entry.replaces,
        current: entry.current,
        chain_length,
        chain_head: to_hex(&head),
    }))
}
