//! Spans, instruments and trace propagation of `Instrumented`, read back from the SDK.
#![cfg(feature = "otel")]

use std::collections::BTreeMap;

use futures_util::TryStreamExt;
use opentelemetry::global::BoxedTracer;
use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::{Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use palisade_event_store::telemetry::{
    CONFLICTS, EVENTS_APPENDED, OPERATION_DURATION, SUBSCRIPTION_LAG,
};
use palisade_event_store::*;

fn attrs<'a>(kvs: impl Iterator<Item = &'a KeyValue>) -> BTreeMap<String, String> {
    kvs.map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

#[tokio::test]
async fn operations_are_spans_and_instruments_and_appends_carry_the_trace() {
    let metrics = InMemoryMetricExporter::default();
    let meters = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics.clone()).build())
        .build();
    let spans = InMemorySpanExporter::default();
    let tracers = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let store = Instrumented::builder(InMemoryEventStore::new())
        .name("orders")
        .meter(meters.meter("test"))
        .tracer(BoxedTracer::new(Box::new(tracers.tracer("test"))))
        .build()
        .unwrap();
    let s = StreamName::new("order-1").unwrap();

    // Inside a request span: the append's span is its child and the events carry its trace.
    let request = tracers.tracer("app").start("POST /orders");
    let request_cx = Context::current_with_span(request);
    let trace_id = request_cx.span().span_context().trace_id();
    {
        let _guard = request_cx.clone().attach();
        store
            .append(
                &s,
                ExpectedVersion::NoStream,
                vec![NewEvent::new("A", vec![1]), NewEvent::new("B", vec![2])],
            )
            .await
            .unwrap();
    }
    request_cx.span().end();
    let err = store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("C", vec![3])],
        )
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    let events: Vec<_> = store
        .read_stream(&s, ReadStream::forward())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let traceparent = events[0]
        .metadata
        .traceparent
        .clone()
        .expect("trace context written");
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "{traceparent}"
    );
    assert_eq!(events[1].metadata.traceparent, Some(traceparent));

    // Spans
    let finished = spans.get_finished_spans().unwrap();
    let names: Vec<_> = finished.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(
        names,
        [
            "event_store.append",
            "POST /orders",
            "event_store.append",
            "event_store.read_stream"
        ]
    );
    let first = &finished[0];
    assert_eq!(
        first.span_context.trace_id(),
        trace_id,
        "a child of the request"
    );
    assert_eq!(
        attrs(first.attributes.iter()),
        BTreeMap::from([
            ("db.collection.name".into(), "order-1".into()),
            ("db.operation.name".into(), "append".into()),
            ("db.system.name".into(), "palisade.memory".into()),
        ])
    );
    let conflict = &finished[2];
    assert!(matches!(conflict.status, Status::Error { .. }));
    assert!(
        conflict
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "error.type" && kv.value.as_str() == "conflict")
    );

    // Instruments
    meters.force_flush().unwrap();
    let exported = metrics.get_finished_metrics().unwrap();
    let mut sums = BTreeMap::new();
    let mut durations = BTreeMap::new();
    for scope in exported.last().unwrap().scope_metrics() {
        for metric in scope.metrics() {
            match metric.data() {
                AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                    for p in sum.data_points() {
                        sums.insert(
                            (metric.name().to_string(), attrs(p.attributes())),
                            (p.value(), metric.unit().to_string()),
                        );
                    }
                }
                AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                    assert_eq!(metric.unit(), "s");
                    for p in h.data_points() {
                        durations.insert(
                            attrs(p.attributes())["db.operation.name"].clone(),
                            p.count(),
                        );
                    }
                }
                other => panic!("unexpected {}: {other:?}", metric.name()),
            }
        }
    }
    let system = BTreeMap::from([
        ("db.system.name".to_string(), "palisade.memory".to_string()),
        ("palisade.instance".to_string(), "orders".to_string()),
    ]);
    assert_eq!(
        sums[&(EVENTS_APPENDED.to_string(), system.clone())],
        (2, "{event}".to_string())
    );
    assert_eq!(
        sums[&(CONFLICTS.to_string(), system)],
        (1, "{conflict}".to_string())
    );
    assert_eq!(
        durations.get("append"),
        Some(&2),
        "{OPERATION_DURATION}: {durations:?}"
    );
    assert_eq!(durations.get("read_stream"), Some(&1));
}

#[tokio::test]
async fn a_subscription_reports_its_lag() {
    let metrics = InMemoryMetricExporter::default();
    let meters = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics.clone()).build())
        .build();
    let store = std::sync::Arc::new(InMemoryEventStore::new());
    let s = StreamName::new("lag-1").unwrap();
    store
        .append(
            &s,
            ExpectedVersion::Any,
            (0..5u8).map(|i| NewEvent::new("E", vec![i])).collect(),
        )
        .await
        .unwrap();
    let checkpoints = std::sync::Arc::new(InMemoryCheckpointStore::new());
    let mut sub = Subscription::builder(store.clone(), checkpoints, "projector")
        .meter(meters.meter("test"))
        .start()
        .await
        .unwrap();
    let lag = || {
        meters.force_flush().unwrap();
        let exported = metrics.get_finished_metrics().unwrap();
        let scope = exported.last().unwrap().scope_metrics().next().unwrap();
        let metric = scope
            .metrics()
            .find(|m| m.name() == SUBSCRIPTION_LAG)
            .unwrap();
        assert_eq!(metric.unit(), "{event}");
        let AggregatedMetrics::U64(MetricData::Gauge(g)) = metric.data() else {
            panic!("a u64 gauge")
        };
        let point = g.data_points().next().unwrap();
        assert_eq!(
            attrs(point.attributes()),
            BTreeMap::from([("palisade.subscription".to_string(), "projector".to_string())])
        );
        point.value()
    };
    sub.next().await.unwrap();
    assert_eq!(
        lag(),
        5,
        "measured when the page was read, before any was handed out"
    );
    for _ in 0..4 {
        sub.next().await.unwrap();
    }
    // Caught up: the next read finds nothing and reports 0 while it waits.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(100), sub.next())
            .await
            .is_err()
    );
    assert_eq!(lag(), 0);
}
