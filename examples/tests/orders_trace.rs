//! One order is one trace: from the HTTP request through the saga, every
//! step, the event store and the projection. Its own test binary: it
//! installs the global tracer provider and propagator.

use std::collections::HashSet;
use std::time::Duration;

use opentelemetry::global;
use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use palisade_examples::orders::client::HttpClient;
use palisade_examples::orders::provider::Faults;
use palisade_examples::orders::{Service, Settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_from_the_request_through_every_saga_step_the_store_and_the_projection()
 {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    global::set_tracer_provider(provider.clone());
    global::set_text_map_propagator(TraceContextPropagator::new());

    let service = Service::start(Settings {
        faults: Faults {
            error_rate: 0.0,
            spike_rate: 0.0,
            spike: Duration::ZERO,
        },
        ..Settings::default()
    })
    .await
    .unwrap();
    let placed = HttpClient::new()
        .post_json(
            &format!("{}/orders", service.url()),
            &[("x-api-key", "pro-1")],
            br#"{"sku":"lamp","quantity":1}"#.to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(placed.status, 201);
    service.caught_up().await.unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let root = spans
        .iter()
        .find(|s| s.name == "POST /orders")
        .expect("the request's span");
    assert_eq!(root.span_kind, SpanKind::Server);
    let trace = root.span_context.trace_id();
    let in_trace: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect();
    let count = |name: &str| in_trace.iter().filter(|s| s.name == name).count();

    assert_eq!(count("saga order"), 1);
    // place and complete; reserve and settle.
    assert_eq!(count("cqrs.command order"), 2);
    assert_eq!(count("cqrs.command stock"), 2);
    for step in [
        "place", "reserve", "payment", "charge", "ship", "settle", "complete",
    ] {
        assert_eq!(count(&format!("step {step}")), 1, "step {step}");
    }
    // Placed and completed: the two order events the projection applies.
    assert_eq!(count("project order_views"), 2);
    assert!(
        count("event_store.append") >= 9,
        "{} appends",
        count("event_store.append")
    );
    // Every span of the trace hangs from the request: no orphan parent.
    let ids: HashSet<_> = in_trace.iter().map(|s| s.span_context.span_id()).collect();
    for span in &in_trace {
        if span.span_context.span_id() != root.span_context.span_id() {
            assert!(
                ids.contains(&span.parent_span_id),
                "{} has a parent outside the trace",
                span.name
            );
        }
    }
    // The saga's run is a child of the request.
    let saga = in_trace.iter().find(|s| s.name == "saga order").unwrap();
    assert_eq!(saga.parent_span_id, root.span_context.span_id());
}
