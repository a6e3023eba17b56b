//! What a retry instance reports to its listeners.

use std::time::Duration;

use crate::StopReason;

/// An event of a [`Retry`](crate::Retry) or [`Hedge`](crate::Hedge) instance.
///
/// A call that succeeds at once reports one event, [`Finished`](Self::Finished);
/// with no listener it reports nothing and costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An attempt failed and another will start after `delay`.
    RetryScheduled {
        /// The attempt that will start (2 for the first retry).
        attempt: u32,
        /// The wait before it.
        delay: Duration,
        /// `true` if the delay came from the result (`Retry-After`), not the backoff.
        from_result: bool,
    },
    /// An attempt failed, and the budget could not cover another one.
    BudgetExhausted {
        /// The attempts made.
        attempts: u32,
    },
    /// An attempt ran out of time and was dropped.
    AttemptTimedOut {
        /// The attempt.
        attempt: u32,
        /// The time it was given.
        limit: Duration,
    },
    /// A hedged call started another attempt while the earlier ones still run.
    HedgeStarted {
        /// The attempt started (2 for the first hedge).
        attempt: u32,
        /// How long the call had waited for an answer.
        after: Duration,
    },
    /// The call ended.
    Finished {
        /// The attempts made.
        attempts: u32,
        /// Why it ended.
        stop: StopReason,
    },
}
