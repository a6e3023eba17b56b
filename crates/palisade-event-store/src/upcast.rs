//! Upcasters: old event schemas turned into current ones as they are read.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::store::{EventStore, EventStream};
use crate::types::{
    AppendResult, ExpectedVersion, NewEvent, ReadAll, ReadStream, RecordedEvent, Snapshot,
    StreamName, StreamState,
};

type Step = Arc<dyn Fn(RecordedEvent) -> std::result::Result<RecordedEvent, String> + Send + Sync>;

/// Steps from (event type, schema version) to the next schema version.
///
/// ```
/// use palisade_event_store::{RecordedEvent, Upcasters};
///
/// // v1 of OrderPlaced had `amount` in cents as a string; v2 has a number.
/// let upcasters = Upcasters::new().register("OrderPlaced", 1, |mut e: RecordedEvent| {
///     let mut v: serde_json::Value = serde_json::from_slice(&e.payload).map_err(|e| e.to_string())?;
///     let cents: u64 = v["amount"].as_str().ok_or("amount is not a string")?.parse().map_err(|_| "bad amount")?;
///     v["amount"] = cents.into();
///     e.payload = serde_json::to_vec(&v).map_err(|e| e.to_string())?;
///     Ok(e)
/// })?;
/// # let _ = upcasters;
/// # Ok::<(), palisade_event_store::ConfigError>(())
/// ```
#[derive(Clone, Default)]
pub struct Upcasters {
    steps: HashMap<(String, u32), Step>,
    /// The newest schema version each registered type leads to.
    latest: HashMap<String, u32>,
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upcasters")
            .field("latest", &self.latest)
            .finish_non_exhaustive()
    }
}

/// The most steps one event may go through (a guard against a step that does not move forward).
const MAX_STEPS: usize = 64;

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the step that turns `event_type` at `from_version` into `from_version + 1`.
    /// The step changes the payload (and may rename the type); the schema version is set for it.
    ///
    /// # Errors
    /// A [`ConfigError`](palisade_core::ConfigError) naming `register` when `from_version` is
    /// [`MAX_SCHEMA_VERSION`](crate::MAX_SCHEMA_VERSION) or above: no
    /// version an event can be stored with comes after it.
    pub fn register<F>(
        mut self,
        event_type: impl Into<String>,
        from_version: u32,
        step: F,
    ) -> std::result::Result<Self, palisade_core::ConfigError>
    where
        F: Fn(RecordedEvent) -> std::result::Result<RecordedEvent, String> + Send + Sync + 'static,
    {
        if from_version >= crate::MAX_SCHEMA_VERSION {
            return Err(palisade_core::ConfigError::new(
                "register",
                format!(
                    "from_version must be below {}, the largest schema version, got {from_version}",
                    crate::MAX_SCHEMA_VERSION
                ),
            ));
        }
        let event_type = event_type.into();
        let to = from_version + 1;
        let latest = self.latest.entry(event_type.clone()).or_insert(to);
        *latest = (*latest).max(to);
        self.steps
            .insert((event_type, from_version), Arc::new(step));
        Ok(self)
    }

    /// Brings `event` to the newest schema its type has.
    ///
    /// # Errors
    /// [`Error::UnknownSchema`] when the type has upcasters but none from this
    /// schema version; [`Error::Upcast`] when a step fails.
    pub fn apply(&self, mut event: RecordedEvent) -> Result<RecordedEvent> {
        for _ in 0..MAX_STEPS {
            let Some(&latest) = self.latest.get(&event.event_type) else {
                return Ok(event);
            };
            if event.schema_version >= latest {
                return Ok(event);
            }
            let key = (event.event_type.clone(), event.schema_version);
            let Some(step) = self.steps.get(&key) else {
                return Err(Error::UnknownSchema {
                    event_type: key.0,
                    schema_version: key.1,
                    latest,
                });
            };
            let mut next = step(event).map_err(|reason| Error::Upcast {
                event_type: key.0.clone(),
                schema_version: key.1,
                reason,
            })?;
            next.schema_version = key.1 + 1;
            event = next;
        }
        Err(Error::Upcast {
            event_type: event.event_type,
            schema_version: event.schema_version,
            reason: format!("more than {MAX_STEPS} steps"),
        })
    }
}

/// Any store, with upcasters applied to everything it reads.
#[derive(Debug)]
pub struct Upcasting<S> {
    inner: S,
    upcasters: Arc<Upcasters>,
}

impl<S> Upcasting<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, upcasters: Upcasters) -> Self {
        Self {
            inner,
            upcasters: Arc::new(upcasters),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn upcast(&self, events: EventStream) -> EventStream {
        let upcasters = Arc::clone(&self.upcasters);
        Box::pin(events.map(move |e| e.and_then(|e| upcasters.apply(e))))
    }
}

#[async_trait]
impl<S: EventStore> EventStore for Upcasting<S> {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(&self, stream: &StreamName, options: ReadStream) -> Result<EventStream> {
        Ok(self.upcast(self.inner.read_stream(stream, options).await?))
    }

    async fn read_all(&self, options: ReadAll) -> Result<EventStream> {
        Ok(self.upcast(self.inner.read_all(options).await?))
    }

    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState> {
        self.inner.stream_state(stream).await
    }

    async fn delete_stream(&self, stream: &StreamName, expected: ExpectedVersion) -> Result<()> {
        self.inner.delete_stream(stream, expected).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &StreamName) -> Result<Option<Snapshot>> {
        self.inner.load_snapshot(stream).await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }

    fn poll_interval(&self) -> std::time::Duration {
        self.inner.poll_interval()
    }

    async fn head(&self) -> Result<crate::types::Position> {
        self.inner.head().await
    }

    fn system_name(&self) -> &'static str {
        self.inner.system_name()
    }
}
