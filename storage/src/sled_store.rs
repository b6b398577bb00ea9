use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Database, FileJournal, Journal, Keyspace, Pair, StoreError, WriteBatch};

/// sled settings that Tally sets explicitly rather than inheriting sled's defaults
/// (1 GiB cache, which has been seen to use several times that in memory).
#[derive(Debug, Clone, Copy)]
pub struct SledOptions {
    pub cache_capacity_bytes: u64,
    /// sled's background flush. Durability never depends on it: every Raft append
    /// flushes and fsyncs itself. It only bounds how much a crash can make us replay.
    pub flush_every_ms: Option<u64>,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self { cache_capacity_bytes: 64 * 1024 * 1024, flush_every_ms: Some(1000) }
    }
}

/// A sled database whose flush really reaches the disk.
#[derive(Clone)]
pub struct SledDb {
    inner: Arc<SledInner>,
}

struct SledInner {
    db: sled::Db,
    dir: PathBuf,
    /// Open handle on sled's main file, fsynced after every sled flush: fsync on any
    /// descriptor of a file flushes that file's data and metadata.
    data_file: File,
    /// Blob files already fsynced; blobs are immutable once written, so each needs one.
    synced_blobs: Mutex<BTreeSet<PathBuf>>,
    /// A value that could end up in a blob file was written since the last flush began.
    /// Only then does a flush list the blob directory: a listing on every Raft append
    /// cost two syscalls per flush on the hot path for nothing.
    blob_possible: AtomicBool,
    /// Journals opened so far, each once: two handles on one journal would both write at
    /// its end.
    journals: Mutex<BTreeMap<String, Arc<FileJournal>>>,
}

/// The value size from which a write may produce a blob file. sled 0.34 writes a page to a
/// blob when it serialises to more than a quarter of a segment (2 MiB here), and a leaf
/// splits past 16 items, so a page of values each below this stays inline.
const BLOB_POSSIBLE_BYTES: usize = 64 * 1024;

impl SledDb {
    pub fn open(dir: &Path, options: SledOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_capacity_bytes)
            .flush_every_ms(options.flush_every_ms)
            .mode(sled::Mode::HighThroughput)
            // Large segments keep our entries (tens of KiB at most) inline rather than in
            // separate blob files.
            .segment_size(8 * 1024 * 1024)
            .use_compression(false);
        let db = open_waiting_for_lock(&config)?;
        let data_file = File::open(dir.join("db"))?;
        // Make the directory entries of sled's files durable once.
        File::open(dir)?.sync_all()?;
        Ok(Self {
            inner: Arc::new(SledInner {
                db,
                dir: dir.to_path_buf(),
                data_file,
                synced_blobs: Mutex::new(BTreeSet::new()),
                blob_possible: AtomicBool::new(false),
                journals: Mutex::new(BTreeMap::new()),
            }),
        })
    }

    fn flush_durably(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        // Taken before sled's flush, so a large write racing with this flush is looked
        // for again by the next one.
        let blobs = inner.blob_possible.swap(false, Ordering::AcqRel);
        inner.db.flush()?;
        inner.data_file.sync_data()?;
        if blobs {
            inner.sync_new_blobs()?;
        }
        Ok(())
    }
}

/// How long `open` waits for the previous owner of the directory's lock to let go.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Opens sled, waiting a bounded time while the directory's file lock is held.
///
/// Dropping a `sled::Db` does not release its lock at once: sled's background threads
/// hold the page cache (and with it the locked file) until they finish their current
/// work. A reopen in the same process right after a drop (a restart in tests, or a node
/// restarting its storage) can therefore see `WouldBlock` for a few milliseconds. A lock
/// still held after `LOCK_WAIT` means another process owns the directory, and that error
/// is returned as it is.
fn open_waiting_for_lock(config: &sled::Config) -> Result<sled::Db, StoreError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if is_lock_contention(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return Ok(other?),
        }
    }
}

fn is_lock_contention(e: &std::io::Error) -> bool {
    // sled wraps the `WouldBlock` from `try_lock_exclusive` in a custom error with this text.
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

impl SledInner {
    fn sync_new_blobs(&self) -> Result<(), StoreError> {
        let blob_dir = self.dir.join("blobs");
        let Ok(entries) = std::fs::read_dir(&blob_dir) else {
            return Ok(());
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|poison| poison.into_inner());
        let mut any_new = false;
        for entry in entries {
            let path = entry?.path();
            if !synced.contains(&path) {
                File::open(&path)?.sync_all()?;
                synced.insert(path);
                any_new = true;
            }
        }
        if any_new {
            File::open(&blob_dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl Database for SledDb {
    fn keyspace(&self, name: &str) -> Result<Arc<dyn Keyspace>, StoreError> {
        let tree = self.inner.db.open_tree(name)?;
        Ok(Arc::new(SledKeyspace { tree, db: self.clone() }))
    }

    fn journal(&self, name: &str) -> Result<Arc<dyn Journal>, StoreError> {
        let mut journals = self.inner.journals.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(journal) = journals.get(name) {
            return Ok(journal.clone());
        }
        let journal = Arc::new(FileJournal::open(&self.inner.dir.join(format!("{name}.journal")))?);
        journals.insert(name.to_string(), journal.clone());
        Ok(journal)
    }

    fn size_on_disk(&self) -> u64 {
        let journals = self.inner.journals.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.db.size_on_disk().unwrap_or(0) + journals.values().map(|j| j.size_on_disk()).sum::<u64>()
    }

    fn free_space(&self) -> Option<u64> {
        fs2::available_space(&self.inner.dir).ok()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.flush_durably()
    }

    fn flush_blocks(&self) -> bool {
        true
    }
}

struct SledKeyspace {
    tree: sled::Tree,
    db: SledDb,
}

impl SledKeyspace {
    /// Tells the next flush to look for blob files if `value` could be in one.
    fn note_value(&self, value: &[u8]) {
        if value.len() >= BLOB_POSSIBLE_BYTES {
            self.db.inner.blob_possible.store(true, Ordering::Release);
        }
    }
}

impl Keyspace for SledKeyspace {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn range(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<Pair>, StoreError> {
        let iter = match end {
            Some(end) if end <= start => return Ok(Vec::new()),
            Some(end) => self.tree.range(start..end),
            None => self.tree.range(start..),
        };
        iter.take(limit).map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(StoreError::from)).collect()
    }

    fn range_rev(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<Pair>, StoreError> {
        let iter = match end {
            Some(end) if end <= start => return Ok(Vec::new()),
            Some(end) => self.tree.range(start..end),
            None => self.tree.range(start..),
        };
        iter.rev()
            .take(limit)
            .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(StoreError::from))
            .collect()
    }

    fn last(&self) -> Result<Option<Pair>, StoreError> {
        Ok(self.tree.last()?.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn write(&self, mut batch: WriteBatch) -> Result<(), StoreError> {
        if batch.ops.len() == 1 {
            // One change is atomic by itself. sled's `apply_batch` seals and writes its
            // I/O buffer on every call (`pin_log`), which wakes every thread of its pool:
            // the Raft metadata written on each commit would pay that for nothing.
            match batch.ops.pop().expect("one op") {
                crate::Op::Put(k, v) => {
                    self.note_value(&v);
                    self.tree.insert(k, v)?;
                }
                crate::Op::Delete(k) => {
                    self.tree.remove(k)?;
                }
            }
            return Ok(());
        }
        let mut sled_batch = sled::Batch::default();
        for op in batch.ops {
            match op {
                crate::Op::Put(k, v) => {
                    self.note_value(&v);
                    sled_batch.insert(k, v)
                }
                crate::Op::Delete(k) => sled_batch.remove(k),
            }
        }
        Ok(self.tree.apply_batch(sled_batch)?)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_durably()
    }
}
