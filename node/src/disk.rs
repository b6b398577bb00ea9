//! The node's watch over its own storage: the low-disk alarm, and the exit after a
//! storage failure.
//!
//! A full disk must not be found by the write that fails: by then openraft has stopped
//! (a storage error is fatal to it), and a follower short of space would keep being sent
//! the entries the others commit. So each node compares its free space and its size with
//! its limits once a second and, when short, proposes a replicated alarm
//! ([`Command::SetAlarm`]): every state machine then refuses new votes, whoever leads and
//! whichever node took them, exactly as etcd's NOSPACE alarm does. The node clears its
//! own alarm once it is comfortably back under its limits, so that freeing space is all
//! an operator has to do.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tally_raft::model::Command;
use tally_storage::Database;
use tokio::task::JoinSet;

use crate::cluster::RaftNode;

const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// `--storage-min-free-mb` and `--storage-quota-mb`, in bytes (0: not set).
#[derive(Clone, Copy, Debug)]
pub struct DiskLimits {
    pub min_free_bytes: u64,
    pub quota_bytes: u64,
}

/// What the limits say of the disk now.
#[derive(Debug, PartialEq, Eq)]
pub enum Room {
    /// Short of disk, and why: raise the alarm.
    Short(String),
    /// Near a limit: keep whatever the alarm is (the hysteresis band).
    Tight,
    /// Comfortably within the limits: clear the alarm.
    Enough,
}

impl DiskLimits {
    pub fn judge(&self, free: Option<u64>, used: u64) -> Room {
        let mut between = false;
        let min = self.min_free_bytes;
        match free {
            Some(free) if min > 0 && free < min => {
                return Room::Short(format!("{} MiB free, under the {} MiB watermark", free >> 20, min >> 20));
            }
            Some(free) => between |= min > 0 && free < min.saturating_add(min / 2),
            // Unreadable for once: no grounds to change the alarm either way.
            None => between |= min > 0,
        }
        let quota = self.quota_bytes;
        if quota > 0 && used > quota {
            return Room::Short(format!("{} MiB used, over the {} MiB quota", used >> 20, quota >> 20));
        }
        between |= quota > 0 && used > quota / 10 * 9;
        if between {
            Room::Tight
        } else {
            Room::Enough
        }
    }
}

/// Free space under which the disk counts as full: the node has failed.
pub const DISK_FULL_BYTES: u64 = 1 << 20;

/// The task that raises and clears this node's alarm as its disk goes, and calls the node
/// failed when the disk is full, for [`crate::Node`] to own; `None` on a store with no
/// disk to watch.
pub fn alarm_watch(
    node: Arc<RaftNode>,
    db: Arc<dyn Database>,
    limits: DiskLimits,
) -> Option<impl Future<Output = ()> + Send + 'static> {
    db.free_space()?;
    let alarm = limits.min_free_bytes > 0 || limits.quota_bytes > 0;
    Some(async move {
        // Owns the stop of a failed Raft below, so that it ends with this task.
        let mut stopping = JoinSet::new();
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let free = db.free_space();
            if let Some(free) = free.filter(|free| *free < DISK_FULL_BYTES) {
                // sled's background flush can meet ENOSPC first, and its writes then wait
                // for room rather than fail: openraft never hears of it, and the node
                // would hang instead of failing. A full disk is a failed store.
                let reason = format!("the data directory's file system is full ({free} bytes free)");
                if node.storage_failed.set(reason.clone()).is_ok() {
                    tracing::error!(%reason, "storage failed: stopping Raft");
                    // Stopped, it sends no more heartbeats, so another node takes the lead;
                    // in a task of its own, as a wedged store may hold the core up.
                    let raft = node.raft.clone();
                    stopping.spawn(async move {
                        let _ = raft.shutdown().await;
                    });
                }
            }
            if node.failure().is_some() {
                // A failed node is on its way out; its alarm, if any, stays up until its
                // restart finds enough space.
                continue;
            }
            // Without limits, an alarm this node raised in an earlier life is cleared.
            let room = if alarm { limits.judge(free, db.size_on_disk()) } else { Room::Enough };
            let short = match room {
                Room::Short(reason) => Some(reason),
                Room::Tight => continue,
                Room::Enough => None,
            };
            let raised = node.sm.read().state.alarms.contains(&node.id);
            if short.is_some() == raised {
                continue;
            }
            match &short {
                Some(reason) => {
                    tracing::warn!(%reason, "storage short of space: raising the NOSPACE alarm, votes are refused")
                }
                None => tracing::info!("storage has room again: clearing the NOSPACE alarm"),
            }
            let command = Command::SetAlarm { node_id: node.id, raised: short.is_some() };
            if let Err(e) = node.propose(command).await {
                // Tried again at the next tick.
                tracing::warn!("could not set the NOSPACE alarm: {e}");
            }
        }
    })
}

/// The task that exits the process `after` a storage error stops Raft, for a supervisor
/// to restart it (etcd exits on a failed fsync too), for [`crate::Node`] to own; `None`
/// if `after` is zero. Until the exit the node says it failed (/health, /ready, 503 on
/// writes), so that the failure is seen rather than guessed.
pub fn exit_on_failure(node: Arc<RaftNode>, after: Duration) -> Option<impl Future<Output = ()> + Send + 'static> {
    if after.is_zero() {
        return None;
    }
    Some(async move {
        // Polled rather than awaited on openraft's metrics channel, which closes when the
        // core stops, failed or not.
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            if let Some(reason) = node.failure() {
                tracing::error!(%reason, exit_in_ms = after.as_millis() as u64, "storage failed: Raft stopped, exiting");
                tokio::time::sleep(after).await;
                std::process::exit(EXIT_STORAGE_FAILED);
            }
        }
    })
}

/// `EX_IOERR` from sysexits.h.
pub const EXIT_STORAGE_FAILED: i32 = 74;

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_alarm_rises_under_the_watermark_and_clears_only_well_above_it() {
        let limits = DiskLimits { min_free_bytes: 64 * MIB, quota_bytes: 0 };
        assert!(matches!(limits.judge(Some(10 * MIB), 0), Room::Short(_)));
        assert_eq!(limits.judge(Some(80 * MIB), 0), Room::Tight);
        assert_eq!(limits.judge(Some(96 * MIB), 0), Room::Enough);
        assert_eq!(limits.judge(None, 0), Room::Tight, "an unreadable free space keeps the alarm as it is");
    }

    #[test]
    fn the_quota_counts_the_bytes_used() {
        let limits = DiskLimits { min_free_bytes: 0, quota_bytes: 100 * MIB };
        assert!(matches!(limits.judge(Some(0), 101 * MIB), Room::Short(_)));
        assert_eq!(limits.judge(Some(0), 95 * MIB), Room::Tight);
        assert_eq!(limits.judge(Some(0), 50 * MIB), Room::Enough);
    }
}
