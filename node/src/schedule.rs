//! Closes polls at their `end_time` with no request needed: the leader proposes the close.
//!
//! Votes after `end_time` are refused by the log's own timestamps whether or not the
//! close has been proposed. The close entry is what makes the end visible everywhere at
//! once: every node applies it, every poll actor refreshes, and every results stream
//! pushes the closed status without waiting for a vote or a read.

use std::sync::Arc;
use std::time::Duration;

use tally_raft::model::{Command, PollId, PollPatch};

use crate::cluster::RaftNode;

/// How often the leader looks for polls past their end: the bound on how late a close
/// shows, beyond the commit time.
const TICK: Duration = Duration::from_millis(500);
/// Closes proposed per tick, so that many polls ending at once cannot flood the log.
const CLOSES_PER_TICK_MAX: usize = 64;

/// The task that closes due polls, for [`crate::Node`] to own. It also ends by itself
/// when Raft shuts down (its metrics channel closes).
pub fn closer(node: Arc<RaftNode>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let metrics = node.raft.metrics();
    async move {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            if metrics.has_changed().is_err() {
                return;
            }
            if !node.is_leader() {
                continue;
            }
            for poll_id in due(&node) {
                let close = PollPatch { close: true, ..PollPatch::default() };
                match node.propose(Command::UpdatePoll { poll_id: poll_id.clone(), patch: close }).await {
                    Ok(_) => tracing::info!(%poll_id, "closed at its end_time"),
                    // Retried at the next tick by whichever node leads then.
                    Err(e) => tracing::warn!(%poll_id, "closing at end_time failed: {e}"),
                }
            }
        }
    }
}

/// Polls whose end has passed by this node's clock and that no entry has closed yet.
fn due(node: &RaftNode) -> Vec<PollId> {
    let now = node.clock.now_ms();
    let applied = node.sm.read();
    applied
        .state
        .polls
        .values()
        .filter(|p| p.poll.closed_at_ms.is_none() && p.poll.end_time_ms.is_some_and(|end| end <= now))
        .take(CLOSES_PER_TICK_MAX)
        .map(|p| p.poll.poll_id.clone())
        .collect()
}
