//! What a cache tells its listeners: typed [`Event`]s for telemetry, and
//! removed entries with their cause for a [`RemovalListener`].

use std::fmt;
use std::time::Duration;

use palisade_core::Outcome;

/// Something that happened in a cache; sent to every listener of
/// [`CacheBuilder::listener`](crate::CacheBuilder::listener) as it happens.
/// The `otel` and `tracing` adapters are listeners of these.
///
/// With no listener, no event is built: a lookup costs one branch more.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A lookup found a live value.
    Hit,
    /// A lookup found no live value.
    Miss,
    /// A [`LoadingCache`](crate::LoadingCache) served an expired value
    /// because its reload failed or outlasted the soft timeout.
    StaleServed,
    /// A load finished: `Success` with a value, `Failure` when it failed,
    /// timed out, panicked, or its caller gave up on it.
    LoadFinished {
        /// Success or failure.
        outcome: Outcome,
        /// How long it ran, by the cache's clock.
        duration: Duration,
    },
    /// An entry left the cache.
    Removed {
        /// Why.
        cause: RemovalCause,
    },
    /// The cache applied its pending work after a write or a batch of reads;
    /// these are its sizes now.
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
