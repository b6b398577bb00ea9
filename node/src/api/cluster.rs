//! `/v1/cluster/*`: this node's view of the cluster, formation and membership changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Extension;
use axum::Json;
use openraft::ServerState;
use tally_api::v1::{
    AddMemberRequest, InitRequest, Initialized, MemberAdded, MemberBody, MemberRemoved, MemberRole, NodeRole,
    StatusBody,
};
use tally_raft::rpc::AdminRequest;
use tally_raft::NodeId;

use super::error::{ApiError, ApiResult};
use super::extract::{ApiBytes, ApiJson};
use crate::auth::{require_operator, Identity};
use crate::{App, Replica};

pub fn node_role(state: ServerState) -> NodeRole {
    match state {
        ServerState::Leader => NodeRole::Leader,
        ServerState::Follower => NodeRole::Follower,
        ServerState::Candidate => NodeRole::Candidate,
        ServerState::Learner => NodeRole::Learner,
        ServerState::Shutdown => NodeRole::Shutdown,
    }
}

/// This node's view of the cluster.
///
/// Role, leader, term, indexes, and each member's lag and reachability (known on the
/// leader).
#[utoipa::path(get, path = "/v1/cluster/status", operation_id = "getClusterStatus", tag = "cluster", responses((status = 200, body = StatusBody)))]
pub async fn status(State(Replica(node)): State<Replica>) -> ApiResult<Json<StatusBody>> {
    let metrics = node.metrics();
    let commit_index = node.raft.with_raft_state(|st| st.committed.map(|c| c.index)).await.ok().flatten();
    let (applied_index, state_hash, votes_recorded) = {
        let applied = node.sm.read();
        (applied.last_applied.map_or(0, |l| l.index), applied.state.hash_hex(), applied.state.votes_recorded)
    };
    let membership = metrics.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let last_log = metrics.last_log_index.unwrap_or(0);
    let leading = metrics.state == ServerState::Leader;
    let within = Duration::from_millis(node.raft.config().election_timeout_max);
    let members = membership
        .nodes()
        .map(|(id, member)| {
            let silence = if *id == node.id { Some(Duration::ZERO) } else { node.network.contacts.silence(*id) };
            // The leader calls every member; a follower hears only from the leader.
            let tells = *id == node.id || leading || metrics.current_leader == Some(*id);
            let reachable = tells.then(|| silence.is_some_and(|s| s <= within));
            let matched_index = metrics.replication.as_ref().map(|r| match r.get(id) {
                Some(Some(log_id)) => log_id.index,
                _ if *id == node.id => last_log,
                _ => 0,
            });
            MemberBody {
                node_id: *id,
                addr: member.addr.clone(),
                role: if voters.contains(id) { MemberRole::Voter } else { MemberRole::Learner },
                matched_index,
                lag: matched_index.map(|m| last_log.saturating_sub(m)),
                last_heard_ms: silence.map(|s| s.as_millis() as u64),
                reachable,
            }
        })
        .collect();
    Ok(Json(StatusBody {
        node_id: node.id,
        role: node_role(metrics.state),
        leader_id: metrics.current_leader,
        term: metrics.current_term,
        commit_index,
        applied_index,
        last_log_index: metrics.last_log_index,
        snapshot_index: metrics.snapshot.map(|s| s.index),
        state_hash,
        votes_recorded,
        members,
    }))
}

/// Form a cluster (first node only).
///
/// Needs the cluster secret or an admin token.
#[utoipa::path(post, path = "/v1/cluster/init", operation_id = "initCluster", tag = "cluster", request_body = InitRequest, responses((status = 200, body = Initialized)))]
pub async fn init(
    State(app): State<Arc<App>>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> ApiResult<Json<Initialized>> {
    require_operator(&app, &identity, &headers)?;
    // The body is optional: empty means a cluster of this node alone.
    let request: InitRequest = if body.iter().all(u8::is_ascii_whitespace) {
        InitRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid(format!("bad init body: {e}")))?
    };
    let requested = request.members.unwrap_or_default();
    let mut members = BTreeMap::new();
    for (id, addr) in requested {
        let id: NodeId = id
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| ApiError::invalid(format!("{id:?} is not a node id")))?;
        members.insert(id, addr);
    }
    if members.is_empty() {
        members.insert(app.node.id, app.advertise_addr.clone());
    }
    if !members.contains_key(&app.node.id) {
        return Err(ApiError::invalid("the members must include this node"));
    }
    // Not a membership change that failed: openraft could not even start one.
    match app.node.initialize(members).await.map_err(|e| ApiError::internal(e.to_string()))? {
        true => Ok(Json(Initialized { initialized: true })),
        false => Err(ApiError::already_initialized()),
    }
}

/// Add a node.
///
/// It joins as a learner and is promoted once caught up, unless `voter` is false. Needs the
/// cluster secret or an admin token.
#[utoipa::path(post, path = "/v1/cluster/members", operation_id = "addMember", tag = "cluster", request_body = AddMemberRequest, responses((status = 200, body = MemberAdded)))]
pub async fn add_member(
    State(app): State<Arc<App>>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<AddMemberRequest>,
) -> ApiResult<Json<MemberAdded>> {
    require_operator(&app, &identity, &headers)?;
    if request.node_id == 0 || !request.addr.contains(':') || request.addr.len() > 256 {
        return Err(ApiError::invalid("node_id must be positive and addr HOST:PORT"));
    }
    let voter = request.voter.unwrap_or(true);
    let change = AdminRequest::AddMember { node_id: request.node_id, addr: request.addr, voter };
    app.node.admin(change).await?;
    Ok(Json(MemberAdded { node_id: request.node_id, voter }))
}

/// Remove a node.
///
/// Needs the cluster secret or an admin token.
#[utoipa::path(delete, path = "/v1/cluster/members/{node_id}", operation_id = "removeMember", tag = "cluster", params(("node_id" = u64, Path)), responses((status = 200, body = MemberRemoved)))]
pub async fn remove_member(
    State(app): State<Arc<App>>,
    Path(node_id): Path<String>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
) -> ApiResult<Json<MemberRemoved>> {
    require_operator(&app, &identity, &headers)?;
    let node_id: NodeId = node_id.parse().map_err(|_| ApiError::invalid(format!("{node_id:?} is not a node id")))?;
    app.node.admin(AdminRequest::RemoveMember { node_id }).await?;
    Ok(Json(MemberRemoved { removed: node_id }))
}

/// Backups are taken a few at a time: each reads every vote block and keeps a blocking
/// thread busy while it is sent.
pub const BACKUPS_MAX: usize = 2;
/// Read from the store and sent at a time.
const BACKUP_CHUNK_BYTES: usize = 1 << 20;

#[utoipa::path(get, path = "/v1/cluster/backup", operation_id = "saveBackup", tag = "cluster",
    summary = "A consistent backup of the applied state, for `tally backup save`",
    responses((status = 200, description = "The backup file (`tally-node --restore` starts a new cluster from it), streamed: \
        its length is known at the start and its SHA-256 ends it",
        content_type = "application/octet-stream"),
        (status = 503, description = "UNAVAILABLE: no leader or quorum to confirm the state is current, or too many backups at once")))]
pub async fn backup(
    State(app): State<Arc<App>>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    require_operator(&app, &identity, &headers)?;
    let turn =
        app.limits.backups.clone().try_acquire_owned().map_err(|_| {
            ApiError::unavailable(format!("{BACKUPS_MAX} backups are being taken on this node already"))
        })?;
    // Everything acknowledged before the request is in it, whichever node answers.
    app.node.linearizable_barrier().await?;
    let sm = app.node.sm.clone();
    let captured = tokio::task::spawn_blocking(move || sm.capture().map_err(|e| e.to_string()))
        .await
        .map_err(|e| ApiError::internal(format!("the backup task failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("cannot capture the state: {e}")))?;
    let (mut writer, info) = tally_raft::backup::BackupWriter::new(captured);
    // Read from the journal on a blocking thread, a chunk at a time, while the body is
    // sent: the state lock is not held, and a slow reader holds at most a few chunks.
    let (chunks, received) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        loop {
            let (chunk, last) = match writer.next_chunk(BACKUP_CHUNK_BYTES) {
                Ok(Some(bytes)) => (Ok(bytes), false),
                Ok(None) => return,
                Err(error) => (Err(error), true),
            };
            if chunks.blocking_send(chunk).is_err() || last {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(received, |mut received| async move {
        received.recv().await.map(|chunk| (chunk, received))
    });
    let headers = [
        (axum::http::header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (axum::http::header::CONTENT_LENGTH, info.bytes.to_string()),
        (
            axum::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"tally-backup-{}.bin\"", info.applied_index),
        ),
        (axum::http::HeaderName::from_static("tally-backup-applied-index"), info.applied_index.to_string()),
    ];
    Ok((headers, axum::body::Body::from_stream(stream)).into_response())
}
