//! The records of a saga's log: one event in its stream per decision.

use serde::{Deserialize, Serialize};

/// One decision in a saga's log (an event of its stream, `event_type` is
/// [`Record::event_type`], the payload this enum as JSON).
///
/// Written before the work it announces runs: `StepStarted` before the
/// action is called, `CompensationStarted` before the compensation, so after
/// a crash the log says what may have run. A step's `StepCompleted` is
/// written in one append with the record that follows it (the next step's
/// `StepStarted`, a claim, the end), so a crash in between runs the step
/// again on recovery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum Record {
    /// The saga began with this state.
    SagaStarted {
        /// The definition's name.
        saga: String,
        /// The initial state.
        state: serde_json::Value,
        /// The whole saga's deadline (wall-clock nanoseconds), if it has one.
        deadline: Option<u64>,
        /// The W3C `traceparent` of the span current when the saga started
        /// (with the `otel` adapter's tracer), so a resumed run continues its trace.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        traceparent: Option<String>,
    },
    /// `owner` runs the saga until `until` (wall-clock nanoseconds) or until it renews.
    Claimed {
        /// The runner.
        owner: String,
        /// The end of its lease.
        until: u64,
    },
    /// An attempt of a step's action is about to run.
    StepStarted {
        /// The branch of a parallel step, if it is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<usize>,
        /// The step index.
        step: usize,
        /// The attempt of the step, from 1, counted across recoveries.
        attempt: u32,
        /// The step's deadline (wall-clock nanoseconds), set by its first attempt.
        deadline: Option<u64>,
    },
    /// The step waits for the first event delivered for `correlation`
    /// (a step made by [`Step::await_event`](crate::Step::await_event)).
    Waiting {
        /// The step index.
        step: usize,
        /// The correlation it waits on.
        correlation: String,
    },
    /// The event that ended the wait of step `step` (written with its `StepCompleted`).
    EventReceived {
        /// The step index.
        step: usize,
        /// The event's id.
        event: uuid::Uuid,
        /// The event's type.
        event_type: String,
    },
    /// An attempt of a step's action failed.
    StepAttemptFailed {
        /// The branch of a parallel step, if it is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<usize>,
        /// The step index.
        step: usize,
        /// The attempt.
        attempt: u32,
        /// The error, displayed.
        error: String,
    },
    /// The step's action succeeded; the saga's state is now `state`.
    StepCompleted {
        /// The step index.
        step: usize,
        /// The state after the step.
        state: serde_json::Value,
    },
    /// A branch of the parallel step `step` completed with this state.
    BranchCompleted {
        /// The parallel step's index.
        step: usize,
        /// The branch's index.
        branch: usize,
        /// The state the branch returned (merged into the saga's when every branch completed).
        state: serde_json::Value,
    },
    /// The step failed for good this round: before or at the pivot the saga
    /// compensates (`compensate`); after it, the step is tried again after a backoff.
    StepFailed {
        /// The branch of a parallel step, if it is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<usize>,
        /// The step index.
        step: usize,
        /// Why.
        error: String,
        /// Whether the saga now compensates.
        compensate: bool,
    },
    /// An attempt of a compensation is about to run.
    CompensationStarted {
        /// The branch of a parallel step, if it is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<usize>,
        /// The step index.
        step: usize,
        /// The attempt, from 1, counted across recoveries.
        attempt: u32,
    },
    /// An attempt of a compensation failed.
    CompensationFailed {
        /// The branch of a parallel step, if it is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<usize>,
        /// The step index.
        step: usize,
        /// The attempt.
        attempt: u32,
        /// The error, displayed.
        error: String,
    },
    /// The step's compensation succeeded.
    CompensationCompleted {
        /// The branch of a parallel step, if it is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<usize>,
        /// The step index.
        step: usize,
    },
    /// Every step completed.
    SagaCompleted {
        /// The final state.
        state: serde_json::Value,
    },
    /// Every completed step was compensated after `error`.
    SagaCompensated {
        /// The failure that started the compensation.
        error: String,
    },
    /// The saga cannot finish by itself: a compensation (or a step after the
    /// pivot) failed as many times as allowed. An operator must act.
    SagaFailed {
        /// The branch of a parallel step, if it is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        branch: Option<usize>,
        /// The step index whose compensation or action could not finish.
        step: usize,
        /// Its last error.
        error: String,
    },
}

impl Record {
    /// The event type it is stored under: the variant's name.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::SagaStarted { .. } => "SagaStarted",
            Self::Claimed { .. } => "Claimed",
            Self::StepStarted { .. } => "StepStarted",
            Self::Waiting { .. } => "Waiting",
            Self::EventReceived { .. } => "EventReceived",
            Self::StepAttemptFailed { .. } => "StepAttemptFailed",
            Self::StepCompleted { .. } => "StepCompleted",
            Self::BranchCompleted { .. } => "BranchCompleted",
            Self::StepFailed { .. } => "StepFailed",
            Self::CompensationStarted { .. } => "CompensationStarted",
            Self::CompensationFailed { .. } => "CompensationFailed",
            Self::CompensationCompleted { .. } => "CompensationCompleted",
            Self::SagaCompleted { .. } => "SagaCompleted",
            Self::SagaCompensated { .. } => "SagaCompensated",
            Self::SagaFailed { .. } => "SagaFailed",
        }
    }

    /// Whether the saga ends with this record.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::SagaCompleted { .. } | Self::SagaCompensated { .. } | Self::SagaFailed { .. }
        )
    }
}

/// The event types of the records that start or end a saga (what recovery reads).
pub(crate) const LIFECYCLE_TYPES: [&str; 4] = [
    "SagaStarted",
    "SagaCompleted",
    "SagaCompensated",
    "SagaFailed",
];
