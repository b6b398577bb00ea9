//! The one error shape of API.md, and the one place that maps internal errors to HTTP.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};
use tally_actors::VoteError;
use tally_raft::model::{PollRejection, UserRejection, VoteRejection};
use tally_raft::rpc::{AdminError, ProposeError};

pub use tally_api::v1::{ErrorBody, ErrorDetail};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub context: Map<String, Value>,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), context: Map::new(), retry_after_secs: None }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.context.insert(key.to_string(), value.into());
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    pub fn poll_not_found(poll_id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "POLL_NOT_FOUND", format!("poll {poll_id} does not exist"))
            .with("poll_id", poll_id)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// 401: no valid credentials (a bearer token, or the cluster secret on cluster routes).
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "this route does not take that method")
    }

    /// 429, with `Retry-After` of at least a second.
    pub fn rate_limited(who: &str, seconds: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!("{who} is over its rate limit; retry in {seconds} s"),
        );
        error.retry_after_secs = Some(seconds.max(1));
        error
    }

    pub fn already_initialized() -> Self {
        Self::new(StatusCode::CONFLICT, "ALREADY_INITIALIZED", "this node is already part of a cluster")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message);
        error.retry_after_secs = Some(1);
        error
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "TIMEOUT", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", message)
    }

    pub fn payload_too_large() -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "the request body is too large")
    }

    /// The error body, also used for per-vote errors inside a batch reply.
    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: self.detail() }
    }

    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail { code: self.code.to_string(), message: self.message.clone(), context: self.context.clone() }
    }

    pub fn from_rejection(rejection: &VoteRejection, voter_id: &str) -> Self {
        match rejection {
            VoteRejection::PollNotFound => {
                Self::new(StatusCode::NOT_FOUND, "POLL_NOT_FOUND", "the poll does not exist")
            }
            VoteRejection::PollClosed => {
                Self::new(StatusCode::CONFLICT, "POLL_CLOSED", "the poll has ended or was closed")
            }
            VoteRejection::PollNotOpen => {
                Self::new(StatusCode::CONFLICT, "POLL_NOT_OPEN", "the poll has not started yet")
            }
            VoteRejection::InvalidOption => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INVALID_OPTION",
                "the option id is not one of the poll's options",
            ),
            VoteRejection::InvalidAttributes(reason) => Self::invalid(reason.clone()),
            VoteRejection::AlreadyVoted { vote_id, option_id, .. } => Self::new(
                StatusCode::CONFLICT,
                "ALREADY_VOTED",
                format!("voter {voter_id} has already voted on this poll"),
            )
            .with("vote_id", vote_id.clone())
            .with("option_id", option_id.clone()),
            VoteRejection::TooManyChanges { vote_id, option_id } => Self::new(
                StatusCode::CONFLICT,
                "ALREADY_VOTED",
                format!("voter {voter_id} has changed this vote the most times allowed"),
            )
            .with("vote_id", vote_id.clone())
            .with("option_id", option_id.clone()),
            VoteRejection::IdempotencyKeyReused { vote_id } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                "this Idempotency-Key was already used for a request with another option or attributes",
            )
            .with("vote_id", vote_id.clone()),
            VoteRejection::NoSpace { nodes } => Self::no_space(nodes),
        }
    }

    /// A poll command the state machine refused.
    pub fn from_poll_rejection(rejection: PollRejection, poll_id: &str) -> Self {
        match rejection {
            PollRejection::NotFound => Self::poll_not_found(poll_id),
            PollRejection::Invalid(reason) => Self::invalid(reason),
            // Random 71-bit ids collide about never; say so rather than hand back someone
            // else's poll.
            PollRejection::AlreadyExists => {
                Self::internal(format!("poll id {poll_id} is already taken; retry the request"))
            }
        }
    }

    /// An account command the state machine refused.
    pub fn from_user_rejection(rejection: UserRejection, username: &str) -> Self {
        match rejection {
            UserRejection::UsernameTaken => {
                Self::new(StatusCode::CONFLICT, "USERNAME_TAKEN", format!("the username {username} is taken"))
            }
            UserRejection::NoSuchUser => Self::not_found(format!("there is no account {username}")),
            // Changed meanwhile (through another node, or an admin's reset): the password
            // given is not current any more.
            UserRejection::PasswordChanged => {
                Self::unauthenticated("the current password is no longer current: it was changed meanwhile")
            }
        }
    }

    /// A state machine answer of the wrong kind for its command: a bug, said as such.
    pub fn unexpected(response: &tally_raft::model::Response) -> Self {
        Self::internal(format!("unexpected state machine answer {response:?}"))
    }

    /// A member is short of disk: nothing is recorded until its alarm clears.
    pub fn no_space(nodes: &[tally_raft::NodeId]) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NO_SPACE",
            format!(
                "node(s) {nodes:?} are short of disk (under --storage-min-free-mb or over --storage-quota-mb); \
                 the vote was not recorded, and votes are refused until space is freed"
            ),
        );
        error.retry_after_secs = Some(5);
        error
    }

    pub fn storage_failed(reason: &str) -> Self {
        Self::unavailable(format!(
            "this node's storage failed ({reason}); this attempt was not taken: send it to another node \
             (with the same Idempotency-Key, to learn whether an earlier attempt was recorded)"
        ))
    }
}

/// A vote record the index points at could not be read: this node's storage is failing.
impl From<tally_raft::sm::RecordError> for ApiError {
    fn from(error: tally_raft::sm::RecordError) -> Self {
        ApiError::unavailable(format!("this node cannot read its vote records ({error}); try another node"))
    }
}

impl From<ProposeError> for ApiError {
    fn from(error: ProposeError) -> Self {
        match error {
            // Nothing was written: safe to retry anywhere.
            ProposeError::NotLeader { .. } => Self::unavailable("no leader is reachable; the request was not recorded"),
            ProposeError::NoQuorum => Self::unavailable("no quorum is reachable; the request was not recorded"),
            ProposeError::Overloaded => Self::unavailable("the node is overloaded; the request was not recorded"),
            ProposeError::ShuttingDown => Self::unavailable("the node is shutting down"),
            ProposeError::StorageFailed(reason) => Self::storage_failed(&reason),
            ProposeError::Unknown(reason) => Self::timeout(format!(
                "the outcome is unknown ({reason}); retry with the same Idempotency-Key to learn it"
            )),
        }
    }
}

/// A membership change that did not happen: 503 when there is no leader to ask, else 409
/// (it may have half happened: a learner added but not promoted).
impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        match error {
            AdminError::NoLeader => Self::unavailable("no leader is known"),
            AdminError::NotMember(_)
            | AdminError::LeaderMoved
            | AdminError::Forward(_)
            | AdminError::CatchUpTimeout { .. }
            | AdminError::CommitTimeout { .. }
            | AdminError::Refused(_) => Self::new(StatusCode::CONFLICT, "MEMBERSHIP_CHANGE_FAILED", error.to_string()),
        }
    }
}

impl From<VoteError> for ApiError {
    fn from(error: VoteError) -> Self {
        match error {
            VoteError::Propose(e) => e.into(),
            VoteError::TooManyPolls => Self::unavailable("too many polls are active on this node"),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::payload_too_large();
        }
        Self::invalid(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::invalid(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
