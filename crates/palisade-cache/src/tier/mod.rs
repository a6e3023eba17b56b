//! Two tiers: a local [`Cache`] in front of a remote tier that every
//! instance of a service shares, with the same `get_with` / `insert` /
//! `invalidate` API as the local cache.
//!
//! - A read tries the local cache, then the remote tier, then the loader;
//!   a value found remotely or loaded is kept locally, and a loaded value is
//!   written to the remote tier for the other instances.
//! - A write goes to the local cache and the remote tier; an invalidation
//!   goes to the remote tier first, then to the local cache (so a load that
//!   read the remote copy meanwhile is not kept); then each is broadcast, and
//!   every other instance drops its local copy.
//! - The remote tier is a helper, never a dependency: each remote call is
//!   bounded by [`TieredCacheBuilder::remote_timeout`]; on a timeout or an
//!   error the read carries on with the loader, and the error is counted in
//!   [`TierStats`]. When the remote tier reconnects after losing its
//!   invalidation channel it asks for a resynchronisation, and the local
//!   cache is emptied, because invalidations may have been missed.
//!
//! [`InMemoryTier`] is a remote tier inside one process (tests, and several
//! caches in one service); `RedisTier` (feature
//! `redis`) is the real one.

mod codec;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod tiered;

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

pub use self::codec::Codec;
#[cfg(feature = "redis")]
pub use self::codec::JsonCodec;
pub use self::memory::InMemoryTier;
#[cfg(feature = "redis")]
pub use self::redis::{RedisTier, RedisTierBuilder};
pub use self::tiered::{TierStats, TieredCache, TieredCacheBuilder};
#[cfg(doc)]
use crate::Cache;

/// A message from the remote tier to the local caches that sit on it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalidation<K> {
    /// Another instance wrote or invalidated this key: drop the local copy.
    Key(K),
    /// Invalidations may have been missed (the channel was lost and is back,
    /// or a receiver fell behind): drop every local copy.
    Resync,
}

/// What went wrong talking to a remote tier.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TierError {
    /// The remote store failed or could not be reached; the store's own error is the source.
    #[error("remote tier error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A value or key could not be encoded or decoded; the codec's error is the source.
    #[error("remote tier codec error: {0}")]
    Codec(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The call took longer than the remote timeout.
    #[error("remote tier call took longer than {0:?}")]
    Timeout(Duration),
    /// A setting of the tier's builder is out of its bounds.
    #[error(transparent)]
    Config(#[from] palisade_core::ConfigError),
}

/// A shared store behind the local caches of many instances.
///
/// Every implementation passes the same conformance tests
/// (`tests/tier.rs`): values round-trip, time to live is passed
/// on, removal works, and a published invalidation reaches every other
/// subscriber but not the publisher.
#[async_trait]
pub trait RemoteTier<K, V>: Send + Sync + 'static {
    /// The value stored for `key`.
    async fn get(&self, key: &K) -> Result<Option<V>, TierError>;

    /// Stores `value` for `key`, expiring after `ttl` if given, and moves
    /// the key's version on.
    async fn set(&self, key: &K, value: &V, ttl: Option<Duration>) -> Result<(), TierError>;

    /// The value stored for `key` and the key's version: a number that
    /// [`set`](Self::set) and [`remove`](Self::remove) move on (0 for a key
    /// never written or removed). A load that finds no value keeps the
    /// version to write its value back with [`set_if_absent`](Self::set_if_absent).
    async fn get_versioned(&self, key: &K) -> Result<(Option<V>, u64), TierError>;

    /// Stores `value` for `key` unless the key already has a value or its
    /// version is no longer `version` (the one [`get_versioned`](Self::get_versioned)
    /// returned before the load); `true` if it was stored. A loaded value is
    /// written back this way, so that it can neither overwrite a newer value
    /// another instance wrote meanwhile nor bring back one that another
    /// instance removed while the load ran. Atomic.
    async fn set_if_absent(
        &self,
        key: &K,
        value: &V,
        ttl: Option<Duration>,
        version: u64,
    ) -> Result<bool, TierError>;

    /// Removes `key`'s value and moves its version on.
    async fn remove(&self, key: &K) -> Result<(), TierError>;

    /// Tells every other subscriber to drop its local copy of `key`.
    async fn publish_invalidation(&self, key: &K) -> Result<(), TierError>;

    /// Removes every value this tier holds (under its prefix, for Redis).
    async fn remove_all(&self) -> Result<(), TierError>;

    /// Tells every other subscriber to drop every local copy (an
    /// [`Invalidation::Resync`]).
    async fn publish_resync(&self) -> Result<(), TierError>;

    /// Invalidations published by other instances (never this one's own).
    fn subscribe(&self) -> Invalidations<K>;
}

/// A stream of [`Invalidation`]s for one member of a remote tier, without
/// the member's own.
///
/// Built on a bounded broadcast channel of `(sender, invalidation)`: a
/// member that falls behind gets [`Invalidation::Resync`] instead of
/// unbounded memory.
#[derive(Debug)]
pub struct Invalidations<K> {
    rx: broadcast::Receiver<(u64, Invalidation<K>)>,
    me: u64,
}

impl<K: Clone> Invalidations<K> {
    /// The invalidations on `rx` that member `me` did not send.
    pub fn new(rx: broadcast::Receiver<(u64, Invalidation<K>)>, me: u64) -> Self {
        Self { rx, me }
    }

    /// The next invalidation, or `None` once the tier is gone.
    pub async fn recv(&mut self) -> Option<Invalidation<K>> {
        loop {
            match self.rx.recv().await {
                Ok((from, _)) if from == self.me => {}
                Ok((_, invalidation)) => return Some(invalidation),
                Err(broadcast::error::RecvError::Lagged(_)) => return Some(Invalidation::Resync),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
