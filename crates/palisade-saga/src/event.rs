//! What a saga runner reports to its listeners.

use std::sync::Arc;
use std::time::Duration;

/// How a saga execution ended (`palisade.outcome` of `palisade.saga.executions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionOutcome {
    /// Every step completed.
    Completed,
    /// A step failed and every completed step was compensated.
    Compensated,
    /// A compensation (or a step after the pivot) could not finish: an operator must act.
    Failed,
}

impl ExecutionOutcome {
    /// The outcome as in telemetry: `completed`, `compensated`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }
}

/// What a step or compensation did (`palisade.outcome` of `palisade.saga.step.duration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepOutcome {
    /// The action succeeded.
    Completed,
    /// The action failed for good (after its retries) or timed out.
    Failed,
    /// The compensation succeeded.
    Compensated,
    /// An attempt of the compensation failed (it is retried).
    CompensationFailed,
}

impl StepOutcome {
    /// The outcome as in telemetry: `completed`, `failed`, `compensated`, `compensation_failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Compensated => "compensated",
            Self::CompensationFailed => "compensation_failed",
        }
    }
}

/// An event of a saga runner. Times are measured on the saga's clock.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A runner began running a saga: a new one (`resumed: false`) or one
    /// from its log (`resumed: true`).
    Started {
        /// The definition's name.
        saga: Arc<str>,
        /// The saga id.
        id: Arc<str>,
        /// Whether it was resumed from its log.
        resumed: bool,
        /// The W3C `traceparent` recorded when the saga started, if any.
        traceparent: Option<Arc<str>>,
    },
    /// A step's action, or a compensation, finished (one round of attempts
    /// for an action, one attempt for a compensation).
    Step {
        /// The definition's name.
        saga: Arc<str>,
        /// The saga id.
        id: Arc<str>,
        /// The step's name.
        step: Arc<str>,
        /// What happened.
        outcome: StepOutcome,
        /// The last attempt's number.
        attempt: u32,
        /// How long it took.
        duration: Duration,
    },
    /// A saga reached its end.
    Finished {
        /// The definition's name.
        saga: Arc<str>,
        /// The saga id.
        id: Arc<str>,
        /// How it ended.
        outcome: ExecutionOutcome,
        /// How long this runner ran it (since it started or resumed it).
        duration: Duration,
    },
}
