//! Deliberate bugs, for showing that the simulation's checker catches real ones.
//!
//! Compiled only with the `bug-injection` feature (which only `tally-sim-tests` enables),
//! and off unless a simulation turns them on. The switches are thread-local: a turmoil
//! simulation runs on one thread, so tests running side by side cannot see each other's.

use std::cell::Cell;

thread_local! {
    static ACK_BEFORE_COMMIT: Cell<bool> = const { Cell::new(false) };
    static SKIP_DEDUP: Cell<bool> = const { Cell::new(false) };
}

/// Which bugs are on, for this thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    /// The leader answers a vote as recorded as soon as it proposes it.
    pub ack_before_commit: bool,
    /// Apply records a second vote by the same voter instead of refusing it.
    pub skip_dedup: bool,
}

pub fn set(bugs: Bugs) {
    ACK_BEFORE_COMMIT.with(|b| b.set(bugs.ack_before_commit));
    SKIP_DEDUP.with(|b| b.set(bugs.skip_dedup));
}

pub fn ack_before_commit() -> bool {
    ACK_BEFORE_COMMIT.with(Cell::get)
}

pub fn skip_dedup() -> bool {
    SKIP_DEDUP.with(Cell::get)
}
