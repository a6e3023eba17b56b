//! What the command handler and the projection runner report to listeners.

use std::sync::Arc;
use std::time::Duration;

use palisade_event_store::{Position, StreamName};

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CommandOutcome {
    /// Its events were appended (or it caused none, or it was a resubmission).
    Accepted,
    /// The aggregate refused it.
    Rejected,
    /// Every attempt conflicted.
    Conflict,
    /// The store failed.
    Failed,
}

impl CommandOutcome {
    /// The value of `palisade.outcome`: `accepted`, `rejected`, `conflict`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Conflict => "conflict",
            Self::Failed => "failed",
        }
    }
}

/// An event of a [`CommandHandler`](crate::CommandHandler) or a
/// [`ProjectionRunner`](crate::ProjectionRunner).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A command finished.
    CommandExecuted {
        /// The handler's name.
        handler: Arc<str>,
        /// The aggregate type.
        aggregate: &'static str,
        /// How it ended.
        outcome: CommandOutcome,
        /// Attempts made (1 when nothing conflicted).
        attempts: u32,
        /// Version conflicts met (each one reloaded and handled again).
        conflicts: u32,
        /// Events appended by this call (0 for a resubmission).
        events: usize,
        /// Whether it was a resubmission of a command already applied.
        duplicate: bool,
    },
    /// A snapshot was saved after a command, by the snapshot policy.
    SnapshotSaved {
        /// The stream.
        stream: StreamName,
        /// The version it holds.
        version: u64,
    },
    /// Saving a snapshot failed; the command's events were appended all the same.
    SnapshotFailed {
        /// The stream.
        stream: StreamName,
        /// What the store said.
        error: String,
    },
    /// A projection applied an event (and saved its checkpoint).
    ProjectionHandled {
        /// The projection.
        projection: Arc<str>,
        /// The event's position, now the projection's checkpoint.
        position: Position,
        /// Events in the log after it, when known.
        lag: Option<u64>,
    },
    /// A projection failed on an event; it will try again after `retry_in`.
    ProjectionFailed {
        /// The projection.
        projection: Arc<str>,
        /// The event's position.
        position: Position,
        /// Which attempt failed (1 for the first).
        attempt: u32,
        /// The error.
        error: String,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
    /// An event that kept failing was moved to the dead letters; the projection goes on.
    DeadLettered {
        /// The projection.
        projection: Arc<str>,
        /// The event's position.
        position: Position,
        /// The last error.
        error: String,
    },
    /// A projection stopped on an event that kept failing.
    ProjectionStopped {
        /// The projection.
        projection: Arc<str>,
        /// The event's position.
        position: Position,
        /// The last error.
        error: String,
    },
}
