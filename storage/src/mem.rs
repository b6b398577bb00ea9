use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{Database, Keyspace, Op, Pair, StoreError, WriteBatch};

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
    armed: Option<CrashPoint>,
    /// The armed point was reached: the process is as good as dead, and its flushes fail
    /// until [`MemDb::crash`].
    tripped: bool,
}

/// Where a simulated crash strikes, armed with [`MemDb::arm`]. The store only marks the
/// moment ([`MemDb::tripped`]); the simulation then crashes the host before it runs again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// In the next flush (a log append, a saved vote, a snapshot): the power goes before
    /// it ends. It makes nothing durable and fails, so nothing it covered is acknowledged.
    InFlush,
    /// Right after the next write to this keyspace, which stays in memory only: for `sm`,
    /// an apply whose results were never persisted.
    AfterWrite(&'static str),
}

impl MemDb {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every write that was not flushed.
    pub fn crash(&self) {
        let mut inner = self.lock();
        inner.live = inner.durable.clone();
        inner.unflushed.clear();
        inner.armed = None;
        inner.tripped = false;
    }

    /// Arms a crash at `point` (replacing any armed before); [`MemDb::crash`] disarms.
    pub fn arm(&self, point: CrashPoint) {
        let mut inner = self.lock();
        inner.armed = Some(point);
        inner.tripped = false;
    }

    /// Disarms a crash point that was never reached.
    pub fn disarm(&self) {
        self.lock().armed = None;
    }

    /// Whether the armed crash point was reached: the host must crash now.
    pub fn tripped(&self) -> bool {
        self.lock().tripped
    }

    /// A crash that also loses the last flushed entry of `keyspace`, as a store whose
    /// flush lies would: only for showing that the simulation's checker notices.
    pub fn crash_losing_last_flushed(&self, keyspace: &str) {
        let mut inner = self.lock();
        if let Some(map) = inner.durable.get_mut(keyspace) {
            let last = map.keys().next_back().cloned();
            if let Some(last) = last {
                map.remove(&last);
            }
        }
        inner.live = inner.durable.clone();
        inner.unflushed.clear();
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

    fn size_on_disk(&self) -> u64 {
        0
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if inner.armed == Some(CrashPoint::InFlush) {
            inner.armed = None;
            inner.tripped = true;
        }
        if inner.tripped {
            return Err(StoreError::Closed);
        }
        for (name, op) in inner.unflushed.drain(..) {
            apply(inner.durable.entry(name).or_default(), &op);
        }
        Ok(())
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
