//! The tower middleware: a [`RetryLayer`] and the [`RetryService`] it makes.
//!
//! Shaped like tower's own `retry`: the Service here, the Layer in
//! `layer.rs`, the response future in `future.rs`. A request is retried only
//! if it can be replayed: by default `Req: Clone` ([`CloneRequest`]), or a
//! [`Replay`] hook that returns `None` for a request whose body cannot be sent
//! twice. Errors are tower's [`BoxError`]: the last attempt's error passes
//! through as it is, a timeout is a boxed [`TimedOut`](crate::TimedOut), so
//! both are found by downcasting.

mod future;
mod layer;

use std::borrow::Borrow;
use std::error::Error;
use std::fmt;
use std::task::{Context, Poll};

use palisade_core::Outcome;
use tower_service::Service;

use crate::Retry;
use crate::policy::{RetryPolicy, classify_error};

pub use future::ResponseFuture;
pub use layer::RetryLayer;

/// tower's error type: what every tower middleware's error converts into.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Makes the copy of a request that the next attempt sends.
///
/// `None` means the request cannot be sent again (a streamed body): its
/// failure is returned as it is, with [`StopReason::NotRetryable`](crate::StopReason::NotRetryable).
/// Closures `Fn(&Req) -> Option<Req>` are replay hooks.
pub trait Replay<Req> {
    /// The copy to send next, if there can be one.
    fn replay(&self, request: &Req) -> Option<Req>;
}

impl<Req, F> Replay<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    #[inline]
    fn replay(&self, request: &Req) -> Option<Req> {
        self(request)
    }
}

/// The default replay hook: a clone of the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloneRequest;

impl<Req: Clone> Replay<Req> for CloneRequest {
    #[inline]
    fn replay(&self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

/// The layer's default policy: [`DefaultPolicy`](crate::DefaultPolicy)'s rule
/// for tower's `BoxError` (which does not implement `Error`): every error is
/// retried except a [`Rejected`](crate::Rejected) anywhere in its chain; every
/// response ends the call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultLayerPolicy;

impl<T> RetryPolicy<T, BoxError> for DefaultLayerPolicy {
    #[inline]
    fn classify(&self, result: &Result<T, BoxError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => classify_error(&**e),
        }
    }
}

/// A service whose failed requests are retried (feature `tower`).
///
/// Clones share the [`Retry`]: its budget, its listeners. Each call clones
/// the inner service for its later attempts, as tower's `Retry` does, and
/// waits for that clone to be ready before each retry. `H` is how each
/// call's future holds the retry: a [`Retry`] (an `Arc`, cloned per call),
/// or a `&'static Retry` ([`RetryLayer::from_static`]), which costs nothing
/// to copy.
pub struct RetryService<S, P = DefaultLayerPolicy, R = CloneRequest, H = Retry> {
    inner: S,
    retry: H,
    policy: P,
    replay: R,
}

impl<S, P, R, H: Borrow<Retry>> RetryService<S, P, R, H> {
    pub(crate) fn new(inner: S, retry: H, policy: P, replay: R) -> Self {
        Self {
            inner,
            retry,
            policy,
            replay,
        }
    }

    /// The retry shared by every clone.
    pub fn retry(&self) -> &Retry {
        self.retry.borrow()
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

impl<S, P, R, H, Req> Service<Req> for RetryService<S, P, R, H>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: RetryPolicy<S::Response, BoxError> + Clone,
    R: Replay<Req> + Clone,
    H: Borrow<Retry> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, P, R, H>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    // Always inlined, with `ResponseFuture::start`: the future is then built
    // in place in the caller's frame instead of being copied out of a call
    // (a store-forwarding stall that cost about 10 ns per call; docs/benchmarks.md).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn call(&mut self, request: Req) -> Self::Future {
        // No copy when no retry can follow.
        let spare = if self.retry.borrow().inner.max_attempts > 1 {
            self.replay.replay(&request)
        } else {
            None
        };
        let service = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, service);
        ResponseFuture::start(
            service,
            request,
            spare,
            self.retry.clone(),
            self.policy.clone(),
            self.replay.clone(),
        )
    }
}

impl<S: Clone, P: Clone, R: Clone, H: Clone> Clone for RetryService<S, P, R, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            retry: self.retry.clone(),
            policy: self.policy.clone(),
            replay: self.replay.clone(),
        }
    }
}

impl<S: fmt::Debug, P, R, H: Borrow<Retry>> fmt::Debug for RetryService<S, P, R, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryService")
            .field("inner", &self.inner)
            .field("retry", &self.retry.borrow().name())
            .finish_non_exhaustive()
    }
}
