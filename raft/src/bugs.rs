//! Deliberate bugs, for showing that the simulation's checker catches real ones.
//!
//! Compiled only with the `bug-injection` feature (which only `tally-sim-tests` enables),
//! and off unless a simulation turns them on. The switches are thread-local: a turmoil
//! simulation runs on one thread, so tests running side by side cannot see each other's.

use std::cell::Cell;

thread_local! {
    static ACK_BEFORE_COMMIT: Cell<bool> = const { Cell::new(false) };
    static SKIP_DEDUP: Cell<bool> = const { Cell::new(false) };
    static RESUME_LEADERSHIP: Cell<bool> = const { Cell::new(false) };
}

/// Which bugs are on, for this thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    /// The leader answers a vote as recorded as soon as it proposes it.
    pub ack_before_commit: bool,
    /// Apply records a second vote by the same voter instead of refusing it.
    pub skip_dedup: bool,
    /// A restarted node reads its vote back as saved, committed, so that a leader resumes
    /// its old term with a stale commit index (the bug behind sim seed 95059).
    pub resume_leadership: bool,
}

pub fn set(bugs: Bugs) {
    ACK_BEFORE_COMMIT.with(|b| b.set(bugs.ack_before_commit));
    SKIP_DEDUP.with(|b| b.set(bugs.skip_dedup));
    RESUME_LEADERSHIP.with(|b| b.set(bugs.resume_leadership));
}

pub fn ack_before_commit() -> bool {
    ACK_BEFORE_COMMIT.with(Cell::get)
}

pub fn skip_dedup() -> bool {
    SKIP_DEDUP.with(Cell::get)
}

pub fn resume_leadership() -> bool {
    RESUME_LEADERSHIP.with(Cell::get)
}
