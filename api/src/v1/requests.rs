//! `/v1/polls/{poll_id}/votes/requests/{request_id}`: how an async vote ended.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::errors::ErrorDetail;
use super::votes::VoteBody;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    Pending,
    Completed,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RequestStatus {
    pub state: RequestState,
    pub poll_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vote_id: Option<String>,
    /// The vote reply, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<VoteBody>,
    /// The API error, once failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}
