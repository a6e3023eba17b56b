//! The direct limiter: one limit, its state one atomic word (see `gcra.rs`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{CachePadded, ConfigError, Listeners, SharedSleeper};
use parking_lot::Mutex;

use crate::clock::LimiterClock;
use crate::config::RateLimiterBuilder;
use crate::decision::{Decision, Denied, EXHAUSTED, Error};
use crate::event::Event;
use crate::gcra::{self, AtomicU64, QuotaCell, Refused};
use crate::quota::{Params, Quota};

/// A GCRA rate limiter: one limit shared by every clone.
///
/// Its whole state is one `AtomicU64` (the theoretical arrival time, in
/// nanoseconds of its clock) changed by one compare-and-swap per admission:
/// no lock, no allocation, one clock read per check.
///
/// - [`check`](Self::check) and [`check_n`](Self::check_n) decide at once.
/// - [`acquire`](Self::acquire) and [`acquire_n`](Self::acquire_n) wait,
///   first come first served, up to the builder's
///   [`max_wait`](RateLimiterBuilder::max_wait): a waiter reserves its slot
///   when it arrives, so nobody, waiting or checking, overtakes it.
/// - [`set_quota`](Self::set_quota) changes the quota of a running limiter.
///
/// ```
/// use palisade_rate_limit::{ManualClock, Quota, RateLimiter};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::builder()
///     .quota(Quota::per_second(2))
///     .clock(clock.shared())
///     .build()?;
/// assert!(limiter.check().is_ok());
/// assert!(limiter.check().is_ok());
/// let denied = limiter.check().unwrap_err();
/// assert_eq!(denied.retry_after(), Duration::from_millis(500));
/// clock.advance(Duration::from_millis(500));
/// assert_eq!(limiter.check()?.remaining(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    /// The theoretical arrival time: the whole state of the limit.
    tat: CachePadded<AtomicU64>,
    /// Read on every check; written only by `set_quota`.
    params: QuotaCell,
    /// The quota as given, for `quota()`; its lock serialises `set_quota`.
    quota: Mutex<Quota>,
    name: Arc<str>,
    clock: LimiterClock,
    sleeper: Option<SharedSleeper>,
    listeners: Listeners<Event>,
    max_wait: u64,
}

impl RateLimiter {
    /// A builder; the quota is required.
    pub fn builder() -> RateLimiterBuilder {
        RateLimiterBuilder::new()
    }

    pub(crate) fn from_parts(
        name: Arc<str>,
        quota: Quota,
        params: Params,
        clock: LimiterClock,
        sleeper: Option<SharedSleeper>,
        listeners: Listeners<Event>,
        max_wait: u64,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                tat: CachePadded(AtomicU64::new(0)),
                params: QuotaCell::new(params),
                quota: Mutex::new(quota),
                name,
                clock,
                sleeper,
                listeners,
                max_wait,
            }),
        }
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The quota in force.
    pub fn quota(&self) -> Quota {
        *self.inner.quota.lock()
    }

    /// The longest [`acquire`](Self::acquire) waits.
    pub fn max_wait(&self) -> Duration {
        Duration::from_nanos(self.inner.max_wait)
    }

    /// Admits one request now, or refuses it with when to come back.
    ///
    /// # Errors
    /// [`Denied`] when the quota is spent: its [`retry_after`](Denied::retry_after)
    /// is when one request will be admitted.
    #[inline]
    pub fn check(&self) -> Result<Decision, Denied> {
        let params = self.inner.params.load();
        self.take_now(params, 1)
    }

    /// Admits `n` requests at once, or none.
    ///
    /// `n = 0` is admitted and changes nothing.
    ///
    /// # Errors
    /// [`Error::InsufficientCapacity`] when `n` is larger than the burst (it
    /// never would be admitted), [`Error::Denied`] when the quota does not
    /// have `n` left now.
    #[inline]
    pub fn check_n(&self, n: u32) -> Result<Decision, Error> {
        let params = self.inner.params.load();
        if n == 0 {
            return Ok(self.decision_now(params));
        }
        check_size(n, params)?;
        Ok(self.take_now(params, n)?)
    }

    #[allow(clippy::inline_always)] // fewer instructions per check, counted by callgrind
    #[inline(always)]
    fn take_now(&self, params: Params, n: u32) -> Result<Decision, Denied> {
        let now = self.inner.clock.now();
        match gcra::take(&self.inner.tat, now, params, n, 0) {
            Ok(taken) => {
                self.inner.listeners.emit_with(|| Event::Acquired {
                    permits: n,
                    waited: None,
                });
                Ok(Decision::new(now, taken.tat, params))
            }
            Err(refused) => Err(self.refuse(now, refused, params, n)),
        }
    }

    #[allow(clippy::inline_always)] // fewer instructions per check, counted by callgrind
    #[inline(always)]
    fn refuse(&self, now: u64, refused: Refused, params: Params, n: u32) -> Denied {
        self.inner.listeners.emit_with(|| Event::Rejected {
            permits: n,
            reason: EXHAUSTED,
            retry_after: Duration::from_nanos(refused.retry_after),
        });
        Denied::new(
            EXHAUSTED,
            refused.retry_after,
            Decision::new(now, refused.tat, params),
        )
    }

    /// Waits for one request to be admitted, up to
    /// [`max_wait`](RateLimiterBuilder::max_wait); see [`acquire_n`](Self::acquire_n).
    ///
    /// # Errors
    /// As [`acquire_n`](Self::acquire_n).
    pub async fn acquire(&self) -> Result<Decision, Error> {
        self.acquire_n(1).await
    }

    /// Waits until `n` requests at once are admitted, first come first
    /// served, up to [`max_wait`](RateLimiterBuilder::max_wait).
    ///
    /// The place is reserved when the call is made: a request that arrives
    /// later, waiting or checking, is admitted after this one. When the wait
    /// would be longer than `max_wait` nothing is reserved and the call
    /// fails at once. Dropping the future while it waits cancels it; its
    /// slot goes back to the limit if nobody has queued behind it, and is
    /// otherwise lost (the limit then admits less than it could, never more).
    /// The returned [`Decision`] is as of the moment the wait ended.
    ///
    /// # Errors
    /// [`Error::InsufficientCapacity`] when `n` is over the burst,
    /// [`Error::Denied`] when the wait would exceed `max_wait` (its
    /// `retry_after` is the wait it would have been), [`Error::NoSleeper`]
    /// when it must wait and the limiter has no sleeper.
    pub async fn acquire_n(&self, n: u32) -> Result<Decision, Error> {
        let reservation = match self.reserve(n)? {
            Reserve::Ready(decision) => return Ok(decision),
            Reserve::Wait(reservation) => reservation,
        };
        let Some(sleeper) = &self.inner.sleeper else {
            // reserve() waits only with a sleeper; never taken.
            self.cancel(&reservation);
            return Err(Error::NoSleeper);
        };
        let guard = CancelOnDrop {
            limiter: self,
            reservation: Some(reservation),
        };
        sleeper.sleep(Duration::from_nanos(reservation.wait)).await;
        guard.disarm();
        Ok(self.finish(&reservation))
    }

    /// Takes `n` now, or reserves a slot within `max_wait` (only with a sleeper).
    pub(crate) fn reserve(&self, n: u32) -> Result<Reserve, Error> {
        let params = self.inner.params.load();
        let now = self.inner.clock.now();
        if n == 0 {
            return Ok(Reserve::Ready(self.decision_now(params)));
        }
        check_size(n, params)?;
        let max_wait = if self.inner.sleeper.is_some() {
            self.inner.max_wait
        } else {
            0
        };
        match gcra::take(&self.inner.tat, now, params, n, max_wait) {
            Ok(taken) if taken.wait == 0 => {
                self.inner.listeners.emit_with(|| Event::Acquired {
                    permits: n,
                    waited: Some(Duration::ZERO),
                });
                Ok(Reserve::Ready(Decision::new(now, taken.tat, params)))
            }
            Ok(taken) => Ok(Reserve::Wait(Reservation {
                tat: taken.tat,
                params,
                n,
                started: now,
                wait: taken.wait,
            })),
            Err(refused) if refused.retry_after <= self.inner.max_wait => Err(Error::NoSleeper),
            Err(refused) => Err(Error::Denied(self.refuse(now, refused, params, n))),
        }
    }

    /// The sleeper that `reserve` waits with.
    #[cfg(feature = "tower")]
    pub(crate) fn sleeper(&self) -> Option<&SharedSleeper> {
        self.inner.sleeper.as_ref()
    }

    /// A reservation whose wait is over: admitted.
    pub(crate) fn finish(&self, r: &Reservation) -> Decision {
        let waited = self.inner.clock.now().saturating_sub(r.started).max(r.wait);
        self.inner.listeners.emit_with(|| Event::Acquired {
            permits: r.n,
            waited: Some(Duration::from_nanos(waited)),
        });
        Decision::new(r.started + r.wait, r.tat, r.params)
    }

    /// A reservation given up before its wait was over.
    pub(crate) fn cancel(&self, r: &Reservation) {
        let returned = gcra::give_back(&self.inner.tat, r.tat, r.params, r.n);
        self.inner.listeners.emit_with(|| Event::Canceled {
            permits: r.n,
            waited: Duration::from_nanos(self.inner.clock.now().saturating_sub(r.started)),
            returned,
        });
    }

    /// The limit's state now, taking nothing.
    pub fn snapshot(&self) -> Decision {
        self.decision_now(self.inner.params.load())
    }

    fn decision_now(&self, params: Params) -> Decision {
        let now = self.inner.clock.now();
        let tat = self.inner.tat.load(std::sync::atomic::Ordering::Acquire);
        Decision::new(now, tat, params)
    }

    /// Changes the quota of the running limiter. What is already owed stays
    /// owed: a client that spent its burst waits as long as the old quota
    /// said, and from then on the new rate and burst apply. Waiters keep the
    /// slots they reserved.
    ///
    /// # Errors
    /// A [`ConfigError`] with field `set_quota` when the quota is invalid;
    /// the old one then stays.
    pub fn set_quota(&self, quota: Quota) -> Result<(), ConfigError> {
        let params = quota.params("set_quota")?;
        {
            let mut current = self.inner.quota.lock();
            self.inner.params.store(params);
            *current = quota;
        }
        self.inner
            .listeners
            .emit_with(|| Event::QuotaChanged { quota });
        Ok(())
    }
}

#[inline]
pub(crate) fn check_size(n: u32, params: Params) -> Result<(), Error> {
    if n > params.burst {
        return Err(Error::InsufficientCapacity {
            requested: n,
            burst: params.burst,
        });
    }
    Ok(())
}

/// What `reserve` did.
pub(crate) enum Reserve {
    /// Admitted now.
    Ready(Decision),
    /// A slot is reserved; it is due after `wait`.
    Wait(Reservation),
}

/// A reserved slot: `n` requests whose swap left `tat`, due `wait` after `started`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reservation {
    tat: u64,
    params: Params,
    n: u32,
    started: u64,
    pub(crate) wait: u64,
}

/// Cancels a reservation if the waiting future is dropped.
struct CancelOnDrop<'a> {
    limiter: &'a RateLimiter,
    reservation: Option<Reservation>,
}

impl CancelOnDrop<'_> {
    fn disarm(mut self) {
        self.reservation = None;
    }
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.reservation.take() {
            self.limiter.cancel(&r);
        }
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.inner.name)
            .field("quota", &self.quota())
            .field("max_wait", &self.max_wait())
            .finish_non_exhaustive()
    }
}
