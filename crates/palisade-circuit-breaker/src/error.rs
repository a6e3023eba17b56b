//! What a guarded call returns when the breaker says no, or the call fails.
//!
//! A rejection is core's [`Rejected`], the one rejection type of every
//! Palisade pattern, with [`Pattern::CircuitBreaker`](palisade_core::Pattern)
//! and the state that rejected as its reason; [`State::rejected_by`](crate::State::rejected_by)
//! reads the state back.

use std::error::Error;
use std::fmt;

use palisade_core::Pattern;
pub use palisade_core::Rejected;

use crate::State;

#[inline]
pub(crate) fn rejection(state: State, retry_after_nanos: Option<u64>) -> Rejected {
    Rejected::with_nanos(Pattern::CircuitBreaker, state.as_str(), retry_after_nanos)
}

/// The error of [`CircuitBreaker::call`](crate::CircuitBreaker::call): a rejection, or the call's own error.
///
/// It displays as the rejection or as the call's error. A rejection is also
/// its [`source`](Error::source), so [`Rejected::find`] finds it through any
/// wrapping; the call's own error is displayed and sourced as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The breaker did not permit the call; the call did not run.
    Rejected(Rejected),
    /// The call ran and returned this error.
    Inner(E),
}

impl<E> CallError<E> {
    /// The rejection, if the call did not run.
    pub fn rejected(&self) -> Option<&Rejected> {
        match self {
            Self::Rejected(r) => Some(r),
            Self::Inner(_) => None,
        }
    }

    /// The call's own error, if it ran.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Rejected(_) => None,
            Self::Inner(e) => Some(e),
        }
    }
}

impl<E> From<Rejected> for CallError<E> {
    fn from(r: Rejected) -> Self {
        Self::Rejected(r)
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(r) => r.fmt(f),
            Self::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: Error + 'static> Error for CallError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Rejected(r) => Some(r),
            // Transparent, but for a rejection of another pattern inside the
            // call (a rate limit, a bulkhead): that one is the source, so
            // `Rejected::find` sees it and a retry above leaves it alone.
            Self::Inner(e) if (e as &(dyn Error + 'static)).is::<Rejected>() => Some(e),
            Self::Inner(e) => e.source(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_says_why_and_when() {
        let r = rejection(State::Open, Some(1_500_000_000));
        assert_eq!(
            r.to_string(),
            "circuit breaker rejected the call (open); retry after 1.5s"
        );
        assert_eq!(State::rejected_by(&r), Some(State::Open));
        let r = rejection(State::ForcedOpen, None);
        assert_eq!(
            r.to_string(),
            "circuit breaker rejected the call (forced_open)"
        );
    }

    #[test]
    fn a_rejection_is_found_through_the_call_error() {
        let e: CallError<std::io::Error> = CallError::Rejected(rejection(State::HalfOpen, None));
        let boxed: Box<dyn Error + Send + Sync> = Box::new(e);
        let found = Rejected::find(&*boxed).expect("found");
        assert_eq!(State::rejected_by(found), Some(State::HalfOpen));
        let e: CallError<std::io::Error> = CallError::Inner(std::io::Error::other("refused"));
        assert_eq!(Rejected::find(&e), None);
        assert_eq!(e.to_string(), "refused");
    }

    #[test]
    fn a_rejection_returned_by_the_call_itself_is_found() {
        let limited = Rejected::new(palisade_core::Pattern::RateLimit, "exhausted", None);
        let e: CallError<Rejected> = CallError::Inner(limited);
        assert_eq!(Rejected::find(&e), Some(&limited));
        assert_eq!(e.to_string(), "rate limit rejected the call (exhausted)");
    }
}
