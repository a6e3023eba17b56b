//! The last N calls, in a lock-free ring.
//!
//! Each call claims the next slot with one `fetch_add`, swaps its outcome in,
//! and adjusts the failure and slow counts by the difference to the outcome it
//! replaced. A success replacing a success touches no shared counter at all.

#[cfg(palisade_loom)]
use loom::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
#[cfg(not(palisade_loom))]
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};

use super::Tally;

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
    head: AtomicU64,
    counts: AtomicI64,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        Self {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            head: AtomicU64::new(0),
            counts: AtomicI64::new(0),
        }
    }

    #[inline]
    pub(crate) fn record(&self, failure: bool, slow: bool) -> Tally {
        let size = self.slots.len() as u64;
        let index = self.head.fetch_add(1, Ordering::AcqRel);
        let new = RECORDED | if failure { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        let old = self.slots[(index % size) as usize].swap(new, Ordering::AcqRel);
        let delta = weight(new) - weight(old);
        let counts = if delta == 0 {
            self.counts.load(Ordering::Acquire)
        } else {
            self.counts.fetch_add(delta, Ordering::AcqRel) + delta
        };
        decode((index + 1).min(size), counts)
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
        assert_eq!(
            w.record(true, false),
            Tally {
                calls: 1,
                failures: 1,
                slow: 0
            }
        );
        assert_eq!(
            w.record(true, true),
            Tally {
                calls: 2,
                failures: 2,
                slow: 1
            }
        );
        assert_eq!(
            w.record(false, false),
            Tally {
                calls: 3,
                failures: 2,
                slow: 1
            }
        );
        // the first failure falls out
        assert_eq!(
            w.record(false, true),
            Tally {
                calls: 3,
                failures: 1,
                slow: 2
            }
        );
        // the slow failure falls out
        assert_eq!(
            w.record(false, false),
            Tally {
                calls: 3,
                failures: 0,
                slow: 1
            }
        );
        w.reset();
        assert_eq!(w.tally(), Tally::default());
        assert_eq!(
            w.record(true, false),
            Tally {
                calls: 1,
                failures: 1,
                slow: 0
            }
        );
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
                        w.record((i + t) % 4 == 0, i % 10 == 0);
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
            window.record(true, true);
            let writers: Vec<_> = [(false, true), (true, false)]
                .into_iter()
                .map(|(failure, slow)| {
                    let window = Arc::clone(&window);
                    thread::spawn(move || {
                        let tally = window.record(failure, slow);
                        assert!(tally.failures <= tally.calls && tally.slow <= tally.calls);
                        window.record(!failure, false);
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
