//! Catch-up-then-live subscriptions over the global log, resumable from a checkpoint.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use palisade_core::{ConfigError, Listener, Listeners, SharedSleeper, TokioSleeper};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::event::Event;
use crate::store::EventStore;
use crate::types::{Filter, Position, ReadAll, RecordedEvent, StreamName};

/// Where each named subscription got to.
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// The saved position of `subscription`, if any.
    ///
    /// # Errors
    /// A backend error.
    async fn load(&self, subscription: &str) -> Result<Option<Position>>;

    /// Saves the position of `subscription`.
    ///
    /// # Errors
    /// A backend error.
    async fn save(&self, subscription: &str, position: Position) -> Result<()>;
}

/// Checkpoints in memory.
#[derive(Debug, Default)]
pub struct InMemoryCheckpointStore {
    positions: Mutex<HashMap<String, Position>>,
}

impl InMemoryCheckpointStore {
    /// No checkpoints.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CheckpointStore for InMemoryCheckpointStore {
    async fn load(&self, subscription: &str) -> Result<Option<Position>> {
        Ok(self.positions.lock().get(subscription).copied())
    }

    async fn save(&self, subscription: &str, position: Position) -> Result<()> {
        self.positions
            .lock()
            .insert(subscription.to_owned(), position);
        Ok(())
    }
}

/// Follows the global log: first every stored event after the checkpoint
/// (catch-up), then new ones as they commit (live).
///
/// Delivery is at least once: after a restart, events after the last saved
/// checkpoint come again. Each event carries its [`Position`], so a consumer
/// can skip what it has already applied.
///
/// ```
/// use std::sync::Arc;
/// use palisade_event_store::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let store = Arc::new(InMemoryEventStore::new());
/// let checkpoints = Arc::new(InMemoryCheckpointStore::new());
/// let order = StreamName::new("order-7")?;
/// store.append(&order, ExpectedVersion::Any, vec![NewEvent::json("OrderPlaced", &1)?]).await?;
///
/// let mut sub = Subscription::builder(store.clone(), checkpoints.clone(), "emails")
///     .filter(Filter::category("order"))
///     .page_size(100)
///     .start()
///     .await?;
/// let event = sub.next().await?;
/// assert_eq!(event.event_type, "OrderPlaced");
/// sub.checkpoint().await?; // resume after this event next time
/// # Ok(())
/// # }
/// ```
pub struct Subscription {
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    name: Arc<str>,
    filter: Filter,
    after: Position,
    buffer: VecDeque<RecordedEvent>,
    page: u64,
    changes: watch::Receiver<u64>,
    sleeper: SharedSleeper,
    events: Listeners<Event>,
}

/// Builds a [`Subscription`]: `Subscription::builder(store, checkpoints, name)…start()`.
#[must_use]
pub struct SubscriptionBuilder {
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    name: Arc<str>,
    filter: Filter,
    page: u64,
    sleeper: Option<SharedSleeper>,
    listeners: Listeners<Event>,
    #[cfg(feature = "otel")]
    lag: Option<palisade_core::telemetry::MeterSource>,
    #[cfg(feature = "tracing")]
    pub(crate) tracing: bool,
}

impl std::fmt::Debug for SubscriptionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionBuilder")
            .field("name", &self.name)
            .field("page_size", &self.page)
            .finish_non_exhaustive()
    }
}

impl SubscriptionBuilder {
    /// Only events that pass `filter`. Default: [`Filter::all`].
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// How many events one read fetches. Default 512; at least 1.
    pub fn page_size(mut self, events: u64) -> Self {
        self.page = events;
        self
    }

    /// What the subscription waits on between reads when it is caught up and
    /// no notification comes (the store's poll interval). Default: tokio's
    /// timer (`TokioSleeper`, which follows `tokio::time::pause`).
    pub fn sleeper(mut self, sleeper: SharedSleeper) -> Self {
        self.sleeper = Some(sleeper);
        self
    }

    /// Adds a listener that receives an [`Event::SubscriptionRead`] after
    /// each read of the log. Default: none.
    pub fn listener(mut self, listener: impl Listener<Event>) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    #[cfg(feature = "otel")]
    pub(crate) fn lag_meter(mut self, source: palisade_core::telemetry::MeterSource) -> Self {
        self.lag = Some(source);
        self
    }

    /// Checks the settings and starts after the saved checkpoint (or from the beginning).
    ///
    /// # Errors
    /// [`Error::Config`] naming `page_size` or `builder` (an empty name), or
    /// a backend error loading the checkpoint.
    pub async fn start(self) -> Result<Subscription> {
        if self.page == 0 {
            return Err(Error::Config(ConfigError::new(
                "page_size",
                "must be at least 1, got 0",
            )));
        }
        if self.name.is_empty() {
            return Err(Error::Config(ConfigError::new(
                "builder",
                "the subscription name must not be empty",
            )));
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
        if let Some(source) = self.lag {
            events.push(Arc::new(crate::telemetry::LagListener::new(
                source, &self.name,
            )));
        }
        let after = self
            .checkpoints
            .load(&self.name)
            .await?
            .unwrap_or(Position::START);
        let changes = self.store.changes();
        Ok(Subscription {
            store: self.store,
            checkpoints: self.checkpoints,
            name: self.name,
            filter: self.filter,
            after,
            buffer: VecDeque::new(),
            page: self.page,
            changes,
            sleeper: self.sleeper.unwrap_or_else(TokioSleeper::shared),
            events,
        })
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &self.name)
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// A builder for the subscription `name` (its checkpoint's key).
    pub fn builder(
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        name: impl Into<Arc<str>>,
    ) -> SubscriptionBuilder {
        SubscriptionBuilder {
            store,
            checkpoints,
            name: name.into(),
            filter: Filter::all(),
            page: 512,
            sleeper: None,
            listeners: Listeners::new(),
            #[cfg(feature = "otel")]
            lag: None,
            #[cfg(feature = "tracing")]
            tracing: false,
        }
    }

    /// Starts `name` after its saved checkpoint (or from the beginning), over
    /// events passing `filter`, with the builder's other defaults.
    ///
    /// # Errors
    /// As [`SubscriptionBuilder::start`].
    pub async fn start(
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        name: impl Into<Arc<str>>,
        filter: Filter,
    ) -> Result<Self> {
        Self::builder(store, checkpoints, name)
            .filter(filter)
            .start()
            .await
    }

    /// A subscription to one stream (events of that stream, in global order).
    ///
    /// # Errors
    /// As [`SubscriptionBuilder::start`].
    pub async fn to_stream(
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        name: impl Into<Arc<str>>,
        stream: &StreamName,
    ) -> Result<Self> {
        Self::start(store, checkpoints, name, Filter::stream(stream)).await
    }

    /// Reports a read to the listeners, with the lag measured only if someone listens.
    async fn report_read(&self, events: usize) -> Result<()> {
        if !self.events.is_empty() {
            let head = self.store.head().await?;
            let lag = head.sequence.saturating_sub(self.after.sequence);
            self.events.emit_with(|| Event::SubscriptionRead {
                subscription: Arc::clone(&self.name),
                events: events as u64,
                lag,
            });
        }
        Ok(())
    }

    /// The next event; waits for one when caught up.
    ///
    /// # Errors
    /// A backend error; the subscription can be polled again after it.
    pub async fn next(&mut self) -> Result<RecordedEvent> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.after = event.position;
                return Ok(event);
            }
            // Mark the change counter seen *before* reading, so a commit that
            // lands during the read wakes the wait below.
            self.changes.borrow_and_update();
            let page: Vec<RecordedEvent> = self
                .store
                .read_all(
                    ReadAll::after(self.after)
                        .filter(self.filter.clone())
                        .limit(self.page),
                )
                .await?
                .try_collect()
                .await?;
            self.report_read(page.len()).await?;
            if page.is_empty() {
                let poll = self.store.poll_interval();
                // A closed channel (the store is gone) or a timeout both just mean: read again.
                let _ = palisade_core::timeout(&*self.sleeper, poll, self.changes.changed()).await;
            } else {
                self.buffer.extend(page);
            }
        }
    }

    /// The position of the last event returned by [`Subscription::next`].
    pub fn position(&self) -> Position {
        self.after
    }

    /// Saves the position of the last event returned, so a restart resumes after it.
    ///
    /// # Errors
    /// A backend error.
    pub async fn checkpoint(&self) -> Result<()> {
        self.checkpoints.save(&self.name, self.after).await
    }
}
