//! The tower middleware: a [`RateLimitLayer`] and the [`RateLimitService`] it makes.
//!
//! Shaped like tower's own `timeout`: the Service here, the Layer in
//! `layer.rs`, the response future in `future.rs`. Errors are tower's
//! [`BoxError`]: a refusal is a boxed [`Rejected`](crate::Rejected) and the
//! inner service's errors pass through as they are, so both are found again
//! by downcasting, under `Buffer`, `LoadShed`, `Timeout` or any other layer.

mod future;
mod layer;

use std::fmt;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::{Rejected, Sleep};
use tower_service::Service;

use crate::limiter::{Reservation, Reserve};
use crate::{Error, KeyedRateLimiter, RateLimiter};

pub use future::ResponseFuture;
pub use layer::RateLimitLayer;

/// tower's error type: what every tower middleware's error converts into.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A refusal as a `BoxError`: a denial is boxed as core's [`Rejected`], any
/// other error as [`Error`].
pub(crate) fn into_box(e: Error) -> BoxError {
    match e {
        Error::Denied(d) => Box::new(Rejected::from(d)),
        other => Box::new(other),
    }
}

/// What limits the requests of a [`RateLimitService`]: a [`RateLimiter`]
/// (one limit for all) or a [`Keyed`] limiter (one per key of the request).
pub trait RequestLimiter<Request> {
    /// Admits `request` now, or says why not.
    ///
    /// # Errors
    /// As the limiter's `check`.
    fn check_request(&self, request: &Request) -> Result<(), Error>;

    /// The direct limiter, for waiting in `poll_ready` (only a direct one can:
    /// `poll_ready` does not see the request).
    #[doc(hidden)]
    fn direct(&self) -> Option<&RateLimiter> {
        None
    }
}

impl<Request> RequestLimiter<Request> for RateLimiter {
    #[inline]
    fn check_request(&self, _: &Request) -> Result<(), Error> {
        self.check().map(drop).map_err(Error::Denied)
    }

    fn direct(&self) -> Option<&RateLimiter> {
        Some(self)
    }
}

/// A keyed limiter and the function that gives each request's key; made by
/// [`RateLimitLayer::keyed`].
#[derive(Clone)]
pub struct Keyed<K, F> {
    limiter: KeyedRateLimiter<K>,
    key: F,
}

impl<K, F> Keyed<K, F> {
    /// The keyed limiter.
    pub fn limiter(&self) -> &KeyedRateLimiter<K> {
        &self.limiter
    }
}

impl<K, F> fmt::Debug for Keyed<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyed")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<K, F, Request> RequestLimiter<Request> for Keyed<K, F>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    F: Fn(&Request) -> K,
{
    #[inline]
    fn check_request(&self, request: &Request) -> Result<(), Error> {
        self.limiter.check(&(self.key)(request)).map(drop)
    }
}

/// A service behind a rate limit. Clones share the limiter.
///
/// By default `poll_ready` is the inner service's, and `call` checks the
/// limit: over it, the call returns a boxed [`Rejected`] without calling
/// the inner service. With [`RateLimitLayer::waiting`] (direct limiter
/// only), `poll_ready` reserves a slot and waits for it instead.
pub struct RateLimitService<S, L> {
    inner: S,
    limiter: L,
    /// `Some` in waiting mode.
    wait: Option<Wait>,
}

/// Where a waiting service is between `poll_ready` and `call`.
enum Wait {
    /// Nothing reserved.
    Idle,
    /// Waiting for a reserved slot; dropping it gives the slot back.
    Sleeping(Waiting),
    /// Admitted; the next call uses it.
    Admitted,
    /// Refused (the slot would be due after `max_wait`): the next call is rejected.
    Refused(Error),
}

/// A reserved slot and the sleep until it is due; canceled if dropped first.
struct Waiting {
    limiter: RateLimiter,
    reservation: Option<Reservation>,
    sleep: Sleep,
}

impl Waiting {
    /// The wait is over: admitted.
    fn finish(&mut self) {
        if let Some(r) = self.reservation.take() {
            self.limiter.finish(&r);
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(r) = self.reservation.take() {
            self.limiter.cancel(&r);
        }
    }
}

impl<S, L> RateLimitService<S, L> {
    pub(crate) fn new(inner: S, limiter: L, wait: bool) -> Self {
        Self {
            inner,
            limiter,
            wait: wait.then_some(Wait::Idle),
        }
    }

    /// The limiter.
    pub fn limiter(&self) -> &L {
        &self.limiter
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped (a slot this service was waiting for is given back).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, L: Clone> Clone for RateLimitService<S, L> {
    /// A clone shares the limiter; it starts with nothing reserved.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            wait: self.wait.as_ref().map(|_| Wait::Idle),
        }
    }
}

impl<S: fmt::Debug, L: fmt::Debug> fmt::Debug for RateLimitService<S, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitService")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .field("waiting", &self.wait.is_some())
            .finish()
    }
}

/// Reserves a slot, or waits for the one reserved, until admitted or refused.
fn poll_wait(state: &mut Wait, limiter: &RateLimiter, cx: &mut Context<'_>) -> Poll<()> {
    loop {
        match state {
            Wait::Admitted | Wait::Refused(_) => return Poll::Ready(()),
            Wait::Sleeping(waiting) => {
                ready!(waiting.sleep.as_mut().poll(cx));
                waiting.finish();
                *state = Wait::Admitted;
            }
            Wait::Idle => {
                *state = match limiter.reserve(1) {
                    Ok(Reserve::Ready(_)) => Wait::Admitted,
                    Ok(Reserve::Wait(reservation)) => {
                        if let Some(sleeper) = limiter.sleeper() {
                            Wait::Sleeping(Waiting {
                                limiter: limiter.clone(),
                                sleep: sleeper.sleep(Duration::from_nanos(reservation.wait)),
                                reservation: Some(reservation),
                            })
                        } else {
                            limiter.cancel(&reservation);
                            Wait::Refused(Error::NoSleeper)
                        }
                    }
                    Err(e) => Wait::Refused(e),
                };
            }
        }
    }
}

impl<S, L, Request> Service<Request> for RateLimitService<S, L>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
    L: RequestLimiter<Request>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let (Some(state), Some(limiter)) = (&mut self.wait, self.limiter.direct()) {
            ready!(poll_wait(state, limiter, cx));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let checked = match self.wait.as_mut().map(|w| std::mem::replace(w, Wait::Idle)) {
            Some(Wait::Admitted) => Ok(()),
            Some(Wait::Refused(e)) => Err(e),
            // Called without poll_ready, or before its wait was over (a
            // dropped `Waiting` gives its slot back): check now.
            Some(Wait::Idle | Wait::Sleeping(_)) | None => self.limiter.check_request(&request),
        };
        match checked {
            Ok(()) => ResponseFuture::called(self.inner.call(request)),
            Err(e) => ResponseFuture::rejected(e),
        }
    }
}
