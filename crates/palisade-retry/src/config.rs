//! The builder and the validated configuration of a retry.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::config::{check_nonzero, check_positive_duration};
use palisade_core::{
    Backoff, ConfigError, Jitter, Listener, SharedClock, SharedSleeper, TokioClock, TokioSleeper,
};

use crate::budget::{BudgetChoice, RetryBudget};
use crate::event::{Event, Listening};
use crate::retry::{Inner, Retry};

/// Builds a [`Retry`]; see [`Retry::builder`]. Every setting has its default
/// on its method; [`build`](Self::build) checks them all.
#[must_use]
pub struct RetryBuilder {
    pub(crate) name: Arc<str>,
    max_attempts: u32,
    backoff: Backoff,
    max_delay: Duration,
    deadline: Option<Duration>,
    attempt_timeout: Option<Duration>,
    budget: BudgetChoice,
    jitter_seed: Option<u64>,
    clock: Option<SharedClock>,
    sleeper: Option<SharedSleeper>,
    pub(crate) listening: Listening,
}

impl RetryBuilder {
    pub(crate) fn new() -> Self {
        Self {
            name: Arc::from("default"),
            max_attempts: 3,
            backoff: Backoff::exponential(Duration::from_millis(100)).jitter(Jitter::Full),
            max_delay: Duration::from_secs(10),
            deadline: None,
            attempt_timeout: None,
            budget: BudgetChoice::Default,
            jitter_seed: None,
            clock: None,
            sleeper: None,
            listening: Listening::new(),
        }
    }

    /// The instance name in telemetry (`palisade.instance`) and `tracing`
    /// events (default `"default"`; must not be empty).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The most attempts a call makes, the first included (default 3: one
    /// call and two retries). 1 turns retries off.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The delays between attempts: `backoff.delay(n)` before retry `n`
    /// (default exponential from 100 ms, factor 2, full jitter). Any kind and
    /// jitter of [`Backoff`]; [`Jitter::Decorrelated`] grows each delay from the
    /// one actually waited before.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The longest wait between two attempts, whatever sets it: the backoff
    /// (capped before its jitter is drawn, so jittered delays stay spread
    /// below the cap), or a result's `Retry-After` (default 10 s; zero
    /// retries at once).
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self
    }

    /// The most time a call takes, attempts and delays together (default:
    /// none). A retry whose delay would end at or past it is not started, and
    /// an attempt is given no more than the time left (see [`Attempt::remaining`](crate::Attempt::remaining)).
    /// Reading the deadline costs a clock read per call.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The most time one attempt takes before it is dropped and counted a
    /// failure (default: none). Waits through the retry's sleeper; an attempt
    /// with a timeout allocates its timer (one boxed sleep).
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Shares `budget` with every other user of it (default: a budget of this
    /// retry's own, shared by its clones, with Finagle's defaults: 20 % of the
    /// calls of the last 10 s plus 10 retries per second).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = BudgetChoice::Shared(budget);
        self
    }

    /// No budget: retries are limited only by the attempts and the deadline.
    /// Under a full outage every caller then makes every attempt.
    pub fn no_budget(mut self) -> Self {
        self.budget = BudgetChoice::None;
        self
    }

    /// Draws the jitter from a generator seeded with `seed`, so a schedule can
    /// be replayed (default: a generator seeded from the system).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// The clock deadlines and the default budget read (default: tokio's
    /// clock, like the default sleeper, so both follow `tokio::time::pause`).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// What delays and timeouts wait on (default: tokio's timer).
    pub fn sleeper(mut self, sleeper: SharedSleeper) -> Self {
        self.sleeper = Some(sleeper);
        self
    }

    /// Adds a listener for this instance's [`Event`]s.
    pub fn listener(mut self, listener: impl Listener<Event>) -> Self {
        self.listening.push(listener);
        self
    }

    /// Checks every setting and builds the retry.
    pub fn build(self) -> Result<Retry, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        check_nonzero("max_attempts", u64::from(self.max_attempts))?;
        self.backoff.validate("backoff")?;
        if let Some(deadline) = self.deadline {
            check_positive_duration("deadline", deadline)?;
        }
        if let Some(timeout) = self.attempt_timeout {
            check_positive_duration("attempt_timeout", timeout)?;
        }
        let clock = self.clock.unwrap_or_else(TokioClock::shared);
        let budget = self.budget.resolve(&clock)?;
        let listeners = self.listening.build(&self.name);
        Ok(Retry::from_inner(Inner {
            name: self.name,
            max_attempts: self.max_attempts,
            // The cap goes in before the jitter, so jittered delays stay spread
            // below it; the final `min` in the loop is for Retry-After.
            backoff: self.backoff.capped_at(self.max_delay),
            max_delay: self.max_delay,
            deadline: self.deadline,
            attempt_timeout: self.attempt_timeout,
            budget,
            rng: self
                .jitter_seed
                .map(|seed| parking_lot::Mutex::new(fastrand::Rng::with_seed(seed))),
            clock,
            sleeper: self.sleeper.unwrap_or_else(TokioSleeper::shared),
            listeners,
        }))
    }
}

impl std::fmt::Debug for RetryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBuilder")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("max_delay", &self.max_delay)
            .field("deadline", &self.deadline)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish_non_exhaustive()
    }
}
