//! Counting slow calls: how many took at least each of a few bounds, and the longest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Calls that took at least each of `N` bounds, and the longest of them all, counted from
/// any thread: the log's storage calls ([`crate::LogStats`]), the backend's executor steps.
#[derive(Debug)]
pub struct SlowCalls<const N: usize> {
    bounds_us: [u64; N],
    over: [AtomicU64; N],
    us_max: AtomicU64,
}

impl<const N: usize> SlowCalls<N> {
    /// Counts against `bounds_ms`, in milliseconds.
    pub fn new(bounds_ms: [u64; N]) -> Self {
        SlowCalls { bounds_us: bounds_ms.map(|ms| ms.saturating_mul(1_000)), over: [const { AtomicU64::new(0) }; N], us_max: AtomicU64::new(0) }
    }

    /// Runs `call` and counts how long it took: its outcome, and that time in microseconds.
    pub fn time<T>(&self, call: impl FnOnce() -> T) -> (T, u64) {
        let start = Instant::now();
        let outcome = call();
        let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.count(us);
        (outcome, us)
    }

    /// Counts a call of `us` microseconds, in every bound it reaches.
    pub fn count(&self, us: u64) {
        // Read first: a write on every call would move the line between the counting threads.
        if us > self.us_max.load(Ordering::Relaxed) {
            self.us_max.fetch_max(us, Ordering::Relaxed);
        }
        for (over, bound) in self.over.iter().zip(self.bounds_us) {
            if us >= bound {
                over.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The calls that reached each bound.
    pub fn counts(&self) -> [u64; N] {
        self.over.each_ref().map(|n| n.load(Ordering::Relaxed))
    }

    /// The longest call, in microseconds.
    pub fn us_max(&self) -> u64 {
        self.us_max.load(Ordering::Relaxed)
    }

    /// Whether a call of `us` microseconds reached the last bound.
    pub fn past_last(&self, us: u64) -> bool {
        self.bounds_us.last().is_some_and(|&bound| us >= bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call counts in every bound it reaches, and no other.
    #[test]
    fn a_call_counts_in_the_bounds_it_reaches() {
        let calls = SlowCalls::new([1, 10, 100]);
        for (us, expected) in [(999, [0, 0, 0]), (1_000, [1, 0, 0]), (9_999, [2, 0, 0]), (10_000, [3, 1, 0]), (99_999, [4, 2, 0]), (100_000, [5, 3, 1])] {
            calls.count(us);
            assert_eq!(calls.counts(), expected, "after a call of {us} us");
            assert_eq!(calls.us_max(), us, "the longest so far");
        }
        calls.count(5);
        assert_eq!(calls.us_max(), 100_000, "a shorter call leaves the longest");
    }
}
