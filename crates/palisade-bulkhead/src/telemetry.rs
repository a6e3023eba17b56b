//! OpenTelemetry instruments for a bulkhead (feature `otel`): an adapter over
//! the bulkhead's [`Event`]s, added when the builder asks with
//! [`otel`](BulkheadBuilder::otel) or [`meter`](BulkheadBuilder::meter).
//!
//! Names follow `docs/telemetry.md`. Instruments are made once, when the
//! bulkhead is built; attribute sets are made then too, so recording a call
//! allocates nothing. Everything the `otel` feature adds to the crate is in
//! this module.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};
use palisade_core::Listener;
use palisade_core::telemetry::{INSTANCE, MeterSource, OUTCOME};

use crate::{BulkheadBuilder, Event, Reason};

/// `palisade.bulkhead.calls`: permit requests by outcome (`permitted`, `rejected`, `timed_out`).
pub const CALLS: &str = "palisade.bulkhead.calls";
/// `palisade.bulkhead.in_flight`: units held by permits (up-down counter).
pub const IN_FLIGHT: &str = "palisade.bulkhead.in_flight";
/// `palisade.bulkhead.wait.duration`: seconds callers spent in the queue, by outcome.
pub const WAIT_DURATION: &str = "palisade.bulkhead.wait.duration";
/// `palisade.bulkhead.limit`: the limit in use (gauge).
pub const LIMIT: &str = "palisade.bulkhead.limit";

impl BulkheadBuilder {
    /// Records the instruments of `docs/telemetry.md` on the global meter
    /// provider as it is when `build()` runs.
    pub fn otel(mut self) -> Self {
        self.otel = Some(MeterSource::Global);
        self
    }

    /// Records the instruments of `docs/telemetry.md` on `meter`.
    pub fn meter(mut self, meter: Meter) -> Self {
        self.otel = Some(MeterSource::Meter(meter));
        self
    }
}

pub(crate) struct OtelListener {
    calls: Counter<u64>,
    in_flight: UpDownCounter<i64>,
    wait: Histogram<f64>,
    limit: Gauge<u64>,
    instance: [KeyValue; 1],
    /// permitted, rejected, timed_out.
    by_outcome: [[KeyValue; 2]; 3],
}

impl OtelListener {
    pub(crate) fn new(source: MeterSource, name: &str) -> Self {
        let meter = source.meter(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
        let instance = KeyValue::new(INSTANCE, name.to_owned());
        let outcome = |o: &'static str| [instance.clone(), KeyValue::new(OUTCOME, o)];
        Self {
            calls: meter
                .u64_counter(CALLS)
                .with_unit("{call}")
                .with_description("Permit requests to the bulkhead, by outcome")
                .build(),
            in_flight: meter
                .i64_up_down_counter(IN_FLIGHT)
                .with_unit("{permit}")
                .with_description("Units held by the bulkhead's permits")
                .build(),
            wait: meter
                .f64_histogram(WAIT_DURATION)
                .with_unit("s")
                .with_description("Time callers spent in the bulkhead's queue, by outcome")
                .build(),
            limit: meter
                .u64_gauge(LIMIT)
                .with_unit("{permit}")
                .with_description("The bulkhead's limit in use")
                .build(),
            by_outcome: [
                outcome("permitted"),
                outcome("rejected"),
                outcome("timed_out"),
            ],
            instance: [instance],
        }
    }

    pub(crate) fn record_limit(&self, limit: u32) {
        self.limit.record(u64::from(limit), &self.instance);
    }
}

impl Listener<Event> for OtelListener {
    fn on_event(&self, event: &Event) {
        match *event {
            Event::Permitted { weight, waited } => {
                let attrs = &self.by_outcome[0];
                self.calls.add(1, attrs);
                self.in_flight.add(i64::from(weight), &self.instance);
                if let Some(d) = waited {
                    self.wait.record(d.as_secs_f64(), attrs);
                }
            }
            Event::Rejected { reason, waited, .. } => {
                let attrs = &self.by_outcome[if reason == Reason::TimedOut { 2 } else { 1 }];
                self.calls.add(1, attrs);
                if let Some(d) = waited {
                    self.wait.record(d.as_secs_f64(), attrs);
                }
            }
            Event::Released { weight } => {
                self.in_flight.add(-i64::from(weight), &self.instance);
            }
            Event::LimitChanged { to, .. } => self.record_limit(to),
        }
    }
}
