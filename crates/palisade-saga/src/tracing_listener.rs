//! `tracing` events and spans with target `palisade_saga` (feature `tracing`),
//! added when the builder asks with [`tracing`](SagaBuilder::tracing): a span
//! `saga {name}` around each run of a saga, a child span per step and per
//! compensation, and the runner's [`Event`]s as events.

use palisade_core::Listener;

use crate::config::SagaBuilder;
use crate::event::{Event, ExecutionOutcome, StepOutcome};
use crate::saga::SagaState;

impl<S: SagaState> SagaBuilder<S> {
    /// Runs each saga in a span named `saga` (`otel.name` = `saga {name}`,
    /// fields `palisade.instance`, `saga.id`) with a child span `step` per
    /// step and compensation attempt (fields `saga.step`, `saga.compensation`),
    /// and emits the runner's events with target `palisade_saga`: starts and
    /// ends at `INFO` (a `failed` end at `ERROR`), steps at `DEBUG` (a failed
    /// compensation attempt at `WARN`).
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    #[must_use]
    pub fn tracing(mut self) -> Self {
        self.tracing = true;
        self
    }
}

/// The span of one run of a saga (disabled unless the builder asked for `tracing`).
pub(crate) fn saga_span(enabled: bool, name: &str, id: &str) -> tracing::Span {
    if !enabled {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: "palisade_saga",
        "saga",
        otel.name = %format_args!("saga {name}"),
        palisade.instance = %name,
        saga.id = %id,
    )
}

/// The span of one step or compensation attempt, a child of the current one.
pub(crate) fn step_span(
    enabled: bool,
    step: &str,
    compensation: bool,
    attempt: u32,
) -> tracing::Span {
    if !enabled {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: "palisade_saga",
        "step",
        otel.name = %format_args!("step {step}"),
        saga.step = %step,
        saga.compensation = compensation,
        saga.attempt = attempt,
    )
}

pub(crate) struct TracingListener;

impl Listener<Event> for TracingListener {
    fn on_event(&self, event: &Event) {
        match event {
            Event::Started {
                saga, id, resumed, ..
            } => tracing::info!(
                target: "palisade_saga",
                instance = %saga, id = %id, resumed, "saga started"
            ),
            Event::Step {
                saga,
                id,
                step,
                outcome,
                attempt,
                duration,
            } => {
                if *outcome == StepOutcome::CompensationFailed {
                    tracing::warn!(
                        target: "palisade_saga",
                        instance = %saga, id = %id, step = %step, outcome = outcome.as_str(),
                        attempt, ?duration, "saga compensation attempt failed"
                    );
                } else {
                    tracing::debug!(
                        target: "palisade_saga",
                        instance = %saga, id = %id, step = %step, outcome = outcome.as_str(),
                        attempt, ?duration, "saga step finished"
                    );
                }
            }
            Event::Finished {
                saga,
                id,
                outcome,
                duration,
            } => {
                if *outcome == ExecutionOutcome::Failed {
                    tracing::error!(
                        target: "palisade_saga",
                        instance = %saga, id = %id, outcome = outcome.as_str(), ?duration,
                        "saga failed: a compensation could not finish"
                    );
                } else {
                    tracing::info!(
                        target: "palisade_saga",
                        instance = %saga, id = %id, outcome = outcome.as_str(), ?duration,
                        "saga finished"
                    );
                }
            }
        }
    }
}
