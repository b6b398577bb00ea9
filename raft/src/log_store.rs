//! openraft's log storage: entries in the `raft-log` journal (append-only segment files,
//! see `tally_storage::FileJournal`), and the vote, the committed index and the last purge
//! in the `log_meta` keyspace.
//!
//! `append` writes entries and returns; openraft learns they are durable only from the
//! callback, which fires after a flush that reached the disk: that flush is what makes an
//! acknowledged vote survive a crash. One flusher makes every append that arrived while
//! the previous flush ran durable with one flush (group commit at the disk), and openraft
//! keeps replicating while the disk works.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tally_storage::{Database, Journal, Keyspace, StoreError, WriteBatch};
use tokio::sync::mpsc;

use crate::typ::{ElectionVote, Entry, LogId, StorageError};
use crate::{codec, io_error, TypeConfig};

/// Raft's election vote (term and candidate), not a ballot: the key stays `vote` on disk.
const ELECTION_VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const FORMAT: &[u8] = b"format";
/// The log entries' format. 2: `Request.entropy` (unguessable vote ids). 3: entries in a
/// journal of their own rather than in sled. 4: members' low-disk alarms in the state
/// machine's meta. 5: the state machine's votes in one block per entry and poll.
/// 6: vote records found through an index, with vote ids that name their entry.
/// 7: two block journals, snapshots streamed from them. 8: vote records in varint.
const FORMAT_VERSION: &[u8; 1] = b"8";
/// The journal that holds the entries.
const JOURNAL: &str = "raft-log";
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
    entries: Arc<dyn Journal>,
    /// The journal's newest entries, as appended.
    recent: Arc<std::sync::Mutex<Recent>>,
    meta: Arc<dyn Keyspace>,
    stats: Arc<LogStats>,
    /// The flusher's queue, where a flush blocks; `None` for a store whose flush is
    /// instant (the simulation's), which `append` flushes itself.
    unflushed: Option<mpsc::Sender<Unflushed>>,
}

/// The newest entries of the log, as they were appended. openraft reads every entry back
/// once per follower to replicate it and once more to apply it; decoding a thousand votes'
/// strings each time was an eighth of a leader's CPU under bulk load, while a copy from
/// here costs a reference count (`Request::command` is shared). It always holds a
/// consecutive run that ends at the journal's last entry, or nothing, so a read from it
/// answers what a read from the journal would.
#[derive(Default)]
struct Recent {
    entries: VecDeque<(Entry, usize)>,
    /// Their encoded sizes, summed.
    bytes: usize,
}

/// Bounds on [`Recent`]: enough for what replication and apply read back (openraft asks
/// for at most `max_payload_entries` at a time, and apply trails the log by little).
const RECENT_ENTRIES_MAX: usize = 1024;
const RECENT_BYTES_MAX: usize = 16 * 1024 * 1024;

impl Recent {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(entry, _)| entry.log_id.index)
    }

    fn push(&mut self, entry: Entry, size: usize) {
        let follows = self.entries.back().is_none_or(|(last, _)| last.log_id.index + 1 == entry.log_id.index);
        if !follows {
            self.clear();
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.entries.len() > RECENT_ENTRIES_MAX || (self.bytes > RECENT_BYTES_MAX && self.entries.len() > 1) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    /// Forgets the entries from `index` on.
    fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|(last, _)| last.log_id.index >= index) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets the entries up to `index`.
    fn purge(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            self.pop_front();
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Copies of the entries with `start <= index < end`.
    fn read(&self, start: u64, end: u64) -> Vec<Entry> {
        let Some(first) = self.first_index() else { return Vec::new() };
        let from = start.saturating_sub(first).min(self.entries.len() as u64) as usize;
        let to = end.saturating_sub(first).min(self.entries.len() as u64) as usize;
        self.entries.range(from..to.max(from)).map(|(entry, _)| entry.clone()).collect()
    }
}

/// An append waiting for the flush that makes it durable.
struct Unflushed {
    entries: u64,
    callback: LogFlushed<TypeConfig>,
}

/// Appends that may wait for a flush. openraft keeps few appends in flight, so this
/// bound should never bind; past it `append` waits rather than queue more.
const UNFLUSHED_MAX: usize = 1024;

/// Starts the flusher of `entries` on a thread of its own. It stops when every
/// `LogStore` clone is gone.
///
/// Only for a store whose flush blocks. The simulation's store flushes instantly, and
/// `append` flushes it inline, as a task would gain nothing there: in a throwaway run a
/// flusher task made one seed's run after the heal differ between replays (cause not
/// found), while the inline flush replays exactly.
fn start_flusher(entries: Arc<dyn Journal>, stats: Arc<LogStats>) -> mpsc::Sender<Unflushed> {
    let (sender, mut receiver) = mpsc::channel::<Unflushed>(UNFLUSHED_MAX);
    let mut flusher = Flusher { entries, stats, failed: None, group: Vec::new() };
    let spawned = std::thread::Builder::new().name("raft-log-sync".into()).spawn(move || {
        while let Some(first) = receiver.blocking_recv() {
            flusher.flush(first, &mut receiver);
        }
    });
    if let Err(e) = spawned {
        // Without a flusher every append fails (its queue is closed): the node stops
        // rather than acknowledge what is not on disk.
        tracing::error!("cannot start the log's flusher thread: {e}");
    }
    sender
}

struct Flusher {
    entries: Arc<dyn Journal>,
    stats: Arc<LogStats>,
    /// After one failed flush nothing more is reported durable: what reached the disk is
    /// unknown, and openraft stops on the error.
    failed: Option<String>,
    group: Vec<Unflushed>,
}

impl Flusher {
    /// Makes `first` and every append queued behind it durable with one flush, then tells
    /// openraft, in append order.
    fn flush(&mut self, first: Unflushed, queue: &mut mpsc::Receiver<Unflushed>) {
        self.group.push(first);
        while let Ok(next) = queue.try_recv() {
            self.group.push(next);
        }
        let entries = self.group.iter().map(|u| u.entries).sum();
        if self.failed.is_none() {
            if let Err(e) = flush_timed(&*self.entries, &self.stats, entries) {
                self.failed = Some(e.to_string());
            }
        }
        for unflushed in self.group.drain(..) {
            let result = match &self.failed {
                None => Ok(()),
                Some(e) => Err(std::io::Error::other(format!("the log could not be flushed: {e}"))),
            };
            unflushed.callback.log_io_completed(result);
        }
    }
}

fn flush_timed(entries: &dyn Journal, stats: &LogStats, count: u64) -> Result<(), StoreError> {
    let started = Instant::now();
    entries.sync()?;
    let elapsed = started.elapsed();
    let micros = elapsed.as_micros() as u64;
    if let Some(observe) = stats.flush_observer.get() {
        observe(elapsed);
    }
    stats.flushes.fetch_add(1, Ordering::Relaxed);
    stats.entries_flushed.fetch_add(count, Ordering::Relaxed);
    stats.flush_micros_total.fetch_add(micros, Ordering::Relaxed);
    stats.last_flush_micros.store(micros, Ordering::Relaxed);
    Ok(())
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    io_error(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    io_error(ErrorSubject::Logs, ErrorVerb::Write, e)
}

impl LogStore {
    /// Opens the log. A data dir written by a build with another log format (the disk
    /// format is unversioned bincode of our types) is refused here, at once and clearly,
    /// rather than failing on the first old entry read later.
    pub fn open(db: &dyn Database) -> Result<Self, StoreError> {
        let entries = db.journal(JOURNAL)?;
        let stats = Arc::<LogStats>::default();
        let unflushed = db.flush_blocks().then(|| start_flusher(entries.clone(), stats.clone()));
        let store = Self { entries, recent: Arc::default(), meta: db.keyspace("log_meta")?, stats, unflushed };
        let format = store.meta.get(FORMAT)?;
        if format.as_deref() != Some(FORMAT_VERSION.as_slice()) {
            let used = format.is_some() || store.entries.last()?.is_some() || store.meta.get(ELECTION_VOTE)?.is_some();
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

    /// Whether this log was ever used: entries, a vote, a purge point.
    pub fn holds_anything(&self) -> Result<bool, StoreError> {
        Ok(self.entries.last()?.is_some()
            || self.meta.get(ELECTION_VOTE)?.is_some()
            || self.meta.get(PURGED)?.is_some())
    }

    /// Starts an unused log after `log_id`, where a restored state stands: the entries up
    /// to it count as purged and committed.
    pub fn mark_restored(&self, log_id: LogId) -> Result<(), StoreError> {
        let encoding = |e: codec::CodecError| StoreError::Io(std::io::Error::other(e));
        let mut batch = WriteBatch::new();
        batch.put(PURGED.to_vec(), codec::encode(&log_id).map_err(encoding)?);
        batch.put(COMMITTED.to_vec(), codec::encode(&Some(log_id)).map_err(encoding)?);
        self.meta.write(batch)?;
        self.meta.flush()
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        // Every change to it is whole before the lock is let go: a panic elsewhere leaves
        // it consistent.
        self.recent.lock().unwrap_or_else(|poison| poison.into_inner())
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
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        // openraft checks that a read covers the whole range it asked for (at most
        // `max_payload_entries` when replicating; what is committed but not applied when
        // applying), so no cap here.
        // One consistent view of both under the lock; the decoding after it, so that a long
        // read (a restart's apply, a lagging follower) does not hold up appends.
        let (records, cached) = {
            let recent = self.recent();
            let cached_from = recent.first_index().unwrap_or(u64::MAX).max(start);
            let records = match start < cached_from {
                true => self.entries.read(start, cached_from.min(end)).map_err(read_err)?,
                false => Vec::new(),
            };
            (records, recent.read(cached_from, end))
        };
        let mut entries = Vec::with_capacity(records.len() + cached.len());
        for (_, bytes) in &records {
            entries.push(codec::decode(bytes).map_err(read_err)?);
        }
        entries.extend(cached);
        Ok(entries)
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

    async fn save_vote(&mut self, vote: &ElectionVote) -> Result<(), StorageError> {
        self.write_meta(ELECTION_VOTE, vote, true)
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
    async fn read_vote(&mut self) -> Result<Option<ElectionVote>, StorageError> {
        let vote: Option<ElectionVote> = self.read_meta(ELECTION_VOTE)?;
        #[cfg(feature = "bug-injection")]
        if crate::bugs::resume_leadership() {
            return Ok(vote);
        }
        Ok(vote.map(|vote| ElectionVote { committed: false, ..vote }))
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
        let (mut records, mut appended) = (Vec::new(), Vec::new());
        for entry in entries {
            let (index, bytes) = (entry.log_id.index, codec::encode(&entry).map_err(write_err)?);
            appended.push((entry, bytes.len()));
            records.push((index, bytes));
        }
        let count = records.len() as u64;
        {
            // Under the lock, so that no read sees the journal ahead of this copy.
            let mut recent = self.recent();
            if let Err(e) = self.entries.append(records) {
                recent.clear();
                return Err(write_err(e));
            }
            for (entry, size) in appended {
                recent.push(entry, size);
            }
        }
        // Only a durable append may be reported: openraft counts this node towards the
        // quorum that acknowledges the entries as soon as the callback fires.
        match &self.unflushed {
            Some(queue) => queue
                .send(Unflushed { entries: count, callback })
                .await
                .map_err(|_| write_err(std::io::Error::other("the log's flusher has stopped"))),
            None => {
                let flushed = flush_timed(&*self.entries, &self.stats, count);
                let reported = flushed.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
                callback.log_io_completed(reported);
                flushed.map_err(write_err)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.recent().truncate(log_id.index);
        self.entries.truncate(log_id.index).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point durably first: the journal frees whole segments, and
        // entries at or below it that come back after a crash are below the log's start.
        self.write_meta(PURGED, &log_id, true)?;
        self.recent().purge(log_id.index);
        self.entries.purge(log_id.index).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::model::{Command, Request};

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(term: u64, index: u64) -> Entry {
        let command = Command::SetAlarm { node_id: term, raised: index.is_multiple_of(2) };
        let request = Request { timestamp_ms: index as i64, entropy: [term as u8; 16], command: Arc::new(command) };
        Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(request) }
    }

    fn entries(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        range.map(|index| entry(term, index)).collect()
    }

    /// Reads that start before the entries kept in memory join the journal's older ones to
    /// them, and every read, through truncations and purges, is what a store that reads
    /// only its journal (a reopened one) returns.
    #[tokio::test]
    async fn entries_kept_in_memory_read_as_the_journal_does() {
        let db = tally_storage::MemDb::new();
        let mut store = LogStore::open(&db).unwrap();
        let last = RECENT_ENTRIES_MAX as u64 + 200;
        store.blocking_append(entries(1, 1..=last)).await.unwrap();
        assert_eq!(store.recent.lock().unwrap().first_index(), Some(201), "the oldest left memory");
        let mut from_journal = LogStore::open(&db).unwrap();
        for (start, end) in [(1, last), (150, 250), (201, 300), (last - 5, last + 10)] {
            let expected = entries(1, start..=end.min(last));
            assert_eq!(store.try_get_log_entries(start..=end).await.unwrap(), expected, "{start}..={end}");
            assert_eq!(from_journal.try_get_log_entries(start..=end).await.unwrap(), expected);
        }
        // A new leader's entries replace the tail from 1000 on.
        store.truncate(log_id(1, 1000)).await.unwrap();
        assert_eq!(store.try_get_log_entries(995..1100).await.unwrap(), entries(1, 995..=999));
        store.blocking_append(entries(2, 1000..=1010)).await.unwrap();
        let expected: Vec<Entry> = entries(1, 990..=999).into_iter().chain(entries(2, 1000..=1010)).collect();
        assert_eq!(store.try_get_log_entries(990..1100).await.unwrap(), expected);
        assert_eq!(LogStore::open(&db).unwrap().try_get_log_entries(990..1100).await.unwrap(), expected);
        store.purge(log_id(1, 600)).await.unwrap();
        assert_eq!(store.try_get_log_entries(601..=605).await.unwrap(), entries(1, 601..=605));
        assert!(store.recent.lock().unwrap().first_index().is_some_and(|first| first > 600));
        // An append that does not follow (openraft's own suite does this) starts afresh.
        store.truncate(log_id(2, 1005)).await.unwrap();
        store.blocking_append(entries(3, 1005..=1005)).await.unwrap();
        assert_eq!(store.try_get_log_entries(1004..1010).await.unwrap(), vec![entry(2, 1004), entry(3, 1005)]);
    }
}
