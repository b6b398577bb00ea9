//! openraft's state machine over the `sm` keyspace. Polls, counts and users are kept in
//! memory; vote records are in the keyspace's blocks, found through each poll's index
//! ([`crate::sm::records`]).
//!
//! Layout of the `sm` keyspace: `m` → [`SmMeta`]; `p/<poll>` → [`PollRecord`];
//! `u/<username>` → [`UserRecord`]; `s` → the current snapshot's [`StoredSnapshot`]. Vote
//! records are not in the keyspace but in a block journal, `sm-blocks-0` or `sm-blocks-1`
//! (the meta says which): one record per block (the votes one entry recorded in one poll,
//! [`records::stored_block`]), numbered 1, 2, ... in apply order. A snapshot is a small
//! header plus the first `blocks` blocks of that journal, streamed from it
//! ([`crate::snapshot`]); an installed snapshot's blocks arrive in the other journal, which
//! the install then makes the state's. sled keeps every value
//! it was given in memory (heaptrack: all of a node's blocks, 160 bytes a vote), and
//! blocks are written once and never changed, which is what a journal is for. The keys that applies touched are written, with the meta, in one atomic
//! batch at most every [`PERSIST_INTERVAL`] (or [`PERSIST_KEYS_MAX`] keys), so the persisted
//! state is always exactly the state after some applied index. Neither that write nor a
//! flush is needed for durability: after a crash openraft re-applies from the persisted
//! index, using the log. Writing per apply cost more than the apply itself (sled seals and
//! writes an I/O buffer for every batch). Everything is written and flushed before a
//! snapshot is reported built, because openraft then purges the log behind it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, SnapshotMeta};
use serde::{Deserialize, Serialize};
use tally_storage::{delete_range, Database, Journal, Keyspace, WriteBatch};

use crate::model::*;
use crate::sm::records::{self, BlockSource, RecordError};
use crate::sm::{State, Touched};
use crate::snapshot::{self, HeaderRef, Incoming, Outgoing, SnapshotStream};
use crate::typ::{Entry, LogId, Snapshot, StorageError, StoredMembership};
use crate::{codec, io_error, TypeConfig};

const META: &[u8] = b"m";
const POLL_PREFIX: &[u8] = b"p/";
/// The two journals of vote blocks: the state's, and the one an incoming snapshot fills.
const BLOCKS_JOURNALS: [&str; 2] = ["sm-blocks-0", "sm-blocks-1"];
/// Blocks read or written at a time: each holds up to an entry's votes.
const BLOCK_PAGE: u64 = 64;
const USER_PREFIX: &[u8] = b"u/";
/// The last built (or installed) snapshot: in the `sm` keyspace, so that an install writes
/// it in the same atomic batch as the meta naming its journal.
const CURRENT_SNAPSHOT: &[u8] = b"s";
const SCAN_PAGE: usize = 4096;
/// How long applied changes may wait in memory before they are written to the keyspace.
pub const PERSIST_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
/// How many touched keys may wait, whatever the time.
pub const PERSIST_KEYS_MAX: usize = 20_000;

/// The applied state, shared read-only with the rest of the node.
#[derive(Debug, Default)]
pub struct Applied {
    pub state: State,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// Told about every change to the applied state, from inside apply; must not block.
pub trait ApplyListener: Send + Sync + 'static {
    /// These polls changed at log index `index`.
    fn polls_changed(&self, polls: &mut dyn Iterator<Item = &PollId>, index: u64);
    /// The whole state was replaced (a snapshot was installed).
    fn state_replaced(&self, index: u64);
}

pub struct SmShared {
    applied: RwLock<Applied>,
    applied_index: AtomicU64,
    /// Whether the applied state has any member's low-disk alarm up: read for every batch
    /// of votes about to be proposed, so kept outside the state lock.
    alarm_up: AtomicBool,
    listener: Mutex<Option<Arc<dyn ApplyListener>>>,
    pub snapshots_built: AtomicU64,
    pub last_snapshot_bytes: AtomicU64,
    /// Serialises writing the current snapshot and switching block journals: openraft
    /// builds snapshots in a task of their own, which may finish after a newer snapshot
    /// was installed. Backups do not take it: a journal switch makes their stream fail.
    snapshot_lock: Mutex<()>,
    /// Applied, not yet written to the keyspace. Taken with the `applied` lock held.
    unpersisted: Mutex<Unpersisted>,
    /// The `sm` keyspace, where `persist` writes.
    space: Arc<dyn Keyspace>,
    /// The block journals, [`BLOCKS_JOURNALS`]. `persist` appends to the active one and
    /// syncs it before the keyspace write that counts the blocks: the journal is never
    /// behind the meta.
    journals: [Arc<dyn Journal>; 2],
    /// Which journal is the state's; changed only by an install, under the state lock.
    active: AtomicUsize,
    /// Moved on before a journal is cleared or stops being the state's, so that a snapshot
    /// or backup being streamed from it fails rather than send other blocks.
    generation: Arc<AtomicU64>,
}

#[derive(Default)]
struct Unpersisted {
    touched: Touched,
    /// When the oldest unwritten apply happened; `None` when everything is written.
    since: Option<tokio::time::Instant>,
    /// Blocks in the journal that a persisted meta counts: the next block written must
    /// be the one after.
    blocks_written: u64,
    /// Set when an apply or a write failed: the state in memory is then no longer one
    /// the log explains (an apply stopped halfway), so nothing more of it is written.
    failed: bool,
    /// Set while an install replaces the state: the old state's changes are not written
    /// over the meta that names the new state's journal.
    installing: bool,
}

impl SmShared {
    /// Writes what applies left unwritten now, rather than at the next due apply (before a
    /// clean shutdown, so that a restart need not re-apply).
    pub fn persist_now(&self) -> Result<(), StorageError> {
        let applied = self.read();
        self.persist(&applied, None).map(drop)
    }

    fn unpersisted(&self) -> std::sync::MutexGuard<'_, Unpersisted> {
        self.unpersisted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes every unwritten change of `applied` (whose lock the caller holds) in one
    /// atomic batch, if `now` says it is due (always with `None`). Whether everything
    /// applied is now written (the applied blocks may then be dropped from memory).
    fn persist(&self, applied: &Applied, now: Option<tokio::time::Instant>) -> Result<bool, StorageError> {
        let mut unpersisted = self.unpersisted();
        if unpersisted.failed {
            return Err(write_err(std::io::Error::other("an earlier apply or write failed: nothing more is written")));
        }
        if unpersisted.installing {
            return Err(write_err(std::io::Error::other("a snapshot install is replacing the state")));
        }
        let Some(since) = unpersisted.since else { return Ok(true) };
        let due = match now {
            None => true,
            Some(now) => now.duration_since(since) >= PERSIST_INTERVAL || unpersisted.touched.len() >= PERSIST_KEYS_MAX,
        };
        if !due {
            return Ok(false);
        }
        let written = self.write_unpersisted(applied, &unpersisted);
        if written.is_err() {
            // A retry would append the same blocks again; a restart cuts them off.
            unpersisted.failed = true;
        }
        written?;
        unpersisted.touched.clear();
        unpersisted.since = None;
        unpersisted.blocks_written = applied.state.blocks;
        Ok(true)
    }

    fn write_unpersisted(&self, applied: &Applied, unpersisted: &Unpersisted) -> Result<(), StorageError> {
        let journal = self.active.load(Ordering::Acquire);
        let (blocks, batch) = persist_batch(applied, &unpersisted.touched, journal).map_err(write_err)?;
        // The blocks must follow the journal's without a gap and reach the state's count,
        // or the meta would count blocks the journal does not hold.
        let seqs: Vec<u64> = blocks.iter().map(|(seq, _)| *seq).collect();
        let due: Vec<u64> = (unpersisted.blocks_written + 1..=applied.state.blocks).collect();
        if seqs != due {
            return Err(write_err(corrupt(&format!(
                "blocks to write {:?} are not the {} after {}",
                seqs.first()..seqs.last(),
                due.len(),
                unpersisted.blocks_written
            ))));
        }
        if !blocks.is_empty() {
            let journal = self.journal();
            journal.append(blocks).map_err(write_err)?;
            journal.sync().map_err(write_err)?;
        }
        self.space.write(batch).map_err(write_err)
    }

    /// Marks the state as failed (an apply stopped halfway): no later persist writes it.
    fn fail(&self) {
        self.unpersisted().failed = true;
    }
}

impl SmShared {
    /// A read view of the applied state. Hold it briefly: apply waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.applied.read().unwrap_or_else(|poison| poison.into_inner())
    }

    /// The state's block journal.
    fn journal(&self) -> Arc<dyn Journal> {
        self.journals[self.active.load(Ordering::Acquire)].clone()
    }

    /// The state's block journal as of now. The caller holds the state lock (or runs on
    /// the state machine's worker), so that the journal and the generation go together.
    fn block_source(&self) -> snapshot::JournalAt {
        snapshot::JournalAt {
            journal: self.journal(),
            generation: self.generation.clone(),
            expected: self.generation.load(Ordering::Acquire),
        }
    }

    /// The applied state as a snapshot stream: what a snapshot or a backup holds. Under
    /// the read lock, writes what applies left unwritten (so that the keyspace and the
    /// journal hold this very state) and encodes the header; the blocks are read as the
    /// stream is, since written blocks never change until an install replaces the
    /// journal (and then the stream fails).
    pub fn capture(&self) -> Result<Captured, StorageError> {
        let applied = self.read();
        self.persist(&applied, None)?;
        let state = &applied.state;
        let header = HeaderRef {
            state,
            last_applied: &applied.last_applied,
            membership: &applied.membership,
            blocks: state.blocks,
        };
        let head = snapshot::head_bytes(&header).map_err(|e| read_err(std::io::Error::other(e)))?;
        Ok(Captured {
            stream: Outgoing::new(Arc::new(head), self.block_source(), state.blocks),
            last_applied: applied.last_applied,
            membership: applied.membership.clone(),
            polls: state.polls.len(),
            votes: state.votes_recorded,
            state_hash: state.hash_hex(),
        })
    }

    /// Whether a member's low-disk alarm is up in the applied state (votes are refused).
    pub fn alarm_up(&self) -> bool {
        self.alarm_up.load(Ordering::Acquire)
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index.load(Ordering::Acquire)
    }

    pub fn set_listener(&self, listener: Arc<dyn ApplyListener>) {
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener);
    }

    fn listener(&self) -> Option<Arc<dyn ApplyListener>> {
        self.listener.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The applied state captured as a snapshot stream ([`SmShared::capture`]).
pub struct Captured {
    pub stream: Outgoing,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub polls: usize,
    pub votes: u64,
    pub state_hash: String,
}

pub struct StateMachineStore {
    shared: Arc<SmShared>,
    space: Arc<dyn Keyspace>,
    touched: Touched,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    io_error(ErrorSubject::StateMachine, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    io_error(ErrorSubject::StateMachine, ErrorVerb::Write, e)
}

impl StateMachineStore {
    /// Opens the state machine, loading the persisted state into memory (and finishing a
    /// snapshot install that a crash interrupted).
    pub async fn open(db: &dyn Database) -> Result<Self, StorageError> {
        let space = db.keyspace("sm").map_err(read_err)?;
        let journals =
            [db.journal(BLOCKS_JOURNALS[0]).map_err(read_err)?, db.journal(BLOCKS_JOURNALS[1]).map_err(read_err)?];
        let mut store = Self {
            shared: Arc::new(SmShared {
                applied: RwLock::default(),
                applied_index: AtomicU64::new(0),
                alarm_up: AtomicBool::new(false),
                listener: Mutex::new(None),
                snapshots_built: AtomicU64::new(0),
                last_snapshot_bytes: AtomicU64::new(0),
                snapshot_lock: Mutex::new(()),
                unpersisted: Mutex::default(),
                space: space.clone(),
                journals,
                active: AtomicUsize::new(0),
                generation: Arc::new(AtomicU64::new(0)),
            }),
            space,
            touched: Touched::default(),
        };
        let meta: SmMeta = match store.space.get(META).map_err(read_err)? {
            Some(bytes) => codec::decode(&bytes).map_err(read_err)?,
            None => SmMeta::default(),
        };
        if meta.journal >= BLOCKS_JOURNALS.len() {
            return Err(read_err(corrupt("the meta names no block journal")));
        }
        let stored = store.read_stored_snapshot()?;
        if let Some(stored) = &stored {
            store.shared.last_snapshot_bytes.store(stored.len(&store.shared.journals[meta.journal]), Ordering::Relaxed);
        }
        if meta.installing {
            let stored = stored.ok_or_else(|| {
                read_err(std::io::Error::other("snapshot install was interrupted and the snapshot is gone"))
            })?;
            let header = snapshot::decode_head(&stored.head).map_err(|e| read_err(corrupt(&e)))?;
            // Checked whole before the install was staged: indexed again, not rechecked.
            let state = store.state_from_header(header.state, meta.journal, meta.blocks)?;
            store.finish_install(meta, state)?;
        } else {
            // Blocks past the meta's count were written for applies a crash lost; those
            // applies come again from the log and write them again. The other journal
            // holds at most a snapshot whose receipt a crash cut short.
            store.shared.journals[meta.journal].truncate(meta.blocks + 1).map_err(write_err)?;
            store.shared.journals[1 - meta.journal].truncate(0).map_err(write_err)?;
            let state = store.load_state(&meta)?;
            store.replace_applied(
                Applied { state, last_applied: meta.last_applied, membership: meta.membership },
                meta.journal,
            );
        }
        Ok(store)
    }

    pub fn shared(&self) -> Arc<SmShared> {
        self.shared.clone()
    }

    fn load_state(&self, meta: &SmMeta) -> Result<State, StorageError> {
        let journal = self.shared.journals[meta.journal].clone();
        let mut state = State {
            polls: BTreeMap::new(),
            last_timestamp_ms: meta.last_timestamp_ms,
            hash: meta.hash,
            votes_recorded: meta.votes_recorded,
            users: BTreeMap::new(),
            alarms: meta.alarms.clone(),
            source: None,
            blocks: meta.blocks,
        };
        scan(&*self.space, USER_PREFIX, SCAN_PAGE, |key, value| {
            let username = String::from_utf8_lossy(&key[USER_PREFIX.len()..]).into_owned();
            state.users.insert(username, codec::decode(value).map_err(read_err)?);
            Ok(())
        })?;
        scan(&*self.space, POLL_PREFIX, SCAN_PAGE, |_, value| {
            let record: PollRecord = codec::decode(value).map_err(read_err)?;
            let poll_id = record.poll.poll_id.clone();
            let poll = crate::sm::PollState {
                counts: record.counts,
                breakdowns: record.breakdowns,
                chain_len: record.chain_len,
                chain_head: record.chain_head,
                ..crate::sm::PollState::new(record.poll)
            };
            state.polls.insert(poll_id, poll);
            Ok(())
        })?;
        index_blocks(&mut state, journal)?;
        Ok(state)
    }

    /// The state a snapshot's header describes, its votes indexed from the first
    /// `blocks` of journal `slot`.
    fn state_from_header(&self, mut state: State, slot: usize, blocks: u64) -> Result<State, StorageError> {
        for (poll_id, poll) in state.polls.iter_mut() {
            // Not in the header: the blocks are.
            poll.votes = records::PollVotes::new(poll_id.clone());
        }
        state.blocks = blocks;
        index_blocks(&mut state, self.shared.journals[slot].clone())?;
        Ok(state)
    }

    /// Makes `applied`, just read from the keyspace and from block journal `journal`, the
    /// applied state.
    fn replace_applied(&self, applied: Applied, journal: usize) {
        let index = applied.last_applied.map_or(0, |l| l.index);
        *self.shared.unpersisted() = Unpersisted { blocks_written: applied.state.blocks, ..Unpersisted::default() };
        self.shared.alarm_up.store(!applied.state.alarms.is_empty(), Ordering::Release);
        {
            let mut current = self.shared.applied.write().unwrap_or_else(|p| p.into_inner());
            *current = applied;
            if self.shared.active.swap(journal, Ordering::AcqRel) != journal {
                // Streams from the journal that stops being the state's fail from now on.
                self.shared.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
        self.shared.applied_index.store(index, Ordering::Release);
    }

    fn read_stored_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        StoredSnapshot::read(&*self.space)
    }

    fn write_meta_flushed(&self, meta: &SmMeta) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        batch.put(META.to_vec(), codec::encode(meta).map_err(write_err)?);
        self.space.write(batch).map_err(write_err)?;
        self.space.flush().map_err(write_err)
    }
}

fn corrupt(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("corrupt state machine: {what}"))
}

/// Builds the batch that persists what `touched` names, plus the meta.
/// The blocks to append to the journal first, in sequence order, and the batch that
/// persists the rest of what `touched` names, plus the meta.
fn persist_batch(
    applied: &Applied,
    touched: &Touched,
    journal: usize,
) -> Result<(Vec<tally_storage::Record>, WriteBatch), codec::CodecError> {
    let state = &applied.state;
    let mut batch = WriteBatch::new();
    for poll_id in &touched.polls {
        if let Some(poll) = state.polls.get(poll_id) {
            let record = PollRecord::of(poll);
            batch.put(poll_key(poll_id), codec::encode(&record)?);
        }
    }
    let mut blocks = Vec::with_capacity(touched.blocks.len());
    for (poll_id, index) in &touched.blocks {
        let Some(poll) = state.polls.get(poll_id) else { continue };
        if let (Some(block), Some(seq)) = (poll.votes.unwritten(*index), poll.votes.seq_of(*index)) {
            blocks.push((seq, records::stored_block(poll_id, *index, &block?)));
        }
    }
    blocks.sort_unstable_by_key(|(seq, _)| *seq);
    for username in &touched.users {
        if let Some(user) = state.users.get(username) {
            batch.put(user_key(username), codec::encode(user)?);
        }
    }
    let meta = SmMeta::of(state, applied.last_applied, &applied.membership, false, state.blocks, journal);
    batch.put(META.to_vec(), codec::encode(&meta)?);
    Ok((blocks, batch))
}

/// Where a vote's path ends on each node: one event per vote, with its poll, voter, id and
/// outcome, inside the entry's `apply` span (whose `log_index` every node shares).
fn trace_votes(span: &tracing::Span, request: &Request, response: &Response) {
    if !tracing::enabled!(tracing::Level::TRACE) {
        return;
    }
    let (Command::CastVotes(votes), Response::Votes(outcomes)) = (&*request.command, response) else { return };
    for (vote, outcome) in votes.iter().zip(outcomes) {
        tracing::trace!(
            parent: span, poll_id = %vote.poll_id, voter_id = %vote.voter_id,
            vote_id = outcome.vote_id(), outcome = outcome.kind(), "applied",
        );
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.shared.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.touched.clear();
        let mut responses = Vec::new();
        let last_index;
        {
            // Held through the keyspace write, so that the state written is the state of
            // one applied index.
            let mut applied = self.shared.applied.write().unwrap_or_else(|p| p.into_inner());
            for entry in entries {
                let response = match entry.payload {
                    EntryPayload::Blank => Response::None,
                    EntryPayload::Normal(ref request) => {
                        let index = entry.log_id.index;
                        let span = tracing::debug_span!("apply", log_index = index, command = request.command.kind());
                        match span.in_scope(|| applied.state.apply(index, request, &mut self.touched)) {
                            Ok(response) => {
                                trace_votes(&span, request, &response);
                                response
                            }
                            Err(error) => {
                                self.shared.fail();
                                return Err(read_err(error));
                            }
                        }
                    }
                    EntryPayload::Membership(ref membership) => {
                        // A removed member can no longer clear its own alarm.
                        let members: std::collections::BTreeSet<crate::NodeId> =
                            membership.nodes().map(|(id, _)| *id).collect();
                        applied.state.alarms.retain(|id| members.contains(id));
                        applied.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                        Response::None
                    }
                };
                applied.last_applied = Some(entry.log_id);
                responses.push(response);
            }
            last_index = applied.last_applied.map_or(0, |l| l.index);
            self.shared.alarm_up.store(!applied.state.alarms.is_empty(), Ordering::Release);
            {
                let mut unpersisted = self.shared.unpersisted();
                // The listener below needs only the polls.
                unpersisted.touched.absorb(&mut self.touched);
                unpersisted.since.get_or_insert_with(tokio::time::Instant::now);
            }
            if self.shared.persist(&applied, Some(tokio::time::Instant::now()))? {
                applied.state.written_through(last_index);
            }
        }
        self.shared.applied_index.store(last_index, Ordering::Release);
        if let Some(listener) = self.shared.listener() {
            if !self.touched.polls.is_empty() {
                listener.polls_changed(&mut self.touched.polls.iter(), last_index);
            }
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { shared: self.shared.clone(), space: self.space.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotStream>, StorageError> {
        let (incoming, _) = self.begin_incoming()?;
        Ok(Box::new(SnapshotStream::Incoming(incoming)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<crate::NodeId, openraft::BasicNode>,
        snapshot: Box<SnapshotStream>,
    ) -> Result<(), StorageError> {
        let shared = self.shared.clone();
        let _writing = shared.snapshot_lock.lock().unwrap_or_else(|p| p.into_inner());
        let slot = 1 - self.shared.active.load(Ordering::Acquire);
        let incoming = match *snapshot {
            SnapshotStream::Incoming(incoming)
                if incoming.sink().is_some_and(|sink| Arc::ptr_eq(&sink.journal, &self.shared.journals[slot])) =>
            {
                incoming
            }
            SnapshotStream::Incoming(_) => {
                return Err(write_err(std::io::Error::other("a snapshot arrived in the state's own journal")))
            }
            // Handed a snapshot to read (openraft's test suite does): received here whole.
            SnapshotStream::Outgoing(mut outgoing) => {
                let (mut incoming, _) = self.begin_incoming()?;
                let mut buf = vec![0; 1 << 20];
                loop {
                    let n = outgoing.read_sync(&mut buf).map_err(read_err)?;
                    if n == 0 {
                        break;
                    }
                    incoming.write_sync(&buf[..n]).map_err(read_err)?;
                }
                incoming
            }
        };
        self.install_incoming(incoming, slot, Some(meta), None)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some(stored) = self.read_stored_snapshot()? else { return Ok(None) };
        let stream = Outgoing::new(Arc::new(stored.head), self.shared.block_source(), stored.blocks);
        Ok(Some(openraft::Snapshot { meta: stored.meta, snapshot: Box::new(SnapshotStream::Outgoing(stream)) }))
    }
}

mod keys;
mod snapshots;
mod stored;

use keys::{poll_key, prefix_end, scan, user_key};
pub use snapshots::SnapshotBuilder;
use stored::*;

#[cfg(test)]
mod tests;
