//! The vocabulary of the store: stream names, versions, positions, events.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{Codec, JsonCodec};
use crate::error::{Error, Result};

/// The longest stream name accepted, in bytes.
pub const MAX_STREAM_NAME_BYTES: usize = 255;

/// A validated stream name: 1 to 255 bytes of ASCII letters, digits and `-_.:@$/`.
///
/// The category of `order-42` is `order`: the part before the first `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamName(String);

impl StreamName {
    /// Checks `name` and makes it a stream name.
    ///
    /// # Errors
    /// [`Error::InvalidStreamName`] if it is empty, too long, or has a character outside `[A-Za-z0-9-_.:@$/]`.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let reason = if name.is_empty() {
            Some("must not be empty".to_owned())
        } else if name.len() > MAX_STREAM_NAME_BYTES {
            Some(format!(
                "is {} bytes, at most {MAX_STREAM_NAME_BYTES} allowed",
                name.len()
            ))
        } else {
            name.chars()
                .find(|c| !(c.is_ascii_alphanumeric() || "-_.:@$/".contains(*c)))
                .map(|c| format!("has the character {c:?}; allowed are A-Z a-z 0-9 - _ . : @ $ /"))
        };
        match reason {
            Some(reason) => Err(Error::InvalidStreamName { name, reason }),
            None => Ok(Self(name)),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `-` (the whole name if there is none).
    pub fn category(&self) -> &str {
        self.0.split_once('-').map_or(&self.0, |(c, _)| c)
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for StreamName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

impl TryFrom<&str> for StreamName {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

impl From<StreamName> for String {
    fn from(s: StreamName) -> Self {
        s.0
    }
}

/// What the writer believes about the stream it appends to.
///
/// A stream's version is the number of events it holds: 0 before the first
/// append, `n` after `n` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream has no events and was never deleted.
    NoStream,
    /// The stream has at least one event and is not deleted.
    StreamExists,
    /// The stream holds exactly this many events.
    Exact(u64),
    /// The stream was deleted; this append recreates it, and its versions go on
    /// from where they stopped.
    Recreate,
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::StreamExists => f.write_str("an existing stream"),
            Self::Exact(v) => write!(f, "version {v}"),
            Self::Recreate => f.write_str("a deleted stream"),
        }
    }
}

/// Where an event stands in the global order that subscribers follow.
///
/// Ordered by `commit`, then `sequence`. On PostgreSQL `commit` is the writing
/// transaction's id and `sequence` a global counter; in memory and on SQLite
/// `commit` is the batch number. Reading "after" a position returns exactly the
/// events greater than it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Position {
    /// The commit (batch or transaction) that wrote the event.
    pub commit: u64,
    /// The event's place in the global sequence.
    pub sequence: u64,
}

impl Position {
    /// Before every event.
    pub const START: Self = Self {
        commit: 0,
        sequence: 0,
    };
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.commit, self.sequence)
    }
}

/// Who caused an event and why: kept with it, never interpreted by the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The id shared by everything one request caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the message that caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// W3C trace context (`traceparent`), so a consumer can continue the trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Anything else.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id; appending the same ids at the same place again is a no-op.
    pub id: Uuid,
    /// The event type (`"OrderPlaced"`).
    pub event_type: String,
    /// The schema version of the payload, for upcasting (starts at 1).
    pub schema_version: u32,
    /// The encoded payload.
    pub payload: Vec<u8>,
    /// Correlation, causation, trace context and user fields.
    pub metadata: Metadata,
}

impl NewEvent {
    /// An event with a fresh, time-ordered id (UUIDv7), schema version 1 and the payload as given.
    ///
    /// Time-ordered ids keep the unique index on ids append-only; random ones
    /// would touch a random index page per event.
    pub fn new(event_type: impl Into<String>, payload: Vec<u8>) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata: Metadata::default(),
        }
    }

    /// An event whose payload is `value` encoded as JSON.
    ///
    /// # Errors
    /// [`Error::Codec`] if `value` cannot be encoded.
    pub fn json<T: Serialize>(event_type: impl Into<String>, value: &T) -> Result<Self> {
        Ok(Self::new(event_type, JsonCodec.encode(value)?))
    }

    /// Sets the id (to make a retry idempotent).
    #[must_use]
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// Sets the schema version.
    #[must_use]
    pub fn with_schema_version(mut self, version: u32) -> Self {
        self.schema_version = version;
        self
    }

    /// Sets the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The id given at append.
    pub id: Uuid,
    /// The stream it belongs to.
    pub stream: StreamName,
    /// Its version in the stream: 1 for the first event.
    pub version: u64,
    /// Its place in the global order.
    pub position: Position,
    /// The event type.
    pub event_type: String,
    /// The schema version of the payload (after upcasting, if any upcaster applied).
    pub schema_version: u32,
    /// The encoded payload.
    pub payload: Vec<u8>,
    /// The metadata given at append.
    pub metadata: Metadata,
    /// When the store recorded it.
    pub recorded_at: SystemTime,
}

impl RecordedEvent {
    /// Decodes the payload as JSON.
    ///
    /// # Errors
    /// [`Error::Codec`] if the payload is not a `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        JsonCodec.decode(&self.payload)
    }

    /// Whether this event was written from `new` (same id, type, schema, payload and metadata).
    pub fn same_content_as(&self, new: &NewEvent) -> bool {
        self.id == new.id
            && self.event_type == new.event_type
            && self.schema_version == new.schema_version
            && self.payload == new.payload
            && self.metadata == new.metadata
    }
}

/// What a successful append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream's version after the append.
    pub version: u64,
    /// The position of the last event of the batch.
    pub position: Position,
    /// `false` when the same events were already there, so this call wrote
    /// nothing more: an idempotent retry, or (PostgreSQL) an earlier attempt
    /// of this same call that a lost connection cut off after it committed.
    pub written: bool,
}

/// What a stream is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// No event was ever appended to it.
    NoStream,
    /// It holds events up to `version`.
    Active {
        /// The number of events ever appended to it.
        version: u64,
    },
    /// It was deleted at `version`.
    Deleted {
        /// The version it had when it was deleted.
        version: u64,
    },
}

impl fmt::Display for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoStream => f.write_str("no stream"),
            Self::Active { version } => write!(f, "at version {version}"),
            Self::Deleted { version } => write!(f, "deleted at version {version}"),
        }
    }
}

impl StreamState {
    /// The version (0 for no stream).
    pub fn version(self) -> u64 {
        match self {
            Self::NoStream => 0,
            Self::Active { version } | Self::Deleted { version } => version,
        }
    }

    /// Checks `expected` against this state; `Ok(())` if an append may proceed.
    ///
    /// # Errors
    /// [`Error::Conflict`] with the actual version, or [`Error::StreamDeleted`].
    pub fn check(self, stream: &StreamName, expected: ExpectedVersion) -> Result<()> {
        let ok = match (self, expected) {
            (Self::Deleted { .. }, ExpectedVersion::Recreate) => true,
            (Self::Deleted { .. }, _) => {
                return Err(Error::StreamDeleted {
                    stream: stream.clone(),
                });
            }
            (_, ExpectedVersion::Recreate) => false,
            (_, ExpectedVersion::Any) => true,
            (Self::NoStream, ExpectedVersion::NoStream) => true,
            (Self::Active { .. }, ExpectedVersion::StreamExists) => true,
            (state, ExpectedVersion::Exact(v)) => state.version() == v,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual: self,
            })
        }
    }
}

/// Which way to read a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Oldest first.
    #[default]
    Forward,
    /// Newest first.
    Backward,
}

/// How to read one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStream {
    /// Which way.
    pub direction: Direction,
    /// The first version to return (inclusive). Forward default: 1; backward default: the last.
    pub from: Option<u64>,
    /// At most this many events (default: all).
    pub limit: Option<u64>,
}

impl ReadStream {
    /// All events, oldest first.
    pub fn forward() -> Self {
        Self {
            direction: Direction::Forward,
            from: None,
            limit: None,
        }
    }

    /// All events, newest first.
    pub fn backward() -> Self {
        Self {
            direction: Direction::Backward,
            from: None,
            limit: None,
        }
    }

    /// Starts at `version` (inclusive).
    #[must_use]
    pub fn from(mut self, version: u64) -> Self {
        self.from = Some(version);
        self
    }

    /// Returns at most `limit` events.
    #[must_use]
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The first version to read from a stream now at `current`.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn first_version(&self, current: u64) -> u64 {
        match (self.direction, self.from) {
            (Direction::Forward, from) => from.unwrap_or(1),
            (Direction::Backward, from) => from.map_or(current, |f| f.min(current)),
        }
    }

    /// How many events a read returns from a stream now at `current` whose
    /// versions up to `hidden_through` are hidden: the SQL backends stop
    /// paging there instead of asking for one more, empty, page.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn bounded_limit(&self, current: u64, hidden_through: u64) -> u64 {
        let first = self.first_version(current);
        let in_range = match self.direction {
            Direction::Forward => current.saturating_sub(first.max(hidden_through + 1) - 1),
            Direction::Backward => first.saturating_sub(hidden_through),
        };
        self.limit.map_or(in_range, |limit| limit.min(in_range))
    }

    /// Whether `version` is in range after applying `from`.
    pub(crate) fn contains(&self, version: u64) -> bool {
        match (self.direction, self.from) {
            (_, None) => true,
            (Direction::Forward, Some(from)) => version >= from,
            (Direction::Backward, Some(from)) => version <= from,
        }
    }
}

/// Which events of the global log to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only streams whose name starts with this.
    pub stream_prefix: Option<String>,
    /// Only the stream named exactly `stream_prefix`.
    pub exact_stream: bool,
    /// Only these event types (all when empty).
    pub event_types: Vec<String>,
}

impl Filter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only streams of this category (`order` matches `order-1`, `order-2`, …).
    pub fn category(category: &str) -> Self {
        Self::stream_prefix(format!("{category}-"))
    }

    /// Only streams whose name starts with `prefix`.
    pub fn stream_prefix(prefix: impl Into<String>) -> Self {
        Self {
            stream_prefix: Some(prefix.into()),
            ..Self::default()
        }
    }

    /// Only the stream `stream`.
    pub fn stream(stream: &StreamName) -> Self {
        Self {
            stream_prefix: Some(stream.as_str().to_owned()),
            exact_stream: true,
            ..Self::default()
        }
    }

    /// Also only events of these types.
    #[must_use]
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        self.stream_prefix.as_deref().is_none_or(|p| {
            if self.exact_stream {
                event.stream.as_str() == p
            } else {
                event.stream.as_str().starts_with(p)
            }
        }) && (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
    }
}

/// How to read the global log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAll {
    /// Return events after this position (exclusive).
    pub after: Position,
    /// Which events.
    pub filter: Filter,
    /// At most this many events (default: all).
    pub limit: Option<u64>,
}

impl ReadAll {
    /// Every event after `after`.
    pub fn after(after: Position) -> Self {
        Self {
            after,
            filter: Filter::all(),
            limit: None,
        }
    }

    /// Only events that pass `filter`.
    #[must_use]
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// At most `limit` events.
    #[must_use]
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// The latest saved state of a stream, to avoid replaying it from the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream it summarises.
    pub stream: StreamName,
    /// The stream version it includes.
    pub version: u64,
    /// The schema version of the state.
    pub schema_version: u32,
    /// The encoded state.
    pub payload: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_read_knows_how_many_events_it_returns() {
        let f = ReadStream::forward();
        assert_eq!(f.bounded_limit(5, 0), 5);
        assert_eq!(f.from(2).bounded_limit(5, 0), 4);
        assert_eq!(f.from(2).limit(2).bounded_limit(5, 0), 2);
        assert_eq!(
            f.bounded_limit(5, 3),
            2,
            "versions 1..=3 belong to a deleted life"
        );
        assert_eq!(f.from(10).bounded_limit(5, 0), 0);
        let b = ReadStream::backward();
        assert_eq!(b.bounded_limit(5, 0), 5);
        assert_eq!(b.from(3).bounded_limit(5, 0), 3);
        assert_eq!(b.from(3).bounded_limit(5, 2), 1);
        assert_eq!(b.from(9).limit(4).bounded_limit(5, 0), 4);
        assert_eq!(b.bounded_limit(0, 0), 0);
    }

    #[test]
    fn stream_names_and_categories() {
        assert_eq!(StreamName::new("order-42-x").unwrap().category(), "order");
        assert_eq!(
            StreamName::new("singleton").unwrap().category(),
            "singleton"
        );
        assert!(StreamName::new("a b").is_err());
    }
}
