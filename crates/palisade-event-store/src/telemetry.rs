//! OpenTelemetry for any event store (feature `otel`): a client span per
//! operation with `db.*` attributes, the instruments of `docs/telemetry.md`,
//! and the caller's trace context written into the metadata of appended events.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use opentelemetry::context::FutureExt;
use opentelemetry::global::BoxedTracer;
use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::store::{EventStore, EventStream};
use crate::types::{
    AppendResult, ExpectedVersion, NewEvent, ReadAll, ReadStream, Snapshot, StreamName, StreamState,
};

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

const OPERATIONS: [&str; 7] = [
    "append",
    "read_stream",
    "read_all",
    "stream_state",
    "delete_stream",
    "save_snapshot",
    "load_snapshot",
];

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// Any event store, instrumented. Wrap the store once, at start-up:
///
/// ```
/// use palisade_event_store::{InMemoryEventStore, Instrumented};
///
/// // Uses the global meter and tracer providers as they are now.
/// let store = Instrumented::new(InMemoryEventStore::new());
/// # let _ = store;
/// ```
pub struct Instrumented<S> {
    inner: S,
    tracer: BoxedTracer,
    duration: Histogram<f64>,
    appended: Counter<u64>,
    conflicts: Counter<u64>,
    system: [KeyValue; 1],
    /// Per operation: `db.system.name`, `db.operation.name`.
    by_operation: Vec<[KeyValue; 2]>,
}

impl<S> std::fmt::Debug for Instrumented<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instrumented").finish_non_exhaustive()
    }
}

impl<S: EventStore> Instrumented<S> {
    /// Instruments `inner` with the global meter and tracer providers as they are now.
    pub fn new(inner: S) -> Self {
        let meter = opentelemetry::global::meter_with_scope(scope());
        let tracer = opentelemetry::global::tracer_with_scope(scope());
        Self::with(inner, &meter, tracer)
    }

    /// Instruments `inner` with this meter and tracer (tests inject the SDK's in-memory ones).
    pub fn with(inner: S, meter: &Meter, tracer: BoxedTracer) -> Self {
        let system = KeyValue::new(DB_SYSTEM, inner.system_name());
        let by_operation = OPERATIONS
            .iter()
            .map(|op| [system.clone(), KeyValue::new(DB_OPERATION, *op)])
            .collect();
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
            system: [system],
            by_operation,
            tracer,
            inner,
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Runs `work` inside a client span named `event_store.{operation}` and records its duration.
    async fn traced<T, F>(&self, op: usize, stream: Option<&StreamName>, work: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>> + Send,
    {
        let name = OPERATIONS[op];
        let mut attributes = self.by_operation[op].to_vec();
        if let Some(stream) = stream {
            attributes.push(KeyValue::new(DB_COLLECTION, stream.as_str().to_owned()));
        }
        let span = self
            .tracer
            .span_builder(Cow::Owned(format!("event_store.{name}")))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &Context::current());
        let cx = Context::current_with_span(span);
        let started = Instant::now();
        let result = work.with_context(cx.clone()).await;
        self.duration
            .record(started.elapsed().as_secs_f64(), &self.by_operation[op]);
        let span = cx.span();
        if let Err(e) = &result {
            span.set_attribute(KeyValue::new("error.type", error_type(e)));
            span.set_status(Status::error(e.to_string()));
        }
        span.end();
        result
    }
}

fn error_type(e: &Error) -> &'static str {
    match e {
        Error::Conflict { .. } => "conflict",
        Error::StreamDeleted { .. } => "stream_deleted",
        Error::DuplicateEventId { .. } => "duplicate_event_id",
        Error::Backend(_) => "backend",
        _ => "invalid_input",
    }
}

/// The W3C `traceparent` of the current span, if there is one.
fn current_traceparent() -> Option<String> {
    let cx = Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

#[async_trait]
impl<S: EventStore> EventStore for Instrumented<S> {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let count = events.len() as u64;
        self.traced(0, Some(stream), async {
            // Events carry the trace that caused them, so a consumer can continue it.
            if let Some(traceparent) = current_traceparent() {
                for e in &mut events {
                    e.metadata
                        .traceparent
                        .get_or_insert_with(|| traceparent.clone());
                }
            }
            let result = self.inner.append(stream, expected, events).await;
            match &result {
                Ok(r) if r.written => self.appended.add(count, &self.system),
                Err(Error::Conflict { .. }) => self.conflicts.add(1, &self.system),
                _ => {}
            }
            result
        })
        .await
    }

    async fn read_stream(&self, stream: &StreamName, options: ReadStream) -> Result<EventStream> {
        self.traced(1, Some(stream), self.inner.read_stream(stream, options))
            .await
    }

    async fn read_all(&self, options: ReadAll) -> Result<EventStream> {
        self.traced(2, None, self.inner.read_all(options)).await
    }

    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState> {
        self.traced(3, Some(stream), self.inner.stream_state(stream))
            .await
    }

    async fn delete_stream(&self, stream: &StreamName, expected: ExpectedVersion) -> Result<()> {
        self.traced(4, Some(stream), self.inner.delete_stream(stream, expected))
            .await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        let stream = snapshot.stream.clone();
        self.traced(5, Some(&stream), self.inner.save_snapshot(snapshot))
            .await
    }

    async fn load_snapshot(&self, stream: &StreamName) -> Result<Option<Snapshot>> {
        self.traced(6, Some(stream), self.inner.load_snapshot(stream))
            .await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }

    fn poll_interval(&self) -> Duration {
        self.inner.poll_interval()
    }

    async fn head(&self) -> Result<crate::types::Position> {
        self.inner.head().await
    }

    fn system_name(&self) -> &'static str {
        self.inner.system_name()
    }
}
