//! The OpenTelemetry instruments and span events, read back from the SDK's in-memory exporters.
#![cfg(feature = "otel")]

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::{Tracer, TracerProvider};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use palisade_circuit_breaker::telemetry::{
    CALL_DURATION, CALLS, STATE, STATE_CHANGE_EVENT, TRANSITIONS,
};
use palisade_circuit_breaker::{CircuitBreaker, Outcome, SlidingWindow, State};
use palisade_core::ManualClock;

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
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    v.sort();
    v
}

#[test]
fn instruments_report_calls_durations_transitions_and_state() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder()
        .name("payments")
        .clock(clock.shared())
        .sliding_window(SlidingWindow::count(4))
        .minimum_calls(4)
        .open_duration(Duration::from_secs(5))
        .meter(provider.meter("test"))
        .build()
        .unwrap();

    for (outcome, millis) in [
        (Outcome::Success, 10),
        (Outcome::Ignored, 20),
        (Outcome::Failure, 30),
        (Outcome::Failure, 40),
        (Outcome::Success, 50),
    ] {
        let permit = breaker.try_acquire().unwrap();
        clock.advance(Duration::from_millis(millis));
        permit.record(outcome);
    }
    assert_eq!(breaker.state(), State::Open);
    assert!(breaker.try_acquire().is_err());
    assert!(breaker.try_acquire().is_err());

    provider.force_flush().unwrap();
    let exported = exporter.get_finished_metrics().unwrap();
    let last = exported.last().expect("one export");
    let mut counters: BTreeMap<(String, Attrs), u64> = BTreeMap::new();
    let mut histograms: BTreeMap<(String, Attrs), (u64, f64)> = BTreeMap::new();
    let mut gauges: BTreeMap<String, u64> = BTreeMap::new();
    let mut units: BTreeMap<String, String> = BTreeMap::new();
    for scope in last.scope_metrics() {
        for metric in scope.metrics() {
            units.insert(metric.name().to_string(), metric.unit().to_string());
            match metric.data() {
                AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                    for p in sum.data_points() {
                        counters.insert(
                            (metric.name().to_string(), attrs(p.attributes())),
                            p.value(),
                        );
                    }
                }
                AggregatedMetrics::U64(MetricData::Gauge(g)) => {
                    for p in g.data_points() {
                        assert_eq!(
                            attrs(p.attributes()),
                            pairs(&[("palisade.instance", "payments")])
                        );
                        gauges.insert(metric.name().to_string(), p.value());
                    }
                }
                AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                    for p in h.data_points() {
                        histograms.insert(
                            (metric.name().to_string(), attrs(p.attributes())),
                            (p.count(), p.sum()),
                        );
                    }
                }
                other => panic!("unexpected data for {}: {other:?}", metric.name()),
            }
        }
    }

    let call = |outcome: &str| {
        (
            CALLS.to_string(),
            pairs(&[
                ("palisade.instance", "payments"),
                ("palisade.outcome", outcome),
            ]),
        )
    };
    // the fifth call, a success, fills the window: 2 failures of 4 calls opens it
    assert_eq!(counters.get(&call("success")), Some(&2), "{counters:#?}");
    assert_eq!(counters.get(&call("ignored")), Some(&1));
    assert_eq!(counters.get(&call("failure")), Some(&2));
    assert_eq!(counters.get(&call("rejected")), Some(&2));
    let transition = (
        TRANSITIONS.to_string(),
        pairs(&[
            ("palisade.instance", "payments"),
            ("palisade.state.from", "closed"),
            ("palisade.state.to", "open"),
        ]),
    );
    assert_eq!(counters.get(&transition), Some(&1));
    assert_eq!(gauges.get(STATE), Some(&1), "open is 1");

    let failures = (
        CALL_DURATION.to_string(),
        pairs(&[
            ("palisade.instance", "payments"),
            ("palisade.outcome", "failure"),
        ]),
    );
    let (count, sum) = histograms[&failures];
    assert_eq!(count, 2);
    assert!((sum - 0.070).abs() < 1e-9, "30 ms + 40 ms, got {sum}");

    assert_eq!(units[CALLS], "{call}");
    assert_eq!(units[CALL_DURATION], "s");
    assert_eq!(units[TRANSITIONS], "{transition}");
}

#[test]
fn a_transition_adds_an_event_to_the_callers_span() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let tracer = provider.tracer("test");
    let breaker = CircuitBreaker::builder()
        .name("search")
        .sliding_window(SlidingWindow::count(2))
        .minimum_calls(2)
        .meter(SdkMeterProvider::builder().build().meter("unused"))
        .build()
        .unwrap();

    tracer.in_span("checkout", |_cx| {
        breaker.try_acquire().unwrap().failure();
        breaker.try_acquire().unwrap().failure();
    });
    assert_eq!(breaker.state(), State::Open);

    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 1);
    let events: Vec<_> = spans[0].events.iter().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, STATE_CHANGE_EVENT);
    assert_eq!(
        attrs(events[0].attributes.iter()),
        pairs(&[
            ("palisade.instance", "search"),
            ("palisade.state.from", "closed"),
            ("palisade.state.to", "open"),
        ])
    );
}
