//! The builder: every setting of a cache, validated in `build()`.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::config::{check_nonzero, check_positive_duration};
use palisade_core::{ConfigError, SharedClock, SystemClock};

use crate::Cache;
use crate::event::RemovalListener;
use crate::expiry::Expiry;

pub(crate) type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u32 + Send + Sync>;

/// Builds a [`Cache`]: `Cache::builder().max_capacity(10_000).time_to_live(d).build()`.
///
/// Every number states its unit and default. `build()` checks the settings
/// together and names the field of the first one that does not hold.
pub struct CacheBuilder<K, V> {
    pub(crate) name: String,
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
    pub(crate) clock: SharedClock,
    #[cfg(feature = "otel")]
    pub(crate) meter: Option<opentelemetry::metrics::Meter>,
}

impl<K, V> Default for CacheBuilder<K, V> {
    fn default() -> Self {
        Self {
            name: "cache".to_owned(),
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
            clock: SystemClock::shared(),
            #[cfg(feature = "otel")]
            meter: None,
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
            .field("refresh_after", &self.refresh_after)
            .field("max_stale", &self.max_stale)
            .field("soft_timeout", &self.soft_timeout)
            .field("hard_timeout", &self.hard_timeout)
            .finish_non_exhaustive()
    }
}

impl<K, V> CacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The cache's name in telemetry (`palisade.instance`). Default: `"cache"`.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
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

    /// [`LoadingCache`](crate::LoadingCache): once a value is this old, the
    /// next read returns it and reloads it in the background. Must be shorter
    /// than the time to live. Default: off.
    #[must_use]
    pub fn refresh_after(mut self, age: Duration) -> Self {
        self.refresh_after = Some(age);
        self
    }

    /// [`LoadingCache`](crate::LoadingCache), stale-if-error: an expired value
    /// is kept this long past its expiry and served when a reload fails or
    /// outlasts the soft timeout. Default: off.
    #[must_use]
    pub fn stale_if_error(mut self, max_staleness: Duration) -> Self {
        self.max_stale = Some(max_staleness);
        self
    }

    /// [`LoadingCache`](crate::LoadingCache): when a load takes longer than
    /// this and a stale value is at hand, the caller gets the stale value and
    /// the load goes on in the background. Default: off.
    #[must_use]
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.soft_timeout = Some(timeout);
        self
    }

    /// [`LoadingCache`](crate::LoadingCache): a load still running after this
    /// is abandoned and fails with [`LoadError::Timeout`](crate::LoadError::Timeout). Default: off.
    #[must_use]
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.hard_timeout = Some(timeout);
        self
    }

    /// Number of map shards, rounded up to a power of two. Default: 4 per
    /// core, at least 16, at most 1,024.
    #[must_use]
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// The clock that expiry and refresh read. Default: the system clock.
    /// Tests pass a `ManualClock`, or a `TokioClock` under `tokio::time::pause`.
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Records the `otel` instruments with this meter instead of the global
    /// provider's `palisade` meter.
    #[cfg(feature = "otel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
    #[must_use]
    pub fn meter(mut self, meter: opentelemetry::metrics::Meter) -> Self {
        self.meter = Some(meter);
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
            ("refresh_after", self.refresh_after),
            ("stale_if_error", self.max_stale),
            ("soft_timeout", self.soft_timeout),
            ("hard_timeout", self.hard_timeout),
        ] {
            if let Some(d) = value {
                check_positive_duration(field, d)?;
            }
        }
        if let (Some(refresh), Some(ttl)) = (self.refresh_after, self.time_to_live)
            && refresh >= ttl
        {
            return Err(ConfigError::new(
                "refresh_after",
                format!(
                    "must be shorter than time_to_live ({ttl:?}), got {refresh:?}: no value would live long enough to be refreshed"
                ),
            ));
        }
        if let (Some(soft), Some(hard)) = (self.soft_timeout, self.hard_timeout)
            && soft >= hard
        {
            return Err(ConfigError::new(
                "soft_timeout",
                format!("must be shorter than hard_timeout ({hard:?}), got {soft:?}"),
            ));
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
