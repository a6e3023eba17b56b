use std::time::Duration;

use palisade_core::{DefaultClassifier, SharedSleeper};
use tower_layer::Layer;

use super::{Backpressure, CircuitBreakerService};
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
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = DefaultClassifier> {
    breaker: CircuitBreaker,
    classifier: C,
    backpressure: Option<(SharedSleeper, Duration)>,
}

impl<C> std::fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.breaker.name())
            .field("backpressure", &self.backpressure.as_ref().map(|(_, d)| d))
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerLayer {
    /// A layer over `breaker` that counts `Err` as failure and `Ok` as success.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            classifier: DefaultClassifier,
            backpressure: None,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Judges each result with `classifier` (cloned into every call's future; keep it small or in an `Arc`).
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
            backpressure: self.backpressure,
        }
    }

    /// Holds callers back in `poll_ready` as well as rejecting in `call`:
    /// while the breaker would reject, `poll_ready` stays pending, woken
    /// through `sleeper` when a probe is due or after `recheck`, whichever is
    /// sooner (so a reset, a manual transition or a probe given back is seen
    /// within `recheck`). For stacks that shed on readiness (`LoadShed`) or
    /// queue (`Buffer`; put a `Timeout` above the `Buffer`, since a forced-open
    /// breaker holds it until it is closed). Default: off.
    ///
    /// `poll_ready` takes nothing from the breaker and counts nothing: the
    /// permit is taken by `call`, which may still be rejected if the breaker
    /// changed in between, and only such a call counts as a rejection. A
    /// `recheck` under 1 ms counts as 1 ms, so `poll_ready` never spins.
    #[must_use]
    pub fn backpressure(mut self, sleeper: SharedSleeper, recheck: Duration) -> Self {
        self.backpressure = Some((sleeper, recheck.max(Duration::from_millis(1))));
        self
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breaker.clone(), self.classifier.clone())
            .with_backpressure(
                self.backpressure
                    .as_ref()
                    .map(|(sleeper, recheck)| Backpressure::new(sleeper.clone(), *recheck)),
            )
    }
}
