//! Backups: the applied state at one index, as a file, and a new cluster started from it
//! (after `etcdctl snapshot save` and `restore`).
//!
//! A backup file is `MAGIC`, then the state in the snapshot's encoding (the state, the
//! log id it was applied at, the membership), then the SHA-256 of those bytes. Restoring
//! writes that state into an empty data directory as if a snapshot had been installed at
//! the backup's index, under a membership of the new cluster's nodes: counts, receipts,
//! audit chains and the running state hash come out as they were, and the new cluster's
//! log starts after that index.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{BasicNode, CommittedLeaderId, LogId, Membership};
use sha2::{Digest, Sha256};
use tally_storage::Database;

use crate::log_store::LogStore;
use crate::state_machine::{SnapshotData, StateMachineStore};
use crate::typ::StoredMembership;
use crate::NodeId;

/// The first bytes of every backup file (and its format's version).
pub const MAGIC: &[u8; 15] = b"TALLY-BACKUP-2\n";
const DIGEST_BYTES: usize = 32;

/// What a backup holds, for the operator's report.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BackupInfo {
    pub applied_index: u64,
    pub polls: usize,
    pub votes: u64,
    pub state_hash: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Frames `payload` (a [`SnapshotData`] encoding) as a backup file; also its digest.
pub(crate) fn frame(mut payload: Vec<u8>) -> (Vec<u8>, String) {
    let digest = Sha256::digest(&payload);
    // In place: a large payload is not copied to make room for the magic.
    payload.splice(0..0, MAGIC.iter().copied());
    payload.extend_from_slice(&digest);
    (payload, crate::sm::hex(&digest))
}

/// Checks a backup file and decodes it.
pub(crate) fn unframe(file: &[u8]) -> Result<SnapshotData, String> {
    let body = file.strip_prefix(MAGIC.as_slice()).ok_or("not a Tally backup (or of another format version)")?;
    if body.len() < DIGEST_BYTES {
        return Err("the backup is cut short".into());
    }
    let (payload, digest) = body.split_at(body.len() - DIGEST_BYTES);
    if Sha256::digest(payload).as_slice() != digest {
        return Err("the backup's checksum does not match: it is damaged or cut short".into());
    }
    crate::codec::decode(payload).map_err(|e| format!("the backup does not decode: {e}"))
}

/// What the backup file `file` holds, after checking it whole.
pub fn inspect(file: &[u8]) -> Result<BackupInfo, String> {
    let data = unframe(file)?;
    Ok(info(&data, file))
}

pub(crate) fn info(data: &SnapshotData, file: &[u8]) -> BackupInfo {
    BackupInfo {
        applied_index: data.last_applied.map_or(0, |l| l.index),
        polls: data.state.polls.len(),
        votes: data.state.votes_recorded,
        state_hash: data.state.hash_hex(),
        bytes: file.len() as u64,
        sha256: crate::sm::hex(&Sha256::digest(&file[MAGIC.len()..file.len() - DIGEST_BYTES])),
    }
}

/// Writes the backup `file` into `db`, which must hold no Tally data yet, as the state
/// of a new cluster of `members`. Every member restores the same file with the same
/// members; the nodes then elect a leader among themselves and go on from the backup's
/// index.
pub async fn restore(
    db: &dyn Database,
    file: Vec<u8>,
    members: &BTreeMap<NodeId, String>,
) -> Result<BackupInfo, String> {
    if members.is_empty() {
        return Err("a restore needs the new cluster's members (--peers)".into());
    }
    let mut data = unframe(&file)?;
    let report = info(&data, &file);
    // The state is all it takes from here: the file need not stay in memory beside it.
    drop(file);
    let log = LogStore::open(db).map_err(|e| e.to_string())?;
    if log.holds_anything().map_err(|e| e.to_string())? {
        return Err("the data directory already holds a Tally node's data: restore into an empty one".into());
    }
    let index = data.last_applied.map_or(0, |l| l.index);
    // Term 0 is below every term the new cluster will elect, so its first entries sort
    // after the restored point whoever leads.
    let log_id = LogId::new(CommittedLeaderId::new(0, 0), index);
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let nodes: BTreeMap<NodeId, BasicNode> = members.iter().map(|(id, addr)| (*id, BasicNode::new(addr))).collect();
    let membership = Membership::new(vec![voters], nodes);
    // Alarms name members of the old cluster, whose disks are not the new one's.
    data.state.alarms.clear();
    data.last_applied = Some(log_id);
    data.membership = StoredMembership::new(Some(log_id), membership);
    let mut sm = StateMachineStore::open(db).await.map_err(|e| e.to_string())?;
    sm.restore(data).map_err(|e| e.to_string())?;
    log.mark_restored(log_id).map_err(|e| e.to_string())?;
    db.flush().map_err(|e| e.to_string())?;
    Ok(report)
}
