//! Loading an aggregate (latest snapshot plus the events after it, upcasted)
//! and appending its events with the expected version.

use std::marker::PhantomData;
use std::sync::Arc;

use palisade_event_store::{
    AppendResult, Codec, Error, EventStore, ExpectedVersion, JsonCodec, Metadata, NewEvent,
    Position, ReadStream, Snapshot, StreamName, TryStreamExt, Upcasters,
};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};

/// An aggregate as loaded: its state and the stream version it reflects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<A> {
    /// The state after every event up to `version`.
    pub state: A,
    /// The stream's version (0: no events yet).
    pub version: u64,
    /// The version of the snapshot the load started from, if one was used.
    pub snapshot: Option<u64>,
    /// Events folded onto the snapshot (or onto the default state).
    pub replayed: u64,
}

/// Where an event with a looked-for id was found during a load.
pub(crate) type Found = Option<(u64, Position)>;

/// Loads and appends the events of aggregates of type `A`.
///
/// The stream of the aggregate `id` is `<A::TYPE>-<id>`.
pub struct Repository<A> {
    store: Arc<dyn EventStore>,
    upcasters: Option<Arc<Upcasters>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            upcasters: self.upcasters.clone(),
            _aggregate: PhantomData,
        }
    }
}

impl<A> std::fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("store", &self.store.system_name())
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository over `store`, with no upcasters.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            upcasters: None,
            _aggregate: PhantomData,
        }
    }

    /// Applies `upcasters` to every event read, before it is decoded.
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = Some(Arc::new(upcasters));
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The stream of aggregate `id`: `<A::TYPE>-<id>`.
    ///
    /// # Errors
    /// [`Error::InvalidStreamName`] when the name is not a valid stream name.
    pub fn stream(&self, id: &str) -> Result<StreamName, Error> {
        StreamName::new(format!("{}-{id}", A::TYPE))
    }

    /// Loads aggregate `id`: the latest snapshot (if its schema is
    /// [`A::SNAPSHOT_VERSION`](Aggregate::SNAPSHOT_VERSION)), then every event after it.
    ///
    /// # Errors
    /// A store error (the stream deleted, a backend error), an upcasting
    /// error, or a codec error for an event or snapshot that does not decode.
    pub async fn load(&self, id: &str) -> Result<Loaded<A>, Error> {
        let stream = self.stream(id)?;
        Ok(self.load_stream(&stream, None, None).await?.0)
    }

    /// Loads, also reporting where the event with id `watch` is, if it is among the events read.
    /// Loads, starting from `start` (a cached state and its version) when
    /// given, else from the latest snapshot.
    pub(crate) async fn load_stream(
        &self,
        stream: &StreamName,
        watch: Option<Uuid>,
        start: Option<(A, u64)>,
    ) -> Result<(Loaded<A>, Found), Error> {
        let (snapshot, start) = match start {
            Some(start) => (None, Some(start)),
            None => match self.store.load_snapshot(stream).await? {
                Some(s) if s.schema_version == A::SNAPSHOT_VERSION => {
                    let state = JsonCodec.decode::<A>(&s.payload)?;
                    (Some(s.version), Some((state, s.version)))
                }
                _ => (None, None),
            },
        };
        let (mut state, from) = start.unwrap_or_else(|| (A::default(), 0));
        let mut events = self
            .store
            .read_stream(stream, ReadStream::forward().from(from + 1))
            .await?;
        let mut version = from;
        let mut replayed = 0;
        let mut found = None;
        while let Some(recorded) = events.try_next().await? {
            if Some(recorded.id) == watch {
                found = Some((recorded.version, recorded.position));
            }
            let recorded = match &self.upcasters {
                Some(u) => u.apply(recorded)?,
                None => recorded,
            };
            let event: A::Event = recorded.decode()?;
            version = recorded.version;
            state.apply(event);
            replayed += 1;
        }
        Ok((
            Loaded {
                state,
                version,
                snapshot,
                replayed,
            },
            found,
        ))
    }

    /// Appends `events` to aggregate `id` if its stream is at `expected`
    /// (0: no stream yet), each with a fresh id and `metadata`.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the stream moved, or another store error.
    pub async fn append(
        &self,
        id: &str,
        expected: u64,
        events: &[A::Event],
        metadata: &Metadata,
    ) -> Result<AppendResult, Error> {
        let stream = self.stream(id)?;
        let new = encode(events, metadata, |_| Uuid::now_v7())?;
        self.store
            .append(&stream, expected_version(expected), new)
            .await
    }

    /// Saves `loaded` as the latest snapshot of aggregate `id`.
    ///
    /// # Errors
    /// A codec or store error.
    pub async fn save_snapshot(&self, id: &str, loaded: &Loaded<A>) -> Result<(), Error> {
        let stream = self.stream(id)?;
        self.snapshot_stream(stream, &loaded.state, loaded.version)
            .await
    }

    pub(crate) async fn snapshot_stream(
        &self,
        stream: StreamName,
        state: &A,
        version: u64,
    ) -> Result<(), Error> {
        self.store
            .save_snapshot(Snapshot {
                stream,
                version,
                schema_version: A::SNAPSHOT_VERSION,
                payload: JsonCodec.encode(state)?,
            })
            .await
    }
}

/// The expected version for a stream loaded at `version`.
pub(crate) fn expected_version(version: u64) -> ExpectedVersion {
    if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    }
}

/// Encodes events with the ids `id(index)` and `metadata`.
pub(crate) fn encode<E: DomainEvent>(
    events: &[E],
    metadata: &Metadata,
    mut id: impl FnMut(usize) -> Uuid,
) -> Result<Vec<NewEvent>, Error> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            Ok(NewEvent::new(e.event_type(), JsonCodec.encode(e)?)
                .with_id(id(i))
                .with_schema_version(e.schema_version())
                .with_metadata(metadata.clone()))
        })
        .collect()
}
