//! Async acceptance of votes: `Prefer: respond-async` answers `202` at once, and
//! `GET /v1/polls/{poll_id}/votes/requests/{request_id}` tells how the vote ended.
//!
//! The table is this node's memory, not replicated: ask the node that accepted the vote.
//! If that node restarted, a retry of the vote with the `idempotency_key` of the 202 reply
//! tells the outcome from the replicated state, as for any vote.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use crate::App;

/// Requests remembered per node; the oldest finished ones are forgotten first.
pub const REQUESTS_MAX: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    Pending,
    Completed,
    Failed,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RequestStatus {
    pub state: RequestState,
    pub poll_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vote_id: Option<String>,
    /// The vote reply, once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// The API error, once failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

#[derive(Default)]
pub struct Requests {
    inner: Mutex<Table>,
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

    pub fn finish(&self, request_id: &str, outcome: Result<Value, ApiError>) {
        let mut table = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(status) = table.by_id.get_mut(request_id) {
            match outcome {
                Ok(reply) => {
                    status.state = RequestState::Completed;
                    status.vote_id = reply.get("vote_id").and_then(Value::as_str).map(str::to_string);
                    status.result = Some(reply);
                }
                Err(error) => {
                    status.state = RequestState::Failed;
                    status.error = Some(error.body()["error"].clone());
                }
            }
        }
    }

    fn get(&self, request_id: &str) -> Option<RequestStatus> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).by_id.get(request_id).cloned()
    }
}

#[utoipa::path(get, path = "/v1/polls/{poll_id}/votes/requests/{request_id}",
    params(("poll_id" = String, Path), ("request_id" = String, Path)),
    responses((status = 200, body = RequestStatus), (status = 404, description = "NOT_FOUND: unknown here")))]
pub async fn status(
    State(app): State<Arc<App>>,
    Path((poll_id, request_id)): Path<(String, String)>,
) -> ApiResult<Json<RequestStatus>> {
    app.requests.get(&request_id).filter(|status| status.poll_id == poll_id).map(Json).ok_or_else(|| {
        ApiError::not_found(format!(
            "no request {request_id:?} for this poll on this node; ask the node that accepted it, \
                 or retry the vote with its idempotency key"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_requests_are_forgotten_first_and_pending_ones_never() {
        let requests = Requests::default();
        for i in 0..REQUESTS_MAX {
            requests.accept(&format!("r{i}"), "p").unwrap();
        }
        assert!(requests.accept("one-more", "p").is_err(), "all pending: refuse");
        requests.finish("r5", Ok(serde_json::json!({"vote_id": "v1.0"})));
        requests.accept("one-more", "p").unwrap();
        assert!(requests.get("r5").is_none(), "the finished one made room");
        assert_eq!(requests.get("r4").unwrap().state, RequestState::Pending);
    }
}
