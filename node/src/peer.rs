//! The server side of peer RPC: `/raft/*` on the same address as the API, bincode bodies,
//! every request checked for the cluster secret and, with TLS on, for a peer certificate
//! (see [`crate::tls`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Extension;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tally_actors::GROUP_VOTES_MAX;
use tally_raft::limits::{PEER_FRAME_BYTES_MAX, VOTES_PER_ENTRY_MAX};
use tally_raft::model::Command;
use tally_raft::rpc::*;
use tally_raft::{codec, typ};
use tracing::Instrument;

use crate::tls::PeerCertificate;
use crate::App;

pub fn router(app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_ELECTION_VOTE, post(election_vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .route(PATH_FORWARD, post(forward))
        .route(PATH_READ_INDEX, post(read_index))
        .route(PATH_ADMIN, post(admin))
        .route(PATH_REQUEST_STATUS, post(request_status))
        .layer(DefaultBodyLimit::max(PEER_FRAME_BYTES_MAX))
        .route_layer(middleware::from_fn_with_state(app, check_peer))
}

async fn check_peer(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if let Some(expected) = &app.access.cluster_secret {
        let given = request.headers().get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if !crate::auth::same_secret(given, expected.as_bytes()) {
            app.metrics.peer_rejected.inc();
            return (StatusCode::UNAUTHORIZED, "peer request without the cluster secret").into_response();
        }
    }
    let certified = request.extensions().get::<PeerCertificate>().is_some_and(|peer| peer.0.is_some());
    if app.access.tls.is_some() && !certified {
        app.metrics.peer_rejected.inc();
        return (StatusCode::FORBIDDEN, "peer request without a peer certificate").into_response();
    }
    next.run(request).await
}

/// A bincode request body, decoded within the frame limit; a bad frame is a 400.
struct Frame<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Frame<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let body = Bytes::from_request(request, state).await.map_err(IntoResponse::into_response)?;
        codec::decode_limited(&body, PEER_FRAME_BYTES_MAX as u64)
            .map(Frame)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad frame: {e}")).into_response())
    }
}

fn encode<T: Serialize>(value: &T) -> Response {
    match codec::encode(value) {
        Ok(bytes) => bytes.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Refuses a Raft message that its sender could not have sent. Anyone with the cluster
/// secret could otherwise send AppendEntries as node 9 with a higher term and keep the
/// real leader from leading for as long as they liked.
///
/// With TLS on, the sender must be the node the connection's certificate names: identity
/// is bound to a credential, and membership plays no part. Without TLS, the best this
/// node can do is refuse senders outside the membership it knows. That has a trap
/// (ARCHITECTURE.md, Not yet), and a node that knows no membership yet (it is about to
/// be added) cannot tell, and must accept.
fn refuse_impostor(app: &App, peer: &PeerCertificate, vote: &typ::ElectionVote) -> Option<Response> {
    let Some(sender) = vote.leader_id().voted_for() else {
        // No sender named: no claim to check (and nothing a node without a vote can do).
        return None;
    };
    if app.access.tls.is_some() {
        if peer.names(sender) {
            app.node.network.contacts.heard(sender);
            return None;
        }
        app.metrics.peer_rejected.inc();
        let refusal = format!("the peer certificate does not name node {sender}");
        return Some((StatusCode::FORBIDDEN, refusal).into_response());
    }
    let metrics = app.node.raft.metrics();
    let metrics = metrics.borrow();
    let membership = metrics.membership_config.membership();
    if membership.nodes().next().is_none() || membership.get_node(&sender).is_some() {
        app.node.network.contacts.heard(sender);
        return None;
    }
    app.metrics.peer_rejected.inc();
    Some((StatusCode::FORBIDDEN, format!("node {sender} is not a member of this cluster")).into_response())
}

async fn append(
    State(app): State<Arc<App>>,
    peer: Option<Extension<PeerCertificate>>,
    Frame(request): Frame<typ::AppendEntriesRequest>,
) -> Response {
    if let Some(refused) = refuse_impostor(&app, &peer.unwrap_or_default(), &request.vote) {
        return refused;
    }
    encode(&app.node.raft.append_entries(request).await)
}

async fn election_vote(
    State(app): State<Arc<App>>,
    peer: Option<Extension<PeerCertificate>>,
    Frame(request): Frame<typ::ElectionVoteRequest>,
) -> Response {
    if let Some(refused) = refuse_impostor(&app, &peer.unwrap_or_default(), &request.vote) {
        return refused;
    }
    encode(&app.node.raft.vote(request).await)
}

async fn snapshot(
    State(app): State<Arc<App>>,
    peer: Option<Extension<PeerCertificate>>,
    Frame(request): Frame<typ::InstallSnapshotRequest>,
) -> Response {
    if let Some(refused) = refuse_impostor(&app, &peer.unwrap_or_default(), &request.vote) {
        return refused;
    }
    encode(&app.node.raft.install_snapshot(request).await)
}

async fn forward(State(app): State<Arc<App>>, Frame(request): Frame<ForwardRequest>) -> Response {
    app.metrics.forwarded_commands_received.inc();
    // What the state machine would stop on (it asserts the same): refused here, proposed
    // nowhere.
    if let Command::CastVotes(votes) = &*request.command {
        if let Some(problem) = tally_raft::model::vote_entry_problem(votes) {
            return (StatusCode::BAD_REQUEST, format!("bad vote entry: {problem}")).into_response();
        }
    }
    // The sender's votes by name, so that a vote can be followed from the node that took it
    // (its `entry` span lists the same) to the entry `propose_local` puts it in.
    let span = tracing::debug_span!("forwarded");
    if tracing::enabled!(tracing::Level::TRACE) {
        for vote in request.command.votes() {
            tracing::trace!(parent: &span, poll_id = %vote.poll_id, voter_id = %vote.voter_id, "forwarded vote");
        }
    }
    let reply: ForwardReply = join_next_entry(&app, request.command).instrument(span).await;
    encode(&reply)
}

/// A follower's entry of votes joins this node's proposer as one group, to share the next
/// entry with this node's own clients' votes and any other follower's, when this node
/// leads and the entry is no larger than a group of a batch ([`GROUP_VOTES_MAX`]). Each
/// node used to put its own entry into the log, so a round of votes from three nodes was
/// three entries, each with its own leader fsync, AppendEntries and applies (BENCHMARKS.md,
/// session 24). No entry waits for such a group: it takes the next entry that goes (see
/// `tally_actors::proposer`). Anything else (a bulk entry, another command, a queue with
/// no room for it in the next entry, a leader whose last entry held no votes of its own
/// clients) is proposed as it came, in an entry of its own.
///
/// Not while this node has a forward of its own out: after a leader change that forward
/// may be to the node whose entry this is, which would then wait on this node's proposer
/// while this node's proposer waits on it. A leader that steps down with the group queued
/// forwards its entry to the new leader, one hop more for the follower's votes; the
/// sender's own forward is still out then, so the entry is not taken into its queue again.
/// Every hop is bounded by its write timeout, and the follower's, which started first,
/// ends first (504, outcome unknown).
async fn join_next_entry(app: &App, command: Arc<Command>) -> ForwardReply {
    let timeout = app.node.write_timeout;
    // Only into the very next entry: behind a queue of bulk groups, a follower's votes
    // would wait out entry after entry, where on their own they go at once.
    let room = VOTES_PER_ENTRY_MAX.saturating_sub(app.votes.proposer.queued());
    // And only where the leader has clients of its own: with none, its proposer would send
    // the followers' entries one after another, where openraft pipelines them as they come.
    let joins = matches!(&*command, Command::CastVotes(votes) if votes.len() <= GROUP_VOTES_MAX.min(room))
        && app.votes.proposer.has_own_clients()
        && app.node.is_leader()
        && app.node.failure().is_none()
        && app.node.forwards_in_flight.load(std::sync::atomic::Ordering::Acquire) == 0;
    let votes = match Arc::unwrap_or_clone(command) {
        Command::CastVotes(votes) if joins => votes,
        other => return app.node.propose_local(Arc::new(other), timeout).await,
    };
    let pending = match app.votes.proposer.try_enqueue_group(votes) {
        Ok(pending) => pending,
        Err(votes) => return app.node.propose_local(Arc::new(Command::CastVotes(votes)), timeout).await,
    };
    match tokio::time::timeout(timeout, pending.decided()).await {
        Ok(Ok((log_index, outcomes))) => {
            tracing::debug!(log_index, "committed with this node's entry");
            Ok(Committed { log_index, response: tally_raft::model::Response::Votes(outcomes) })
        }
        Ok(Err(error)) => Err(error),
        Err(_) => Err(ProposeError::Unknown("not committed within the write timeout".into())),
    }
}

async fn read_index(State(app): State<Arc<App>>) -> Response {
    let reply: ReadIndexReply = app.node.read_index_local(app.node.write_timeout).await;
    encode(&reply)
}

async fn admin(State(app): State<Arc<App>>, Frame(request): Frame<AdminRequest>) -> Response {
    let reply: AdminReply =
        if app.node.is_leader() { app.node.admin(request).await } else { Err(AdminError::LeaderMoved) };
    encode(&reply)
}

async fn request_status(State(app): State<Arc<App>>, Frame(query): Frame<RequestStatusQuery>) -> Response {
    let reply: RequestStatusReply =
        app.votes.requests.get(&query.request_id).and_then(|s| serde_json::to_string(&s).ok());
    encode(&reply)
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_compare_whole() {
        assert!(crate::auth::same_secret(b"abc", b"abc"));
        assert!(!crate::auth::same_secret(b"abd", b"abc"));
        assert!(!crate::auth::same_secret(b"ab", b"abc"));
        assert!(!crate::auth::same_secret(b"", b"abc"));
    }
}
