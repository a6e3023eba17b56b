//! A bulkhead for async Rust: at most N calls to a dependency at once, so one
//! slow dependency cannot take every task, connection and socket of a service.
//!
//! Put one around each dependency that can slow down: another service, a
//! database pool, a third-party API. When it is full, a call is rejected at
//! once with a [`Rejected`] (or waits a bounded time in a bounded queue, if
//! you allow it), instead of piling up behind a dependency that is not
//! answering while the callers of every other dependency starve.
//!
//! ```
//! use futures::FutureExt;
//! use palisade_bulkhead::{Bulkhead, ManualClock, Reason};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = ManualClock::new();
//! let bulkhead = Bulkhead::builder()
//!     .name("payments")
//!     .max_concurrent_calls(2)
//!     .max_wait(Duration::from_millis(100))
//!     .max_waiting(10)
//!     .sleeper(clock.sleeper())
//!     .clock(clock.shared())
//!     .build()?;
//!
//! // Two calls hold the two units.
//! let first = bulkhead.try_acquire()?;
//! let _second = bulkhead.acquire().await?;
//! assert_eq!(bulkhead.snapshot().in_flight, 2);
//!
//! // A third waits in the queue; when a unit comes back, it gets it.
//! let mut third = Box::pin(bulkhead.acquire());
//! assert!(third.as_mut().now_or_never().is_none());
//! assert_eq!(bulkhead.snapshot().waiting, 1);
//! drop(first);
//! let _third = third.await?;
//!
//! // A fourth waits 100 ms, then gives up.
//! let mut fourth = Box::pin(bulkhead.call(|| async { Ok::<_, std::io::Error>(()) }));
//! assert!(fourth.as_mut().now_or_never().is_none());
//! clock.advance(Duration::from_millis(100));
//! let err = fourth.await.unwrap_err();
//! assert_eq!(Reason::of(err.rejected().unwrap()), Some(Reason::TimedOut));
//! # Ok(())
//! # }
//! ```
//!
//! # What it does
//! - **A limit of units**: each permit holds one unit, or its weight
//!   ([`Bulkhead::try_acquire_many`]); at most
//!   [`BulkheadBuilder::max_concurrent_calls`] units are held at once, and
//!   [`Bulkhead::set_limit`] changes that at run time.
//! - **Reject or wait**: by default a full bulkhead rejects at once (reason
//!   `full`). With [`BulkheadBuilder::max_wait`] a caller waits up to that long
//!   in a queue of at most [`BulkheadBuilder::max_waiting`] callers (reason
//!   `timed_out` after it), served first-in first-out, or newest first with
//!   [`QueueOrder::Lifo`]. Nobody jumps the queue.
//! - **RAII permits**: [`Permit`] borrows the bulkhead, [`OwnedPermit`] moves
//!   into a `'static` task; dropping either gives its units back. A dropped
//!   waiter leaves the queue, and units granted to it before it saw them are
//!   given back: no capacity is ever stranded.
//! - **Three ways in**: [`Bulkhead::call`] for async closures,
//!   [`Bulkhead::try_acquire`] and [`Bulkhead::acquire`] for permits by hand,
//!   and `BulkheadLayer` for tower (feature `tower`): backpressure through
//!   `poll_ready`, or rejection with a boxed [`Rejected`].
//! - **Partitions**: [`partition::PartitionedBulkhead`] shares one limit
//!   between named partitions ("interactive 80 %, batch 20 %"); a partition
//!   borrows what the others leave idle and gets its guarantee back, before
//!   any borrower, when its callers wait for it. [`keyed::KeyedBulkhead`]
//!   gives each key (tenant) a limit of its own inside a shared one, with a
//!   bounded number of keys, idle ones dropped.
//! - **Adaptive limits**: [`adaptive::AdaptiveLimiter`] moves the limit by
//!   itself from each call's latency and outcome, by [`adaptive::Aimd`],
//!   Netflix's [`adaptive::Gradient2`] or [`adaptive::Vegas`], between a
//!   minimum and a maximum.
//! - **Client-side adaptive throttling** from Google's SRE book:
//!   [`throttle::AdaptiveThrottle`] refuses requests locally as the backend
//!   refuses them, with probability max(0, (requests − K·accepts) / (requests + 1)).
//! - **Rejections** are core's [`Rejected`] with pattern `bulkhead`, the type
//!   every Palisade pattern rejects with; [`Reason::of`] reads the reason back.
//! - **Observability**: [`Event`]s to listeners, a [`Snapshot`] (in flight,
//!   waiting, limit), OpenTelemetry instruments (feature `otel`) and `tracing`
//!   events (feature `tracing`).
//!
//! Taking and giving back a permit is one compare-and-swap each while nobody
//! waits: no lock, no allocation, no clock read.
//!
//! | feature | turns on | default |
//! |---|---|---|
//! | `tower` | `BulkheadLayer`, `BulkheadService` | no |
//! | `otel` | `BulkheadBuilder::otel` and `::meter`: the instruments of `docs/telemetry.md` | no |
//! | `tracing` | `BulkheadBuilder::tracing`: events with target `palisade_bulkhead` | no |
//! | `tokio` | tokio's timer as the default sleeper for `max_wait` | no |
//!
//! The guide is `docs/bulkhead.md` in the repository.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod adaptive;
mod bulkhead;
mod config;
mod error;
mod event;
pub mod keyed;
pub mod partition;
mod permit;
mod snapshot;
pub mod throttle;

#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod telemetry;
#[cfg(feature = "tower")]
mod tower;
#[cfg(feature = "tracing")]
mod tracing_listener;

pub use bulkhead::{Acquire, AcquireOwned, Bulkhead};
pub use config::{BulkheadBuilder, QueueOrder};
pub use error::{CallError, Reason, Rejected};
pub use event::Event;
pub use palisade_core::{
    Classifier, Clock, ConfigError, Listener, ManualClock, Outcome, Pattern, SharedClock,
    SharedSleeper, Sleeper, SystemClock,
};
pub use permit::{OwnedPermit, Permit};
pub use snapshot::Snapshot;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use tower::{BoxError, BulkheadLayer, BulkheadService, ResponseFuture};
