//! An event store: append-only streams with optimistic concurrency, a global
//! order that subscribers can follow without ever missing an event, catch-up
//! subscriptions with checkpoints, snapshots, tombstones and upcasting.
//!
//! Use it as the ground truth of an event-sourced service (the CQRS and saga
//! crates build on it), or as an outbox that other services subscribe to.
//!
//! ```
//! use std::sync::Arc;
//! use futures_util::TryStreamExt;
//! use palisade_event_store::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<()> {
//! let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
//! let cart = StreamName::new("cart-17")?;
//!
//! // Optimistic concurrency: the first writer wins version 1.
//! store.append(&cart, ExpectedVersion::NoStream, vec![NewEvent::json("ItemAdded", &"apple")?]).await?;
//! let late = store.append(&cart, ExpectedVersion::NoStream, vec![NewEvent::json("ItemAdded", &"pear")?]).await;
//! assert!(late.unwrap_err().is_conflict());
//!
//! store.append(&cart, ExpectedVersion::Exact(1), vec![NewEvent::json("CheckedOut", &())?]).await?;
//! let events: Vec<_> = store.read_stream(&cart, ReadStream::forward()).await?.try_collect().await?;
//! assert_eq!(events.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(), ["ItemAdded", "CheckedOut"]);
//! # Ok(())
//! # }
//! ```
//!
//! | feature | turns on | default |
//! |---|---|---|
//! | `sqlite` | `SqliteEventStore`: one file, WAL mode, survives restarts | no |
//! | `postgres` | `PostgresEventStore`: pooled, batched, LISTEN/NOTIFY | no |
//! | `postgres-tls` | `PostgresEventStoreBuilder::tls`: TLS by rustls (ring) | no |
//! | `otel` | `otel()`, `meter()`, `tracer()` on `Instrumented::builder` and `Subscription::builder`: spans, instruments, lag and trace context | no |
//! | `tracing` | `tracing()` on the same builders: events with target `palisade_event_store` | no |
//!
//! The in-memory store is always there. The guide is `docs/event-store.md`.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod codec;
mod error;
mod event;
mod idempotency;
mod instrumented;
mod limits;
mod memory;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod paging;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
mod subscription;
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod telemetry;
#[cfg(feature = "tracing")]
mod tracing_listener;
mod types;
mod upcast;

pub use codec::{Codec, JsonCodec};
pub use error::{Error, Result};
pub use event::{Event, Operation, error_type};
/// The stream adapters for reading an [`EventStream`]: `next` from
/// [`StreamExt`], `try_next` and `try_collect` from [`TryStreamExt`]
/// (re-exported from `futures-util`, so a user needs no dependency of their own).
pub use futures_util::{StreamExt, TryStreamExt};
pub use instrumented::{Instrumented, InstrumentedBuilder};
pub use limits::{
    Limits, MAX_EVENT_TYPE_BYTES, MAX_SCHEMA_VERSION, MAX_SNAPSHOT_VERSION, check_snapshot,
};
pub use memory::InMemoryEventStore;
pub use palisade_core::{
    Backoff, Clock, ConfigError, Jitter, Listener, ManualClock, SharedClock, SharedSleeper,
    Sleeper, SystemClock, TokioClock, TokioSleeper,
};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresEventStore, PostgresEventStoreBuilder};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteEventStore;
pub use store::{EventStore, EventStream};
pub use subscription::{
    CheckpointStore, InMemoryCheckpointStore, Subscription, SubscriptionBuilder, SubscriptionStream,
};
pub use types::{
    AppendResult, Direction, ExpectedVersion, Filter, MAX_STREAM_NAME_BYTES, Metadata, NewEvent,
    Position, ReadAll, ReadStream, RecordedEvent, Snapshot, StreamName, StreamState,
};
pub use upcast::{Upcasters, Upcasting};
