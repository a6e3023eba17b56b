//! The last N calls, in a lock-free ring.
//!
//! Each call claims the next slot with one `fetch_add`, swaps its outcome in,
//! and adjusts the failure and slow counts by the difference to the outcome it
//! replaced. A success replacing a success touches no shared counter at all.

#[cfg(palisade_loom)]
use loom::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
#[cfg(not(palisade_loom))]
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};

use super::{CachePadded, Tally};

const RECORDED: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

/// Failures in the low 32 bits and slow calls in the high 32, as signed counts:
/// two racing writers may briefly take a count below zero, and a signed
/// encoding keeps the other field exact through that.
const SLOW_UNIT: i64 = 1 << 32;

#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    /// Written by every call: on a cache line of its own.
    head: CachePadded<AtomicU64>,
    counts: CachePadded<AtomicI64>,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        Self {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            head: CachePadded(AtomicU64::new(0)),
            counts: CachePadded(AtomicI64::new(0)),
        }
    }

    /// Records one outcome; returns the tally when it could open the breaker:
    /// a failure, a slow call, or the call that brings the window to the
    /// minimum. A fast success after that only lowers the rates, so the hot
    /// path skips the counts entirely.
    #[inline]
    pub(crate) fn record(&self, failure: bool, slow: bool, minimum_calls: u64) -> Option<Tally> {
        let size = self.slots.len() as u64;
        let index = self.head.fetch_add(1, Ordering::AcqRel);
        let new = RECORDED | if failure { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        let old = self.slots[(index % size) as usize].swap(new, Ordering::AcqRel);
        let delta = weight(new) - weight(old);
        let judge = failure || slow || index + 1 == minimum_calls;
        let counts = if delta != 0 {
            self.counts.fetch_add(delta, Ordering::AcqRel) + delta
        } else if judge {
            self.counts.load(Ordering::Acquire)
        } else {
            return None;
        };
        judge.then(|| decode((index + 1).min(size), counts))
    }

    pub(crate) fn tally(&self) -> Tally {
        let size = self.slots.len() as u64;
        let calls = self.head.load(Ordering::Acquire).min(size);
        decode(calls, self.counts.load(Ordering::Acquire))
    }

    /// Empties the window. Called under the breaker's transition lock when it
    /// enters the closed state; no current-generation writer is active then.
    pub(crate) fn reset(&self) {
        for slot in &*self.slots {
            slot.store(0, Ordering::Relaxed);
        }
        self.counts.store(0, Ordering::Relaxed);
        self.head.store(0, Ordering::Release);
    }
}

#[inline]
fn weight(slot: u8) -> i64 {
    i64::from(slot & FAILED != 0) + if slot & SLOW != 0 { SLOW_UNIT } else { 0 }
}

#[inline]
fn decode(calls: u64, counts: i64) -> Tally {
    // The low field is a signed 32-bit count; take it out with its sign, then the rest is slow calls.
    let failures = i64::from(counts as i32);
    let slow = (counts - failures) >> 32;
    Tally {
        calls,
        failures: failures.clamp(0, calls as i64) as u64,
        slow: slow.clamp(0, calls as i64) as u64,
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_n_calls() {
        let w = CountWindow::new(3);
        let tally = |calls, failures, slow| {
            Some(Tally {
                calls,
                failures,
                slow,
            })
        };
        assert_eq!(w.record(true, false, 3), tally(1, 1, 0));
        assert_eq!(w.record(true, true, 3), tally(2, 2, 1));
        // a fast success is judged when it brings the window to the minimum
        assert_eq!(w.record(false, false, 3), tally(3, 2, 1));
        // the first failure falls out
        assert_eq!(w.record(false, true, 3), tally(3, 1, 2));
        // the slow failure falls out; a fast success past the minimum is not judged
        assert_eq!(w.record(false, false, 3), None);
        assert_eq!(
            w.tally(),
            Tally {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
        w.reset();
        assert_eq!(w.tally(), Tally::default());
        assert_eq!(w.record(true, false, 3), tally(1, 1, 0));
    }

    #[test]
    fn decode_survives_a_transient_negative_count() {
        let counts = 3 * SLOW_UNIT - 1;
        assert_eq!(
            decode(10, counts),
            Tally {
                calls: 10,
                failures: 0,
                slow: 3
            }
        );
    }

    #[test]
    fn concurrent_writers_lose_no_count() {
        let w = std::sync::Arc::new(CountWindow::new(1000));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = std::sync::Arc::clone(&w);
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        w.record((i + t) % 4 == 0, i % 10 == 0, 1000);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer thread");
        }
        // Recount the slots: the running counts must match them exactly.
        let mut failures = 0;
        let mut slow = 0;
        for slot in &*w.slots {
            let s = slot.load(Ordering::SeqCst);
            failures += u64::from(s & FAILED != 0);
            slow += u64::from(s & SLOW != 0);
        }
        let tally = w.tally();
        assert_eq!(tally.calls, 1000);
        assert_eq!((tally.failures, tally.slow), (failures, slow));
    }
}

/// Every interleaving of two writers (loom): the running counts always decode
/// within bounds, and once both are done they match a recount of the slots.
/// Run with `RUSTFLAGS="--cfg palisade_loom" cargo test -p palisade-circuit-breaker --lib --release loom`.
#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn loom_two_writers_keep_exact_counts() {
        loom::model(|| {
            let window = Arc::new(CountWindow::new(2));
            // One call already in the window, so the writers also replace outcomes.
            window.record(true, true, 2);
            let writers: Vec<_> = [(false, true), (true, false)]
                .into_iter()
                .map(|(failure, slow)| {
                    let window = Arc::clone(&window);
                    thread::spawn(move || {
                        if let Some(tally) = window.record(failure, slow, 2) {
                            assert!(tally.failures <= tally.calls && tally.slow <= tally.calls);
                        }
                        window.record(!failure, false, 2);
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            let (mut failures, mut slow) = (0, 0);
            for slot in &*window.slots {
                let s = slot.load(Ordering::SeqCst);
                failures += u64::from(s & FAILED != 0);
                slow += u64::from(s & SLOW != 0);
            }
            let tally = window.tally();
            assert_eq!(tally.calls, 2);
            assert_eq!((tally.failures, tally.slow), (failures, slow));
        });
    }
}
