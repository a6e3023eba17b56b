//! The OpenTelemetry instruments, read back from the SDK's in-memory exporter.
#![cfg(feature = "otel")]

use std::collections::BTreeMap;
use std::task::{Context, Waker};
use std::time::Duration;

use futures::FutureExt;
use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use palisade_bulkhead::telemetry::{CALLS, IN_FLIGHT, LIMIT, WAIT_DURATION};
use palisade_bulkhead::{Bulkhead, ManualClock};

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
fn instruments_report_calls_in_flight_waits_and_the_limit() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let clock = ManualClock::new();
    let bulkhead = Bulkhead::builder()
        .name("payments")
        .max_concurrent_calls(2)
        .max_wait(Duration::from_millis(100))
        .sleeper(clock.sleeper())
        .clock(clock.shared())
        .meter(provider.meter("test"))
        .build()
        .unwrap();
    let mut cx = Context::from_waker(Waker::noop());

    let a = bulkhead.try_acquire().unwrap();
    let _b = bulkhead.try_acquire().unwrap();
    // One waits 30 ms and gets a unit; one waits 100 ms and times out.
    let mut granted = Box::pin(bulkhead.acquire());
    assert!(granted.as_mut().poll(&mut cx).is_pending());
    clock.advance(Duration::from_millis(30));
    drop(a);
    let _c = granted.now_or_never().unwrap().unwrap();
    let mut late = Box::pin(bulkhead.acquire());
    assert!(late.as_mut().poll(&mut cx).is_pending());
    clock.advance(Duration::from_millis(100));
    assert!(late.now_or_never().unwrap().is_err());
    // A weighted one is rejected at once, as full.
    assert!(bulkhead.try_acquire_many(2).is_err());
    bulkhead.set_limit(5).unwrap();
    let _heavy = bulkhead.try_acquire_many(3).unwrap();

    provider.force_flush().unwrap();
    let exported = exporter.get_finished_metrics().unwrap();
    let last = exported.last().expect("one export");
    let mut counters: BTreeMap<(String, Attrs), i128> = BTreeMap::new();
    let mut histograms: BTreeMap<(String, Attrs), (u64, f64)> = BTreeMap::new();
    let mut gauges: BTreeMap<String, u64> = BTreeMap::new();
    let mut units: BTreeMap<String, String> = BTreeMap::new();
    for scope in last.scope_metrics() {
        assert_eq!(scope.scope().name(), "test");
        for metric in scope.metrics() {
            units.insert(metric.name().to_string(), metric.unit().to_string());
            match metric.data() {
                AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                    for p in sum.data_points() {
                        counters.insert(
                            (metric.name().to_string(), attrs(p.attributes())),
                            i128::from(p.value()),
                        );
                    }
                }
                AggregatedMetrics::I64(MetricData::Sum(sum)) => {
                    for p in sum.data_points() {
                        counters.insert(
                            (metric.name().to_string(), attrs(p.attributes())),
                            i128::from(p.value()),
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
    let key = |name: &str, outcome: Option<&str>| {
        let mut a = vec![("palisade.instance", "payments")];
        if let Some(o) = outcome {
            a.push(("palisade.outcome", o));
        }
        (name.to_string(), pairs(&a))
    };
    assert_eq!(
        counters.get(&key(CALLS, Some("permitted"))),
        Some(&4),
        "{counters:#?}"
    );
    assert_eq!(counters.get(&key(CALLS, Some("rejected"))), Some(&1));
    assert_eq!(counters.get(&key(CALLS, Some("timed_out"))), Some(&1));
    // b, c and the heavy permit of 3 are held: 5 units.
    assert_eq!(counters.get(&key(IN_FLIGHT, None)), Some(&5));
    assert_eq!(gauges.get(LIMIT), Some(&5));

    let (count, sum) = histograms[&key(WAIT_DURATION, Some("permitted"))];
    assert_eq!(count, 1);
    assert!((sum - 0.030).abs() < 1e-9, "{sum}");
    let (count, sum) = histograms[&key(WAIT_DURATION, Some("timed_out"))];
    assert_eq!(count, 1);
    assert!((sum - 0.100).abs() < 1e-9, "{sum}");

    assert_eq!(units[CALLS], "{call}");
    assert_eq!(units[IN_FLIGHT], "{permit}");
    assert_eq!(units[WAIT_DURATION], "s");
    assert_eq!(units[LIMIT], "{permit}");
}
