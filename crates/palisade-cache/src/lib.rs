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
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
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
//!   the entry they would evict. A hill climber resizes the window while the
//!   cache runs, so recency-heavy, frequency-heavy and looping workloads all
//!   get a high hit ratio (see `docs/benchmarks.md`).
//! - **Expiry**: time to live, time to idle, and per-entry lifetimes from an
//!   [`Expiry`]. Expired values are never returned and are reclaimed by a
//!   timer wheel, not by scanning.
//! - **Loading**: [`Cache::get_with`] and [`Cache::try_get_with`] coalesce
//!   concurrent misses; a dropped or panicking loader hands over to a waiter.
//!   Failed loads are not cached unless [`CacheBuilder::negative_ttl`] says so.
//! - **[`LoadingCache`]**: read-through with a loader,
//!   refresh-ahead, stale-if-error and soft and hard loader timeouts.
//! - **[`tier`]**: the same API over a local cache and a shared remote tier,
//!   in memory or Redis (feature `redis`), with invalidation broadcast to
//!   every instance.
//! - **Telemetry**: [`CacheStats`], a [`RemovalListener`] with the cause, and
//!   OpenTelemetry instruments (feature `otel`).
//! - **Cheap reads**: a hit takes one shard's read lock, allocates nothing,
//!   never waits for any other lock, and leaves a note for the policy in a
//!   striped, lossy buffer.
//!
//! | feature | turns on | default |
//! |---|---|---|
//! | `redis` | `tier::RedisTier`, the remote tier over Redis with pub/sub invalidation | no |
//! | `otel` | `palisade.cache.*` instruments through the OpenTelemetry API | no |
//!
//! The guide is `docs/cache.md` in the repository.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cache;
mod config;
mod entry;
mod event;
mod expiry;
mod flight;
mod loading;
mod policy;
mod read_buffer;
mod stats;
mod store;
mod stripe;
#[cfg(feature = "otel")]
pub mod telemetry;
pub mod tier;

pub use cache::Cache;
pub use config::CacheBuilder;
pub use event::{RemovalCause, RemovalListener};
pub use expiry::Expiry;
pub use loading::{LoadError, Loader, LoadingCache};
pub use palisade_core::{ConfigError, ManualClock, SharedClock};
pub use stats::CacheStats;
