//! `/v1/polls/{poll_id}/votes`: one vote, a batch, and "have I voted?".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::errors::ErrorBody;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VoteRequest {
    pub option_id: String,
    /// Required while auth is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voter_id: Option<String>,
    /// Keys among the poll's `breakdowns`; short string values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
}

/// What a vote did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VoteStatus {
    /// A first vote (also the replay of one, by its idempotency key).
    Recorded,
    /// A vote that replaced the voter's earlier one.
    Changed,
}

impl VoteStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VoteStatus::Recorded => "recorded",
            VoteStatus::Changed => "changed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VoteBody {
    /// `recorded` (also for a replay of the same idempotency key) or `changed`.
    #[schema(value_type = String)]
    pub status: VoteStatus,
    pub vote_id: String,
    pub poll_id: String,
    pub option_id: String,
    pub recorded_at: String,
    pub log_index: u64,
    /// True when this answer repeats the reply to an earlier request with the same key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// What a voter keeps to check the vote later against `/receipts/{vote_id}` and the
    /// audit stream.
    pub receipt: ReceiptBody,
}

/// A vote's place in its poll's audit chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReceiptBody {
    pub vote_id: String,
    pub position: u64,
    /// Hex SHA-256 of this link (see docs/audit-chain.md).
    pub chain_hash: String,
}

/// The 202 answer to `Prefer: respond-async`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AcceptedBody {
    /// Always `accepted`.
    pub status: String,
    pub request_id: String,
    pub poll_id: String,
    /// A retry of the vote with this key tells its outcome on any node, even if the
    /// accepting node forgets the request.
    pub idempotency_key: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchVote {
    /// Optional; when given it must be the URL's poll (a vote is never moved to another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_id: Option<String>,
    pub option_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voter_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchRequest {
    pub votes: Vec<BatchVote>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchBody {
    /// One per vote, in order: a vote reply or `{"error": {...}}`.
    pub results: Vec<BatchResult>,
}

/// One vote's outcome inside a batch reply: its reply, or its error alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BatchResult {
    Vote(VoteBody),
    Error(ErrorBody),
}

impl BatchResult {
    pub fn into_result(self) -> Result<VoteBody, ErrorBody> {
        match self {
            BatchResult::Vote(vote) => Ok(vote),
            BatchResult::Error(error) => Err(error),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MeQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voter_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MeBody {
    pub has_voted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub option_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voted_at: Option<String>,
}
