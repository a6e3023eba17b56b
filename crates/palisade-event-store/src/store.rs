//! The one trait every backend implements.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use tokio::sync::watch;

use crate::error::Result;
use crate::types::{
    AppendResult, ExpectedVersion, NewEvent, ReadAll, ReadStream, RecordedEvent, Snapshot,
    StreamName, StreamState,
};

/// Events read from the store, oldest or newest first, fetched in pages as the
/// consumer pulls them.
pub type EventStream = BoxStream<'static, Result<RecordedEvent>>;

/// An event store: streams with optimistic concurrency, a global order that
/// subscribers can follow without missing events, snapshots, and tombstones.
///
/// Object-safe: `Arc<dyn EventStore>` works. Every backend passes the same
/// conformance suite (`tests/conformance`).
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically (all or none) if the stream is at `expected`.
    ///
    /// Appending again the same event ids at the same place succeeds without
    /// writing (`written: false`); an id already used elsewhere is an error.
    ///
    /// # Errors
    /// [`Error::Conflict`](crate::Error::Conflict) with the actual version,
    /// [`Error::StreamDeleted`](crate::Error::StreamDeleted), a limit error, or a backend error.
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult>;

    /// Reads one stream.
    ///
    /// # Errors
    /// [`Error::StreamDeleted`](crate::Error::StreamDeleted) for a deleted stream,
    /// or a backend error. A stream that does not exist reads as empty.
    async fn read_stream(&self, stream: &StreamName, options: ReadStream) -> Result<EventStream>;

    /// Reads the global log after a position, in the order subscribers must follow.
    ///
    /// Never returns an event while an event before it in that order may still
    /// commit: a reader that resumes from the last position it saw misses nothing.
    ///
    /// # Errors
    /// A backend error.
    async fn read_all(&self, options: ReadAll) -> Result<EventStream>;

    /// The state and version of a stream.
    ///
    /// # Errors
    /// A backend error.
    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState>;

    /// Deletes a stream (a tombstone): reads say so, appends fail unless they
    /// recreate it with [`ExpectedVersion::Recreate`]. Its events stay in the global log.
    ///
    /// # Errors
    /// [`Error::Conflict`](crate::Error::Conflict) if the stream is not at `expected`.
    async fn delete_stream(&self, stream: &StreamName, expected: ExpectedVersion) -> Result<()>;

    /// Saves the latest snapshot of a stream, replacing any earlier one.
    ///
    /// # Errors
    /// A backend error.
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()>;

    /// Loads the latest snapshot of a stream.
    ///
    /// # Errors
    /// A backend error.
    async fn load_snapshot(&self, stream: &StreamName) -> Result<Option<Snapshot>>;

    /// A counter that moves when new events may be readable; subscriptions wait
    /// on it between reads, with `poll_interval` as the fallback.
    fn changes(&self) -> watch::Receiver<u64>;

    /// How often a subscription polls when no change is signalled (backends
    /// that can miss a signal say so with a short interval).
    fn poll_interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    /// The position of the newest event a reader of the global log can see
    /// now ([`Position::START`](crate::Position::START) when there is none).
    ///
    /// # Errors
    /// A backend error.
    async fn head(&self) -> Result<crate::Position>;

    /// The backend, as OpenTelemetry's `db.system.name`: `postgresql`,
    /// `sqlite`, or `palisade.memory` for the in-memory store.
    fn system_name(&self) -> &'static str;
}

/// A shared store is a store, so decorators such as [`Upcasting`](crate::Upcasting) can wrap an `Arc`.
#[async_trait]
impl<S: EventStore + ?Sized> EventStore for std::sync::Arc<S> {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        (**self).append(stream, expected, events).await
    }

    async fn read_stream(&self, stream: &StreamName, options: ReadStream) -> Result<EventStream> {
        (**self).read_stream(stream, options).await
    }

    async fn read_all(&self, options: ReadAll) -> Result<EventStream> {
        (**self).read_all(options).await
    }

    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState> {
        (**self).stream_state(stream).await
    }

    async fn delete_stream(&self, stream: &StreamName, expected: ExpectedVersion) -> Result<()> {
        (**self).delete_stream(stream, expected).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        (**self).save_snapshot(snapshot).await
    }

    async fn load_snapshot(&self, stream: &StreamName) -> Result<Option<Snapshot>> {
        (**self).load_snapshot(stream).await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        (**self).changes()
    }

    fn poll_interval(&self) -> Duration {
        (**self).poll_interval()
    }

    async fn head(&self) -> Result<crate::Position> {
        (**self).head().await
    }

    fn system_name(&self) -> &'static str {
        (**self).system_name()
    }
}
