//! Adaptive limits: a limiter that moves a [`Bulkhead`]'s limit by itself,
//! from the latency and outcome of each call, between a minimum and a maximum.
//!
//! A hand-tuned limit goes stale as the dependency, its hardware and its
//! traffic change. An [`AdaptiveLimiter`] takes the permits of one bulkhead,
//! times each call on its clock, and after each one asks its algorithm for
//! the next limit, which it sets with [`Bulkhead::set_limit`]: so the limit
//! in use is the bulkhead's, in [`Bulkhead::snapshot`], in its `LimitChanged`
//! events and in the `palisade.bulkhead.limit` gauge.
//!
//! - [`Aimd`]: grows by a step while calls succeed in time, shrinks by a
//!   ratio on a failure or a call slower than a timeout. Simple and robust;
//!   needs the timeout set a little above the dependency's unloaded latency.
//! - [`Gradient2`]: Netflix's latency-gradient limit, which needs no timeout:
//!   it shrinks when the latest latency rises above the long-term average.
//! - [`Vegas`]: estimates the calls queued at the dependency from how much
//!   slower they are than the fastest seen, and keeps that queue short.
//!
//! ```
//! use palisade_bulkhead::adaptive::{AdaptiveLimiter, Aimd};
//! use palisade_bulkhead::{Bulkhead, ManualClock, Outcome};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let bulkhead = Bulkhead::builder().max_concurrent_calls(4).build()?;
//! let limiter = AdaptiveLimiter::builder(bulkhead.clone())
//!     .aimd(Aimd::new().timeout(Duration::from_millis(100)).backoff_ratio(0.5))
//!     .min_limit(2)
//!     .max_limit(50)
//!     .clock(clock.shared())
//!     .build()?;
//!
//! // Four calls in flight, answered in 10 ms. Each grows the limit by one
//! // while at least half of it was in flight (4 of 4, then 3 of 5): 6.
//! let permits: Vec<_> = (0..4).map(|_| limiter.try_acquire().unwrap()).collect();
//! clock.advance(Duration::from_millis(10));
//! for permit in permits {
//!     permit.record(Outcome::Success);
//! }
//! assert_eq!(bulkhead.snapshot().limit, 6);
//!
//! // A call slower than the timeout halves it.
//! let slow = limiter.try_acquire()?;
//! clock.advance(Duration::from_millis(150));
//! slow.record(Outcome::Success);
//! assert_eq!(bulkhead.snapshot().limit, 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod aimd;
mod gradient2;
mod vegas;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{
    Classifier, ConfigError, DefaultClassifier, Outcome, SharedClock, SystemClock,
};
use parking_lot::Mutex;

pub use aimd::Aimd;
pub use gradient2::Gradient2;
pub use vegas::Vegas;

use crate::bulkhead::MAX_LIMIT;
use crate::config::check_limit;
use crate::{Bulkhead, CallError, Permit, Rejected};

/// What one finished call tells an algorithm.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// When it started and finished, clock nanoseconds.
    pub(crate) started: u64,
    pub(crate) finished: u64,
    pub(crate) latency: Duration,
    /// Units in flight when it finished, itself included.
    pub(crate) in_flight: u32,
    /// It failed (the dependency dropped it, or it was too slow).
    pub(crate) dropped: bool,
}

/// A limit algorithm: the next limit from a finished call.
pub(crate) trait Algorithm: Send + fmt::Debug {
    fn update(&mut self, sample: Sample, limit: u32, min: u32, max: u32) -> u32;
}

#[derive(Debug, Clone, Copy)]
enum Choice {
    Aimd(Aimd),
    Gradient2(Gradient2),
    Vegas(Vegas),
}

/// Builds an [`AdaptiveLimiter`] over a bulkhead.
#[must_use]
pub struct AdaptiveLimiterBuilder {
    bulkhead: Bulkhead,
    choice: Option<Choice>,
    min_limit: u32,
    max_limit: u32,
    clock: Option<SharedClock>,
}

impl fmt::Debug for AdaptiveLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimiterBuilder")
            .field("bulkhead", &self.bulkhead.name())
            .field("choice", &self.choice)
            .field("min_limit", &self.min_limit)
            .field("max_limit", &self.max_limit)
            .finish_non_exhaustive()
    }
}

impl AdaptiveLimiterBuilder {
    /// Moves the limit by AIMD (see [`Aimd`]). One algorithm (`aimd`, `gradient2`, `vegas`) is required.
    pub fn aimd(mut self, settings: Aimd) -> Self {
        self.choice = Some(Choice::Aimd(settings));
        self
    }

    /// Moves the limit by Gradient2 (see [`Gradient2`]). One algorithm (`aimd`, `gradient2`, `vegas`) is required.
    pub fn gradient2(mut self, settings: Gradient2) -> Self {
        self.choice = Some(Choice::Gradient2(settings));
        self
    }

    /// Moves the limit by Vegas (see [`Vegas`]). One algorithm is required.
    pub fn vegas(mut self, settings: Vegas) -> Self {
        self.choice = Some(Choice::Vegas(settings));
        self
    }

    /// The lowest limit it sets, at least 1 (default 1).
    pub fn min_limit(mut self, limit: u32) -> Self {
        self.min_limit = limit;
        self
    }

    /// The highest limit it sets, at most 2³¹−1 (default 1,000).
    pub fn max_limit(mut self, limit: u32) -> Self {
        self.max_limit = limit;
        self
    }

    /// The clock that times calls (default: the system clock). Tests pass a `ManualClock`.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the settings, brings the bulkhead's limit into `[min_limit,
    /// max_limit]` and builds the limiter.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the method: no algorithm (`aimd`), an
    /// algorithm setting out of bounds (`aimd`, `gradient2` or `vegas`), a minimum of 0
    /// or above the maximum (`min_limit`), a maximum above 2³¹−1 (`max_limit`).
    pub fn build(self) -> Result<AdaptiveLimiter, ConfigError> {
        let choice = self.choice.ok_or_else(|| {
            ConfigError::new(
                "aimd",
                "choose an algorithm: aimd(..), gradient2(..) or vegas(..)",
            )
        })?;
        check_limit("min_limit", self.min_limit)?;
        check_limit("max_limit", self.max_limit)?;
        if self.min_limit > self.max_limit {
            return Err(ConfigError::new(
                "min_limit",
                format!(
                    "must not be above max_limit ({}), got {}",
                    self.max_limit, self.min_limit
                ),
            ));
        }
        debug_assert!(self.max_limit <= MAX_LIMIT);
        let initial = self
            .bulkhead
            .snapshot()
            .limit
            .clamp(self.min_limit, self.max_limit);
        let algorithm: Box<dyn Algorithm> = match choice {
            Choice::Aimd(settings) => {
                settings.validate()?;
                Box::new(aimd::AimdState::new(settings))
            }
            Choice::Gradient2(settings) => {
                settings.validate()?;
                Box::new(gradient2::Gradient2State::new(settings, initial))
            }
            Choice::Vegas(settings) => {
                settings.validate()?;
                Box::new(vegas::VegasState::new(settings, initial))
            }
        };
        self.bulkhead.set_limit(initial)?;
        Ok(AdaptiveLimiter {
            inner: Arc::new(Inner {
                bulkhead: self.bulkhead,
                algorithm: Mutex::new(algorithm),
                min: self.min_limit,
                max: self.max_limit,
                clock: self.clock.unwrap_or_else(SystemClock::shared),
            }),
        })
    }
}

/// Takes the permits of one [`Bulkhead`] and moves its limit after every
/// call. Cheap to clone; clones share the algorithm. See the [module docs](self).
#[derive(Clone)]
pub struct AdaptiveLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    bulkhead: Bulkhead,
    algorithm: Mutex<Box<dyn Algorithm>>,
    min: u32,
    max: u32,
    clock: SharedClock,
}

impl fmt::Debug for AdaptiveLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimiter")
            .field("bulkhead", &self.inner.bulkhead.name())
            .field("algorithm", &*self.inner.algorithm.lock())
            .field("min", &self.inner.min)
            .field("max", &self.inner.max)
            .finish_non_exhaustive()
    }
}

impl AdaptiveLimiter {
    /// A builder over `bulkhead`, whose limit it will move; its waiting
    /// policy, queue and telemetry stay as they are.
    pub fn builder(bulkhead: Bulkhead) -> AdaptiveLimiterBuilder {
        AdaptiveLimiterBuilder {
            bulkhead,
            choice: None,
            min_limit: 1,
            max_limit: 1000,
            clock: None,
        }
    }

    /// The bulkhead whose limit it moves.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.inner.bulkhead
    }

    /// A permit now, as [`Bulkhead::try_acquire`]; record the call's outcome on it.
    ///
    /// # Errors
    /// As [`Bulkhead::try_acquire`].
    pub fn try_acquire(&self) -> Result<AdaptivePermit<'_>, Rejected> {
        let permit = self.inner.bulkhead.try_acquire()?;
        Ok(self.timed(permit))
    }

    /// A permit, waiting as [`Bulkhead::acquire`] does; record the call's outcome on it.
    /// The call is timed from when the permit is granted.
    ///
    /// # Errors
    /// As [`Bulkhead::acquire`].
    pub async fn acquire(&self) -> Result<AdaptivePermit<'_>, Rejected> {
        let permit = self.inner.bulkhead.acquire().await?;
        Ok(self.timed(permit))
    }

    /// Runs `call` under a permit taken as [`acquire`](Self::acquire) takes
    /// it, and feeds its latency and outcome (`Err` is a failure) to the algorithm.
    ///
    /// # Errors
    /// As [`Bulkhead::call`].
    pub async fn call<T, E, F, Fut>(&self, call: F) -> Result<T, CallError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self.acquire().await?;
        let result = call().await;
        permit.record(DefaultClassifier.classify(&result));
        result.map_err(CallError::Inner)
    }

    fn timed<'a>(&'a self, permit: Permit<'a>) -> AdaptivePermit<'a> {
        AdaptivePermit {
            limiter: self,
            permit: Some(permit),
            started: self.inner.clock.now_nanos(),
        }
    }

    fn record(&self, started: u64, outcome: Outcome) {
        let inner = &*self.inner;
        let dropped = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => return,
        };
        let finished = inner.clock.now_nanos();
        let sample = Sample {
            started,
            finished,
            latency: Duration::from_nanos(finished.saturating_sub(started)),
            in_flight: inner.bulkhead.snapshot().in_flight,
            dropped,
        };
        let (now, next) = {
            let mut algorithm = inner.algorithm.lock();
            let now = inner.bulkhead.snapshot().limit;
            (now, algorithm.update(sample, now, inner.min, inner.max))
        };
        if next != now {
            // In bounds by construction; outside the lock, so a listener of
            // the bulkhead's `LimitChanged` may use the limiter.
            let _ = inner.bulkhead.set_limit(next);
        }
    }
}

/// A bulkhead permit whose call is timed: record its outcome with
/// [`record`](Self::record), and the limiter moves the limit. Dropped
/// unrecorded, it gives its unit back and tells the algorithm nothing.
#[must_use = "a permit gives its unit back as soon as it is dropped"]
pub struct AdaptivePermit<'a> {
    limiter: &'a AdaptiveLimiter,
    permit: Option<Permit<'a>>,
    started: u64,
}

impl fmt::Debug for AdaptivePermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptivePermit")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl AdaptivePermit<'_> {
    /// Records the call's outcome (success, failure, or ignored: no sample)
    /// and gives the unit back. The sample counts this call as in flight.
    pub fn record(mut self, outcome: Outcome) {
        self.limiter.record(self.started, outcome);
        drop(self.permit.take());
    }
}
