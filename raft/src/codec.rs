//! The one place that turns values into bytes and back.
//!
//! bincode 1.3.3 is finished software (RUSTSEC-2025-0141: its maintainers stopped
//! development and call 1.3.3 complete). It is used only here, and every decode carries a
//! size limit so that a hostile or corrupt frame cannot make us allocate without bound:
//! never more than the input's own length, since a valid encoding is never shorter than
//! what it decodes to (fixed-width integers, length-prefixed sequences).

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
#[error("codec: {0}")]
pub struct CodecError(#[from] bincode::Error);

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().with_big_endian()
}

/// Vote records, of which a node stores millions: lengths and small numbers in as few
/// bytes as they need (bincode's varint), about 40 bytes a vote less than fixint.
fn compact() -> impl Options {
    bincode::DefaultOptions::new().with_varint_encoding().with_big_endian()
}

/// Encodes a vote record compactly ([`compact`]); [`decode_compact`] reads it.
pub fn encode_compact<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(compact().serialize(value)?)
}

/// [`encode_compact`], appended to `out`: one buffer for many values, with no pass to size
/// each one first.
pub fn encode_compact_into<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), CodecError> {
    Ok(compact().serialize_into(out, value)?)
}

/// Decodes what [`encode_compact`] made, refusing anything that claims more bytes than
/// `bytes` holds (every element still takes at least one byte).
pub fn decode_compact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(compact().with_limit(bytes.len() as u64).deserialize(bytes)?)
}

/// Encodes without a limit: what we encode is ours (a snapshot may be large; its size is
/// bounded by the state, not by an attacker).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(options().serialize(value)?)
}

/// Decodes, refusing anything that claims more bytes than `bytes` holds.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_limited(bytes, bytes.len() as u64)
}

/// Decodes, refusing anything that would need more than `limit` bytes.
pub fn decode_limited<T: DeserializeOwned>(bytes: &[u8], limit: u64) -> Result<T, CodecError> {
    Ok(options().with_limit(limit).deserialize(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let value = (7u64, String::from("rust"), vec![1u8, 2, 3]);
        let bytes = encode(&value).unwrap();
        assert_eq!(decode::<(u64, String, Vec<u8>)>(&bytes).unwrap(), value);
    }

    #[test]
    fn refuses_a_length_prefix_beyond_the_limit() {
        // A Vec<u8> claiming 2^40 elements must fail fast, not allocate.
        let mut bytes = (1u64 << 40).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        assert!(decode_limited::<Vec<u8>>(&bytes, 1024).is_err());
    }

    #[test]
    fn refuses_a_length_prefix_beyond_the_input() {
        let mut bytes = (1u64 << 40).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        assert!(decode::<Vec<u8>>(&bytes).is_err());
    }

    #[test]
    fn encodes_values_of_any_size() {
        let big = vec![7u8; 3 << 20];
        assert_eq!(decode::<Vec<u8>>(&encode(&big).unwrap()).unwrap(), big);
    }

    #[test]
    fn compact_round_trips_in_fewer_bytes_and_refuses_a_length_beyond_the_input() {
        let value = (7u64, String::from("rust"), vec![1u8, 2, 3]);
        let bytes = encode_compact(&value).unwrap();
        assert_eq!(decode_compact::<(u64, String, Vec<u8>)>(&bytes).unwrap(), value);
        let mut appended = vec![9u8];
        encode_compact_into(&mut appended, &value).unwrap();
        assert_eq!((appended[0], &appended[1..]), (9, &bytes[..]));
        assert!(bytes.len() < encode(&value).unwrap().len());
        // A length prefix of 2^40 (varint: 253, then eight bytes) with nothing behind it.
        let mut claim = vec![253u8];
        claim.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(decode_compact::<Vec<u8>>(&claim).is_err());
    }

    #[test]
    fn refuses_garbage() {
        assert!(decode::<(u64, String)>(&[0xff; 3]).is_err());
    }
}
