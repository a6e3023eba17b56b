//! Why an entry left the cache, and the listener told about it.

use std::fmt;

/// Why an entry left the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
