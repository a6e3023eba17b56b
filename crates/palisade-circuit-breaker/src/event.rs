//! The events a breaker emits to its listeners.

use std::time::Duration;

use palisade_core::Outcome;

use crate::State;

/// Something that happened in a breaker; sent to every listener as it happens.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A permitted call finished and was classified.
    CallFinished {
        /// How the call was classified.
        outcome: Outcome,
        /// Whether it took at least the slow-call duration.
        slow: bool,
        /// How long it took, measured when a listener or the slow-call rule needs it.
        duration: Option<Duration>,
        /// The state that admitted it.
        state: State,
    },
    /// A call was not permitted.
    CallRejected {
        /// The state that rejected it.
        state: State,
        /// How long until a probe may be admitted, when known.
        retry_after: Option<Duration>,
    },
    /// The breaker moved from one state to another.
    StateTransition {
        /// The state it left.
        from: State,
        /// The state it entered.
        to: State,
    },
}
