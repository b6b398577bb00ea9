use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{Database, Journal, Keyspace, Op, Pair, Record, StoreError, WriteBatch};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// An in-memory database with crash semantics, for simulation.
///
/// Clones share the same "disk". [`MemDb::crash`] models power loss: every keyspace goes
/// back to what it held at its database's last flush.
#[derive(Clone, Default)]
pub struct MemDb {
    inner: Arc<Mutex<MemInner>>,
}

#[derive(Default)]
struct MemInner {
    live: BTreeMap<String, Map>,
    durable: BTreeMap<String, Map>,
    /// Writes since the last flush, in order, replayed onto `durable` by a flush.
    unflushed: Vec<(String, Op)>,
    journals: BTreeMap<String, MemJournalState>,
    armed: Option<CrashPoint>,
    /// The armed point was reached: the process is as good as dead, and its flushes fail
    /// until [`MemDb::crash`].
    tripped: bool,
    /// A storage fault that leaves the process running, until [`MemDb::crash`].
    fault: Option<StorageFault>,
    /// The next [`MemDb::crash`] tears the last unsynced journal record (see
    /// [`MemDb::arm_torn_write`]).
    torn_write: bool,
}

/// A storage fault that the process survives: its store fails, and goes on failing, until
/// the simulation crashes the host (as the node's exit and its supervisor's restart do in
/// production). Injected with [`MemDb::inject`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageFault {
    /// The next flush or journal sync fails with EIO, and so does every one after it:
    /// after a failed fsync, what reached the disk is unknown (PostgreSQL's "fsyncgate").
    FailedSync,
    /// The disk is full: every write, append, flush and sync fails with ENOSPC.
    DiskFull,
}

impl StorageFault {
    fn error(self) -> StoreError {
        StoreError::Io(match self {
            StorageFault::FailedSync => std::io::Error::other("simulated fsync failure (EIO)"),
            StorageFault::DiskFull => std::io::Error::new(std::io::ErrorKind::StorageFull, "simulated full disk"),
        })
    }
}

/// A journal in memory: its records, of which the first `synced` are durable (a journal's
/// durable part is always a prefix of what it holds, as truncation is synced at once).
#[derive(Default)]
struct MemJournalState {
    records: VecDeque<Record>,
    synced: usize,
}

/// Where a simulated crash strikes, armed with [`MemDb::arm`]. The store only marks the
/// moment ([`MemDb::tripped`]); the simulation then crashes the host before it runs again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// In the next flush or journal sync (a log append, a saved vote, a snapshot): the
    /// power goes before it ends. It makes nothing durable and fails, so nothing it covered is acknowledged.
    InFlush,
    /// Right after the next write to this keyspace, which stays in memory only: for `sm`,
    /// an apply whose results were never persisted.
    AfterWrite(&'static str),
}

impl MemDb {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every write that was not flushed, and any injected fault (the restarted
    /// node finds its disk working again).
    pub fn crash(&self) {
        let mut inner = self.lock();
        inner.live = inner.durable.clone();
        inner.unflushed.clear();
        let torn = std::mem::take(&mut inner.torn_write);
        for journal in inner.journals.values_mut() {
            // A torn write: the appends after the last sync reached the disk, all but the
            // last one, cut short mid-record, which the journal's check drops at open
            // (FileJournal's CRC). Raft must cope with entries it never acknowledged.
            let kept = if torn { journal.records.len().saturating_sub(1).max(journal.synced) } else { journal.synced };
            journal.records.truncate(kept);
            journal.synced = kept;
        }
        inner.armed = None;
        inner.tripped = false;
        inner.fault = None;
    }

    /// From now on the store fails as `fault` says, until [`MemDb::crash`].
    pub fn inject(&self, fault: StorageFault) {
        self.lock().fault = Some(fault);
    }

    /// Makes the next [`MemDb::crash`] a torn write rather than a clean loss of everything
    /// unsynced.
    pub fn arm_torn_write(&self) {
        self.lock().torn_write = true;
    }

    /// Arms a crash at `point` (replacing any armed before); [`MemDb::crash`] disarms.
    pub fn arm(&self, point: CrashPoint) {
        let mut inner = self.lock();
        inner.armed = Some(point);
        inner.tripped = false;
    }

    /// Disarms a crash point that was never reached (and a torn write armed with it).
    pub fn disarm(&self) {
        let mut inner = self.lock();
        inner.armed = None;
        inner.torn_write = false;
    }

    /// Whether the armed crash point was reached: the host must crash now.
    pub fn tripped(&self) -> bool {
        self.lock().tripped
    }

    /// A crash that also loses the last synced record of `journal`, as a store whose sync
    /// lies would: only for showing that the simulation's checker notices.
    pub fn crash_losing_last_synced(&self, journal: &str) {
        self.crash();
        let mut inner = self.lock();
        if let Some(journal) = inner.journals.get_mut(journal) {
            journal.records.pop_back();
            journal.synced = journal.records.len();
        }
    }

    /// How many writes a crash now would lose.
    pub fn unflushed_writes(&self) -> usize {
        self.lock().unflushed.len()
    }

    fn lock(&self) -> MutexGuard<'_, MemInner> {
        // A panic elsewhere while holding the lock leaves the maps consistent (every
        // mutation below is a single map operation), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Database for MemDb {
    fn keyspace(&self, name: &str) -> Result<Arc<dyn Keyspace>, StoreError> {
        self.lock().live.entry(name.to_string()).or_default();
        Ok(Arc::new(MemKeyspace { db: self.clone(), name: name.to_string() }))
    }

    fn journal(&self, name: &str) -> Result<Arc<dyn Journal>, StoreError> {
        self.lock().journals.entry(name.to_string()).or_default();
        Ok(Arc::new(MemJournal { db: self.clone(), name: name.to_string() }))
    }

    fn size_on_disk(&self) -> u64 {
        0
    }

    fn flush_blocks(&self) -> bool {
        false
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.reach_sync()?;
        for (name, op) in inner.unflushed.drain(..) {
            apply(inner.durable.entry(name).or_default(), &op);
        }
        Ok(())
    }
}

impl MemInner {
    /// A flush or sync begins: the armed crash strikes here, and after it nothing more
    /// becomes durable.
    fn reach_sync(&mut self) -> Result<(), StoreError> {
        if self.armed == Some(CrashPoint::InFlush) {
            self.armed = None;
            self.tripped = true;
        }
        if self.tripped {
            return Err(StoreError::Closed);
        }
        match self.fault {
            Some(fault) => Err(fault.error()),
            None => Ok(()),
        }
    }

    /// A write or an append begins: a full disk refuses it.
    fn reach_write(&self) -> Result<(), StoreError> {
        match self.fault {
            Some(StorageFault::DiskFull) => Err(StorageFault::DiskFull.error()),
            _ => Ok(()),
        }
    }
}

struct MemJournal {
    db: MemDb,
    name: String,
}

impl MemJournal {
    fn with<T>(&self, f: impl FnOnce(&mut MemJournalState) -> T) -> T {
        let mut inner = self.db.lock();
        f(inner.journals.entry(self.name.clone()).or_default())
    }
}

impl Journal for MemJournal {
    fn append(&self, records: Vec<Record>) -> Result<(), StoreError> {
        let Some((first, _)) = records.first() else { return Ok(()) };
        let first = *first;
        self.db.lock().reach_write()?;
        self.with(|journal| {
            let consecutive = records.iter().enumerate().all(|(i, (index, _))| *index == first + i as u64);
            // Forward only, as on disk (where a skip starts a new segment).
            let follows = journal.records.back().is_none_or(|(last, _)| *last < first);
            if !consecutive || !follows {
                return Err(StoreError::Io(std::io::Error::other(format!("journal append at {first} out of order"))));
            }
            journal.records.extend(records);
            Ok(())
        })?;
        let mut inner = self.db.lock();
        if matches!(inner.armed, Some(CrashPoint::AfterWrite(name)) if name == self.name) {
            inner.armed = None;
            inner.tripped = true;
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        let mut inner = self.db.lock();
        inner.reach_sync()?;
        let journal = inner.journals.entry(self.name.clone()).or_default();
        journal.synced = journal.records.len();
        Ok(())
    }

    fn read(&self, start: u64, end: u64) -> Result<Vec<Record>, StoreError> {
        Ok(self.with(|journal| {
            journal.records.iter().filter(|(index, _)| *index >= start && *index < end).cloned().collect()
        }))
    }

    fn last(&self) -> Result<Option<Record>, StoreError> {
        Ok(self.with(|journal| journal.records.back().cloned()))
    }

    fn truncate(&self, index: u64) -> Result<(), StoreError> {
        let mut inner = self.db.lock();
        inner.reach_sync()?;
        let journal = inner.journals.entry(self.name.clone()).or_default();
        journal.records.retain(|(i, _)| *i < index);
        journal.synced = journal.records.len();
        Ok(())
    }

    fn purge(&self, index: u64) -> Result<(), StoreError> {
        self.with(|journal| {
            while journal.records.front().is_some_and(|(i, _)| *i <= index) {
                journal.records.pop_front();
                journal.synced = journal.synced.saturating_sub(1);
            }
        });
        Ok(())
    }

    fn payload_bytes(&self, start: u64, end: u64) -> u64 {
        self.with(|journal| {
            journal
                .records
                .iter()
                .filter(|(index, _)| *index >= start && *index < end)
                .map(|(_, p)| p.len() as u64)
                .sum()
        })
    }

    fn size_on_disk(&self) -> u64 {
        0
    }
}

struct MemKeyspace {
    db: MemDb,
    name: String,
}

impl MemKeyspace {
    fn scan(&self, start: &[u8], end: Option<&[u8]>, limit: usize, reverse: bool) -> Result<Vec<Pair>, StoreError> {
        let inner = self.db.lock();
        let Some(map) = inner.live.get(&self.name) else {
            return Ok(Vec::new());
        };
        let upper = match end {
            Some(end) if end <= start => return Ok(Vec::new()),
            Some(end) => Bound::Excluded(end.to_vec()),
            None => Bound::Unbounded,
        };
        let range = map.range((Bound::Included(start.to_vec()), upper));
        let pair = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        Ok(if reverse { range.rev().take(limit).map(pair).collect() } else { range.take(limit).map(pair).collect() })
    }
}

fn apply(map: &mut Map, op: &Op) {
    match op {
        Op::Put(k, v) => {
            map.insert(k.clone(), v.clone());
        }
        Op::Delete(k) => {
            map.remove(k);
        }
    }
}

impl Keyspace for MemKeyspace {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.lock().live.get(&self.name).and_then(|m| m.get(key).cloned()))
    }

    fn range(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<Pair>, StoreError> {
        self.scan(start, end, limit, false)
    }

    fn range_rev(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<Pair>, StoreError> {
        self.scan(start, end, limit, true)
    }

    fn last(&self) -> Result<Option<Pair>, StoreError> {
        let inner = self.db.lock();
        Ok(inner.live.get(&self.name).and_then(|m| m.iter().next_back()).map(|(k, v)| (k.clone(), v.clone())))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut inner = self.db.lock();
        inner.reach_write()?;
        let inner = &mut *inner;
        let map = inner.live.entry(self.name.clone()).or_default();
        for op in batch.ops {
            apply(map, &op);
            inner.unflushed.push((self.name.clone(), op));
        }
        if matches!(inner.armed, Some(CrashPoint::AfterWrite(name)) if name == self.name) {
            inner.armed = None;
            inner.tripped = true;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(index: u64) -> Record {
        (index, vec![index as u8])
    }

    #[test]
    fn injected_faults_fail_until_the_crash_and_a_torn_write_keeps_all_but_the_last_append() {
        let db = MemDb::new();
        let space = db.keyspace("sm").unwrap();
        let journal = db.journal("log").unwrap();
        journal.append(vec![rec(1)]).unwrap();
        journal.sync().unwrap();

        db.inject(StorageFault::DiskFull);
        let mut batch = WriteBatch::new();
        batch.put(b"k".to_vec(), b"v".to_vec());
        assert!(space.write(batch.clone()).is_err());
        assert!(journal.append(vec![rec(2)]).is_err());
        db.crash();
        space.write(batch).unwrap();

        db.inject(StorageFault::FailedSync);
        journal.append(vec![rec(2)]).unwrap();
        assert!(journal.sync().is_err());
        assert!(db.flush().is_err(), "a failed fsync fails every later one");
        db.crash();
        assert_eq!(journal.last().unwrap(), Some(rec(1)));

        db.arm(CrashPoint::InFlush);
        db.arm_torn_write();
        journal.append(vec![rec(2), rec(3), rec(4)]).unwrap();
        assert!(journal.sync().is_err());
        assert!(db.tripped());
        db.crash();
        assert_eq!(journal.read(0, 10).unwrap(), vec![rec(1), rec(2), rec(3)]);
        journal.append(vec![rec(4)]).unwrap();
        journal.sync().unwrap();
        db.crash();
        assert_eq!(journal.last().unwrap(), Some(rec(4)), "what survived a torn write counts as synced");
    }
}
