//! `TieredCache`: a local cache in front of a shared remote tier.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::config::check_positive_duration;
use palisade_core::{ConfigError, SharedSleeper, TokioSleeper};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::{Invalidation, RemoteTier, TierError};
use crate::Cache;
use crate::flight::{infallible, value_of};

/// How long `invalidate_all`'s sweep of the remote tier may take.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest `remote_ttl`: 100 years, well inside what Redis accepts in `PX`.
const MAX_REMOTE_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3_600);

/// What the remote tier did for a [`TieredCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TierStats {
    /// Local misses answered by the remote tier.
    pub remote_hits: u64,
    /// Local misses the remote tier did not have either.
    pub remote_misses: u64,
    /// Remote calls that failed or timed out (the cache carried on without them).
    pub remote_errors: u64,
    /// Invalidations from other instances applied to the local cache.
    pub invalidations_received: u64,
    /// Times the local cache was emptied to resynchronise: after the
    /// subscription was lost or came back, or another instance's `invalidate_all`.
    pub resyncs: u64,
    /// Calls of [`TieredCache::invalidate_all`] on this instance.
    pub invalidate_alls: u64,
}

#[derive(Debug, Default)]
struct Counters {
    remote_hits: AtomicU64,
    remote_misses: AtomicU64,
    remote_errors: AtomicU64,
    invalidations_received: AtomicU64,
    resyncs: AtomicU64,
    invalidate_alls: AtomicU64,
    /// Bumped before any write or invalidation reaches the local cache: this
    /// instance's own, or another's through the listener. A remote read or a
    /// load that saw it move does not keep (or write back) what it got.
    epoch: AtomicU64,
}

struct Inner<K, V> {
    local: Cache<K, V>,
    remote: Arc<dyn RemoteTier<K, V>>,
    remote_timeout: Duration,
    remote_ttl: Option<Duration>,
    counters: Arc<Counters>,
    sleeper: SharedSleeper,
    listener: JoinHandle<()>,
}

impl<K, V> Drop for Inner<K, V> {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// A local [`Cache`] in front of a [`RemoteTier`], kept coherent across
/// instances by the tier's invalidations. See the [module docs](super).
pub struct TieredCache<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for TieredCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V> fmt::Debug for TieredCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredCache")
            .field("local", &self.inner.local)
            .field("remote_timeout", &self.inner.remote_timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`TieredCache`] from a local cache and a remote tier.
pub struct TieredCacheBuilder<K, V> {
    local: Cache<K, V>,
    remote: Arc<dyn RemoteTier<K, V>>,
    remote_timeout: Duration,
    remote_ttl: Option<Duration>,
    sleeper: Option<SharedSleeper>,
    runtime: Option<Handle>,
}

impl<K, V> fmt::Debug for TieredCacheBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredCacheBuilder")
            .field("remote_timeout", &self.remote_timeout)
            .field("remote_ttl", &self.remote_ttl)
            .finish_non_exhaustive()
    }
}

impl<K, V> TieredCacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The longest any one remote call may take before the cache carries on
    /// without it. Default: 50 ms.
    #[must_use]
    pub fn remote_timeout(mut self, timeout: Duration) -> Self {
        self.remote_timeout = timeout;
        self
    }

    /// How long values live in the remote tier. Default: none (they stay
    /// until invalidated or evicted by the remote store).
    #[must_use]
    pub fn remote_ttl(mut self, ttl: Duration) -> Self {
        self.remote_ttl = Some(ttl);
        self
    }

    /// What the remote timeout waits on. Default: tokio's timer
    /// (`TokioSleeper`, which follows `tokio::time::pause`).
    #[must_use]
    pub fn sleeper(mut self, sleeper: SharedSleeper) -> Self {
        self.sleeper = Some(sleeper);
        self
    }

    /// The runtime the invalidation listener runs on. Default: the runtime
    /// `build()` is called in.
    #[must_use]
    pub fn runtime(mut self, runtime: Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Checks the settings, subscribes to the tier's invalidations and
    /// builds the cache.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `remote_timeout` or `remote_ttl` when out of
    /// bounds, or `runtime` when none was given and `build()` does not run
    /// inside a tokio runtime.
    pub fn build(self) -> Result<TieredCache<K, V>, ConfigError> {
        check_positive_duration("remote_timeout", self.remote_timeout)?;
        if let Some(ttl) = self.remote_ttl {
            check_positive_duration("remote_ttl", ttl)?;
            if ttl > MAX_REMOTE_TTL {
                return Err(ConfigError::new(
                    "remote_ttl",
                    format!("must be at most {MAX_REMOTE_TTL:?} (about 100 years), got {ttl:?}"),
                ));
            }
        }
        let Some(runtime) = self.runtime.or_else(|| Handle::try_current().ok()) else {
            return Err(ConfigError::new(
                "runtime",
                "not set, and build() was not called inside a tokio runtime: the invalidation listener needs one",
            ));
        };
        let counters = Arc::new(Counters::default());
        let mut invalidations = self.remote.subscribe();
        let local = self.local.clone();
        let listener_counters = Arc::clone(&counters);
        let listener = runtime.spawn(async move {
            while let Some(invalidation) = invalidations.recv().await {
                listener_counters.epoch.fetch_add(1, Ordering::SeqCst);
                match invalidation {
                    Invalidation::Key(key) => {
                        local.invalidate(&key);
                        listener_counters
                            .invalidations_received
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Invalidation::Resync => {
                        local.invalidate_all();
                        listener_counters.resyncs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(TieredCache {
            inner: Arc::new(Inner {
                local: self.local,
                remote: self.remote,
                remote_timeout: self.remote_timeout,
                remote_ttl: self.remote_ttl,
                counters,
                sleeper: self.sleeper.unwrap_or_else(TokioSleeper::shared),
                listener,
            }),
        })
    }
}

impl<K, V> TieredCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A builder over `local` and `remote`.
    pub fn builder(local: Cache<K, V>, remote: impl RemoteTier<K, V>) -> TieredCacheBuilder<K, V> {
        TieredCacheBuilder {
            local,
            remote: Arc::new(remote),
            remote_timeout: Duration::from_millis(50),
            remote_ttl: None,
            sleeper: None,
            runtime: None,
        }
    }

    /// The local tier.
    pub fn local(&self) -> &Cache<K, V> {
        &self.inner.local
    }

    /// What the remote tier has done so far.
    pub fn tier_stats(&self) -> TierStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TierStats {
            remote_hits: get(&c.remote_hits),
            remote_misses: get(&c.remote_misses),
            remote_errors: get(&c.remote_errors),
            invalidations_received: get(&c.invalidations_received),
            resyncs: get(&c.resyncs),
            invalidate_alls: get(&c.invalidate_alls),
        }
    }

    /// Runs one remote call within the remote timeout; an error or timeout
    /// is counted and becomes `None`.
    async fn remote<T>(&self, call: impl Future<Output = Result<T, TierError>>) -> Option<T> {
        self.remote_within(self.inner.remote_timeout, call).await
    }

    /// As [`remote`](Self::remote), within `limit`.
    async fn remote_within<T>(
        &self,
        limit: Duration,
        call: impl Future<Output = Result<T, TierError>>,
    ) -> Option<T> {
        let outcome = palisade_core::timeout(&*self.inner.sleeper, limit, call).await;
        if let Ok(Ok(value)) = outcome {
            Some(value)
        } else {
            self.inner
                .counters
                .remote_errors
                .fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// The value for `key` from the local cache or, failing that, the remote tier.
    pub async fn get(&self, key: &K) -> Option<V> {
        if let Some(value) = self.inner.local.get(key) {
            return Some(value);
        }
        let epoch = self.inner.counters.epoch.load(Ordering::SeqCst);
        let value = self.remote_get(key).await?;
        self.inner.local.insert(key.clone(), value.clone());
        // An invalidation applied during the remote read found nothing to
        // drop; the value read may be what it invalidated.
        if self.inner.counters.epoch.load(Ordering::SeqCst) != epoch {
            self.inner.local.invalidate(key);
        }
        Some(value)
    }

    /// The remote value of `key`, counting a hit or a miss (an error is
    /// counted as an error only, by [`remote`](Self::remote)).
    async fn remote_get(&self, key: &K) -> Option<V> {
        let found = self.remote(self.inner.remote.get(key)).await?;
        let counter = if found.is_some() {
            &self.inner.counters.remote_hits
        } else {
            &self.inner.counters.remote_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The value for `key`: local, then remote, then `init`, with one load
    /// per key in this instance. A loaded value is written to the remote tier.
    pub async fn get_with(&self, key: K, init: impl Future<Output = V>) -> V {
        value_of(self.try_get_with(key, infallible(init)).await)
    }

    /// As [`get_with`](Self::get_with) with a fallible loader; the error is
    /// handed to every caller waiting on that load.
    pub async fn try_get_with<E>(
        &self,
        key: K,
        init: impl Future<Output = Result<V, E>>,
    ) -> Result<V, Arc<E>>
    where
        E: Send + Sync + 'static,
    {
        let remote_key = key.clone();
        self.inner
            .local
            .try_get_with(key, async move {
                let seen = self
                    .remote(self.inner.remote.get_versioned(&remote_key))
                    .await;
                let version = match seen {
                    Some((Some(value), _)) => {
                        self.inner
                            .counters
                            .remote_hits
                            .fetch_add(1, Ordering::Relaxed);
                        return Ok(value);
                    }
                    Some((None, version)) => {
                        self.inner
                            .counters
                            .remote_misses
                            .fetch_add(1, Ordering::Relaxed);
                        Some(version)
                    }
                    None => None, // the tier did not answer: no safe write-back
                };
                let epoch = self.inner.counters.epoch.load(Ordering::SeqCst);
                let value = init.await?;
                // Written back only if nothing was written or invalidated
                // here meanwhile, and, in the tier, only if no instance wrote
                // or removed the key since its version was read.
                if let Some(version) = version
                    && self.inner.counters.epoch.load(Ordering::SeqCst) == epoch
                {
                    let ttl = self.inner.remote_ttl;
                    self.remote(
                        self.inner
                            .remote
                            .set_if_absent(&remote_key, &value, ttl, version),
                    )
                    .await;
                }
                Ok(value)
            })
            .await
    }

    /// Stores `value` for `key` here and remotely, and tells the other
    /// instances to drop their copies.
    pub async fn insert(&self, key: K, value: V) {
        let ttl = self.inner.remote_ttl;
        self.inner.counters.epoch.fetch_add(1, Ordering::SeqCst);
        self.inner.local.insert(key.clone(), value.clone());
        self.remote(self.inner.remote.set(&key, &value, ttl)).await;
        self.remote(self.inner.remote.publish_invalidation(&key))
            .await;
    }

    /// Removes `key` remotely, then here, and tells the other instances to
    /// drop their copies. Until the remote removal has finished (or failed),
    /// this instance may still answer the old value; once `invalidate`
    /// returns, no load of this instance that read the old value, locally or
    /// remotely, keeps it (the local copy goes after the remote one, so a
    /// load that read the remote copy meanwhile is superseded).
    pub async fn invalidate(&self, key: &K) {
        // Loads under way here write nothing back from now on.
        self.inner.counters.epoch.fetch_add(1, Ordering::SeqCst);
        self.remote(self.inner.remote.remove(key)).await;
        // Again: a `get` that read the remote copy before its removal drops
        // what it kept, even if it kept it after the line below.
        self.inner.counters.epoch.fetch_add(1, Ordering::SeqCst);
        self.inner.local.invalidate(key);
        self.remote(self.inner.remote.publish_invalidation(key))
            .await;
    }

    /// Removes every value: from the remote tier (for Redis, every key under
    /// the tier's prefix, found with `SCAN`: a value another instance writes
    /// meanwhile may stay), then from the local cache, and from every other
    /// instance's local cache, which is told to resynchronise. No load under
    /// way, on any instance, writes its value back afterwards, and none of
    /// this instance that read a value before the sweep removed it keeps it.
    /// Until the sweep has finished, this instance may still answer old
    /// values. The sweep is bounded by a minute, the message by the remote
    /// timeout; a failed one is counted in [`TierStats::remote_errors`] and
    /// the local cache is emptied anyway.
    pub async fn invalidate_all(&self) {
        self.inner.counters.epoch.fetch_add(1, Ordering::SeqCst);
        self.inner
            .counters
            .invalidate_alls
            .fetch_add(1, Ordering::Relaxed);
        // The sweep visits every key: bounded by a minute, not by the remote
        // timeout of one call. The remote values go first, as in `invalidate`.
        self.remote_within(SWEEP_TIMEOUT, self.inner.remote.remove_all())
            .await;
        self.inner.counters.epoch.fetch_add(1, Ordering::SeqCst);
        self.inner.local.invalidate_all();
        self.remote(self.inner.remote.publish_resync()).await;
    }
}
