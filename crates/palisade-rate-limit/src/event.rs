//! The events a limiter emits to its listeners.

use std::time::Duration;

use crate::Quota;

/// Something that happened in a limiter (direct or keyed); sent to every
/// listener as it happens, on the thread that caused it, after the limiter
/// has let go of its locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Requests were admitted.
    Acquired {
        /// How many at once (1 for `check` and `acquire`).
        permits: u32,
        /// How long `acquire` waited for them; `None` for a `check`, which never waits.
        waited: Option<Duration>,
    },
    /// Requests were refused.
    Rejected {
        /// How many at once.
        permits: u32,
        /// Why: [`EXHAUSTED`](crate::EXHAUSTED), [`KEY_CAPACITY`](crate::KEY_CAPACITY),
        /// or `unavailable` (a Redis limiter failing closed).
        reason: &'static str,
        /// How long until the same request would be admitted.
        retry_after: Duration,
    },
    /// An `acquire` was dropped while it waited: it was not admitted.
    Canceled {
        /// How many it waited for.
        permits: u32,
        /// How long it had waited.
        waited: Duration,
        /// Whether its slot went back to the limit (only when nobody had queued behind it).
        returned: bool,
    },
    /// The quota was changed at run time ([`RateLimiter::set_quota`](crate::RateLimiter::set_quota)).
    QuotaChanged {
        /// The new quota.
        quota: Quota,
    },
    /// A Redis limiter's call to Redis failed or timed out; Redis is left
    /// alone for a back-off, and the limiter does what its `Unavailable` says.
    BackendUnavailable {
        /// Failures in a row, this one included.
        failures: u32,
    },
    /// A keyed limiter dropped keys whose limit had refilled completely.
    KeysEvicted {
        /// How many.
        count: usize,
    },
}
