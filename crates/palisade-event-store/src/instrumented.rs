//! `Instrumented`: any event store, reporting what it does to listeners, and
//! through them to `tracing` and OpenTelemetry.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use palisade_core::{ConfigError, Listener, Listeners, SharedClock, SystemClock};
use tokio::sync::watch;

use crate::error::Result;
use crate::event::{Event, Operation, error_type};
use crate::store::{EventStore, EventStream};
use crate::types::{
    AppendResult, ExpectedVersion, NewEvent, Position, ReadAll, ReadStream, Snapshot, StreamName,
    StreamState,
};

/// Any event store, instrumented: each operation is timed and reported as
/// an [`Event`] to the builder's listeners, `tracing` (feature `tracing`)
/// and OpenTelemetry (feature `otel`: a client span per operation, the
/// instruments of `docs/telemetry.md`, and the caller's trace context written
/// into the metadata of appended events). Reports nothing the builder did
/// not ask for.
///
/// ```
/// use palisade_event_store::{Event, InMemoryEventStore, Instrumented, Operation};
/// use std::sync::{Arc, Mutex};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&seen);
/// let store = Instrumented::builder(InMemoryEventStore::new())
///     .name("orders")
///     .listener(move |e: &Event| sink.lock().unwrap().push(e.clone()))
///     .build()?;
/// # let _ = store;
/// # Ok::<(), palisade_event_store::ConfigError>(())
/// ```
pub struct Instrumented<S> {
    inner: S,
    events: Listeners<Event>,
    clock: SharedClock,
    #[cfg(feature = "otel")]
    spans: Option<crate::telemetry::Spans>,
}

impl<S> std::fmt::Debug for Instrumented<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instrumented")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// Builds an [`Instrumented`] store.
#[must_use]
pub struct InstrumentedBuilder<S> {
    inner: S,
    pub(crate) name: Arc<str>,
    listeners: Listeners<Event>,
    clock: Option<SharedClock>,
    #[cfg(feature = "otel")]
    pub(crate) otel: crate::telemetry::OtelChoice,
    #[cfg(feature = "tracing")]
    pub(crate) tracing: bool,
}

impl<S: EventStore> Instrumented<S> {
    /// A builder that instruments `inner`.
    pub fn builder(inner: S) -> InstrumentedBuilder<S> {
        InstrumentedBuilder {
            inner,
            name: Arc::from("default"),
            listeners: Listeners::new(),
            clock: None,
            #[cfg(feature = "otel")]
            otel: crate::telemetry::OtelChoice::default(),
            #[cfg(feature = "tracing")]
            tracing: false,
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Runs `work`, timed, inside a span when OpenTelemetry spans are on,
    /// and reports how it finished.
    async fn observe<T, F>(&self, op: Operation, stream: Option<&StreamName>, work: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send,
    {
        #[cfg(feature = "otel")]
        if let Some(spans) = &self.spans {
            return spans.run(op, stream, self.timed(op, work)).await;
        }
        let _ = stream;
        self.timed(op, work).await
    }

    async fn timed<T, F>(&self, op: Operation, work: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send,
    {
        let started = self.clock.now_nanos();
        let result = work.await;
        self.events.emit_with(|| Event::OperationFinished {
            operation: op,
            duration: Duration::from_nanos(self.clock.now_nanos().saturating_sub(started)),
            error: result.as_ref().err().map(error_type),
        });
        result
    }
}

impl<S: EventStore> InstrumentedBuilder<S> {
    /// The instance name in telemetry (`palisade.instance`) and in `tracing`
    /// events. Default: `"default"`; must not be empty.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds a listener that receives every [`Event`], synchronously, on the
    /// task that caused it. Default: none.
    pub fn listener(mut self, listener: impl Listener<Event>) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// The clock operations are timed by. Default: the system clock.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Checks the settings and wraps the store.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `name` if it is empty.
    pub fn build(self) -> std::result::Result<Instrumented<S>, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        #[allow(unused_mut)]
        let mut events = self.listeners;
        #[cfg(feature = "tracing")]
        if self.tracing {
            events.push(Arc::new(crate::tracing_listener::TracingListener {
                name: Arc::clone(&self.name),
            }));
        }
        #[cfg(feature = "otel")]
        let spans = {
            let (listener, spans) = self.otel.build(&self.name, self.inner.system_name());
            if let Some(listener) = listener {
                events.push(Arc::new(listener));
            }
            spans
        };
        Ok(Instrumented {
            inner: self.inner,
            events,
            clock: self.clock.unwrap_or_else(SystemClock::shared),
            #[cfg(feature = "otel")]
            spans,
        })
    }
}

#[async_trait]
impl<S: EventStore> EventStore for Instrumented<S> {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let count = events.len() as u64;
        self.observe(Operation::Append, Some(stream), async {
            #[cfg(feature = "otel")]
            let events = {
                let mut events = events;
                if self.spans.is_some() {
                    crate::telemetry::propagate_trace(&mut events);
                }
                events
            };
            let result = self.inner.append(stream, expected, events).await;
            if let Ok(r) = &result
                && r.written
            {
                self.events.emit_with(|| Event::Appended { events: count });
            }
            result
        })
        .await
    }

    async fn read_stream(&self, stream: &StreamName, options: ReadStream) -> Result<EventStream> {
        self.observe(
            Operation::ReadStream,
            Some(stream),
            self.inner.read_stream(stream, options),
        )
        .await
    }

    async fn read_all(&self, options: ReadAll) -> Result<EventStream> {
        self.observe(Operation::ReadAll, None, self.inner.read_all(options))
            .await
    }

    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState> {
        self.observe(
            Operation::StreamState,
            Some(stream),
            self.inner.stream_state(stream),
        )
        .await
    }

    async fn delete_stream(&self, stream: &StreamName, expected: ExpectedVersion) -> Result<()> {
        self.observe(
            Operation::DeleteStream,
            Some(stream),
            self.inner.delete_stream(stream, expected),
        )
        .await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        let stream = snapshot.stream.clone();
        self.observe(
            Operation::SaveSnapshot,
            Some(&stream),
            self.inner.save_snapshot(snapshot),
        )
        .await
    }

    async fn load_snapshot(&self, stream: &StreamName) -> Result<Option<Snapshot>> {
        self.observe(
            Operation::LoadSnapshot,
            Some(stream),
            self.inner.load_snapshot(stream),
        )
        .await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }

    fn poll_interval(&self) -> Duration {
        self.inner.poll_interval()
    }

    async fn head(&self) -> Result<Position> {
        self.inner.head().await
    }

    fn system_name(&self) -> &'static str {
        self.inner.system_name()
    }
}
