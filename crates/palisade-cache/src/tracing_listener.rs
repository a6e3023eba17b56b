//! Events as `tracing` events with target `palisade_cache` (feature
//! `tracing`): an adapter over the cache's [`Event`]s, added when the builder
//! asks with [`tracing`](CacheBuilder::tracing).

use std::hash::Hash;
use std::sync::Arc;

use palisade_core::Listener;

use crate::{CacheBuilder, Event};

impl<K, V> CacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Emits every event as a `tracing` event with target `palisade_cache`:
    /// loads at `DEBUG`, lookups, removals and sizes at `TRACE`. Default: off.
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    #[must_use]
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
            Event::Hit => tracing::trace!(target: "palisade_cache", instance = %self.name, "hit"),
            Event::Miss => tracing::trace!(target: "palisade_cache", instance = %self.name, "miss"),
            Event::StaleServed => tracing::debug!(
                target: "palisade_cache",
                instance = %self.name,
                "stale value served"
            ),
            Event::LoadFinished { outcome, duration } => tracing::debug!(
                target: "palisade_cache",
                instance = %self.name,
                ?outcome, ?duration, "load finished"
            ),
            Event::Removed { cause } => tracing::trace!(
                target: "palisade_cache",
                instance = %self.name,
                %cause, "entry removed"
            ),
            Event::Sizes {
                entries,
                weighted_size,
            } => tracing::trace!(
                target: "palisade_cache",
                instance = %self.name,
                entries, weighted_size, "sizes"
            ),
        }
    }
}
