//! The one error of the whole stack.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use palisade_core::{Pattern, Rejected};

/// Which of the stack's two timeouts ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// The total timeout, around every attempt and every delay between them:
    /// the caller's whole wait. Not retried.
    Total,
    /// One attempt's timeout, inside the bulkhead: counted by the breaker as a
    /// failure and retried like one.
    Attempt,
}

impl TimeoutKind {
    /// The kind as one word (`total`, `attempt`), as in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Total => "total",
            Self::Attempt => "attempt",
        }
    }
}

/// A timeout of the stack ran out: which one, and its limit. The call's
/// future was dropped; whether it had an effect is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout {
    kind: TimeoutKind,
    limit: Duration,
}

impl Timeout {
    pub(crate) fn new(kind: TimeoutKind, limit: Duration) -> Self {
        Self { kind, limit }
    }

    /// The total timeout or an attempt's.
    pub fn kind(&self) -> TimeoutKind {
        self.kind
    }

    /// The time it gave.
    pub fn limit(&self) -> Duration {
        self.limit
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} timeout of {:?} ran out",
            self.kind.as_str(),
            self.limit
        )
    }
}

impl Error for Timeout {}

/// The error of a call through a [`Stack`](super::Stack): a pattern refused
/// it, a timeout ran out, or the call's own (last) error.
///
/// Match on it to answer a caller: a [`Rejected`](Self::Rejected) says which
/// pattern and when to come back (`503` with `Retry-After`), a
/// [`Timeout`](Self::Timeout) which timeout (`504`), and
/// [`Inner`](Self::Inner) is the dependency's own answer. It is a
/// `std::error::Error + Send + Sync` when `E` is, so `?` turns it into
/// tower's `BoxError`, where [`Rejected::find`] still finds a rejection.
///
/// It displays as the rejection, the timeout, or the inner error. The
/// rejection and the timeout are its [`source`](Error::source); the inner
/// error is transparent (its own source is the stack error's), except that a
/// [`Rejected`] returned by the call itself is the source.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StackError<E> {
    /// The rate limiter, the circuit breaker or the bulkhead refused the call
    /// (the last attempt, for the breaker and the bulkhead: a rejection ends
    /// the retries). The call did not run, or not again.
    Rejected(Rejected),
    /// The total timeout, or the last attempt's timeout, ran out.
    Timeout(Timeout),
    /// The call's own error, from its last attempt.
    Inner(E),
}

impl<E> StackError<E> {
    /// The rejection, if a pattern refused the call.
    pub fn rejected(&self) -> Option<&Rejected> {
        match self {
            Self::Rejected(r) => Some(r),
            _ => None,
        }
    }

    /// The pattern that refused the call, if one did.
    pub fn pattern(&self) -> Option<Pattern> {
        self.rejected().map(Rejected::pattern)
    }

    /// When to come back, if a pattern refused the call and knows.
    pub fn retry_after(&self) -> Option<Duration> {
        self.rejected().and_then(Rejected::retry_after)
    }

    /// The timeout, if one ran out.
    pub fn timeout(&self) -> Option<&Timeout> {
        match self {
            Self::Timeout(t) => Some(t),
            _ => None,
        }
    }

    /// The call's own error, if it returned one.
    pub fn inner(&self) -> Option<&E> {
        match self {
            Self::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// The call's own error, if it returned one.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// The same error with the call's own error mapped by `f`.
    pub fn map_inner<F, E2>(self, f: F) -> StackError<E2>
    where
        F: FnOnce(E) -> E2,
    {
        match self {
            Self::Rejected(r) => StackError::Rejected(r),
            Self::Timeout(t) => StackError::Timeout(t),
            Self::Inner(e) => StackError::Inner(f(e)),
        }
    }
}

impl<E> From<Rejected> for StackError<E> {
    fn from(r: Rejected) -> Self {
        Self::Rejected(r)
    }
}

impl<E> From<Timeout> for StackError<E> {
    fn from(t: Timeout) -> Self {
        Self::Timeout(t)
    }
}

impl<E: fmt::Display> fmt::Display for StackError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(r) => r.fmt(f),
            Self::Timeout(t) => t.fmt(f),
            Self::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: Error + 'static> Error for StackError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Rejected(r) => Some(r),
            Self::Timeout(t) => Some(t),
            Self::Inner(e) if (e as &(dyn Error + 'static)).is::<Rejected>() => Some(e),
            Self::Inner(e) => e.source(),
        }
    }
}
