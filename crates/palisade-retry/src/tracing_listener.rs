//! Events as `tracing` events with target `palisade_retry` (feature
//! `tracing`): an adapter over the retry's [`Event`]s, added when the builder
//! asks with [`tracing`](RetryBuilder::tracing).

use std::sync::Arc;

use palisade_core::Listener;

use crate::{Event, HedgeBuilder, RetryBuilder, StopReason};

impl RetryBuilder {
    /// Emits every event as a `tracing` event with target `palisade_retry`:
    /// an exhausted budget at `WARN`, scheduled retries, timeouts and hedges at
    /// `DEBUG`, finished calls at `TRACE` (`DEBUG` when they failed).
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    pub fn tracing(mut self) -> Self {
        self.listening.tracing = true;
        self
    }
}

impl HedgeBuilder {
    /// Emits every event as a `tracing` event with target `palisade_retry`,
    /// as [`RetryBuilder::tracing`] does.
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    pub fn tracing(mut self) -> Self {
        self.listening.tracing = true;
        self
    }
}

pub(crate) struct TracingListener {
    pub(crate) name: Arc<str>,
}

impl Listener<Event> for TracingListener {
    fn on_event(&self, event: &Event) {
        match *event {
            Event::RetryScheduled {
                attempt,
                delay,
                from_result,
            } => tracing::debug!(
                target: "palisade_retry",
                instance = %self.name,
                attempt, ?delay, from_result, "retry scheduled"
            ),
            Event::BudgetExhausted { attempts } => tracing::warn!(
                target: "palisade_retry",
                instance = %self.name,
                attempts, "retry budget exhausted; returning the last error"
            ),
            Event::AttemptTimedOut { attempt, limit } => tracing::debug!(
                target: "palisade_retry",
                instance = %self.name,
                attempt, ?limit, "attempt timed out"
            ),
            Event::HedgeStarted { attempt, after } => tracing::debug!(
                target: "palisade_retry",
                instance = %self.name,
                attempt, ?after, "hedged attempt started"
            ),
            Event::Finished {
                attempts,
                stop: StopReason::Succeeded,
            } => tracing::trace!(
                target: "palisade_retry",
                instance = %self.name,
                attempts, stop = "succeeded", "call finished"
            ),
            Event::Finished { attempts, stop } => tracing::debug!(
                target: "palisade_retry",
                instance = %self.name,
                attempts, stop = stop.as_str(), "call failed"
            ),
        }
    }
}
