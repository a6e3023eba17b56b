//! Catch-up-then-live subscriptions over the global log, resumable from a checkpoint.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::error::Result;
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
/// let mut sub = Subscription::start(store.clone(), checkpoints.clone(), "emails", Filter::category("order")).await?;
/// let event = sub.next().await?;
/// assert_eq!(event.event_type, "OrderPlaced");
/// sub.checkpoint().await?; // resume after this event next time
/// # Ok(())
/// # }
/// ```
pub struct Subscription {
    store: Arc<dyn EventStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    name: String,
    filter: Filter,
    after: Position,
    buffer: VecDeque<RecordedEvent>,
    page: u64,
    changes: watch::Receiver<u64>,
    #[cfg(feature = "otel")]
    lag: Option<(
        opentelemetry::metrics::Gauge<u64>,
        [opentelemetry::KeyValue; 1],
    )>,
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
    /// Starts `name` after its saved checkpoint (or from the beginning), over events passing `filter`.
    ///
    /// # Errors
    /// A backend error loading the checkpoint.
    pub async fn start(
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        name: impl Into<String>,
        filter: Filter,
    ) -> Result<Self> {
        let name = name.into();
        let after = checkpoints.load(&name).await?.unwrap_or(Position::START);
        let changes = store.changes();
        Ok(Self {
            store,
            checkpoints,
            name,
            filter,
            after,
            buffer: VecDeque::new(),
            page: 512,
            changes,
            #[cfg(feature = "otel")]
            lag: None,
        })
    }

    /// A subscription to one stream (events of that stream, in global order).
    ///
    /// # Errors
    /// As [`Subscription::start`].
    pub async fn to_stream(
        store: Arc<dyn EventStore>,
        checkpoints: Arc<dyn CheckpointStore>,
        name: impl Into<String>,
        stream: &StreamName,
    ) -> Result<Self> {
        Self::start(store, checkpoints, name, Filter::stream(stream)).await
    }

    /// How many events one read fetches (default 512).
    #[must_use]
    pub fn page_size(mut self, events: u64) -> Self {
        self.page = events.max(1);
        self
    }

    /// Reports `palisade.event_store.subscription.lag` on `meter` (feature
    /// `otel`): after each read, how many events stand between the last one
    /// returned and the newest readable one (exact in memory and on SQLite, an
    /// estimate from sequence numbers on PostgreSQL). Costs one small query per read.
    #[cfg(feature = "otel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
    #[must_use]
    pub fn meter(mut self, meter: &opentelemetry::metrics::Meter) -> Self {
        let gauge = meter
            .u64_gauge(crate::telemetry::SUBSCRIPTION_LAG)
            .with_unit("{event}")
            .with_description(
                "Events between a subscription's position and the newest readable event",
            )
            .build();
        let name = opentelemetry::KeyValue::new(crate::telemetry::SUBSCRIPTION, self.name.clone());
        self.lag = Some((gauge, [name]));
        self
    }

    #[cfg(feature = "otel")]
    async fn report_lag(&self) -> Result<()> {
        if let Some((gauge, attributes)) = &self.lag {
            let head = self.store.head().await?;
            gauge.record(
                head.sequence.saturating_sub(self.after.sequence),
                attributes,
            );
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
            #[cfg(feature = "otel")]
            self.report_lag().await?;
            if page.is_empty() {
                let poll = self.store.poll_interval();
                // A closed channel (the store is gone) or a timeout both just mean: read again.
                let _ = tokio::time::timeout(poll, self.changes.changed()).await;
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
