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
use crate::permit::OwnedPermit;

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
/// `poll_ready` takes the permit instead and stays pending while the breaker
/// rejects, so a `LoadShed` above sheds and a `Buffer` above waits.
pub struct CircuitBreakerService<S, C = DefaultClassifier> {
    inner: S,
    breaker: CircuitBreaker,
    classifier: C,
    backpressure: Option<Backpressure>,
}

/// What `poll_ready` needs when it holds callers back.
pub(crate) struct Backpressure {
    sleeper: SharedSleeper,
    /// How long to wait before asking again when the breaker cannot say when it will admit.
    recheck: Duration,
    /// The permit taken by `poll_ready`, spent by the next `call`.
    permit: Option<OwnedPermit>,
    /// The wait until the breaker may admit again.
    wait: Option<Sleep>,
}

impl Backpressure {
    pub(crate) fn new(sleeper: SharedSleeper, recheck: Duration) -> Self {
        Self {
            sleeper,
            recheck,
            permit: None,
            wait: None,
        }
    }

    /// A fresh copy for a clone of the service: same settings, no permit, no wait.
    fn fresh(&self) -> Self {
        Self::new(self.sleeper.clone(), self.recheck)
    }

    /// Ready once the breaker has given a permit; pending, with a wake-up set
    /// for when it may admit, while it rejects.
    fn poll_permit(&mut self, breaker: &CircuitBreaker, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Some(wait) = &mut self.wait {
                ready!(wait.as_mut().poll(cx));
                self.wait = None;
            }
            if self.permit.is_some() {
                return Poll::Ready(());
            }
            match breaker.try_acquire_owned() {
                Ok(permit) => self.permit = Some(permit),
                Err(rejected) => {
                    let after = rejected.retry_after().unwrap_or(self.recheck);
                    self.wait = Some(self.sleeper.sleep(after));
                }
            }
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
            ready!(backpressure.poll_permit(&self.breaker, cx));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let permit = match self.backpressure.as_mut().and_then(|b| b.permit.take()) {
            Some(permit) => permit,
            None => match self.breaker.try_acquire_owned() {
                Ok(permit) => permit,
                Err(rejected) => return ResponseFuture::rejected(rejected),
            },
        };
        ResponseFuture::called(self.inner.call(request), permit, self.classifier.clone())
    }
}
