//! Events as `tracing` events with target `palisade_bulkhead` (feature
//! `tracing`): an adapter over the bulkhead's [`Event`]s, added when the
//! builder asks with [`tracing`](BulkheadBuilder::tracing).

use std::sync::Arc;

use palisade_core::Listener;

use crate::{BulkheadBuilder, Event};

impl BulkheadBuilder {
    /// Emits every event as a `tracing` event with target `palisade_bulkhead`:
    /// limit changes at `INFO`, rejections at `DEBUG`, permits and releases at `TRACE`.
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
            Event::Permitted { weight, waited } => tracing::trace!(
                target: "palisade_bulkhead",
                instance = %self.name,
                weight, ?waited, "permitted"
            ),
            Event::Rejected {
                weight,
                reason,
                waited,
            } => tracing::debug!(
                target: "palisade_bulkhead",
                instance = %self.name,
                weight, %reason, ?waited, "call rejected"
            ),
            Event::Released { weight } => tracing::trace!(
                target: "palisade_bulkhead",
                instance = %self.name,
                weight, "released"
            ),
            Event::LimitChanged { from, to } => tracing::info!(
                target: "palisade_bulkhead",
                instance = %self.name,
                from, to, "bulkhead limit changed"
            ),
        }
    }
}
