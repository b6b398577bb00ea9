//! `/v1/polls/{poll_id}/audit` (NDJSON) and `/receipts/{vote_id}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One line of the audit stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Start after this chain position (the last one a consumer saw), as from an offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Keep the response open and stream each new line as it is applied, with a heartbeat
    /// line (`{"heartbeat": true, …}`) at least every 15 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<bool>,
}

/// A followed stream's line when there is nothing new: how far the node has come.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Heartbeat {
    pub heartbeat: bool,
    pub chain_length: u64,
    pub applied_index: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
