//! A concurrent, bounded cache for async services: a hit ratio that holds
//! across workloads, expiry, one load per key, refresh-ahead, and a Redis
//! second tier that keeps every instance coherent.
//!
//! Use it in front of anything slow or expensive that is read more often
//! than it changes: a database row, a remote call, a rendered page.
//!
//! ```
//! use palisade_cache::Cache;
//! use std::time::Duration;
//!
//! # futures::executor::block_on(async {
//! let users: Cache<u64, String> = Cache::builder()
//!     .name("users")
//!     .max_capacity(10_000)
//!     .time_to_live(Duration::from_secs(300))
//!     .build()
//!     .expect("valid configuration");
//!
//! // Cache-aside: look, and fill on a miss.
//! assert_eq!(users.get(&7), None);
//! users.insert(7, "ada".to_string());
//! assert_eq!(users.get(&7).as_deref(), Some("ada"));
//!
//! // Read-through: one load per key, however many callers miss at once.
//! let name = users.get_with(8, async { "grace".to_string() }).await;
//! assert_eq!(name, "grace");
//!
//! let stats = users.stats();
//! assert_eq!((stats.hits, stats.misses, stats.loads), (1, 2, 1));
//! # });
//! ```
//!
//! ## What it does
//!
//! - **Bounded** by entry count or by total weight ([`CacheBuilder::weigher`]);
//!   the bound holds after every write.
//! - **Adaptive W-TinyLFU**: new entries enter a small LRU window; to enter the
//!   main space they must be more popular (by a 4-bit count-min sketch) than
//!   the entry they would evict. A climber resizes the window while the
//!   cache runs, judging two small replicas of the policy (a smaller window
//!   and a larger one) on the same sampled requests, so recency-heavy,
//!   frequency-heavy and looping workloads all get a high hit ratio (see
//!   `docs/benchmarks.md`).
//! - **Expiry**: time to live, time to idle, and per-entry lifetimes from an
//!   [`Expiry`]. Expired values are never returned and are reclaimed by a
//!   timer wheel, not by scanning.
//! - **Loading**: [`Cache::get_with`] and [`Cache::try_get_with`] coalesce
//!   concurrent misses; a dropped or panicking loader hands over to a waiter.
//!   Failed loads are not cached unless [`CacheBuilder::negative_ttl`] says so.
//! - **`LoadingCache`** (feature `tokio`): read-through with a loader,
//!   refresh-ahead, stale-if-error and soft and hard loader timeouts.
//! - **`tier`** (feature `tokio`): the same API over a local cache and a
//!   shared remote tier, in memory or Redis (feature `redis`), with
//!   invalidation broadcast to every instance.
//! - **Telemetry**: [`CacheStats`], [`Event`]s to listeners, a
//!   [`RemovalListener`] with the cause, OpenTelemetry instruments (feature
//!   `otel`) and `tracing` events (feature `tracing`), each only when the
//!   builder asks for it.
//!
//! The plain [`Cache`] needs no async runtime: `get_with` coalesces loads
//! with `tokio::sync` alone, which runs on any executor.
//! - **Cheap reads**: a hit takes one shard's read lock, allocates nothing,
//!   never waits for any other lock, and leaves a note for the policy in a
//!   striped, lossy buffer.
//!
//! | feature | turns on | default |
//! |---|---|---|
//! | `tokio` | `LoadingCache` and `tier`: loads and invalidation listeners in tokio tasks | no |
//! | `redis` | `tier::RedisTier`, the remote tier over Redis with pub/sub invalidation (implies `tokio`) | no |
//! | `redis-tls` | `rediss://` URLs and `redis::Client::build_with_tls`, by rustls | no |
//! | `otel` | `CacheBuilder::otel` and `::meter`: the `palisade.cache.*` instruments | no |
//! | `tracing` | `CacheBuilder::tracing`: events with target `palisade_cache` | no |
//!
//! The guide is `docs/cache.md` in the repository.
#![cfg_attr(docsrs, feature(doc_cfg))]
// The cache keeps what `LoadingCache` and the tiers use (stale values,
// refresh claims); without feature `tokio` nothing reads it.
#![cfg_attr(not(feature = "tokio"), allow(dead_code))]

mod cache;
mod config;
mod entry;
mod event;
mod expiry;
mod flight;
#[cfg(feature = "tokio")]
mod loading;
mod policy;
mod read_buffer;
mod stats;
mod store;
mod stripe;
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod telemetry;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tier;
#[cfg(feature = "tracing")]
mod tracing_listener;

pub use cache::Cache;
pub use config::CacheBuilder;
pub use event::{Event, RemovalCause, RemovalListener};
pub use expiry::Expiry;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use loading::{LoadError, Loader, LoadingCache, LoadingCacheBuilder};
pub use palisade_core::{
    Clock, ConfigError, Listener, ManualClock, Outcome, SharedClock, SharedSleeper, Sleeper,
    SystemClock,
};
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub use palisade_core::{TokioClock, TokioSleeper};
pub use stats::CacheStats;
