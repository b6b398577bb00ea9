//! What the state machine stores: its meta and each poll's record in the `sm` keyspace,
//! the block journal read as a [`BlockSource`], and the current snapshot's head.

use super::*;

/// Persisted next to the polls and votes, in the same atomic batch.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct SmMeta {
    pub(super) last_applied: Option<LogId>,
    pub(super) membership: StoredMembership,
    pub(super) last_timestamp_ms: i64,
    pub(super) hash: [u8; 32],
    pub(super) votes_recorded: u64,
    /// Set while a snapshot install rewrites the keyspace: on restart, redo it.
    pub(super) installing: bool,
    pub(super) alarms: std::collections::BTreeSet<crate::NodeId>,
    /// Blocks in the journal that belong to this state (the journal may hold more,
    /// written for applies whose meta a crash lost: they are cut off at open).
    pub(super) blocks: u64,
    /// Which of [`BLOCKS_JOURNALS`] holds them.
    pub(super) journal: usize,
}

impl SmMeta {
    /// The meta of `state` applied up to `last_applied`, its blocks in `journal`.
    pub(super) fn of(
        state: &State,
        last_applied: Option<LogId>,
        membership: &StoredMembership,
        installing: bool,
        blocks: u64,
        journal: usize,
    ) -> Self {
        SmMeta {
            last_applied,
            membership: membership.clone(),
            last_timestamp_ms: state.last_timestamp_ms,
            hash: state.hash,
            votes_recorded: state.votes_recorded,
            installing,
            alarms: state.alarms.clone(),
            blocks,
            journal,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct PollRecord {
    pub(super) poll: Poll,
    pub(super) counts: Vec<u64>,
    pub(super) breakdowns: crate::sm::Breakdowns,
    pub(super) chain_len: u64,
    pub(super) chain_head: [u8; 32],
}

impl PollRecord {
    pub(super) fn of(poll: &crate::sm::PollState) -> Self {
        Self {
            poll: poll.poll.clone(),
            counts: poll.counts.clone(),
            breakdowns: poll.breakdowns.clone(),
            chain_len: poll.chain_len,
            chain_head: poll.chain_head,
        }
    }
}

/// Reads written blocks from the block journal.
pub(super) struct JournalBlocks(Arc<dyn Journal>);

impl BlockSource for JournalBlocks {
    fn block(&self, seq: u64) -> Result<Option<Vec<u8>>, RecordError> {
        let mut found = self.0.read(seq, seq + 1).map_err(|e| RecordError(e.to_string()))?;
        Ok(found.pop().map(|(_, payload)| payload))
    }
}

/// Indexes the votes of `state.blocks` blocks of `journal` into their polls, and makes the
/// polls read their records there.
pub(super) fn index_blocks(state: &mut State, journal: Arc<dyn Journal>) -> Result<(), StorageError> {
    // Blocks come in apply order: a change finds the version it replaced already indexed.
    read_blocks(&*journal, state.blocks, |seq, payload| {
        let (poll_id, index, bytes) = records::read_stored_block(&payload).map_err(read_err)?;
        let block = records::decode_block(bytes, index).map_err(read_err)?;
        let poll = state.polls.get_mut(&poll_id).ok_or_else(|| read_err(corrupt("votes of an unknown poll")))?;
        poll.votes.load_block(index, seq, &block);
        Ok(())
    })?;
    state.attach(Arc::new(JournalBlocks(journal)));
    state.check_loaded().map_err(|e| read_err(corrupt(&e)))
}

/// Visits the journal's blocks 1..=`last`, a page at a time.
pub(super) fn read_blocks(
    journal: &dyn Journal,
    last: u64,
    mut visit: impl FnMut(u64, Vec<u8>) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let mut next = 1;
    while next <= last {
        let end = (next + BLOCK_PAGE).min(last + 1);
        let page = journal.read(next, end).map_err(read_err)?;
        if page.len() as u64 != end - next {
            return Err(read_err(corrupt(&format!("blocks {next}..{end} are not all in the journal"))));
        }
        for (seq, payload) in page {
            visit(seq, payload)?;
        }
        next = end;
    }
    Ok(())
}

/// The current snapshot: its meta and head ([`snapshot::head_bytes`]); its blocks are the
/// first `blocks` of the state's journal, which only grows until the next install.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredSnapshot {
    pub(super) meta: SnapshotMeta<crate::NodeId, openraft::BasicNode>,
    pub(super) head: Vec<u8>,
    pub(super) blocks: u64,
}

impl StoredSnapshot {
    /// The current snapshot under key `s`, if any.
    pub(super) fn read(space: &dyn Keyspace) -> Result<Option<Self>, StorageError> {
        match space.get(CURRENT_SNAPSHOT).map_err(read_err)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(codec::decode(&bytes).map_err(read_err)?)),
        }
    }

    /// Makes this the current snapshot when `batch` is written.
    pub(super) fn put(&self, batch: &mut WriteBatch) -> Result<(), StorageError> {
        batch.put(CURRENT_SNAPSHOT.to_vec(), codec::encode(self).map_err(write_err)?);
        Ok(())
    }
}
