//! Retries that cannot become a retry storm.
//!
//! Every client that retries three times turns an outage into four times the
//! load. A [`Retry`] here retries with backoff whose cap holds after jitter,
//! within a total deadline the attempts can see, under a [`RetryBudget`]
//! shared by every call (Finagle's: retries may add 20 % to the calls of the
//! last 10 s, plus 10 per second), honouring a `Retry-After` the result
//! carries, and never retrying a rejection by another Palisade pattern (an
//! open breaker, a full bulkhead, a spent rate limit). [`Hedge`] sends a
//! second attempt of an idempotent call that has not answered in time.
//!
//! ```
//! use palisade_retry::{Backoff, Event, ManualClock, Retry, StopReason};
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = ManualClock::new();
//! let delays = Arc::new(Mutex::new(Vec::new()));
//! let seen = Arc::clone(&delays);
//! let retry = Retry::builder()
//!     .name("inventory")
//!     .max_attempts(4)
//!     .backoff(Backoff::exponential(Duration::from_millis(100)))
//!     .deadline(Duration::from_secs(2))
//!     .clock(clock.shared())
//!     .sleeper(clock.sleeper())
//!     .listener(move |e: &Event| {
//!         if let Event::RetryScheduled { delay, .. } = e {
//!             seen.lock().unwrap().push(*delay);
//!         }
//!     })
//!     .build()?;
//!
//! // Fails twice, then answers. The manual clock drives the delays.
//! let call = retry.call(|attempt| async move {
//!     if attempt.number() < 3 {
//!         Err(std::io::Error::other("connection reset"))
//!     } else {
//!         Ok(attempt.number())
//!     }
//! });
//! let driver = async {
//!     for delay in [100, 200] {
//!         tokio::task::yield_now().await;
//!         clock.advance(Duration::from_millis(delay));
//!     }
//! };
//! let (answer, ()) = tokio::join!(call, driver);
//! assert_eq!(answer?, 3);
//! assert_eq!(*delays.lock().unwrap(), [Duration::from_millis(100), Duration::from_millis(200)]);
//!
//! // A bad value fails in build(), naming the method.
//! let err = Retry::builder().max_attempts(0).build().unwrap_err();
//! assert_eq!(err.field(), "max_attempts");
//! # let _ = StopReason::Succeeded;
//! # Ok(())
//! # }
//! ```
//!
//! # What is retried
//!
//! A [`RetryPolicy`] classifies each result with core's three-way
//! [`Outcome`]: a failure is retried, a success or an ignored result ends the
//! call. [`DefaultPolicy`] retries every `Err` except a [`Rejected`] found in
//! its chain; a closure `Fn(&Result<T, E>) -> Outcome` is a policy, and
//! [`RetryPolicy::with_retry_after`] reads the delay from the result.
//!
//! # The budget
//!
//! Each call deposits, each retry withdraws; when the balance cannot cover a
//! retry the call returns its last error at once, with
//! [`StopReason::BudgetExhausted`] and an [`Event::BudgetExhausted`]. One
//! budget may be shared by several retries and hedges
//! ([`RetryBuilder::budget`]). See [`RetryBudget`] for the exact accounting.
//!
//! # Cancel safety
//!
//! Dropping a call's future drops the attempt in flight or the delay, and
//! gives back a retry the budget granted but that never started.
//!
//! | feature | turns on | default |
//! |---|---|---|
//! | `tower` | [`RetryLayer`](tower::RetryLayer): retries requests it can replay, no allocation per call | no |
//! | `otel` | `RetryBuilder::otel` / `meter`: the instruments of `docs/telemetry.md`, `palisade.retry.attempt` span events | no |
//! | `tracing` | `RetryBuilder::tracing`: events with target `palisade_retry` | no |
#![cfg_attr(docsrs, feature(doc_cfg))]

mod attempt;
mod budget;
mod config;
mod error;
mod event;
mod hedge;
mod policy;
mod retry;
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod telemetry;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;
#[cfg(feature = "tracing")]
mod tracing_listener;

pub use attempt::Attempt;
pub use budget::{RetryBudget, RetryBudgetBuilder};
pub use config::RetryBuilder;
pub use error::{RetryError, StopReason, TimedOut};
pub use event::Event;
pub use hedge::{Hedge, HedgeBuilder, HedgeDelay};
pub use policy::{DefaultPolicy, RetryAllErrors, RetryPolicy, WithRetryAfter};
pub use retry::Retry;

pub use palisade_core::{
    Backoff, Clock, ConfigError, Jitter, Listener, ManualClock, Outcome, Pattern, Rejected,
    SharedClock, SharedSleeper, Sleeper, SystemClock, TokioClock, TokioSleeper,
};
