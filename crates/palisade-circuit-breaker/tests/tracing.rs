//! The `tracing` feature: transitions and rejections become events with the crate's target.
#![cfg(feature = "tracing")]

use std::sync::{Arc, Mutex};

use palisade_circuit_breaker::{CircuitBreaker, SlidingWindow, State};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Collects (target, level, message + fields) of every event.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<(String, Level, String)>>>);

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl Subscriber for Collect {
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
        self.0.lock().unwrap().push((
            event.metadata().target().to_string(),
            *event.metadata().level(),
            fields.0.trim_end().to_string(),
        ));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn transitions_and_rejections_are_traced_with_the_instance_name() {
    let collect = Collect::default();
    let breaker = CircuitBreaker::builder()
        .tracing()
        .name("ledger")
        .sliding_window(SlidingWindow::count(1))
        .minimum_calls(1)
        .build()
        .unwrap();
    tracing::subscriber::with_default(collect.clone(), || {
        breaker.try_acquire().unwrap().failure();
        assert!(breaker.try_acquire().is_err());
    });
    assert_eq!(breaker.state(), State::Open);
    let events = collect.0.lock().unwrap();
    let seen: Vec<_> = events
        .iter()
        .map(|(target, level, fields)| (target.as_str(), *level, fields.as_str()))
        .collect();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert!(seen.iter().all(|e| e.0 == "palisade_circuit_breaker"));
    assert_eq!(seen[0].1, Level::TRACE);
    assert!(seen[0].2.contains("outcome=Failure"), "{}", seen[0].2);
    assert_eq!(
        seen[1],
        (
            "palisade_circuit_breaker",
            Level::INFO,
            "message=circuit breaker state changed instance=ledger from=closed to=open"
        )
    );
    assert_eq!(seen[2].1, Level::DEBUG);
    assert!(
        seen[2]
            .2
            .starts_with("message=call rejected instance=ledger state=open retry_after=Some("),
        "{}",
        seen[2].2
    );
}
