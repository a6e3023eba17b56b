//! The conformance suite on the in-memory store.

mod conformance;

use std::sync::Arc;

use palisade_event_store::InMemoryEventStore;

#[allow(clippy::unused_async)] // every backend factory has the same async signature
async fn memory(_test: &str) -> Option<conformance::Store> {
    Some(Arc::new(InMemoryEventStore::new()))
}

conformance_tests!(memory);
