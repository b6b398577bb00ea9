//! Tally's Raft layer: the replicated commands, the vote state machine, and the glue that
//! puts them on openraft 0.9 (storage-v2) over our [`tally_storage`] keyspaces.
//!
//! - [`model`] and [`sm`]: plain data and the pure apply logic; no openraft, no I/O.
//! - [`log_store`] and [`state_machine`]: openraft's storage traits over keyspaces.
//! - [`transport`] and [`network`]: the peer RPC client; the server side is mounted by
//!   the node crate.
//! - [`audit`]: the per-poll hash chain behind vote receipts and the audit stream.
//! - [`codec`]: the only user of bincode.

// openraft's storage traits return its `StorageError` (over 200 bytes); our helpers return
// the same type rather than convert twice.
#![allow(clippy::result_large_err)]

pub use tally_api::audit;
pub mod backup;
#[cfg(feature = "bug-injection")]
pub mod bugs;
pub mod codec;
pub mod limits;
pub mod log_store;
pub mod model;
pub mod network;
pub mod rpc;
pub mod runtime;
pub mod sm;
pub mod snapshot;
pub mod state_machine;
pub mod transport;

pub use openraft;

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The one openraft type configuration of Tally.
    pub TypeConfig:
        D = model::Request,
        R = model::Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = snapshot::SnapshotStream,
        AsyncRuntime = runtime::TallyRuntime,
);

/// Short names for openraft's generic types, instantiated for [`TypeConfig`].
pub mod typ {
    use super::{NodeId, TypeConfig};
    use openraft::BasicNode;

    pub type Raft = openraft::Raft<TypeConfig>;
    pub type Entry = openraft::Entry<TypeConfig>;
    pub type LogId = openraft::LogId<NodeId>;
    /// A term and the candidate a node backs in it: Raft's election vote, not a ballot.
    pub type ElectionVote = openraft::Vote<NodeId>;
    pub type StorageError = openraft::StorageError<NodeId>;
    pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, BasicNode>;
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    pub type RpcError<E = openraft::error::Infallible> = openraft::error::RPCError<NodeId, BasicNode, RaftError<E>>;
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, BasicNode>;
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, BasicNode>;
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
    pub type ElectionVoteRequest = openraft::raft::VoteRequest<NodeId>;
    pub type ElectionVoteResponse = openraft::raft::VoteResponse<NodeId>;
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
}

/// Turns any error into openraft's storage error for the given subject.
pub(crate) fn io_error(
    subject: openraft::ErrorSubject<NodeId>,
    verb: openraft::ErrorVerb,
    error: impl std::error::Error + 'static,
) -> typ::StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&error)).into()
}
