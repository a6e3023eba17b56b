//! Shared foundations of [Palisade](https://docs.rs/palisade): the pieces every
//! pattern crate uses the same way.
//!
//! - [`Clock`]: monotonic nanoseconds. [`SystemClock`] by default, [`ManualClock`]
//!   for tests, `TokioClock` (feature `tokio`) to follow `tokio::time::pause`.
//! - [`Sleeper`]: waiting without tying a pattern to one runtime; [`timeout`]
//!   over any sleeper. A [`ManualClock`] is a sleeper too, so one manual clock
//!   drives what a pattern reads and what it waits for.
//! - [`Rejected`]: the one rejection type of every pattern, found in any
//!   error chain with [`Rejected::find`]; [`CallError`], what a pattern's
//!   `call` returns: the rejection or the call's own error.
//! - [`Outcome`] and [`Classifier`]: the three-way verdict on a `Result`.
//! - [`Backoff`]: fixed or exponential delays with [`Jitter`]; every
//!   reconnect loop and retry waits by one.
//! - [`Listener`] and [`Listeners`]: typed events that the `otel` and `tracing`
//!   features of each pattern build on.
//! - [`CachePadded`]: a hot atomic on cache lines of its own.
//! - [`ConfigError`]: what every `build()` returns for a bad value, naming the field.
//!
//! You rarely depend on this crate directly; the pattern crates re-export what
//! their APIs take.
//!
//! ```
//! use palisade_core::{Backoff, Classifier, Clock, DefaultClassifier, ManualClock, Outcome};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let started = clock.now_nanos();
//! clock.advance(Duration::from_millis(20));
//! assert_eq!(clock.now_nanos() - started, 20_000_000);
//!
//! let result: Result<(), &str> = Err("timeout");
//! assert_eq!(DefaultClassifier.classify(&result), Outcome::Failure);
//!
//! let backoff = Backoff::exponential(Duration::from_secs(1)).max(Duration::from_secs(8));
//! assert_eq!(backoff.delay(5), Duration::from_secs(8));
//! ```
//!
//! | feature | turns on | default |
//! |---|---|---|
//! | `tokio` | `TokioClock`, `TokioSleeper` | no |
//! | `otel` | `telemetry::MeterSource` and the scope helpers of the pattern crates' adapters | no |
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod call_error;
mod clock;
pub mod config;
mod listener;
mod outcome;
mod padded;
mod rejected;
mod sleep;
#[doc(hidden)]
pub mod sync;
pub mod telemetry;

pub use backoff::{Backoff, Jitter};
pub use call_error::CallError;
#[cfg(feature = "tokio")]
pub use clock::TokioClock;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock, duration_to_nanos};
pub use config::ConfigError;
pub use listener::{Listener, Listeners};
pub use outcome::{Classifier, DefaultClassifier, Outcome};
pub use padded::CachePadded;
pub use rejected::{Pattern, Rejected};
#[cfg(feature = "tokio")]
pub use sleep::TokioSleeper;
pub use sleep::{Elapsed, SharedSleeper, Sleep, Sleeper, Timeout, timeout};
