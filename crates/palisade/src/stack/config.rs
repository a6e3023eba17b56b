//! The stack's builder and its presets.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::{ConfigError, SharedClock, SharedSleeper, TokioSleeper};

use super::{Parts, Stack};
use crate::bulkhead::{Bulkhead, BulkheadBuilder};
use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerBuilder, SlidingWindow};
use crate::rate_limit::{Quota, RateLimiter, RateLimiterBuilder};
use crate::retry::{Backoff, Jitter, Retry, RetryBuilder};

/// Builds a [`Stack`]; see [`Stack::builder`] and the presets.
///
/// Each part is given as its own crate's builder, so every setting of the
/// pattern is there; [`build`](Self::build) gives each the stack's
/// [`name`](Self::name), and its [`clock`](Self::clock) and
/// [`sleeper`](Self::sleeper) when set, then builds them all. A part left out
/// (or removed with `no_…`) costs nothing per call.
#[must_use]
pub struct StackBuilder {
    name: Arc<str>,
    rate_limiter: Option<RateLimiterBuilder>,
    total_timeout: Option<Duration>,
    retry: Option<RetryBuilder>,
    circuit_breaker: Option<CircuitBreakerBuilder>,
    bulkhead: Option<BulkheadBuilder>,
    attempt_timeout: Option<Duration>,
    clock: Option<SharedClock>,
    sleeper: Option<SharedSleeper>,
}

impl Stack {
    /// A stack for calls to an HTTP dependency, after Microsoft's
    /// `AddStandardResilienceHandler`:
    ///
    /// | part | setting | why |
    /// |---|---|---|
    /// | rate limit | none | a rate is the dependency's contract: set its quota with [`rate_limiter`](StackBuilder::rate_limiter) |
    /// | total timeout | 30 s | what a caller waits for at most, retries included |
    /// | retry | 4 attempts, exponential from 2 s with full jitter, capped at 10 s; the default budget (20 % of calls + 10/s) | transient errors pass in seconds; the budget keeps an outage from being multiplied by 4 |
    /// | circuit breaker | a 30 s time window, 100 calls at least, opens at 10 % failures, open 5 s | fails fast during an outage, probes again soon |
    /// | bulkhead | 1000 calls at once, no waiting | a slow dependency cannot take every task of the service |
    /// | attempt timeout | 10 s | one hung connection does not eat the whole 30 s |
    pub fn http_client(name: impl Into<Arc<str>>) -> StackBuilder {
        StackBuilder::new()
            .name(name)
            .total_timeout(Duration::from_secs(30))
            .retry(
                Retry::builder().max_attempts(4).backoff(
                    Backoff::exponential(Duration::from_secs(2))
                        .max(Duration::from_secs(10))
                        .jitter(Jitter::Full),
                ),
            )
            .circuit_breaker(
                CircuitBreaker::builder()
                    .sliding_window(SlidingWindow::time(Duration::from_secs(30)))
                    .minimum_calls(100)
                    .failure_rate_threshold(0.1)
                    .open_duration(Duration::from_secs(5)),
            )
            .bulkhead(Bulkhead::builder().max_concurrent_calls(1000))
            .attempt_timeout(Duration::from_secs(10))
    }

    /// A stack for calls to a database through a connection pool of about
    /// ten connections:
    ///
    /// | part | setting | why |
    /// |---|---|---|
    /// | rate limit | none | |
    /// | total timeout | 5 s | a query path that needs more has a problem a retry will not solve |
    /// | retry | 3 attempts, exponential from 50 ms with full jitter, capped at 1 s; the default budget | failovers and dropped connections heal in a second; classify what is transient with [`call_with`](Stack::call_with) (a unique-key violation is not) |
    /// | circuit breaker | the last 20 calls, 20 at least, opens at 50 % failures, open 10 s | a database that is down stays down for a while; do not pile on |
    /// | bulkhead | 10 calls at once, waiting up to 1 s in FIFO order | as many as the pool has connections: callers queue briefly instead of the pool |
    /// | attempt timeout | 2 s | a statement that runs longer is stuck on a lock or a dead connection |
    pub fn database_client(name: impl Into<Arc<str>>) -> StackBuilder {
        StackBuilder::new()
            .name(name)
            .total_timeout(Duration::from_secs(5))
            .retry(
                Retry::builder().max_attempts(3).backoff(
                    Backoff::exponential(Duration::from_millis(50))
                        .max(Duration::from_secs(1))
                        .jitter(Jitter::Full),
                ),
            )
            .circuit_breaker(
                CircuitBreaker::builder()
                    .sliding_window(SlidingWindow::count(20))
                    .minimum_calls(20)
                    .failure_rate_threshold(0.5)
                    .open_duration(Duration::from_secs(10)),
            )
            .bulkhead(
                Bulkhead::builder()
                    .max_concurrent_calls(10)
                    .max_wait(Duration::from_secs(1)),
            )
            .attempt_timeout(Duration::from_secs(2))
    }

    /// A stack around a server's own handlers (a tower layer on the router):
    ///
    /// | part | setting | why |
    /// |---|---|---|
    /// | rate limit | 1000 requests per second, bursts of 100, no waiting | what the service is sized for: more is refused (`429`) before it costs anything |
    /// | total timeout | 30 s | no request holds its resources for ever |
    /// | retry | none | a server does not retry its own handler; its callers decide |
    /// | circuit breaker | none | a handler's failures are the service's own, not a dependency to cut off |
    /// | bulkhead | 500 requests at once, no waiting | sheds load when handlers slow down, instead of queueing until memory runs out |
    /// | attempt timeout | none | with one attempt the total timeout is the attempt's |
    pub fn inbound_server(name: impl Into<Arc<str>>) -> StackBuilder {
        StackBuilder::new()
            .name(name)
            .rate_limiter(
                RateLimiter::builder()
                    .quota(Quota::per_second(1000).burst(100))
                    .max_wait(Duration::ZERO),
            )
            .total_timeout(Duration::from_secs(30))
            .bulkhead(Bulkhead::builder().max_concurrent_calls(500))
    }
}

impl StackBuilder {
    pub(crate) fn new() -> Self {
        Self {
            name: Arc::from("default"),
            rate_limiter: None,
            total_timeout: None,
            retry: None,
            circuit_breaker: None,
            bulkhead: None,
            attempt_timeout: None,
            clock: None,
            sleeper: None,
        }
    }

    /// The stack's name, given to every part as its instance name in
    /// telemetry and `tracing` events, over the part builder's own (default
    /// `"default"`; must not be empty).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The rate limiter, outermost: a request over the quota is refused
    /// before it costs anything, or waits up to the limiter's `max_wait`
    /// (before the total timeout starts). Default: none.
    pub fn rate_limiter(mut self, limiter: RateLimiterBuilder) -> Self {
        self.rate_limiter = Some(limiter);
        self
    }

    /// Removes the rate limiter.
    pub fn no_rate_limiter(mut self) -> Self {
        self.rate_limiter = None;
        self
    }

    /// The longest a call may take, every attempt and every delay between
    /// them included (longer than zero). Default: none.
    pub fn total_timeout(mut self, limit: Duration) -> Self {
        self.total_timeout = Some(limit);
        self
    }

    /// Removes the total timeout.
    pub fn no_total_timeout(mut self) -> Self {
        self.total_timeout = None;
        self
    }

    /// The retry, outside the breaker: each attempt goes through the breaker,
    /// the bulkhead and the attempt timeout; a rejection by either is not
    /// retried. Its budget is made once, in `build()`, and shared by every
    /// clone of the stack. Default: none.
    pub fn retry(mut self, retry: RetryBuilder) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Removes the retry: one attempt per call.
    pub fn no_retry(mut self) -> Self {
        self.retry = None;
        self
    }

    /// The circuit breaker, inside the retry: it sees every attempt, and an
    /// attempt that timed out is a failure. Default: none.
    pub fn circuit_breaker(mut self, breaker: CircuitBreakerBuilder) -> Self {
        self.circuit_breaker = Some(breaker);
        self
    }

    /// Removes the circuit breaker.
    pub fn no_circuit_breaker(mut self) -> Self {
        self.circuit_breaker = None;
        self
    }

    /// The bulkhead, inside the breaker: an attempt the breaker refuses takes
    /// no slot, and one that holds a slot is bounded by the attempt timeout.
    /// Default: none.
    pub fn bulkhead(mut self, bulkhead: BulkheadBuilder) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// Removes the bulkhead.
    pub fn no_bulkhead(mut self) -> Self {
        self.bulkhead = None;
        self
    }

    /// The longest one attempt may take, inside the bulkhead (longer than
    /// zero, shorter than the total timeout). A timed-out attempt is a
    /// failure for the breaker and is retried. Default: none.
    pub fn attempt_timeout(mut self, limit: Duration) -> Self {
        self.attempt_timeout = Some(limit);
        self
    }

    /// Removes the attempt timeout.
    pub fn no_attempt_timeout(mut self) -> Self {
        self.attempt_timeout = None;
        self
    }

    /// The clock given to every part (default: each part's own). With the
    /// same `ManualClock` as [`sleeper`](Self::sleeper), one manual clock
    /// drives the whole stack in a test.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// What the timeouts wait with, given to every part too (default: tokio's
    /// timer, which follows `tokio::time::pause`). A `ManualClock` is a
    /// sleeper too. A timeout's limit counts from its call's first wait.
    pub fn sleeper(mut self, sleeper: SharedSleeper) -> Self {
        self.sleeper = Some(sleeper);
        self
    }

    /// Checks every setting and builds every part.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the method: `name` empty, `total_timeout` or
    /// `attempt_timeout` zero, `attempt_timeout` not shorter than
    /// `total_timeout`; or a part builder's own error, naming that builder's
    /// method (`max_attempts`, `failure_rate_threshold`, `quota`, …).
    pub fn build(self) -> Result<Stack, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        for (field, limit) in [
            ("total_timeout", self.total_timeout),
            ("attempt_timeout", self.attempt_timeout),
        ] {
            if let Some(limit) = limit {
                palisade_core::config::check_positive_duration(field, limit)?;
            }
        }
        if let (Some(total), Some(attempt)) = (self.total_timeout, self.attempt_timeout)
            && attempt >= total
        {
            return Err(ConfigError::new(
                "attempt_timeout",
                format!("must be shorter than total_timeout ({total:?}), got {attempt:?}"),
            ));
        }
        let name = self.name;
        let clock = self.clock;
        let sleeper = self.sleeper;
        let rate_limiter = self
            .rate_limiter
            .map(|b| {
                let b = b.name(Arc::clone(&name));
                let b = match &clock {
                    Some(c) => b.clock(Arc::clone(c)),
                    None => b,
                };
                match &sleeper {
                    Some(s) => b.sleeper(Arc::clone(s)),
                    None => b,
                }
                .build()
            })
            .transpose()?;
        let retry = self
            .retry
            .map(|b| {
                let b = b.name(Arc::clone(&name));
                let b = match &clock {
                    Some(c) => b.clock(Arc::clone(c)),
                    None => b,
                };
                match &sleeper {
                    Some(s) => b.sleeper(Arc::clone(s)),
                    None => b,
                }
                .build()
            })
            .transpose()?;
        let circuit_breaker = self
            .circuit_breaker
            .map(|b| {
                let b = b.name(Arc::clone(&name));
                match &clock {
                    Some(c) => b.clock(Arc::clone(c)),
                    None => b,
                }
                .build()
            })
            .transpose()?;
        let bulkhead = self
            .bulkhead
            .map(|b| {
                let b = b.name(Arc::clone(&name));
                let b = match &clock {
                    Some(c) => b.clock(Arc::clone(c)),
                    None => b,
                };
                match &sleeper {
                    Some(s) => b.sleeper(Arc::clone(s)),
                    None => b,
                }
                .build()
            })
            .transpose()?;
        Ok(Stack {
            parts: Arc::new(Parts {
                name,
                rate_limiter,
                total_timeout: self.total_timeout,
                retry,
                circuit_breaker,
                bulkhead,
                attempt_timeout: self.attempt_timeout,
                sleeper: sleeper.unwrap_or_else(TokioSleeper::shared),
            }),
        })
    }
}

impl std::fmt::Debug for StackBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackBuilder")
            .field("name", &self.name)
            .field("rate_limiter", &self.rate_limiter.is_some())
            .field("total_timeout", &self.total_timeout)
            .field("retry", &self.retry.is_some())
            .field("circuit_breaker", &self.circuit_breaker.is_some())
            .field("bulkhead", &self.bulkhead.is_some())
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}
