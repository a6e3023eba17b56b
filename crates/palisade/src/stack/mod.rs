//! The standard resilience stack: the patterns of this crate in the order
//! that works, as one builder, one `call` and one tower layer.
//!
//! ```text
//! call ─▶ rate limit ─▶ total timeout ─▶ retry (budget) ─▶ circuit breaker ─▶ bulkhead ─▶ attempt timeout ─▶ your call
//!         (rejects)     (the caller's     (each attempt      (counts every     (bounds       (inside the bulkhead:
//!                        whole wait)       goes through       attempt, rejects  concurrency)   a slot is held only
//!                                          the rest)          when open)                       as long as it may)
//! ```
//!
//! Every part is optional; a preset ([`Stack::http_client`],
//! [`Stack::database_client`], [`Stack::inbound_server`]) fills them with
//! defaults you then change, remove or keep. The guide
//! `docs/composition.md` explains the order and shows the traps of other
//! orders with programs.
//!
//! ```
//! use palisade::stack::{Stack, StackError, TimeoutKind};
//! use palisade::core::{Pattern, TokioClock};
//! use palisade::circuit_breaker::{CircuitBreaker, SlidingWindow};
//! use palisade::retry::{Backoff, Retry};
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Timeouts and delays wait on tokio's timer; the parts read its clock too
//! // (paused in this example, so the numbers are exact).
//! let stack = Stack::builder()
//!     .name("payments")
//!     .clock(TokioClock::shared())
//!     .retry(Retry::builder().max_attempts(3).backoff(Backoff::fixed(Duration::from_millis(1))))
//!     .circuit_breaker(
//!         CircuitBreaker::builder()
//!             .sliding_window(SlidingWindow::count(4))
//!             .minimum_calls(4)
//!             .open_duration(Duration::from_secs(5)),
//!     )
//!     .attempt_timeout(Duration::from_secs(1))
//!     .build()?;
//!
//! // Every attempt fails: three attempts, all counted by the breaker.
//! let calls = AtomicU32::new(0);
//! let err = stack
//!     .call(|| async {
//!         calls.fetch_add(1, Ordering::Relaxed);
//!         Err::<(), _>(std::io::Error::other("connection reset"))
//!     })
//!     .await
//!     .unwrap_err();
//! assert_eq!(calls.load(Ordering::Relaxed), 3);
//! assert_eq!(err.to_string(), "connection reset");
//!
//! // The next call's first attempt is the fourth failure: the breaker opens,
//! // rejects the retry 1 ms later, and that rejection is not retried.
//! let err = stack.call(|| async { Err::<(), _>(std::io::Error::other("reset")) }).await.unwrap_err();
//! assert_eq!(err.pattern(), Some(Pattern::CircuitBreaker));
//! assert_eq!(err.retry_after(), Some(Duration::from_millis(4_999)));
//! # let _ = TimeoutKind::Total;
//! # let _: Option<StackError<std::io::Error>> = None;
//! # Ok(())
//! # }
//! ```

mod config;
mod deadline;
mod error;
#[cfg(feature = "tower")]
mod tower;

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{Classifier, Outcome, Pattern, Rejected, SharedSleeper};

use crate::bulkhead::Bulkhead;
use crate::circuit_breaker::CircuitBreaker;
use crate::rate_limit::RateLimiter;
use crate::retry::{Retry, RetryError};

pub use config::StackBuilder;
use deadline::{Deadline, Expired};
pub use error::{StackError, Timeout, TimeoutKind};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use tower::{ResponseFuture, StackLayer, StackOnceLayer, StackOnceService, StackService};

/// The standard resilience stack; see the [module docs](self).
///
/// Cheap to clone: clones share every part, so a clone per task or per
/// connection spends the same retry budget, opens the same breaker and fills
/// the same bulkhead. Build it once per dependency and clone it.
#[derive(Clone)]
pub struct Stack {
    parts: Arc<Parts>,
}

struct Parts {
    name: Arc<str>,
    rate_limiter: Option<RateLimiter>,
    total_timeout: Option<Duration>,
    retry: Option<Retry>,
    circuit_breaker: Option<CircuitBreaker>,
    bulkhead: Option<Bulkhead>,
    attempt_timeout: Option<Duration>,
    sleeper: SharedSleeper,
}

/// The stack's default classifier: `Ok` is a success; an `Err` is a failure
/// (counted by the breaker, retried), unless a Palisade rejection is in its
/// chain of sources (another stack's, inside the call): that is ignored,
/// neither counted nor retried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StackClassifier;

impl<T, E: Error + 'static> Classifier<T, E> for StackClassifier {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) if Rejected::find(e).is_some() => Outcome::Ignored,
            Err(_) => Outcome::Failure,
        }
    }
}

/// One attempt's result with its outcome, which the retry reads.
type Attempted<T, E> = Result<(T, Outcome), (StackError<E>, Outcome)>;

impl Stack {
    /// A builder with no part: add the ones you want.
    pub fn builder() -> StackBuilder {
        StackBuilder::new()
    }

    /// The stack's name, given to every part.
    pub fn name(&self) -> &str {
        &self.parts.name
    }

    /// The rate limiter, if the stack has one.
    pub fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.parts.rate_limiter.as_ref()
    }

    /// The total timeout, if the stack has one.
    pub fn total_timeout(&self) -> Option<Duration> {
        self.parts.total_timeout
    }

    /// The retry, if the stack has one; its [`budget`](Retry::budget) is shared by every clone.
    pub fn retry(&self) -> Option<&Retry> {
        self.parts.retry.as_ref()
    }

    /// The circuit breaker, if the stack has one.
    pub fn circuit_breaker(&self) -> Option<&CircuitBreaker> {
        self.parts.circuit_breaker.as_ref()
    }

    /// The bulkhead, if the stack has one.
    pub fn bulkhead(&self) -> Option<&Bulkhead> {
        self.parts.bulkhead.as_ref()
    }

    /// The attempt timeout, if the stack has one.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.parts.attempt_timeout
    }

    /// Runs `call` through the stack with [`StackClassifier`]: every `Err`
    /// is a failure, but a rejection inside it.
    ///
    /// `call` is called once per attempt for the attempt's future, which is
    /// polled only once the breaker and the bulkhead admitted it (a refused
    /// attempt's future is dropped unpolled), and dropped when a timeout runs out.
    ///
    /// # Errors
    /// [`StackError::Rejected`] when the rate limiter, the breaker or the
    /// bulkhead refused (a rejection is never retried),
    /// [`StackError::Timeout`] when the total timeout or the last attempt's
    /// timeout ran out, [`StackError::Inner`] with the last attempt's error.
    pub async fn call<T, E, F, Fut>(&self, call: F) -> Result<T, StackError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Error + 'static,
    {
        self.call_with(&StackClassifier, call).await
    }

    /// Like [`call`](Self::call), with `classifier` deciding what the breaker
    /// counts and the retry retries: a failure is both, an ignored result
    /// neither (a `404`, a unique-key violation), a success ends the call. An
    /// `Ok` classified a failure (a `503`) is retried, and returned as `Ok` if
    /// the retries run out.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub async fn call_with<T, E, C, F, Fut>(
        &self,
        classifier: &C,
        mut call: F,
    ) -> Result<T, StackError<E>>
    where
        C: Classifier<T, E> + ?Sized,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let parts = &*self.parts;
        if let Some(limiter) = &parts.rate_limiter {
            admit(limiter).await.map_err(StackError::Rejected)?;
        }
        let retried = self.retried(classifier, &mut call);
        total(Deadline::new(&*parts.sleeper, parts.total_timeout, retried).await)
    }

    /// Runs `call` once through every part but the retry, for work that
    /// cannot be repeated (a request whose body is a stream): rate limit,
    /// total timeout, breaker, bulkhead, attempt timeout. With
    /// [`StackClassifier`].
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub async fn call_once<T, E, Fut>(&self, call: Fut) -> Result<T, StackError<E>>
    where
        Fut: Future<Output = Result<T, E>>,
        E: Error + 'static,
    {
        self.call_once_with(&StackClassifier, call).await
    }

    /// [`call_once`](Self::call_once) with a classifier, as in [`call_with`](Self::call_with).
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub async fn call_once_with<T, E, C, Fut>(
        &self,
        classifier: &C,
        call: Fut,
    ) -> Result<T, StackError<E>>
    where
        C: Classifier<T, E> + ?Sized,
        Fut: Future<Output = Result<T, E>>,
    {
        let parts = &*self.parts;
        if let Some(limiter) = &parts.rate_limiter {
            admit(limiter).await.map_err(StackError::Rejected)?;
        }
        let once = async {
            self.attempt(classifier, call)
                .await
                .map(|(value, _)| value)
                .map_err(|(error, _)| error)
        };
        total(Deadline::new(&*parts.sleeper, parts.total_timeout, once).await)
    }

    /// The retry around the attempts, or the one attempt.
    async fn retried<T, E, C, F, Fut>(
        &self,
        classifier: &C,
        call: &mut F,
    ) -> Result<T, StackError<E>>
    where
        C: Classifier<T, E> + ?Sized,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let Some(retry) = &self.parts.retry else {
            return self
                .attempt(classifier, call())
                .await
                .map(|(value, _)| value)
                .map_err(|(error, _)| error);
        };
        // The outcome was decided by the attempt: the breaker recorded it,
        // the retry follows it (a rejection is `Ignored`: not retried).
        let policy = |result: &Attempted<T, E>| match result {
            Ok((_, outcome)) | Err((_, outcome)) => *outcome,
        };
        match retry
            .call_with(&policy, move |_| self.attempt(classifier, call()))
            .await
        {
            Ok((value, _)) => Ok(value),
            Err(error) => {
                // The retry's own timeout, when its builder set one.
                let limit = match &error {
                    RetryError::TimedOut { timed_out, .. } => timed_out.limit,
                    _ => Duration::ZERO,
                };
                match error.into_inner() {
                    Some((error, _)) => Err(error),
                    None => Err(StackError::Timeout(Timeout::new(
                        TimeoutKind::Attempt,
                        limit,
                    ))),
                }
            }
        }
    }

    /// One attempt: the breaker, the bulkhead, the attempt timeout, the call.
    async fn attempt<T, E, C, Fut>(&self, classifier: &C, call: Fut) -> Attempted<T, E>
    where
        C: Classifier<T, E> + ?Sized,
        Fut: Future<Output = Result<T, E>>,
    {
        let parts = &*self.parts;
        let rejected = |r: Rejected| (StackError::Rejected(r), Outcome::Ignored);
        let permit = match &parts.circuit_breaker {
            Some(breaker) => Some(breaker.try_acquire().map_err(rejected)?),
            None => None,
        };
        // A bulkhead rejection drops the breaker's permit unrecorded: the
        // dependency did not fail, and a half-open probe place goes back.
        let _slot = match &parts.bulkhead {
            Some(bulkhead) => Some(bulkhead.acquire().await.map_err(rejected)?),
            None => None,
        };
        let result = match Deadline::new(&*parts.sleeper, parts.attempt_timeout, call).await {
            Ok(result) => result,
            Err(Expired(limit)) => {
                if let Some(permit) = permit {
                    permit.failure();
                }
                let timeout = Timeout::new(TimeoutKind::Attempt, limit);
                return Err((StackError::Timeout(timeout), Outcome::Failure));
            }
        };
        let outcome = classifier.classify(&result);
        if let Some(permit) = permit {
            permit.record(outcome);
        }
        match result {
            Ok(value) => Ok((value, outcome)),
            Err(error) => Err((StackError::Inner(error), outcome)),
        }
    }
}

/// The answer of a call under the total timeout.
#[inline]
fn total<T, E>(result: Result<Result<T, StackError<E>>, Expired>) -> Result<T, StackError<E>> {
    result.unwrap_or_else(|Expired(limit)| {
        Err(StackError::Timeout(Timeout::new(TimeoutKind::Total, limit)))
    })
}

/// One request through the rate limiter: checked at once, or waited for up
/// to the limiter's `max_wait`, outside the total timeout.
async fn admit(limiter: &RateLimiter) -> Result<(), Rejected> {
    if limiter.max_wait().is_zero() {
        return limiter
            .check()
            .map(drop)
            .map_err(|denied| denied.rejected());
    }
    match limiter.acquire().await {
        Ok(_) => Ok(()),
        Err(error) => Err(match error.denied() {
            Some(denied) => denied.rejected(),
            // One request is never over the burst, and the `stack` feature
            // turns on `tokio`, so the limiter always has a sleeper: this is
            // the refusal of a limiter that cannot wait.
            None => Rejected::new(Pattern::RateLimit, "no_sleeper", None),
        }),
    }
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &*self.parts;
        f.debug_struct("Stack")
            .field("name", &p.name)
            .field("rate_limiter", &p.rate_limiter.is_some())
            .field("total_timeout", &p.total_timeout)
            .field("retry", &p.retry)
            .field(
                "circuit_breaker",
                &p.circuit_breaker.as_ref().map(CircuitBreaker::state),
            )
            .field("bulkhead", &p.bulkhead.is_some())
            .field("attempt_timeout", &p.attempt_timeout)
            .finish_non_exhaustive()
    }
}
