//! The `tracing` feature: a `cqrs.command {aggregate}` span per command with
//! its outcome and counts, and events with target `palisade_cqrs`.
#![cfg(feature = "tracing")]

mod common;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use common::{Account, Command};
use palisade_cqrs::{CommandHandler, EventStore, InMemoryEventStore};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Spans (name and fields, recorded later ones appended) and events.
type Seen = (Vec<(String, String)>, Vec<String>);

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Seen>>);

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, "{}={} ", field.name(), value);
    }
}

impl Subscriber for Spans {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = String::new();
        span.record(&mut Fields(&mut fields));
        let mut g = self.0.lock().unwrap();
        g.0.push((span.metadata().name().to_owned(), fields));
        Id::from_u64(g.0.len() as u64)
    }
    fn record(&self, id: &Id, values: &Record<'_>) {
        let mut g = self.0.lock().unwrap();
        let entry = &mut g.0[id.into_u64() as usize - 1].1;
        values.record(&mut Fields(entry));
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = format!("{} ", event.metadata().target());
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().1.push(fields);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn each_command_runs_in_a_span_with_its_outcome() {
    let spans = Spans::default();
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let accounts = CommandHandler::<Account>::builder(store, ())
        .name("bank")
        .tracing()
        .build()
        .unwrap();
    tracing::subscriber::with_default(spans.clone(), || {
        tracing::callsite::rebuild_interest_cache();
        palisade_cqrs::testkit::block_on(async {
            accounts.execute("a", &Command::Open).await.unwrap();
            accounts
                .execute("a", &Command::Withdraw(3))
                .await
                .unwrap_err();
        });
    });
    let (spans, events) = spans.0.lock().unwrap().clone();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert_eq!(spans[0].0, "cqrs.command");
    assert_eq!(
        spans[0].1,
        "otel.name=cqrs.command account aggregate=account aggregate.id=a handler=bank outcome=accepted attempts=1 conflicts=0 "
    );
    assert!(
        spans[1]
            .1
            .ends_with("outcome=rejected attempts=0 conflicts=0 "),
        "{}",
        spans[1].1
    );
    assert_eq!(events.len(), 2, "{events:#?}");
    assert!(events[0].starts_with("palisade_cqrs message=command executed handler=bank aggregate=account outcome=accepted attempts=1 conflicts=0 events=1 duplicate=false"), "{}", events[0]);
    assert!(events[1].contains("outcome=rejected"), "{}", events[1]);
}
