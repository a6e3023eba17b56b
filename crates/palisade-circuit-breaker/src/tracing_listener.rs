//! Events as `tracing` events with target `palisade_circuit_breaker` (feature
//! `tracing`): an adapter over the breaker's [`Event`]s, added when the
//! builder asks with [`tracing`](CircuitBreakerBuilder::tracing).

use std::sync::Arc;

use palisade_core::Listener;

use crate::{CircuitBreakerBuilder, Event};

impl CircuitBreakerBuilder {
    /// Emits every event as a `tracing` event with target
    /// `palisade_circuit_breaker`: transitions at `INFO`, rejections at
    /// `DEBUG`, finished calls at `TRACE`.
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    pub fn tracing(mut self) -> Self {
        self.tracing = true;
        self
    }
}

pub(crate) struct TracingListener {
    pub(crate) name: Arc<str>,
}

impl Listener<Event> for TracingListener {
    fn on_event(&self, event: &Event) {
        match *event {
            Event::CallFinished {
                outcome,
                slow,
                duration,
                state,
            } => tracing::trace!(
                target: "palisade_circuit_breaker",
                instance = %self.name,
                ?outcome, slow, ?duration, %state, "call finished"
            ),
            Event::CallRejected { state, retry_after } => tracing::debug!(
                target: "palisade_circuit_breaker",
                instance = %self.name,
                %state, ?retry_after, "call rejected"
            ),
            Event::StateTransition { from, to } => tracing::info!(
                target: "palisade_circuit_breaker",
                instance = %self.name,
                %from, %to, "circuit breaker state changed"
            ),
        }
    }
}
