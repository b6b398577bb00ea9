//! How the state machine judges one vote (record, change, or a final answer: a replay,
//! a refusal), and vote ids: what a receipt is and how its id is made.

use super::*;

/// How one vote would be judged against the current state. The state machine acts on it;
/// a poll actor may use it to answer early when the answer can no longer change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    Record { option_index: usize },
    Change { option_index: usize },
    Final(VoteOutcome),
}

/// Judges `intent` against `poll` at time `now_ms`. Reads the voter's record, if the index
/// has one, and nothing else.
pub fn judge_vote(poll: &PollState, intent: &VoteIntent, now_ms: i64) -> Result<Judgement, RecordError> {
    Ok(judge(poll, intent, now_ms)?.0)
}

/// [`judge_vote`], with the voter's current version when there is one.
pub(super) fn judge(
    poll: &PollState,
    intent: &VoteIntent,
    now_ms: i64,
) -> Result<(Judgement, Option<(Loc, VoteRecord)>), RecordError> {
    let existing = poll.votes.current(&intent.voter_id)?;
    let judgement = |j| Ok((j, None));
    if let Some((_, record)) = &existing {
        if let Some(replay) = replay(poll, record, intent)? {
            return judgement(Judgement::Final(replay));
        }
    }
    match poll.poll.status_at(now_ms) {
        PollStatus::Closed => return judgement(Judgement::Final(VoteOutcome::Rejected(VoteRejection::PollClosed))),
        PollStatus::Scheduled => return judgement(Judgement::Final(VoteOutcome::Rejected(VoteRejection::PollNotOpen))),
        PollStatus::Active => {}
    }
    let Some(option_index) = poll.poll.option_index(&intent.option_id) else {
        return judgement(Judgement::Final(VoteOutcome::Rejected(VoteRejection::InvalidOption)));
    };
    if let Some(key) = intent.attributes.keys().find(|k| !poll.poll.settings.breakdowns.contains(k)) {
        let reason = format!("attribute {key:?} is not one of the poll's breakdowns");
        return judgement(Judgement::Final(VoteOutcome::Rejected(VoteRejection::InvalidAttributes(reason))));
    }
    // A new value only while the attribute has room; values already counted stay usable.
    let full = intent.attributes.iter().find(|(key, value)| {
        poll.breakdowns
            .get(*key)
            .is_some_and(|values| values.len() >= ATTRIBUTE_VALUES_MAX && !values.contains_key(*value))
    });
    if let Some((key, _)) = full {
        let reason = format!("attribute {key:?} already has {ATTRIBUTE_VALUES_MAX} distinct values in this poll");
        return judgement(Judgement::Final(VoteOutcome::Rejected(VoteRejection::InvalidAttributes(reason))));
    }
    #[cfg(feature = "bug-injection")]
    if existing.is_some() && crate::bugs::skip_dedup() {
        // The injected bug: a second vote by the voter is taken as a new one.
        return Ok((Judgement::Change { option_index }, existing));
    }
    let Some((loc, record)) = existing else { return judgement(Judgement::Record { option_index }) };
    let settings = &poll.poll.settings;
    let final_outcome = if settings.allow_vote_change && usize::from(record.changes) >= VOTE_CHANGES_MAX {
        VoteRejection::TooManyChanges { vote_id: record.vote_id(), option_id: poll.option_id(record.option_index) }
    } else if settings.allow_vote_change {
        return Ok((Judgement::Change { option_index }, Some((loc, record))));
    } else {
        VoteRejection::AlreadyVoted {
            vote_id: record.vote_id(),
            option_id: poll.option_id(record.option_index),
            voted_at_ms: record.recorded_at_ms,
        }
    };
    judgement(Judgement::Final(VoteOutcome::Rejected(final_outcome)))
}

impl PollState {
    /// Whether `voter`'s request with `key` made their current vote or one it replaced:
    /// a retry of it is answered from the state, whatever the rate limits.
    pub fn decided_request(&self, voter: &VoterId, key: &str) -> Result<bool, RecordError> {
        Ok(self.request_receipt(voter, key)?.is_some())
    }

    /// The receipt of the vote (current or replaced) that `voter`'s request with `key`
    /// made, and whether that vote was a change: what any node can tell of a request from
    /// its own applied state.
    pub fn request_receipt(&self, voter: &VoterId, key: &str) -> Result<Option<(VoteReceipt, bool)>, RecordError> {
        let Some((_, record)) = self.votes.current(voter)? else { return Ok(None) };
        let version = self.version_with_key(&record, key)?;
        Ok(version.map(|version| (receipt(&self.poll, &version), version.changed())))
    }
}

/// The original answer to the request with `intent`'s key, if that key made the current
/// vote or one it replaced; a refusal if the key did but with another option or other
/// attributes (a key names one request, as Stripe's API has it).
fn replay(poll: &PollState, record: &VoteRecord, intent: &VoteIntent) -> Result<Option<VoteOutcome>, RecordError> {
    let Some(version) = poll.version_with_key(record, &intent.idempotency_key)? else { return Ok(None) };
    let same = poll.poll.options.get(version.option_index as usize).is_some_and(|o| o.option_id == intent.option_id)
        && version.attributes.matches(&intent.attributes);
    if !same {
        return Ok(Some(VoteOutcome::Rejected(VoteRejection::IdempotencyKeyReused { vote_id: version.vote_id() })));
    }
    Ok(Some(VoteOutcome::Replayed { receipt: receipt(&poll.poll, &version), changed: version.changed() }))
}

pub fn receipt(poll: &Poll, record: &VoteRecord) -> VoteReceipt {
    receipt_with_id(poll, record, record.vote_id())
}

/// [`receipt`], given the record's vote id already spelled out.
pub(super) fn receipt_with_id(poll: &Poll, record: &VoteRecord, vote_id: String) -> VoteReceipt {
    VoteReceipt {
        vote_id,
        poll_id: poll.poll_id.clone(),
        option_id: poll.options[record.option_index as usize].option_id.clone(),
        recorded_at_ms: record.recorded_at_ms,
        log_index: record.log_index,
        chain: record.chain,
    }
}

/// Bits of a vote key below its log index: the digest's.
const VOTE_DIGEST_BITS: u32 = 80;

/// A vote id as a number: `v` and 32 hex digits, the entry's log index (48 bits) then 80
/// bits of digest, compared as one integer rather than as a string. `None` for anything
/// else: no vote has such an id.
pub fn vote_key(vote_id: &str) -> Option<u128> {
    let hex = vote_id.strip_prefix('v')?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    u128::from_str_radix(hex, 16).ok()
}

/// The log index a vote key names: where its block is.
pub fn vote_key_index(key: u128) -> u64 {
    (key >> VOTE_DIGEST_BITS) as u64
}

pub fn format_vote_id(key: u128) -> String {
    // Not `format!("v{key:032x}")`: with the chain link's, it was a fifth of apply.
    let mut text = String::with_capacity(33);
    text.push('v');
    crate::audit::push_hex(&mut text, &key.to_be_bytes());
    text
}

/// A vote's id: its entry's log index, so that a receipt is found by key in that entry's
/// block, and 80 bits of SHA-256 over the entry's entropy, its index and the vote's slot
/// in it, so that an id is not guessable: a receipt is only found by whoever was handed
/// its id. Unique per (index, slot).
pub fn vote_id(entropy: &[u8; 16], log_index: u64, slot: usize) -> String {
    format_vote_id(vote_key_of(entropy, log_index, slot))
}

pub(super) fn vote_key_of(entropy: &[u8; 16], log_index: u64, slot: usize) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update(b"tally-vote-id-v1\n");
    hasher.update(entropy);
    hasher.update(log_index.to_be_bytes());
    hasher.update((slot as u64).to_be_bytes());
    let mut digest = [0u8; 16];
    digest[6..].copy_from_slice(&hasher.finalize()[..10]);
    (u128::from(log_index & ((1 << 48) - 1)) << VOTE_DIGEST_BITS) | u128::from_be_bytes(digest)
}
