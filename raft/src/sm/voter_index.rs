//! The voter index: 64-bit voter fingerprints → where each voter's current version is,
//! in about 8 bytes a voter.
//!
//! A `HashMap` of (fingerprint, location) pairs costs 17 bytes a bucket and runs between
//! half and seven eighths full, so 20 to 40 bytes a voter and twice that while it grows:
//! at 10M voters, up to 430 MB in one poll, most of a node's memory budget. Here the bulk
//! of the entries are packed `u64`s, `tag << 40 | location`, in 256 shards (by the
//! fingerprint's top 8 bits) sorted by the next 24 bits (the tag), and searched by
//! binary search; the newest entries wait in a small `HashMap` (`fresh`) and are merged
//! into their shards in place once it holds a sixteenth of the index. A shard is a
//! 256th of the index, so a merge never holds a second copy of it.
//!
//! The shards keep 32 bits of each fingerprint, `fresh` all 64: a lookup gets every
//! location whose stored bits match, which may include another voter's (one time in
//! 2^32 per other voter in the shard's tag range). That is what an index may do here: the
//! caller reads the record and compares the voter id, and the index never decides.
//! Locations that do not pack into 40 bits (a log index past 2^31, a slot past 511) stay
//! whole in `extra`, as do the second and later voters of one fingerprint in `fresh`.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;

use super::records::{loc_index, loc_slot, Fingerprinted, Loc};

const SHARD_BITS: u32 = 8;
const TAG_BITS: u32 = 24;
const LOC_BITS: u32 = 40;
const PACKED_SLOT_BITS: u32 = 9;
const LOC_MASK: u64 = (1 << LOC_BITS) - 1;
/// `fresh` is merged into the shards at this size, or at a sixteenth of the index.
const FRESH_MIN: usize = 65_536;

#[derive(Clone, Default)]
pub struct VoterIndex {
    fresh: HashMap<u64, Loc, BuildHasherDefault<Fingerprinted>>,
    extra: BTreeMap<u64, Vec<Loc>>,
    shards: Vec<Vec<u64>>,
    len: u64,
}

fn shard_of(fingerprint: u64) -> usize {
    (fingerprint >> (64 - SHARD_BITS)) as usize
}

fn tag_of(fingerprint: u64) -> u64 {
    (fingerprint >> (64 - SHARD_BITS - TAG_BITS)) & ((1 << TAG_BITS) - 1)
}

/// `loc` in 40 bits (31 of log index, 9 of slot), if it fits.
fn pack(loc: Loc) -> Option<u64> {
    let (index, slot) = (loc_index(loc), loc_slot(loc) as u64);
    (index < 1 << (LOC_BITS - PACKED_SLOT_BITS) && slot < 1 << PACKED_SLOT_BITS)
        .then_some((index << PACKED_SLOT_BITS) | slot)
}

fn unpack(packed: u64) -> Loc {
    super::records::loc(packed >> PACKED_SLOT_BITS, (packed & ((1 << PACKED_SLOT_BITS) - 1)) as usize)
}

impl VoterIndex {
    /// Entries: voters, each counted once.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held, roughly.
    pub fn bytes(&self) -> usize {
        self.fresh.capacity() * 17 + self.shards.iter().map(|s| s.capacity() * 8).sum::<usize>()
    }

    /// The range of `shard` whose tag is `tag`. Tags are uniform (they are bits of a keyed
    /// hash), so the search starts where the tag's share of the shard says and gallops
    /// from there: a few cache lines, where a binary search over a shard of a large index
    /// missed the cache at nearly every one of its steps (38% of an install's check).
    fn tagged(shard: &[u64], tag: u64) -> std::ops::Range<usize> {
        let below = |e: &u64| e >> LOC_BITS < tag;
        let n = shard.len();
        let guess = ((u128::from(tag) * n as u128) >> TAG_BITS) as usize;
        let (mut lo, mut hi) = (guess.min(n), guess.min(n));
        let mut step = 1;
        if lo < n && below(&shard[lo]) {
            // The start is after `lo`: widen to the right until an entry is not below.
            while hi < n && below(&shard[hi]) {
                lo = hi;
                hi = (hi + step).min(n);
                step *= 2;
            }
        } else {
            // The start is at or before `hi`: widen to the left until an entry is below.
            while lo > 0 && !below(&shard[lo - 1]) {
                hi = lo;
                lo = lo.saturating_sub(step);
                step *= 2;
            }
        }
        let start = lo + shard[lo..hi].partition_point(below);
        let end = start + shard[start..].iter().take_while(|e| *e >> LOC_BITS == tag).count();
        start..end
    }

    /// Every location that may be the current version of the voter with `fingerprint`.
    pub fn candidates(&self, fingerprint: u64) -> impl Iterator<Item = Loc> + '_ {
        let shard: &[u64] = self.shards.get(shard_of(fingerprint)).map_or(&[], Vec::as_slice);
        let packed = &shard[Self::tagged(shard, tag_of(fingerprint))];
        self.fresh
            .get(&fingerprint)
            .copied()
            .into_iter()
            .chain(self.extra.get(&fingerprint).into_iter().flatten().copied())
            .chain(packed.iter().map(|e| unpack(e & LOC_MASK)))
    }

    /// A new voter's first version.
    pub fn insert(&mut self, fingerprint: u64, loc: Loc) {
        self.len += 1;
        match self.fresh.entry(fingerprint) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(loc);
            }
            std::collections::hash_map::Entry::Occupied(_) => self.extra.entry(fingerprint).or_default().push(loc),
        }
        if self.fresh.len() >= FRESH_MIN.max((self.len / 16) as usize) {
            self.merge_fresh();
        }
    }

    /// Makes `new` the voter's current version in place of `old`; false if `old` is not
    /// indexed under `fingerprint`.
    pub fn replace(&mut self, fingerprint: u64, old: Loc, new: Loc) -> bool {
        if let Some(at) = self.fresh.get_mut(&fingerprint).filter(|at| **at == old) {
            *at = new;
            return true;
        }
        if let Some(at) = self.extra.get_mut(&fingerprint).and_then(|locs| locs.iter_mut().find(|at| **at == old)) {
            *at = new;
            return true;
        }
        let Some(shard) = self.shards.get_mut(shard_of(fingerprint)) else { return false };
        let range = Self::tagged(shard, tag_of(fingerprint));
        let Some(at) = shard[range].iter_mut().find(|e| unpack(**e & LOC_MASK) == old) else { return false };
        match pack(new) {
            Some(packed) => *at = (*at & !LOC_MASK) | packed,
            None => {
                // Out of the shard, whole into `extra`: the shard stays sorted by tag.
                let gone = *at;
                shard.retain(|e| *e != gone);
                self.extra.entry(fingerprint).or_default().push(new);
            }
        }
        true
    }

    /// Moves `fresh` into the shards: each shard gets its part sorted, merged from the
    /// back into room reserved at its end.
    fn merge_fresh(&mut self) {
        if self.shards.is_empty() {
            self.shards = vec![Vec::new(); 1 << SHARD_BITS];
        }
        let mut parts: Vec<Vec<u64>> = vec![Vec::new(); 1 << SHARD_BITS];
        for (fingerprint, loc) in self.fresh.drain() {
            match pack(loc) {
                Some(packed) => parts[shard_of(fingerprint)].push((tag_of(fingerprint) << LOC_BITS) | packed),
                None => self.extra.entry(fingerprint).or_default().push(loc),
            }
        }
        for (shard, mut part) in self.shards.iter_mut().zip(parts) {
            part.sort_unstable();
            merge_into(shard, &part);
        }
    }
}

/// Merges sorted `part` into sorted `shard` in place (by tag; ties in any order).
fn merge_into(shard: &mut Vec<u64>, part: &[u64]) {
    if part.is_empty() {
        return;
    }
    let old = shard.len();
    shard.reserve_exact(part.len());
    shard.resize(old + part.len(), 0);
    let (mut i, mut j, mut k) = (old, part.len(), shard.len());
    while j > 0 {
        k -= 1;
        if i > 0 && shard[i - 1] >> LOC_BITS > part[j - 1] >> LOC_BITS {
            shard[k] = shard[i - 1];
            i -= 1;
        } else {
            shard[k] = part[j - 1];
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::sm::records::loc;

    /// The index against a plain multimap, through inserts, replacements and merges.
    fn run(ops: &[(u8, u16, bool)]) {
        let mut index = VoterIndex::default();
        let mut model: BTreeMap<u64, Vec<Loc>> = BTreeMap::new();
        let mut next = 1u64;
        for &(voter, salt, change) in ops {
            // Few distinct fingerprints, some sharing shard and tag, some whole.
            let fingerprint = (u64::from(voter % 7) << 56) | (u64::from(voter % 3) << 32) | u64::from(voter);
            let fingerprint = fingerprint ^ (u64::from(salt % 2) << 60);
            let fresh = if next.is_multiple_of(5) { loc(1 << 32, 0) + next } else { loc(next, (salt % 600) as usize) };
            next += 1;
            let current = model.entry(fingerprint).or_default();
            if change && !current.is_empty() {
                let old = current[0];
                current[0] = fresh;
                assert!(index.replace(fingerprint, old, fresh));
            } else {
                current.push(fresh);
                index.insert(fingerprint, fresh);
            }
            if next.is_multiple_of(97) {
                index.merge_fresh();
            }
        }
        for (fingerprint, locs) in &model {
            let found: Vec<Loc> = index.candidates(*fingerprint).collect();
            for loc in locs {
                assert!(found.contains(loc), "{fingerprint:x}: {loc:x} missing from {found:x?}");
            }
        }
        assert_eq!(index.len(), model.values().map(|l| l.len() as u64).sum::<u64>());
        for shard in &index.shards {
            assert!(shard.windows(2).all(|w| w[0] >> LOC_BITS <= w[1] >> LOC_BITS), "a shard out of order");
        }
    }

    proptest! {
        #[test]
        fn every_indexed_location_is_a_candidate(ops in proptest::collection::vec((any::<u8>(), any::<u16>(), any::<bool>()), 1..400)) {
            run(&ops);
        }
    }

    #[test]
    fn a_large_index_takes_about_eight_bytes_a_voter() {
        let mut index = VoterIndex::default();
        let keys = std::collections::hash_map::RandomState::new();
        for n in 0..1_000_000u64 {
            index.insert(std::hash::BuildHasher::hash_one(&keys, n), loc(n / 500 + 1, (n % 500) as usize));
        }
        let fingerprint = std::hash::BuildHasher::hash_one(&keys, 123_456u64);
        assert!(index.candidates(fingerprint).any(|at| at == loc(123_456 / 500 + 1, 123_456 % 500)));
        assert!(index.bytes() < 12 * 1_000_000, "{} bytes", index.bytes());
    }
}
