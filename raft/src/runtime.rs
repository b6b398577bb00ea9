//! openraft's async runtime: tokio's, except for randomness.
//!
//! openraft draws election timeouts from `AsyncRuntime::thread_rng()`. In production that
//! is the OS-seeded thread RNG; a simulation calls [`seed_thread_rng`] first so that the
//! same seed gives the same elections. Everything else delegates to [`TokioRuntime`],
//! whose timers turmoil already controls.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use tracing::Instrument;

thread_local! {
    static SEEDED: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Makes every later `thread_rng()` on this thread draw from a generator seeded with
/// `seed`. Turmoil runs a whole simulation on one thread, so one call covers all hosts.
pub fn seed_thread_rng(seed: u64) {
    SEEDED.with(|rng| *rng.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
}

/// Draws from the seeded generator when there is one, else from the OS-seeded one.
#[derive(Debug, Default, Clone, Copy)]
pub struct TallyRng;

impl RngCore for TallyRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    fn next_u64(&mut self) -> u64 {
        SEEDED.with(|rng| match rng.borrow_mut().as_mut() {
            Some(seeded) => seeded.next_u64(),
            None => rand::thread_rng().next_u64(),
        })
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct TallyRuntime;

type Tokio = TokioRuntime;

impl AsyncRuntime for TallyRuntime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tokio as AsyncRuntime>::Sleep;
    type Instant = <Tokio as AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tokio as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = TallyRng;
    type OneshotSender<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiver<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotReceiver<T>;
    type OneshotReceiverError = <Tokio as AsyncRuntime>::OneshotReceiverError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        // openraft's state machine worker and tick task carry no span of their own: with
        // the spawner's (the node's, `node{node_id}`), apply's events say which node applied.
        Tokio::spawn(future.in_current_span())
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Tokio::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tokio::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        Tokio::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        TallyRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        Tokio::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_fixes_the_sequence() {
        seed_thread_rng(42);
        let first: Vec<u64> = (0..4).map(|_| TallyRng.next_u64()).collect();
        seed_thread_rng(42);
        let second: Vec<u64> = (0..4).map(|_| TallyRng.next_u64()).collect();
        assert_eq!(first, second);
        seed_thread_rng(43);
        assert_ne!(TallyRng.next_u64(), first[0]);
    }
}
