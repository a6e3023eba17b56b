//! The OpenTelemetry instruments, read back from the SDK's in-memory exporter.
#![cfg(feature = "otel")]

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use palisade_cache::Cache;
use palisade_cache::telemetry::{ENTRIES, EVICTIONS, LOAD_DURATION, REQUESTS};
use palisade_core::TokioClock;

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

#[tokio::test(start_paused = true)]
async fn requests_loads_evictions_and_entries_are_reported() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let cache: Cache<u64, u64> = Cache::builder()
        .name("users")
        .max_capacity(2)
        .clock(TokioClock::shared())
        .meter(provider.meter("test"))
        .build()
        .unwrap();

    for key in 0..3 {
        cache
            .get_with(key, async move {
                tokio::time::sleep(Duration::from_millis(250)).await;
                key
            })
            .await; // 3 misses, 3 loads of 250 ms
    }
    let failed: Result<u64, _> = cache
        .try_get_with(9, async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Err("down")
        })
        .await;
    assert!(failed.is_err()); // a 4th miss, a failed load of 500 ms
    cache.run_pending_tasks();
    let held: Vec<u64> = (0..3).filter(|k| cache.get(k).is_some()).collect();
    assert_eq!(held.len(), 2); // 2 hits and 1 miss
    cache.invalidate(&held[0]);
    cache.run_pending_tasks(); // lookups are reported after each maintenance run

    provider.force_flush().unwrap();
    let exported = exporter.get_finished_metrics().unwrap();
    let last = exported.last().expect("one export");
    let mut sums: BTreeMap<(String, Attrs), u64> = BTreeMap::new();
    let mut histograms: BTreeMap<(String, Attrs), (u64, f64)> = BTreeMap::new();
    let mut units: BTreeMap<String, String> = BTreeMap::new();
    for scope in last.scope_metrics() {
        for metric in scope.metrics() {
            units.insert(metric.name().to_string(), metric.unit().to_string());
            match metric.data() {
                AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                    for p in sum.data_points() {
                        sums.insert(
                            (metric.name().to_string(), attrs(p.attributes())),
                            p.value(),
                        );
                    }
                }
                AggregatedMetrics::U64(MetricData::Gauge(gauge)) => {
                    for p in gauge.data_points() {
                        sums.insert(
                            (metric.name().to_string(), attrs(p.attributes())),
                            p.value(),
                        );
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
    let request = |outcome: &str| {
        (
            REQUESTS.to_string(),
            pairs(&[
                ("palisade.instance", "users"),
                ("palisade.outcome", outcome),
                ("palisade.cache.tier", "l1"),
            ]),
        )
    };
    assert_eq!(sums.get(&request("hit")), Some(&2), "{sums:#?}");
    assert_eq!(sums.get(&request("miss")), Some(&5));
    assert_eq!(sums.get(&request("stale")), None, "nothing served stale");
    let eviction = |cause: &str| {
        (
            EVICTIONS.to_string(),
            pairs(&[
                ("palisade.instance", "users"),
                ("palisade.cache.cause", cause),
            ]),
        )
    };
    assert_eq!(sums.get(&eviction("size")), Some(&1));
    assert_eq!(sums.get(&eviction("explicit")), Some(&1));
    assert_eq!(sums.get(&eviction("expired")), None, "nothing expired");
    let entries = (
        ENTRIES.to_string(),
        pairs(&[("palisade.instance", "users")]),
    );
    assert_eq!(sums.get(&entries), Some(&1));
    let load = |outcome: &str| {
        (
            LOAD_DURATION.to_string(),
            pairs(&[
                ("palisade.instance", "users"),
                ("palisade.outcome", outcome),
            ]),
        )
    };
    assert_eq!(histograms.get(&load("success")), Some(&(3, 0.75)));
    assert_eq!(histograms.get(&load("failure")), Some(&(1, 0.5)));
    assert_eq!(units.get(LOAD_DURATION).map(String::as_str), Some("s"));
    assert_eq!(units.get(REQUESTS).map(String::as_str), Some("{request}"));
}

/// A cache reports only when its builder asks: not to the global provider
/// by default, and to it with `.otel()`, read when `build()` runs.
#[test]
fn a_cache_reports_to_the_global_provider_only_when_asked() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    opentelemetry::global::set_meter_provider(provider.clone());

    let silent: Cache<u64, u64> = Cache::builder()
        .name("silent")
        .max_capacity(4)
        .build()
        .unwrap();
    let _ = silent.get(&1);
    let heard: Cache<u64, u64> = Cache::builder()
        .name("heard")
        .max_capacity(4)
        .otel()
        .build()
        .unwrap();
    let _ = heard.get(&1);
    silent.run_pending_tasks();
    heard.run_pending_tasks();

    provider.force_flush().unwrap();
    let exported = exporter.get_finished_metrics().unwrap();
    let mut instances = std::collections::BTreeSet::new();
    for scope in exported.last().expect("one export").scope_metrics() {
        assert_eq!(scope.scope().name(), "palisade-cache");
        for metric in scope.metrics() {
            if let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() {
                for p in sum.data_points() {
                    for kv in p.attributes() {
                        if kv.key.as_str() == "palisade.instance" {
                            instances.insert(kv.value.to_string());
                        }
                    }
                }
            }
        }
    }
    assert_eq!(instances.into_iter().collect::<Vec<_>>(), ["heard"]);
}
