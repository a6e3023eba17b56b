//! What a check decided, with what a client needs to be told: the limit, what
//! is left, when the limit is whole again and, on a refusal, when to come back.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use palisade_core::{Pattern, Rejected};

use crate::quota::Params;

/// The reason of a refusal because the quota is spent (see [`Rejected::reason`]).
pub const EXHAUSTED: &str = "exhausted";
/// The reason of a keyed limiter's refusal of a new key while its table is
/// full of keys that have not refilled (see [`KeyedRateLimiter`](crate::KeyedRateLimiter)).
pub const KEY_CAPACITY: &str = "key_capacity";

/// The state of one limit as a check left it, in the terms of the `RateLimit-*`
/// HTTP headers: the limit (the burst), how many requests are left now, and
/// how long until the limit is whole again.
///
/// Computed only when asked: a check stores the raw times and the division
/// happens in [`remaining`](Self::remaining).
///
/// ```
/// use palisade_rate_limit::{ManualClock, Quota, RateLimiter};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::builder()
///     .quota(Quota::per_second(10))
///     .clock(clock.shared())
///     .build()?;
/// let d = limiter.check_n(4)?;
/// assert_eq!((d.limit(), d.remaining(), d.reset()), (10, 6, Duration::from_millis(400)));
/// assert_eq!(
///     d.headers(),
///     [("RateLimit-Limit", 10), ("RateLimit-Remaining", 6), ("RateLimit-Reset", 1)]
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// How long until the limit is whole again, in nanoseconds: for the
    /// GCRA, how far the theoretical arrival time the check left (or found,
    /// on a refusal) is ahead of the time of the decision.
    ahead: u64,
    /// The GCRA's emission interval; 0 for a window counter.
    emission: u64,
    /// The burst, or the window's limit.
    limit: u32,
    /// A window counter's remaining requests (unused by the GCRA).
    window_remaining: u32,
}

impl Decision {
    #[inline]
    pub(crate) fn new(now: u64, tat: u64, params: Params) -> Self {
        Self {
            ahead: tat.saturating_sub(now),
            emission: params.emission,
            limit: params.burst,
            window_remaining: 0,
        }
    }

    /// A window counter's decision: `remaining` of `limit` left, whole again in `reset` ns.
    pub(crate) fn window(limit: u32, remaining: u32, reset: u64) -> Self {
        Self {
            ahead: reset,
            emission: 0,
            limit,
            window_remaining: remaining,
        }
    }

    /// The most requests the limit admits at once: the quota's burst, or a
    /// window's limit (`RateLimit-Limit`).
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// How many single requests would be admitted right now, one after the
    /// other, without waiting (`RateLimit-Remaining`). For a sliding window,
    /// as its estimate counts them.
    pub fn remaining(&self) -> u32 {
        if self.emission == 0 {
            return self.window_remaining;
        }
        let tolerance = self.emission * u64::from(self.limit);
        let free = tolerance.saturating_sub(self.ahead);
        (free / self.emission).min(u64::from(self.limit)) as u32
    }

    /// How long until the whole limit is available again (`RateLimit-Reset`);
    /// zero when it is now. For a fixed window, the end of the window; for
    /// a sliding one, when the requests counted now have left it.
    pub fn reset(&self) -> Duration {
        Duration::from_nanos(self.ahead)
    }

    /// The three `RateLimit-*` headers (IETF draft `RateLimit` header fields),
    /// the reset in whole seconds rounded up.
    pub fn headers(&self) -> [(&'static str, u64); 3] {
        [
            ("RateLimit-Limit", u64::from(self.limit())),
            ("RateLimit-Remaining", u64::from(self.remaining())),
            ("RateLimit-Reset", ceil_secs(self.reset())),
        ]
    }
}

/// A duration in whole seconds, rounded up (as `Retry-After` and `RateLimit-Reset` want).
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A refusal: the quota is spent (or, for a keyed limiter, there is no room
/// for a new key). Holds core's [`Rejected`] (pattern
/// [`RateLimit`](Pattern::RateLimit), reason [`EXHAUSTED`] or
/// [`KEY_CAPACITY`], and when to come back) and the limit's [`Decision`] for
/// the headers.
///
/// It displays as the rejection, and the rejection is its
/// [`source`](StdError::source), so [`Rejected::find`] finds it through any
/// wrapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    rejected: Rejected,
    decision: Decision,
}

impl Denied {
    #[inline]
    pub(crate) fn new(reason: &'static str, retry_after_nanos: u64, decision: Decision) -> Self {
        Self {
            rejected: Rejected::with_nanos(Pattern::RateLimit, reason, Some(retry_after_nanos)),
            decision,
        }
    }

    /// The rejection, as every Palisade pattern reports one.
    pub fn rejected(&self) -> Rejected {
        self.rejected
    }

    /// How long until the same request would be admitted (`Retry-After`).
    pub fn retry_after(&self) -> Duration {
        self.rejected.retry_after().unwrap_or_default()
    }

    /// The limit's state at the refusal.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// The three `RateLimit-*` headers and `Retry-After`, in whole seconds rounded up.
    pub fn headers(&self) -> [(&'static str, u64); 4] {
        let [a, b, c] = self.decision.headers();
        [a, b, c, ("Retry-After", ceil_secs(self.retry_after()))]
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.rejected.fmt(f)
    }
}

impl StdError for Denied {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.rejected)
    }
}

impl From<Denied> for Rejected {
    fn from(d: Denied) -> Self {
        d.rejected
    }
}

/// The error of the calls that take a count or wait (`check_n`, `acquire`,
/// `acquire_n`) and of a keyed limiter's checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Refused for now; see [`Denied::retry_after`].
    #[error(transparent)]
    Denied(#[from] Denied),
    /// More requests at once than the burst: never admissible under this quota.
    #[error("{requested} requests at once can never be admitted: the burst is {burst}")]
    InsufficientCapacity {
        /// How many were asked for.
        requested: u32,
        /// The quota's burst.
        burst: u32,
    },
    /// `acquire` had to wait and the limiter has no sleeper: give the builder
    /// one with `sleeper(…)`, or turn on the `tokio` feature.
    #[error("the rate limiter has no sleeper to wait with")]
    NoSleeper,
    /// A keyed limiter's quota function returned an invalid quota for a new
    /// key (field `quota_fn`); the key was refused and not stored.
    #[error(transparent)]
    InvalidQuota(palisade_core::ConfigError),
}

impl Error {
    /// The refusal, if it was one.
    pub fn denied(&self) -> Option<&Denied> {
        match self {
            Self::Denied(d) => Some(d),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Params = Params {
        emission: 100,
        burst: 5,
    };

    #[test]
    fn remaining_and_reset_from_the_times() {
        // Full: TAT in the past.
        let d = Decision::new(1_000, 0, P);
        assert_eq!((d.remaining(), d.reset()), (5, Duration::ZERO));
        // Two taken at 1000: TAT 1200.
        let d = Decision::new(1_000, 1_200, P);
        assert_eq!((d.remaining(), d.reset()), (3, Duration::from_nanos(200)));
        // Partly refilled cells do not count.
        let d = Decision::new(1_000, 1_450, P);
        assert_eq!(d.remaining(), 0);
        let d = Decision::new(1_000, 1_399, P);
        assert_eq!(d.remaining(), 1);
    }

    #[test]
    fn a_denial_is_a_rejection_with_headers() {
        let d = Denied::new(EXHAUSTED, 1_500_000_000, Decision::new(0, 2_000_000_000, P));
        assert_eq!(d.retry_after(), Duration::from_millis(1500));
        assert_eq!(
            d.to_string(),
            "rate limit rejected the call (exhausted); retry after 1.5s"
        );
        let e: Box<dyn StdError + Send + Sync> = Box::new(Error::Denied(d));
        let r = Rejected::find(&*e).unwrap();
        assert_eq!((r.pattern(), r.reason()), (Pattern::RateLimit, EXHAUSTED));
        assert_eq!(d.headers()[3], ("Retry-After", 2));
        assert_eq!(
            Error::InsufficientCapacity {
                requested: 9,
                burst: 5
            }
            .to_string(),
            "9 requests at once can never be admitted: the burst is 5"
        );
    }
}
