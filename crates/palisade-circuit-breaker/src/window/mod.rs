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
// One per breaker, inside its `Arc`: boxing the padded count window would add a
// pointer chase to every call to save a few hundred bytes once.
#[allow(clippy::large_enum_variant)]
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
    #[inline]
    pub(crate) fn needs_time(&self) -> bool {
        matches!(self, Self::Time(_))
    }

    /// Records one outcome. Returns the window's tally when this outcome could
    /// change the verdict (so the caller checks the rates), `None` when it cannot.
    #[inline]
    pub(crate) fn record(
        &self,
        failure: bool,
        slow: bool,
        now: u64,
        minimum_calls: u64,
    ) -> Option<Tally> {
        match self {
            Self::Count(w) => w.record(failure, slow, minimum_calls),
            // Calls leave a time window as time passes, so any outcome may find the rate above the threshold.
            Self::Time(w) => Some(w.record(failure, slow, now)),
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

pub(crate) use palisade_core::CachePadded;
