//! Per-API-key rate limits: in this process, or on Redis (shared by every
//! instance) when its URL is set. The plan is in the key's prefix.

use std::sync::atomic::{AtomicU64, Ordering};

use palisade::core::SharedClock;
use palisade::rate_limit::{
    Decision, Denied, KeyedRateLimiter, Quota, RedisRateLimiter, Unavailable,
};
use serde::Serialize;

/// The quota of an API key: `pro-…` 200 a second (bursts of 100), `free-…`
/// 5 a second (bursts of 5), any other key 20 a second.
pub fn plan(key: &str) -> Quota {
    if key.starts_with("pro-") {
        Quota::per_second(200).burst(100)
    } else if key.starts_with("free-") {
        Quota::per_second(5).burst(5)
    } else {
        Quota::per_second(20).burst(20)
    }
}

/// Why a request was not admitted.
#[derive(Debug)]
pub enum Refusal {
    /// The key's quota is spent: answer `429` with these headers.
    Limited(Denied),
    /// The limit could not be checked (Redis failing, with no local fallback).
    Unavailable(String),
}

/// Where the limits are kept.
enum Backend {
    Local(KeyedRateLimiter<String>),
    Redis(RedisRateLimiter),
}

/// The service's rate limits.
pub struct Limits {
    backend: Backend,
    admitted: AtomicU64,
    limited: AtomicU64,
}

/// Requests admitted and refused so far.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LimitCounts {
    /// Admitted.
    pub admitted: u64,
    /// Refused with `429`.
    pub limited: u64,
}

impl Limits {
    /// Limits kept in this process, for at most 100,000 keys, on `clock`
    /// (default: the system's monotonic clock).
    ///
    /// # Errors
    /// A configuration error from the limiter's builder.
    pub fn local(clock: Option<SharedClock>) -> Result<Self, palisade::core::ConfigError> {
        let mut builder = KeyedRateLimiter::<String>::builder()
            .name("api")
            .quota_fn(|key: &String| plan(key))
            .max_keys(100_000)
            .otel();
        if let Some(clock) = clock {
            builder = builder.clock(clock);
        }
        let limiter = builder.build()?;
        Ok(Self::with(Backend::Local(limiter)))
    }

    /// Limits kept on Redis under `prefix`, shared by every instance; while
    /// Redis cannot answer, each instance limits alone (as if it were one of two).
    ///
    /// # Errors
    /// When Redis cannot be reached at the start.
    pub async fn redis(url: &str, prefix: &str) -> Result<Self, palisade::cqrs::BoxError> {
        let limiter = RedisRateLimiter::builder(prefix)
            .name("api")
            .url(url)
            .quota_fn(plan)
            .on_unavailable(Unavailable::Local { instances: 2 })
            .otel()
            .connect()
            .await?;
        Ok(Self::with(Backend::Redis(limiter)))
    }

    fn with(backend: Backend) -> Self {
        Self {
            backend,
            admitted: AtomicU64::new(0),
            limited: AtomicU64::new(0),
        }
    }

    /// `"in-process"` or `"Redis"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Local(_) => "in-process",
            Backend::Redis(_) => "Redis",
        }
    }

    /// Admits one request of `key`, or says why not.
    ///
    /// # Errors
    /// A [`Refusal`].
    pub async fn check(&self, key: &str) -> Result<Decision, Refusal> {
        let result = match &self.backend {
            Backend::Local(limiter) => {
                limiter
                    .check(&key.to_owned())
                    .map_err(|e| match e.denied() {
                        Some(denied) => Refusal::Limited(*denied),
                        None => Refusal::Unavailable(e.to_string()),
                    })
            }
            Backend::Redis(limiter) => limiter.check(key).await.map_err(|e| match e.denied() {
                Some(denied) => Refusal::Limited(*denied),
                None => Refusal::Unavailable(e.to_string()),
            }),
        };
        match &result {
            Ok(_) => self.admitted.fetch_add(1, Ordering::Relaxed),
            Err(Refusal::Limited(_)) => self.limited.fetch_add(1, Ordering::Relaxed),
            Err(Refusal::Unavailable(_)) => 0,
        };
        result
    }

    /// The counts now.
    pub fn counts(&self) -> LimitCounts {
        LimitCounts {
            admitted: self.admitted.load(Ordering::Relaxed),
            limited: self.limited.load(Ordering::Relaxed),
        }
    }
}
