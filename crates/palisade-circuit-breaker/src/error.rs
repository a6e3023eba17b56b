//! What a guarded call returns when the breaker says no, or the call fails.
//!
//! A rejection is core's [`Rejected`], the one rejection type of every
//! Palisade pattern, with [`Pattern::CircuitBreaker`](palisade_core::Pattern)
//! and the state that rejected as its reason; [`State::rejected_by`](crate::State::rejected_by)
//! reads the state back.

use palisade_core::Pattern;
pub use palisade_core::{CallError, Rejected};

use crate::State;

#[inline]
pub(crate) fn rejection(state: State, retry_after_nanos: Option<u64>) -> Rejected {
    Rejected::with_nanos(Pattern::CircuitBreaker, state.as_str(), retry_after_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

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
}
