//! The tower middleware: a [`CircuitBreakerLayer`] and the [`CircuitBreakerService`] it makes.
//!
//! Shaped like tower's own `timeout`: the Service here, the Layer in
//! `layer.rs`, the response future in `future.rs`. Errors are tower's
//! [`BoxError`]: a rejection is a boxed [`Rejected`](crate::Rejected) and the
//! inner service's errors pass through as they are, so both are found again
//! by downcasting, under `Buffer`, `LoadShed`, `Timeout` or any other layer.

mod future;
mod layer;

use std::fmt;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::{Classifier, DefaultClassifier, SharedSleeper, Sleep};
use tower_service::Service;

use crate::CircuitBreaker;

pub use future::ResponseFuture;
pub use layer::CircuitBreakerLayer;

/// tower's error type: what every tower middleware's error converts into.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A service guarded by a circuit breaker: rejects calls while the breaker is
/// open and records every response and error through the classifier.
///
/// Clones share the breaker. By default `poll_ready` is the inner service's
/// and a rejected call returns a boxed [`Rejected`](crate::Rejected) without
/// calling the inner service. With [`CircuitBreakerLayer::backpressure`],
/// `poll_ready` also stays pending while the breaker would reject, so a
/// `LoadShed` above sheds and a `Buffer` above waits. It takes nothing from
/// the breaker (a half-open probe is taken by `call`, as without
/// backpressure), so a service left ready and idle holds no probe, and a call
/// made after the breaker opened is still judged when it is made.
pub struct CircuitBreakerService<S, C = DefaultClassifier> {
    inner: S,
    breaker: CircuitBreaker,
    classifier: C,
    backpressure: Option<Backpressure>,
}

/// What `poll_ready` needs when it holds callers back.
pub(crate) struct Backpressure {
    sleeper: SharedSleeper,
    /// The longest wait before asking the breaker again.
    recheck: Duration,
    /// The wait until the breaker is asked again.
    wait: Option<Sleep>,
}

impl Backpressure {
    pub(crate) fn new(sleeper: SharedSleeper, recheck: Duration) -> Self {
        Self {
            sleeper,
            recheck,
            wait: None,
        }
    }

    /// A fresh copy for a clone of the service: same settings, no wait.
    fn fresh(&self) -> Self {
        Self::new(self.sleeper.clone(), self.recheck)
    }

    /// Ready once the breaker would admit a call. The breaker is asked on
    /// every poll, so a reset or a manual transition is seen by the next
    /// caller; a waiting caller is woken when a probe is due or after
    /// `recheck`, whichever is sooner.
    fn poll_admitted(&mut self, breaker: &CircuitBreaker, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let after = match breaker.admits() {
                Ok(()) => {
                    self.wait = None;
                    return Poll::Ready(());
                }
                Err(after) => after.map_or(self.recheck, |d| d.min(self.recheck)),
            };
            let wait = self.wait.get_or_insert_with(|| self.sleeper.sleep(after));
            ready!(wait.as_mut().poll(cx));
            self.wait = None;
        }
    }
}

impl<S, C> CircuitBreakerService<S, C> {
    /// Wraps `inner` with `breaker`, judging results with `classifier`.
    pub fn new(inner: S, breaker: CircuitBreaker, classifier: C) -> Self {
        Self {
            inner,
            breaker,
            classifier,
            backpressure: None,
        }
    }

    pub(crate) fn with_backpressure(mut self, backpressure: Option<Backpressure>) -> Self {
        self.backpressure = backpressure;
        self
    }

    /// The breaker this service reports to.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreakerService<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
            backpressure: self.backpressure.as_ref().map(Backpressure::fresh),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreakerService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerService")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker.name())
            .field("backpressure", &self.backpressure.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, C, Request> Service<Request> for CircuitBreakerService<S, C>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
    C: Classifier<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Some(backpressure) = &mut self.backpressure {
            ready!(backpressure.poll_admitted(&self.breaker, cx));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.breaker.try_acquire_owned() {
            Ok(permit) => {
                ResponseFuture::called(self.inner.call(request), permit, self.classifier.clone())
            }
            Err(rejected) => ResponseFuture::rejected(rejected),
        }
    }
}
