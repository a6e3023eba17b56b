//! CQRS and event sourcing on [`palisade-event-store`](palisade_event_store):
//! aggregates that decide on commands and evolve by events, a command
//! handler that retries version conflicts and deduplicates resubmitted
//! commands, projections fed from the store's global order with
//! checkpoints (exactly once into SQLite read models), and a
//! given/when/then test kit.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod aggregate;
mod config;
mod error;
mod event;
mod handler;
mod projection;
mod repository;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod telemetry;
pub mod testkit;
#[cfg(feature = "tracing")]
mod tracing_listener;

pub use aggregate::{Aggregate, DomainEvent};
pub use config::{CommandHandlerBuilder, SnapshotPolicy};
pub use error::CommandError;
pub use event::{CommandOutcome, Event};
pub use handler::{CommandContext, CommandHandler, Committed, event_id};
pub use palisade_core::{
    Backoff, Clock, ConfigError, Jitter, Listener, ManualClock, SharedClock, SharedSleeper,
    Sleeper, SystemClock, TokioClock, TokioSleeper,
};
pub use palisade_event_store::{
    CheckpointStore, EventStore, Filter, InMemoryCheckpointStore, InMemoryEventStore, Metadata,
    Position, RecordedEvent, StreamName, Upcasters,
};
pub use projection::{
    AfterRetries, BoxError, DeadLetter, DeadLetterStore, FailurePolicy, InMemoryDeadLetters,
    Projection, ProjectionRunner, ProjectionRunnerBuilder, ProjectionStatus, Projector,
    RunnerError,
};
pub use repository::{Loaded, Repository};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use rusqlite;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteProjection, SqliteReadModel};
