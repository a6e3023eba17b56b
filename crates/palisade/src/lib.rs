//! Production patterns for async Rust services, behind one dependency.
//!
//! Palisade keeps a service alive when its dependencies are not. Each pattern
//! is its own small crate with a trait-based API, a tower layer where one fits,
//! and optional OpenTelemetry instrumentation; this facade re-exports them
//! behind features.
//!
//! | feature | turns on | default |
//! |---|---|---|
//! | `circuit-breaker` | `circuit_breaker`: count and time windows, failure and slow-call rates, half-open probes | no |
//! | `retry` | `retry`: retries with capped jitter, a deadline, a shared retry budget, Retry-After and hedging | no |
//! | `bulkhead` | `bulkhead`: at most N calls at once, rejecting or waiting a bounded time in a FIFO or LIFO queue; weighted permits, run-time and adaptive limits, partitions, client-side throttling | no |
//! | `rate-limit` | `rate_limit`: GCRA on one atomic word, fair waiting, keyed limits with a quota per key in bounded memory | no |
//! | `quanta` | the rate limiters' default clock reads the CPU's time-stamp counter (quanta) | no |
//! | `cache` | `cache`: a bounded cache with adaptive W-TinyLFU, expiry, one load per key, refresh-ahead, stale-if-error, two tiers | no |
//! | `redis` | the cache's remote tier over Redis, with pub/sub invalidation; the rate limiter's limit shared through Redis | no |
//! | `redis-tls` | TLS to Redis (`rediss://`) with rustls | no |
//! | `event-store` | `event_store`: streams with optimistic concurrency, a subscriber-safe global order, subscriptions, snapshots, upcasting; in memory | no |
//! | `cqrs` | `cqrs`: aggregates and a command handler with conflict retry and idempotent commands, projections with checkpoints and dead letters, a given/when/then test kit | no |
//! | `saga` | `saga`: orchestrated sagas with LIFO compensation, their log in the event store, crash recovery by claims, step retries, durable timeouts, idempotency keys, parallel steps (turns on `event-store` and `retry`) | no |
//! | `sqlite` | the event store on one SQLite file (WAL); with `cqrs`, exactly-once SQLite read models | no |
//! | `postgres` | the event store on PostgreSQL (pooled, LISTEN/NOTIFY); with `cqrs`, exactly-once PostgreSQL read models | no |
//! | `postgres-tls` | TLS to PostgreSQL with rustls | no |
//! | `tower` | a tower `Layer` for every enabled pattern | no |
//! | `otel` | OpenTelemetry instruments and spans for every enabled pattern, for each instance whose builder asks (`.otel()` or `.meter(m)`) | no |
//! | `tracing` | `tracing` events for every enabled pattern, for each instance whose builder asks (`.tracing()`) | no |
//! | `otlp` | `otlp`: one call that exports traces and metrics over OTLP (gRPC or HTTP/protobuf, from the standard `OTEL_*` variables), installs the global providers and returns a guard that flushes on drop; turns on `otel`. Brings the OpenTelemetry SDK, tonic and hyper | no |
//! | `tokio` | `core::TokioClock` and `core::TokioSleeper`, which follow `tokio::time::pause`; the cache's `LoadingCache` and `tier`; tokio's timer as the bulkhead's and the rate limiter's default sleeper | no |
//! | `stack` | `stack`: the standard resilience stack (rate limit → total timeout → retry → circuit breaker → bulkhead → attempt timeout) with presets for an HTTP client, a database client and an inbound server; with `tower`, as one layer (turns on the four patterns and `tokio`) | no |
//! | `full` | all of the above but `otlp` (so that `full` does not compile tonic and the SDK for those who export otherwise) | no |
//!
//! ```
//! # #[cfg(feature = "circuit-breaker")] {
//! use palisade::circuit_breaker::{CircuitBreaker, SlidingWindow, State};
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
//! // Ten failed calls in a row: the breaker opens and rejects the next one.
//! for _ in 0..10 {
//!     let permit = breaker.try_acquire().expect("closed");
//!     permit.failure();
//! }
//! assert_eq!(breaker.state(), State::Open);
//! let rejected = breaker.try_acquire().unwrap_err();
//! assert!(rejected.retry_after().is_some());
//! # }
//! ```
//!
//! Async code uses `breaker.call(|| async { … }).await`, and tower users
//! `CircuitBreakerLayer` (feature `tower`).
//!
//! The guides live in the repository's `docs/` folder: one per pattern
//! (`circuit-breaker.md`, `retry.md`, `bulkhead.md`, `rate-limit.md`, `cache.md`, `event-store.md`, `cqrs.md`, `saga.md`),
//! `composition.md` for the standard stack, plus `telemetry.md`,
//! `benchmarks.md` and the decisions in `adr/`. Their code blocks, and the
//! README's, are doctests of this crate.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// Clocks, outcomes, backoff and listeners shared by every pattern.
#[doc(inline)]
pub use palisade_core as core;

#[cfg(feature = "circuit-breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
#[doc(inline)]
pub use palisade_circuit_breaker as circuit_breaker;

#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
#[doc(inline)]
pub use palisade_retry as retry;

#[cfg(feature = "bulkhead")]
#[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
#[doc(inline)]
pub use palisade_bulkhead as bulkhead;

#[cfg(feature = "rate-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
#[doc(inline)]
pub use palisade_rate_limit as rate_limit;

#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
#[doc(inline)]
pub use palisade_cache as cache;

#[cfg(feature = "event-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "event-store")))]
#[doc(inline)]
pub use palisade_event_store as event_store;

#[cfg(feature = "saga")]
#[cfg_attr(docsrs, doc(cfg(feature = "saga")))]
#[doc(inline)]
pub use palisade_saga as saga;

#[cfg(feature = "cqrs")]
#[cfg_attr(docsrs, doc(cfg(feature = "cqrs")))]
#[doc(inline)]
pub use palisade_cqrs as cqrs;

#[cfg(feature = "otlp")]
#[cfg_attr(docsrs, doc(cfg(feature = "otlp")))]
pub mod otlp;
#[cfg(feature = "stack")]
#[cfg_attr(docsrs, doc(cfg(feature = "stack")))]
pub mod stack;

/// The README and the guides in `docs/`, included so that their code blocks
/// are compiled and run as doctests of the facade. Each is gated on the
/// features its code needs.
#[cfg(doctest)]
mod guides {
    #[cfg(feature = "circuit-breaker")]
    #[doc = include_str!("../../../README.md")]
    struct Readme;

    #[cfg(all(feature = "circuit-breaker", feature = "tower"))]
    #[doc = include_str!("../../../docs/circuit-breaker.md")]
    struct CircuitBreakerGuide;

    #[cfg(all(feature = "retry", feature = "tower", feature = "circuit-breaker"))]
    #[doc = include_str!("../../../docs/retry.md")]
    struct RetryGuide;

    #[cfg(all(feature = "stack", feature = "tower"))]
    #[doc = include_str!("../../../docs/composition.md")]
    struct CompositionGuide;

    #[cfg(all(feature = "bulkhead", feature = "tower", feature = "tokio"))]
    #[doc = include_str!("../../../docs/bulkhead.md")]
    struct BulkheadGuide;

    #[cfg(all(feature = "rate-limit", feature = "tower", feature = "tokio"))]
    #[doc = include_str!("../../../docs/rate-limit.md")]
    struct RateLimitGuide;

    #[cfg(all(feature = "cache", feature = "redis"))]
    #[doc = include_str!("../../../docs/cache.md")]
    struct CacheGuide;

    #[cfg(all(feature = "event-store", feature = "sqlite", feature = "postgres"))]
    #[doc = include_str!("../../../docs/event-store.md")]
    struct EventStoreGuide;

    #[cfg(all(feature = "saga", feature = "sqlite"))]
    #[doc = include_str!("../../../docs/saga.md")]
    struct SagaGuide;

    #[cfg(all(
        feature = "cqrs",
        feature = "sqlite",
        feature = "postgres",
        feature = "cache",
        feature = "tokio"
    ))]
    #[doc = include_str!("../../../docs/cqrs.md")]
    struct CqrsGuide;

    #[cfg(feature = "event-store")]
    #[doc = include_str!("../../../docs/telemetry.md")]
    struct TelemetryGuide;

    #[cfg(all(feature = "circuit-breaker", feature = "tower", feature = "tokio"))]
    #[doc = include_str!("../../../docs/architecture.md")]
    struct Architecture;

    #[doc = include_str!("../../../docs/benchmarks.md")]
    struct Benchmarks;

    #[doc = include_str!("../../../docs/adr/0001-circuit-breaker-concurrency.md")]
    struct Adr0001;

    #[doc = include_str!("../../../docs/adr/0002-event-store-global-order.md")]
    struct Adr0002;

    #[doc = include_str!("../../../docs/adr/0003-event-store-drivers.md")]
    struct Adr0003;

    #[doc = include_str!("../../../docs/adr/0004-cache-policy-and-concurrency.md")]
    struct Adr0004;

    #[doc = include_str!("../../../docs/adr/0005-rate-limit-state-and-eviction.md")]
    struct Adr0005;
}
