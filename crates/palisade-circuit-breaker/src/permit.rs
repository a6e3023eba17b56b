//! Permission to make one call, returned by `try_acquire`.

use palisade_core::{Classifier, DefaultClassifier, Outcome};

use crate::State;
use crate::breaker::{CircuitBreaker, Ticket};

/// Permission to make one call. Record the call's outcome on it; dropping it
/// unrecorded counts nothing and gives a half-open probe place back.
///
/// ```
/// use palisade_circuit_breaker::CircuitBreaker;
///
/// let breaker = CircuitBreaker::builder().build()?;
/// if let Ok(permit) = breaker.try_acquire() {
///     let result: Result<u32, std::io::Error> = Ok(7); // the call itself
///     permit.record_result(&result);
/// }
/// # Ok::<(), palisade_circuit_breaker::ConfigError>(())
/// ```
#[derive(Debug)]
#[must_use = "a permit records nothing unless its outcome is recorded"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    ticket: Ticket,
    armed: bool,
}

impl<'a> Permit<'a> {
    #[inline]
    pub(crate) fn new(breaker: &'a CircuitBreaker, ticket: Ticket) -> Self {
        Self {
            breaker,
            ticket,
            armed: true,
        }
    }

    /// The state that admitted this call (closed, half-open for a probe, or a manual state).
    pub fn state(&self) -> State {
        self.ticket.state()
    }

    /// Records the call's outcome.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        self.armed = false;
        self.breaker.complete(self.ticket, outcome);
    }

    /// Records a success.
    #[inline]
    pub fn success(self) {
        self.record(Outcome::Success);
    }

    /// Records a failure.
    #[inline]
    pub fn failure(self) {
        self.record(Outcome::Failure);
    }

    /// Records the outcome of `result` with the default classifier (`Err` is a failure).
    #[inline]
    pub fn record_result<T, E>(self, result: &Result<T, E>) {
        self.record(DefaultClassifier.classify(result));
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.armed {
            self.breaker.release(self.ticket);
        }
    }
}

/// A permit that owns a handle to its breaker, for futures that must be `'static`.
#[derive(Debug)]
pub(crate) struct OwnedPermit {
    breaker: CircuitBreaker,
    ticket: Ticket,
    armed: bool,
}

impl OwnedPermit {
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    #[inline]
    pub(crate) fn new(breaker: CircuitBreaker, ticket: Ticket) -> Self {
        Self {
            breaker,
            ticket,
            armed: true,
        }
    }

    /// Records the outcome, once; later calls do nothing.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    #[inline]
    pub(crate) fn record(&mut self, outcome: Outcome) {
        if self.armed {
            self.armed = false;
            self.breaker.complete(self.ticket, outcome);
        }
    }
}

impl Drop for OwnedPermit {
    #[inline]
    fn drop(&mut self) {
        if self.armed {
            self.breaker.release(self.ticket);
        }
    }
}
