//! Events as `tracing` events with target `palisade_circuit_breaker` (feature `tracing`).

use std::sync::Arc;

use palisade_core::Listener;

use crate::Event;

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
