//! OpenTelemetry for the event store (feature `otel`): adapters over the
//! store's [`Event`]s, added when a builder asks with `otel()`, `meter(m)`
//! or `tracer(t)`.
//!
//! - [`Instrumented`](crate::Instrumented): a client span per operation
//!   (`event_store.{operation}`, with `db.*` attributes), the instruments of
//!   `docs/telemetry.md`, and the caller's trace context written into the
//!   metadata of appended events so a consumer can continue the trace.
//! - [`Subscription`](crate::Subscription): the lag gauge.
//!
//! Everything the `otel` feature adds to the crate is in this module.

use std::borrow::Cow;
use std::future::Future;

use opentelemetry::context::FutureExt;
use opentelemetry::global::BoxedTracer;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use palisade_core::Listener;
use palisade_core::telemetry::{ERROR_TYPE, INSTANCE, MeterSource, global_tracer};

use crate::error::Result;
use crate::event::{Event, Operation, error_type};
use crate::instrumented::InstrumentedBuilder;
use crate::store::EventStore;
use crate::subscription::SubscriptionBuilder;
use crate::types::{NewEvent, StreamName};

/// `palisade.event_store.operation.duration`: seconds per operation, by `db.operation.name`.
pub const OPERATION_DURATION: &str = "palisade.event_store.operation.duration";
/// `palisade.event_store.events.appended`: events written.
pub const EVENTS_APPENDED: &str = "palisade.event_store.events.appended";
/// `palisade.event_store.conflicts`: appends refused for an unexpected version.
pub const CONFLICTS: &str = "palisade.event_store.conflicts";
/// `palisade.event_store.subscription.lag`: events a subscription has yet to read.
pub const SUBSCRIPTION_LAG: &str = "palisade.event_store.subscription.lag";
/// Attribute: the subscription's name.
pub const SUBSCRIPTION: &str = "palisade.subscription";

const DB_SYSTEM: &str = "db.system.name";
const DB_OPERATION: &str = "db.operation.name";
const DB_COLLECTION: &str = "db.collection.name";

const NAME: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where an instrumented store's spans go.
enum TracerSource {
    Global,
    Tracer(BoxedTracer),
}

/// What the builder of an [`Instrumented`](crate::Instrumented) store asked for.
#[derive(Default)]
pub(crate) struct OtelChoice {
    meter: Option<MeterSource>,
    tracer: Option<TracerSource>,
}

impl<S: EventStore> InstrumentedBuilder<S> {
    /// Spans and instruments on the global tracer and meter providers as
    /// they are when `build()` runs. Default: neither.
    pub fn otel(mut self) -> Self {
        self.otel.meter = Some(MeterSource::Global);
        self.otel.tracer = Some(TracerSource::Global);
        self
    }

    /// The instruments of `docs/telemetry.md` on `meter`.
    pub fn meter(mut self, meter: Meter) -> Self {
        self.otel.meter = Some(MeterSource::Meter(meter));
        self
    }

    /// A client span per operation on `tracer`, and its trace context in the
    /// metadata of appended events.
    pub fn tracer(mut self, tracer: BoxedTracer) -> Self {
        self.otel.tracer = Some(TracerSource::Tracer(tracer));
        self
    }
}

impl OtelChoice {
    pub(crate) fn build(
        self,
        name: &str,
        system: &'static str,
    ) -> (Option<OtelListener>, Option<Spans>) {
        let listener = self
            .meter
            .map(|source| OtelListener::new(&source.meter(NAME, VERSION), name, system));
        let spans = self.tracer.map(|source| Spans {
            tracer: match source {
                TracerSource::Global => global_tracer(NAME, VERSION),
                TracerSource::Tracer(tracer) => tracer,
            },
            by_operation: Operation::ALL
                .iter()
                .map(|op| {
                    [
                        KeyValue::new(DB_SYSTEM, system),
                        KeyValue::new(DB_OPERATION, op.as_str()),
                    ]
                })
                .collect(),
        });
        (listener, spans)
    }
}

/// The instruments of an instrumented store.
pub(crate) struct OtelListener {
    duration: Histogram<f64>,
    appended: Counter<u64>,
    conflicts: Counter<u64>,
    /// `palisade.instance`, `db.system.name`.
    system: [KeyValue; 2],
    /// Per operation: instance, system, operation.
    by_operation: Vec<[KeyValue; 3]>,
}

impl OtelListener {
    fn new(meter: &Meter, name: &str, system: &'static str) -> Self {
        let instance = KeyValue::new(INSTANCE, name.to_owned());
        let system_kv = KeyValue::new(DB_SYSTEM, system);
        Self {
            duration: meter
                .f64_histogram(OPERATION_DURATION)
                .with_unit("s")
                .with_description("Duration of event store operations")
                .build(),
            appended: meter
                .u64_counter(EVENTS_APPENDED)
                .with_unit("{event}")
                .with_description("Events appended")
                .build(),
            conflicts: meter
                .u64_counter(CONFLICTS)
                .with_unit("{conflict}")
                .with_description(
                    "Appends refused because the stream was not at the expected version",
                )
                .build(),
            by_operation: Operation::ALL
                .iter()
                .map(|op| {
                    [
                        instance.clone(),
                        system_kv.clone(),
                        KeyValue::new(DB_OPERATION, op.as_str()),
                    ]
                })
                .collect(),
            system: [instance, system_kv],
        }
    }
}

impl Listener<Event> for OtelListener {
    fn on_event(&self, event: &Event) {
        match event {
            Event::OperationFinished {
                operation,
                duration,
                error,
            } => {
                let i = Operation::ALL
                    .iter()
                    .position(|op| op == operation)
                    .unwrap_or(0);
                self.duration
                    .record(duration.as_secs_f64(), &self.by_operation[i]);
                if *operation == Operation::Append && *error == Some("conflict") {
                    self.conflicts.add(1, &self.system);
                }
            }
            Event::Appended { events } => self.appended.add(*events, &self.system),
            Event::SubscriptionRead { .. } | Event::SubscriptionFailed { .. } => {}
        }
    }
}

/// The spans of an instrumented store.
pub(crate) struct Spans {
    tracer: BoxedTracer,
    /// Per operation: `db.system.name`, `db.operation.name`.
    by_operation: Vec<[KeyValue; 2]>,
}

impl Spans {
    /// Runs `work` inside a client span named `event_store.{operation}`,
    /// a child of the caller's current span.
    pub(crate) async fn run<T, F>(
        &self,
        op: Operation,
        stream: Option<&StreamName>,
        work: F,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send,
    {
        let i = Operation::ALL.iter().position(|o| *o == op).unwrap_or(0);
        let mut attributes = self.by_operation[i].to_vec();
        if let Some(stream) = stream {
            attributes.push(KeyValue::new(DB_COLLECTION, stream.as_str().to_owned()));
        }
        let span = self
            .tracer
            .span_builder(Cow::Owned(format!("event_store.{op}")))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &Context::current());
        let cx = Context::current_with_span(span);
        let result = work.with_context(cx.clone()).await;
        let span = cx.span();
        if let Err(e) = &result {
            span.set_attribute(KeyValue::new(ERROR_TYPE, error_type(e)));
            span.set_status(Status::error(e.to_string()));
        }
        span.end();
        result
    }
}

/// Writes the W3C `traceparent` of the current span into events that carry none.
pub(crate) fn propagate_trace(events: &mut [NewEvent]) {
    let cx = Context::current();
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return;
    }
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    for e in events {
        e.metadata
            .traceparent
            .get_or_insert_with(|| traceparent.clone());
    }
}

impl SubscriptionBuilder {
    /// Reports `palisade.event_store.subscription.lag` on the global meter
    /// provider as it is when `start()` runs. Default: off.
    pub fn otel(self) -> Self {
        self.lag_meter(MeterSource::Global)
    }

    /// Reports `palisade.event_store.subscription.lag` on `meter`.
    pub fn meter(self, meter: Meter) -> Self {
        self.lag_meter(MeterSource::Meter(meter))
    }
}

/// The lag gauge of a subscription.
pub(crate) struct LagListener {
    gauge: Gauge<u64>,
    attributes: [KeyValue; 1],
}

impl LagListener {
    pub(crate) fn new(source: MeterSource, subscription: &str) -> Self {
        let gauge = source
            .meter(NAME, VERSION)
            .u64_gauge(SUBSCRIPTION_LAG)
            .with_unit("{event}")
            .with_description(
                "Events between a subscription's position and the newest readable event",
            )
            .build();
        Self {
            gauge,
            attributes: [KeyValue::new(SUBSCRIPTION, subscription.to_owned())],
        }
    }
}

impl Listener<Event> for LagListener {
    fn on_event(&self, event: &Event) {
        if let Event::SubscriptionRead { lag: Some(lag), .. } = event {
            self.gauge.record(*lag, &self.attributes);
        }
    }
}
