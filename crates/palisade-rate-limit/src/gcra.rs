//! The generic cell rate algorithm (GCRA) on one atomic word.
//!
//! ```text
//!   T   emission interval = period / count         (ns)
//!   τ   tolerance         = burst × T              (ns)
//!   TAT theoretical arrival time: when the limit would be whole again
//!
//!   request of n at `now`:   base = max(TAT, now)
//!                            new  = base + n·T
//!                            due  = new − τ        (the earliest time it conforms)
//!   admitted  if due ≤ now            → TAT := new
//!   reserved  if due ≤ now + max_wait → TAT := new, the caller waits until `due`
//!   refused   otherwise               → TAT unchanged, retry after due − now
//! ```
//!
//! A bucket is full when `TAT ≤ now`; it then carries no information (any TAT
//! at or before now gives the same decisions), which is what lets a keyed
//! limiter drop it.
//!
//! **Concurrency.** The TAT is the whole state: one `AtomicU64`, read, computed
//! from and replaced by one compare-and-swap, retried with the value it saw if
//! another thread got there first. Every admission is therefore one step of a
//! single sequential GCRA run, in the order of the successful swaps, and with
//! time frozen exactly `burst` single requests are admitted whatever the
//! number of threads (tested with many threads, and under loom).
//!
//! **Waiting is fair.** A waiting request reserves its place: its swap moves
//! the TAT on as an admission does, so every request after it, waiting or
//! not, finds the limit taken until the reserved slot has passed. Waiters are
//! served in the order of their swaps, first come, first served. A waiter
//! that gives up ([`give_back`]) returns its slot only while nobody has
//! reserved after it; otherwise the slot is lost, and the limiter admits less
//! than it could, never more.
//!
//! **Quota changes.** The quota is read beside the TAT from a [`QuotaCell`]
//! (a sequence lock over three words), so a check never mixes the interval
//! of one quota with the burst of another. The TAT is kept across a change:
//! time already owed stays owed, then the new rate applies.

// The limiters' atomic words come from core's `sync`, so that under `--cfg
// palisade_loom` every one of them is loom's.
pub(crate) use palisade_core::sync::AtomicU64;
use palisade_core::sync::fence;
use std::sync::atomic::Ordering;

use crate::quota::Params;

/// What a swap did: admitted now, or reserved a slot that is due later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    /// The TAT this request left.
    pub(crate) tat: u64,
    /// Nanoseconds until the request conforms: 0 for an admission.
    pub(crate) wait: u64,
}

/// A refusal: the TAT found, and nanoseconds until the request would conform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) tat: u64,
    pub(crate) retry_after: u64,
}

/// One GCRA step for `n` requests (`1 ≤ n ≤ burst`) at `now`, admitting it
/// if it conforms within `max_wait` nanoseconds (0: only now).
#[allow(clippy::inline_always)] // fewer instructions per check, counted by callgrind
#[inline(always)]
pub(crate) fn take(
    tat: &AtomicU64,
    now: u64,
    params: Params,
    n: u32,
    max_wait: u64,
) -> Result<Taken, Refused> {
    let increment = params.emission * u64::from(n);
    let tolerance = params.tolerance();
    let mut current = tat.load(Ordering::Acquire);
    loop {
        let new = current.max(now).saturating_add(increment);
        // Saturating: near the clock's origin `new` may be below τ (due at 0).
        let due = new.saturating_sub(tolerance);
        if due > now.saturating_add(max_wait) {
            return Err(Refused {
                tat: current,
                retry_after: due - now,
            });
        }
        match tat.compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                return Ok(Taken {
                    tat: new,
                    wait: due.saturating_sub(now),
                });
            }
            Err(seen) => current = seen,
        }
    }
}

/// A waiter that gave up returns its slot: `n` requests whose swap left `tat`.
/// Only while the TAT is still exactly that (nobody reserved after it; and no
/// later request can have found the bucket full, since that would have moved
/// the TAT past it for good). Returns whether the slot was returned.
pub(crate) fn give_back(tat: &AtomicU64, reserved: u64, params: Params, n: u32) -> bool {
    let increment = params.emission * u64::from(n);
    tat.compare_exchange(
        reserved,
        reserved - increment,
        Ordering::AcqRel,
        Ordering::Acquire,
    )
    .is_ok()
}

/// The quota of a limiter, changeable at run time: a sequence lock over the
/// emission interval and the burst. Readers retry while a change is under way
/// (it is three stores), so they never see half of one.
#[derive(Debug)]
pub(crate) struct QuotaCell {
    /// Even when stable, odd while a writer is storing.
    seq: AtomicU64,
    emission: AtomicU64,
    burst: AtomicU64,
}

impl QuotaCell {
    pub(crate) fn new(params: Params) -> Self {
        Self {
            seq: AtomicU64::new(0),
            emission: AtomicU64::new(params.emission),
            burst: AtomicU64::new(u64::from(params.burst)),
        }
    }

    #[inline]
    pub(crate) fn load(&self) -> Params {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            let emission = self.emission.load(Ordering::Relaxed);
            let burst = self.burst.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            let after = self.seq.load(Ordering::Relaxed);
            if before == after && before & 1 == 0 {
                return Params {
                    emission,
                    burst: burst as u32,
                };
            }
            palisade_core::sync::spin_loop();
        }
    }

    /// Stores new params. Writers must be serialised by the caller (a mutex).
    pub(crate) fn store(&self, params: Params) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.emission.store(params.emission, Ordering::Relaxed);
        self.burst.store(u64::from(params.burst), Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    const P: Params = Params {
        emission: 10,
        burst: 3,
    };

    #[test]
    fn a_burst_then_one_per_interval() {
        let tat = AtomicU64::new(0);
        for i in 1..=3 {
            assert_eq!(
                take(&tat, 100, P, 1, 0),
                Ok(Taken {
                    tat: 100 + 10 * i,
                    wait: 0
                })
            );
        }
        assert_eq!(
            take(&tat, 100, P, 1, 0),
            Err(Refused {
                tat: 130,
                retry_after: 10
            })
        );
        assert_eq!(take(&tat, 110, P, 1, 0), Ok(Taken { tat: 140, wait: 0 }));
        // n at once: 3 needs the whole burst back, due at 140 + 30 − 30.
        assert_eq!(
            take(&tat, 110, P, 3, 0),
            Err(Refused {
                tat: 140,
                retry_after: 30
            })
        );
        assert_eq!(take(&tat, 140, P, 3, 0), Ok(Taken { tat: 170, wait: 0 }));
    }

    #[test]
    fn a_reservation_moves_the_tat_and_says_how_long_to_wait() {
        let tat = AtomicU64::new(0);
        assert!(take(&tat, 0, P, 3, 0).is_ok());
        assert_eq!(
            take(&tat, 0, P, 1, 5),
            Err(Refused {
                tat: 30,
                retry_after: 10
            })
        );
        assert_eq!(take(&tat, 0, P, 1, 10), Ok(Taken { tat: 40, wait: 10 }));
        assert_eq!(take(&tat, 0, P, 1, 25), Ok(Taken { tat: 50, wait: 20 }));
        // The first waiter cannot give back: someone reserved after it.
        assert!(!give_back(&tat, 40, P, 1));
        assert!(give_back(&tat, 50, P, 1));
        assert_eq!(tat.load(Ordering::SeqCst), 40);
    }

    #[test]
    fn the_quota_cell_reads_what_was_stored() {
        let cell = QuotaCell::new(P);
        assert_eq!(cell.load(), P);
        let q = Params {
            emission: 7,
            burst: 9,
        };
        cell.store(q);
        assert_eq!(cell.load(), q);
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Three threads take from a burst of 2 with time frozen: exactly two are
    /// admitted, and the TAT is the sum of exactly two increments.
    #[test]
    fn loom_frozen_time_admits_exactly_the_burst() {
        loom::model(|| {
            let tat = Arc::new(AtomicU64::new(0));
            let p = Params {
                emission: 10,
                burst: 2,
            };
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let tat = Arc::clone(&tat);
                    loom::thread::spawn(move || take(&tat, 5, p, 1, 0).is_ok())
                })
                .collect();
            let admitted = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|ok| *ok)
                .count();
            assert_eq!(admitted, 2);
            assert_eq!(tat.load(Ordering::SeqCst), 25);
        });
    }

    /// A reader never sees the interval of one quota with the burst of another.
    #[test]
    fn loom_quota_changes_are_never_torn() {
        loom::model(|| {
            let a = Params {
                emission: 10,
                burst: 2,
            };
            let b = Params {
                emission: 30,
                burst: 7,
            };
            let cell = Arc::new(QuotaCell::new(a));
            let writer = {
                let cell = Arc::clone(&cell);
                loom::thread::spawn(move || cell.store(b))
            };
            let seen = cell.load();
            assert!(seen == a || seen == b, "{seen:?}");
            writer.join().unwrap();
            assert_eq!(cell.load(), b);
        });
    }
}
