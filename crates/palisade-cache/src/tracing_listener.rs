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
    /// loads at `DEBUG`; lookup and removal counts and sizes, after each
    /// maintenance run, at `TRACE`. Default: off.
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
            Event::Lookups {
                hits,
                misses,
                stale,
            } => tracing::trace!(
                target: "palisade_cache",
                instance = %self.name,
                hits, misses, stale, "lookups"
            ),
            Event::LoadFinished { outcome, duration } => tracing::debug!(
                target: "palisade_cache",
                instance = %self.name,
                ?outcome, ?duration, "load finished"
            ),
            Event::Removed { cause, count } => tracing::trace!(
                target: "palisade_cache",
                instance = %self.name,
                %cause, count, "entries removed"
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
