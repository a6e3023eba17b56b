//! Rate limiting for async Rust: the generic cell rate algorithm (GCRA) on
//! one atomic word, fair waiting, keyed limits with a quota per key in
//! bounded memory, and a tower layer shared by every clone.
//!
//! Use it to keep a client, a tenant or a whole service within a rate: an
//! API's plan tiers, a crawler's politeness, a budget of calls to a paid
//! dependency. A refusal says when to come back and what is left, enough for
//! the `RateLimit-*` and `Retry-After` HTTP headers.
//!
//! ```
//! use palisade_rate_limit::{KeyedRateLimiter, ManualClock, Quota, RateLimiter};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = ManualClock::new();
//! let limiter = RateLimiter::builder()
//!     .name("search")
//!     .quota(Quota::per_second(10).burst(2))
//!     .clock(clock.shared())
//!     .sleeper(clock.sleeper())
//!     .max_wait(Duration::from_millis(500))
//!     .build()?;
//!
//! // A burst of two, then one every 100 ms.
//! limiter.check()?;
//! let d = limiter.check()?;
//! assert_eq!((d.limit(), d.remaining()), (2, 0));
//! let denied = limiter.check().unwrap_err();
//! assert_eq!(denied.retry_after(), Duration::from_millis(100));
//! assert_eq!(denied.headers()[3], ("Retry-After", 1));
//!
//! // Or wait for a slot, first come first served (the manual clock drives the wait).
//! let waiting = tokio::spawn({
//!     let limiter = limiter.clone();
//!     async move { limiter.acquire().await }
//! });
//! tokio::task::yield_now().await;
//! clock.advance(Duration::from_millis(100));
//! waiting.await??;
//!
//! // Plan tiers: a quota per key, at most 10,000 keys held.
//! let plans = KeyedRateLimiter::<&'static str>::builder()
//!     .quota_fn(|key| if key.starts_with("pro") { Quota::per_second(1_000) } else { Quota::per_second(10) })
//!     .max_keys(10_000)
//!     .clock(clock.shared())
//!     .build()?;
//! assert_eq!(plans.check(&"pro-42")?.remaining(), 999);
//! assert_eq!(plans.check(&"free-7")?.remaining(), 9);
//! # Ok(())
//! # }
//! ```
//!
//! # What it does
//! - **[`Quota`]**: `count` per period (`per_second`, `per_minute`,
//!   `per_hour`, `new`) with a [`burst`](Quota::burst); checked in `build()`.
//! - **[`RateLimiter`]**: the GCRA on one `AtomicU64`, changed by one
//!   compare-and-swap; [`check`](RateLimiter::check), [`check_n`](RateLimiter::check_n),
//!   [`acquire`](RateLimiter::acquire) and [`acquire_n`](RateLimiter::acquire_n)
//!   that wait fairly (a waiter reserves its slot) up to a maximum wait;
//!   [`set_quota`](RateLimiter::set_quota) at run time. Asking for more than
//!   the burst at once is [`Error::InsufficientCapacity`], never a silent
//!   refusal forever.
//! - **[`KeyedRateLimiter`]**: one limit per key, the quota of each from a
//!   function, at most `max_keys` keys: refilled keys are dropped first, and
//!   when every held key is still draining a new key is refused rather than
//!   any key given a fresh burst. No key ever exceeds its quota.
//! - **[`WindowLimiter`]**: fixed-window and sliding-window counters, for
//!   contracts written as "N per minute".
//! - **`RedisRateLimiter`** (feature `redis`): one limit per key shared by
//!   every process, the GCRA in a server-side script on Redis's clock, one
//!   round trip a check; fail open, fail closed, or fall back to a local
//!   limit while Redis cannot answer, asking it again after a back-off.
//! - **Answers**: a [`Decision`] (limit, remaining, reset, the headers) and,
//!   on a refusal, a [`Denied`] holding core's [`Rejected`] (pattern
//!   `RateLimit`, reason [`EXHAUSTED`] or [`KEY_CAPACITY`], retry-after),
//!   found in any error chain by [`Rejected::find`].
//! - **tower** (feature `tower`): `RateLimitLayer`, `Clone`, one limiter for
//!   every clone, keyed by a function of the request, rejecting in `call` or
//!   waiting in `poll_ready`.
//! - **Observability**: [`Event`]s to listeners, OpenTelemetry instruments
//!   (feature `otel`) and `tracing` events (feature `tracing`).
//!
//! A GCRA check takes no lock (a keyed one takes its shard's read lock, a
//! window counter one short mutex) and allocates nothing; it reads the clock once, which on the system clock
//! (`Instant::now`) costs more than the rest of the check: the `quanta`
//! feature makes the limiters read the CPU's time-stamp counter instead.
//!
//! | feature | turns on | default |
//! |---|---|---|
//! | `tower` | `RateLimitLayer`, `RateLimitService` | no |
//! | `otel` | the builders' `otel()` and `meter(m)`: the instruments of `docs/telemetry.md` | no |
//! | `tracing` | the builders' `tracing()`: events with target `palisade_rate_limit` | no |
//! | `tokio` | tokio's timer as the default sleeper of `acquire` | no |
//! | `redis` | `RedisRateLimiter`: one limit shared by every process, GCRA in a Lua script on Redis's clock (turns on `tokio`) | no |
//! | `redis-tls` | `rediss://` URLs and `redis::Client::build_with_tls` for `RedisRateLimiter`, by rustls | no |
//! | `quanta` | `QuantaClock` (the CPU's time-stamp counter) as the limiters' default clock | no |
//!
//! The guide is `docs/rate-limit.md` in the repository.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod config;
mod decision;
mod event;
mod gcra;
mod keyed;
mod limiter;
#[cfg(feature = "quanta")]
mod quanta_clock;
mod quota;
#[cfg(feature = "redis")]
mod redis_limiter;
mod window;

#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod telemetry;
#[cfg(feature = "tower")]
mod tower;
#[cfg(feature = "tracing")]
mod tracing_listener;

pub use config::{DEFAULT_MAX_KEYS, DEFAULT_MAX_WAIT, KeyedRateLimiterBuilder, RateLimiterBuilder};
pub use decision::{Decision, Denied, EXHAUSTED, Error, KEY_CAPACITY};
pub use event::Event;
pub use keyed::KeyedRateLimiter;
pub use limiter::RateLimiter;
pub use palisade_core::{
    Clock, ConfigError, Listener, ManualClock, Pattern, Rejected, SharedClock, SharedSleeper,
    Sleeper, SystemClock,
};
#[cfg(feature = "quanta")]
#[cfg_attr(docsrs, doc(cfg(feature = "quanta")))]
pub use quanta_clock::QuantaClock;
pub use quota::Quota;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_limiter::{
    RedisConnectError, RedisLimitError, RedisRateLimiter, RedisRateLimiterBuilder, UNAVAILABLE,
    Unavailable,
};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use tower::{
    BoxError, Keyed, RateLimitLayer, RateLimitService, RequestLimiter, ResponseFuture,
};
pub use window::{WindowKind, WindowLimiter, WindowLimiterBuilder};
