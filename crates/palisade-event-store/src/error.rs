//! What can go wrong, with enough detail to act on.

use palisade_core::ConfigError;
use uuid::Uuid;

use crate::types::{ExpectedVersion, StreamName, StreamState};

/// A result of the event store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from the event store.
///
/// Nothing of a failed append was written, with one exception that says so:
/// [`Error::OutcomeUnknown`], after which the append may or may not have been
/// written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream was not at the expected version; `actual` says where it is.
    #[error("stream `{stream}`: expected {expected}, but it is {actual}")]
    Conflict {
        /// The stream.
        stream: StreamName,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// What the stream is.
        actual: StreamState,
    },
    /// The stream was deleted: reading it, or appending without `ExpectedVersion::Recreate`.
    #[error("stream `{stream}` was deleted")]
    StreamDeleted {
        /// The stream.
        stream: StreamName,
    },
    /// An event id is already stored with other content or at another place.
    #[error("event id {id} is already used by another event")]
    DuplicateEventId {
        /// The id.
        id: Uuid,
    },
    /// An append with no events.
    #[error("an append needs at least one event")]
    EmptyBatch,
    /// More events in one append than the configured maximum.
    #[error("an append of {len} events; the maximum is {max}")]
    BatchTooLarge {
        /// Events in the batch.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// An event (payload plus metadata) over the configured maximum.
    #[error("event {id} is {size} bytes; the maximum is {max}")]
    EventTooLarge {
        /// The event id.
        id: Uuid,
        /// Its size in bytes.
        size: usize,
        /// The configured maximum in bytes.
        max: usize,
    },
    /// An event type or an event type name that is empty or too long.
    #[error("event {id}: invalid event type: {reason}")]
    InvalidEventType {
        /// The event id.
        id: Uuid,
        /// What is wrong.
        reason: String,
    },
    /// A schema version above [`MAX_SCHEMA_VERSION`](crate::MAX_SCHEMA_VERSION), which no backend stores exactly.
    #[error(
        "event {id}: schema version {schema_version} is above the largest, {}",
        crate::MAX_SCHEMA_VERSION
    )]
    InvalidSchemaVersion {
        /// The event id.
        id: Uuid,
        /// The schema version given.
        schema_version: u32,
    },
    /// A snapshot with a number no backend stores exactly.
    #[error("snapshot of `{stream}`: {reason}")]
    InvalidSnapshot {
        /// The snapshot's stream.
        stream: StreamName,
        /// What is out of range.
        reason: String,
    },
    /// A stream name that is empty, too long, or has a character that is not allowed.
    #[error("invalid stream name {name:?}: {reason}")]
    InvalidStreamName {
        /// The name given.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An upcaster chain had no step for a (type, schema version) it should handle.
    #[error("no upcaster from `{event_type}` schema {schema_version} (the newest is {latest})")]
    UnknownSchema {
        /// The event type.
        event_type: String,
        /// The schema version found.
        schema_version: u32,
        /// The schema version the chain leads to.
        latest: u32,
    },
    /// An upcaster failed on an event.
    #[error("upcasting `{event_type}` schema {schema_version}: {reason}")]
    Upcast {
        /// The event type.
        event_type: String,
        /// The schema version it had.
        schema_version: u32,
        /// Why it failed.
        reason: String,
    },
    /// A payload or metadata could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An append was sent, then the connection died before the server
    /// answered (a crash, a network cut), and sending it again with the same
    /// event ids (as the store did, by `resolve_unknown_outcomes`) got no
    /// answer either. It may or may not have been written: append the same
    /// events again, with the same ids, to find out; that is safe, since an
    /// append of ids already written at that place succeeds without writing.
    #[error("append to `{stream}` may or may not have been written: {source}")]
    OutcomeUnknown {
        /// The stream.
        stream: StreamName,
        /// The failure after which the outcome was unknown.
        #[source]
        source: Box<Error>,
    },
    /// The database failed or could not be reached; the operation may be
    /// retried. For an append: nothing of it was written.
    #[error("backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A setting given to a builder (or `open`, `with_limits`) is out of its
    /// bounds; [`ConfigError::field`] names the method.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Error {
    /// Wraps a database error. When the server said why (a PostgreSQL error
    /// anywhere in the chain), the error displays what it said, with its
    /// SQLSTATE, detail and hint; `source()` still leads to the driver's error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
        #[cfg(feature = "postgres")]
        if let Some(said) = crate::postgres::server_said(&*boxed) {
            return Self::Backend(Box::new(ServerSaid {
                said,
                source: boxed,
            }));
        }
        Self::Backend(boxed)
    }

    /// Whether this is an optimistic-concurrency conflict (reload and retry the command).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}

/// A backend error, displayed as what the server said.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
#[derive(Debug, thiserror::Error)]
#[error("{said}")]
struct ServerSaid {
    said: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}
