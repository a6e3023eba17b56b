//! OpenTelemetry instruments of a cache (feature `otel`), named as in
//! `docs/telemetry.md`.
//!
//! Request and eviction counts are *observable* counters read from the
//! cache's striped [`CacheStats`](crate::CacheStats) when the SDK collects,
//! so a hit costs nothing more with telemetry on. Only loads, which are
//! rare and slow, record a histogram point as they finish.

use std::hash::Hash;
use std::sync::{Arc, Weak};

use opentelemetry::metrics::{Histogram, Meter};
use opentelemetry::{InstrumentationScope, KeyValue};
use palisade_core::telemetry::{INSTANCE, OUTCOME};

use crate::cache::Inner;

/// Counter: lookups by `palisade.outcome` (hit, miss, stale) and `palisade.cache.tier`.
pub const REQUESTS: &str = "palisade.cache.requests";
/// Histogram, seconds: load durations by `palisade.outcome` (success, failure).
pub const LOAD_DURATION: &str = "palisade.cache.load.duration";
/// Counter: entries removed, by `palisade.cache.cause` (size, expired, explicit, replaced).
pub const EVICTIONS: &str = "palisade.cache.evictions";
/// Gauge: entries held.
pub const ENTRIES: &str = "palisade.cache.entries";
/// Attribute: which tier answered, `l1` (in process) or `l2` (remote).
pub const TIER: &str = "palisade.cache.tier";
/// Attribute: why an entry left.
pub const CAUSE: &str = "palisade.cache.cause";

pub(crate) fn global_meter() -> Meter {
    opentelemetry::global::meter_with_scope(
        InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    )
}

/// The instruments a cache records into directly; the observable ones live
/// in the meter's callbacks.
pub(crate) struct Telemetry {
    meter: Meter,
    load_duration: Histogram<f64>,
    /// success, failure
    by_load_outcome: [[KeyValue; 2]; 2],
}

impl Telemetry {
    pub(crate) fn new(name: &str, meter: Option<Meter>) -> Self {
        let meter = meter.unwrap_or_else(global_meter);
        let instance = KeyValue::new(INSTANCE, name.to_owned());
        let outcome = |o: &'static str| [instance.clone(), KeyValue::new(OUTCOME, o)];
        Self {
            load_duration: meter
                .f64_histogram(LOAD_DURATION)
                .with_unit("s")
                .with_description("Duration of loads, by outcome")
                .build(),
            by_load_outcome: [outcome("success"), outcome("failure")],
            meter,
        }
    }

    pub(crate) fn record_load(&self, ok: bool, nanos: u64) {
        let attrs = &self.by_load_outcome[usize::from(!ok)];
        self.load_duration.record(nanos as f64 / 1e9, attrs);
    }
}

/// Registers the observable instruments of `inner`; they stop reporting once
/// the cache is dropped.
pub(crate) fn observe<K, V>(inner: &Arc<Inner<K, V>>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let meter = &inner.telemetry.meter;
    let instance = KeyValue::new(INSTANCE, inner.name.clone());
    let weak: Weak<Inner<K, V>> = Arc::downgrade(inner);
    let request_attrs = |o: &'static str| {
        [
            instance.clone(),
            KeyValue::new(OUTCOME, o),
            KeyValue::new(TIER, "l1"),
        ]
    };
    let [hit, miss, stale] = [
        request_attrs("hit"),
        request_attrs("miss"),
        request_attrs("stale"),
    ];
    let w = weak.clone();
    meter
        .u64_observable_counter(REQUESTS)
        .with_unit("{request}")
        .with_description("Cache lookups, by outcome and tier")
        .with_callback(move |observer| {
            if let Some(inner) = w.upgrade() {
                let s = crate::Cache { inner }.stats();
                observer.observe(s.hits, &hit);
                observer.observe(s.misses, &miss);
                observer.observe(s.stale_hits, &stale);
            }
        })
        .build();
    let cause = |c: &'static str| [instance.clone(), KeyValue::new(CAUSE, c)];
    let [size, expired, explicit, replaced] = [
        cause("size"),
        cause("expired"),
        cause("explicit"),
        cause("replaced"),
    ];
    let w = weak.clone();
    meter
        .u64_observable_counter(EVICTIONS)
        .with_unit("{entry}")
        .with_description("Entries removed from the cache, by cause")
        .with_callback(move |observer| {
            if let Some(inner) = w.upgrade() {
                let s = inner.stats.snapshot();
                observer.observe(s.evicted_size, &size);
                observer.observe(s.expired, &expired);
                observer.observe(s.invalidated, &explicit);
                observer.observe(s.replaced, &replaced);
            }
        })
        .build();
    let attrs = [instance];
    meter
        .u64_observable_gauge(ENTRIES)
        .with_unit("{entry}")
        .with_description("Entries held by the cache")
        .with_callback(move |observer| {
            if let Some(inner) = weak.upgrade() {
                observer.observe(
                    inner.entries.load(std::sync::atomic::Ordering::Relaxed),
                    &attrs,
                );
            }
        })
        .build();
}
