//! The builders of the direct and the keyed limiter.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::config::check_nonzero;
use palisade_core::{ConfigError, Listeners, SharedClock, SharedSleeper, duration_to_nanos};

use crate::clock::LimiterClock;
use crate::event::Event;
use crate::keyed::{KeyedRateLimiter, QuotaFn};
use crate::limiter::RateLimiter;
use crate::quota::Quota;

/// Default of [`RateLimiterBuilder::max_wait`]: 10 s.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(10);
/// Default of [`KeyedRateLimiterBuilder::max_keys`]: 100,000.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// The settings both builders share: name, clock, listeners and adapters.
pub(crate) struct Common {
    pub(crate) name: Arc<str>,
    pub(crate) clock: Option<SharedClock>,
    pub(crate) listeners: Listeners<Event>,
    #[cfg(feature = "otel")]
    pub(crate) otel: Option<palisade_core::telemetry::MeterSource>,
    #[cfg(feature = "tracing")]
    pub(crate) tracing: bool,
}

impl Common {
    pub(crate) fn new() -> Self {
        Self {
            name: Arc::from("default"),
            clock: None,
            listeners: Listeners::new(),
            #[cfg(feature = "otel")]
            otel: None,
            #[cfg(feature = "tracing")]
            tracing: false,
        }
    }

    /// Checks the name and adds the adapters asked for.
    pub(crate) fn finish(self) -> Result<(Arc<str>, LimiterClock, Listeners<Event>), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        #[allow(unused_mut)]
        let mut listeners = self.listeners;
        #[cfg(feature = "tracing")]
        if self.tracing {
            listeners.push(Arc::new(crate::tracing_listener::TracingListener {
                name: Arc::clone(&self.name),
            }));
        }
        #[cfg(feature = "otel")]
        if let Some(source) = self.otel {
            listeners.push(Arc::new(crate::telemetry::OtelListener::new(
                source, &self.name,
            )));
        }
        let clock = self
            .clock
            .map_or_else(LimiterClock::default, LimiterClock::Shared);
        Ok((self.name, clock, listeners))
    }
}

macro_rules! common_methods {
    () => {
        /// The instance name in telemetry (`palisade.instance`) and in
        /// `tracing` events. Default: `"default"`; must not be empty.
        pub fn name(mut self, name: impl Into<std::sync::Arc<str>>) -> Self {
            self.common.name = name.into();
            self
        }

        /// The clock the limit is measured on (default: the system clock, or
        /// `QuantaClock` with the `quanta` feature). Tests pass a `ManualClock`.
        pub fn clock(mut self, clock: palisade_core::SharedClock) -> Self {
            self.common.clock = Some(clock);
            self
        }

        /// Adds a listener that receives every [`Event`], synchronously, on
        /// the thread that caused it, after the limiter let go of its locks.
        pub fn listener(mut self, listener: impl palisade_core::Listener<crate::Event>) -> Self {
            self.common.listeners.push(std::sync::Arc::new(listener));
            self
        }
    };
}
pub(crate) use common_methods;

/// Builds a [`RateLimiter`]. The quota is required; everything else has a default.
///
/// ```
/// use palisade_rate_limit::{Quota, RateLimiter};
/// use std::time::Duration;
///
/// let limiter = RateLimiter::builder()
///     .name("search-api")
///     .quota(Quota::per_second(50).burst(10))
///     .max_wait(Duration::from_millis(250))
///     .build()?;
/// assert_eq!(limiter.quota(), Quota::per_second(50).burst(10));
///
/// let err = RateLimiter::builder().quota(Quota::per_second(0)).build().unwrap_err();
/// assert_eq!(err.field(), "quota");
/// # Ok::<(), palisade_rate_limit::ConfigError>(())
/// ```
#[must_use]
pub struct RateLimiterBuilder {
    pub(crate) common: Common,
    quota: Option<Quota>,
    sleeper: Option<SharedSleeper>,
    max_wait: Duration,
}

impl RateLimiterBuilder {
    pub(crate) fn new() -> Self {
        Self {
            common: Common::new(),
            quota: None,
            sleeper: None,
            max_wait: DEFAULT_MAX_WAIT,
        }
    }

    common_methods!();

    /// The quota (required): see [`Quota`].
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = Some(quota);
        self
    }

    /// What `acquire` waits with (default: tokio's timer with the `tokio`
    /// feature, otherwise none, and an `acquire` that must wait fails with
    /// [`Error::NoSleeper`](crate::Error::NoSleeper)). A `ManualClock` is a sleeper too.
    pub fn sleeper(mut self, sleeper: SharedSleeper) -> Self {
        self.sleeper = Some(sleeper);
        self
    }

    /// The longest `acquire` waits: a request that would have to wait longer
    /// is refused at once, without taking a place (default 10 s; zero makes
    /// `acquire` a `check`).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Validates the settings and builds the limiter.
    ///
    /// # Errors
    /// A [`ConfigError`]: `quota` unset or invalid (zero count, zero period,
    /// zero burst, an interval under 1 ns, a burst spanning over 2^62 ns), or
    /// an empty `name`.
    pub fn build(self) -> Result<RateLimiter, ConfigError> {
        let quota = self
            .quota
            .ok_or_else(|| ConfigError::new("quota", "must be set"))?;
        let params = quota.params("quota")?;
        let (name, clock, listeners) = self.common.finish()?;
        #[cfg(feature = "tokio")]
        let sleeper = Some(
            self.sleeper
                .unwrap_or_else(palisade_core::TokioSleeper::shared),
        );
        #[cfg(not(feature = "tokio"))]
        let sleeper = self.sleeper;
        Ok(RateLimiter::from_parts(
            name,
            quota,
            params,
            clock,
            sleeper,
            listeners,
            duration_to_nanos(self.max_wait),
        ))
    }
}

enum QuotaSource<K> {
    Fixed(Quota),
    Fn(QuotaFn<K>),
}

/// Builds a [`KeyedRateLimiter`]: one limit per key, each with its own quota.
///
/// ```
/// use palisade_rate_limit::{KeyedRateLimiter, Quota};
///
/// // Plan tiers: keys starting with "pro-" get 1,000/s, the rest 10/s.
/// let limiter = KeyedRateLimiter::<String>::builder()
///     .name("api-keys")
///     .quota_fn(|key: &String| {
///         if key.starts_with("pro-") { Quota::per_second(1_000) } else { Quota::per_second(10) }
///     })
///     .max_keys(50_000)
///     .build()?;
/// assert_eq!(limiter.check(&"pro-7".to_owned())?.limit(), 1_000);
/// assert_eq!(limiter.check(&"free-3".to_owned())?.limit(), 10);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct KeyedRateLimiterBuilder<K> {
    pub(crate) common: Common,
    quota: Option<QuotaSource<K>>,
    max_keys: usize,
    shards: Option<usize>,
}

impl<K> KeyedRateLimiterBuilder<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    pub(crate) fn new() -> Self {
        Self {
            common: Common::new(),
            quota: None,
            max_keys: DEFAULT_MAX_KEYS,
            shards: None,
        }
    }

    common_methods!();

    /// The same quota for every key. This or [`quota_fn`](Self::quota_fn) is required.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = Some(QuotaSource::Fixed(quota));
        self
    }

    /// The quota of each key, asked when a key is first seen (and again when
    /// it comes back after being dropped, or on
    /// [`refresh_quota`](KeyedRateLimiter::refresh_quota)). A key whose
    /// quota is invalid is refused with [`Error::InvalidQuota`](crate::Error::InvalidQuota) and not stored.
    pub fn quota_fn(mut self, quota: impl Fn(&K) -> Quota + Send + Sync + 'static) -> Self {
        self.quota = Some(QuotaSource::Fn(Arc::new(quota)));
        self
    }

    /// The most keys held at once (default 100,000; at least 1). The bound
    /// holds always: a key whose limit has refilled completely is dropped to
    /// make room, and when every held key is still draining, a new key is
    /// refused ([`KEY_CAPACITY`](crate::KEY_CAPACITY)) rather than dropping a key
    /// that would then get a fresh burst. See [`KeyedRateLimiter`] for the cost.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// How many independently locked shards hold the keys: a power of two,
    /// at most `max_keys` and 1,024 (default: 64, or fewer when `max_keys` is
    /// smaller). Each shard holds `max_keys / shards` keys (the first ones
    /// one more, so the total is `max_keys`); a shard full of draining keys
    /// refuses new keys even if another shard has room.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Validates the settings and builds the limiter.
    ///
    /// # Errors
    /// A [`ConfigError`]: no quota, an invalid fixed `quota`, a zero `max_keys`, `shards` not a power
    /// of two in `1..=min(max_keys, 1024)`, an empty `name`.
    pub fn build(self) -> Result<KeyedRateLimiter<K>, ConfigError> {
        let quota = self
            .quota
            .ok_or_else(|| ConfigError::new("quota", "must be set (or quota_fn)"))?;
        check_nonzero("max_keys", self.max_keys as u64)?;
        let shards = if let Some(s) = self.shards {
            if !s.is_power_of_two() || s > 1024 || s > self.max_keys {
                return Err(ConfigError::new(
                    "shards",
                    format!(
                        "must be a power of two in 1..={}, got {s}",
                        self.max_keys.min(1024)
                    ),
                ));
            }
            s
        } else {
            let mut s = 64;
            while s > self.max_keys {
                s /= 2;
            }
            s
        };
        let quota: QuotaFn<K> = match quota {
            QuotaSource::Fixed(q) => {
                q.params("quota")?;
                Arc::new(move |_: &K| q)
            }
            QuotaSource::Fn(f) => f,
        };
        let (name, clock, listeners) = self.common.finish()?;
        Ok(KeyedRateLimiter::from_parts(
            name,
            quota,
            self.max_keys,
            shards,
            clock,
            listeners,
        ))
    }
}
