//! `/health` and `/ready`: probes for supervisors and load balancers.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `/health`: `ok`, or `failed` with the reason (the node's storage failed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthBody {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `/ready`: whether this node knows a leader and has applied close to its log's end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReadyBody {
    pub ready: bool,
    pub leader_id: Option<u64>,
    pub applied_index: u64,
    pub apply_lag: u64,
    pub storage_failed: Option<String>,
    pub no_space_alarms: Vec<u64>,
}
