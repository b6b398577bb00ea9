//! `/v1/polls/{poll_id}/results` and its stream.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Clone, Debug, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// `eventual` (default) or `linearizable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>)]
    pub consistency: Option<Consistency>,
    /// One of the poll's breakdowns, e.g. `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<String>,
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// The answering node's applied state (a follower read).
    Eventual,
    /// Every vote acknowledged before the request began (a read index through the leader).
    Linearizable,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Eventual => "eventual",
            Consistency::Linearizable => "linearizable",
        }
    }
}

/// Attribute value → option id → votes.
pub type Breakdown = BTreeMap<String, BTreeMap<String, u64>>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OptionResult {
    pub option_id: String,
    pub label: String,
    pub votes: u64,
    pub percentage: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResultsBody {
    pub poll_id: String,
    pub title: String,
    /// `scheduled`, `active` or `closed`.
    #[schema(value_type = String)]
    pub status: super::PollStatus,
    pub total_votes: u64,
    pub options: Vec<OptionResult>,
    /// The leader's timestamp of the last entry the answering node applied.
    pub as_of: String,
    /// The answering node's applied index when it read the counts (for a stream event:
    /// when the counts last changed).
    pub applied_index: u64,
    pub served_by: u64,
    /// `eventual` or `linearizable`.
    #[schema(value_type = String)]
    pub consistency: Consistency,
    /// breakdown name → attribute value → option id → votes, for the requested breakdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<HashMap<String, HashMap<String, HashMap<String, u64>>>>)]
    pub breakdown: Option<BTreeMap<String, Breakdown>>,
}
