//! What an [`Instrumented`](crate::Instrumented) store and a
//! [`Subscription`](crate::Subscription) tell their listeners. The `otel`
//! and `tracing` adapters are listeners of these.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;

/// An operation of the [`EventStore`](crate::EventStore) trait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// `append`.
    Append,
    /// `read_stream`.
    ReadStream,
    /// `read_all`.
    ReadAll,
    /// `stream_state`.
    StreamState,
    /// `delete_stream`.
    DeleteStream,
    /// `save_snapshot`.
    SaveSnapshot,
    /// `load_snapshot`.
    LoadSnapshot,
}

impl Operation {
    /// Every operation, in the order of the trait (the index of the otel adapters' attribute sets).
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    pub(crate) const ALL: [Operation; 7] = [
        Self::Append,
        Self::ReadStream,
        Self::ReadAll,
        Self::StreamState,
        Self::DeleteStream,
        Self::SaveSnapshot,
        Self::LoadSnapshot,
    ];

    /// The value of `db.operation.name`: the trait method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Append => "append",
            Self::ReadStream => "read_stream",
            Self::ReadAll => "read_all",
            Self::StreamState => "stream_state",
            Self::DeleteStream => "delete_stream",
            Self::SaveSnapshot => "save_snapshot",
            Self::LoadSnapshot => "load_snapshot",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of an [`Error`], as the `error.type` attribute says it.
pub fn error_type(e: &Error) -> &'static str {
    match e {
        Error::Conflict { .. } => "conflict",
        Error::StreamDeleted { .. } => "stream_deleted",
        Error::DuplicateEventId { .. } => "duplicate_event_id",
        Error::Backend(_) => "backend",
        Error::Codec(_) => "codec",
        Error::Config(_) => "config",
        Error::OutcomeUnknown { .. } => "outcome_unknown",
        _ => "invalid_input",
    }
}

/// Something an instrumented store or a subscription did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// An operation finished.
    OperationFinished {
        /// Which.
        operation: Operation,
        /// How long it took, by the builder's clock.
        duration: Duration,
        /// The [`error_type`] when it failed.
        error: Option<&'static str>,
    },
    /// An append wrote events (an idempotent retry that wrote nothing is not counted).
    Appended {
        /// How many.
        events: u64,
    },
    /// A subscription read a page of the log.
    SubscriptionRead {
        /// The subscription's name.
        subscription: Arc<str>,
        /// Events in the page.
        events: u64,
        /// Events in the whole log (whatever the subscription's filter)
        /// between the subscription's position when it read the page (before
        /// handing any of it out) and the newest readable event: exact in
        /// memory and on SQLite, estimated from sequence numbers on
        /// PostgreSQL. Measured (one small query) only when someone listens;
        /// `None` when that query failed.
        lag: Option<u64>,
    },
    /// A subscription's read failed with a backend error; it reads again after `retry_in`.
    SubscriptionFailed {
        /// The subscription's name.
        subscription: Arc<str>,
        /// The error, as it displays.
        error: String,
        /// Failed reads in a row, this one included.
        attempt: u32,
        /// How long it waits before the next attempt.
        retry_in: Duration,
    },
}
