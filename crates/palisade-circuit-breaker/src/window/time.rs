//! The calls of the last period, in a ring of buckets with running totals.
//!
//! Recording adds to the current bucket and to the totals; moving to a new
//! bucket subtracts the buckets that fell out. Each call is O(1) amortised and
//! memory is one bucket per slice whatever the call rate. A short mutex guards
//! it: a bucket roll-over must not race with the adds into that bucket.

use std::time::Duration;

use parking_lot::Mutex;

use super::Tally;

#[derive(Debug)]
pub(crate) struct TimeWindow {
    bucket_nanos: u64,
    inner: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    buckets: Box<[Tally]>,
    totals: Tally,
    /// The epoch (time / bucket width) of the newest bucket.
    newest: u64,
}

impl TimeWindow {
    pub(crate) fn new(period: Duration, buckets: u32) -> Self {
        let period = palisade_core::duration_to_nanos(period);
        Self {
            bucket_nanos: (period / u64::from(buckets)).max(1),
            inner: Mutex::new(Ring {
                buckets: vec![Tally::default(); buckets as usize].into_boxed_slice(),
                totals: Tally::default(),
                newest: 0,
            }),
        }
    }

    pub(crate) fn record(&self, failure: bool, slow: bool, now: u64) -> Tally {
        let epoch = now / self.bucket_nanos;
        let mut ring = self.inner.lock();
        ring.advance(epoch);
        let newest = (ring.newest % ring.buckets.len() as u64) as usize;
        let add = Tally {
            calls: 1,
            failures: u64::from(failure),
            slow: u64::from(slow),
        };
        ring.buckets[newest].add(add);
        ring.totals.add(add);
        ring.totals
    }

    pub(crate) fn tally(&self, now: u64) -> Tally {
        let mut ring = self.inner.lock();
        ring.advance(now / self.bucket_nanos);
        ring.totals
    }

    pub(crate) fn reset(&self) {
        let mut ring = self.inner.lock();
        ring.buckets.fill(Tally::default());
        ring.totals = Tally::default();
    }
}

impl Ring {
    /// Moves the newest bucket to `epoch`, dropping the buckets that left the period.
    /// A call that read the clock just before another moved the ring counts in the newest bucket.
    fn advance(&mut self, epoch: u64) {
        if epoch <= self.newest {
            return;
        }
        let len = self.buckets.len() as u64;
        if epoch - self.newest >= len {
            self.buckets.fill(Tally::default());
            self.totals = Tally::default();
        } else {
            for e in self.newest + 1..=epoch {
                let slot = (e % len) as usize;
                let gone = std::mem::take(&mut self.buckets[slot]);
                self.totals.sub(gone);
            }
        }
        self.newest = epoch;
    }
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.slow += other.slow;
    }

    fn sub(&mut self, other: Tally) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn calls_leave_the_window_one_bucket_at_a_time() {
        // 10 s in 10 buckets of 1 s.
        let w = TimeWindow::new(Duration::from_secs(10), 10);
        w.record(true, false, 0);
        w.record(false, true, SEC / 2);
        w.record(true, true, 3 * SEC);
        assert_eq!(
            w.tally(9 * SEC),
            Tally {
                calls: 3,
                failures: 2,
                slow: 2
            }
        );
        // at 10 s the bucket [0, 1 s) leaves
        assert_eq!(
            w.tally(10 * SEC),
            Tally {
                calls: 1,
                failures: 1,
                slow: 1
            }
        );
        assert_eq!(w.tally(13 * SEC + 1), Tally::default());
        // a long silence clears everything at once
        w.record(true, false, 100 * SEC);
        assert_eq!(
            w.tally(100 * SEC),
            Tally {
                calls: 1,
                failures: 1,
                slow: 0
            }
        );
        w.reset();
        assert_eq!(w.tally(100 * SEC), Tally::default());
    }
}
