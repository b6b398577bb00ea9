use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Database, Keyspace, Pair, StoreError, WriteBatch};

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
}

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
            }),
        })
    }

    fn flush_durably(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.db.flush()?;
        inner.data_file.sync_data()?;
        inner.sync_new_blobs()
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

    fn size_on_disk(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.flush_durably()
    }
}

struct SledKeyspace {
    tree: sled::Tree,
    db: SledDb,
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

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut sled_batch = sled::Batch::default();
        for op in batch.ops {
            match op {
                crate::Op::Put(k, v) => sled_batch.insert(k, v),
                crate::Op::Delete(k) => sled_batch.remove(k),
            }
        }
        Ok(self.tree.apply_batch(sled_batch)?)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_durably()
    }
}
