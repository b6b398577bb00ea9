//! The vote state machine's pure logic: a function of the log alone.
//!
//! No clock, no randomness, no hash-map iteration: time comes from the leader's timestamp
//! in each entry and every map is a `BTreeMap`, so every replica that applies the same log
//! reaches the same state and the same running hash.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::{self, ChainLink, LinkFields};
use crate::codec;
use crate::limits::{ATTRIBUTE_VALUES_MAX, VOTE_CHANGES_MAX};
use crate::model::*;

/// Everything the state machine knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// Attribute (one of the poll's `breakdowns`) → value → votes per option, in option order.
/// Only values with at least one vote appear, so it always equals a recount.
pub type Breakdowns = BTreeMap<String, BTreeMap<String, Vec<u64>>>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollState {
    pub poll: Poll,
    /// Votes per option, in the poll's option order.
    pub counts: Vec<u64>,
    pub votes: BTreeMap<VoterId, VoteRecord>,
    /// Derived from `votes` like `counts`, and kept live so that results by region and the
    /// turnout metrics cost a lookup, not a scan of every vote.
    pub breakdowns: Breakdowns,
    /// Links in the poll's audit chain: recorded votes and changes, all versions.
    pub chain_len: u64,
    /// The last link's hash ([`audit::genesis`] before the first vote).
    pub chain_head: [u8; 32],
    /// Every vote id the poll recorded (current and replaced versions, by [`vote_key`]) →
    /// its voter, so that a receipt is found by key, not by a scan of the votes under the
    /// state lock. Derived from `votes` like `breakdowns`, but left out of snapshots too:
    /// whoever builds a `PollState` from stored votes calls [`PollState::reindex`].
    #[serde(skip)]
    pub vote_ids: BTreeMap<u128, VoterId>,
    /// Chain position → the voter whose vote (current or replaced) holds it, so that the
    /// audit stream reads a range of positions without scanning the poll. Derived and
    /// left out of snapshots like `vote_ids`.
    #[serde(skip)]
    pub positions: Vec<VoterId>,
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

impl PollState {
    pub fn new(poll: Poll) -> Self {
        let counts = vec![0; poll.options.len()];
        let chain_head = audit::genesis(poll.poll_id.as_str());
        Self {
            poll,
            counts,
            votes: BTreeMap::new(),
            breakdowns: Breakdowns::new(),
            chain_len: 0,
            chain_head,
            vote_ids: BTreeMap::new(),
            positions: Vec::new(),
        }
    }

    /// Rebuilds the derived indexes (`vote_ids`, `positions`) from the votes, for a state
    /// read from storage or a snapshot.
    pub fn reindex(&mut self) {
        self.vote_ids = self.index_vote_ids();
        self.positions = self.index_positions();
    }

    /// `positions` as the votes give it (a gap or a clash shows up in `check_invariants`).
    pub fn index_positions(&self) -> Vec<VoterId> {
        let mut held: Vec<(u64, &VoterId)> = Vec::with_capacity(self.chain_len as usize);
        for (voter, record) in &self.votes {
            held.extend(record.history.iter().map(|past| (past.chain.position, voter)));
            held.push((record.chain.position, voter));
        }
        held.sort_by_key(|(position, _)| *position);
        held.into_iter().map(|(_, voter)| voter.clone()).collect()
    }

    /// Up to `max` versions from chain position `from` on, in chain order: one page of the
    /// audit stream, found by position.
    pub fn audit_page(&self, from: u64, max: usize) -> Vec<AuditEntry> {
        let end = (from.saturating_add(max as u64)).min(self.positions.len() as u64);
        let mut page = Vec::with_capacity(end.saturating_sub(from) as usize);
        for position in from..end {
            let voter = &self.positions[position as usize];
            let Some(record) = self.votes.get(voter) else { continue };
            page.extend(self.versions(voter, record).into_iter().filter(|entry| entry.chain.position == position));
        }
        page
    }

    /// `vote_ids` as the votes give it.
    pub fn index_vote_ids(&self) -> BTreeMap<u128, VoterId> {
        let mut index = BTreeMap::new();
        for (voter, record) in &self.votes {
            for vote_id in record.history.iter().map(|past| &past.vote_id).chain([&record.vote_id]) {
                if let Some(key) = vote_key(vote_id) {
                    index.insert(key, voter.clone());
                }
            }
        }
        index
    }

    /// Every version of every vote, in chain (and so log) order.
    pub fn audit_trail(&self) -> Vec<AuditEntry> {
        let mut trail = Vec::with_capacity(self.chain_len as usize);
        for (voter, record) in &self.votes {
            trail.extend(self.versions(voter, record));
        }
        trail.sort_by_key(|entry| entry.chain.position);
        trail
    }

    /// The version of a vote with this id, if the poll recorded it.
    pub fn find_vote(&self, vote_id: &str) -> Option<AuditEntry> {
        let voter = self.vote_ids.get(&vote_key(vote_id)?)?;
        let record = self.votes.get(voter)?;
        self.versions(voter, record).into_iter().find(|entry| entry.vote_id == vote_id)
    }

    /// One voter's versions, oldest first.
    fn versions(&self, voter: &VoterId, record: &VoteRecord) -> Vec<AuditEntry> {
        let option_id = |index: u32| self.poll.options[index as usize].option_id.clone();
        let mut out = Vec::with_capacity(record.history.len() + 1);
        let mut replaces: Option<String> = None;
        for past in &record.history {
            out.push(AuditEntry {
                voter_id: voter.clone(),
                vote_id: past.vote_id.clone(),
                option_id: option_id(past.option_index),
                attributes: past.attributes.to_map(),
                recorded_at_ms: past.recorded_at_ms,
                log_index: past.log_index,
                replaces: replaces.replace(past.vote_id.clone()),
                chain: past.chain,
                current: false,
            });
        }
        out.push(AuditEntry {
            voter_id: voter.clone(),
            vote_id: record.vote_id.clone(),
            option_id: option_id(record.option_index),
            attributes: record.attributes.to_map(),
            recorded_at_ms: record.recorded_at_ms,
            log_index: record.log_index,
            replaces,
            chain: record.chain,
            current: true,
        });
        out
    }

    /// Recomputes the chain from the stored votes: positions 0.. without gaps, every link
    /// hash, and the head.
    fn check_chain(&self) -> Result<(), String> {
        let mut hash = audit::genesis(self.poll.poll_id.as_str());
        let trail = self.audit_trail();
        for (position, entry) in trail.iter().enumerate() {
            if entry.chain.position != position as u64 {
                return Err(format!("chain position {} where {position} was due", entry.chain.position));
            }
            hash = audit::next_link(&hash, position as u64, &entry.link_fields());
            if hash != entry.chain.hash {
                return Err(format!("chain hash of {} does not follow from its vote", entry.vote_id));
            }
        }
        if trail.len() as u64 != self.chain_len || hash != self.chain_head {
            return Err(format!(
                "chain head or length ({}) disagrees with the votes ({})",
                self.chain_len,
                trail.len()
            ));
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

    /// `breakdowns` as a recount from the votes would give it.
    pub fn recount_breakdowns(&self) -> Breakdowns {
        let mut recount = PollState { breakdowns: Breakdowns::new(), ..PollState::new(self.poll.clone()) };
        for record in self.votes.values() {
            recount.tally_attributes(&record.attributes, record.option_index as usize, true);
        }
        recount.breakdowns
    }
}

/// The keys an apply changed, so that storage writes only those.
#[derive(Debug, Default)]
pub struct Touched {
    pub polls: BTreeSet<PollId>,
    /// The voters whose vote each (poll, log index) recorded: one stored block each.
    pub blocks: BTreeMap<(PollId, u64), Vec<VoterId>>,
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

    /// The vote of `voter` in `poll` was recorded at `index`.
    pub fn vote(&mut self, poll: &PollId, index: u64, voter: &VoterId) {
        // An entry's votes mostly share one poll: look the block up without a key clone.
        match self.blocks.last_entry() {
            Some(mut last) if last.key().1 == index && &last.key().0 == poll => last.get_mut().push(voter.clone()),
            _ => self.blocks.entry((poll.clone(), index)).or_default().push(voter.clone()),
        }
        self.votes += 1;
    }

    /// Takes over what `other` names, leaving it only its polls: the votes move rather
    /// than being cloned.
    pub fn absorb(&mut self, other: &mut Touched) {
        self.polls.extend(other.polls.iter().cloned());
        for (key, mut voters) in std::mem::take(&mut other.blocks) {
            self.blocks.entry(key).or_default().append(&mut voters);
        }
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

/// How one vote would be judged against the current state. The state machine acts on it;
/// a poll actor may use it to answer early when the answer can no longer change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    Record { option_index: usize },
    Change { option_index: usize },
    Final(VoteOutcome),
}

/// Judges `intent` against `poll` at time `now_ms`. Pure.
pub fn judge_vote(poll: &PollState, intent: &VoteIntent, now_ms: i64) -> Judgement {
    let existing = poll.votes.get(&intent.voter_id);
    if let Some(record) = existing {
        if let Some(replay) = replay(&poll.poll, record, intent) {
            return Judgement::Final(replay);
        }
    }
    match poll.poll.status_at(now_ms) {
        PollStatus::Closed => return Judgement::Final(VoteOutcome::Rejected(VoteRejection::PollClosed)),
        PollStatus::Scheduled => return Judgement::Final(VoteOutcome::Rejected(VoteRejection::PollNotOpen)),
        PollStatus::Active => {}
    }
    let Some(option_index) = poll.poll.option_index(&intent.option_id) else {
        return Judgement::Final(VoteOutcome::Rejected(VoteRejection::InvalidOption));
    };
    if let Some(key) = intent.attributes.keys().find(|k| !poll.poll.settings.breakdowns.contains(k)) {
        let reason = format!("attribute {key:?} is not one of the poll's breakdowns");
        return Judgement::Final(VoteOutcome::Rejected(VoteRejection::InvalidAttributes(reason)));
    }
    // A new value only while the attribute has room; values already counted stay usable.
    let full = intent.attributes.iter().find(|(key, value)| {
        poll.breakdowns
            .get(*key)
            .is_some_and(|values| values.len() >= ATTRIBUTE_VALUES_MAX && !values.contains_key(*value))
    });
    if let Some((key, _)) = full {
        let reason = format!("attribute {key:?} already has {ATTRIBUTE_VALUES_MAX} distinct values in this poll");
        return Judgement::Final(VoteOutcome::Rejected(VoteRejection::InvalidAttributes(reason)));
    }
    #[cfg(feature = "bug-injection")]
    if existing.is_some() && crate::bugs::skip_dedup() {
        // The injected bug: a second vote by the voter is taken as a new one.
        return Judgement::Change { option_index };
    }
    match existing {
        None => Judgement::Record { option_index },
        Some(record) if poll.poll.settings.allow_vote_change && record.history.len() >= VOTE_CHANGES_MAX => {
            Judgement::Final(VoteOutcome::Rejected(VoteRejection::TooManyChanges {
                vote_id: record.vote_id.clone(),
                option_id: poll.poll.options[record.option_index as usize].option_id.clone(),
            }))
        }
        Some(_) if poll.poll.settings.allow_vote_change => Judgement::Change { option_index },
        Some(record) => Judgement::Final(VoteOutcome::Rejected(VoteRejection::AlreadyVoted {
            vote_id: record.vote_id.clone(),
            option_id: poll.poll.options[record.option_index as usize].option_id.clone(),
            voted_at_ms: record.recorded_at_ms,
        })),
    }
}

impl PollState {
    /// Whether `voter`'s request with `key` made their current vote or one it replaced:
    /// a retry of it is answered from the state, whatever the rate limits.
    pub fn decided_request(&self, voter: &VoterId, key: &str) -> bool {
        self.votes.get(voter).is_some_and(|record| {
            record.idempotency_key == key || record.history.iter().any(|past| past.idempotency_key == key)
        })
    }

    /// The receipt of the vote (current or replaced) that `voter`'s request with `key`
    /// made, and whether that vote was a change: what any node can tell of a request from
    /// its own applied state.
    pub fn request_receipt(&self, voter: &VoterId, key: &str) -> Option<(VoteReceipt, bool)> {
        let record = self.votes.get(voter)?;
        if record.idempotency_key == key {
            return Some((receipt(&self.poll, record), record.changed));
        }
        let past = record.history.iter().find(|p| p.idempotency_key == key)?;
        Some((past_receipt(&self.poll, past), past.changed))
    }
}

/// The original answer to the request with `intent`'s key, if that key made the current
/// vote or one it replaced; a refusal if the key did but with another option or other
/// attributes (a key names one request, as Stripe's API has it).
fn replay(poll: &Poll, record: &VoteRecord, intent: &VoteIntent) -> Option<VoteOutcome> {
    let key = intent.idempotency_key.as_str();
    let same = |option_index: u32, attributes: &Attributes| {
        poll.options[option_index as usize].option_id == intent.option_id && attributes.matches(&intent.attributes)
    };
    let reused = |vote_id: &str| {
        Some(VoteOutcome::Rejected(VoteRejection::IdempotencyKeyReused { vote_id: vote_id.to_string() }))
    };
    if record.idempotency_key == key {
        if !same(record.option_index, &record.attributes) {
            return reused(&record.vote_id);
        }
        return Some(VoteOutcome::Replayed { receipt: receipt(poll, record), changed: record.changed });
    }
    let past = record.history.iter().find(|p| p.idempotency_key == key)?;
    if !same(past.option_index, &past.attributes) {
        return reused(&past.vote_id);
    }
    Some(VoteOutcome::Replayed { receipt: past_receipt(poll, past), changed: past.changed })
}

fn past_receipt(poll: &Poll, past: &PastVote) -> VoteReceipt {
    VoteReceipt {
        vote_id: past.vote_id.clone(),
        poll_id: poll.poll_id.clone(),
        option_id: poll.options[past.option_index as usize].option_id.clone(),
        recorded_at_ms: past.recorded_at_ms,
        log_index: past.log_index,
        chain: past.chain,
    }
}

pub fn receipt(poll: &Poll, record: &VoteRecord) -> VoteReceipt {
    VoteReceipt {
        vote_id: record.vote_id.clone(),
        poll_id: poll.poll_id.clone(),
        option_id: poll.options[record.option_index as usize].option_id.clone(),
        recorded_at_ms: record.recorded_at_ms,
        log_index: record.log_index,
        chain: record.chain,
    }
}

/// A vote id as the key of `PollState::vote_ids`: its 80 bits (`v` and 20 hex digits) in
/// an integer, compared as one rather than as a string (perf found string compares of ids
/// that share their first byte a few percent of a leader's CPU), and 16 bytes rather than
/// a string of 21. `None` for anything else: no vote has such an id.
pub fn vote_key(vote_id: &str) -> Option<u128> {
    let hex = vote_id.strip_prefix('v')?;
    if hex.len() != 20 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    u128::from_str_radix(hex, 16).ok()
}

/// A vote id, unique in the cluster because (log index, position in the entry) is.
/// A vote's id: `v` and 20 hex digits (80 bits) of SHA-256 over the entry's entropy, its
/// index and the vote's slot in it. Unique per (index, slot) like the `v{index}.{slot}` it
/// replaced, but not guessable: a receipt is only found by whoever was handed its id.
pub fn vote_id(entropy: &[u8; 16], log_index: u64, slot: usize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"tally-vote-id-v1\n");
    hasher.update(entropy);
    hasher.update(log_index.to_be_bytes());
    hasher.update((slot as u64).to_be_bytes());
    format!("v{}", hex(&hasher.finalize()[..10]))
}

impl State {
    /// Applies the normal entry at `index`. Records in `touched` every key it changed.
    pub fn apply(&mut self, index: u64, request: &Request, touched: &mut Touched) -> Response {
        let now_ms = self.last_timestamp_ms.max(request.timestamp_ms);
        self.last_timestamp_ms = now_ms;
        let response = match &request.command {
            Command::CreatePoll(spec) => Response::Poll(self.create_poll(index, spec, now_ms, touched)),
            Command::UpdatePoll { poll_id, patch } => Response::Poll(self.update_poll(poll_id, patch, now_ms, touched)),
            Command::CastVotes(votes) => Response::Votes(
                votes
                    .iter()
                    .enumerate()
                    .map(|(slot, v)| self.cast_vote(&request.entropy, index, slot, v, now_ms, touched))
                    .collect(),
            ),
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
        response
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
        self.polls.insert(poll.poll_id.clone(), PollState::new(poll.clone()));
        touched.polls.insert(poll.poll_id.clone());
        Ok(poll)
    }

    fn create_user(
        &mut self,
        username: &str,
        password_hash: &str,
        now_ms: i64,
        touched: &mut Touched,
    ) -> Result<i64, ()> {
        if let Some(existing) = self.users.get(username) {
            // The same hash (salt included) is the proposing node's own retry.
            return if existing.password_hash == password_hash { Ok(existing.created_at_ms) } else { Err(()) };
        }
        let record = UserRecord { password_hash: password_hash.to_string(), created_at_ms: now_ms };
        self.users.insert(username.to_string(), record);
        touched.users.insert(username.to_string());
        Ok(now_ms)
    }

    /// `Ok(now)`, or `Err(())` for an account that does not exist or whose hash is no
    /// longer `expected` (when given).
    fn set_password(
        &mut self,
        username: &str,
        password_hash: &str,
        expected: Option<&str>,
        now_ms: i64,
        touched: &mut Touched,
    ) -> Result<i64, ()> {
        let user = self.users.get_mut(username).ok_or(())?;
        if expected.is_some_and(|expected| expected != user.password_hash) {
            return Err(());
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
    ) -> VoteOutcome {
        let Some(state) = self.polls.get_mut(&intent.poll_id) else {
            return VoteOutcome::Rejected(VoteRejection::PollNotFound);
        };
        let judgement = judge_vote(state, intent, now_ms);
        if !self.alarms.is_empty() && !matches!(judgement, Judgement::Final(_)) {
            // Replays and final refusals cost no space and are still answered.
            return VoteOutcome::Rejected(VoteRejection::NoSpace { nodes: self.alarms.iter().copied().collect() });
        }
        let (option_index, previous) = match judgement {
            Judgement::Final(outcome) => return outcome,
            Judgement::Record { option_index } => (option_index, None),
            Judgement::Change { option_index } => (option_index, state.votes.remove(&intent.voter_id)),
        };
        let history = match &previous {
            None => Vec::new(),
            Some(previous) => {
                let mut history = previous.history.clone();
                history.push(PastVote {
                    vote_id: previous.vote_id.clone(),
                    option_index: previous.option_index,
                    idempotency_key: previous.idempotency_key.clone(),
                    recorded_at_ms: previous.recorded_at_ms,
                    log_index: previous.log_index,
                    changed: previous.changed,
                    attributes: previous.attributes.clone(),
                    chain: previous.chain,
                });
                history
            }
        };
        let vote_id = vote_id(entropy, index, slot);
        let position = state.chain_len;
        let link = audit::next_link(
            &state.chain_head,
            position,
            &LinkFields {
                vote_id: &vote_id,
                voter_id: intent.voter_id.as_str(),
                option_id: &state.poll.options[option_index].option_id,
                attributes: &intent.attributes,
                recorded_at_ms: now_ms,
                log_index: index,
                replaces: previous.as_ref().map(|p| p.vote_id.as_str()),
            },
        );
        state.chain_len += 1;
        state.chain_head = link;
        let record = VoteRecord {
            vote_id,
            option_index: option_index as u32,
            idempotency_key: intent.idempotency_key.clone(),
            attributes: Attributes::from(&intent.attributes),
            recorded_at_ms: now_ms,
            log_index: index,
            changed: previous.is_some(),
            chain: ChainLink { position, hash: link },
            history,
        };
        match &previous {
            Some(previous) => {
                state.counts[previous.option_index as usize] -= 1;
                state.tally_attributes(&previous.attributes, previous.option_index as usize, false);
            }
            None => self.votes_recorded += 1,
        }
        state.counts[option_index] += 1;
        state.tally_attributes(&record.attributes, option_index, true);
        // Cheap enough to keep in release builds: the one invariant a bug here would break.
        // (The voter's record is out of `votes` here, whether new or changed.)
        assert_eq!(
            state.total_votes(),
            state.votes.len() as u64 + 1,
            "counts diverged from votes in poll {}",
            intent.poll_id
        );
        let receipt = receipt(&state.poll, &record);
        // The replaced versions' ids stay: they name the same voter.
        if let Some(key) = vote_key(&record.vote_id) {
            state.vote_ids.insert(key, intent.voter_id.clone());
        }
        debug_assert_eq!(state.positions.len() as u64, position);
        state.positions.push(intent.voter_id.clone());
        state.votes.insert(intent.voter_id.clone(), record);
        if !touched.polls.contains(&intent.poll_id) {
            touched.polls.insert(intent.poll_id.clone());
        }
        touched.vote(&intent.poll_id, index, &intent.voter_id);
        #[cfg(feature = "bug-injection")]
        if previous.is_some() && crate::bugs::skip_dedup() {
            return VoteOutcome::Recorded(receipt);
        }
        if previous.is_some() {
            VoteOutcome::Changed(receipt)
        } else {
            VoteOutcome::Recorded(receipt)
        }
    }

    /// Recounts every poll from its votes and compares with the live counts.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check(true)
    }

    /// [`State::check_invariants`] for a state whose derived parts (breakdowns, indexes)
    /// were just rebuilt from its votes, which would only be compared with themselves: the
    /// counts, the chains and the total. A restart spent a tenth of its time on the rest.
    pub fn check_loaded(&self) -> Result<(), String> {
        self.check(false)
    }

    fn check(&self, derived: bool) -> Result<(), String> {
        let mut total = 0u64;
        for (poll_id, state) in &self.polls {
            let mut recount = vec![0u64; state.poll.options.len()];
            for record in state.votes.values() {
                let slot = recount
                    .get_mut(record.option_index as usize)
                    .ok_or_else(|| format!("poll {poll_id}: vote for option index {}", record.option_index))?;
                *slot += 1;
            }
            if recount != state.counts {
                return Err(format!("poll {poll_id}: counts {:?} but recount {recount:?}", state.counts));
            }
            state.check_chain().map_err(|e| format!("poll {poll_id}: {e}"))?;
            total += state.votes.len() as u64;
            if !derived {
                continue;
            }
            let breakdowns = state.recount_breakdowns();
            if breakdowns != state.breakdowns {
                return Err(format!("poll {poll_id}: breakdowns {:?} but recount {breakdowns:?}", state.breakdowns));
            }
            if state.vote_ids != state.index_vote_ids() {
                return Err(format!("poll {poll_id}: the vote id index does not match its votes"));
            }
            if state.positions.len() as u64 != state.chain_len || state.positions != state.index_positions() {
                return Err(format!("poll {poll_id}: the position index does not match its votes"));
            }
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

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
