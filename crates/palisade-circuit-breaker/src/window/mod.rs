//! The sliding windows the closed state judges: the last N calls, or the calls of the last period.

mod count;
mod time;

use crate::SlidingWindow;

pub(crate) use count::CountWindow;
pub(crate) use time::TimeWindow;

/// How many calls a window holds and how many of them failed or were slow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// Either window; both record in O(1) and hold a bounded amount of memory.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn new(kind: SlidingWindow) -> Self {
        match kind {
            SlidingWindow::Count { size } => Self::Count(CountWindow::new(size)),
            SlidingWindow::Time { period, buckets } => Self::Time(TimeWindow::new(period, buckets)),
        }
    }

    /// Whether recording needs the time (the time window does; the count window never reads the clock).
    pub(crate) fn needs_time(&self) -> bool {
        matches!(self, Self::Time(_))
    }

    #[inline]
    pub(crate) fn record(&self, failure: bool, slow: bool, now: u64) -> Tally {
        match self {
            Self::Count(w) => w.record(failure, slow),
            Self::Time(w) => w.record(failure, slow, now),
        }
    }

    pub(crate) fn tally(&self, now: u64) -> Tally {
        match self {
            Self::Count(w) => w.tally(),
            Self::Time(w) => w.tally(now),
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            Self::Count(w) => w.reset(),
            Self::Time(w) => w.reset(),
        }
    }
}
