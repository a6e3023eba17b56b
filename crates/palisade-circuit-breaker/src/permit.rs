//! Permission to make one call: [`Permit`] borrows its breaker, [`OwnedPermit`]
//! owns a handle to it (for `'static` tasks). Both record once, and give a
//! half-open probe place back when dropped unrecorded.

use std::borrow::Borrow;

use palisade_core::{Classifier, DefaultClassifier, Outcome};

use crate::State;
use crate::breaker::{CircuitBreaker, Ticket};

/// What both permits are: a ticket that is recorded once or released on drop.
#[derive(Debug)]
struct Guard<B: Borrow<CircuitBreaker>> {
    breaker: B,
    ticket: Ticket,
    armed: bool,
}

impl<B: Borrow<CircuitBreaker>> Guard<B> {
    #[inline]
    fn new(breaker: B, ticket: Ticket) -> Self {
        Self {
            breaker,
            ticket,
            armed: true,
        }
    }

    #[inline]
    fn record(&mut self, outcome: Outcome) {
        if self.armed {
            self.armed = false;
            self.breaker.borrow().complete(self.ticket, outcome);
        }
    }
}

impl<B: Borrow<CircuitBreaker>> Drop for Guard<B> {
    #[inline]
    fn drop(&mut self) {
        if self.armed {
            self.breaker.borrow().release(self.ticket);
        }
    }
}

/// Permission to make one call, borrowing the breaker; from
/// [`CircuitBreaker::try_acquire`]. Record the call's outcome on it; dropping
/// it unrecorded counts nothing and gives a half-open probe place back.
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
pub struct Permit<'a>(Guard<&'a CircuitBreaker>);

/// Permission to make one call that owns a handle to its breaker, so it can
/// move into a `'static` task; from [`CircuitBreaker::try_acquire_owned`].
/// Otherwise the same as [`Permit`].
///
/// ```
/// use palisade_circuit_breaker::CircuitBreaker;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let breaker = CircuitBreaker::builder().build()?;
/// let permit = breaker.try_acquire_owned()?;
/// tokio::spawn(async move {
///     let result: Result<(), std::io::Error> = Ok(()); // the call itself
///     permit.record_result(&result);
/// })
/// .await?;
/// assert_eq!(breaker.snapshot().calls, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a permit records nothing unless its outcome is recorded"]
pub struct OwnedPermit(Guard<CircuitBreaker>);

impl<'a> Permit<'a> {
    #[inline]
    pub(crate) fn new(breaker: &'a CircuitBreaker, ticket: Ticket) -> Self {
        Self(Guard::new(breaker, ticket))
    }
}

impl OwnedPermit {
    #[inline]
    pub(crate) fn new(breaker: CircuitBreaker, ticket: Ticket) -> Self {
        Self(Guard::new(breaker, ticket))
    }

    /// Records the outcome through a reference, once; later calls do nothing
    /// (for futures that hold the permit in a pinned field).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    #[inline]
    pub(crate) fn record_in_place(&mut self, outcome: Outcome) {
        self.0.record(outcome);
    }
}

/// The same recording methods on both permits.
macro_rules! recording_methods {
    ($permit:ty) => {
        impl $permit {
            /// The state that admitted this call (closed, half-open for a probe, or a manual state).
            pub fn state(&self) -> State {
                self.0.ticket.state()
            }

            /// Records the call's outcome.
            #[inline]
            pub fn record(mut self, outcome: Outcome) {
                self.0.record(outcome);
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
    };
}

recording_methods!(Permit<'_>);
recording_methods!(OwnedPermit);
