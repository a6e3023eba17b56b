//! The error of a pattern's `call`: it refused to run the call, or the call failed.

use std::error::Error;
use std::fmt;

use crate::Rejected;

/// The error of `call` on a pattern that may refuse a call (a circuit
/// breaker's, a bulkhead's): the rejection, or the call's own error.
///
/// It displays as the rejection or as the call's error. A rejection is also
/// its [`source`](Error::source), so [`Rejected::find`] finds it through any
/// wrapping; the call's own error is displayed and sourced as it is, except
/// that a [`Rejected`] the call itself returned (another pattern's, inside
/// it) is the source, so a retry above leaves it alone too.
///
/// ```
/// use palisade_core::{CallError, Pattern, Rejected};
///
/// let limited = Rejected::new(Pattern::RateLimit, "exhausted", None);
/// let e: CallError<Rejected> = CallError::Inner(limited);
/// assert_eq!(Rejected::find(&e), Some(&limited));
/// let e: CallError<std::io::Error> = CallError::Inner(std::io::Error::other("refused"));
/// assert_eq!(Rejected::find(&e), None);
/// assert_eq!(e.to_string(), "refused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The pattern refused; the call did not run.
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
            // call (a rate limit, a bulkhead): that one is the source.
            Self::Inner(e) if (e as &(dyn Error + 'static)).is::<Rejected>() => Some(e),
            Self::Inner(e) => e.source(),
        }
    }
}
