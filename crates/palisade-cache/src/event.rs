//! What a cache tells its listeners: typed [`Event`]s for telemetry, and
//! removed entries with their cause for a [`RemovalListener`].

use std::fmt;
use std::time::Duration;

use palisade_core::Outcome;

/// Something that happened in a cache; sent to every listener of
/// [`CacheBuilder::listener`](crate::CacheBuilder::listener). The `otel` and
/// `tracing` adapters are listeners of these.
///
/// Lookups and removals are counted where they happen and reported as
/// totals after each maintenance run (a write, a batch of buffered reads,
/// `stats()`, `run_pending_tasks()`), once the cache has let go of its
/// locks, so a listener may use the cache, and a lookup costs nothing more
/// with listeners than without. Loads are reported as they finish.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Lookups since the last report.
    Lookups {
        /// Lookups that found a live value.
        hits: u64,
        /// Lookups that found no live value (a stale value served is also a miss).
        misses: u64,
        /// Expired values a [`LoadingCache`](crate::LoadingCache) served
        /// because their reload failed or outlasted the soft timeout.
        stale: u64,
    },
    /// A load finished: `Success` with a value, `Failure` when it failed,
    /// timed out, panicked, or its caller gave up on it.
    LoadFinished {
        /// Success or failure.
        outcome: Outcome,
        /// How long it ran, by the cache's clock.
        duration: Duration,
    },
    /// Entries left the cache for one cause since the last report.
    Removed {
        /// Why.
        cause: RemovalCause,
        /// How many.
        count: u64,
    },
    /// The cache's sizes after a maintenance run.
    Sizes {
        /// Entries held.
        entries: u64,
        /// Total weight held (the entry count without a weigher).
        weighted_size: u64,
    },
}

/// Why an entry left the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum RemovalCause {
    /// Evicted to keep the cache within its capacity.
    Size,
    /// Its time to live, time to idle or per-entry expiry passed.
    Expired,
    /// Removed by `invalidate`, `invalidate_all`, or a remote tier's invalidation.
    Explicit,
    /// A new value was written for its key.
    Replaced,
}

impl RemovalCause {
    /// Every cause.
    pub const ALL: [RemovalCause; 4] = [Self::Size, Self::Expired, Self::Explicit, Self::Replaced];

    /// The value of the `palisade.cache.cause` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Size => "size",
            Self::Expired => "expired",
            Self::Explicit => "explicit",
            Self::Replaced => "replaced",
        }
    }

    /// `true` when the cache itself chose to drop the entry (size or expiry),
    /// rather than the user removing or replacing it.
    pub fn was_evicted(self) -> bool {
        matches!(self, Self::Size | Self::Expired)
    }
}

impl fmt::Display for RemovalCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Called with every entry that leaves the cache, after the cache has let go
/// of its locks (so the listener may use the cache). Closures
/// `Fn(&K, &V, RemovalCause)` are listeners.
pub trait RemovalListener<K, V>: Send + Sync + 'static {
    /// One entry left the cache.
    fn on_removal(&self, key: &K, value: &V, cause: RemovalCause);
}

impl<K, V, F> RemovalListener<K, V> for F
where
    F: Fn(&K, &V, RemovalCause) + Send + Sync + 'static,
{
    fn on_removal(&self, key: &K, value: &V, cause: RemovalCause) {
        self(key, value, cause);
    }
}
