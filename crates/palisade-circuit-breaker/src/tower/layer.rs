use palisade_core::DefaultClassifier;
use tower_layer::Layer;

use super::CircuitBreakerService;
use crate::CircuitBreaker;

/// Wraps services in one shared [`CircuitBreaker`] (feature `tower`).
///
/// ```
/// use palisade_circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
/// use palisade_core::Outcome;
/// use tower_layer::Layer;
///
/// let breaker = CircuitBreaker::builder().name("users-api").build()?;
/// // Responses are classified too: a 5xx status is a failure even though it is `Ok`.
/// let layer = CircuitBreakerLayer::new(breaker).classifier(|r: &Result<u16, std::io::Error>| match r {
///     Ok(status) if *status >= 500 => Outcome::Failure,
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::Failure,
/// });
/// # let _ = layer;
/// # Ok::<(), palisade_circuit_breaker::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = DefaultClassifier> {
    breaker: CircuitBreaker,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A layer over `breaker` that counts `Err` as failure and `Ok` as success.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            classifier: DefaultClassifier,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Judges each result with `classifier` (cloned into every call's future; keep it small or in an `Arc`).
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breaker.clone(), self.classifier.clone())
    }
}
