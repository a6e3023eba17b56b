//! OpenTelemetry instruments of a cache (feature `otel`): an adapter over
//! the cache's [`Event`]s, added when the builder asks with
//! [`otel`](CacheBuilder::otel) or [`meter`](CacheBuilder::meter).
//!
//! Names follow `docs/telemetry.md`. Every instrument is synchronous and is
//! recorded from the cache's events, which carry counts since the last
//! maintenance run: a lookup records nothing itself, a dropped cache leaves
//! no callback behind. Attribute sets are made when the cache is built, so
//! recording allocates nothing. Everything the `otel` feature adds
//! to the crate is in this module.

use std::hash::Hash;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};
use palisade_core::telemetry::{INSTANCE, MeterSource, OUTCOME};
use palisade_core::{Listener, Outcome};

use crate::{CacheBuilder, Event, RemovalCause};

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

impl<K, V> CacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Records the instruments of `docs/telemetry.md` on the global meter
    /// provider as it is when `build()` runs. Default: no instruments.
    #[must_use]
    pub fn otel(mut self) -> Self {
        self.otel = Some(MeterSource::Global);
        self
    }

    /// Records the instruments of `docs/telemetry.md` on `meter`.
    #[must_use]
    pub fn meter(mut self, meter: Meter) -> Self {
        self.otel = Some(MeterSource::Meter(meter));
        self
    }
}

pub(crate) struct OtelListener {
    requests: Counter<u64>,
    load_duration: Histogram<f64>,
    evictions: Counter<u64>,
    entries: Gauge<u64>,
    instance: [KeyValue; 1],
    /// hit, miss, stale
    by_request: [[KeyValue; 3]; 3],
    /// success, failure
    by_load: [[KeyValue; 2]; 2],
    /// size, expired, explicit, replaced
    by_cause: [[KeyValue; 2]; 4],
}

impl OtelListener {
    pub(crate) fn new(source: MeterSource, name: &str) -> Self {
        let meter = source.meter(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
        let instance = KeyValue::new(INSTANCE, name.to_owned());
        let request = |o: &'static str| {
            [
                instance.clone(),
                KeyValue::new(OUTCOME, o),
                KeyValue::new(TIER, "l1"),
            ]
        };
        let load = |o: &'static str| [instance.clone(), KeyValue::new(OUTCOME, o)];
        let cause = |c: RemovalCause| [instance.clone(), KeyValue::new(CAUSE, c.as_str())];
        Self {
            requests: meter
                .u64_counter(REQUESTS)
                .with_unit("{request}")
                .with_description("Cache lookups, by outcome and tier")
                .build(),
            load_duration: meter
                .f64_histogram(LOAD_DURATION)
                .with_unit("s")
                .with_description("Duration of loads, by outcome")
                .build(),
            evictions: meter
                .u64_counter(EVICTIONS)
                .with_unit("{entry}")
                .with_description("Entries removed from the cache, by cause")
                .build(),
            entries: meter
                .u64_gauge(ENTRIES)
                .with_unit("{entry}")
                .with_description("Entries held by the cache")
                .build(),
            by_request: [request("hit"), request("miss"), request("stale")],
            by_load: [load("success"), load("failure")],
            by_cause: [
                cause(RemovalCause::Size),
                cause(RemovalCause::Expired),
                cause(RemovalCause::Explicit),
                cause(RemovalCause::Replaced),
            ],
            instance: [instance],
        }
    }
}

impl Listener<Event> for OtelListener {
    fn on_event(&self, event: &Event) {
        match *event {
            Event::Lookups {
                hits,
                misses,
                stale,
            } => {
                for (n, attrs) in [hits, misses, stale].into_iter().zip(&self.by_request) {
                    if n > 0 {
                        self.requests.add(n, attrs);
                    }
                }
            }
            Event::LoadFinished { outcome, duration } => {
                let attrs = &self.by_load[usize::from(outcome != Outcome::Success)];
                self.load_duration.record(duration.as_secs_f64(), attrs);
            }
            Event::Removed { cause, count } => {
                let i = RemovalCause::ALL
                    .iter()
                    .position(|c| *c == cause)
                    .unwrap_or(0);
                self.evictions.add(count, &self.by_cause[i]);
            }
            Event::Sizes { entries, .. } => self.entries.record(entries, &self.instance),
        }
    }
}
