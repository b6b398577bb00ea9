//! openraft's log storage over two keyspaces: `log` (entries keyed by big-endian index)
//! and `log_meta` (vote, committed, last purged).
//!
//! `append` acknowledges entries only after a flush that reached the disk: that flush is
//! what makes an acknowledged vote survive a crash.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tally_storage::{delete_range, delete_range_from_top, Database, Keyspace, StoreError, WriteBatch};

use crate::typ::{Entry, LogId, StorageError, Vote};
use crate::{codec, io_error, TypeConfig};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const FORMAT: &[u8] = b"format";
/// The log entries' format. 2: `Request.entropy` (unguessable vote ids).
const FORMAT_VERSION: &[u8; 1] = b"2";
const PURGED: &[u8] = b"purged";

/// Told the duration of each durable flush; the node points it at a latency histogram.
pub type FlushObserver = Box<dyn Fn(std::time::Duration) + Send + Sync>;

/// Counters that the node turns into metrics.
#[derive(Default)]
pub struct LogStats {
    pub flushes: AtomicU64,
    pub entries_flushed: AtomicU64,
    pub flush_micros_total: AtomicU64,
    pub last_flush_micros: AtomicU64,
    /// The greatest index openraft told this store is committed (0 before any).
    pub committed_index: AtomicU64,
    pub flush_observer: std::sync::OnceLock<FlushObserver>,
}

#[derive(Clone)]
pub struct LogStore {
    entries: Arc<dyn Keyspace>,
    meta: Arc<dyn Keyspace>,
    stats: Arc<LogStats>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    io_error(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    io_error(ErrorSubject::Logs, ErrorVerb::Write, e)
}

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl LogStore {
    /// Opens the log. A data dir written by a build with another log format (the disk
    /// format is unversioned bincode of our types) is refused here, at once and clearly,
    /// rather than failing on the first old entry read later.
    pub fn open(db: &dyn Database) -> Result<Self, StoreError> {
        let store = Self { entries: db.keyspace("log")?, meta: db.keyspace("log_meta")?, stats: Arc::default() };
        let format = store.meta.get(FORMAT)?;
        if format.as_deref() != Some(FORMAT_VERSION.as_slice()) {
            let used = format.is_some() || store.entries.last()?.is_some() || store.meta.get(VOTE)?.is_some();
            if used {
                return Err(StoreError::Io(std::io::Error::other(format!(
                    "this data dir holds a log of another format (version {:?}, this build writes {}): \
                     it was written by another build of tally-node; start it anew (tally demo --fresh, or an empty --data-dir)",
                    format.as_deref().map(|v| String::from_utf8_lossy(v).into_owned()),
                    String::from_utf8_lossy(FORMAT_VERSION)
                ))));
            }
            let mut batch = WriteBatch::new();
            batch.put(FORMAT.to_vec(), FORMAT_VERSION.to_vec());
            store.meta.write(batch)?;
            store.meta.flush()?;
        }
        Ok(store)
    }

    pub fn stats(&self) -> Arc<LogStats> {
        self.stats.clone()
    }

    fn read_meta<T: DeserializeOwned>(&self, name: &[u8]) -> Result<Option<T>, StorageError> {
        match self.meta.get(name).map_err(read_err)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(codec::decode(&bytes).map_err(read_err)?)),
        }
    }

    fn write_meta<T: Serialize>(&self, name: &[u8], value: &T, flush: bool) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        batch.put(name.to_vec(), codec::encode(value).map_err(write_err)?);
        self.meta.write(batch).map_err(write_err)?;
        if flush {
            self.meta.flush().map_err(write_err)?;
        }
        Ok(())
    }

    fn flush_timed(&self, entries: u64) -> Result<(), StoreError> {
        let started = Instant::now();
        self.entries.flush()?;
        let elapsed = started.elapsed();
        let micros = elapsed.as_micros() as u64;
        if let Some(observe) = self.stats.flush_observer.get() {
            observe(elapsed);
        }
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.stats.entries_flushed.fetch_add(entries, Ordering::Relaxed);
        self.stats.flush_micros_total.fetch_add(micros, Ordering::Relaxed);
        self.stats.last_flush_micros.store(micros, Ordering::Relaxed);
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.checked_add(1),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        let end_key = end.map(key);
        let pairs =
            // openraft checks that a read covers the whole range it asked for (at most
            // `max_payload_entries` when replicating; what is committed but not applied
            // when applying), so no cap here.
            self.entries.range(&key(start), end_key.as_ref().map(|k| &k[..]), usize::MAX).map_err(read_err)?;
        pairs.iter().map(|(_, bytes)| codec::decode(bytes).map_err(read_err)).collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.read_meta(PURGED)?;
        let last = self.entries.last().map_err(read_err)?;
        let last_log_id = match last {
            Some((_, bytes)) => {
                let entry: Entry = codec::decode(&bytes).map_err(read_err)?;
                // After a crash mid-purge, stale entries below the purge point may remain.
                Some(entry.log_id).max(last_purged_log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(VOTE, vote, true)
    }

    /// openraft reads the vote only at startup. It comes back *uncommitted*: the same term
    /// and the same candidate, so no vote is ever given twice in a term, but no longer a
    /// granted leadership.
    ///
    /// With the vote as saved, a node that led before a crash resumes leading its old term
    /// at once (`Engine::startup`), with its commit index as last persisted, which may be
    /// behind what it had committed and acknowledged before the crash (`save_committed` is
    /// not flushed). Its read index (`max(committed, first entry of its term)`) could then
    /// miss acknowledged votes: a linearizable read went back in time (sim seed 95059).
    /// Forcing an election after every restart gives every leader a new term whose first
    /// entry commits only after everything committed before it.
    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let vote: Option<Vote> = self.read_meta(VOTE)?;
        #[cfg(feature = "bug-injection")]
        if crate::bugs::resume_leadership() {
            return Ok(vote);
        }
        Ok(vote.map(|vote| Vote { committed: false, ..vote }))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(log_id) = &committed {
            self.stats.committed_index.fetch_max(log_id.index, Ordering::Relaxed);
        }
        // Not flushed: it only saves re-applying entries after a restart; losing it is safe.
        self.write_meta(COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::new();
        for entry in entries {
            batch.put(key(entry.log_id.index).to_vec(), codec::encode(&entry).map_err(write_err)?);
        }
        let count = batch.len() as u64;
        self.entries.write(batch).map_err(write_err)?;
        // Only a durable append may be reported: openraft counts this node towards the
        // quorum that acknowledges the entries as soon as the callback fires.
        let flushed = self.flush_timed(count).map_err(std::io::Error::other);
        let result = match &flushed {
            Ok(()) => Ok(()),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        callback.log_io_completed(result);
        flushed.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // From the top down: a crash halfway (sled may flush any prefix of our deletes)
        // leaves a shorter contiguous log, never one with a hole in it.
        delete_range_from_top(&*self.entries, &key(log_id.index), None)
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point durably first: if we crash halfway through the deletes,
        // the log state still starts after it.
        self.write_meta(PURGED, &log_id, true)?;
        let end = log_id.index.checked_add(1).map(key);
        delete_range(&*self.entries, &key(0), end.as_ref().map(|k| &k[..]))
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        Ok(())
    }
}
