//! A `tracing` subscriber that keeps every event, for the tests of the
//! crates' `tracing` adapters.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One event as a test reads it: target, level, and `name=value` fields in
/// order (the message first, as `message=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traced {
    /// The event's target (the crate name).
    pub target: String,
    /// Its level.
    pub level: Level,
    /// Its fields, `name=value` separated by single spaces.
    pub fields: String,
}

/// Collects every event emitted while it is the default subscriber.
#[derive(Clone, Default)]
pub struct Collector(Arc<Mutex<Vec<Traced>>>);

impl Collector {
    /// A collector with nothing in it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` with this collector as the thread's default subscriber.
    ///
    /// tracing caches each call site's interest for the whole process; the
    /// collector says "sometimes" and the cache is rebuilt here, so a call
    /// site first reached in another test (with no subscriber) still reports.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        tracing::subscriber::with_default(self.clone(), || {
            tracing::callsite::rebuild_interest_cache();
            f()
        })
    }

    /// What it has collected so far.
    pub fn events(&self) -> Vec<Traced> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, "{}={} ", field.name(), value);
    }
}

impl Subscriber for Collector {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Traced {
                target: event.metadata().target().to_owned(),
                level: *event.metadata().level(),
                fields: fields.0.trim_end().to_owned(),
            });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}
