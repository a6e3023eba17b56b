//! The tower middleware: a [`CircuitBreakerLayer`] and the [`CircuitBreakerService`] it makes.

mod future;
mod layer;

use std::task::{Context, Poll};

use palisade_core::{Classifier, DefaultClassifier};
use tower_service::Service;

use crate::CircuitBreaker;
use crate::error::CallError;
use crate::permit::OwnedPermit;

pub use future::ResponseFuture;
pub use layer::CircuitBreakerLayer;

/// A service guarded by a circuit breaker: rejects calls while the breaker is
/// open and records every response and error through the classifier.
///
/// Clones share the breaker. A rejected call returns [`CallError::Rejected`]
/// without calling the inner service.
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S, C = DefaultClassifier> {
    inner: S,
    breaker: CircuitBreaker,
    classifier: C,
}

impl<S, C> CircuitBreakerService<S, C> {
    /// Wraps `inner` with `breaker`, judging results with `classifier`.
    pub fn new(inner: S, breaker: CircuitBreaker, classifier: C) -> Self {
        Self {
            inner,
            breaker,
            classifier,
        }
    }

    /// The breaker this service reports to.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, C, Request> Service<Request> for CircuitBreakerService<S, C>
where
    S: Service<Request>,
    C: Classifier<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = CallError<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(CallError::Inner)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.breaker.acquire_ticket() {
            Ok(ticket) => ResponseFuture::called(
                self.inner.call(request),
                OwnedPermit::new(self.breaker.clone(), ticket),
                self.classifier.clone(),
            ),
            Err(rejected) => ResponseFuture::rejected(rejected),
        }
    }
}
