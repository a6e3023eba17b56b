//! The one rejection type of every Palisade pattern.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// The pattern that refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Pattern {
    /// A circuit breaker that is open, forced open, or half-open with every probe taken.
    CircuitBreaker,
    /// A bulkhead with no capacity left.
    Bulkhead,
    /// A rate limiter whose quota is spent.
    RateLimit,
    /// A retry budget with nothing left to spend.
    RetryBudget,
    /// A client-side adaptive throttle shedding load before the backend must.
    Throttle,
}

impl Pattern {
    /// The pattern's name, as in telemetry (`circuit_breaker`, `bulkhead`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CircuitBreaker => "circuit_breaker",
            Self::Bulkhead => "bulkhead",
            Self::RateLimit => "rate_limit",
            Self::RetryBudget => "retry_budget",
            Self::Throttle => "throttle",
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::CircuitBreaker => "circuit breaker",
            Self::Bulkhead => "bulkhead",
            Self::RateLimit => "rate limit",
            Self::RetryBudget => "retry budget",
            Self::Throttle => "adaptive throttle",
        })
    }
}

/// A Palisade pattern refused to run a call: the call did not start.
///
/// Every pattern rejects with this one type, so code that sits above several
/// of them (a retry that must not retry an open breaker, a handler that maps
/// rejections to `503` with `Retry-After`) asks one question of any error:
///
/// ```
/// use palisade_core::{Pattern, Rejected};
/// use std::time::Duration;
///
/// let error: Box<dyn std::error::Error + Send + Sync> =
///     Box::new(Rejected::new(Pattern::CircuitBreaker, "open", Some(Duration::from_secs(30))));
/// let rejected = Rejected::find(&*error).expect("a rejection");
/// assert_eq!(rejected.pattern(), Pattern::CircuitBreaker);
/// assert_eq!(rejected.retry_after(), Some(Duration::from_secs(30)));
/// assert_eq!(error.to_string(), "circuit breaker rejected the call (open); retry after 30s");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pattern: Pattern,
    reason: &'static str,
    /// Nanoseconds until it may work, or `u64::MAX` when unknown: a plain word
    /// keeps the rejection in registers on the hot path.
    retry_after_nanos: u64,
}

impl Rejected {
    /// A rejection by `pattern`, for `reason` (a word such as `open` or
    /// `full`, as the pattern's docs list them), and when to come back if known.
    pub fn new(pattern: Pattern, reason: &'static str, retry_after: Option<Duration>) -> Self {
        Self::with_nanos(pattern, reason, retry_after.map(crate::duration_to_nanos))
    }

    /// As [`new`](Self::new), with the wait in nanoseconds (for patterns that count in them).
    #[inline]
    pub fn with_nanos(
        pattern: Pattern,
        reason: &'static str,
        retry_after_nanos: Option<u64>,
    ) -> Self {
        Self {
            pattern,
            reason,
            retry_after_nanos: retry_after_nanos.map_or(u64::MAX, |n| n.min(u64::MAX - 1)),
        }
    }

    /// The pattern that refused the call.
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// Why, in one word of the pattern's (for a breaker, the state: `open`,
    /// `half_open`, `forced_open`).
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// How long until the pattern may admit a call, when it knows.
    pub fn retry_after(&self) -> Option<Duration> {
        (self.retry_after_nanos != u64::MAX).then(|| Duration::from_nanos(self.retry_after_nanos))
    }

    /// The rejection in `error` or in its chain of [`source`](Error::source)s, if any.
    ///
    /// Works on a tower `BoxError` (`Rejected::find(&*boxed)`) and on the call
    /// errors of every pattern, whose rejected variants have the rejection as
    /// their source.
    pub fn find<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a Rejected> {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(rejected) = e.downcast_ref::<Rejected>() {
                return Some(rejected);
            }
            next = e.source();
        }
        None
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rejected the call ({})", self.pattern, self.reason)?;
        if let Some(after) = self.retry_after() {
            write!(f, "; retry after {after:?}")?;
        }
        Ok(())
    }
}

impl Error for Rejected {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("request failed")]
    struct Wrapper(#[source] Rejected);

    #[test]
    fn found_through_a_chain_of_sources() {
        let r = Rejected::new(Pattern::Bulkhead, "full", None);
        let wrapped = Wrapper(r);
        assert_eq!(Rejected::find(&wrapped), Some(&r));
        assert_eq!(r.to_string(), "bulkhead rejected the call (full)");
        let other = std::io::Error::other("boom");
        assert_eq!(Rejected::find(&other), None);
    }

    #[test]
    fn an_unknowable_wait_is_none_and_a_huge_one_is_kept() {
        let r = Rejected::with_nanos(Pattern::RateLimit, "exhausted", Some(u64::MAX));
        assert_eq!(r.retry_after(), Some(Duration::from_nanos(u64::MAX - 1)));
        let r = Rejected::with_nanos(Pattern::RateLimit, "exhausted", None);
        assert_eq!(r.retry_after(), None);
    }
}
