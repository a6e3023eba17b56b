//! `LoadingCache`: read-through with a loader, refresh-ahead, stale-if-error
//! and loader timeouts.
//!
//! Loads run in their own tokio task, as the leader of the key's flight.
//! Callers only wait on the flight, so a caller that gives up (its future is
//! dropped, or it took a stale value at the soft timeout) never stops a load
//! that others wait for or that will refresh the cache.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::config::check_positive_duration;
use palisade_core::{ConfigError, SharedSleeper, TokioSleeper};

use crate::cache::{Cache, LoadTimer};
use crate::config::CacheBuilder;
use crate::flight::{Join, Leader, SharedError};

/// Loads the value of a key from the source of truth.
///
/// Closures `Fn(K) -> impl Future<Output = Result<V, E>>` are loaders. The
/// future must be `'static` (it runs in a task of its own): clone what it
/// needs, an `Arc` of a pool for example, into it.
pub trait Loader<K, V>: Send + Sync + 'static {
    /// What a failed load returns.
    type Error: Send + Sync + 'static;

    /// Loads `key`'s value.
    fn load(&self, key: K) -> impl Future<Output = Result<V, Self::Error>> + Send + 'static;
}

impl<K, V, E, F, Fut> Loader<K, V> for F
where
    F: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<V, E>> + Send + 'static,
    E: Send + Sync + 'static,
{
    type Error = E;

    fn load(&self, key: K) -> impl Future<Output = Result<V, E>> + Send + 'static {
        self(key)
    }
}

/// Gives a refresh claim back when dropped: after a failed or panicking refresh.
struct RefreshClaim<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    cache: Cache<K, V>,
    hash: u64,
    key: K,
    armed: bool,
}

impl<K, V> Drop for RefreshClaim<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        if self.armed {
            self.cache.end_refresh(self.hash, &self.key);
        }
    }
}

/// Why [`LoadingCache::get`] has no value to give.
///
/// Displays the loader's error after its own words when `E: Display`, and
/// is an `Error` whose `source` is the loader's own error (not the `Arc`
/// around it) when `E: Error`, so a downcast, or `Rejected::find`, reaches it.
/// Written by hand for that reason: thiserror's `#[source]` would make the
/// `Arc` the source.
#[non_exhaustive]
pub enum LoadError<E> {
    /// The loader returned an error (shared by every caller of that load).
    Loader(Arc<E>),
    /// The load ran longer than the hard timeout and was abandoned.
    Timeout(Duration),
    /// The load's task panicked or was cancelled.
    Aborted,
    /// `get` was called outside a tokio runtime, where no load can be spawned.
    NoRuntime,
}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Loader(e) => write!(f, "the loader failed: {e}"),
            Self::Timeout(d) => write!(
                f,
                "the load ran longer than the hard timeout of {d:?} and was abandoned"
            ),
            Self::Aborted => {
                f.write_str("the load was aborted: its task panicked or was cancelled")
            }
            Self::NoRuntime => f.write_str("no tokio runtime to run the load on"),
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Loader(e) => f.debug_tuple("Loader").field(e).finish(),
            Self::Timeout(d) => f.debug_tuple("Timeout").field(d).finish(),
            Self::Aborted => f.write_str("Aborted"),
            Self::NoRuntime => f.write_str("NoRuntime"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Loader(e) => Some(&**e),
            _ => None,
        }
    }
}

impl<E> LoadError<E> {
    /// The loader's own error, if that is what happened.
    pub fn loader_error(&self) -> Option<&E> {
        match self {
            Self::Loader(e) => Some(e),
            _ => None,
        }
    }
}

impl<E> Clone for LoadError<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Loader(e) => Self::Loader(Arc::clone(e)),
            Self::Timeout(d) => Self::Timeout(*d),
            Self::Aborted => Self::Aborted,
            Self::NoRuntime => Self::NoRuntime,
        }
    }
}

/// A [`Cache`] that loads missing values itself, refreshes them ahead of
/// expiry and serves stale values when the source fails.
///
/// Build one with the cache's settings, then [`CacheBuilder::loading`] and
/// the loading settings (feature `tokio`). Loads run on a tokio runtime.
///
/// ```
/// use palisade_cache::{Cache, LoadingCache};
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let prices: LoadingCache<String, u64, _> = Cache::builder()
///     .max_capacity(1_000)
///     .time_to_live(Duration::from_secs(60))
///     .loading()
///     .refresh_after(Duration::from_secs(45))
///     .stale_if_error(Duration::from_secs(300))
///     .hard_timeout(Duration::from_secs(2))
///     .build(|sku: String| async move {
///         Ok::<_, std::io::Error>(sku.len() as u64 * 100)
///     })
///     .unwrap();
///
/// assert_eq!(prices.get("book".to_string()).await.unwrap(), 400);
/// # });
/// ```
pub struct LoadingCache<K, V, L> {
    cache: Cache<K, V>,
    loader: Arc<L>,
    sleeper: SharedSleeper,
}

impl<K, V, L> Clone for LoadingCache<K, V, L> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            loader: Arc::clone(&self.loader),
            sleeper: Arc::clone(&self.sleeper),
        }
    }
}

impl<K, V, L> fmt::Debug for LoadingCache<K, V, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadingCache")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// Builds a [`LoadingCache`]: the settings of read-through loading, after
/// the cache's own (`Cache::builder()…loading()`).
#[must_use]
pub struct LoadingCacheBuilder<K, V> {
    cache: CacheBuilder<K, V>,
}

impl<K, V> fmt::Debug for LoadingCacheBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadingCacheBuilder")
            .field("cache", &self.cache)
            .field("refresh_after", &self.cache.refresh_after)
            .field("stale_if_error", &self.cache.max_stale)
            .field("soft_timeout", &self.cache.soft_timeout)
            .field("hard_timeout", &self.cache.hard_timeout)
            .finish()
    }
}

impl<K, V> CacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Goes on to the settings of a [`LoadingCache`] (feature `tokio`).
    pub fn loading(self) -> LoadingCacheBuilder<K, V> {
        LoadingCacheBuilder { cache: self }
    }
}

impl<K, V> LoadingCacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Once a value is this old, the next read returns it and reloads it in
    /// the background. Must be shorter than the time to live. Default: off.
    pub fn refresh_after(mut self, age: Duration) -> Self {
        self.cache.refresh_after = Some(age);
        self
    }

    /// Stale-if-error: an expired value is kept this long past its expiry
    /// and served when a reload fails or outlasts the soft timeout. Default: off.
    pub fn stale_if_error(mut self, max_staleness: Duration) -> Self {
        self.cache.max_stale = Some(max_staleness);
        self
    }

    /// When a load takes longer than this and a stale value is at hand, the
    /// caller gets the stale value and the load goes on in the background.
    /// Must be shorter than the hard timeout. Default: off.
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.cache.soft_timeout = Some(timeout);
        self
    }

    /// A load still running after this is abandoned and fails with
    /// [`LoadError::Timeout`]. Default: off.
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.cache.hard_timeout = Some(timeout);
        self
    }

    /// What the soft and hard timeouts wait on. Default: tokio's timer
    /// (`TokioSleeper`, which follows `tokio::time::pause`); tests may pass
    /// the [`ManualClock`](palisade_core::ManualClock) they gave to `clock`.
    pub fn sleeper(mut self, sleeper: SharedSleeper) -> Self {
        self.cache.sleeper = Some(sleeper);
        self
    }

    /// Checks the settings (the cache's and these) and builds a
    /// [`LoadingCache`] around `loader`.
    pub fn build<L: Loader<K, V>>(
        mut self,
        loader: L,
    ) -> Result<LoadingCache<K, V, L>, ConfigError> {
        let c = &self.cache;
        for (field, value) in [
            ("refresh_after", c.refresh_after),
            ("stale_if_error", c.max_stale),
            ("soft_timeout", c.soft_timeout),
            ("hard_timeout", c.hard_timeout),
        ] {
            if let Some(d) = value {
                check_positive_duration(field, d)?;
            }
        }
        if let (Some(refresh), Some(ttl)) = (c.refresh_after, c.time_to_live)
            && refresh >= ttl
        {
            return Err(ConfigError::new(
                "refresh_after",
                format!(
                    "must be shorter than time_to_live ({ttl:?}), got {refresh:?}: no value would live long enough to be refreshed"
                ),
            ));
        }
        if let (Some(soft), Some(hard)) = (c.soft_timeout, c.hard_timeout)
            && soft >= hard
        {
            return Err(ConfigError::new(
                "soft_timeout",
                format!("must be shorter than hard_timeout ({hard:?}), got {soft:?}"),
            ));
        }
        let sleeper = self
            .cache
            .sleeper
            .take()
            .unwrap_or_else(TokioSleeper::shared);
        Ok(LoadingCache {
            cache: self.cache.build()?,
            loader: Arc::new(loader),
            sleeper,
        })
    }
}

impl<K, V, L> LoadingCache<K, V, L>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    L: Loader<K, V>,
{
    /// The cache underneath, for `insert`, `invalidate`, `stats` and the rest.
    pub fn cache(&self) -> &Cache<K, V> {
        &self.cache
    }

    /// The value for `key`, loaded on a miss.
    ///
    /// - A live value is returned at once; if it is older than
    ///   `refresh_after`, one background reload starts.
    /// - On a miss, one load per key runs however many callers wait, bounded
    ///   by `hard_timeout`.
    /// - With `stale_if_error`, an expired value kept within the maximum
    ///   staleness is returned when the load fails, or when it outlasts
    ///   `soft_timeout` (the load then goes on and fills the cache).
    pub async fn get(&self, key: K) -> Result<V, LoadError<L::Error>> {
        let cache = &self.cache;
        let hash = cache.hash_key(&key);
        if let Some(found) = cache.get_hashed(hash, &key, true) {
            if found.refresh {
                self.refresh(hash, &key);
            }
            return Ok(found.value);
        }
        let stale = if cache.inner.keep_stale == 0 {
            None
        } else {
            cache.get_stale(hash, &key)
        };
        if let Some(error) = cache.negative_hit::<LoadError<L::Error>>(&key) {
            // A recent load failed: serve what is left, as that load's callers were.
            return match stale {
                Some(value) => Ok(self.serve_stale(value)),
                None => Err((*error).clone()),
            };
        }
        let flight = match cache.inner.flights.join(hash, &key) {
            Join::Waiter(flight) => flight,
            Join::Leader(leader) => {
                // Looked at again now that the load is registered: a write
                // that came after the miss and before the registration did
                // not see this load to supersede it (see `Flights::supersede`).
                if let Some(value) = cache.peek(hash, &key) {
                    leader.finish(Ok(value.clone()));
                    return Ok(value);
                }
                let flight = Arc::clone(leader.flight());
                if !self.spawn_load(leader, hash, key, false) {
                    return stale.ok_or(LoadError::NoRuntime);
                }
                flight
            }
        };
        let (outcome, stale) = match (cache.inner.soft_timeout, stale) {
            (Some(soft), Some(value)) => {
                match palisade_core::timeout(&*self.sleeper, soft, flight.wait()).await {
                    Ok(outcome) => (outcome, Some(value)),
                    Err(_) => return Ok(self.serve_stale(value)),
                }
            }
            (_, stale) => (flight.wait().await, stale),
        };
        let error = match outcome {
            Some(Ok(value)) => return Ok(value),
            Some(Err(error)) => error
                .downcast::<LoadError<L::Error>>()
                .map_or(LoadError::Aborted, |e| (*e).clone()),
            None => LoadError::Aborted,
        };
        match stale {
            Some(value) => Ok(self.serve_stale(value)),
            None => Err(error),
        }
    }

    /// Counts a stale value served, and serves it.
    fn serve_stale(&self, value: V) -> V {
        self.cache.inner.stats.stale_hit();
        value
    }

    /// Starts a background reload of `key` unless a load of it is under way.
    fn refresh(&self, hash: u64, key: &K) {
        match self.cache.inner.flights.join(hash, key) {
            Join::Leader(leader) => {
                // A write between the claim and the registration replaced the
                // claimed entry (the new one is unclaimed): reloading would
                // store an older value over it.
                if !self.cache.is_claimed_for_refresh(hash, key) {
                    drop(leader);
                    return;
                }
                if !self.spawn_load(leader, hash, key.clone(), true) {
                    self.cache.end_refresh(hash, key);
                }
            }
            // A load is under way; if it is not stored (a write superseded
            // it), a later read must be able to claim the refresh again.
            Join::Waiter(_) => self.cache.end_refresh(hash, key),
        }
    }

    /// Runs the loader in a task of its own as the flight's leader; `false`
    /// if there is no runtime (the leader is then dropped: the flight is abandoned).
    fn spawn_load(&self, leader: Leader<K, V>, hash: u64, key: K, refresh: bool) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let cache = self.cache.clone();
        let load = self.loader.load(key.clone());
        let hard_timeout = cache.inner.hard_timeout;
        let sleeper = Arc::clone(&self.sleeper);
        runtime.spawn(async move {
            // If the loader panics, the timer counts a failed load and the
            // claim gives the refresh back, as they unwind.
            let timer = LoadTimer::start(&cache);
            let claim = refresh.then(|| RefreshClaim {
                cache: cache.clone(),
                hash,
                key: key.clone(),
                armed: true,
            });
            let result = match hard_timeout {
                Some(limit) => match palisade_core::timeout(&*sleeper, limit, load).await {
                    Ok(result) => result.map_err(|e| LoadError::Loader(Arc::new(e))),
                    Err(_) => Err(LoadError::Timeout(limit)),
                },
                None => load.await.map_err(|e| LoadError::Loader(Arc::new(e))),
            };
            timer.finish(result.is_ok());
            match result {
                Ok(value) => {
                    if let Some(mut claim) = claim {
                        claim.armed = false; // the new entry starts unclaimed
                    }
                    cache.insert_loaded(hash, key, value.clone(), &leader);
                    leader.finish(Ok(value));
                }
                Err(error) => {
                    let error: Arc<LoadError<L::Error>> = Arc::new(error);
                    if !refresh && !leader.flight().is_superseded() {
                        cache.remember_failure(key, Arc::clone(&error) as SharedError);
                    }
                    drop(claim); // a failed refresh may be tried again
                    leader.finish(Err(error));
                }
            }
        });
        true
    }
}
