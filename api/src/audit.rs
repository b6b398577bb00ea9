//! Per-poll hash chains over recorded votes: the receipts voters keep and the audit trail.
//!
//! Every vote a poll records (a first vote or a change) takes the next position in the
//! poll's chain, and its link hash commits to the previous link and to the vote:
//!
//! ```text
//! link(0 - 1) = SHA-256("tally-audit-v1\n" poll_id)
//! link(n)     = SHA-256(link(n - 1) ‖ "n\nvote_id\nvoter_id\noption_id\nrecorded_at_ms\nlog_index\nreplaces\n" ‖ "key=value\n"…)
//! ```
//!
//! with numbers in decimal, `replaces` empty for a first vote, and the attributes in key
//! order. No field can hold a newline and attribute keys cannot hold `=` (both refused at
//! the API), so the encoding is unambiguous. A voter who kept the receipt (position and
//! hash) of their vote can find it in the audit stream; an auditor recomputes the chain
//! from the stream alone and compares its head with the one the cluster reports. Both
//! sides use these functions, and the format above lets anyone write a third.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where one vote sits in its poll's chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    pub position: u64,
    pub hash: [u8; 32],
}

/// What the chain commits to for one vote.
#[derive(Clone, Copy, Debug)]
pub struct LinkFields<'a> {
    pub vote_id: &'a str,
    pub voter_id: &'a str,
    pub option_id: &'a str,
    pub attributes: &'a BTreeMap<String, String>,
    pub recorded_at_ms: i64,
    pub log_index: u64,
    /// The vote id this vote replaced (`allow_vote_change`).
    pub replaces: Option<&'a str>,
}

/// The hash before the first vote: binds the chain to its poll.
pub fn genesis(poll_id: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"tally-audit-v1\n");
    hasher.update(poll_id.as_bytes());
    hasher.finalize().into()
}

/// The link hash at `position`, following `previous`.
///
/// The fields go into the hash one by one rather than through one formatted string: on
/// every node, for every vote, `format!` was a fifth of the state machine's apply.
pub fn next_link(previous: &[u8; 32], position: u64, fields: &LinkFields<'_>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    let mut number = itoa::Buffer::new();
    let line = |hasher: &mut Sha256, text: &[u8]| {
        hasher.update(text);
        hasher.update(b"\n");
    };
    line(&mut hasher, number.format(position).as_bytes());
    line(&mut hasher, fields.vote_id.as_bytes());
    line(&mut hasher, fields.voter_id.as_bytes());
    line(&mut hasher, fields.option_id.as_bytes());
    line(&mut hasher, number.format(fields.recorded_at_ms).as_bytes());
    line(&mut hasher, number.format(fields.log_index).as_bytes());
    line(&mut hasher, fields.replaces.unwrap_or("").as_bytes());
    for (key, value) in fields.attributes {
        hasher.update(key.as_bytes());
        hasher.update(b"=");
        line(&mut hasher, value.as_bytes());
    }
    hasher.finalize().into()
}

pub fn to_hex(bytes: &[u8; 32]) -> String {
    hex(bytes)
}

/// Lower-case hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    push_hex(&mut text, bytes);
    text
}

/// [`hex`], written onto the end of `text`.
pub fn push_hex(text: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
}

/// Parses 64 hex digits.
pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(attributes: &'a BTreeMap<String, String>, voter: &'a str) -> LinkFields<'a> {
        LinkFields {
            vote_id: "v7.0",
            voter_id: voter,
            option_id: "o1",
            attributes,
            recorded_at_ms: 1_700_000_000_000,
            log_index: 7,
            replaces: None,
        }
    }

    #[test]
    fn hex_round_trips_and_is_lower_case() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let text = to_hex(&bytes);
        assert_eq!(&text[..6], "052a4f");
        assert!(text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(from_hex(&text), Some(bytes));
        assert_eq!(hex(&[0x00, 0xff, 0x0a]), "00ff0a");
    }

    #[test]
    fn every_field_and_the_previous_link_change_the_hash() {
        let attributes = BTreeMap::from([("region".to_string(), "CA".to_string())]);
        let base = next_link(&genesis("p"), 0, &fields(&attributes, "alice"));
        assert_ne!(base, next_link(&genesis("q"), 0, &fields(&attributes, "alice")));
        assert_ne!(base, next_link(&genesis("p"), 1, &fields(&attributes, "alice")));
        assert_ne!(base, next_link(&genesis("p"), 0, &fields(&attributes, "bob")));
        assert_ne!(base, next_link(&genesis("p"), 0, &fields(&BTreeMap::new(), "alice")));
        let replacing = LinkFields { replaces: Some("v3.0"), ..fields(&attributes, "alice") };
        assert_ne!(base, next_link(&genesis("p"), 0, &replacing));
        assert_eq!(base, next_link(&genesis("p"), 0, &fields(&attributes, "alice")));
    }

    /// Known answers, computed from the format in the module's documentation by another
    /// implementation (Python's hashlib), so that the bytes hashed cannot drift: receipts
    /// already handed out, backups and audit streams depend on them.
    #[test]
    fn links_match_the_documented_format() {
        let attributes =
            BTreeMap::from([("age".to_string(), "30".to_string()), ("region".to_string(), "CA".to_string())]);
        let change = LinkFields {
            vote_id: "v0000000000000007000000000000abcd",
            voter_id: "alice",
            option_id: "o1",
            attributes: &attributes,
            recorded_at_ms: 1_700_000_000_123,
            log_index: 7,
            replaces: Some("v00000000000000050000000000001234"),
        };
        assert_eq!(
            to_hex(&next_link(&genesis("p"), 3, &change)),
            "e490e146a55bc2717c1829e7adf7b8f1c9bed364c1df63bd617b22448960021e"
        );
        let none = BTreeMap::new();
        let first = LinkFields {
            voter_id: "bob",
            option_id: "o2",
            attributes: &none,
            recorded_at_ms: -5,
            log_index: u64::MAX,
            replaces: None,
            ..change
        };
        assert_eq!(
            to_hex(&next_link(&genesis("p"), 0, &first)),
            "b21bd46dace683d06f3bdd55cdf28b430971de51439b5e33f13e38de526f031f"
        );
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        let hash = genesis("p");
        assert_eq!(from_hex(&to_hex(&hash)), Some(hash));
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(&"g".repeat(64)), None);
        assert_eq!(from_hex(&"é".repeat(32)), None);
    }
}
