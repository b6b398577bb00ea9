//! Snapshots and backups as a stream of bytes, read from the block journal and written into
//! one a bounded piece at a time: at ten million votes a snapshot is about 1.5 GB, and
//! neither the node that sends it nor the one that receives it holds it whole.
//!
//! A stream is [`MAGIC`], then frames `[len u32][crc32 u32][payload]` (little endian, the
//! CRC over the payload): first the [`Header`] (the state without its votes, where it stands
//! in the log, and how many blocks follow), then every block as the journal stores it
//! ([`crate::sm::records::stored_block`]), in journal order. The sender's blocks are the
//! ones already in its journal, never copied: a snapshot costs one small header on disk.
//! The receiver appends the blocks to a journal of their own as they arrive
//! ([`Incoming`]), which becomes the state's journal once the install is done.

use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use tally_storage::{Journal, Record, RECORD_BYTES_MAX};

use crate::codec;
use crate::sm::records;
use crate::sm::State;
use crate::typ::{LogId, StoredMembership};

/// The first bytes of every snapshot stream (and its format's version: 4 has vote records
/// in varint).
pub const MAGIC: &[u8; 13] = b"TALLY-SNAP-4\n";
const FRAME_HEAD: usize = 8;
/// A block frame's payload larger than this is refused: blocks are journal records,
/// bounded by the same limit.
pub const FRAME_BYTES_MAX: u32 = RECORD_BYTES_MAX;
/// The header's limit: it holds every poll (with breakdowns of up to a few MB each) and
/// account, which the state holds in memory anyway, so only a corrupt length is refused.
pub const HEADER_BYTES_MAX: u32 = 1 << 30;
/// Blocks read from, or appended to, a journal at a time (each holds up to an entry's
/// votes), and the bytes an outgoing page reaches before it stops adding blocks: small
/// blocks (single votes) still make pages of a MiB.
const PAGE_BLOCKS: u64 = 16;
const PAGE_BYTES: usize = 1 << 20;
/// Pages an outgoing stream remembers where to find again: openraft seeks back only to
/// resend its last chunk (4 MiB), or to the start.
const MARKS_MAX: usize = 64;

/// What comes before the blocks.
#[derive(Serialize, Deserialize)]
pub struct Header {
    /// Every poll's counts, breakdowns and chain, the accounts, the running hash: all but
    /// the votes, which are the blocks.
    pub state: State,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Blocks that follow, numbered 1, 2, ... in the journal they come from and go to.
    pub blocks: u64,
}

/// [`Header`] borrowed, encoding to the same bytes: the state is not copied to be sent.
#[derive(Serialize)]
pub struct HeaderRef<'a> {
    pub state: &'a State,
    pub last_applied: &'a Option<LogId>,
    pub membership: &'a StoredMembership,
    pub blocks: u64,
}

fn frame_into(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// [`MAGIC`] and the header's frame: the part of a stream that is not blocks.
pub fn head_bytes(header: &HeaderRef<'_>) -> Result<Vec<u8>, String> {
    let payload = codec::encode(header).map_err(|e| e.to_string())?;
    if payload.len() > HEADER_BYTES_MAX as usize {
        return Err(format!("a snapshot header of {} bytes is over the frame limit", payload.len()));
    }
    let mut out = MAGIC.to_vec();
    frame_into(&mut out, &payload);
    Ok(out)
}

/// Decodes what [`head_bytes`] made.
pub fn decode_head(bytes: &[u8]) -> Result<Header, String> {
    let mut parser = FrameParser::default();
    parser.push(bytes);
    match parser.next_frame()? {
        Some(payload) if parser.is_empty() => codec::decode(&payload).map_err(|e| format!("snapshot header: {e}")),
        _ => Err("a snapshot header is cut short or followed by more".into()),
    }
}

fn changed() -> io::Error {
    io::Error::other("the block journal was replaced under this snapshot (a newer one was installed): start again")
}

/// A journal as of one generation: reads fail once it was replaced or cleared.
#[derive(Clone)]
pub struct JournalAt {
    pub journal: Arc<dyn Journal>,
    /// Moved on by whoever replaces or clears a journal, before doing so: a read that still
    /// sees the value it started with read blocks that were there all along.
    pub generation: Arc<AtomicU64>,
    pub expected: u64,
}

impl JournalAt {
    /// Still the journal it was when this was made.
    pub fn current(&self) -> bool {
        self.generation.load(Ordering::Acquire) == self.expected
    }

    fn read(&self, start: u64, end: u64) -> io::Result<Vec<Record>> {
        if self.generation.load(Ordering::Acquire) != self.expected {
            return Err(changed());
        }
        let records = self.journal.read(start, end).map_err(io::Error::other)?;
        if self.generation.load(Ordering::Acquire) != self.expected {
            return Err(changed());
        }
        if records.len() as u64 != end - start {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blocks {start}..{end} are not all in the journal"),
            ));
        }
        Ok(records)
    }
}

/// The length of a stream of a `head_len`-byte head and blocks 1..=`blocks` of `journal`.
pub fn stream_len(head_len: usize, blocks: u64, journal: &dyn Journal) -> u64 {
    head_len as u64 + blocks * FRAME_HEAD as u64 + journal.payload_bytes(1, blocks.saturating_add(1))
}

/// A snapshot being read: the head, then blocks 1..=`blocks` from the journal, a page at
/// a time.
pub struct Outgoing {
    head: Arc<Vec<u8>>,
    source: JournalAt,
    blocks: u64,
    len: u64,
    pos: u64,
    /// The framed blocks of the page last read, and where they start in the stream.
    window: Vec<u8>,
    window_start: u64,
    /// The first block after the window, and where it starts.
    next_seq: u64,
    next_offset: u64,
    /// Pages read lately, (first block, offset), so that a resend seeks back cheaply.
    marks: std::collections::VecDeque<(u64, u64)>,
}

impl Outgoing {
    pub fn new(head: Arc<Vec<u8>>, source: JournalAt, blocks: u64) -> Self {
        let len = stream_len(head.len(), blocks, &*source.journal);
        let start = head.len() as u64;
        Self {
            head,
            source,
            blocks,
            len,
            pos: 0,
            window: Vec::new(),
            window_start: start,
            next_seq: 1,
            next_offset: start,
            marks: Default::default(),
        }
    }

    /// The head: [`MAGIC`] and the header's frame.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// How many blocks follow the head.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// The whole stream's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn seek_to(&mut self, pos: u64) {
        self.pos = pos;
    }

    /// Reads from the current position; 0 at the end.
    pub fn read_sync(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let next = self.next_bytes(buf.len())?;
        let n = next.len();
        buf[..n].copy_from_slice(next);
        Ok(n)
    }

    /// Up to `max` bytes from the current position, which moves past them; none at the end.
    fn next_bytes(&mut self, max: usize) -> io::Result<&[u8]> {
        if self.pos >= self.len || max == 0 {
            return Ok(&[]);
        }
        let at = if self.pos < self.head.len() as u64 {
            self.pos as usize
        } else {
            self.position()?;
            (self.pos - self.window_start) as usize
        };
        let from = if self.pos < self.head.len() as u64 { &self.head[..] } else { &self.window[..] };
        let n = max.min(from.len() - at);
        self.pos += n as u64;
        Ok(&from[at..at + n])
    }

    /// Makes the window hold `pos`, which is past the head and before the end.
    fn position(&mut self) -> io::Result<()> {
        if self.pos >= self.window_start && self.pos < self.next_offset {
            return Ok(());
        }
        if self.pos < self.window_start {
            // Back to the last page that starts at or before `pos` (or the first block).
            let mark = self.marks.iter().rev().find(|(_, offset)| *offset <= self.pos).copied();
            let (seq, offset) = mark.unwrap_or((1, self.head.len() as u64));
            self.next_seq = seq;
            self.next_offset = offset;
            self.window.clear();
            self.window_start = offset;
        }
        while self.pos >= self.next_offset {
            if self.next_seq > self.blocks {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "the blocks are shorter than the stream"));
            }
            if self.marks.back().is_none_or(|(seq, _)| *seq < self.next_seq) {
                if self.marks.len() == MARKS_MAX {
                    self.marks.pop_front();
                }
                self.marks.push_back((self.next_seq, self.next_offset));
            }
            self.window.clear();
            let first = self.next_seq;
            while self.next_seq <= self.blocks && self.window.len() < PAGE_BYTES {
                let end = (self.next_seq + PAGE_BLOCKS).min(self.blocks + 1);
                for (_, payload) in &self.source.read(self.next_seq, end)? {
                    frame_into(&mut self.window, payload);
                }
                self.next_seq = end;
            }
            debug_assert!(self.next_seq > first, "a page holds at least one block");
            self.window_start = self.next_offset;
            self.next_offset += self.window.len() as u64;
        }
        Ok(())
    }
}

/// Splits bytes, pushed in pieces of any size, into [`MAGIC`] and checked frames.
#[derive(Default)]
pub struct FrameParser {
    buf: Vec<u8>,
    start: usize,
    magic_seen: bool,
    frames: u64,
}

impl FrameParser {
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// No bytes wait to be parsed.
    pub fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    /// The next whole frame's payload, if it has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, String> {
        let rest = &self.buf[self.start..];
        if !self.magic_seen {
            if rest.len() < MAGIC.len() {
                return if MAGIC.starts_with(rest) { Ok(None) } else { Err(not_a_snapshot()) };
            }
            if &rest[..MAGIC.len()] != MAGIC {
                return Err(not_a_snapshot());
            }
            self.magic_seen = true;
            self.start += MAGIC.len();
            return self.next_frame();
        }
        if rest.len() < FRAME_HEAD {
            return Ok(None);
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let limit = if self.frames == 0 { HEADER_BYTES_MAX } else { FRAME_BYTES_MAX };
        if len > limit {
            return Err(format!("a snapshot frame of {len} bytes is over the limit of {limit}"));
        }
        let end = FRAME_HEAD + len as usize;
        if rest.len() < end {
            return Ok(None);
        }
        let payload = &rest[FRAME_HEAD..end];
        if crc32fast::hash(payload) != crc {
            return Err("a snapshot frame does not match its checksum".into());
        }
        let payload = payload.to_vec();
        self.start += end;
        self.frames += 1;
        Ok(Some(payload))
    }
}

fn not_a_snapshot() -> String {
    "not a Tally snapshot stream (or of another format version)".into()
}

/// A snapshot being received: checked frame by frame as the bytes come, its blocks
/// appended to a journal as they arrive (or, with none, only checked and counted).
pub struct Incoming {
    sink: Option<JournalAt>,
    /// Bytes taken so far; `pos` is where the next write goes (a resent chunk starts before).
    received: u64,
    pos: u64,
    parser: FrameParser,
    header: Option<Box<Header>>,
    next_seq: u64,
    page: Vec<Record>,
    failed: Option<String>,
    /// Handed on whole ([`Incoming::finish`]): dropping it no longer clears the sink.
    finished: bool,
}

impl Incoming {
    /// Into `sink`, which must be empty; `None` only checks (and decodes every record).
    pub fn new(sink: Option<JournalAt>) -> Self {
        Self {
            sink,
            received: 0,
            pos: 0,
            parser: FrameParser::default(),
            header: None,
            next_seq: 1,
            page: Vec::new(),
            failed: None,
            finished: false,
        }
    }

    /// Forgets what arrived, to take the stream again from its start.
    fn restart(&mut self) -> Result<(), String> {
        if let Some(sink) = &self.sink {
            if !sink.current() {
                return Err("another snapshot is being received into the same journal".into());
            }
            sink.journal.truncate(0).map_err(|e| format!("cannot clear the snapshot's journal: {e}"))?;
        }
        *self = Self::new(self.sink.take());
        Ok(())
    }

    pub fn seek_to(&mut self, pos: u64) {
        self.pos = pos;
    }

    /// The journal the blocks go to.
    pub fn sink(&self) -> Option<&JournalAt> {
        self.sink.as_ref()
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Takes `data` at the current position. Bytes already received (a resent chunk) are
    /// skipped; a gap is an error. After an error every later write fails, except one at
    /// the start, which starts again (openraft resends a snapshot from offset 0 under the
    /// same id).
    pub fn write_sync(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed.is_some() && self.pos == 0 {
            self.restart().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
        if let Some(error) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, error.clone()));
        }
        if self.pos > self.received {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a snapshot chunk came after a gap"));
        }
        let skip = ((self.received - self.pos) as usize).min(data.len());
        self.pos += data.len() as u64;
        let fresh = &data[skip..];
        self.received += fresh.len() as u64;
        if let Err(error) = self.take(fresh) {
            self.failed = Some(error.clone());
            return Err(io::Error::new(io::ErrorKind::InvalidData, error));
        }
        Ok(data.len())
    }

    fn take(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.parser.push(bytes);
        while let Some(payload) = self.parser.next_frame()? {
            let Some(header) = &self.header else {
                self.header = Some(Box::new(codec::decode(&payload).map_err(|e| format!("snapshot header: {e}"))?));
                continue;
            };
            if self.next_seq > header.blocks {
                return Err(format!("the snapshot has more blocks than its header's {}", header.blocks));
            }
            let (_, index, block) =
                records::read_stored_block(&payload).map_err(|e| format!("snapshot block {}: {e}", self.next_seq))?;
            if self.sink.is_some() {
                self.page.push((self.next_seq, payload));
            } else {
                // Only checking (a backup file): every record must decode. An install
                // reads them all anyway, and checks far more.
                records::decode_block(block, index).map_err(|e| format!("snapshot block {}: {e}", self.next_seq))?;
            }
            self.next_seq += 1;
            if self.page.len() as u64 >= PAGE_BLOCKS {
                self.flush_page()?;
            }
        }
        Ok(())
    }

    pub(crate) fn flush_page(&mut self) -> Result<(), String> {
        if let (Some(sink), false) = (&self.sink, self.page.is_empty()) {
            if !sink.current() {
                return Err("another snapshot is being received into the same journal".into());
            }
            let page = std::mem::take(&mut self.page);
            sink.journal.append(page).map_err(|e| format!("cannot store snapshot blocks: {e}"))?;
        }
        Ok(())
    }

    /// Checks that the stream was whole, makes its blocks durable in the sink, and returns
    /// its header.
    pub fn finish(mut self) -> Result<Header, String> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        self.flush_page()?;
        let header = self.header.take().ok_or("the snapshot ended before its header")?;
        if !self.parser.is_empty() || self.next_seq - 1 != header.blocks {
            return Err(format!(
                "the snapshot is cut short: {} of {} blocks arrived whole",
                self.next_seq - 1,
                header.blocks
            ));
        }
        if let Some(sink) = &self.sink {
            sink.journal.sync().map_err(|e| format!("cannot store snapshot blocks: {e}"))?;
            // Checked last: no other receipt cleared or refilled the journal meanwhile.
            let last = sink.journal.last().map_err(|e| e.to_string())?.map_or(0, |(seq, _)| seq);
            if !sink.current() || last != header.blocks {
                return Err("another snapshot was received into the same journal meanwhile".into());
            }
        }
        self.finished = true;
        Ok(*header)
    }
}

/// A receipt dropped before it was handed on whole (cut short, failed, or not installed
/// because it was not newer) leaves no copy of a state on disk.
impl Drop for Incoming {
    fn drop(&mut self) {
        if let (Some(sink), false) = (&self.sink, self.finished) {
            if sink.current() {
                if let Err(error) = sink.journal.truncate(0) {
                    tracing::warn!(%error, "cannot clear an abandoned snapshot's blocks");
                }
            }
        }
    }
}

/// openraft's snapshot data: one type for both directions.
pub enum SnapshotStream {
    Outgoing(Outgoing),
    Incoming(Incoming),
}

impl SnapshotStream {
    fn position(&self) -> u64 {
        match self {
            SnapshotStream::Outgoing(out) => out.pos,
            SnapshotStream::Incoming(inc) => inc.pos,
        }
    }

    fn end(&self) -> u64 {
        match self {
            SnapshotStream::Outgoing(out) => out.len,
            SnapshotStream::Incoming(inc) => inc.received,
        }
    }
}

fn wrong_way(what: &str) -> io::Error {
    io::Error::other(format!("a snapshot being {what} cannot be used that way"))
}

impl tokio::io::AsyncRead for SnapshotStream {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<io::Result<()>> {
        let SnapshotStream::Outgoing(out) = self.get_mut() else { return Poll::Ready(Err(wrong_way("received"))) };
        // Copied into the unfilled part as is: openraft hands a fresh 4 MiB buffer each
        // time, which initialising would zero again and again.
        buf.put_slice(out.next_bytes(buf.remaining())?);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for SnapshotStream {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let SnapshotStream::Incoming(inc) = self.get_mut() else { return Poll::Ready(Err(wrong_way("sent"))) };
        Poll::Ready(inc.write_sync(data))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncSeek for SnapshotStream {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        let target = match position {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => this.end().checked_add_signed(d),
            SeekFrom::Current(d) => this.position().checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        match this {
            SnapshotStream::Outgoing(out) => out.seek_to(target),
            SnapshotStream::Incoming(inc) => inc.seek_to(target),
        }
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.position()))
    }
}

#[cfg(test)]
mod tests;
