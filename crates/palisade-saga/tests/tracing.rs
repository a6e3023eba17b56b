//! The `tracing` adapter: events with target `palisade_saga`, and a `saga`
//! span around each run with a `step` span per step inside it.
#![cfg(feature = "tracing")]

mod common;

use std::sync::{Arc, Mutex};

use common::{Kind, Participant, step};
use palisade_saga::{InMemoryEventStore, Saga};
use palisade_test_support::Collector;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[test]
fn events_at_their_levels() {
    let collector = Collector::new();
    let p = Participant::new();
    p.fail(1, false, 1);
    let saga = Saga::builder("order", InMemoryEventStore::new())
        .tracing()
        .step(step(&p, 0, Kind::Compensatable { compensation: true }, 1))
        .step(step(&p, 1, Kind::Pivot, 1))
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    collector
        .run(|| rt.block_on(saga.start("o-1", vec![])))
        .unwrap();
    let events: Vec<_> = collector
        .events()
        .into_iter()
        .filter(|e| e.target == "palisade_saga")
        .map(|e| {
            (
                e.level.to_string(),
                e.fields.split(" instance=").next().unwrap().to_owned(),
            )
        })
        .collect();
    let expect = |l: &str, m: &str| (l.to_owned(), format!("message={m}"));
    assert_eq!(
        events,
        [
            expect("INFO", "saga started"),
            expect("DEBUG", "saga step finished"),
            expect("DEBUG", "saga step finished"),
            expect("DEBUG", "saga step finished"),
            expect("INFO", "saga finished"),
        ]
    );
}

/// A span: its name, the span entered when it was made, its id.
type Made = (String, Option<u64>, u64);

/// Records each span's name and its parent's name.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Made>>>, Arc<Mutex<Vec<u64>>>);

impl Subscriber for Spans {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut spans = self.0.lock().unwrap();
        let id = spans.len() as u64 + 1;
        let parent = self.1.lock().unwrap().last().copied();
        spans.push((span.metadata().name().to_owned(), parent, id));
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, span: &Id) {
        self.1.lock().unwrap().push(span.into_u64());
    }
    fn exit(&self, _: &Id) {
        self.1.lock().unwrap().pop();
    }
}

#[test]
fn a_saga_span_with_a_step_span_per_step_and_compensation() {
    let spans = Spans::default();
    let p = Participant::new();
    p.fail(1, false, 1);
    let saga = Saga::builder("order", InMemoryEventStore::new())
        .tracing()
        .step(step(&p, 0, Kind::Compensatable { compensation: true }, 1))
        .step(step(&p, 1, Kind::Pivot, 1))
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    tracing::subscriber::with_default(spans.clone(), || {
        tracing::callsite::rebuild_interest_cache();
        rt.block_on(saga.start("o-1", vec![])).unwrap();
    });
    let recorded = spans.0.lock().unwrap().clone();
    let named: Vec<_> = recorded
        .iter()
        .map(|(n, parent, _)| (n.as_str(), *parent))
        .collect();
    // saga is span 1; the step spans (two actions, one compensation) are its children.
    assert_eq!(
        named,
        [
            ("saga", None),
            ("step", Some(1)),
            ("step", Some(1)),
            ("step", Some(1))
        ]
    );
}
