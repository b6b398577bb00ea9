//! A poll's recorded votes: on disk in blocks, one per (poll, log entry), found through a
//! compact index in memory.
//!
//! The index ([`VoterIndex`]) maps a 64-bit fingerprint of each voter id to where the
//! voter's current version is (a [`Loc`]). It is a lookup aid and never a judge: a
//! fingerprint found means "read that record and compare the voter id"; only a record
//! says a voter has voted. Voters with equal fingerprints are all kept. Fingerprints are keyed per
//! process ([`RandomState`]), so nobody can aim for collisions, and each node builds its
//! own index from the same blocks: nothing about it is replicated or hashed.
//!
//! Blocks applied but not yet written to the store stay in `recent`, so that every read
//! sees the applied state; the state machine store drops them once they are written. A
//! state without a store (the pure tests) keeps every block there.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use super::voter_index::VoterIndex;

use crate::codec;
use crate::model::{PollId, VoteRecord, VoterId};

/// Where one version of a vote is: its entry's log index and its slot in the poll's block
/// for that entry, packed as `index << SLOT_BITS | slot`.
pub type Loc = u64;
const SLOT_BITS: u32 = 24;
const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

pub fn loc(index: u64, slot: usize) -> Loc {
    debug_assert!((slot as u64) <= SLOT_MASK && index < (1 << (64 - SLOT_BITS)));
    (index << SLOT_BITS) | slot as u64
}

pub fn loc_index(loc: Loc) -> u64 {
    loc >> SLOT_BITS
}

pub fn loc_slot(loc: Loc) -> usize {
    (loc & SLOT_MASK) as usize
}

/// A store could not give a record the index points at: the node's storage is failing or
/// corrupt, and nothing may be decided from it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("vote records: {0}")]
pub struct RecordError(pub String);

/// Where written blocks are read back from: the state machine's block journal, in which
/// every block has a sequence number (1, 2, ... in apply order, across polls).
pub trait BlockSource: Send + Sync + 'static {
    /// The block written under `seq`, as [`stored_block`] encodes it, if there is one.
    fn block(&self, seq: u64) -> Result<Option<Vec<u8>>, RecordError>;
}

/// A block as the journal stores it: its poll and log index, then its encoding, so that a
/// restart knows whose block it is and a read can check it got the one it asked for.
pub fn stored_block(poll: &PollId, index: u64, block: &[u8]) -> Vec<u8> {
    let poll = poll.as_str().as_bytes();
    let mut out = Vec::with_capacity(2 + poll.len() + 8 + block.len());
    out.extend_from_slice(&(poll.len() as u16).to_be_bytes());
    out.extend_from_slice(poll);
    out.extend_from_slice(&index.to_be_bytes());
    out.extend_from_slice(block);
    out
}

/// The poll, log index and block encoding of a [`stored_block`].
pub fn read_stored_block(stored: &[u8]) -> Result<(PollId, u64, &[u8]), RecordError> {
    let len = stored.get(..2).ok_or_else(|| corrupt("stored block header"))?;
    let len = u16::from_be_bytes([len[0], len[1]]) as usize;
    let poll = stored.get(2..2 + len).ok_or_else(|| corrupt("stored block poll"))?;
    let index = stored.get(2 + len..10 + len).ok_or_else(|| corrupt("stored block index"))?;
    let poll = PollId(String::from_utf8(poll.to_vec()).map_err(|_| corrupt("stored block poll"))?);
    Ok((poll, u64::from_be_bytes(index.try_into().expect("eight bytes")), &stored[10 + len..]))
}

/// A block's encoding: the record count (u32), then each record's end offset (u32), then
/// the records ([`codec::encode_compact`]), so that one record decodes without the others.
pub fn encode_block(records: &[VoteRecord]) -> Result<Vec<u8>, codec::CodecError> {
    let header = 4 + 4 * records.len();
    // Encoded in place after the header, which is filled in as each record ends: one
    // allocation a block, where a buffer per record was most of the encoding's time.
    let mut out = Vec::with_capacity(header + records.len() * RECORD_BYTES_TYPICAL);
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    out.resize(header, 0);
    for (slot, record) in records.iter().enumerate() {
        codec::encode_compact_into(&mut out, record)?;
        let end = (out.len() - header) as u32;
        out[4 + 4 * slot..8 + 4 * slot].copy_from_slice(&end.to_be_bytes());
    }
    Ok(out)
}

/// About what a record takes encoded (a 20-character voter id, a 36-character key, one
/// attribute): room enough that most blocks are written without growing.
const RECORD_BYTES_TYPICAL: usize = 128;

fn corrupt(what: &str) -> RecordError {
    RecordError(format!("corrupt block: {what}"))
}

fn read_u32(bytes: &[u8], at: usize) -> Result<usize, RecordError> {
    let raw = bytes.get(at..at + 4).ok_or_else(|| corrupt("truncated header"))?;
    Ok(u32::from_be_bytes(raw.try_into().expect("four bytes")) as usize)
}

/// Records in a block.
pub fn block_len(bytes: &[u8]) -> Result<usize, RecordError> {
    let count = read_u32(bytes, 0)?;
    if 4 + 4 * count > bytes.len() {
        return Err(corrupt("count beyond the block"));
    }
    Ok(count)
}

/// The record in `slot`, recorded at `index`.
pub fn decode_slot(bytes: &[u8], index: u64, slot: usize) -> Result<VoteRecord, RecordError> {
    let count = block_len(bytes)?;
    if slot >= count {
        return Err(corrupt("slot beyond the block"));
    }
    let data = 4 + 4 * count;
    let start = if slot == 0 { 0 } else { read_u32(bytes, 4 + 4 * (slot - 1))? };
    let end = read_u32(bytes, 4 + 4 * slot)?;
    let raw = bytes.get(data + start..data + end).filter(|_| start <= end).ok_or_else(|| corrupt("offsets"))?;
    let mut record: VoteRecord = codec::decode_compact(raw).map_err(|e| corrupt(&e.to_string()))?;
    record.log_index = index;
    Ok(record)
}

/// Every record of a block, in slot order.
pub fn decode_block(bytes: &[u8], index: u64) -> Result<Vec<VoteRecord>, RecordError> {
    (0..block_len(bytes)?).map(|slot| decode_slot(bytes, index, slot)).collect()
}

/// The identity: index keys are already hashes.
#[derive(Default)]
pub(crate) struct Fingerprinted(u64);

impl Hasher for Fingerprinted {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A poll's votes: the index, the blocks' places in the chain, and the blocks not yet
/// written.
#[derive(Clone, Default)]
pub struct PollVotes {
    poll_id: PollId,
    keys: RandomState,
    index: VoterIndex,
    /// Each block's first chain position, log index and sequence number, in log (and so
    /// chain) order: the audit stream's way from a position to its block, and a read's
    /// from a log index to the journal.
    blocks: Vec<(u64, u64, u64)>,
    recent: BTreeMap<u64, Vec<VoteRecord>>,
    source: Option<Arc<dyn BlockSource>>,
}

impl std::fmt::Debug for PollVotes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollVotes")
            .field("voters", &self.index.len())
            .field("blocks", &self.blocks.len())
            .field("recent", &self.recent.len())
            .finish()
    }
}

/// Two polls' votes are equal when they hold the same voters in the same blocks (the
/// chain head, compared with the poll, covers the records themselves).
impl PartialEq for PollVotes {
    fn eq(&self, other: &Self) -> bool {
        self.poll_id == other.poll_id && self.index.len() == other.index.len() && self.blocks == other.blocks
    }
}

impl Eq for PollVotes {}

impl PollVotes {
    pub fn new(poll_id: PollId) -> Self {
        Self { poll_id, ..Self::default() }
    }

    /// Reads written blocks from `source` from now on.
    pub fn attach(&mut self, source: Arc<dyn BlockSource>) {
        self.source = Some(source);
    }

    /// Stops reading from the store (a copy that must not keep it open): written blocks
    /// can no longer be read.
    pub fn detach(&mut self) {
        self.source = None;
    }

    /// Voters with a vote (each counted once, whatever their changes).
    pub fn len(&self) -> u64 {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Blocks applied and not yet written (so held in memory).
    pub fn unwritten_blocks(&self) -> usize {
        self.recent.len()
    }

    /// (first chain position, log index, sequence number) of every block, in order.
    pub fn blocks(&self) -> &[(u64, u64, u64)] {
        &self.blocks
    }

    fn fingerprint(&self, voter: &VoterId) -> u64 {
        self.keys.hash_one(voter.as_str())
    }

    fn candidates(&self, fingerprint: u64) -> impl Iterator<Item = Loc> + '_ {
        self.index.candidates(fingerprint)
    }

    /// The version at `loc`.
    pub fn read(&self, loc: Loc) -> Result<VoteRecord, RecordError> {
        let (index, slot) = (loc_index(loc), loc_slot(loc));
        if let Some(block) = self.recent.get(&index) {
            return block.get(slot).cloned().ok_or_else(|| corrupt("slot beyond an applied block"));
        }
        let bytes = self.stored(index)?.ok_or_else(|| RecordError(format!("no block at index {index}")))?;
        decode_slot(&bytes, index, slot)
    }

    fn stored(&self, index: u64) -> Result<Option<Vec<u8>>, RecordError> {
        let (Some(source), Some(seq)) = (&self.source, self.seq_of(index)) else { return Ok(None) };
        let Some(stored) = source.block(seq)? else {
            return Err(RecordError(format!("block {seq} (index {index}) is missing from the journal")));
        };
        let (poll, at, block) = read_stored_block(&stored)?;
        if poll != self.poll_id || at != index {
            return Err(corrupt(&format!("block {seq} is {poll}'s at {at}, not {}'s at {index}", self.poll_id)));
        }
        Ok(Some(block.to_vec()))
    }

    /// The sequence number of the poll's block at log index `index`.
    pub fn seq_of(&self, index: u64) -> Option<u64> {
        let at = self.blocks.partition_point(|(_, i, _)| *i < index);
        self.blocks.get(at).filter(|(_, i, _)| *i == index).map(|(_, _, seq)| *seq)
    }

    /// Every version recorded at `index`, in slot order (none if the entry recorded none).
    pub fn block(&self, index: u64) -> Result<Vec<VoteRecord>, RecordError> {
        if let Some(block) = self.recent.get(&index) {
            return Ok(block.clone());
        }
        match self.stored(index)? {
            Some(bytes) => decode_block(&bytes, index),
            None => Ok(Vec::new()),
        }
    }

    /// The voter's current version and where it is.
    pub fn current(&self, voter: &VoterId) -> Result<Option<(Loc, VoteRecord)>, RecordError> {
        for loc in self.candidates(self.fingerprint(voter)) {
            let record = self.read(loc)?;
            if &record.voter_id == voter {
                return Ok(Some((loc, record)));
            }
        }
        Ok(None)
    }

    /// Whether the version at `loc`, of `voter`, is still the voter's vote. No read.
    pub fn is_current(&self, voter: &VoterId, loc: Loc) -> bool {
        self.candidates(self.fingerprint(voter)).any(|at| at == loc)
    }

    /// Records a version applied at its `log_index`: appended to that entry's block and
    /// made its voter's current one. A new block takes the sequence number after
    /// `last_seq`, which moves on.
    pub fn push(&mut self, record: VoteRecord, last_seq: &mut u64) -> Loc {
        let index = record.log_index;
        let fingerprint = self.fingerprint(&record.voter_id);
        let block = self.recent.entry(index).or_default();
        let loc = loc(index, block.len());
        if block.is_empty() {
            *last_seq += 1;
            self.blocks.push((record.chain.position, index, *last_seq));
        }
        let replaces = record.replaces;
        block.push(record);
        self.link(fingerprint, loc, replaces);
        loc
    }

    /// Indexes a written block again (a restart, an installed snapshot): the blocks of a
    /// poll come in log order, so a change finds the version it replaced indexed.
    pub fn load_block(&mut self, index: u64, seq: u64, records: &[VoteRecord]) {
        let Some(first) = records.first() else { return };
        self.blocks.push((first.chain.position, index, seq));
        for (slot, record) in records.iter().enumerate() {
            let fingerprint = self.fingerprint(&record.voter_id);
            self.link(fingerprint, loc(index, slot), record.replaces);
        }
    }

    fn link(&mut self, fingerprint: u64, loc: Loc, replaces: Option<Loc>) {
        // A replaced version not indexed would be a bug or a corrupt block: the caller
        // judged it current. Indexed as a new voter instead, the recount catches it.
        if !replaces.is_some_and(|old| self.index.replace(fingerprint, old, loc)) {
            self.index.insert(fingerprint, loc);
        }
    }

    /// The encoded block at `index`, if it is still waiting to be written.
    pub fn unwritten(&self, index: u64) -> Option<Result<Vec<u8>, codec::CodecError>> {
        self.recent.get(&index).map(|records| encode_block(records))
    }

    /// Forgets the applied blocks up to `index`, now written, when a store holds them.
    pub fn written_through(&mut self, index: u64) {
        if self.source.is_some() && self.recent.first_key_value().is_some_and(|(first, _)| *first <= index) {
            self.recent = self.recent.split_off(&(index + 1));
        }
    }

    /// Edits a record in place, as a corrupted disk would: for the tests of the checks.
    #[cfg(test)]
    pub(crate) fn tamper(&mut self, loc: Loc, edit: impl FnOnce(&mut VoteRecord)) {
        edit(&mut self.recent.get_mut(&loc_index(loc)).expect("an applied block")[loc_slot(loc)]);
    }

    /// The block holding chain position `position` (the first if none is before it).
    pub fn block_at(&self, position: u64) -> usize {
        self.blocks.partition_point(|(first, _, _)| *first <= position).saturating_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::ChainLink;
    use crate::model::Attributes;

    fn record(voter: &str, index: u64, position: u64, replaces: Option<Loc>) -> VoteRecord {
        VoteRecord {
            voter_id: VoterId(voter.into()),
            vote_key: u128::from(position),
            option_index: 0,
            idempotency_key: format!("k-{voter}-{position}"),
            attributes: Attributes::default(),
            recorded_at_ms: 1,
            chain: ChainLink { position, hash: [position as u8; 32] },
            replaces,
            changes: u8::from(replaces.is_some()),
            log_index: index,
        }
    }

    #[test]
    fn a_block_decodes_one_slot_or_all() {
        let records = vec![record("a", 7, 0, None), record("bb", 7, 1, None), record("ccc", 7, 2, Some(3))];
        let bytes = encode_block(&records).unwrap();
        assert_eq!(block_len(&bytes).unwrap(), 3);
        assert_eq!(decode_slot(&bytes, 7, 1).unwrap(), records[1]);
        assert_eq!(decode_block(&bytes, 7).unwrap(), records);
        assert!(decode_slot(&bytes, 7, 3).is_err());
        assert!(decode_slot(&bytes[..10], 7, 0).is_err());
        assert!(block_len(&[0, 0, 1, 0]).is_err());
        // The layout on disk: the count, each record's end, the records one after another.
        let each: Vec<Vec<u8>> = records.iter().map(|r| codec::encode_compact(r).unwrap()).collect();
        let mut expected = 3u32.to_be_bytes().to_vec();
        let mut end = 0;
        for record in &each {
            end += record.len() as u32;
            expected.extend_from_slice(&end.to_be_bytes());
        }
        expected.extend(each.concat());
        assert_eq!(bytes, expected);
    }

    #[test]
    fn equal_fingerprints_of_different_voters_are_both_kept() {
        let mut votes = PollVotes::new(PollId("p".into()));
        let mut seq = 0;
        let a = votes.push(record("a", 1, 0, None), &mut seq);
        // Forge a clash: index "b" under a's fingerprint.
        let fingerprint = votes.fingerprint(&VoterId("a".into()));
        let b_loc = loc(2, 0);
        votes.recent.entry(2).or_default().push(record("b", 2, 1, None));
        votes.blocks.push((1, 2, 2));
        votes.link(fingerprint, b_loc, None);
        assert_eq!(votes.len(), 2);
        // A change of b moves b's entry, not a's.
        let changed = loc(3, 0);
        votes.recent.entry(3).or_default().push(record("b", 3, 2, Some(b_loc)));
        votes.link(fingerprint, changed, Some(b_loc));
        assert_eq!(votes.len(), 2);
        let mut found: Vec<Loc> = votes.candidates(fingerprint).collect();
        found.sort_unstable();
        assert_eq!(found, vec![a, changed]);
        assert_eq!(votes.current(&VoterId("a".into())).unwrap().map(|(at, _)| at), Some(a));
    }

    #[test]
    fn a_change_moves_the_voter_and_reads_find_the_latest() {
        let mut votes = PollVotes::new(PollId("p".into()));
        let mut seq = 0;
        let first = votes.push(record("a", 1, 0, None), &mut seq);
        votes.push(record("b", 1, 1, None), &mut seq);
        let second = votes.push(record("a", 2, 2, Some(first)), &mut seq);
        assert_eq!(votes.len(), 2);
        let (at, current) = votes.current(&VoterId("a".into())).unwrap().unwrap();
        assert_eq!((at, current.chain.position), (second, 2));
        assert!(!votes.is_current(&VoterId("a".into()), first));
        assert_eq!(votes.read(first).unwrap().chain.position, 0);
        assert_eq!(votes.blocks(), &[(0, 1, 1), (2, 2, 2)]);
        assert_eq!((votes.seq_of(2), votes.seq_of(3)), (Some(2), None));
        assert_eq!(votes.block_at(1), 0);
        assert_eq!(votes.block_at(2), 1);
        assert!(votes.current(&VoterId("c".into())).unwrap().is_none());
    }
}
