//! `/v1/cluster/*`: a node's view of the cluster, formation and membership changes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A node's part in Raft, as it sees itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// Its Raft core stopped (a storage failure, or the node is stopping).
    Shutdown,
}

/// Whether a member counts towards a quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Voter,
    Learner,
}

macro_rules! lowercase_display {
    ($type:ty { $($variant:ident => $name:literal),* }) => {
        impl $type {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

lowercase_display!(NodeRole { Leader => "leader", Follower => "follower", Candidate => "candidate", Learner => "learner", Shutdown => "shutdown" });
lowercase_display!(MemberRole { Voter => "voter", Learner => "learner" });

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberBody {
    pub node_id: u64,
    pub addr: String,
    /// `voter` or `learner`.
    #[schema(value_type = String)]
    pub role: MemberRole,
    /// Known on the leader only.
    pub matched_index: Option<u64>,
    pub lag: Option<u64>,
    /// Milliseconds since the answering node last heard from the member (an answer to its
    /// Raft calls, or a Raft message from it); 0 for itself, null if never since it started.
    pub last_heard_ms: Option<u64>,
    /// Heard from within the election timeout. The leader knows it for every member, a
    /// follower for itself and the leader; null where the answering node cannot tell.
    pub reachable: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StatusBody {
    pub node_id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    #[schema(value_type = String)]
    pub role: NodeRole,
    pub leader_id: Option<u64>,
    pub term: u64,
    pub commit_index: Option<u64>,
    pub applied_index: u64,
    pub last_log_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// Running hash of the applied state at `applied_index`: equal on every replica that
    /// applied that index.
    pub state_hash: String,
    pub votes_recorded: u64,
    pub members: Vec<MemberBody>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InitRequest {
    /// Node id → `host:port`. Empty or absent: a cluster of this node alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<BTreeMap<String, String>>,
}

/// The answer to `init`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Initialized {
    pub initialized: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AddMemberRequest {
    pub node_id: u64,
    pub addr: String,
    /// Default true: promoted to voter once caught up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voter: Option<bool>,
}

/// The answer to adding a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberAdded {
    pub node_id: u64,
    pub voter: bool,
}

/// The answer to removing a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberRemoved {
    pub removed: u64,
}
