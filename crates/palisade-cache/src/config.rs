//! The builder: every setting of a cache, validated in `build()`.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::config::{check_nonzero, check_positive_duration};
use palisade_core::{ConfigError, Listener, Listeners, SharedClock, SystemClock};

use crate::Cache;
use crate::event::{Event, RemovalListener};
use crate::expiry::Expiry;

pub(crate) type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u32 + Send + Sync>;

/// Builds a [`Cache`]: `Cache::builder().max_capacity(10_000).time_to_live(d).build()`.
///
/// Every number states its unit and default. `build()` checks the settings
/// together and names the field of the first one that does not hold. The
/// settings of read-through loading (refresh-ahead, stale-if-error, loader
/// timeouts) are on [`LoadingCacheBuilder`](crate::LoadingCacheBuilder),
/// reached with `loading()` (feature `tokio`).
pub struct CacheBuilder<K, V> {
    pub(crate) name: Arc<str>,
    pub(crate) max_capacity: Option<u64>,
    pub(crate) weigher: Option<Weigher<K, V>>,
    pub(crate) time_to_live: Option<Duration>,
    pub(crate) time_to_idle: Option<Duration>,
    pub(crate) expiry: Option<Arc<dyn Expiry<K, V>>>,
    pub(crate) listener: Option<Arc<dyn RemovalListener<K, V>>>,
    pub(crate) negative_ttl: Option<Duration>,
    pub(crate) refresh_after: Option<Duration>,
    pub(crate) max_stale: Option<Duration>,
    pub(crate) soft_timeout: Option<Duration>,
    pub(crate) hard_timeout: Option<Duration>,
    pub(crate) shards: Option<usize>,
    pub(crate) hash_seed: Option<u64>,
    pub(crate) clock: SharedClock,
    pub(crate) listeners: Listeners<Event>,
    #[cfg(feature = "tokio")]
    pub(crate) sleeper: Option<palisade_core::SharedSleeper>,
    #[cfg(feature = "otel")]
    pub(crate) otel: Option<palisade_core::telemetry::MeterSource>,
    #[cfg(feature = "tracing")]
    pub(crate) tracing: bool,
}

impl<K, V> Default for CacheBuilder<K, V> {
    fn default() -> Self {
        Self {
            name: Arc::from("default"),
            max_capacity: None,
            weigher: None,
            time_to_live: None,
            time_to_idle: None,
            expiry: None,
            listener: None,
            negative_ttl: None,
            refresh_after: None,
            max_stale: None,
            soft_timeout: None,
            hard_timeout: None,
            shards: None,
            hash_seed: None,
            clock: SystemClock::shared(),
            listeners: Listeners::new(),
            #[cfg(feature = "tokio")]
            sleeper: None,
            #[cfg(feature = "otel")]
            otel: None,
            #[cfg(feature = "tracing")]
            tracing: false,
        }
    }
}

impl<K, V> fmt::Debug for CacheBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("name", &self.name)
            .field("max_capacity", &self.max_capacity)
            .field("weigher", &self.weigher.is_some())
            .field("time_to_live", &self.time_to_live)
            .field("time_to_idle", &self.time_to_idle)
            .field("expiry", &self.expiry.is_some())
            .field("negative_ttl", &self.negative_ttl)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl<K, V> CacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The instance name in telemetry (`palisade.instance`) and in `tracing`
    /// events. Default: `"default"`; must not be empty.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The bound: the most entries held or, with a [`weigher`](Self::weigher),
    /// the most total weight. Required; no default.
    #[must_use]
    pub fn max_capacity(mut self, max: u64) -> Self {
        self.max_capacity = Some(max);
        self
    }

    /// Weighs each entry (in any unit: bytes, cost…); the cache then holds
    /// at most `max_capacity` total weight. An entry heavier than the whole
    /// capacity is not stored; a weight of 0 counts as 1, so that the cache
    /// cannot grow without bound. Default: every entry weighs 1.
    #[must_use]
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u32 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// Entries expire this long after they were written. Default: never.
    #[must_use]
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.time_to_live = Some(ttl);
        self
    }

    /// Entries expire this long after they were last read or written. Default: never.
    #[must_use]
    pub fn time_to_idle(mut self, tti: Duration) -> Self {
        self.time_to_idle = Some(tti);
        self
    }

    /// Chooses a lifetime per entry at insert and update. Default: none.
    #[must_use]
    pub fn expiry(mut self, expiry: impl Expiry<K, V>) -> Self {
        self.expiry = Some(Arc::new(expiry));
        self
    }

    /// Told of every entry that leaves, with the [`RemovalCause`](crate::RemovalCause). Default: none.
    #[must_use]
    pub fn removal_listener(mut self, listener: impl RemovalListener<K, V>) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Caches a failed load's error for this long, so a failing source is
    /// not called again by every request (negative caching). Default: off,
    /// errors are never cached.
    #[must_use]
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// Number of map shards, rounded up to a power of two. Default: 4 per
    /// core, at least 16, at most 1,024.
    #[must_use]
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Seeds the hash of keys, so that caches built with the same seed hash
    /// every key alike and, given the same requests on one thread, make the
    /// same decisions: for reproducible benchmarks and tests. Default: a
    /// seed drawn per process (hashbrown's foldhash), so hit ratios move a
    /// little between runs where the frequency sketch's collisions matter.
    /// A seed that others know lets them choose keys that collide in the map
    /// and the sketch: leave it unset for keys that come from outside.
    #[must_use]
    pub fn hash_seed(mut self, seed: u64) -> Self {
        self.hash_seed = Some(seed);
        self
    }

    /// The clock that expiry and refresh read. Default: the system clock.
    /// Tests pass a `ManualClock`, or a `TokioClock` under `tokio::time::pause`.
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Adds a listener that receives every [`Event`], synchronously, on the
    /// thread that caused it (a hit, a miss, a finished load, a removal).
    /// Keep it short: it runs on the lookup path. Default: none.
    #[must_use]
    pub fn listener(mut self, listener: impl Listener<Event>) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Checks the settings and builds the cache.
    pub fn build(self) -> Result<Cache<K, V>, ConfigError> {
        self.validate()?;
        Ok(Cache::from_builder(self))
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let Some(max) = self.max_capacity else {
            return Err(ConfigError::new(
                "max_capacity",
                "must be set: a cache is bounded by an entry count or, with a weigher, a total weight",
            ));
        };
        check_nonzero("max_capacity", max)?;
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if max > MAX_CAPACITY {
            return Err(ConfigError::new(
                "max_capacity",
                format!("must be at most {MAX_CAPACITY}, got {max}"),
            ));
        }
        for (field, value) in [
            ("time_to_live", self.time_to_live),
            ("time_to_idle", self.time_to_idle),
            ("negative_ttl", self.negative_ttl),
        ] {
            if let Some(d) = value {
                check_positive_duration(field, d)?;
            }
        }
        if let Some(shards) = self.shards
            && !(1..=1024).contains(&shards)
        {
            return Err(ConfigError::new(
                "shards",
                format!("must be between 1 and 1024, got {shards}"),
            ));
        }
        Ok(())
    }
}

/// The largest `max_capacity`: 2^48 units of weight.
pub(crate) const MAX_CAPACITY: u64 = 1 << 48;
