//! Backups: the applied state at one index, as a file, and a new cluster started from it
//! (after `etcdctl snapshot save` and `restore`).
//!
//! A backup file is [`MAGIC`], then a snapshot stream ([`crate::snapshot`]: the state's
//! header and every vote block), then the SHA-256 of that stream. It is written, checked and
//! restored a piece at a time, never held whole. Restoring writes the state into an empty
//! data directory as if a snapshot had been installed at the backup's index, under a
//! membership of the new cluster's nodes: counts, receipts, audit chains and the running
//! state hash come out as they were, and the new cluster's log starts after that index.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};

use openraft::{BasicNode, Membership};
use sha2::{Digest, Sha256};
use tally_storage::Database;

use crate::log_store::LogStore;
use crate::snapshot::{Header, Incoming, Outgoing};
use crate::state_machine::{Captured, StateMachineStore};
use crate::NodeId;

/// The first bytes of every backup file (and its format's version: 4 streams a snapshot
/// with vote records in varint).
pub use tally_api::backup_file::{DIGEST_BYTES, MAGIC};
/// Read from a backup file at a time.
const READ_BYTES: usize = 1 << 20;

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

/// A backup file being made from a captured state, a piece at a time.
pub struct BackupWriter {
    stream: Outgoing,
    hasher: Sha256,
    magic_sent: bool,
    done: bool,
}

impl BackupWriter {
    /// The writer, and what the file will hold (its digest is known at the end only).
    pub fn new(captured: Captured) -> (Self, BackupInfo) {
        let info = BackupInfo {
            applied_index: captured.last_applied.map_or(0, |l| l.index),
            polls: captured.polls,
            votes: captured.votes,
            state_hash: captured.state_hash,
            bytes: (MAGIC.len() + DIGEST_BYTES) as u64 + captured.stream.len(),
            sha256: String::new(),
        };
        (Self { stream: captured.stream, hasher: Sha256::new(), magic_sent: false, done: false }, info)
    }

    /// The next piece of the file, of at most `max` bytes; `None` after the last.
    pub fn next_chunk(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        if !self.magic_sent {
            self.magic_sent = true;
            return Ok(Some(MAGIC.to_vec()));
        }
        if self.done {
            return Ok(None);
        }
        let mut buf = vec![0; max.max(1)];
        let n = self.stream.read_sync(&mut buf)?;
        if n == 0 {
            self.done = true;
            return Ok(Some(std::mem::take(&mut self.hasher).finalize().to_vec()));
        }
        buf.truncate(n);
        self.hasher.update(&buf);
        Ok(Some(buf))
    }
}

/// Reads the backup file `file` of `len` bytes: checks the magic, hands every byte of the
/// stream to `body` as it reads, then checks the digest. The stream's digest, in hex.
fn read_file(
    mut file: impl Read,
    len: u64,
    mut body: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<String, String> {
    let cut = || "the backup is cut short".to_string();
    let frame_bytes = (MAGIC.len() + DIGEST_BYTES) as u64;
    if len < frame_bytes {
        return Err(cut());
    }
    let mut magic = [0; MAGIC.len()];
    file.read_exact(&mut magic).map_err(|_| cut())?;
    if &magic != MAGIC {
        return Err("not a Tally backup (or of another format version)".into());
    }
    let mut hasher = Sha256::new();
    let mut left = len - frame_bytes;
    let mut buf = vec![0; READ_BYTES];
    while left > 0 {
        let n = left.min(READ_BYTES as u64) as usize;
        file.read_exact(&mut buf[..n]).map_err(|e| format!("cannot read the backup: {e}"))?;
        hasher.update(&buf[..n]);
        body(&buf[..n])?;
        left -= n as u64;
    }
    let mut digest = [0; DIGEST_BYTES];
    file.read_exact(&mut digest).map_err(|_| cut())?;
    let computed = hasher.finalize();
    if computed.as_slice() != digest {
        return Err("the backup's checksum does not match: it is damaged or cut short".into());
    }
    Ok(crate::sm::hex(&computed))
}

fn info(header: &Header, bytes: u64, sha256: String) -> BackupInfo {
    BackupInfo {
        applied_index: header.last_applied.map_or(0, |l| l.index),
        polls: header.state.polls.len(),
        votes: header.state.votes_recorded,
        state_hash: header.state.hash_hex(),
        bytes,
        sha256,
    }
}

/// What the backup file `file` (of `len` bytes) holds, after checking all of it: the
/// digest, every frame's checksum, the header, and that every block decodes.
pub fn inspect(file: impl Read, len: u64) -> Result<BackupInfo, String> {
    let mut check = Incoming::new(None);
    let sha256 = read_file(file, len, |bytes| check.write_sync(bytes).map(drop).map_err(|e| e.to_string()))?;
    let header = check.finish()?;
    Ok(info(&header, len, sha256))
}

/// Writes the backup `file` (of `len` bytes) into `db`, which must hold no Tally data yet,
/// as the state of a new cluster of `members`. Every member restores the same file with
/// the same members; the nodes then elect a leader among themselves and go on from the
/// backup's index. The blocks go to the store as they are read; a file whose digest does
/// not match at the end leaves nothing installed (a later restore into the same directory
/// starts again).
pub async fn restore(
    db: &dyn Database,
    file: impl Read,
    len: u64,
    members: &BTreeMap<NodeId, String>,
) -> Result<BackupInfo, String> {
    if members.is_empty() {
        return Err("a restore needs the new cluster's members (--peers)".into());
    }
    let log = LogStore::open(db).map_err(|e| e.to_string())?;
    if log.holds_anything().map_err(|e| e.to_string())? {
        return Err("the data directory already holds a Tally node's data: restore into an empty one".into());
    }
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    let nodes: BTreeMap<NodeId, BasicNode> = members.iter().map(|(id, addr)| (*id, BasicNode::new(addr))).collect();
    let membership = Membership::new(vec![voters], nodes);
    let mut sm = StateMachineStore::open(db).await.map_err(|e| e.to_string())?;
    let mut sha256 = String::new();
    sm.restore(
        |incoming| {
            sha256 = read_file(file, len, |bytes| incoming.write_sync(bytes).map(drop).map_err(|e| e.to_string()))?;
            Ok(())
        },
        membership,
    )?;
    let shared = sm.shared();
    let report = {
        let applied = shared.read();
        BackupInfo {
            applied_index: applied.last_applied.map_or(0, |l| l.index),
            polls: applied.state.polls.len(),
            votes: applied.state.votes_recorded,
            state_hash: applied.state.hash_hex(),
            bytes: len,
            sha256,
        }
    };
    let log_id = shared.read().last_applied.ok_or("the backup holds no applied index")?;
    log.mark_restored(log_id).map_err(|e| e.to_string())?;
    db.flush().map_err(|e| e.to_string())?;
    Ok(report)
}
