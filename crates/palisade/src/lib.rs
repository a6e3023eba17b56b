//! Production patterns for async Rust services, behind one dependency.
//!
//! Palisade keeps a service alive when its dependencies are not. Each pattern
//! is its own small crate with a trait-based API, a tower layer where one fits,
//! and optional OpenTelemetry instrumentation; this facade re-exports them
//! behind features.
//!
//! | feature | turns on | default |
//! |---|---|---|
//! | `circuit-breaker` | [`circuit_breaker`]: count and time windows, failure and slow-call rates, half-open probes | yes |
//! | `tower` | a tower `Layer` for every enabled pattern | no |
//! | `otel` | OpenTelemetry metrics and span events for every enabled pattern | no |
//! | `tracing` | `tracing` events for every enabled pattern | no |
//! | `tokio` | [`core::TokioClock`] and [`core::TokioSleeper`], which follow `tokio::time::pause` | no |
//! | `full` | all of the above | no |
//!
//! ```
//! # #[cfg(feature = "circuit-breaker")] {
//! use palisade::circuit_breaker::{CircuitBreaker, CallError, SlidingWindow};
//! use std::time::Duration;
//!
//! let breaker = CircuitBreaker::builder()
//!     .name("payments")
//!     .sliding_window(SlidingWindow::count(20))
//!     .minimum_calls(10)
//!     .failure_rate_threshold(0.5)
//!     .open_duration(Duration::from_secs(30))
//!     .build()
//!     .expect("valid configuration");
//!
//! let answer: Result<u32, CallError<std::io::Error>> =
//!     futures_lite_block_on(breaker.call(|| async { Ok(42) }));
//! assert_eq!(answer.unwrap(), 42);
//! # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     let waker = std::task::Waker::noop();
//! #     let mut cx = std::task::Context::from_waker(&waker);
//! #     let mut f = std::pin::pin!(f);
//! #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! # }
//! ```
//!
//! The guides live in the repository's `docs/` folder: one per pattern, plus
//! `telemetry.md`, `composition.md` and `benchmarks.md`.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// Clocks, outcomes, backoff and listeners shared by every pattern.
#[doc(inline)]
pub use palisade_core as core;

#[cfg(feature = "circuit-breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
#[doc(inline)]
pub use palisade_circuit_breaker as circuit_breaker;
