//! The stack as one tower layer (features `stack` and `tower`).

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};

use palisade_core::Classifier;
use tower_layer::Layer;
use tower_service::Service;

use super::{Stack, StackClassifier, StackError};

/// The [`Stack`] as a tower [`Layer`]: every service it wraps shares the
/// stack's parts (one retry budget, one breaker, one bulkhead).
///
/// ```
/// use palisade::stack::{Stack, StackError};
/// use palisade::core::Pattern;
/// use palisade::bulkhead::Bulkhead;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let stack = Stack::builder()
///     .bulkhead(Bulkhead::builder().max_concurrent_calls(1))
///     .build()?;
/// let service = stack.layer().layer(service_fn(|name: &'static str| async move {
///     Ok::<_, std::io::Error>(format!("hello {name}"))
/// }));
/// assert_eq!(service.clone().oneshot("ada").await?, "hello ada");
///
/// // Its error is the stack's, and converts into tower's `BoxError`.
/// let slot = stack.bulkhead().unwrap().try_acquire()?;
/// let err = service.oneshot("bob").await.unwrap_err();
/// assert_eq!(err.pattern(), Some(Pattern::Bulkhead));
/// let boxed: tower::BoxError = err.into();
/// assert!(palisade::core::Rejected::find(&*boxed).is_some());
/// # drop(slot);
/// # let _: Option<StackError<()>> = None;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct StackLayer<C = StackClassifier> {
    stack: Stack,
    classifier: C,
}

impl Stack {
    /// The stack as a tower layer, with [`StackClassifier`].
    pub fn layer(&self) -> StackLayer {
        StackLayer {
            stack: self.clone(),
            classifier: StackClassifier,
        }
    }
}

impl<C> StackLayer<C> {
    /// The same layer with `classifier` deciding what the breaker counts and
    /// the retry retries; see [`Stack::call_with`].
    pub fn classifier<C2>(self, classifier: C2) -> StackLayer<C2> {
        StackLayer {
            stack: self.stack,
            classifier,
        }
    }

    /// The stack.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }
}

impl<S, C: Clone> Layer<S> for StackLayer<C> {
    type Service = StackService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        StackService {
            inner,
            stack: self.stack.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C> fmt::Debug for StackLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackLayer")
            .field("stack", &self.stack)
            .finish_non_exhaustive()
    }
}

/// A service behind the [`Stack`] (see [`StackLayer`]).
///
/// It is always ready: each attempt clones the inner service, waits for the
/// clone to be ready and calls it, inside the bulkhead and the attempt
/// timeout, so an inner service that is slow to be ready is bounded like a
/// slow call. Each attempt sends a clone of the request. The response future
/// is boxed: one allocation per call (the direct [`Stack::call`] makes none).
#[derive(Clone)]
pub struct StackService<S, C = StackClassifier> {
    inner: S,
    stack: Stack,
    classifier: C,
}

impl<S, C> StackService<S, C> {
    /// The stack.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, C> fmt::Debug for StackService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackService")
            .field("inner", &self.inner)
            .field("stack", &self.stack)
            .finish_non_exhaustive()
    }
}

/// The response future of a [`StackService`].
pub type ResponseFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, StackError<E>>> + Send>>;

/// Ready, then called: one attempt on one clone of the service.
async fn ready_call<S: Service<Req>, Req>(
    mut service: S,
    request: Req,
) -> Result<S::Response, S::Error> {
    poll_fn(|cx| service.poll_ready(cx)).await?;
    service.call(request).await
}

impl<S, C, Req> Service<Req> for StackService<S, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
    C: Classifier<S::Response, S::Error> + Clone + Send + 'static,
    Req: Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = StackError<S::Error>;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let inner = self.inner.clone();
        let stack = self.stack.clone();
        let classifier = self.classifier.clone();
        Box::pin(async move {
            // Owned by the closure, so the future needs them `Send`, not `Sync`.
            let attempt = move || ready_call(inner.clone(), request.clone());
            stack.call_with(&classifier, attempt).await
        })
    }
}

/// The [`Stack`] as a tower layer for requests that cannot be sent twice (an
/// HTTP server's, with a streamed body): every part applies but the retry;
/// see [`Stack::call_once`].
#[derive(Clone)]
pub struct StackOnceLayer<C = StackClassifier> {
    stack: Stack,
    classifier: C,
}

impl Stack {
    /// The stack as a tower layer whose calls skip the retry, for requests
    /// that are not `Clone`; with [`StackClassifier`].
    pub fn once_layer(&self) -> StackOnceLayer {
        StackOnceLayer {
            stack: self.clone(),
            classifier: StackClassifier,
        }
    }
}

impl<C> StackOnceLayer<C> {
    /// The same layer with `classifier` deciding what the breaker counts.
    pub fn classifier<C2>(self, classifier: C2) -> StackOnceLayer<C2> {
        StackOnceLayer {
            stack: self.stack,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for StackOnceLayer<C> {
    type Service = StackOnceService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        StackOnceService {
            inner,
            stack: self.stack.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C> fmt::Debug for StackOnceLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackOnceLayer")
            .field("stack", &self.stack)
            .finish_non_exhaustive()
    }
}

/// A service behind the [`Stack`], one attempt per request (see [`StackOnceLayer`]).
///
/// Always ready, like [`StackService`]: the clone that serves a request is
/// made ready inside the bulkhead and the attempt timeout.
#[derive(Clone)]
pub struct StackOnceService<S, C = StackClassifier> {
    inner: S,
    stack: Stack,
    classifier: C,
}

impl<S: fmt::Debug, C> fmt::Debug for StackOnceService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackOnceService")
            .field("inner", &self.inner)
            .field("stack", &self.stack)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for StackOnceService<S, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
    C: Classifier<S::Response, S::Error> + Clone + Send + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = StackError<S::Error>;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let inner = self.inner.clone();
        let stack = self.stack.clone();
        let classifier = self.classifier.clone();
        Box::pin(async move {
            stack
                .call_once_with(&classifier, ready_call(inner, request))
                .await
        })
    }
}
