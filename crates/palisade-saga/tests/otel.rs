//! The OpenTelemetry instruments and spans, read back from the SDK's in-memory exporters.
#![cfg(feature = "otel")]

mod common;

use std::collections::BTreeMap;

use common::{Kind, Participant, step};
use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use palisade_saga::telemetry::{EXECUTIONS, STEP_DURATION};
use palisade_saga::{InMemoryEventStore, Saga};

type Attrs = Vec<(String, String)>;

fn attrs<'a>(kvs: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> Attrs {
    let mut v: Attrs = kvs
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect();
    v.sort();
    v
}

fn pairs(list: &[(&str, &str)]) -> Attrs {
    let mut v: Attrs = list
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn executions_step_durations_and_spans() {
    let metrics = InMemoryMetricExporter::default();
    let meters = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics.clone()).build())
        .build();
    let spans = InMemorySpanExporter::default();
    let tracers = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let p = Participant::new();
    let saga = Saga::builder("order", InMemoryEventStore::new())
        .meter(meters.meter("test"))
        .tracer(opentelemetry::global::BoxedTracer::new(Box::new(
            tracers.tracer("test"),
        )))
        .step(step(&p, 0, Kind::Compensatable { compensation: true }, 1))
        .step(step(&p, 1, Kind::Pivot, 1))
        .build()
        .unwrap();
    saga.start("ok", vec![]).await.unwrap();
    p.fail(1, false, 1);
    saga.start("declined", vec![]).await.unwrap();

    meters.force_flush().unwrap();
    let exported = metrics.get_finished_metrics().unwrap();
    let mut counters = BTreeMap::new();
    let mut histograms = BTreeMap::new();
    let mut units = BTreeMap::new();
    for scope in exported.last().unwrap().scope_metrics() {
        for metric in scope.metrics() {
            units.insert(metric.name().to_owned(), metric.unit().to_owned());
            match metric.data() {
                AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                    for d in sum.data_points() {
                        counters
                            .insert((metric.name().to_owned(), attrs(d.attributes())), d.value());
                    }
                }
                AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                    for d in h.data_points() {
                        histograms
                            .insert((metric.name().to_owned(), attrs(d.attributes())), d.count());
                    }
                }
                other => panic!("unexpected {}: {other:?}", metric.name()),
            }
        }
    }
    let execution = |outcome: &str| {
        (
            EXECUTIONS.to_owned(),
            pairs(&[
                ("palisade.instance", "order"),
                ("palisade.outcome", outcome),
            ]),
        )
    };
    assert_eq!(
        counters.get(&execution("completed")),
        Some(&1),
        "{counters:#?}"
    );
    assert_eq!(counters.get(&execution("compensated")), Some(&1));
    assert_eq!(counters.len(), 2);
    let step = |name: &str, outcome: &str| {
        (
            STEP_DURATION.to_owned(),
            pairs(&[
                ("palisade.instance", "order"),
                ("palisade.saga.step", name),
                ("palisade.outcome", outcome),
            ]),
        )
    };
    assert_eq!(
        histograms.get(&step("s0", "completed")),
        Some(&2),
        "{histograms:#?}"
    );
    assert_eq!(histograms.get(&step("s1", "completed")), Some(&1));
    assert_eq!(histograms.get(&step("s1", "failed")), Some(&1));
    assert_eq!(histograms.get(&step("s0", "compensated")), Some(&1));
    assert_eq!(histograms.len(), 4);
    assert_eq!(units[STEP_DURATION], "s");

    let finished = spans.get_finished_spans().unwrap();
    let sagas: Vec<_> = finished.iter().filter(|s| s.name == "saga order").collect();
    assert_eq!(sagas.len(), 2);
    for saga_span in sagas {
        let children: Vec<_> = finished
            .iter()
            .filter(|s| s.parent_span_id == saga_span.span_context.span_id())
            .map(|s| s.name.to_string())
            .collect();
        let id = saga_span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "palisade.saga.id")
            .unwrap()
            .value
            .to_string();
        let outcome = saga_span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "palisade.outcome")
            .unwrap()
            .value
            .to_string();
        match id.as_str() {
            "ok" => {
                assert_eq!(children, ["step s0", "step s1"]);
                assert_eq!(outcome, "completed");
            }
            "declined" => {
                assert_eq!(children, ["step s0", "step s1", "step s0"]);
                assert_eq!(outcome, "compensated");
            }
            other => panic!("{other}"),
        }
    }
}

#[tokio::test]
async fn a_resumed_saga_continues_the_trace_it_started_in() {
    use opentelemetry::trace::{TraceContextExt, Tracer};
    use std::time::Duration;

    let spans = InMemorySpanExporter::default();
    let tracers = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let store = std::sync::Arc::new(InMemoryEventStore::new());
    let clock = palisade_saga::ManualClock::new();
    let p = Participant::new();
    let build = |owner: &str, p: &Participant| {
        Saga::builder("order", std::sync::Arc::clone(&store))
            .owner(owner.to_owned())
            .clock(clock.shared())
            .lease(Duration::from_secs(10))
            .tracer(opentelemetry::global::BoxedTracer::new(Box::new(
                tracers.tracer("test"),
            )))
            .step(step(p, 0, Kind::Compensatable { compensation: true }, 1))
            .build()
            .unwrap()
    };
    p.hang(0);
    let request = tracers.tracer("test").start("request");
    let request_cx = opentelemetry::Context::current_with_span(request);
    let (trace_id, span_id) = {
        let sc = request_cx.span().span_context().clone();
        (sc.trace_id(), sc.span_id())
    };
    {
        let _in_request = request_cx.clone().attach();
        let first = build("a", &p);
        assert!(
            common::crash_after(100, first.start("x", vec![]))
                .await
                .is_none()
        );
    }
    request_cx.span().end();
    clock.advance(Duration::from_secs(10));
    let healthy = Participant::new();
    let resumed = build("b", &healthy).recover().await.unwrap();
    assert_eq!(resumed.len(), 1);
    let finished = spans.get_finished_spans().unwrap();
    let resumed_run = |s: &&opentelemetry_sdk::trace::SpanData| {
        s.name == "saga order"
            && s.attributes.iter().any(|kv| {
                kv.key.as_str() == "palisade.saga.resumed" && kv.value.to_string() == "true"
            })
    };
    let saga_span = finished
        .iter()
        .find(resumed_run)
        .expect("the resumed run's span");
    assert_eq!(saga_span.span_context.trace_id(), trace_id);
    assert_eq!(saga_span.parent_span_id, span_id);
}
