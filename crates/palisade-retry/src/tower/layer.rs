use std::borrow::Borrow;
use std::fmt;

use tower_layer::Layer;

use super::{CloneRequest, DefaultLayerPolicy, RetryService};
use crate::Retry;

/// Wraps services in one shared [`Retry`] (feature `tower`).
///
/// ```
/// use palisade_retry::tower::{BoxError, RetryLayer};
/// use palisade_retry::{Outcome, Retry};
/// use tower_layer::Layer;
///
/// let retry = Retry::builder().name("search").build()?;
/// // Retry 503 responses too, and never replay a request marked as streamed.
/// let layer = RetryLayer::new(retry)
///     .policy(|r: &Result<u16, BoxError>| match r {
///         Ok(503) | Err(_) => Outcome::Failure,
///         Ok(_) => Outcome::Success,
///     })
///     .replay(|req: &(String, bool)| (!req.1).then(|| req.clone()));
/// # let _ = layer;
/// # Ok::<(), palisade_retry::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RetryLayer<P = DefaultLayerPolicy, R = CloneRequest, H = Retry> {
    retry: H,
    policy: P,
    replay: R,
}

impl RetryLayer {
    /// A layer over `retry` with the default policy (every error but a
    /// rejection is retried) that replays requests by cloning them.
    pub fn new(retry: Retry) -> Self {
        Self {
            retry,
            policy: DefaultLayerPolicy,
            replay: CloneRequest,
        }
    }
}

impl RetryLayer<DefaultLayerPolicy, CloneRequest, &'static Retry> {
    /// A layer over a retry that lives as long as the program (built once at
    /// start-up and leaked, `Box::leak(Box::new(retry))`): each call's future
    /// then holds a plain reference instead of a clone of the retry's `Arc`,
    /// which saves two atomic operations per call. The retry, its budget and
    /// its listeners are never freed.
    ///
    /// ```
    /// use palisade_retry::Retry;
    /// use palisade_retry::tower::RetryLayer;
    ///
    /// let retry: &'static Retry = Box::leak(Box::new(Retry::builder().name("search").build()?));
    /// let layer = RetryLayer::from_static(retry);
    /// # let _ = layer;
    /// # Ok::<(), palisade_retry::ConfigError>(())
    /// ```
    pub fn from_static(retry: &'static Retry) -> Self {
        Self {
            retry,
            policy: DefaultLayerPolicy,
            replay: CloneRequest,
        }
    }
}

impl<P, R, H> RetryLayer<P, R, H> {
    /// Judges each attempt's result with `policy`, a
    /// [`RetryPolicy<Response, BoxError>`](crate::RetryPolicy) (cloned into
    /// every call's future; keep it small or in an `Arc`).
    pub fn policy<P2>(self, policy: P2) -> RetryLayer<P2, R, H> {
        RetryLayer {
            retry: self.retry,
            policy,
            replay: self.replay,
        }
    }

    /// Makes each next attempt's request with `replay` (a [`Replay`](super::Replay)
    /// hook or a closure `Fn(&Req) -> Option<Req>`), instead of cloning.
    pub fn replay<R2>(self, replay: R2) -> RetryLayer<P, R2, H> {
        RetryLayer {
            retry: self.retry,
            policy: self.policy,
            replay,
        }
    }
}

impl<S, P: Clone, R: Clone, H: Borrow<Retry> + Clone> Layer<S> for RetryLayer<P, R, H> {
    type Service = RetryService<S, P, R, H>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService::new(
            inner,
            self.retry.clone(),
            self.policy.clone(),
            self.replay.clone(),
        )
    }
}

impl<P, R, H: Borrow<Retry>> fmt::Debug for RetryLayer<P, R, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("retry", &self.retry.borrow().name())
            .finish_non_exhaustive()
    }
}
