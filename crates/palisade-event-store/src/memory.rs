//! The in-memory backend: for tests, and for services that need no persistence.

use std::collections::HashMap;
use std::time::SystemTime;

use async_trait::async_trait;
use futures_util::stream;
use parking_lot::RwLock;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::idempotency::check_retry;
use crate::limits::Limits;
use crate::store::{EventStore, EventStream};
use crate::types::{
    AppendResult, Direction, ExpectedVersion, NewEvent, Position, ReadAll, ReadStream,
    RecordedEvent, Snapshot, StreamName, StreamState,
};

/// An event store that lives in this process. Clones are not shared: wrap it in an `Arc`.
///
/// ```
/// use palisade_event_store::{EventStore, ExpectedVersion, InMemoryEventStore, NewEvent, ReadStream, StreamName};
/// use futures_util::TryStreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> palisade_event_store::Result<()> {
/// let store = InMemoryEventStore::new();
/// let stream = StreamName::new("order-1")?;
/// store
///     .append(&stream, ExpectedVersion::NoStream, vec![NewEvent::json("OrderPlaced", &42)?])
///     .await?;
/// let events: Vec<_> = store.read_stream(&stream, ReadStream::forward()).await?.try_collect().await?;
/// assert_eq!(events[0].decode::<u32>()?, 42);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct InMemoryEventStore {
    inner: RwLock<Inner>,
    limits: Limits,
    changes: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every event in global order; `log[i].position.sequence == i + 1`.
    log: Vec<RecordedEvent>,
    streams: HashMap<StreamName, StreamEntry>,
    ids: HashMap<Uuid, usize>,
    snapshots: HashMap<StreamName, Snapshot>,
    commits: u64,
}

#[derive(Debug, Default)]
struct StreamEntry {
    version: u64,
    deleted: bool,
    /// Versions up to this one belong to a life of the stream before it was deleted.
    hidden_through: u64,
    /// Indices into the log, in version order.
    events: Vec<usize>,
}

impl StreamEntry {
    fn state(&self) -> StreamState {
        if self.deleted {
            StreamState::Deleted {
                version: self.version,
            }
        } else if self.version == 0 {
            StreamState::NoStream
        } else {
            StreamState::Active {
                version: self.version,
            }
        }
    }
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryEventStore {
    /// An empty store with the default [`Limits`].
    pub fn new() -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
            limits: Limits::default(),
            changes: watch::Sender::new(0),
        }
    }

    /// An empty store with these limits.
    ///
    /// # Errors
    /// A [`ConfigError`](palisade_core::ConfigError) naming `limits` if a limit is 0.
    pub fn with_limits(limits: Limits) -> std::result::Result<Self, palisade_core::ConfigError> {
        limits.validate()?;
        Ok(Self {
            limits,
            ..Self::new()
        })
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.limits.check(&events)?;
        let mut inner = self.inner.write();
        let existing: Vec<Option<&RecordedEvent>> = events
            .iter()
            .map(|e| inner.ids.get(&e.id).map(|&i| &inner.log[i]))
            .collect();
        if let Some(done) = check_retry(stream, expected, &events, &existing)? {
            return Ok(done);
        }

        let state = inner
            .streams
            .get(stream)
            .map_or(StreamState::NoStream, StreamEntry::state);
        state.check(stream, expected)?;

        inner.commits += 1;
        let commit = inner.commits;
        let now = SystemTime::now();
        let mut version = state.version();
        let mut indices = Vec::with_capacity(events.len());
        for e in events {
            version += 1;
            let index = inner.log.len();
            inner.ids.insert(e.id, index);
            inner.log.push(RecordedEvent {
                id: e.id,
                stream: stream.clone(),
                version,
                position: Position {
                    commit,
                    sequence: index as u64 + 1,
                },
                event_type: e.event_type,
                schema_version: e.schema_version,
                payload: e.payload,
                metadata: e.metadata,
                recorded_at: now,
            });
            indices.push(index);
        }
        let position = inner.log[*indices.last().unwrap_or(&0)].position;
        let entry = inner.streams.entry(stream.clone()).or_default();
        if entry.deleted {
            entry.deleted = false;
            entry.hidden_through = entry.version;
        }
        entry.version = version;
        entry.events.extend(indices);
        drop(inner);
        self.changes.send_modify(|n| *n += 1);
        Ok(AppendResult {
            version,
            position,
            written: true,
        })
    }

    async fn read_stream(&self, stream: &StreamName, options: ReadStream) -> Result<EventStream> {
        let inner = self.inner.read();
        let Some(entry) = inner.streams.get(stream) else {
            return Ok(Box::pin(stream::empty()));
        };
        if entry.deleted {
            return Err(Error::StreamDeleted {
                stream: stream.clone(),
            });
        }
        let visible = entry
            .events
            .iter()
            .map(|&i| &inner.log[i])
            .filter(|e| e.version > entry.hidden_through && options.contains(e.version));
        let limit = usize::try_from(options.limit.unwrap_or(u64::MAX)).unwrap_or(usize::MAX);
        let events: Vec<_> = match options.direction {
            Direction::Forward => visible.take(limit).cloned().map(Ok).collect(),
            Direction::Backward => visible.rev().take(limit).cloned().map(Ok).collect(),
        };
        Ok(Box::pin(stream::iter(events)))
    }

    async fn read_all(&self, options: ReadAll) -> Result<EventStream> {
        let inner = self.inner.read();
        let start = inner.log.partition_point(|e| e.position <= options.after);
        let limit = usize::try_from(options.limit.unwrap_or(u64::MAX)).unwrap_or(usize::MAX);
        let events: Vec<_> = inner.log[start..]
            .iter()
            .filter(|e| options.filter.matches(e))
            .take(limit)
            .cloned()
            .map(Ok)
            .collect();
        Ok(Box::pin(stream::iter(events)))
    }

    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState> {
        Ok(self
            .inner
            .read()
            .streams
            .get(stream)
            .map_or(StreamState::NoStream, StreamEntry::state))
    }

    async fn delete_stream(&self, stream: &StreamName, expected: ExpectedVersion) -> Result<()> {
        let mut inner = self.inner.write();
        let entry = inner.streams.entry(stream.clone()).or_default();
        entry.state().check(stream, expected)?;
        entry.deleted = true;
        Ok(())
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        crate::limits::check_snapshot(&snapshot)?;
        self.inner
            .write()
            .snapshots
            .insert(snapshot.stream.clone(), snapshot);
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamName) -> Result<Option<Snapshot>> {
        Ok(self.inner.read().snapshots.get(stream).cloned())
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn head(&self) -> Result<Position> {
        Ok(self
            .inner
            .read()
            .log
            .last()
            .map_or(Position::START, |e| e.position))
    }

    fn system_name(&self) -> &'static str {
        "palisade.memory"
    }
}
