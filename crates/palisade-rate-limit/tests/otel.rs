//! The OpenTelemetry instruments, read back from the SDK's in-memory exporter.
#![cfg(feature = "otel")]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::task::Context;
use std::time::Duration;

use futures::task::noop_waker;
use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use palisade_rate_limit::telemetry::{REQUESTS, WAIT_DURATION};
use palisade_rate_limit::{KeyedRateLimiter, ManualClock, Quota, RateLimiter};

type Attrs = Vec<(String, String)>;

fn attrs<'a>(kvs: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> Attrs {
    let mut v: Attrs = kvs
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect();
    v.sort();
    v
}

fn outcome(instance: &str, o: &str) -> (String, Attrs) {
    (
        REQUESTS.to_string(),
        vec![
            ("palisade.instance".into(), instance.into()),
            ("palisade.outcome".into(), o.into()),
        ],
    )
}

#[derive(Default)]
struct Read {
    counters: BTreeMap<(String, Attrs), u64>,
    histograms: BTreeMap<(String, Attrs), (u64, f64)>,
    units: BTreeMap<String, String>,
}

fn read(provider: &SdkMeterProvider, exporter: &InMemoryMetricExporter) -> Read {
    provider.force_flush().unwrap();
    let exported = exporter.get_finished_metrics().unwrap();
    let mut r = Read::default();
    for scope in exported.last().expect("one export").scope_metrics() {
        for metric in scope.metrics() {
            r.units
                .insert(metric.name().to_string(), metric.unit().to_string());
            match metric.data() {
                AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                    for p in sum.data_points() {
                        r.counters.insert(
                            (metric.name().to_string(), attrs(p.attributes())),
                            p.value(),
                        );
                    }
                }
                AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                    for p in h.data_points() {
                        r.histograms.insert(
                            (metric.name().to_string(), attrs(p.attributes())),
                            (p.count(), p.sum()),
                        );
                    }
                }
                other => panic!("unexpected data for {}: {other:?}", metric.name()),
            }
        }
    }
    r
}

#[test]
fn requests_by_outcome_and_wait_durations() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder()
        .name("search")
        .quota(Quota::per_second(2))
        .clock(clock.shared())
        .sleeper(clock.sleeper())
        .meter(provider.meter("test"))
        .build()
        .unwrap();
    limiter.check().unwrap();
    limiter.check().unwrap();
    limiter.check().unwrap_err();
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    {
        // Waits 500 ms, admitted.
        let mut waiting = pin!(limiter.acquire());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_millis(500));
        assert!(waiting.as_mut().poll(&mut cx).is_ready());
    }
    {
        // Canceled after 100 ms.
        let mut waiting = pin!(limiter.acquire());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_millis(100));
    }
    let r = read(&provider, &exporter);
    assert_eq!(
        r.counters.get(&outcome("search", "acquired")),
        Some(&3),
        "{:#?}",
        r.counters
    );
    assert_eq!(r.counters.get(&outcome("search", "rejected")), Some(&1));
    assert_eq!(r.counters.get(&outcome("search", "canceled")), Some(&1));
    let wait = (
        WAIT_DURATION.to_string(),
        vec![("palisade.instance".to_string(), "search".to_string())],
    );
    assert_eq!(r.histograms.get(&wait), Some(&(1, 0.5)));
    assert_eq!(r.units.get(REQUESTS).map(String::as_str), Some("{request}"));
    assert_eq!(r.units.get(WAIT_DURATION).map(String::as_str), Some("s"));
}

#[test]
fn a_keyed_limiter_reports_the_same_instruments() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let limiter = KeyedRateLimiter::<u8>::builder()
        .name("tenants")
        .quota(Quota::per_minute(1))
        .clock(ManualClock::new().shared())
        .meter(provider.meter("test"))
        .build()
        .unwrap();
    limiter.check(&1).unwrap();
    limiter.check(&2).unwrap();
    limiter.check(&1).unwrap_err();
    let r = read(&provider, &exporter);
    assert_eq!(r.counters.get(&outcome("tenants", "acquired")), Some(&2));
    assert_eq!(r.counters.get(&outcome("tenants", "rejected")), Some(&1));
}
