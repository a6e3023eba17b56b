//! The retry loop, in one place for the direct call, the tower layer and the hedge.
//!
//! ```text
//!  begin ── deposit in the budget; note the start if there is a deadline
//!    │
//!    ▼
//!  attempt n ──(result, classified)──┬─ success / ignored ─────────────▶ finish
//!    ▲                               └─ failure (or timed out)
//!    │                                   ├─ n = max_attempts ───────────▶ finish (max_attempts)
//!    │                                   ├─ delay = Retry-After or backoff, ≤ max_delay
//!    │                                   ├─ start + elapsed + delay ≥ deadline ▶ finish (deadline)
//!    │                                   ├─ budget cannot cover it ─────▶ finish (budget_exhausted)
//!    └──────────── wait `delay` ◀────────┘  (a caller that leaves now gets its withdrawal back)
//! ```
//!
//! [`Inner::after_failure`] is the whole decision, synchronous and shared;
//! the futures around it only wait and call.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{Backoff, Listeners, Outcome, SharedClock, SharedSleeper, timeout};
use parking_lot::Mutex;

use crate::attempt::Attempt;
use crate::budget::{RetryBudget, Withdrawal};
use crate::config::RetryBuilder;
use crate::error::{RetryError, StopReason, TimedOut};
use crate::event::Event;
use crate::policy::{DefaultPolicy, RetryPolicy};

/// Retries failed calls with backoff, under a budget and a deadline.
///
/// Cheap to clone; clones share the configuration, the budget and the
/// listeners. See the [crate docs](crate) for an example.
#[derive(Clone)]
pub struct Retry {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) name: Arc<str>,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_delay: Duration,
    pub(crate) deadline: Option<Duration>,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) budget: Option<RetryBudget>,
    /// A seeded jitter generator, when the builder asked for one.
    pub(crate) rng: Option<Mutex<fastrand::Rng>>,
    pub(crate) clock: SharedClock,
    pub(crate) sleeper: SharedSleeper,
    pub(crate) listeners: Listeners<Event>,
}

/// Where one call is: attempts made, when it started, the last delay.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallState {
    /// Attempts started so far.
    pub(crate) attempts: u32,
    /// Clock nanos at the start, when there is a deadline.
    started: Option<u64>,
    previous_delay: Duration,
}

/// What follows a failed attempt.
#[derive(Debug)]
pub(crate) enum Next {
    /// Wait `delay`, then make the next attempt; `withdrawal` is given back
    /// if the caller leaves before it starts.
    Retry {
        delay: Duration,
        withdrawal: Option<Withdrawal>,
    },
    /// No further attempt.
    Stop(StopReason),
}

impl Retry {
    /// A builder with the defaults on its methods.
    pub fn builder() -> RetryBuilder {
        RetryBuilder::new()
    }

    pub(crate) fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The budget this retry spends, if it has one.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.inner.budget.as_ref()
    }

    /// Calls `make_attempt` until an attempt succeeds, its error is not to be
    /// retried, or the attempts, the deadline or the budget run out, waiting
    /// the backoff's delay between attempts. By [`DefaultPolicy`]: every `Err`
    /// is retried but a rejection by another Palisade pattern.
    ///
    /// Dropping the returned future during an attempt or a delay drops the
    /// attempt and stops; a retry granted by the budget but not yet started is
    /// given back.
    pub async fn call<T, E, F, Fut>(&self, make_attempt: F) -> Result<T, RetryError<E>>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        self.call_with(&DefaultPolicy, make_attempt).await
    }

    /// Like [`call`](Self::call), with `policy` deciding what is retried and
    /// how long a result asks to wait. A final result classified a failure
    /// but `Ok` (a 503 when the attempts ran out) is returned as `Ok`.
    pub async fn call_with<T, E, P, F, Fut>(
        &self,
        policy: &P,
        mut make_attempt: F,
    ) -> Result<T, RetryError<E>>
    where
        P: RetryPolicy<T, E> + ?Sized,
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let inner = &*self.inner;
        let mut state = inner.begin();
        loop {
            let attempt = inner.start_attempt(&mut state);
            let limit = inner.attempt_limit(&state);
            let fut = make_attempt(attempt);
            let result = match limit {
                None => Some(fut.await),
                Some(limit) => {
                    let result = timeout(&*inner.sleeper, limit, fut).await.ok();
                    if result.is_none() {
                        inner.timed_out(attempt.number(), limit);
                    }
                    result
                }
            };
            let (outcome, retry_after) = match &result {
                Some(result) => (policy.classify(result), policy.retry_after(result)),
                None => (Outcome::Failure, None),
            };
            let next = match outcome {
                Outcome::Success => Next::Stop(StopReason::Succeeded),
                Outcome::Ignored => Next::Stop(StopReason::NotRetryable),
                Outcome::Failure => inner.after_failure(&mut state, retry_after),
            };
            match next {
                Next::Stop(stop) => {
                    inner.finish(&state, stop);
                    return answer(result, &state, limit, stop);
                }
                Next::Retry { delay, withdrawal } => {
                    let refund = Refund::new(inner.budget.as_ref(), withdrawal);
                    if !delay.is_zero() {
                        inner.sleeper.sleep(delay).await;
                    }
                    // A sleeper may wake late: no attempt starts with no time
                    // left (the refund goes back as it is dropped).
                    if inner.remaining(&state) == Some(Duration::ZERO) {
                        drop(refund);
                        inner.finish(&state, StopReason::Deadline);
                        return answer(result, &state, limit, StopReason::Deadline);
                    }
                    refund.disarm();
                }
            }
        }
    }
}

/// What a call returns when it stops after `state.attempts` attempts.
fn answer<T, E>(
    result: Option<Result<T, E>>,
    state: &CallState,
    limit: Option<Duration>,
    stop: StopReason,
) -> Result<T, RetryError<E>> {
    match result {
        Some(Ok(value)) => Ok(value),
        Some(Err(error)) => Err(RetryError::Failed {
            error,
            attempts: state.attempts,
            stop,
        }),
        None => Err(RetryError::TimedOut {
            timed_out: TimedOut {
                attempt: state.attempts,
                limit: limit.unwrap_or_default(),
            },
            stop,
        }),
    }
}

impl Inner {
    /// A new call: one deposit in the budget, and the start time if a deadline needs it.
    #[inline]
    pub(crate) fn begin(&self) -> CallState {
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
        CallState {
            attempts: 0,
            started: self.deadline.map(|_| self.clock.now_nanos()),
            previous_delay: Duration::ZERO,
        }
    }

    /// Counts the attempt about to start and says what it knows.
    #[inline]
    pub(crate) fn start_attempt(&self, state: &mut CallState) -> Attempt {
        state.attempts += 1;
        Attempt::new(state.attempts, self.remaining(state))
    }

    /// The time the deadline leaves, when there is one.
    #[inline]
    pub(crate) fn remaining(&self, state: &CallState) -> Option<Duration> {
        let (deadline, started) = (self.deadline?, state.started?);
        let elapsed = Duration::from_nanos(self.clock.now_nanos().saturating_sub(started));
        Some(deadline.saturating_sub(elapsed))
    }

    /// The most time the next attempt is given: its timeout, or what the
    /// deadline leaves if that is less.
    #[inline]
    pub(crate) fn attempt_limit(&self, state: &CallState) -> Option<Duration> {
        match (self.attempt_timeout, self.remaining(state)) {
            (None, None) => None,
            (Some(t), None) => Some(t),
            (None, Some(r)) => Some(r),
            (Some(t), Some(r)) => Some(t.min(r)),
        }
    }

    pub(crate) fn timed_out(&self, attempt: u32, limit: Duration) {
        self.listeners
            .emit_with(|| Event::AttemptTimedOut { attempt, limit });
    }

    /// After a failed attempt: the delay before the next one, or why there is none.
    pub(crate) fn after_failure(
        &self,
        state: &mut CallState,
        retry_after: Option<Duration>,
    ) -> Next {
        if state.attempts >= self.max_attempts {
            return Next::Stop(StopReason::MaxAttempts);
        }
        let from_result = retry_after.is_some();
        let delay = retry_after
            .unwrap_or_else(|| self.backoff_delay(state.attempts, state.previous_delay))
            .min(self.max_delay);
        if let Some(remaining) = self.remaining(state)
            && delay >= remaining
        {
            return Next::Stop(StopReason::Deadline);
        }
        let withdrawal = match &self.budget {
            None => None,
            Some(budget) => {
                let Some(withdrawal) = budget.withdraw() else {
                    let attempts = state.attempts;
                    self.listeners
                        .emit_with(|| Event::BudgetExhausted { attempts });
                    return Next::Stop(StopReason::BudgetExhausted);
                };
                Some(withdrawal)
            }
        };
        state.previous_delay = delay;
        let attempt = state.attempts + 1;
        self.listeners.emit_with(|| Event::RetryScheduled {
            attempt,
            delay,
            from_result,
        });
        Next::Retry { delay, withdrawal }
    }

    /// The backoff's delay before retry `retry` (1 for the first).
    fn backoff_delay(&self, retry: u32, previous: Duration) -> Duration {
        match &self.rng {
            Some(rng) => {
                let unit = rng.lock().f64();
                self.backoff.delay_after_with(retry, previous, unit)
            }
            None => self.backoff.delay_after(retry, previous),
        }
    }

    #[inline]
    pub(crate) fn finish(&self, state: &CallState, stop: StopReason) {
        let attempts = state.attempts;
        self.listeners
            .emit_with(|| Event::Finished { attempts, stop });
    }
}

/// Gives a withdrawal back to the budget unless the retry it paid for started.
pub(crate) struct Refund<'a> {
    budget: Option<&'a RetryBudget>,
    withdrawal: Option<Withdrawal>,
}

impl<'a> Refund<'a> {
    pub(crate) fn new(budget: Option<&'a RetryBudget>, withdrawal: Option<Withdrawal>) -> Self {
        Self { budget, withdrawal }
    }

    /// The retry started: the withdrawal stays spent.
    pub(crate) fn disarm(mut self) {
        self.withdrawal = None;
    }
}

impl Drop for Refund<'_> {
    fn drop(&mut self) {
        if let (Some(budget), Some(withdrawal)) = (self.budget, self.withdrawal.take()) {
            budget.refund(withdrawal);
        }
    }
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("Retry")
            .field("name", &inner.name)
            .field("max_attempts", &inner.max_attempts)
            .field("backoff", &inner.backoff)
            .field("max_delay", &inner.max_delay)
            .field("deadline", &inner.deadline)
            .field("attempt_timeout", &inner.attempt_timeout)
            .field("budget", &inner.budget)
            .finish_non_exhaustive()
    }
}
