//! One limit shared by many processes, on Redis (feature `redis`).
//!
//! Each check is one round trip: a Lua script runs the GCRA on the key's
//! theoretical arrival time, atomically, reading Redis's own clock (`TIME`),
//! so the clients' clocks do not matter. The script keeps time in
//! microseconds (what `TIME` gives, and exact in Lua's doubles): the
//! emission interval is rounded *up* to a whole microsecond, so a shared
//! limit never admits more than its quota. A key expires once its bucket has
//! refilled, so Redis holds only the keys that are draining.
//!
//! When Redis fails a call (an error, or no answer within the timeout), the
//! limiter does what [`Unavailable`] says, and does not ask Redis again
//! before a back-off (core's [`Backoff`], with jitter) has passed, measured
//! on its clock; the first call after it tries Redis again, and a success
//! ends the back-off. redis' `ConnectionManager` reconnects by itself. A
//! check that timed out may still reach Redis and be counted there once the
//! server answers again: the shared limit then errs towards refusing, never
//! towards admitting more than the quota.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{Backoff, ConfigError, Jitter, Listeners, SharedSleeper, TokioSleeper};
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::clock::LimiterClock;
use crate::config::Common;
use crate::decision::{Decision, Denied, EXHAUSTED, Error};
use crate::event::Event;
use crate::keyed::KeyedRateLimiter;
use crate::limiter::check_size;
use crate::quota::{Params, Quota};

/// `KEYS[1]` the key; `ARGV` emission interval (µs), burst, n.
/// Returns `{admitted (1|0), retry after (µs), TAT − now (µs)}`.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local emission = tonumber(ARGV[1])
local tolerance = emission * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new = tat + emission * tonumber(ARGV[3])
local due = new - tolerance
if due > now then
  return {0, due - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.floor((new - now) / 1000) + 1)
return {1, 0, new - now}
";

/// The reason in [`Event::Rejected`] of a refusal because Redis could not
/// answer (with [`Unavailable::FailClosed`]).
pub const UNAVAILABLE: &str = "unavailable";

/// What a [`RedisRateLimiter`] does while Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// Admit every request: availability over the limit.
    FailOpen,
    /// Refuse every request with [`RedisLimitError`]: the limit over availability.
    FailClosed,
    /// Limit each key locally, in this process, to its quota divided by the
    /// number of instances expected to share it (count and burst, each at
    /// least 1), so that together they stay near the shared quota.
    Local {
        /// How many processes share the limit.
        instances: u32,
    },
}

/// The error of a [`RedisRateLimiter`] check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisLimitError {
    /// The limit's answer: refused, too many at once, or an invalid quota.
    #[error(transparent)]
    Limit(#[from] Error),
    /// Redis failed this call (with [`Unavailable::FailClosed`]).
    #[error("redis failed the rate limit check")]
    Backend(#[source] redis::RedisError),
    /// Redis did not answer within the timeout (with [`Unavailable::FailClosed`]).
    #[error("redis did not answer the rate limit check within {0:?}")]
    TimedOut(Duration),
    /// Redis failed recently and is not asked again before its back-off
    /// ends (with [`Unavailable::FailClosed`]).
    #[error("redis is unavailable; it is asked again in {retry_after:?}")]
    Unavailable {
        /// When Redis is asked again.
        retry_after: Duration,
    },
}

impl RedisLimitError {
    /// The refusal, if the limit refused.
    pub fn denied(&self) -> Option<&Denied> {
        match self {
            Self::Limit(e) => e.denied(),
            _ => None,
        }
    }
}

type QuotaFn = Arc<dyn Fn(&str) -> Quota + Send + Sync>;

/// A rate limit per key shared by every process that uses the same Redis and
/// prefix: GCRA in a server-side script, one round trip a check.
///
/// ```no_run
/// use palisade_rate_limit::{Quota, RedisRateLimiter, Unavailable};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = RedisRateLimiter::builder("rl:api:")
///     .url("redis://127.0.0.1:6379")
///     .quota(Quota::per_second(100))
///     .on_unavailable(Unavailable::Local { instances: 4 })
///     .connect()
///     .await?;
/// match limiter.check("client-42").await {
///     Ok(decision) => println!("{} left", decision.remaining()),
///     Err(e) => println!("refused: {e}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisRateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    connection: ConnectionManager,
    script: redis::Script,
    prefix: String,
    quota: QuotaFn,
    on_unavailable: Unavailable,
    local: Option<KeyedRateLimiter<String>>,
    timeout: Duration,
    sleeper: SharedSleeper,
    backoff: Backoff,
    down: Mutex<Down>,
    name: Arc<str>,
    clock: LimiterClock,
    listeners: Listeners<Event>,
}

#[derive(Debug, Default)]
struct Down {
    /// Failures in a row.
    failures: u32,
    /// Redis is not asked before this time (ns on the limiter's clock).
    retry_at: u64,
}

impl RedisRateLimiter {
    /// A builder for keys under `prefix` (the Redis key is `{prefix}{key}`).
    pub fn builder(prefix: impl Into<String>) -> RedisRateLimiterBuilder {
        RedisRateLimiterBuilder {
            common: Common::new(),
            prefix: prefix.into(),
            url: None,
            client: None,
            connection: None,
            quota: None,
            on_unavailable: Unavailable::FailClosed,
            timeout: Duration::from_millis(250),
            sleeper: None,
            backoff: Backoff::exponential(Duration::from_millis(100))
                .max(Duration::from_secs(5))
                .jitter(Jitter::Equal),
            local_max_keys: crate::DEFAULT_MAX_KEYS,
        }
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Admits one request for `key`, or refuses it.
    ///
    /// # Errors
    /// As [`check_n`](Self::check_n).
    pub async fn check(&self, key: &str) -> Result<Decision, RedisLimitError> {
        self.check_n(key, 1).await
    }

    /// Admits `n` requests for `key` at once, or none; `n = 0` is admitted
    /// without asking Redis, with a decision showing the quota's whole burst
    /// (as does every admission by [`Unavailable::FailOpen`]).
    ///
    /// # Errors
    /// [`RedisLimitError::Limit`] with [`Error::Denied`] when the shared quota
    /// is spent (or the local one, while Redis is down, with
    /// [`Unavailable::Local`]), [`Error::InsufficientCapacity`] when `n` is
    /// over the burst, [`Error::InvalidQuota`] when the quota is invalid for
    /// Redis (under 1 µs per request); with [`Unavailable::FailClosed`],
    /// `Backend`, `TimedOut` or `Unavailable` while Redis cannot answer.
    pub async fn check_n(&self, key: &str, n: u32) -> Result<Decision, RedisLimitError> {
        let quota = (self.inner.quota)(key);
        let params = quota.params("quota").map_err(Error::InvalidQuota)?;
        if n == 0 {
            return Ok(Decision::new(0, 0, params));
        }
        check_size(n, params)?;
        if params.emission < 1_000 {
            return Err(Error::InvalidQuota(palisade_core::ConfigError::new(
                "quota",
                "Redis counts in microseconds: at most one request per microsecond",
            ))
            .into());
        }
        let now = self.inner.clock.now();
        {
            let mut down = self.inner.down.lock();
            if now < down.retry_at {
                let wait = Duration::from_nanos(down.retry_at - now);
                drop(down);
                return self.unavailable(key, n, None, wait);
            }
            if down.failures > 0 {
                // Redis was failing and its back-off is over: this check is
                // the one probe; the others keep the failure mode until it
                // has its answer (at most the timeout).
                down.retry_at =
                    now.saturating_add(palisade_core::duration_to_nanos(self.inner.timeout));
            }
        }
        let emission_us = params.emission.div_ceil(1_000);
        let mut connection = self.inner.connection.clone();
        let mut invocation = self.inner.script.key(format!("{}{key}", self.inner.prefix));
        invocation.arg(emission_us).arg(params.burst).arg(n);
        let call = invocation.invoke_async::<(i64, i64, i64)>(&mut connection);
        match palisade_core::timeout(&*self.inner.sleeper, self.inner.timeout, call).await {
            Ok(Ok((admitted, retry_us, ahead_us))) => {
                {
                    let mut down = self.inner.down.lock();
                    down.failures = 0;
                    down.retry_at = 0;
                }
                let shared = Params {
                    emission: emission_us * 1_000,
                    burst: params.burst,
                };
                let decision = Decision::new(0, ahead_us.max(0) as u64 * 1_000, shared);
                if admitted == 1 {
                    self.inner.listeners.emit_with(|| Event::Acquired {
                        permits: n,
                        waited: None,
                    });
                    Ok(decision)
                } else {
                    let retry_after = retry_us.max(0) as u64 * 1_000;
                    self.inner.listeners.emit_with(|| Event::Rejected {
                        permits: n,
                        reason: EXHAUSTED,
                        retry_after: Duration::from_nanos(retry_after),
                    });
                    Err(Error::Denied(Denied::new(EXHAUSTED, retry_after, decision)).into())
                }
            }
            Ok(Err(e)) => {
                let wait = self.failed();
                self.unavailable(key, n, Some(RedisLimitError::Backend(e)), wait)
            }
            Err(_) => {
                let wait = self.failed();
                let timeout = self.inner.timeout;
                self.unavailable(key, n, Some(RedisLimitError::TimedOut(timeout)), wait)
            }
        }
    }

    /// Counts a failure and starts its back-off; returns its length.
    fn failed(&self) -> Duration {
        let mut down = self.inner.down.lock();
        down.failures = down.failures.saturating_add(1);
        let wait = self.inner.backoff.delay(down.failures);
        down.retry_at = self
            .inner
            .clock
            .now()
            .saturating_add(palisade_core::duration_to_nanos(wait));
        let failures = down.failures;
        drop(down);
        self.inner
            .listeners
            .emit_with(|| Event::BackendUnavailable { failures });
        wait
    }

    /// The answer while Redis cannot give one, reported to the listeners
    /// as any answer is (a fail-closed refusal with reason [`UNAVAILABLE`]).
    fn unavailable(
        &self,
        key: &str,
        n: u32,
        error: Option<RedisLimitError>,
        retry_after: Duration,
    ) -> Result<Decision, RedisLimitError> {
        let result = match self.inner.on_unavailable {
            Unavailable::FailOpen => {
                let params = (self.inner.quota)(key)
                    .params("quota")
                    .map_err(Error::InvalidQuota)?;
                Ok(Decision::new(0, 0, params))
            }
            Unavailable::Local { .. } => match &self.inner.local {
                // A request over the local share's burst is not impossible,
                // only undecidable until Redis answers again.
                Some(local) => match local.check_n(&key.to_owned(), n) {
                    Err(Error::InsufficientCapacity { .. }) => {
                        Err(RedisLimitError::Unavailable { retry_after })
                    }
                    other => other.map_err(Into::into),
                },
                None => Err(error.unwrap_or(RedisLimitError::Unavailable { retry_after })),
            },
            Unavailable::FailClosed => {
                Err(error.unwrap_or(RedisLimitError::Unavailable { retry_after }))
            }
        };
        match &result {
            Ok(_) => self.inner.listeners.emit_with(|| Event::Acquired {
                permits: n,
                waited: None,
            }),
            Err(e) => self.inner.listeners.emit_with(|| Event::Rejected {
                permits: n,
                reason: e.denied().map_or(UNAVAILABLE, |d| d.rejected().reason()),
                retry_after: e.denied().map_or(retry_after, Denied::retry_after),
            }),
        }
        result
    }
}

impl fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("name", &self.inner.name)
            .field("prefix", &self.inner.prefix)
            .field("on_unavailable", &self.inner.on_unavailable)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisRateLimiter`]: where Redis is, the quota, and what to do
/// when Redis cannot answer.
#[must_use]
pub struct RedisRateLimiterBuilder {
    pub(crate) common: Common,
    prefix: String,
    url: Option<String>,
    client: Option<redis::Client>,
    connection: Option<ConnectionManager>,
    quota: Option<(QuotaFn, Option<Quota>)>,
    on_unavailable: Unavailable,
    timeout: Duration,
    sleeper: Option<SharedSleeper>,
    backoff: Backoff,
    local_max_keys: usize,
}

impl RedisRateLimiterBuilder {
    crate::config::common_methods!();

    /// Where Redis is: `redis://host:port/db`, or `rediss://…` for TLS
    /// (feature `redis-tls`). One of `url`, `client` and
    /// `connection_manager` is required.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// An existing client (its connection settings; TLS with feature
    /// `redis-tls` and `redis::Client::build_with_tls`, for a private authority).
    pub fn client(mut self, client: redis::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// An existing connection manager (default: one made from the client or
    /// URL, with a 1 s connect timeout and 2 retries per reconnection).
    pub fn connection_manager(mut self, connection: ConnectionManager) -> Self {
        self.connection = Some(connection);
        self
    }

    /// The same quota for every key. This or [`quota_fn`](Self::quota_fn) is required.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = Some((Arc::new(move |_: &str| quota), Some(quota)));
        self
    }

    /// The quota of each key, asked on every check.
    pub fn quota_fn(mut self, quota: impl Fn(&str) -> Quota + Send + Sync + 'static) -> Self {
        self.quota = Some((Arc::new(quota), None));
        self
    }

    /// What to do while Redis cannot answer (default [`Unavailable::FailClosed`]).
    pub fn on_unavailable(mut self, on_unavailable: Unavailable) -> Self {
        self.on_unavailable = on_unavailable;
        self
    }

    /// How long a check waits for Redis (default 250 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What the timeout waits on (default: tokio's timer).
    pub fn sleeper(mut self, sleeper: SharedSleeper) -> Self {
        self.sleeper = Some(sleeper);
        self
    }

    /// How long Redis is left alone after failures in a row, by their count
    /// (default: from 100 ms, doubling to 5 s, equal jitter).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The most keys the local fallback of [`Unavailable::Local`] holds (default 100,000).
    pub fn local_max_keys(mut self, max_keys: usize) -> Self {
        self.local_max_keys = max_keys;
        self
    }

    /// Checks the settings and connects.
    ///
    /// # Errors
    /// [`RedisConnectError::Config`] naming the method: no quota or an
    /// invalid fixed one (`quota`), no Redis (`url`), a timeout under 1 ms
    /// (`timeout`), a bad `backoff`, `Local` with 0 instances
    /// (`on_unavailable`), a zero `local_max_keys`, an empty `name`;
    /// [`RedisConnectError::Redis`] if Redis cannot be reached now.
    pub async fn connect(self) -> Result<RedisRateLimiter, RedisConnectError> {
        let (quota, fixed) = self
            .quota
            .ok_or_else(|| ConfigError::new("quota", "must be set (or quota_fn)"))?;
        if let Some(q) = fixed {
            q.params("quota")?;
        }
        if self.timeout < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "timeout",
                format!("must be at least 1 ms, got {:?}", self.timeout),
            )
            .into());
        }
        self.backoff.validate("backoff")?;
        palisade_core::config::check_nonzero("local_max_keys", self.local_max_keys as u64)?;
        let local = match self.on_unavailable {
            Unavailable::Local { instances: 0 } => {
                return Err(
                    ConfigError::new("on_unavailable", "Local needs at least 1 instance").into(),
                );
            }
            Unavailable::Local { instances } => {
                let quota = Arc::clone(&quota);
                let mut local = KeyedRateLimiter::<String>::builder()
                    .quota_fn(move |key: &String| divide(quota(key), instances))
                    .max_keys(self.local_max_keys)
                    .name(format!("{}-local", self.common.name));
                if let Some(clock) = &self.common.clock {
                    local = local.clock(clock.clone());
                }
                Some(local.build()?)
            }
            _ => None,
        };
        let client = match (self.client, &self.url) {
            (Some(client), _) => Some(client),
            (None, Some(url)) => Some(
                redis::Client::open(url.as_str())
                    .map_err(|e| ConfigError::new("url", format!("not a Redis URL: {e}")))?,
            ),
            (None, None) => None,
        };
        let connection = match (self.connection, client) {
            (Some(connection), _) => connection,
            (None, Some(client)) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_secs(2));
                client.get_connection_manager_with_config(config).await?
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "url",
                    "neither a URL, a client nor a connection manager was given",
                )
                .into());
            }
        };
        let (name, clock, listeners) = self.common.finish()?;
        Ok(RedisRateLimiter {
            inner: Arc::new(Inner {
                connection,
                script: redis::Script::new(GCRA),
                prefix: self.prefix,
                quota,
                on_unavailable: self.on_unavailable,
                local,
                timeout: self.timeout,
                sleeper: self.sleeper.unwrap_or_else(TokioSleeper::shared),
                backoff: self.backoff,
                down: Mutex::new(Down::default()),
                name,
                clock,
                listeners,
            }),
        })
    }
}

/// A quota shared by `instances`: count and burst divided, each at least 1.
fn divide(quota: Quota, instances: u32) -> Quota {
    Quota::new((quota.count() / instances).max(1), quota.period())
        .burst((quota.burst_size() / instances).max(1))
}

/// Why [`RedisRateLimiterBuilder::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisConnectError {
    /// A setting is out of bounds; names the builder method.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Redis could not be reached.
    #[error("cannot connect to redis")]
    Redis(#[from] redis::RedisError),
}
