//! Every size in the system has a bound, named here.

pub const POLL_OPTIONS_MIN: usize = 2;
pub const POLL_OPTIONS_MAX: usize = 32;
pub const POLL_TITLE_BYTES_MAX: usize = 200;
pub const POLL_DESCRIPTION_BYTES_MAX: usize = 2_000;
pub const OPTION_TEXT_BYTES_MAX: usize = 200;
pub const BREAKDOWNS_MAX: usize = 8;
pub const VOTER_ID_BYTES_MAX: usize = 128;
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
pub const ATTRIBUTES_MAX: usize = 8;
pub const ATTRIBUTE_BYTES_MAX: usize = 64;
/// Distinct values of one breakdown attribute in one poll (regions, age groups, ...):
/// each costs a row of counts in the state and in every results-by-breakdown answer.
pub const ATTRIBUTE_VALUES_MAX: usize = 1_000;
pub const ID_BYTES_MAX: usize = 64;
/// Votes grouped into one Raft log entry. Bounds an entry to well under a megabyte.
pub const VOTES_PER_ENTRY_MAX: usize = 512;
/// Votes in one `votes:batch` request.
pub const VOTES_PER_BATCH_REQUEST_MAX: usize = 1_000;
/// Polls listed per page.
pub const POLLS_PAGE_MAX: usize = 200;
/// The largest peer RPC frame, either way.
pub const PEER_FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Changes of one voter's vote on a poll with `allow_vote_change`.
pub const VOTE_CHANGES_MAX: usize = 16;
/// Log entries in one AppendEntries (openraft's `max_payload_entries`).
pub const ENTRIES_PER_APPEND_MAX: usize = 64;
/// The most bytes one vote can take in a log entry: poll, voter and option ids, the
/// idempotency key, every attribute's key and value, an 8-byte length before each of
/// those strings (bincode), and the entry's fixed fields with room to spare.
pub const VOTE_ENCODED_BYTES_MAX: usize = ID_BYTES_MAX
    + VOTER_ID_BYTES_MAX
    + ID_BYTES_MAX
    + IDEMPOTENCY_KEY_BYTES_MAX
    + ATTRIBUTES_MAX * 2 * ATTRIBUTE_BYTES_MAX
    + (4 + 2 * ATTRIBUTES_MAX) * 8
    + 64;

// A full AppendEntries (every entry full of the largest votes) fits one peer frame, so
// replication can never build a frame the receiver must refuse.
const _: () =
    assert!(ENTRIES_PER_APPEND_MAX * (VOTES_PER_ENTRY_MAX * VOTE_ENCODED_BYTES_MAX + 64) < PEER_FRAME_BYTES_MAX);
