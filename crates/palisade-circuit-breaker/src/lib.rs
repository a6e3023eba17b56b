//! A circuit breaker for async Rust: stop calling a dependency that is failing,
//! give it time to recover, and probe it carefully before trusting it again.
//!
//! Use it around calls to anything that can fail slowly or in bulk: another
//! service, a database, a third-party API. While the breaker is open, calls
//! fail at once with a [`Rejected`] that says when the next probe is due,
//! instead of piling up behind a dependency that will not answer.
//!
//! ```
//! use palisade_circuit_breaker::{CircuitBreaker, ManualClock, SlidingWindow, State};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = ManualClock::new();
//! let breaker = CircuitBreaker::builder()
//!     .name("payments")
//!     .sliding_window(SlidingWindow::count(10))
//!     .minimum_calls(4)
//!     .failure_rate_threshold(0.5)
//!     .open_duration(Duration::from_secs(30))
//!     .half_open_probes(1)
//!     .clock(clock.shared())
//!     .build()?;
//!
//! // Two successes, then two failures: 50 % of 4 calls failed, so it opens.
//! for ok in [true, true, false, false] {
//!     let _ = breaker.call(|| async move { if ok { Ok(()) } else { Err("timeout") } }).await;
//! }
//! assert_eq!(breaker.state(), State::Open);
//!
//! // While open, calls do not run.
//! let err = breaker.call(|| async { Ok::<_, &str>(()) }).await.unwrap_err();
//! let rejected = err.rejected().expect("rejected");
//! assert_eq!(rejected.retry_after(), Some(Duration::from_secs(30)));
//!
//! // After the open duration one probe is admitted; its success closes the breaker.
//! clock.advance(Duration::from_secs(30));
//! breaker.call(|| async { Ok::<_, std::io::Error>(()) }).await?;
//! assert_eq!(breaker.state(), State::Closed);
//! # Ok(())
//! # }
//! ```
//!
//! # What it does
//! - **Windows**: the last N calls ([`SlidingWindow::count`]) or the calls of the
//!   last period in buckets ([`SlidingWindow::time`]); both O(1) per call and
//!   bounded in memory whatever the call rate.
//! - **Opening rules**: failure rate, slow-call rate (calls slower than
//!   [`CircuitBreakerBuilder::slow_call_duration`]), each once the window holds
//!   [`CircuitBreakerBuilder::minimum_calls`]; and optionally N consecutive failures.
//! - **Half-open**: exactly [`CircuitBreakerBuilder::half_open_probes`] probes are admitted;
//!   a probe dropped without an outcome gives its place back, and an outcome
//!   from before a state change is ignored.
//! - **Open duration**: fixed, or from a [`Backoff`] over
//!   consecutive openings; an optional maximum wait in half-open.
//! - **Manual states**: [`State::ForcedOpen`], [`State::Disabled`],
//!   [`State::MetricsOnly`] through [`CircuitBreaker::transition_to`], and [`CircuitBreaker::reset`].
//! - **Three ways in**: [`CircuitBreaker::call`] for async closures,
//!   [`CircuitBreaker::try_acquire`] for a [`Permit`] to record by hand
//!   ([`CircuitBreaker::try_acquire_owned`] for an [`OwnedPermit`] that a
//!   `'static` task can hold), and `CircuitBreakerLayer` for tower (feature
//!   `tower`), whose errors are tower's `BoxError` and whose `poll_ready` can
//!   hold callers back while the breaker is open.
//! - **Rejections** are core's [`Rejected`], the type every Palisade pattern
//!   rejects with; [`Rejected::find`] finds one in any error chain, and
//!   [`State::rejected_by`] tells which state rejected.
//! - **Observability**: [`Event`]s to listeners, a [`Snapshot`], OpenTelemetry
//!   instruments (feature `otel`) and `tracing` events (feature `tracing`).
//!
//! The closed-state path takes no lock and allocates nothing; with a count
//! window and no slow-call rule or listener it does not read the clock either.
//!
//! | feature | turns on | default |
//! |---|---|---|
//! | `tower` | `CircuitBreakerLayer`, `CircuitBreakerService` | no |
//! | `otel` | `CircuitBreakerBuilder::otel` and `::meter`: the instruments of `docs/telemetry.md` | no |
//! | `tracing` | `CircuitBreakerBuilder::tracing`: events with target `palisade_circuit_breaker` | no |
//!
//! The guide is `docs/circuit-breaker.md` in the repository.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod breaker;
mod config;
mod error;
mod event;
mod permit;
mod snapshot;
mod state;
mod window;

#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod telemetry;
#[cfg(feature = "tower")]
mod tower;
#[cfg(feature = "tracing")]
mod tracing_listener;

pub use breaker::CircuitBreaker;
pub use config::{CircuitBreakerBuilder, SlidingWindow};
pub use error::{CallError, Rejected};
pub use event::Event;
pub use palisade_core::{
    Backoff, Classifier, Clock, ConfigError, Jitter, Listener, ManualClock, Outcome, Pattern,
    SharedClock, SharedSleeper, Sleeper, SystemClock,
};
pub use permit::{OwnedPermit, Permit};
pub use snapshot::Snapshot;
pub use state::State;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use tower::{BoxError, CircuitBreakerLayer, CircuitBreakerService, ResponseFuture};
