//! The command handler's builder: every setting with its default.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::{
    Backoff, ConfigError, Jitter, Listener, Listeners, SharedSleeper, TokioSleeper,
};
use palisade_event_store::{EventStore, StreamName, Upcasters};

use crate::aggregate::Aggregate;
use crate::event::Event;
use crate::handler::{CommandHandler, Inner};
use crate::repository::Repository;

/// When the handler saves a snapshot after a command.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum SnapshotPolicy {
    /// Never (the default): every load replays the whole stream.
    #[default]
    Never,
    /// Whenever the stream's version crosses a multiple of this many events.
    EveryEvents(u64),
    /// When this function says so, given the version before and after the command.
    When(Arc<dyn Fn(u64, u64) -> bool + Send + Sync>),
}

impl std::fmt::Debug for SnapshotPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Never => f.write_str("Never"),
            Self::EveryEvents(n) => write!(f, "EveryEvents({n})"),
            Self::When(_) => f.write_str("When(..)"),
        }
    }
}

impl SnapshotPolicy {
    /// A snapshot when `decide(version_before, version_after)` returns `true`.
    pub fn when(decide: impl Fn(u64, u64) -> bool + Send + Sync + 'static) -> Self {
        Self::When(Arc::new(decide))
    }

    pub(crate) fn wants(&self, before: u64, after: u64) -> bool {
        match self {
            Self::Never => false,
            Self::EveryEvents(n) => before / n != after / n,
            Self::When(decide) => decide(before, after),
        }
    }
}

/// The default wait after a conflict: 1 ms doubling to 100 ms, full jitter,
/// so writers that collided do not collide again.
fn default_backoff() -> Backoff {
    Backoff::exponential(Duration::from_millis(1))
        .max(Duration::from_millis(100))
        .jitter(Jitter::Full)
}

/// Builds a [`CommandHandler`]: `CommandHandler::builder(store, services)…build()`.
#[must_use]
pub struct CommandHandlerBuilder<A: Aggregate> {
    store: Arc<dyn EventStore>,
    services: A::Services,
    name: Arc<str>,
    max_attempts: u32,
    backoff: Backoff,
    sleeper: Option<SharedSleeper>,
    upcasters: Option<Upcasters>,
    snapshots: SnapshotPolicy,
    listeners: Listeners<Event>,
    #[cfg(feature = "tracing")]
    tracing: bool,
    #[cfg(feature = "otel")]
    meter: Option<palisade_core::telemetry::MeterSource>,
    #[cfg(feature = "otel")]
    tracer: Option<crate::telemetry::TracerSource>,
    cache: Option<Arc<dyn crate::handler::StateCache<A>>>,
}

impl<A: Aggregate> std::fmt::Debug for CommandHandlerBuilder<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandHandlerBuilder")
            .field("aggregate", &A::TYPE)
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .field("snapshot_policy", &self.snapshots)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> CommandHandlerBuilder<A> {
    pub(crate) fn new(store: Arc<dyn EventStore>, services: A::Services) -> Self {
        Self {
            store,
            services,
            name: Arc::from("default"),
            max_attempts: 16,
            backoff: default_backoff(),
            sleeper: None,
            upcasters: None,
            snapshots: SnapshotPolicy::Never,
            listeners: Listeners::new(),
            #[cfg(feature = "tracing")]
            tracing: false,
            #[cfg(feature = "otel")]
            meter: None,
            #[cfg(feature = "otel")]
            tracer: None,
            cache: None,
        }
    }

    /// The instance name in telemetry. Default `"default"`; not empty.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// How many times one command is loaded, handled and appended before a
    /// version conflict is returned. Default 16; at least 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The wait after the Nth conflict: `backoff.delay(N)`, through the
    /// [`sleeper`](Self::sleeper). Default: 1 ms doubling to 100 ms, full jitter.
    pub fn conflict_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// What waits between attempts. Default: tokio's timer.
    pub fn sleeper(mut self, sleeper: SharedSleeper) -> Self {
        self.sleeper = Some(sleeper);
        self
    }

    /// Upcasters applied to every event loaded, before it is decoded. Default: none.
    pub fn upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = Some(upcasters);
        self
    }

    /// When to save a snapshot after a command. Default [`SnapshotPolicy::Never`].
    pub fn snapshot_policy(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshots = policy;
        self
    }

    /// Adds a listener for the handler's [`Event`]s. Default: none.
    pub fn listener(mut self, listener: impl Listener<Event>) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Emits `tracing` events with target `palisade_cqrs` and runs each
    /// command in a `cqrs.command {aggregate}` span.
    #[cfg(feature = "tracing")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    pub fn tracing(mut self) -> Self {
        self.tracing = true;
        self
    }

    /// Records `palisade.cqrs.commands` on the global meter provider and
    /// runs each command in a `cqrs.command {aggregate}` span on the global
    /// tracer provider (both as they are at `build()`).
    #[cfg(feature = "otel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
    pub fn otel(mut self) -> Self {
        self.meter = Some(palisade_core::telemetry::MeterSource::Global);
        self.tracer = Some(crate::telemetry::TracerSource::Global);
        self
    }

    /// Runs each command in a `cqrs.command {aggregate}` span on `tracer`:
    /// a child of the caller's current span, the parent of the store's spans,
    /// and the `traceparent` of the events the command appends.
    #[cfg(feature = "otel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
    pub fn tracer(mut self, tracer: opentelemetry::global::BoxedTracer) -> Self {
        self.tracer = Some(crate::telemetry::TracerSource::Tracer(tracer));
        self
    }

    /// Records `palisade.cqrs.commands` on `meter`.
    #[cfg(feature = "otel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
    pub fn meter(mut self, meter: opentelemetry::metrics::Meter) -> Self {
        self.meter = Some(palisade_core::telemetry::MeterSource::Meter(meter));
        self
    }

    /// Keeps hot aggregates in `cache` (feature `cache`): a command on a cached
    /// aggregate reads only the events after the cached version (none when it
    /// is current) instead of the snapshot and the events after it; the entry
    /// is replaced after each append and dropped on a conflict. Default: no cache.
    ///
    /// ```
    /// # use palisade_cqrs::*;
    /// # use std::sync::Arc;
    /// # #[derive(Default, Clone, serde::Serialize, serde::Deserialize)] struct Counter(u64);
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct Added;
    /// # impl DomainEvent for Added { fn event_type(&self) -> &'static str { "Added" } }
    /// # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
    /// # impl Aggregate for Counter {
    /// #     const TYPE: &'static str = "counter";
    /// #     type Command = (); type Event = Added; type Error = Never; type Services = ();
    /// #     async fn handle(&self, _: &(), _: &()) -> Result<Vec<Added>, Never> { Ok(vec![Added]) }
    /// #     fn apply(&mut self, _: Added) { self.0 += 1; }
    /// # }
    /// let hot = palisade_cache::Cache::builder().max_capacity(10_000).build()?;
    /// let counters = CommandHandler::<Counter>::builder(Arc::new(InMemoryEventStore::new()), ())
    ///     .cache(hot)
    ///     .build()?;
    /// # let _ = counters;
    /// # Ok::<(), ConfigError>(())
    /// ```
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    pub fn cache(mut self, cache: palisade_cache::Cache<StreamName, (A, u64)>) -> Self
    where
        A: Clone,
    {
        self.cache = Some(Arc::new(cache));
        self
    }

    /// Checks every setting and builds the handler.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `name`, `max_attempts`, `conflict_backoff`,
    /// `snapshot_policy`, or `builder` when `A::TYPE` is not a valid stream category.
    pub fn build(self) -> Result<CommandHandler<A>, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::new(
                "max_attempts",
                "must be at least 1, got 0",
            ));
        }
        self.backoff.validate("conflict_backoff")?;
        if matches!(self.snapshots, SnapshotPolicy::EveryEvents(0)) {
            return Err(ConfigError::new(
                "snapshot_policy",
                "EveryEvents must be at least 1, got 0",
            ));
        }
        check_type::<A>()?;
        #[allow(unused_mut)]
        let mut listeners = self.listeners;
        #[cfg(feature = "tracing")]
        if self.tracing {
            listeners.push(Arc::new(crate::tracing_listener::TracingListener));
        }
        #[cfg(feature = "otel")]
        if let Some(source) = self.meter {
            listeners.push(Arc::new(crate::telemetry::CommandMetrics::new(
                source, &self.name,
            )));
        }
        let mut repository = Repository::new(self.store);
        if let Some(u) = self.upcasters {
            repository = repository.with_upcasters(u);
        }
        Ok(CommandHandler {
            inner: Arc::new(Inner {
                repository,
                services: self.services,
                name: self.name,
                max_attempts: self.max_attempts,
                backoff: self.backoff,
                sleeper: self.sleeper.unwrap_or_else(TokioSleeper::shared),
                snapshots: self.snapshots,
                listeners,
                #[cfg(feature = "tracing")]
                tracing: self.tracing,
                #[cfg(feature = "otel")]
                tracer: self.tracer.map(crate::telemetry::TracerSource::tracer),
                cache: self.cache,
            }),
        })
    }
}

/// `A::TYPE` must be a stream category: a valid name without `-`.
pub(crate) fn check_type<A: Aggregate>() -> Result<(), ConfigError> {
    if A::TYPE.contains('-') || StreamName::new(A::TYPE).is_err() {
        return Err(ConfigError::new(
            "builder",
            format!(
                "the aggregate type {:?} must be 1 to 200 of A-Z a-z 0-9 _ . : @ $ / (no `-`)",
                A::TYPE
            ),
        ));
    }
    Ok(())
}
