//! Catch-up-then-live subscriptions over the global log, resumable from a checkpoint.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use palisade_core::{
    Backoff, ConfigError, Jitter, Listener, Listeners, SharedSleeper, TokioSleeper,
};
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
    /// How to wait between attempts after a backend error; `None`: return it.
    retry: Option<Backoff>,
}

/// The default wait between attempts after a backend error: 100 ms doubling
/// to 30 s, each drawn in its upper half.
fn default_retry() -> Backoff {
    Backoff::exponential(Duration::from_millis(100))
        .max(Duration::from_secs(30))
        .jitter(Jitter::Equal)
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
    retry: Option<Backoff>,
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

    /// How long to wait before reading again after a backend error (the
    /// database down, a connection cut): attempt N waits `backoff.delay(N)`,
    /// through the [`sleeper`](Self::sleeper). Default: 100 ms doubling to
    /// 30 s, with equal jitter. Each failure is an
    /// [`Event::SubscriptionFailed`]; the subscription goes on from where it
    /// was once the store answers, so nothing is skipped.
    pub fn retry_backoff(mut self, backoff: Backoff) -> Self {
        self.retry = Some(backoff);
        self
    }

    /// [`Subscription::next`] returns a backend error at once instead of
    /// retrying it. Default: it retries (see [`retry_backoff`](Self::retry_backoff)).
    pub fn return_errors(mut self) -> Self {
        self.retry = None;
        self
    }

    /// Adds a listener that receives an [`Event::SubscriptionRead`] after
    /// each read of the log, and an [`Event::SubscriptionFailed`] after each
    /// failed one. Default: none.
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
        if let Some(backoff) = &self.retry {
            backoff.validate("retry_backoff")?;
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
            retry: self.retry,
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
            retry: Some(default_retry()),
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

    /// Reports a read to the listeners, with the lag measured only if someone
    /// listens. A failure to measure it is not a failure of the read: the
    /// lag is then unknown.
    async fn report_read(&self, events: usize) {
        if !self.events.is_empty() {
            let lag = self
                .store
                .head()
                .await
                .ok()
                .map(|head| head.sequence.saturating_sub(self.after.sequence));
            self.events.emit_with(|| Event::SubscriptionRead {
                subscription: Arc::clone(&self.name),
                events: events as u64,
                lag,
            });
        }
    }

    /// The next event; waits for one when caught up.
    ///
    /// A backend error (the database down, a connection cut) is retried,
    /// waiting by the builder's [`retry_backoff`](SubscriptionBuilder::retry_backoff)
    /// and reporting each failure as an [`Event::SubscriptionFailed`], until
    /// the store answers; the subscription then goes on after the last event
    /// it returned, so nothing is skipped or repeated. Cancel-safe: dropping
    /// the future loses no event (one read but not yet returned is read again).
    ///
    /// # Errors
    /// Any other error (a codec or upcasting error), and a backend error when
    /// the builder asked for [`return_errors`](SubscriptionBuilder::return_errors);
    /// the subscription can be polled again after it.
    pub async fn next(&mut self) -> Result<RecordedEvent> {
        let mut failures: u32 = 0;
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.after = event.position;
                return Ok(event);
            }
            // Mark the change counter seen *before* reading, so a commit that
            // lands during the read wakes the wait below.
            self.changes.borrow_and_update();
            match self.read_page().await {
                Ok(page) if page.is_empty() => {
                    failures = 0;
                    let poll = self.store.poll_interval();
                    // A closed channel (the store is gone) or a timeout both just mean: read again.
                    let _ =
                        palisade_core::timeout(&*self.sleeper, poll, self.changes.changed()).await;
                }
                Ok(page) => self.buffer.extend(page),
                Err(error @ Error::Backend(_)) => {
                    let Some(backoff) = &self.retry else {
                        return Err(error);
                    };
                    failures = failures.saturating_add(1);
                    let retry_in = backoff.delay(failures);
                    self.events.emit_with(|| Event::SubscriptionFailed {
                        subscription: Arc::clone(&self.name),
                        error: error.to_string(),
                        attempt: failures,
                        retry_in,
                    });
                    self.sleeper.sleep(retry_in).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One page of the log after the last event returned, reported to the listeners.
    async fn read_page(&self) -> Result<Vec<RecordedEvent>> {
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
        self.report_read(page.len()).await;
        Ok(page)
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

/// A [`Subscription`] as a [`Stream`](futures_util::Stream) of events, from
/// [`Subscription::into_stream`]: each item is what [`Subscription::next`]
/// returns. The stream never ends.
///
/// ```
/// use std::sync::Arc;
/// use palisade_event_store::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let store = Arc::new(InMemoryEventStore::new());
/// let order = StreamName::new("order-7")?;
/// store.append(&order, ExpectedVersion::Any, vec![NewEvent::json("OrderPlaced", &1)?]).await?;
/// let checkpoints = Arc::new(InMemoryCheckpointStore::new());
/// let mut events = Subscription::start(store, checkpoints, "emails", Filter::all()).await?.into_stream();
/// let event = events.try_next().await?.expect("a subscription never ends");
/// assert_eq!(event.event_type, "OrderPlaced");
/// // Between items the subscription is at hand, to save its checkpoint.
/// events.subscription().expect("between items").checkpoint().await?;
/// # Ok(())
/// # }
/// ```
pub struct SubscriptionStream {
    stage: Stage,
}

type Reading = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Box<Subscription>, Result<RecordedEvent>)> + Send>,
>;

enum Stage {
    /// Boxed like the reading future: the stream is moved around, the
    /// subscription inside it need not be.
    Idle(Box<Subscription>),
    Reading(Reading),
    /// While `poll_next` moves from one stage to the next, and for good after
    /// a read panicked.
    Moving,
}

impl Subscription {
    /// This subscription as a [`Stream`](futures_util::Stream) of events.
    pub fn into_stream(self) -> SubscriptionStream {
        SubscriptionStream {
            stage: Stage::Idle(Box::new(self)),
        }
    }
}

impl SubscriptionStream {
    /// The subscription, between items (to read its position or save its
    /// checkpoint); `None` while an item is being read.
    pub fn subscription(&self) -> Option<&Subscription> {
        match &self.stage {
            Stage::Idle(sub) => Some(sub),
            _ => None,
        }
    }

    /// The subscription back, between items; `None` while an item is being read.
    pub fn into_inner(self) -> Option<Subscription> {
        match self.stage {
            Stage::Idle(sub) => Some(*sub),
            _ => None,
        }
    }
}

impl std::fmt::Debug for SubscriptionStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionStream")
            .field("subscription", &self.subscription())
            .finish()
    }
}

impl futures_util::Stream for SubscriptionStream {
    type Item = Result<RecordedEvent>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        loop {
            match std::mem::replace(&mut self.stage, Stage::Moving) {
                Stage::Idle(mut sub) => {
                    self.stage = Stage::Reading(Box::pin(async move {
                        let next = sub.next().await;
                        (sub, next)
                    }));
                }
                Stage::Reading(mut reading) => match reading.as_mut().poll(cx) {
                    std::task::Poll::Ready((sub, next)) => {
                        self.stage = Stage::Idle(sub);
                        return std::task::Poll::Ready(Some(next));
                    }
                    std::task::Poll::Pending => {
                        self.stage = Stage::Reading(reading);
                        return std::task::Poll::Pending;
                    }
                },
                // A read that panicked took the subscription with it: the stream ends.
                Stage::Moving => return std::task::Poll::Ready(None),
            }
        }
    }
}
