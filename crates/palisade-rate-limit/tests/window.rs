//! The window counters against a model that keeps every admitted request and
//! recounts the windows from that log, with the time to come back found by
//! search rather than by formula; and exact counts under contention.

use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_rate_limit::{Clock, EXHAUSTED, Error, ManualClock, WindowKind, WindowLimiter};
use proptest::prelude::*;

struct Model {
    sliding: bool,
    limit: u64,
    w: u64,
    log: Vec<(u64, u64)>,
}

impl Model {
    fn counts(&self, t: u64) -> (u64, u64) {
        let k = t / self.w;
        let in_window = |j: u64| {
            self.log
                .iter()
                .filter(|(at, _)| at / self.w == j)
                .map(|(_, n)| n)
                .sum::<u64>()
        };
        (if k == 0 { 0 } else { in_window(k - 1) }, in_window(k))
    }

    fn fits(&self, t: u64, n: u64) -> bool {
        let (prev, curr) = self.counts(t);
        if self.sliding {
            let e = t % self.w;
            u128::from(prev) * u128::from(self.w - e) + u128::from(curr + n) * u128::from(self.w)
                <= u128::from(self.limit) * u128::from(self.w)
        } else {
            curr + n <= self.limit
        }
    }

    fn remaining(&self, t: u64) -> u64 {
        (0..=self.limit)
            .rev()
            .find(|r| self.fits(t, *r))
            .unwrap_or(0)
    }

    /// The least wait after which `n` fits, with nothing else admitted.
    fn retry_after(&self, t: u64, n: u64) -> u64 {
        let (mut lo, mut hi) = (0, 3 * self.w);
        assert!(self.fits(t + hi, n));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.fits(t + mid, n) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn window_counters_answer_as_the_log_model(
        sliding in any::<bool>(),
        limit in 1u32..8,
        w in 10u64..1_000,
        ops in proptest::collection::vec((prop_oneof![Just(0u64), 0u64..300, 0u64..3_000], 0u32..4), 1..80),
    ) {
        let clock = ManualClock::new();
        let builder = WindowLimiter::builder().clock(clock.shared());
        let limiter = if sliding {
            builder.sliding(limit, Duration::from_nanos(w))
        } else {
            builder.fixed(limit, Duration::from_nanos(w))
        }
        .build()
        .unwrap();
        let mut model = Model { sliding, limit: u64::from(limit), w, log: Vec::new() };
        for (advance, n) in ops {
            clock.advance(Duration::from_nanos(advance));
            let t = clock.now_nanos();
            let got = limiter.check_n(n);
            if n > limit {
                prop_assert_eq!(got.unwrap_err(), Error::InsufficientCapacity { requested: n, burst: limit });
                continue;
            }
            if model.fits(t, u64::from(n)) {
                model.log.push((t, u64::from(n)));
                let d = got.map_err(|e| TestCaseError::fail(format!("refused at {t}: {e}")))?;
                prop_assert_eq!(u64::from(d.remaining()), model.remaining(t));
            } else {
                let expected = model.retry_after(t, u64::from(n));
                match got {
                    Err(Error::Denied(d)) => {
                        prop_assert_eq!(d.rejected().reason(), EXHAUSTED);
                        prop_assert_eq!(d.retry_after(), Duration::from_nanos(expected), "at {}", t);
                        prop_assert_eq!(u64::from(d.decision().remaining()), model.remaining(t));
                    }
                    other => prop_assert!(false, "admitted {n} at {t}: {other:?}"),
                }
            }
        }
    }
}

#[test]
fn a_fixed_window_restarts_at_its_boundary_and_a_sliding_one_does_not() {
    let s = Duration::from_secs(1);
    for (kind, after_boundary) in [(WindowKind::Fixed, 10), (WindowKind::Sliding, 1)] {
        let clock = ManualClock::new();
        let b = WindowLimiter::builder().clock(clock.shared());
        let l = match kind {
            WindowKind::Fixed => b.fixed(10, 10 * s),
            _ => b.sliding(10, 10 * s),
        }
        .build()
        .unwrap();
        clock.advance(9 * s);
        assert_eq!(l.check_n(10).unwrap().remaining(), 0);
        clock.advance(s); // the next window: a fixed one is empty again
        let mut admitted = 0;
        while l.check().is_ok() {
            admitted += 1;
        }
        // Sliding: the last window's 10 still count in full at the boundary,
        // leaving 0; a tenth of the window later, 9 of them count, leaving 1.
        let expected = if kind == WindowKind::Fixed {
            after_boundary
        } else {
            0
        };
        assert_eq!(admitted, expected, "{kind:?}");
        if kind == WindowKind::Sliding {
            clock.advance(s);
            assert_eq!(l.snapshot().remaining(), after_boundary);
        }
    }
}

#[test]
fn with_time_frozen_many_threads_admit_exactly_the_limit() {
    for sliding in [false, true] {
        let clock = ManualClock::new();
        let b = WindowLimiter::builder().clock(clock.shared());
        let l = if sliding {
            b.sliding(500, Duration::from_secs(1))
        } else {
            b.fixed(500, Duration::from_secs(1))
        }
        .build()
        .unwrap();
        let admitted = AtomicU64::new(0);
        let barrier = Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..1_000 {
                        if l.check().is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 500);
    }
}

#[test]
fn bad_windows_name_the_method() {
    let err = WindowLimiter::builder().build().unwrap_err();
    assert_eq!(err.field(), "fixed");
    let err = WindowLimiter::builder()
        .sliding(5, Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "sliding");
    let err = WindowLimiter::builder()
        .fixed(0, Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "fixed");
}

/// A clock that hands out one reading taken earlier: what a thread preempted
/// between reading the clock and taking the window's lock would use.
#[derive(Debug)]
struct StaleOnce {
    clock: ManualClock,
    stale: std::sync::Mutex<Option<u64>>,
}

impl Clock for StaleOnce {
    fn now_nanos(&self) -> u64 {
        self.stale
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| self.clock.now_nanos())
    }
}

#[test]
fn a_reading_from_the_window_before_does_not_wipe_the_counts() {
    let clock = ManualClock::new();
    let stale = std::sync::Arc::new(StaleOnce {
        clock: clock.clone(),
        stale: std::sync::Mutex::new(None),
    });
    let limiter = WindowLimiter::builder()
        .fixed(10, Duration::from_secs(1))
        .clock(stale.clone())
        .build()
        .unwrap();
    clock.set_nanos(1_500_000_000);
    limiter.check_n(10).unwrap();
    *stale.stale.lock().unwrap() = Some(999_999_999);
    assert!(
        limiter.check().is_err(),
        "the stale check counts in the current window"
    );
    assert_eq!((0..20).filter(|_| limiter.check().is_ok()).count(), 0);
}

#[test]
fn a_window_too_long_to_count_is_refused_and_the_longest_works() {
    for sliding in [false, true] {
        let b = WindowLimiter::builder();
        let b = if sliding {
            b.sliding(10, Duration::MAX)
        } else {
            b.fixed(10, Duration::MAX)
        };
        let err = b.build().unwrap_err();
        assert_eq!(err.field(), if sliding { "sliding" } else { "fixed" });
        let clock = ManualClock::new();
        let b = WindowLimiter::builder().clock(clock.shared());
        let longest = Duration::from_nanos(1 << 62);
        let limiter = if sliding {
            b.sliding(10, longest)
        } else {
            b.fixed(10, longest)
        }
        .build()
        .unwrap();
        limiter.check().unwrap();
        assert!(limiter.snapshot().remaining() == 9);
    }
}
