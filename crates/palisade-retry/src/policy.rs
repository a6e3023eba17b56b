//! What to retry: a policy over `Result<T, E>`, and the delay an outcome asks for.

use std::error::Error;
use std::time::Duration;

use palisade_core::{Outcome, Rejected};

/// Decides whether an attempt's result is retried, and whether it says how
/// long to wait.
///
/// [`classify`](Self::classify) is core's three-way verdict:
/// [`Outcome::Failure`] is retried (while attempts, the deadline and the budget
/// allow), [`Outcome::Success`] and [`Outcome::Ignored`] end the call with that
/// result. So an `Ok` carrying a 503 can be a failure and a 400 an ignored
/// error. Closures `Fn(&Result<T, E>) -> Outcome` are policies:
///
/// ```
/// use palisade_retry::{Outcome, RetryPolicy};
/// use std::time::Duration;
///
/// let policy = (|r: &Result<u16, String>| match r {
///     Ok(503) | Err(_) => Outcome::Failure,
///     Ok(400..=499) => Outcome::Ignored,
///     Ok(_) => Outcome::Success,
/// })
/// .with_retry_after(|r: &Result<u16, String>| match r {
///     Ok(503) => Some(Duration::from_secs(2)), // as if read from its Retry-After header
///     _ => None,
/// });
/// assert_eq!(policy.classify(&Ok(503)), Outcome::Failure);
/// assert_eq!(policy.retry_after(&Ok(503)), Some(Duration::from_secs(2)));
/// assert_eq!(policy.classify(&Ok(404)), Outcome::Ignored);
/// ```
pub trait RetryPolicy<T, E>: Send + Sync {
    /// The verdict on one attempt's result.
    fn classify(&self, result: &Result<T, E>) -> Outcome;

    /// The wait the result asks for (a `Retry-After` header, gRPC pushback),
    /// which replaces the backoff's delay for the next attempt. It is capped by
    /// the retry's [`max_delay`](crate::RetryBuilder::max_delay), and a retry
    /// it would start past the [`deadline`](crate::RetryBuilder::deadline) is
    /// not made. Default: none.
    fn retry_after(&self, result: &Result<T, E>) -> Option<Duration> {
        let _ = result;
        None
    }

    /// This policy, with the wait read from the result by `read`.
    fn with_retry_after<F>(self, read: F) -> WithRetryAfter<Self, F>
    where
        Self: Sized,
        F: Fn(&Result<T, E>) -> Option<Duration> + Send + Sync,
    {
        WithRetryAfter { policy: self, read }
    }
}

impl<T, E, F> RetryPolicy<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome + Send + Sync,
{
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// A policy with the wait read from the result; see [`RetryPolicy::with_retry_after`].
#[derive(Debug, Clone, Copy)]
pub struct WithRetryAfter<P, F> {
    policy: P,
    read: F,
}

impl<T, E, P, F> RetryPolicy<T, E> for WithRetryAfter<P, F>
where
    P: RetryPolicy<T, E>,
    F: Fn(&Result<T, E>) -> Option<Duration> + Send + Sync,
{
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self.policy.classify(result)
    }

    fn retry_after(&self, result: &Result<T, E>) -> Option<Duration> {
        (self.read)(result)
    }
}

/// The default policy: `Ok` ends the call, every `Err` is retried except a
/// rejection by another Palisade pattern (an open breaker, a full bulkhead, a
/// spent rate limit, anywhere in the error's chain of sources), which ends it.
///
/// Retrying a rejection would only add load to a pattern that is shedding it;
/// its `retry_after` says when to come back, which is the caller's decision.
/// For tower's `BoxError`, which does not implement `Error`, the layer uses
/// `DefaultLayerPolicy` (feature `tower`), the same rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultPolicy;

impl<T, E: Error + 'static> RetryPolicy<T, E> for DefaultPolicy {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => classify_error(e),
        }
    }
}

/// Every error is a failure unless a Palisade pattern rejected the call.
#[inline]
pub(crate) fn classify_error(error: &(dyn Error + 'static)) -> Outcome {
    if Rejected::find(error).is_some() {
        Outcome::Ignored
    } else {
        Outcome::Failure
    }
}

/// A policy that retries every `Err`, rejections included, and no `Ok`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryAllErrors;

impl<T, E> RetryPolicy<T, E> for RetryAllErrors {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}
