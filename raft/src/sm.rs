//! The vote state machine's pure logic: a function of the log alone.
//!
//! No clock, no randomness, no hash-map iteration: time comes from the leader's timestamp
//! in each entry and every map is a `BTreeMap`, so every replica that applies the same log
//! reaches the same state and the same running hash.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{self, ChainLink, LinkFields};
use crate::codec;
use crate::limits::{ATTRIBUTE_VALUES_MAX, VOTE_CHANGES_MAX};
use crate::model::*;

pub mod records;
pub mod voter_index;

mod judge;
pub use judge::{format_vote_id, judge_vote, receipt, vote_id, vote_key, vote_key_index, Judgement};
use judge::{judge, receipt_with_id, vote_key_of};
pub use records::{BlockSource, Loc, PollVotes, RecordError};

/// Everything the state machine knows.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub polls: BTreeMap<PollId, PollState>,
    /// Greatest timestamp seen in the log: time in the state machine never goes back, even
    /// when a new leader's clock is behind the old one's.
    pub last_timestamp_ms: i64,
    /// Running hash over every applied normal entry and the answer it got.
    pub hash: [u8; 32],
    /// Votes currently recorded, all polls together.
    pub votes_recorded: u64,
    /// Built-in accounts by username.
    pub users: BTreeMap<String, UserRecord>,
    /// Members whose low-disk alarm is up: no new vote is recorded while any is.
    pub alarms: BTreeSet<crate::NodeId>,
    /// Where the polls' written blocks are read (none: every block stays in memory).
    #[serde(skip)]
    pub source: Option<Arc<dyn BlockSource>>,
    /// Blocks created so far, all polls together: the last block's sequence number.
    /// Derived (a snapshot's blocks are numbered again when installed).
    #[serde(skip)]
    pub blocks: u64,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("polls", &self.polls)
            .field("last_timestamp_ms", &self.last_timestamp_ms)
            .field("hash", &hex(&self.hash))
            .field("votes_recorded", &self.votes_recorded)
            .field("users", &self.users.len())
            .field("alarms", &self.alarms)
            .finish()
    }
}

impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        self.polls == other.polls
            && self.last_timestamp_ms == other.last_timestamp_ms
            && self.hash == other.hash
            && self.votes_recorded == other.votes_recorded
            && self.users == other.users
            && self.alarms == other.alarms
            && self.blocks == other.blocks
    }
}

impl Eq for State {}

/// Attribute (one of the poll's `breakdowns`) → value → votes per option, in option order.
/// Only values with at least one vote appear, so it always equals a recount.
pub type Breakdowns = BTreeMap<String, BTreeMap<String, Vec<u64>>>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollState {
    pub poll: Poll,
    /// Votes per option, in the poll's option order.
    pub counts: Vec<u64>,
    /// Kept live, like `counts`, so that results by region and the turnout metrics cost a
    /// lookup, not a scan of every vote. Bounded by `ATTRIBUTE_VALUES_MAX`.
    pub breakdowns: Breakdowns,
    /// Links in the poll's audit chain: recorded votes and changes, all versions.
    pub chain_len: u64,
    /// The last link's hash ([`audit::genesis`] before the first vote).
    pub chain_head: [u8; 32],
    /// The records, on disk in blocks, and the index that finds them. Not in snapshots:
    /// those carry the blocks themselves, and whoever builds a `PollState` from stored
    /// blocks indexes them ([`PollVotes::load_block`]).
    #[serde(skip)]
    pub votes: PollVotes,
}

/// One recorded vote or change, as the audit stream shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub voter_id: VoterId,
    pub vote_id: String,
    pub option_id: String,
    pub attributes: BTreeMap<String, String>,
    pub recorded_at_ms: i64,
    pub log_index: u64,
    pub replaces: Option<String>,
    pub chain: ChainLink,
    /// Still the voter's vote (not replaced by a later change).
    pub current: bool,
}

impl AuditEntry {
    pub fn link_fields(&self) -> LinkFields<'_> {
        LinkFields {
            vote_id: &self.vote_id,
            voter_id: self.voter_id.as_str(),
            option_id: &self.option_id,
            attributes: &self.attributes,
            recorded_at_ms: self.recorded_at_ms,
            log_index: self.log_index,
            replaces: self.replaces.as_deref(),
        }
    }
}

/// Chain positions read at a time by [`State::check_invariants`].
const CHECK_PAGE: usize = 16_384;

/// The most versions a voter's chain of changes can hold, and so the most reads a walk
/// back through it takes (a corrupt loop stops there).
const VERSIONS_MAX: usize = VOTE_CHANGES_MAX + 1;

impl PollState {
    /// The link a vote with these fields takes: the next position of the poll's chain.
    fn next_link(&self, fields: &LinkFields) -> ChainLink {
        let position = self.chain_len;
        ChainLink { position, hash: audit::next_link(&self.chain_head, position, fields) }
    }

    fn extend_chain(&mut self, link: &ChainLink) {
        debug_assert_eq!(link.position, self.chain_len, "links are appended in order");
        self.chain_len += 1;
        self.chain_head = link.hash;
    }

    pub fn new(poll: Poll) -> Self {
        let counts = vec![0; poll.options.len()];
        let chain_head = audit::genesis(poll.poll_id.as_str());
        let votes = PollVotes::new(poll.poll_id.clone());
        Self { poll, counts, breakdowns: Breakdowns::new(), chain_len: 0, chain_head, votes }
    }

    /// The voter's current vote, if any.
    pub fn vote_of(&self, voter: &VoterId) -> Result<Option<VoteRecord>, RecordError> {
        Ok(self.votes.current(voter)?.map(|(_, record)| record))
    }

    /// Whether the voter has a vote.
    pub fn has_voted(&self, voter: &VoterId) -> Result<bool, RecordError> {
        Ok(self.votes.current(voter)?.is_some())
    }

    /// Up to `max` versions from chain position `from` on, in chain order: one page of the
    /// audit stream, read from the blocks that hold those positions.
    pub fn audit_page(&self, from: u64, max: usize) -> Result<Vec<AuditEntry>, RecordError> {
        let end = from.saturating_add(max as u64).min(self.chain_len);
        let mut page = Vec::with_capacity(end.saturating_sub(from) as usize);
        if from >= end {
            return Ok(page);
        }
        for &(first, index, _) in &self.votes.blocks()[self.votes.block_at(from)..] {
            if first >= end {
                break;
            }
            for (slot, record) in self.votes.block(index)?.into_iter().enumerate() {
                if (from..end).contains(&record.chain.position) {
                    page.push(self.audit_entry(records::loc(index, slot), record)?);
                }
            }
        }
        Ok(page)
    }

    /// Every version of every vote, in chain (and so log) order.
    pub fn audit_trail(&self) -> Result<Vec<AuditEntry>, RecordError> {
        self.audit_page(0, self.chain_len as usize)
    }

    /// The version of a vote with this id, if the poll recorded it: the id names its
    /// entry, so one block is read.
    pub fn find_vote(&self, vote_id: &str) -> Result<Option<AuditEntry>, RecordError> {
        let Some(key) = vote_key(vote_id) else { return Ok(None) };
        let index = vote_key_index(key);
        let block = self.votes.block(index)?;
        let Some(slot) = block.iter().position(|record| record.vote_key == key) else { return Ok(None) };
        let record = block.into_iter().nth(slot).expect("found above");
        self.audit_entry(records::loc(index, slot), record).map(Some)
    }

    fn audit_entry(&self, loc: Loc, record: VoteRecord) -> Result<AuditEntry, RecordError> {
        let replaces = match record.replaces {
            Some(at) => Some(self.votes.read(at)?.vote_id()),
            None => None,
        };
        Ok(AuditEntry {
            current: self.votes.is_current(&record.voter_id, loc),
            vote_id: record.vote_id(),
            option_id: self.option_id(record.option_index),
            attributes: record.attributes.to_map(),
            recorded_at_ms: record.recorded_at_ms,
            log_index: record.log_index,
            replaces,
            chain: record.chain,
            voter_id: record.voter_id,
        })
    }

    fn option_id(&self, index: u32) -> String {
        self.poll.options.get(index as usize).map_or_else(|| format!("#{index}"), |o| o.option_id.clone())
    }

    /// The version of `record`'s voter (it or one it replaced) that the request with `key`
    /// made, if any.
    fn version_with_key(&self, record: &VoteRecord, key: &str) -> Result<Option<VoteRecord>, RecordError> {
        if record.idempotency_key == key {
            return Ok(Some(record.clone()));
        }
        let mut at = record.replaces;
        for _ in 0..VERSIONS_MAX {
            let Some(loc) = at else { return Ok(None) };
            let past = self.votes.read(loc)?;
            if past.idempotency_key == key {
                return Ok(Some(past));
            }
            at = past.replaces;
        }
        Err(RecordError(format!("a chain of changes longer than {VERSIONS_MAX} at {at:?}")))
    }

    /// Recomputes from the blocks: the chain (positions 0.. without gaps, every link
    /// hash, the head), the current version of each voter, the counts and breakdowns
    /// from those, and the number of voters. Reads every record: for tests, `tally audit
    /// verify`-like checks and installed snapshots, not for every restart.
    fn check_votes(&self) -> Result<(), String> {
        let mut hash = audit::genesis(self.poll.poll_id.as_str());
        let mut recount = PollState { votes: PollVotes::default(), ..PollState::new(self.poll.clone()) };
        let mut current = 0u64;
        let mut position = 0u64;
        // A page at a time: a poll of millions of votes is checked in bounded memory.
        loop {
            let page = self.audit_page(position, CHECK_PAGE).map_err(|e| e.to_string())?;
            if page.is_empty() {
                break;
            }
            for entry in &page {
                if entry.chain.position != position {
                    return Err(format!("chain position {} where {position} was due", entry.chain.position));
                }
                hash = audit::next_link(&hash, position, &entry.link_fields());
                if hash != entry.chain.hash {
                    return Err(format!("chain hash of {} does not follow from its vote", entry.vote_id));
                }
                position += 1;
                if !entry.current {
                    continue;
                }
                current += 1;
                let option = self
                    .poll
                    .option_index(&entry.option_id)
                    .ok_or_else(|| format!("vote {} for option {}", entry.vote_id, entry.option_id))?;
                recount.counts[option] += 1;
                recount.tally_attributes(&Attributes::from(&entry.attributes), option, true);
            }
        }
        if position != self.chain_len || hash != self.chain_head {
            return Err(format!("chain head or length ({}) disagrees with the votes ({position})", self.chain_len));
        }
        if recount.counts != self.counts {
            return Err(format!("counts {:?} but recount {:?}", self.counts, recount.counts));
        }
        if recount.breakdowns != self.breakdowns {
            return Err(format!("breakdowns {:?} but recount {:?}", self.breakdowns, recount.breakdowns));
        }
        if current != self.votes.len() {
            return Err(format!("{current} current votes in the blocks but {} indexed", self.votes.len()));
        }
        Ok(())
    }

    pub fn total_votes(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Counts (`add`) or uncounts one vote for `option_index` under each of its attributes.
    fn tally_attributes(&mut self, attributes: &Attributes, option_index: usize, add: bool) {
        let options = self.counts.len();
        for (attribute, value) in attributes.iter() {
            let values = self.breakdowns.entry(attribute.clone()).or_default();
            let per_option = values.entry(value.clone()).or_insert_with(|| vec![0; options]);
            if add {
                per_option[option_index] += 1;
                continue;
            }
            per_option[option_index] -= 1;
            if per_option.iter().all(|c| *c == 0) {
                values.remove(value);
            }
            if values.is_empty() {
                self.breakdowns.remove(attribute);
            }
        }
    }
}

/// The keys an apply changed, so that storage writes only those.
#[derive(Debug, Default)]
pub struct Touched {
    pub polls: BTreeSet<PollId>,
    /// The blocks each (poll, log index) recorded: one stored value each.
    pub blocks: BTreeSet<(PollId, u64)>,
    /// Votes in `blocks`.
    pub votes: usize,
    pub users: BTreeSet<String>,
}

impl Touched {
    pub fn clear(&mut self) {
        self.polls.clear();
        self.blocks.clear();
        self.votes = 0;
        self.users.clear();
    }

    /// A vote in `poll` was recorded at `index`.
    pub fn vote(&mut self, poll: &PollId, index: u64) {
        // An entry's votes mostly share one poll: look the block up without a key clone.
        if !self.blocks.last().is_some_and(|(last_poll, last)| *last == index && last_poll == poll) {
            self.blocks.insert((poll.clone(), index));
        }
        self.votes += 1;
    }

    /// Takes over what `other` names, leaving it only its polls.
    pub fn absorb(&mut self, other: &mut Touched) {
        self.polls.extend(other.polls.iter().cloned());
        self.blocks.append(&mut other.blocks);
        self.votes += std::mem::take(&mut other.votes);
        self.users.append(&mut other.users);
    }

    pub fn len(&self) -> usize {
        self.polls.len() + self.votes + self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    /// Applies the normal entry at `index`. Records in `touched` every key it changed.
    /// An error means a record the index points at could not be read: the storage is
    /// failing, and the state is no longer the log's (the caller stops applying).
    pub fn apply(&mut self, index: u64, request: &Request, touched: &mut Touched) -> Result<Response, RecordError> {
        let now_ms = self.last_timestamp_ms.max(request.timestamp_ms);
        self.last_timestamp_ms = now_ms;
        let response = match &*request.command {
            Command::CreatePoll(spec) => Response::Poll(self.create_poll(index, spec, now_ms, touched)),
            Command::UpdatePoll { poll_id, patch } => Response::Poll(self.update_poll(poll_id, patch, now_ms, touched)),
            Command::CastVotes(votes) => Response::Votes({
                assert_vote_entry(votes);
                votes
                    .iter()
                    .enumerate()
                    .map(|(slot, v)| self.cast_vote(&request.entropy, index, slot, v, now_ms, touched))
                    .collect::<Result<_, _>>()?
            }),
            Command::CreateUser { username, password_hash } => {
                Response::User(self.create_user(username, password_hash, now_ms, touched))
            }
            Command::SetPassword { username, password_hash, expected_hash } => {
                Response::User(self.set_password(username, password_hash, expected_hash.as_deref(), now_ms, touched))
            }
            Command::SetAlarm { node_id, raised } => {
                if *raised {
                    self.alarms.insert(*node_id);
                } else {
                    self.alarms.remove(node_id);
                }
                Response::None
            }
        };
        self.hash = chain_hash(&self.hash, index, request, &response);
        Ok(response)
    }

    /// Makes every poll read its written blocks from `source`.
    pub fn attach(&mut self, source: Arc<dyn BlockSource>) {
        for poll in self.polls.values_mut() {
            poll.votes.attach(source.clone());
        }
        self.source = Some(source);
    }

    /// Lets go of the store ([`PollVotes::detach`]).
    pub fn detach(&mut self) {
        for poll in self.polls.values_mut() {
            poll.votes.detach();
        }
        self.source = None;
    }

    /// Forgets applied blocks up to `index`: the store now holds them.
    pub fn written_through(&mut self, index: u64) {
        for poll in self.polls.values_mut() {
            poll.votes.written_through(index);
        }
    }

    fn create_poll(
        &mut self,
        index: u64,
        spec: &PollSpec,
        now_ms: i64,
        touched: &mut Touched,
    ) -> Result<Poll, PollRejection> {
        if let Some(existing) = self.polls.get(&spec.poll_id) {
            // The proposing node's own retry of this create: answer as the first time.
            return if same_poll(&existing.poll, spec) {
                Ok(existing.poll.clone())
            } else {
                Err(PollRejection::AlreadyExists)
            };
        }
        let poll = Poll {
            poll_id: spec.poll_id.clone(),
            title: spec.title.clone(),
            description: spec.description.clone(),
            options: spec
                .options
                .iter()
                .enumerate()
                .map(|(i, text)| PollOption { option_id: format!("o{}", i + 1), text: text.clone() })
                .collect(),
            start_time_ms: spec.start_time_ms.unwrap_or(now_ms),
            end_time_ms: spec.end_time_ms,
            settings: spec.settings.clone(),
            owner: spec.owner.clone(),
            created_at_ms: now_ms,
            created_index: index,
            closed_at_ms: None,
        };
        let mut state = PollState::new(poll.clone());
        if let Some(source) = &self.source {
            state.votes.attach(source.clone());
        }
        self.polls.insert(poll.poll_id.clone(), state);
        touched.polls.insert(poll.poll_id.clone());
        Ok(poll)
    }

    fn create_user(
        &mut self,
        username: &str,
        password_hash: &str,
        now_ms: i64,
        touched: &mut Touched,
    ) -> Result<i64, UserRejection> {
        if let Some(existing) = self.users.get(username) {
            // The same hash (salt included) is the proposing node's own retry.
            return match existing.password_hash == password_hash {
                true => Ok(existing.created_at_ms),
                false => Err(UserRejection::UsernameTaken),
            };
        }
        let record = UserRecord { password_hash: password_hash.to_string(), created_at_ms: now_ms };
        self.users.insert(username.to_string(), record);
        touched.users.insert(username.to_string());
        Ok(now_ms)
    }

    /// `Ok(now)`, or why not: no such account, or its hash is no longer `expected` (when
    /// given).
    fn set_password(
        &mut self,
        username: &str,
        password_hash: &str,
        expected: Option<&str>,
        now_ms: i64,
        touched: &mut Touched,
    ) -> Result<i64, UserRejection> {
        let user = self.users.get_mut(username).ok_or(UserRejection::NoSuchUser)?;
        if expected.is_some_and(|expected| expected != user.password_hash) {
            return Err(UserRejection::PasswordChanged);
        }
        user.password_hash = password_hash.to_string();
        touched.users.insert(username.to_string());
        Ok(now_ms)
    }

    fn update_poll(
        &mut self,
        poll_id: &PollId,
        patch: &PollPatch,
        now_ms: i64,
        touched: &mut Touched,
    ) -> Result<Poll, PollRejection> {
        let state = self.polls.get_mut(poll_id).ok_or(PollRejection::NotFound)?;
        let poll = &mut state.poll;
        let closed = poll.status_at(now_ms) == PollStatus::Closed;
        // Setting the end it already has is a no-op (and keeps a retried patch idempotent).
        if let Some(end) = patch.end_time_ms.filter(|end| Some(*end) != poll.end_time_ms) {
            if closed {
                return Err(PollRejection::Invalid("a closed poll never reopens".into()));
            }
            if end <= poll.start_time_ms {
                return Err(PollRejection::Invalid("end_time must be after start_time".into()));
            }
        }
        if let Some(title) = &patch.title {
            poll.title = title.clone();
        }
        if let Some(description) = &patch.description {
            poll.description = Some(description.clone());
        }
        if let Some(end) = patch.end_time_ms {
            poll.end_time_ms = Some(end);
        }
        if patch.close && poll.closed_at_ms.is_none() {
            poll.closed_at_ms = Some(now_ms);
        }
        touched.polls.insert(poll_id.clone());
        Ok(poll.clone())
    }

    fn cast_vote(
        &mut self,
        entropy: &[u8; 16],
        index: u64,
        slot: usize,
        intent: &VoteIntent,
        now_ms: i64,
        touched: &mut Touched,
    ) -> Result<VoteOutcome, RecordError> {
        let Some(state) = self.polls.get_mut(&intent.poll_id) else {
            return Ok(VoteOutcome::Rejected(VoteRejection::PollNotFound));
        };
        let (judgement, existing) = judge(state, intent, now_ms)?;
        if !self.alarms.is_empty() && !matches!(judgement, Judgement::Final(_)) {
            // Replays and final refusals cost no space and are still answered.
            return Ok(VoteOutcome::Rejected(VoteRejection::NoSpace { nodes: self.alarms.iter().copied().collect() }));
        }
        let (option_index, previous) = match judgement {
            Judgement::Final(outcome) => return Ok(outcome),
            Judgement::Record { option_index } => (option_index, None),
            Judgement::Change { option_index } => (option_index, existing),
        };
        let vote_key = vote_key_of(entropy, index, slot);
        let replaced_id = previous.as_ref().map(|(_, p)| p.vote_id());
        let vote_id = format_vote_id(vote_key);
        let chain = state.next_link(&LinkFields {
            vote_id: &vote_id,
            voter_id: intent.voter_id.as_str(),
            option_id: &state.poll.options[option_index].option_id,
            attributes: &intent.attributes,
            recorded_at_ms: now_ms,
            log_index: index,
            replaces: replaced_id.as_deref(),
        });
        state.extend_chain(&chain);
        let record = VoteRecord {
            voter_id: intent.voter_id.clone(),
            vote_key,
            option_index: option_index as u32,
            idempotency_key: intent.idempotency_key.clone(),
            attributes: Attributes::from(&intent.attributes),
            recorded_at_ms: now_ms,
            chain,
            replaces: previous.as_ref().map(|(loc, _)| *loc),
            changes: previous.as_ref().map_or(0, |(_, p)| p.changes.saturating_add(1)),
            log_index: index,
        };
        match &previous {
            Some((_, previous)) => {
                state.counts[previous.option_index as usize] -= 1;
                state.tally_attributes(&previous.attributes, previous.option_index as usize, false);
            }
            None => self.votes_recorded += 1,
        }
        state.counts[option_index] += 1;
        state.tally_attributes(&record.attributes, option_index, true);
        let receipt = receipt_with_id(&state.poll, &record, vote_id);
        state.votes.push(record, &mut self.blocks);
        // Cheap enough to keep in release builds: the one invariant a bug here would break.
        assert_eq!(state.total_votes(), state.votes.len(), "counts diverged from votes in poll {}", intent.poll_id);
        if !touched.polls.contains(&intent.poll_id) {
            touched.polls.insert(intent.poll_id.clone());
        }
        touched.vote(&intent.poll_id, index);
        #[cfg(feature = "bug-injection")]
        if previous.is_some() && crate::bugs::skip_dedup() {
            return Ok(VoteOutcome::Recorded(receipt));
        }
        Ok(if previous.is_some() { VoteOutcome::Changed(receipt) } else { VoteOutcome::Recorded(receipt) })
    }

    /// Recounts every poll from its blocks and compares with the live counts, chains and
    /// index. Reads every record.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (poll_id, state) in &self.polls {
            state.check_votes().map_err(|e| format!("poll {poll_id}: {e}"))?;
        }
        self.check_loaded()
    }

    /// What [`State::check_invariants`] checks without reading a record, for a state just
    /// loaded: each poll's indexed voters against its counts, and the total.
    pub fn check_loaded(&self) -> Result<(), String> {
        let mut total = 0u64;
        for (poll_id, state) in &self.polls {
            if state.votes.len() != state.total_votes() {
                return Err(format!(
                    "poll {poll_id}: {} voters indexed but counts {:?}",
                    state.votes.len(),
                    state.counts
                ));
            }
            total += state.votes.len();
        }
        if total != self.votes_recorded {
            return Err(format!("votes_recorded {} but {total} votes stored", self.votes_recorded));
        }
        Ok(())
    }

    pub fn hash_hex(&self) -> String {
        hex(&self.hash)
    }
}

/// Whether `poll` is what `spec` would create (ids and times set by apply aside).
fn same_poll(poll: &Poll, spec: &PollSpec) -> bool {
    poll.title == spec.title
        && poll.description == spec.description
        && poll.options.iter().map(|o| &o.text).eq(spec.options.iter())
        && spec.start_time_ms.is_none_or(|start| start == poll.start_time_ms)
        && poll.end_time_ms == spec.end_time_ms
        && poll.settings == spec.settings
        && poll.owner == spec.owner
}

fn chain_hash(previous: &[u8; 32], index: u64, request: &Request, response: &Response) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(index.to_be_bytes());
    // Both encodings are deterministic (fixed-width, declaration order); they cannot fail
    // for these plain types, and if they did every replica would fail the same way.
    hasher.update(codec::encode(request).unwrap_or_default());
    hasher.update(codec::encode(response).unwrap_or_default());
    hasher.finalize().into()
}

pub use tally_api::audit::hex;

#[cfg(test)]
mod tests;
