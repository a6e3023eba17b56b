//! CQRS and event sourcing on [`palisade-event-store`](palisade_event_store):
//! aggregates that decide on commands and evolve by events, a command
//! handler that retries version conflicts and deduplicates resubmitted
//! commands, projections fed from the store's global order with their own
//! checkpoints (exactly once into SQLite and PostgreSQL read models, with dead
//! letters), typed queries over the read models, cached and invalidated by
//! the projections, and a given/when/then test kit.
//!
//! Use it when a service's state is the fold of its events: the handler
//! keeps the decisions consistent under concurrent writers without locks,
//! and the projections keep read models up to date without losing or
//! doubling an update when a process dies.
//!
//! ```
//! use std::sync::Arc;
//! use palisade_cqrs::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Account { balance: u64 }
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! enum Moved { In(u64), Out(u64) }
//! impl DomainEvent for Moved {
//!     fn event_type(&self) -> &'static str {
//!         match self { Moved::In(_) => "MoneyIn", Moved::Out(_) => "MoneyOut" }
//!     }
//! }
//!
//! #[derive(Debug, PartialEq, thiserror::Error)]
//! #[error("insufficient funds")]
//! struct Insufficient;
//!
//! enum Cmd { Deposit(u64), Withdraw(u64) }
//!
//! impl Aggregate for Account {
//!     const TYPE: &'static str = "account";
//!     type Command = Cmd;
//!     type Event = Moved;
//!     type Error = Insufficient;
//!     type Services = ();
//!     async fn handle(&self, cmd: &Cmd, _: &()) -> Result<Vec<Moved>, Insufficient> {
//!         match *cmd {
//!             Cmd::Deposit(n) => Ok(vec![Moved::In(n)]),
//!             Cmd::Withdraw(n) if n > self.balance => Err(Insufficient),
//!             Cmd::Withdraw(n) => Ok(vec![Moved::Out(n)]),
//!         }
//!     }
//!     fn apply(&mut self, e: Moved) {
//!         match e { Moved::In(n) => self.balance += n, Moved::Out(n) => self.balance -= n }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Decisions, tested without a store.
//! testkit::given::<Account>([Moved::In(5)]).when(Cmd::Withdraw(9)).then_error(&Insufficient);
//!
//! let store = Arc::new(InMemoryEventStore::new());
//! let accounts = CommandHandler::<Account>::builder(store, ()).name("bank").build()?;
//! accounts.execute("alice", &Cmd::Deposit(10)).await?;
//!
//! // A client retrying after a timeout sends the same command id: nothing is appended twice.
//! let ctx = CommandContext::new().command_id(uuid::Uuid::new_v4()).field("user", "alice");
//! let first = accounts.execute_with("alice", &Cmd::Withdraw(4), &ctx).await?;
//! let retry = accounts.execute_with("alice", &Cmd::Withdraw(4), &ctx).await?;
//! assert!(!first.duplicate && retry.duplicate);
//! assert_eq!(accounts.load("alice").await?.state.balance, 6);
//!
//! let refused = accounts.execute("alice", &Cmd::Withdraw(7)).await.unwrap_err();
//! assert_eq!(refused.refused(), Some(&Insufficient));
//!
//! // A bad setting fails in build(), naming the method.
//! let err = CommandHandler::<Account>::builder(Arc::new(InMemoryEventStore::new()), ())
//!     .max_attempts(0)
//!     .build()
//!     .unwrap_err();
//! assert_eq!(err.field(), "max_attempts");
//! # Ok(())
//! # }
//! ```
//!
//! What it does:
//!
//! - [`CommandHandler::execute`] loads the aggregate ([`Repository`]: the
//!   latest snapshot, then the events after it, upcasted), calls
//!   [`Aggregate::handle`], appends with the loaded version as the expected
//!   one; on a conflict it waits by core's [`Backoff`] and does it all again,
//!   up to `max_attempts` times. [`SnapshotPolicy`] saves snapshots.
//! - A [`CommandContext`] carries a command id (event ids are derived from
//!   it, so a resubmission appends nothing), correlation and causation ids
//!   and user fields into every event's [`Metadata`] (with `otel`, the
//!   current span's `traceparent` too).
//! - A [`ProjectionRunner`] runs [`Projector`]s side by side, each on its own
//!   subscription in global order from its own checkpoint; a failing event
//!   is retried by its [`FailurePolicy`], then stops the projection or goes
//!   to the dead letters, which can be listed and replayed. A [`Projection`]
//!   is at least once; a `SqliteProjection` on a `SqliteReadModel` (feature
//!   `sqlite`) or a `PostgresProjection` on a `PostgresReadModel` (feature
//!   `postgres`) is exactly once.
//!   A `PostgresProjection` may write a whole batch in one statement
//!   (`apply_batch`); a failing batch is applied again one event at a time
//!   in savepoints, so only the failing event is retried.
//! - [`Queries`] answers a [`QueryHandler`]'s queries from a read model,
//!   optionally cached (feature `cache`) in this process or in a tiered
//!   cache that every instance shares (local + Redis);
//!   [`Projector::invalidates`] drops the answers an event makes stale once
//!   its transaction has committed, on every instance the cache reaches,
//!   before the runner reports the event handled, and
//!   [`Queries::switch_version`] serves a rebuilt view.
//! - [`testkit`]: `given(events).when(command).then_events(..)` and
//!   `ProjectionTest::new(p).given(..).then_view(..)`.
//!
//! | feature | turns on | default |
//! |---|---|---|
//! | `sqlite` | `SqliteReadModel`, `SqliteProjection`: writes and checkpoint in one transaction; the event store's SQLite backend | no |
//! | `postgres` | `PostgresReadModel`, `PostgresProjection`: the same, in a PostgreSQL schema; the event store's PostgreSQL backend | no |
//! | `cache` | `CommandHandlerBuilder::cache`: hot aggregates kept in a `palisade-cache` cache, so a command reads only newer events; `QueriesBuilder::cache`: query answers cached, dropped by the projections; `QueriesBuilder::tiered_cache`: the same in a `palisade-cache` `TieredCache`, dropped on every instance (turns on palisade-cache's `tokio`) | no |
//! | `otel` | `otel()`/`meter()` on both builders: `palisade.cqrs.commands`, `palisade.cqrs.projection.lag`; `otel()`/`tracer()` on the handler: a `cqrs.command {aggregate}` span per command; `traceparent` in metadata, and projections run in the trace it names | no |
//! | `tracing` | `tracing()` on both builders: the `cqrs.command {aggregate}` span and events, target `palisade_cqrs` | no |
//!
//! The guide is `docs/cqrs.md`.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod aggregate;
mod config;
mod error;
mod event;
mod handler;
#[cfg(feature = "postgres")]
mod postgres;
mod projection;
mod query;
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
/// The attribute for implementing [`Projection`] (re-exported from `async-trait`).
pub use async_trait::async_trait;
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
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresProjection, PostgresReadModel};
pub use projection::{
    AfterRetries, BoxError, DeadLetter, DeadLetterStore, FailurePolicy, InMemoryDeadLetters,
    Projection, ProjectionContext, ProjectionRunner, ProjectionRunnerBuilder, ProjectionStatus,
    Projector, RunnerError,
};
pub use query::{Invalidation, Queries, QueriesBuilder, QueryContext, QueryHandler};
pub use repository::{Loaded, Repository};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use rusqlite;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::{SqliteProjection, SqliteReadModel};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use tokio_postgres;
/// Command ids are UUIDs (re-exported from `uuid`).
pub use uuid::Uuid;
