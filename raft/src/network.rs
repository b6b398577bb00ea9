//! openraft's network over [`PeerTransport`], plus Tally's own peer calls
//! (forwarding a command to the leader, asking it for a read index, membership changes,
//! and asking another node about an async vote it accepted).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{NetworkError, PayloadTooLarge, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::rpc::*;
use crate::transport::{PeerTransport, TransportError};
use crate::typ::*;
use crate::{codec, NodeId, TypeConfig};

/// Bytes of one AppendEntries frame above which we ask openraft for fewer entries.
const APPEND_BYTES_BUDGET: usize = 1024 * 1024;
// A frame at the budget is one the receiver takes.
const _: () = assert!(APPEND_BYTES_BUDGET <= crate::limits::PEER_FRAME_BYTES_MAX);

/// Creates one [`PeerConnection`] per target; cheap, since the transport pools.
#[derive(Clone)]
pub struct Network {
    transport: Arc<dyn PeerTransport>,
    /// When each peer was last heard from (see [`Contacts`]).
    pub contacts: Arc<Contacts>,
}

/// When this node last heard from each peer: an answer to one of its Raft calls, or a Raft
/// message from that peer. On the leader that covers every member (heartbeats go to all);
/// on a follower, the leader. openraft 0.9's metrics do not say when a follower last
/// answered, so a dead member would otherwise look as alive as its last matched index.
#[derive(Debug, Default)]
pub struct Contacts(std::sync::Mutex<std::collections::BTreeMap<NodeId, tokio::time::Instant>>);

impl Contacts {
    pub fn heard(&self, peer: NodeId) {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        last.insert(peer, tokio::time::Instant::now());
    }

    /// How long ago `peer` was last heard from; `None` if never since this node started.
    pub fn silence(&self, peer: NodeId) -> Option<Duration> {
        let last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        last.get(&peer).map(|at| at.elapsed())
    }
}

impl Network {
    pub fn new(transport: Arc<dyn PeerTransport>) -> Self {
        Self { transport, contacts: Arc::default() }
    }

    /// Sends `request` to `addr` and decodes the reply.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &'static str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, TransportError> {
        let body = codec::encode(request)
            .map_err(|e| TransportError::BadFrame { addr: addr.to_string(), reason: e.to_string() })?;
        self.call_encoded(addr, path, body, timeout).await
    }

    async fn call_encoded<Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Resp, TransportError> {
        let reply = self.transport.post(addr, path, body, timeout).await?;
        codec::decode(&reply).map_err(|e| TransportError::BadFrame { addr: addr.to_string(), reason: e.to_string() })
    }

    pub async fn forward(
        &self,
        addr: &str,
        command: Arc<crate::model::Command>,
        timeout: Duration,
    ) -> Result<ForwardReply, TransportError> {
        self.call(addr, PATH_FORWARD, &ForwardRequest { command }, timeout).await
    }

    pub async fn admin(
        &self,
        addr: &str,
        request: &AdminRequest,
        timeout: Duration,
    ) -> Result<AdminReply, TransportError> {
        self.call(addr, PATH_ADMIN, request, timeout).await
    }

    pub async fn read_index(&self, addr: &str, timeout: Duration) -> Result<ReadIndexReply, TransportError> {
        self.call(addr, PATH_READ_INDEX, &(), timeout).await
    }

    pub async fn request_status(
        &self,
        addr: &str,
        request_id: &str,
        timeout: Duration,
    ) -> Result<RequestStatusReply, TransportError> {
        self.call(addr, PATH_REQUEST_STATUS, &RequestStatusQuery { request_id: request_id.to_string() }, timeout).await
    }
}

pub struct PeerConnection {
    network: Network,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerConnection {
        PeerConnection { network: self.clone(), target, addr: node.addr.clone() }
    }
}

impl PeerConnection {
    async fn raft_call<Resp, E>(
        &self,
        path: &'static str,
        body: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RpcError<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply = self.network.call_encoded(&self.addr, path, body, option.hard_ttl()).await;
        if reply.is_ok() {
            self.network.contacts.heard(self.target);
        }
        let reply: Result<Resp, RaftError<E>> = reply.map_err(|e| match e {
            // Unreachable makes openraft back off (see `backoff`) instead of retrying
            // at once, which under a partition would only burn connections. A refusal
            // (wrong secret, not a Tally node) will not go away by retrying either.
            TransportError::Unreachable { .. }
            | TransportError::Timeout { .. }
            | TransportError::Broken { .. }
            | TransportError::Status { .. } => openraft::error::RPCError::Unreachable(Unreachable::new(&e)),
            TransportError::BadFrame { .. } => openraft::error::RPCError::Network(NetworkError::new(&e)),
        })?;
        reply.map_err(|e| openraft::error::RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn encode<E: std::error::Error>(request: &impl Serialize) -> Result<Vec<u8>, RpcError<E>> {
        codec::encode(request).map_err(|e| openraft::error::RPCError::Network(NetworkError::new(&e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RpcError> {
        let entries = rpc.entries.len() as u64;
        let body = Self::encode(&rpc)?;
        // openraft gives every AppendEntries one heartbeat interval to complete. A large
        // catch-up batch could never make it, so ask openraft for a smaller one instead.
        if body.len() > APPEND_BYTES_BUDGET && entries > 1 {
            let hint = (entries * APPEND_BYTES_BUDGET as u64 / body.len() as u64).clamp(1, entries - 1);
            return Err(openraft::error::RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint)));
        }
        self.raft_call(PATH_APPEND, body, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RpcError<InstallSnapshotError>> {
        self.raft_call(PATH_SNAPSHOT, Self::encode(&rpc)?, &option).await
    }

    async fn vote(&mut self, rpc: ElectionVoteRequest, option: RPCOption) -> Result<ElectionVoteResponse, RpcError> {
        self.raft_call(PATH_ELECTION_VOTE, Self::encode(&rpc)?, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Bounded, growing pauses while a peer is unreachable.
        let delays = (0..).map(|attempt: u32| Duration::from_millis(50u64 << attempt.min(4)));
        openraft::network::Backoff::new(delays)
    }
}
