//! Peer RPC paths and the messages that only Tally (not openraft) sends between nodes.

use serde::{Deserialize, Serialize};

use crate::model::{Command, Response};
use crate::NodeId;

pub const PATH_APPEND: &str = "/raft/append";
pub const PATH_ELECTION_VOTE: &str = "/raft/vote";
pub const PATH_SNAPSHOT: &str = "/raft/snapshot";
/// A follower hands a command to the leader, which proposes it and answers with the
/// state machine's response.
pub const PATH_FORWARD: &str = "/raft/forward";
/// A follower asks the leader for a read index (linearizable reads on followers).
pub const PATH_READ_INDEX: &str = "/raft/read-index";
/// A node asks the node that accepted an async vote how it ended (`RequestStatusQuery`,
/// answered with the status as JSON, or `None` if that node does not know the request).
pub const PATH_REQUEST_STATUS: &str = "/raft/request-status";
/// The header that carries the cluster secret on every peer request.
pub const SECRET_HEADER: &str = "x-tally-cluster-secret";

#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardRequest {
    pub command: std::sync::Arc<Command>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RequestStatusQuery {
    pub request_id: String,
}

/// The accepting node's status of a request, as the JSON its API would answer.
pub type RequestStatusReply = Option<String>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Committed {
    pub log_index: u64,
    pub response: Response,
}

/// Why a forwarded request or read index was not served. `NotLeader` and `NoQuorum`
/// guarantee the command was not proposed by the receiver; `Unknown` does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("no quorum")]
    NoQuorum,
    #[error("overloaded")]
    Overloaded,
    #[error("the outcome is unknown: {0}")]
    Unknown(String),
    #[error("shutting down")]
    ShuttingDown,
    /// This node's Raft core stopped on a storage error: it took nothing in.
    #[error("this node's storage failed: {0}")]
    StorageFailed(String),
}

pub type ForwardReply = Result<Committed, ProposeError>;
pub type ReadIndexReply = Result<u64, ProposeError>;

/// Membership changes a follower passes to the leader, once (never retried).
pub const PATH_ADMIN: &str = "/raft/admin";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminRequest {
    AddMember { node_id: NodeId, addr: String, voter: bool },
    RemoveMember { node_id: NodeId },
}

/// Why a membership change did not happen (or may only have half happened).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AdminError {
    #[error("no leader is known")]
    NoLeader,
    #[error("leadership moved while the change was forwarded; retry")]
    LeaderMoved,
    #[error("forwarding to the leader failed: {0}")]
    Forward(String),
    #[error("node {0} is not a member")]
    NotMember(NodeId),
    /// A learner that never caught up (a wrong address, say) stays a learner.
    #[error("node {node_id} did not catch up within {waited_secs}s; it stays a learner")]
    CatchUpTimeout { node_id: NodeId, waited_secs: u64 },
    #[error("the change was not committed within {waited_secs}s")]
    CommitTimeout { waited_secs: u64 },
    /// openraft refused the change; its own words.
    #[error("{0}")]
    Refused(String),
}

pub type AdminReply = Result<(), AdminError>;
