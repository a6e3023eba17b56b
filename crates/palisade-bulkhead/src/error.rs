//! What a guarded call returns when the bulkhead says no, or the call fails.
//!
//! A rejection is core's [`Rejected`], the one rejection type of every
//! Palisade pattern, with [`Pattern::Bulkhead`] and a [`Reason`] word
//! (`full`, `timed_out`, `too_heavy`); [`Reason::of`] reads it back.

use std::fmt;

use palisade_core::Pattern;
pub use palisade_core::{CallError, Rejected};

/// Why a bulkhead refused a permit: the reason word of its [`Rejected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Every unit was taken and the call could not wait: the bulkhead does not
    /// wait (no `max_wait`), others were queued ahead of it, or the queue was
    /// full (`max_waiting`). Reason word `full`.
    Full,
    /// It waited `max_wait` in the queue without getting its units. Reason word `timed_out`.
    TimedOut,
    /// It asked for more units than the limit at the time. Reason word `too_heavy`.
    TooHeavy,
}

impl Reason {
    /// The reason word, as in [`Rejected::reason`] and in telemetry.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::TimedOut => "timed_out",
            Self::TooHeavy => "too_heavy",
        }
    }

    /// The reason of a bulkhead's rejection; `None` for another pattern's.
    pub fn of(rejected: &Rejected) -> Option<Self> {
        if rejected.pattern() != Pattern::Bulkhead {
            return None;
        }
        [Self::Full, Self::TimedOut, Self::TooHeavy]
            .into_iter()
            .find(|r| r.as_str() == rejected.reason())
    }

    #[inline]
    pub(crate) fn rejection(self, retry_after_nanos: Option<u64>) -> Rejected {
        Rejected::with_nanos(Pattern::Bulkhead, self.as_str(), retry_after_nanos)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use std::error::Error;
    use std::time::Duration;

    #[test]
    fn the_reason_word_goes_there_and_back() {
        for reason in [Reason::Full, Reason::TimedOut, Reason::TooHeavy] {
            assert_eq!(Reason::of(&reason.rejection(None)), Some(reason));
        }
        let r = Reason::TimedOut.rejection(Some(250_000_000));
        assert_eq!(
            r.to_string(),
            "bulkhead rejected the call (timed_out); retry after 250ms"
        );
        assert_eq!(r.retry_after(), Some(Duration::from_millis(250)));
        let other = Rejected::new(Pattern::CircuitBreaker, "full", None);
        assert_eq!(Reason::of(&other), None);
    }

    #[test]
    fn a_rejection_is_found_through_the_call_error() {
        let e: CallError<std::io::Error> = CallError::Rejected(Reason::Full.rejection(None));
        let boxed: Box<dyn Error + Send + Sync> = Box::new(e);
        let found = Rejected::find(&*boxed).expect("found");
        assert_eq!(Reason::of(found), Some(Reason::Full));
        let e: CallError<std::io::Error> = CallError::Inner(std::io::Error::other("refused"));
        assert_eq!(Rejected::find(&e), None);
        assert_eq!(e.to_string(), "refused");
    }
}
