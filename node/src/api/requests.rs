//! Async acceptance of votes: `Prefer: respond-async` answers `202` at once, and
//! `GET /v1/polls/{poll_id}/votes/requests/{request_id}` tells how the vote ended, on any
//! node.
//!
//! The table of pending and finished requests is the accepting node's memory, not
//! replicated. The request id carries what every other node needs: the accepting node's id,
//! the poll, the voter and the idempotency key. Every node answers `completed` from its own
//! applied state once that key made a vote; otherwise the accepting node answers from its
//! table, another node asks it, and says so when it cannot be asked.
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::Extension;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use tally_api::v1::{RequestState, RequestStatus, VoteBody, VoteStatus};
use tally_raft::model::VoterId;
use tally_raft::NodeId;

use super::error::{ApiError, ApiResult};
use crate::auth::Identity;
use crate::App;

/// Requests remembered per node; the oldest finished ones are forgotten first.
pub const REQUESTS_MAX: usize = 100_000;

/// How long another node waits for the accepting node's answer.
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Lookups of other nodes' requests in flight at once on this node; past it, 503. Each
/// may cost a peer call of up to `ASK_TIMEOUT`.
const ASKS_MAX: usize = 64;

/// What a request id names: `r.<node>.<random>.<poll>.<voter>.<key>`, poll, voter and key
/// in unpadded base64url (the random part keeps ids of requests with the same key apart).
#[derive(Debug, PartialEq, Eq)]
pub struct RequestName {
    pub node: NodeId,
    pub poll: String,
    pub voter: VoterId,
    pub key: String,
}

impl RequestName {
    pub fn format(&self, random: &str) -> String {
        let [poll, voter, key] =
            [self.poll.as_str(), self.voter.as_str(), &self.key].map(|t| URL_SAFE_NO_PAD.encode(t));
        format!("r.{}.{random}.{poll}.{voter}.{key}", self.node)
    }

    pub fn parse(request_id: &str) -> Option<Self> {
        let mut parts = request_id.split('.');
        if parts.next()? != "r" {
            return None;
        }
        let node = parts.next()?.parse().ok()?;
        let _random = parts.next()?;
        let mut text = || URL_SAFE_NO_PAD.decode(parts.next()?).ok().and_then(|bytes| String::from_utf8(bytes).ok());
        let (poll, voter, key) = (text()?, text()?, text()?);
        parts.next().is_none().then_some(Self { node, poll, voter: VoterId(voter), key })
    }
}

pub struct Requests {
    inner: Mutex<Table>,
    /// Bounds the peer calls that lookups of other nodes' requests make.
    asks: tokio::sync::Semaphore,
}

impl Default for Requests {
    fn default() -> Self {
        Self { inner: Mutex::default(), asks: tokio::sync::Semaphore::new(ASKS_MAX) }
    }
}

#[derive(Default)]
struct Table {
    by_id: BTreeMap<String, RequestStatus>,
    /// Ids in acceptance order, for eviction.
    order: VecDeque<String>,
}

impl Requests {
    /// Registers a pending request, or refuses when the table is full of pending ones.
    pub fn accept(&self, request_id: &str, poll_id: &str) -> ApiResult<()> {
        let mut table = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while table.by_id.len() >= REQUESTS_MAX {
            // Forget the oldest finished request; if every one is pending, refuse.
            let position =
                table.order.iter().position(|id| table.by_id.get(id).is_none_or(|s| s.state != RequestState::Pending));
            let Some(position) = position else {
                return Err(ApiError::unavailable(format!("{REQUESTS_MAX} async votes are pending on this node")));
            };
            if let Some(id) = table.order.remove(position) {
                table.by_id.remove(&id);
            }
        }
        let pending = RequestStatus {
            state: RequestState::Pending,
            poll_id: poll_id.to_string(),
            vote_id: None,
            result: None,
            error: None,
        };
        table.by_id.insert(request_id.to_string(), pending);
        table.order.push_back(request_id.to_string());
        Ok(())
    }

    pub fn finish(&self, request_id: &str, outcome: Result<VoteBody, ApiError>) {
        let mut table = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(status) = table.by_id.get_mut(request_id) {
            match outcome {
                Ok(reply) => {
                    status.state = RequestState::Completed;
                    status.vote_id = Some(reply.vote_id.clone());
                    status.result = Some(reply);
                }
                Err(error) => {
                    status.state = RequestState::Failed;
                    status.error = Some(error.detail());
                }
            }
        }
    }

    pub fn get(&self, request_id: &str) -> Option<RequestStatus> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).by_id.get(request_id).cloned()
    }
}

/// How an async vote ended.
///
/// On any node: `pending`, `completed` (with the vote reply) or `failed` (with the error).
#[utoipa::path(get, path = "/v1/polls/{poll_id}/votes/requests/{request_id}", operation_id = "getVoteRequest", tag = "votes",
    params(("poll_id" = String, Path), ("request_id" = String, Path)),
    responses((status = 200, body = RequestStatus),
        (status = 404, description = "NOT_FOUND: no such request, or the accepting node has forgotten it"),
        (status = 503, description = "UNAVAILABLE: the accepting node is unreachable and the vote is not recorded here")))]
pub async fn status(
    State(app): State<Arc<App>>,
    Path((poll_id, request_id)): Path<(String, String)>,
    Extension(identity): Extension<Identity>,
) -> ApiResult<Json<RequestStatus>> {
    let name =
        RequestName::parse(&request_id).filter(|name| name.poll == poll_id).ok_or_else(|| unknown(&request_id))?;
    // The id names its voter, so it is that voter's (or an admin's) to ask about, as
    // `/votes/me` is, on every node alike.
    let someone_else = identity.subject().is_some_and(|subject| subject != name.voter.as_str());
    if someone_else && identity.require_admin().is_err() {
        return Err(unknown(&request_id));
    }
    let poll = app.known_poll(&poll_id).await?;
    // The replicated state first, on every node: once the key made a vote, that is the
    // request's outcome, whatever this node's table says (a timeout whose vote committed,
    // a failure a retry with the same key then recorded).
    if let Some(status) = recorded(&app, &poll, &name) {
        return Ok(Json(status));
    }
    if let Some(status) = app.votes.requests.get(&request_id) {
        return Ok(Json(status));
    }
    if name.node == app.node.id {
        return Err(unknown(&request_id));
    }
    let addr = app.node.member_addr(name.node).ok_or_else(|| unknown(&request_id))?;
    let Ok(_asking) = app.votes.requests.asks.try_acquire() else {
        return Err(ApiError::unavailable(format!("{ASKS_MAX} lookups of other nodes' requests are in flight here")));
    };
    match app.node.network.request_status(&addr, &request_id, ASK_TIMEOUT).await {
        Ok(Some(json)) => serde_json::from_str::<RequestStatus>(&json)
            .ok()
            .filter(|status| status.poll_id == poll_id)
            .map(Json)
            .ok_or_else(|| unknown(&request_id)),
        // The accepting node may have voted meanwhile; look once more before saying so.
        Ok(None) => recorded(&app, &poll, &name).map(Json).ok_or_else(|| unknown(&request_id)),
        Err(error) => recorded(&app, &poll, &name).map(Json).ok_or_else(|| {
            ApiError::unavailable(format!(
                "node {} accepted this request and cannot be asked ({error}); the vote is not recorded \
                 as of this node's applied index {}: retry it with its idempotency key",
                name.node,
                app.node.sm.applied_index()
            ))
        }),
    }
}

/// The request's outcome from this node's applied state, if its key made a vote.
fn recorded(app: &App, poll: &tally_raft::model::Poll, name: &RequestName) -> Option<RequestStatus> {
    let (receipt, changed) = {
        let applied = app.node.sm.read();
        // Unreadable counts as unknown here: the caller is told to retry with the key.
        applied.state.polls.get(&poll.poll_id)?.request_receipt(&name.voter, &name.key).ok()??
    };
    let status = if changed { VoteStatus::Changed } else { VoteStatus::Recorded };
    let body = super::votes::vote_body(status, &receipt, false);
    Some(RequestStatus {
        state: RequestState::Completed,
        poll_id: poll.poll_id.0.clone(),
        vote_id: Some(receipt.vote_id.clone()),
        result: Some(body),
        error: None,
    })
}

fn unknown(request_id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no request {request_id:?} for this poll is known; retry the vote with its idempotency key to learn its outcome"
    ))
}

#[cfg(test)]
mod tests {
    use tally_api::v1::ReceiptBody;

    use super::*;

    #[test]
    fn finished_requests_are_forgotten_first_and_pending_ones_never() {
        let requests = Requests::default();
        for i in 0..REQUESTS_MAX {
            requests.accept(&format!("r{i}"), "p").unwrap();
        }
        assert!(requests.accept("one-more", "p").is_err(), "all pending: refuse");
        let receipt = ReceiptBody { vote_id: "v1.0".into(), position: 1, chain_hash: "00".into() };
        let reply = VoteBody {
            status: VoteStatus::Recorded,
            vote_id: "v1.0".into(),
            poll_id: "p".into(),
            option_id: "o1".into(),
            recorded_at: "2026-01-01T00:00:00Z".into(),
            log_index: 3,
            replayed: false,
            receipt,
        };
        requests.finish("r5", Ok(reply));
        requests.accept("one-more", "p").unwrap();
        assert!(requests.get("r5").is_none(), "the finished one made room");
        assert_eq!(requests.get("r4").unwrap().state, RequestState::Pending);
    }

    #[test]
    fn request_ids_carry_node_voter_and_key_whatever_their_bytes() {
        for (voter, key) in [("alice", "k-1"), ("a.b.c", "x.y"), ("Zoë ∑", "~!@#$%^&*()")] {
            let name =
                RequestName { node: 7, poll: "p-1".into(), voter: VoterId(voter.to_string()), key: key.to_string() };
            let id = name.format("Rand0m");
            assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)), "{id}");
            assert_eq!(RequestName::parse(&id), Some(name));
        }
        for bad in ["", "r", "r.x.a.cA.YQ.YQ", "q.1.a.cA.YQ.YQ", "r.1.a.cA.YQ", "r.1.a.cA.YQ.YQ.YQ", "r.1.a.cA.!!.YQ"] {
            assert_eq!(RequestName::parse(bad), None, "{bad}");
        }
    }
}
