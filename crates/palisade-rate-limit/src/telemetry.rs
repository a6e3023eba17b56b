//! OpenTelemetry instruments for a limiter (feature `otel`): an adapter over
//! its [`Event`]s, added when the builder asks with `otel()` or `meter(m)`.
//!
//! Names follow `docs/telemetry.md`. Instruments and attribute sets are made
//! once, when the limiter is built, so recording allocates nothing.
//! Everything the `otel` feature adds to the crate is in this module.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};
use palisade_core::Listener;
use palisade_core::telemetry::{INSTANCE, MeterSource, OUTCOME};

#[cfg(feature = "redis")]
use crate::RedisRateLimiterBuilder;
use crate::{Event, KeyedRateLimiterBuilder, RateLimiterBuilder, WindowLimiterBuilder};

/// `palisade.rate_limit.requests`: calls by outcome (acquired, rejected, canceled).
pub const REQUESTS: &str = "palisade.rate_limit.requests";
/// `palisade.rate_limit.wait.duration`: how long `acquire` waited, in seconds (0 when it did not).
pub const WAIT_DURATION: &str = "palisade.rate_limit.wait.duration";

impl RateLimiterBuilder {
    /// Records the instruments of `docs/telemetry.md` on the global meter
    /// provider as it is when `build()` runs.
    pub fn otel(mut self) -> Self {
        self.common.otel = Some(MeterSource::Global);
        self
    }

    /// Records the instruments of `docs/telemetry.md` on `meter`.
    pub fn meter(mut self, meter: Meter) -> Self {
        self.common.otel = Some(MeterSource::Meter(meter));
        self
    }
}

impl<K> KeyedRateLimiterBuilder<K> {
    /// Records the instruments of `docs/telemetry.md` on the global meter
    /// provider as it is when `build()` runs.
    pub fn otel(mut self) -> Self {
        self.common.otel = Some(MeterSource::Global);
        self
    }

    /// Records the instruments of `docs/telemetry.md` on `meter`.
    pub fn meter(mut self, meter: Meter) -> Self {
        self.common.otel = Some(MeterSource::Meter(meter));
        self
    }
}

impl WindowLimiterBuilder {
    /// Records the instruments of `docs/telemetry.md` on the global meter
    /// provider as it is when `build()` runs.
    pub fn otel(mut self) -> Self {
        self.common.otel = Some(MeterSource::Global);
        self
    }

    /// Records the instruments of `docs/telemetry.md` on `meter`.
    pub fn meter(mut self, meter: Meter) -> Self {
        self.common.otel = Some(MeterSource::Meter(meter));
        self
    }
}

#[cfg(feature = "redis")]
impl RedisRateLimiterBuilder {
    /// Records the instruments of `docs/telemetry.md` on the global meter
    /// provider as it is when `connect()` runs.
    pub fn otel(mut self) -> Self {
        self.common.otel = Some(MeterSource::Global);
        self
    }

    /// Records the instruments of `docs/telemetry.md` on `meter`.
    pub fn meter(mut self, meter: Meter) -> Self {
        self.common.otel = Some(MeterSource::Meter(meter));
        self
    }
}

pub(crate) struct OtelListener {
    requests: Counter<u64>,
    wait: Histogram<f64>,
    instance: [KeyValue; 1],
    /// acquired, rejected, canceled.
    by_outcome: [[KeyValue; 2]; 3],
}

impl OtelListener {
    pub(crate) fn new(source: MeterSource, name: &str) -> Self {
        let meter = source.meter(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
        let instance = KeyValue::new(INSTANCE, name.to_owned());
        let outcome = |o: &'static str| [instance.clone(), KeyValue::new(OUTCOME, o)];
        Self {
            requests: meter
                .u64_counter(REQUESTS)
                .with_unit("{request}")
                .with_description("Calls to the rate limiter, by outcome")
                .build(),
            wait: meter
                .f64_histogram(WAIT_DURATION)
                .with_unit("s")
                .with_description("How long acquire waited for its requests to be admitted")
                .build(),
            by_outcome: [
                outcome("acquired"),
                outcome("rejected"),
                outcome("canceled"),
            ],
            instance: [instance],
        }
    }
}

impl Listener<Event> for OtelListener {
    fn on_event(&self, event: &Event) {
        match *event {
            Event::Acquired { waited, .. } => {
                self.requests.add(1, &self.by_outcome[0]);
                if let Some(w) = waited {
                    self.wait.record(w.as_secs_f64(), &self.instance);
                }
            }
            Event::Rejected { .. } => self.requests.add(1, &self.by_outcome[1]),
            Event::Canceled { .. } => self.requests.add(1, &self.by_outcome[2]),
            Event::QuotaChanged { .. }
            | Event::KeysEvicted { .. }
            | Event::BackendUnavailable { .. } => {}
        }
    }
}
