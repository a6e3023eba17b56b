//! Orchestrated sagas: a transaction across services made of steps, each an
//! action and its compensation, whose every decision is written to the
//! saga's own stream in a [`palisade_event_store`] before the next action runs.
//!
//! ```
//! use palisade_saga::{InMemoryEventStore, Outcome, Saga, Step};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(InMemoryEventStore::new());
//! let saga = Saga::<Vec<String>>::builder("order", Arc::clone(&store))
//!     .step(Step::new("reserve", |mut s: Vec<String>, _ctx| async move {
//!         s.push("reserved".into());
//!         Ok::<_, std::io::Error>(s)
//!     })
//!     .compensate(|_s, ctx| async move {
//!         assert_eq!(ctx.key(), "o-1/0/compensation");
//!         Ok::<_, std::io::Error>(())
//!     }))
//!     .step(Step::new("charge", |_s: Vec<String>, _ctx| async move {
//!         Err::<Vec<String>, _>(std::io::Error::other("card declined"))
//!     }).pivot())
//!     .build()?;
//!
//! let outcome = saga.start("o-1", Vec::new()).await?;
//! assert_eq!(
//!     outcome,
//!     Outcome::Compensated { state: vec!["reserved".to_owned()], error: "card declined".into() }
//! );
//! // The same id again returns that saga; nothing runs twice.
//! assert_eq!(saga.start("o-1", Vec::new()).await?, outcome);
//! let log: Vec<_> = saga.log("o-1").await?.iter().map(|r| r.event_type()).collect();
//! assert_eq!(log, [
//!     "SagaStarted", "Claimed", "StepStarted", "StepCompleted", "StepStarted",
//!     "StepAttemptFailed", "StepFailed", "CompensationStarted", "CompensationCompleted",
//!     "SagaCompensated",
//! ]);
//! # Ok(())
//! # }
//! ```
//!
//! What it does: steps run in order; when a step before or at the pivot
//! fails, the completed steps' compensations run newest first, each retried
//! after a backoff until it succeeds (or [`SagaBuilder::recovery_attempts`]
//! is spent: [`Outcome::Failed`], for an operator). Steps after the pivot only
//! go forward. Each step's attempts follow its `palisade-retry` policy;
//! step and saga deadlines are written to the log, so they hold across
//! crashes. A runner claims the sagas it runs in their logs; [`Saga::recover`]
//! resumes the ones whose runner died. Actions run at least once; a
//! participant that deduplicates on [`StepContext::key`] makes each effect
//! happen once. A [`ProcessManager`] starts sagas from the events of a
//! store subscription (choreography) and, with
//! [`advance`](ProcessManager::advance), delivers events to running sagas:
//! a step made by [`Step::await_event`] waits for the first event delivered
//! for its correlation ([`Saga::deliver`]), with the wait and the event in
//! the log. With `cqrs`, `Step::command` sends `palisade-cqrs` commands
//! whose id is the step's key. The guide is `docs/saga.md`.
//!
//! | feature | turns on | default |
//! |---|---|---|
//! | `sqlite` | the SQLite event store, re-exported | no |
//! | `postgres` | the PostgreSQL event store, re-exported | no |
//! | `otel` | `otel()`, `meter()` on the builder: `palisade.saga.*` instruments | no |
//! | `tracing` | `tracing()` on the builder: events with target `palisade_saga` | no |
//! | `cqrs` | `Step::command`, `compensate_command`: steps that send `palisade-cqrs` commands, the step's key as command id | no |
#![cfg_attr(docsrs, feature(doc_cfg))]

mod choreography;
mod clock;
mod config;
#[cfg(feature = "cqrs")]
#[cfg_attr(docsrs, doc(cfg(feature = "cqrs")))]
mod cqrs;
mod error;
mod event;
mod record;
mod saga;
mod step;
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod telemetry;
#[cfg(feature = "tracing")]
mod tracing_listener;

pub use choreography::{ProcessManager, Reaction};
pub use clock::WallClock;
pub use config::SagaBuilder;
pub use error::{BoxError, Error};
pub use event::{Event, ExecutionOutcome, StepOutcome};
pub use palisade_core::{
    Backoff, Clock, ConfigError, Jitter, Listener, ManualClock, Rejected, SharedClock,
    SharedSleeper, Sleeper, SystemClock, TokioClock, TokioSleeper,
};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use palisade_event_store::PostgresEventStore;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use palisade_event_store::SqliteEventStore;
pub use palisade_event_store::{
    CheckpointStore, EventStore, Filter, InMemoryCheckpointStore, InMemoryEventStore,
    RecordedEvent, Subscription,
};
pub use palisade_retry::Retry;
pub use record::Record;
pub use saga::{Outcome, Resumed, Saga, SagaState};
pub use step::{Step, StepContext, StepKind};
