//! The tower middleware: a [`BulkheadLayer`] and the [`BulkheadService`] it makes.
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

use tower_service::Service;

use crate::bulkhead::Wait;
use crate::error::Rejected;
use crate::permit::OwnedPermit;
use crate::{Bulkhead, Event};

pub use future::ResponseFuture;
pub use layer::BulkheadLayer;

/// tower's error type: what every tower middleware's error converts into.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the layer treats a call it has no permit for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `poll_ready` takes a permit by the bulkhead's policy; a call without one is rejected.
    Reject,
    /// `poll_ready` waits until it has a permit.
    Backpressure,
}

/// A service that runs at most the bulkhead's limit of calls at once; made by
/// [`BulkheadLayer`], whose docs say how the two behaviours differ.
///
/// Clones share the bulkhead; a clone starts without a permit, as tower's
/// `ConcurrencyLimit` does. A permit taken by `poll_ready` is held until the
/// next `call`'s future finishes, or until the service is dropped.
pub struct BulkheadService<S> {
    inner: S,
    ready: Readiness,
}

/// What `poll_ready` has got so far; gives it back when dropped.
struct Readiness {
    bulkhead: Bulkhead,
    mode: Mode,
    state: State,
}

enum State {
    Idle,
    Waiting(Wait),
    Holding(OwnedPermit),
    Refused(Rejected),
}

impl Readiness {
    /// Ready once the service holds a permit or a rejection for the next call.
    #[inline]
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let State::Refused(_) = self.state {
            // A refusal is for the call that follows the poll that made it;
            // polled again, the service asks the bulkhead again.
            self.state = State::Idle;
        }
        if let State::Idle = self.state {
            let shared = &self.bulkhead.shared;
            // The hot path: one compare-and-swap, no wait set up.
            if shared.try_take(1).is_ok() {
                shared.listeners.emit_with(|| Event::Permitted {
                    weight: 1,
                    waited: None,
                });
                self.state = State::Holding(OwnedPermit::new(self.bulkhead.clone(), 1));
                return Poll::Ready(());
            }
        }
        self.poll_slow(cx)
    }

    /// Everything but a permit taken at once: waiting, or a permit or rejection already held.
    #[cold]
    #[inline(never)]
    fn poll_slow(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match &mut self.state {
                State::Idle => {
                    self.state = State::Waiting(Wait::new(1, self.mode == Mode::Reject));
                }
                State::Waiting(wait) => {
                    let result = ready!(wait.poll_units(&self.bulkhead.shared, cx));
                    self.state = match result {
                        Ok(()) => State::Holding(OwnedPermit::new(self.bulkhead.clone(), 1)),
                        Err(rejected) => State::Refused(rejected),
                    };
                    return Poll::Ready(());
                }
                State::Holding(_) | State::Refused(_) => return Poll::Ready(()),
            }
        }
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        if let State::Waiting(wait) = &mut self.state {
            wait.cancel(&self.bulkhead.shared);
        }
    }
}

impl<S> BulkheadService<S> {
    /// Wraps `inner` with `bulkhead`, rejecting calls without a permit (as [`BulkheadLayer::new`]).
    pub fn new(inner: S, bulkhead: Bulkhead) -> Self {
        Self::with_mode(inner, bulkhead, Mode::Reject)
    }

    pub(crate) fn with_mode(inner: S, bulkhead: Bulkhead, mode: Mode) -> Self {
        Self {
            inner,
            ready: Readiness {
                bulkhead,
                mode,
                state: State::Idle,
            },
        }
    }

    /// The bulkhead this service takes permits from.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.ready.bulkhead
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped (a permit this service held is given back).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for BulkheadService<S> {
    fn clone(&self) -> Self {
        Self::with_mode(
            self.inner.clone(),
            self.ready.bulkhead.clone(),
            self.ready.mode,
        )
    }
}

impl<S: fmt::Debug> fmt::Debug for BulkheadService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadService")
            .field("inner", &self.inner)
            .field("bulkhead", &self.ready.bulkhead.name())
            .field("mode", &self.ready.mode)
            .field(
                "holds_permit",
                &matches!(self.ready.state, State::Holding(_)),
            )
            .finish()
    }
}

impl<S, Request> Service<Request> for BulkheadService<S>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.ready.poll(cx));
        if let State::Refused(_) = self.ready.state {
            // The next call is rejected without reaching the inner service.
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match std::mem::replace(&mut self.ready.state, State::Idle) {
            State::Holding(permit) => ResponseFuture::called(self.inner.call(request), permit),
            State::Refused(rejected) => ResponseFuture::rejected(rejected),
            other => {
                // `call` without a ready `poll_ready` breaks tower's contract;
                // the call is refused rather than run unlimited.
                if let State::Waiting(mut wait) = other {
                    wait.cancel(&self.ready.bulkhead.shared);
                }
                ResponseFuture::rejected(
                    self.ready
                        .bulkhead
                        .shared
                        .refuse_now(1, crate::Reason::Full),
                )
            }
        }
    }
}
