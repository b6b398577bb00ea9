//! Durable, ordered key-value keyspaces behind one small trait.
//!
//! Two implementations share the [`Keyspace`] contract:
//! - [`SledDb`]: the production store. sled's own `flush` uses `sync_file_range`, which
//!   does not reach the disk's cache or file metadata (sled issue #1452), so [`SledDb`]
//!   follows every flush with an `fsync` of sled's files. Only after that does
//!   [`Keyspace::flush`] return.
//! - [`MemDb`]: an in-memory store for deterministic simulation. It keeps two copies: what
//!   was written and what was flushed. [`MemDb::crash`] throws away everything not flushed,
//!   so a simulated crash tests our use of `flush`, not sled's.
//!
//! Besides keyspaces, a database holds [`Journal`]s: append-only numbered records (the Raft
//! log), in segment files on disk ([`FileJournal`]) and in memory in [`MemDb`].
//!
//! Keys are raw bytes compared lexicographically; callers that store numbers use
//! big-endian encodings so that range scans come out in numeric order.

mod journal;
mod mem;
mod sled_store;

pub use journal::{FileJournal, Journal, Record, RECORD_BYTES_MAX, SEGMENT_BYTES};
pub use mem::{CrashPoint, MemDb, StorageFault};
pub use sled_store::{SledDb, SledOptions};

use std::sync::Arc;

/// Errors from a store. They are all fatal for the Raft node that sees them: a storage
/// error stops openraft rather than risk acknowledging what is not on disk.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("store is closed (simulated crash)")]
    Closed,
}

/// One change inside an atomic [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// A set of changes applied atomically: after a crash either all of them are visible or
/// none is.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<Op>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put(key.into(), value.into()));
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete(key.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// A key-value pair read from a keyspace.
pub type Pair = (Vec<u8>, Vec<u8>);

/// An ordered keyspace: one sled tree, or one map of a [`MemDb`].
///
/// Writes become visible to reads at once but durable only after [`Keyspace::flush`]
/// returns `Ok`. A flush covers every keyspace of the same database.
pub trait Keyspace: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Pairs with `start <= key < end` (no `end`: to the last key), in key order, at most
    /// `limit` of them.
    fn range(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<Pair>, StoreError>;

    /// Like [`Keyspace::range`], greatest key first.
    fn range_rev(&self, start: &[u8], end: Option<&[u8]>, limit: usize) -> Result<Vec<Pair>, StoreError>;

    /// The greatest pair, if any.
    fn last(&self) -> Result<Option<Pair>, StoreError>;

    /// Applies every change of `batch` atomically.
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError>;

    /// Returns once everything written before the call is durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// A database that hands out named keyspaces and journals and can say how large it is on
/// disk.
pub trait Database: Send + Sync + 'static {
    fn keyspace(&self, name: &str) -> Result<Arc<dyn Keyspace>, StoreError>;

    /// The journal `name`, opened once and shared by every caller. Its durability is its
    /// own: [`Journal::sync`] covers the journal only, and a keyspace flush does not
    /// cover it.
    fn journal(&self, name: &str) -> Result<Arc<dyn Journal>, StoreError>;

    /// Bytes used on disk (for metrics); 0 where nothing is on disk.
    fn size_on_disk(&self) -> u64;

    /// Bytes still free for this database on its file system, as an unprivileged writer
    /// sees it (statvfs's `f_bavail`); `None` where there is no such limit or it cannot
    /// be read. The node's low-disk watermark compares it with `--storage-min-free-mb`.
    fn free_space(&self) -> Option<u64> {
        None
    }

    /// Makes everything written so far durable, in every keyspace.
    fn flush(&self) -> Result<(), StoreError>;

    /// Whether a flush or a journal sync waits on the disk. Such a store is synced from a
    /// thread of its own, never from an async task; a store whose sync is instant
    /// ([`MemDb`]) is synced where it is written, so that a simulation stays on its one
    /// deterministic thread.
    fn flush_blocks(&self) -> bool;
}

/// Deletes every key in `[start, end)`, a page at a time so that memory stays bounded
/// however long the range is. Not atomic across pages; callers use it only where a
/// partially applied delete is harmless (purging Raft log entries, which openraft
/// tolerates because the purge point is recorded first).
pub fn delete_range(space: &dyn Keyspace, start: &[u8], end: Option<&[u8]>) -> Result<u64, StoreError> {
    delete_pages(space, start, end, false)
}

/// Deletes every key in `[start, end)`, greatest first, a page at a time: whatever prefix
/// of the deletes a crash keeps, the remaining keys are still contiguous from `start`.
pub fn delete_range_from_top(space: &dyn Keyspace, start: &[u8], end: Option<&[u8]>) -> Result<u64, StoreError> {
    delete_pages(space, start, end, true)
}

fn delete_pages(space: &dyn Keyspace, start: &[u8], end: Option<&[u8]>, from_top: bool) -> Result<u64, StoreError> {
    const PAGE: usize = 4096;
    let mut deleted = 0u64;
    loop {
        let page = if from_top { space.range_rev(start, end, PAGE)? } else { space.range(start, end, PAGE)? };
        if page.is_empty() {
            return Ok(deleted);
        }
        let mut batch = WriteBatch::new();
        for (key, _) in &page {
            batch.delete(key.clone());
        }
        deleted += page.len() as u64;
        space.write(batch)?;
    }
}

#[cfg(test)]
mod contract_tests;
