//! `/v1/polls/{poll_id}/audit` (every version of every vote, in log order, as NDJSON,
//! resumable with `after` and followable with `follow`) and
//! `/v1/polls/{poll_id}/receipts/{vote_id}` (one vote's place in the poll's hash chain).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use tally_actors::LiveFeed;
use tally_api::v1::{AuditLine, AuditQuery, Heartbeat, ReceiptCheck};
use tally_raft::audit::to_hex;
use tally_raft::model::PollId;
use tally_raft::sm::{AuditEntry, RecordError};

use super::error::{ApiError, ApiResult};
use super::extract::ApiQuery;
use super::results::StreamSlot;
use crate::auth::Identity;
use crate::clock::format_ms;
use crate::App;

/// Lines per chunk of the audit body: the stream is read (under the state's read lock) and
/// written a chunk at a time.
const LINES_PER_CHUNK: usize = 1024;

fn audit_line(entry: AuditEntry) -> AuditLine {
    AuditLine {
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

/// The longest a followed stream stays silent: then it sends a heartbeat line.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// How often a followed stream looks for new lines when no change was signalled: a change
/// that leaves the counts as they were (a vote moved away and back) signals nothing.
const FOLLOW_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Read or follow a poll's audit stream (NDJSON).
///
/// Every recorded vote and change in log order, each with its chain position and hash;
/// `after` resumes, `follow` keeps streaming.
#[utoipa::path(get, path = "/v1/polls/{poll_id}/audit", operation_id = "getAudit", tag = "audit", params(("poll_id" = String, Path), AuditQuery),
    responses((status = 200, description = "application/x-ndjson: one `AuditLine` per recorded vote or change, in log order \
        (with `follow`, `Heartbeat` lines in between). Headers `Tally-Chain-Length`, `Tally-Chain-Head` and \
        `Tally-Applied-Index` describe the state at the start."),
        (status = 403, description = "FORBIDDEN: for the poll's owner and admins"),
        (status = 404, description = "POLL_NOT_FOUND"),
        (status = 503, description = "UNAVAILABLE: too many streams on this node, or no leader to confirm the read")))]
pub async fn audit(
    State(app): State<Arc<App>>,
    Path(poll_id): Path<String>,
    Extension(identity): Extension<Identity>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Response> {
    let poll = app.known_poll(&poll_id).await?;
    if !identity.may_manage(poll.owner.as_deref()) {
        return Err(ApiError::forbidden("the audit stream is for the poll's owner and admins"));
    }
    // Everything recorded before the request began, as for linearizable results.
    app.node.linearizable_barrier().await?;
    let (head, length, applied_index) = {
        let applied = app.node.sm.read();
        let state = applied.state.polls.get(&poll.poll_id).ok_or_else(|| ApiError::poll_not_found(&poll_id))?;
        (state.chain_head, state.chain_len, applied.last_applied.map_or(0, |l| l.index))
    };
    let follow = if query.follow.unwrap_or(false) {
        let slot = StreamSlot::take(&app)?;
        let feed = app.votes.registry.handle(&poll.poll_id).await?.subscribe();
        Some(Following { _slot: slot, feed, last_line: tokio::time::Instant::now() })
    } else {
        None
    };
    let reader = Reader {
        app: app.clone(),
        poll_id: poll.poll_id,
        next: query.after.map_or(0, |after| after.saturating_add(1)),
        end: length,
        follow,
    };
    // An error item aborts the chunked body, so the client sees a broken transfer, not a
    // stream that ended where the chain does.
    let chunks = futures::stream::unfold(reader, |mut reader| async move {
        let chunk = reader.next_chunk().await?;
        Some((chunk, reader))
    });
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    headers.insert("tally-chain-length", HeaderValue::from(length));
    headers.insert("tally-applied-index", HeaderValue::from(applied_index));
    if let Ok(head) = HeaderValue::from_str(&to_hex(&head)) {
        headers.insert("tally-chain-head", head);
    }
    Ok(response)
}

/// Reads the audit stream a page at a time, each page under a short read lock: the chain
/// only grows, so pages read at different times still join up.
struct Reader {
    app: Arc<App>,
    poll_id: PollId,
    /// The next chain position to send.
    next: u64,
    /// Without `follow`, the chain length at the start: the stream ends there.
    end: u64,
    follow: Option<Following>,
}

struct Following {
    /// Counted among the node's streams until the consumer goes.
    _slot: StreamSlot,
    /// Changes with the poll's counts: a hint to look for new lines.
    feed: LiveFeed,
    last_line: tokio::time::Instant,
}

impl Reader {
    /// The next chunk of lines; `None` ends the stream, an error cuts it short (the
    /// records could not be read: the client resumes with `after`, elsewhere).
    async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, RecordError>> {
        loop {
            let (page, chain_length, applied_index) = match self.page() {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(poll_id = %self.poll_id, %error, "audit stream cut: records unreadable");
                    return Some(Err(error));
                }
            };
            if !page.is_empty() {
                self.next = page.last().map_or(self.next, |line| line.position + 1);
                if let Some(follow) = &mut self.follow {
                    follow.last_line = tokio::time::Instant::now();
                }
                return Some(Ok(ndjson(&page)));
            }
            let follow = self.follow.as_mut()?;
            if follow.last_line.elapsed() >= HEARTBEAT_INTERVAL {
                follow.last_line = tokio::time::Instant::now();
                return Some(Ok(ndjson(&[Heartbeat { heartbeat: true, chain_length, applied_index }])));
            }
            let wait = FOLLOW_POLL_INTERVAL.min(HEARTBEAT_INTERVAL.saturating_sub(follow.last_line.elapsed()));
            // An error means the poll's actor is gone: the node is shutting down.
            if let Ok(Err(_)) = tokio::time::timeout(wait, follow.feed.changed()).await {
                return None;
            }
        }
    }

    /// Up to a chunk of lines from `next` on, and where the chain and the node stand. The
    /// entries are copied under the read lock and formatted after it.
    fn page(&self) -> Result<(Vec<AuditLine>, u64, u64), RecordError> {
        let (entries, chain_length, applied_index) = {
            let applied = self.app.node.sm.read();
            let applied_index = applied.last_applied.map_or(0, |l| l.index);
            let Some(state) = applied.state.polls.get(&self.poll_id) else { return Ok((Vec::new(), 0, applied_index)) };
            let end = if self.follow.is_some() { state.chain_len } else { self.end };
            let room = end.saturating_sub(self.next).min(LINES_PER_CHUNK as u64) as usize;
            (state.audit_page(self.next, room)?, state.chain_len, applied_index)
        };
        Ok((entries.into_iter().map(audit_line).collect(), chain_length, applied_index))
    }
}

fn ndjson<T: serde::Serialize>(lines: &[T]) -> Vec<u8> {
    let mut chunk = Vec::new();
    for line in lines {
        // Plain strings, numbers and maps: serialising cannot fail.
        serde_json::to_writer(&mut chunk, line).unwrap_or_default();
        chunk.push(b'\n');
    }
    chunk
}

/// Check a vote's receipt.
#[utoipa::path(get, path = "/v1/polls/{poll_id}/receipts/{vote_id}", operation_id = "getReceipt", tag = "audit",
    params(("poll_id" = String, Path), ("vote_id" = String, Path)),
    responses((status = 200, body = ReceiptCheck), (status = 404, description = "POLL_NOT_FOUND or NOT_FOUND")))]
pub async fn receipt(
    State(app): State<Arc<App>>,
    Path((poll_id, vote_id)): Path<(String, String)>,
    Extension(identity): Extension<Identity>,
) -> ApiResult<Json<ReceiptCheck>> {
    let poll = app.known_poll(&poll_id).await?;
    let find = |app: &App| -> Result<_, RecordError> {
        let applied = app.node.sm.read();
        let Some(state) = applied.state.polls.get(&poll.poll_id) else { return Ok(None) };
        Ok(state.find_vote(&vote_id)?.map(|entry| (entry, state.chain_len, state.chain_head)))
    };
    // A receipt handed out by another node may not be applied here yet.
    let found = match find(&app)? {
        Some(found) => Some(found),
        None => {
            app.node.linearizable_barrier().await?;
            find(&app)?
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
