//! What a guarded call returns when the breaker says no, or the call fails.

use std::fmt;
use std::time::Duration;

use crate::State;

/// The breaker did not permit the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct Rejected {
    /// Nanoseconds until a probe, or `u64::MAX` when unknown: a plain word keeps
    /// the rejection in registers on the hot path.
    retry_after_nanos: u64,
    state: State,
}

impl Rejected {
    #[inline]
    pub(crate) fn new(state: State, retry_after_nanos: Option<u64>) -> Self {
        Self {
            retry_after_nanos: retry_after_nanos.map_or(u64::MAX, |n| n.min(u64::MAX - 1)),
            state,
        }
    }

    /// The state that rejected the call: open, half-open (all probes taken) or forced open.
    pub fn state(&self) -> State {
        self.state
    }

    /// How long until the breaker admits a probe, when known (open state only).
    pub fn retry_after(&self) -> Option<Duration> {
        (self.retry_after_nanos != u64::MAX).then(|| Duration::from_nanos(self.retry_after_nanos))
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit breaker is {}", self.state)?;
        if let Some(after) = self.retry_after() {
            write!(f, "; next probe in {after:?}")?;
        }
        Ok(())
    }
}

/// The error of [`CircuitBreaker::call`](crate::CircuitBreaker::call): a rejection, or the call's own error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError<E> {
    /// The breaker did not permit the call; the call did not run.
    #[error(transparent)]
    Rejected(Rejected),
    /// The call ran and returned this error.
    #[error(transparent)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_says_why_and_when() {
        let r = Rejected::new(State::Open, Some(1_500_000_000));
        assert_eq!(r.to_string(), "circuit breaker is open; next probe in 1.5s");
        let r = Rejected::new(State::ForcedOpen, None);
        assert_eq!(r.to_string(), "circuit breaker is forced_open");
    }
}
