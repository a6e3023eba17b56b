//! Events as `tracing` events with target `palisade_event_store` (feature
//! `tracing`): an adapter over the store's [`Event`]s, added when a builder
//! asks with `tracing()`.

use std::sync::Arc;

use palisade_core::Listener;

use crate::event::Event;
use crate::instrumented::InstrumentedBuilder;
use crate::store::EventStore;
use crate::subscription::SubscriptionBuilder;

impl<S: EventStore> InstrumentedBuilder<S> {
    /// Emits every event as a `tracing` event with target
    /// `palisade_event_store`: failed operations at `WARN` (conflicts at
    /// `DEBUG`), the rest at `DEBUG` or `TRACE`. Default: off.
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    pub fn tracing(mut self) -> Self {
        self.tracing = true;
        self
    }
}

impl SubscriptionBuilder {
    /// Emits each page read as a `tracing` event with target
    /// `palisade_event_store` at `DEBUG`. Default: off.
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
        match event {
            Event::OperationFinished {
                operation,
                duration,
                error: None,
            } => tracing::trace!(
                target: "palisade_event_store",
                instance = %self.name,
                %operation, ?duration, "operation finished"
            ),
            Event::OperationFinished {
                operation,
                duration,
                error: Some("conflict"),
            } => tracing::debug!(
                target: "palisade_event_store",
                instance = %self.name,
                %operation, ?duration, error.r#type = "conflict", "operation failed"
            ),
            Event::OperationFinished {
                operation,
                duration,
                error: Some(error),
            } => tracing::warn!(
                target: "palisade_event_store",
                instance = %self.name,
                %operation, ?duration, error.r#type = error, "operation failed"
            ),
            Event::Appended { events } => tracing::debug!(
                target: "palisade_event_store",
                instance = %self.name,
                events, "events appended"
            ),
            Event::SubscriptionRead {
                subscription,
                events,
                lag,
            } => tracing::debug!(
                target: "palisade_event_store",
                instance = %self.name,
                %subscription, events,
                lag = %lag.map_or_else(|| "unknown".to_owned(), |l| l.to_string()),
                "subscription read"
            ),
            Event::SubscriptionFailed {
                subscription,
                error,
                attempt,
                retry_in,
            } => tracing::warn!(
                target: "palisade_event_store",
                instance = %self.name,
                %subscription, %error, attempt, ?retry_in, "subscription read failed; retrying"
            ),
        }
    }
}
