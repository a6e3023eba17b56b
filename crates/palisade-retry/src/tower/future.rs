use std::borrow::Borrow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::{Outcome, Sleep};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{BoxError, Replay};
use crate::Retry;
use crate::budget::Withdrawal;
use crate::error::{StopReason, TimedOut};
use crate::policy::RetryPolicy;
use crate::retry::{CallState, Next};

pin_project! {
    /// The response future of [`RetryService`](super::RetryService).
    ///
    /// Concrete and allocation-free while the first attempt answers (a
    /// per-attempt timeout or deadline adds one boxed sleep per attempt, a
    /// retry one for its delay). Dropping it drops the attempt in flight or
    /// the delay, and gives back a retry the budget granted but that never
    /// started.
    pub struct ResponseFuture<S, Req, P, R, H = Retry>
    where
        S: Service<Req>,
        H: Borrow<Retry>,
    {
        #[pin]
        state: State<S::Future>,
        service: S,
        spare: Option<Req>,
        retry: H,
        policy: P,
        replay: R,
        call: CallState,
        limit: Option<Duration>,
        withdrawal: Option<Withdrawal>,
    }

    impl<S, Req, P, R, H> PinnedDrop for ResponseFuture<S, Req, P, R, H>
    where
        S: Service<Req>,
        H: Borrow<Retry>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let (Some(withdrawal), Some(budget)) =
                (this.withdrawal.take(), (*this.retry).borrow().budget())
            {
                budget.refund(withdrawal);
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        /// An attempt is in flight.
        Calling {
            #[pin]
            future: F,
            timeout: Option<Sleep>,
        },
        /// The delay before the next attempt.
        Waiting {
            sleep: Sleep,
        },
        /// Waiting for the service clone to be ready for the next attempt.
        Readying,
    }
}

impl<S, Req, P, R, H> ResponseFuture<S, Req, P, R, H>
where
    S: Service<Req>,
    H: Borrow<Retry>,
{
    // Measured: see `RetryService::call`.
    #[allow(clippy::inline_always)]
    #[inline(always)]
    pub(crate) fn start(
        mut service: S,
        request: Req,
        spare: Option<Req>,
        retry: H,
        policy: P,
        replay: R,
    ) -> Self {
        let inner = &*retry.borrow().inner;
        let mut call = inner.begin();
        inner.start_attempt(&mut call);
        let limit = inner.attempt_limit(&call);
        let timeout = limit.map(|limit| inner.sleeper.sleep(limit));
        let future = service.call(request);
        Self {
            state: State::Calling { future, timeout },
            service,
            spare,
            retry,
            policy,
            replay,
            call,
            limit,
            withdrawal: None,
        }
    }
}

impl<S, Req, P, R, H> Future for ResponseFuture<S, Req, P, R, H>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: RetryPolicy<S::Response, BoxError>,
    R: Replay<Req>,
    H: Borrow<Retry>,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future, timeout } => {
                    let result = match future.poll(cx) {
                        Poll::Ready(result) => Some(result.map_err(Into::into)),
                        Poll::Pending => match timeout.as_mut().map(|s| s.as_mut().poll(cx)) {
                            Some(Poll::Ready(())) => None,
                            _ => return Poll::Pending,
                        },
                    };
                    let inner = &*(*this.retry).borrow().inner;
                    let limit = this.limit.unwrap_or_default();
                    if result.is_none() {
                        inner.timed_out(this.call.attempts, limit);
                    }
                    let (outcome, retry_after) = match &result {
                        Some(result) => (
                            this.policy.classify(result),
                            this.policy.retry_after(result),
                        ),
                        None => (Outcome::Failure, None),
                    };
                    let next = match outcome {
                        Outcome::Success => Next::Stop(StopReason::Succeeded),
                        Outcome::Ignored => Next::Stop(StopReason::NotRetryable),
                        Outcome::Failure if this.spare.is_none() => {
                            Next::Stop(StopReason::NotRetryable)
                        }
                        Outcome::Failure => inner.after_failure(this.call, retry_after),
                    };
                    match next {
                        Next::Stop(stop) => {
                            inner.finish(this.call, stop);
                            return Poll::Ready(match result {
                                Some(result) => result,
                                None => Err(Box::new(TimedOut {
                                    attempt: this.call.attempts,
                                    limit,
                                })),
                            });
                        }
                        Next::Retry { delay, withdrawal } => {
                            *this.withdrawal = withdrawal;
                            if delay.is_zero() {
                                this.state.set(State::Readying);
                            } else {
                                let sleep = inner.sleeper.sleep(delay);
                                this.state.set(State::Waiting { sleep });
                            }
                        }
                    }
                }
                StateProj::Waiting { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    if let Err(error) = ready!(this.service.poll_ready(cx)) {
                        // The service cannot take the retry: its error is the call's.
                        let inner = &*(*this.retry).borrow().inner;
                        if let (Some(w), Some(budget)) = (this.withdrawal.take(), &inner.budget) {
                            budget.refund(w);
                        }
                        inner.finish(this.call, StopReason::NotRetryable);
                        return Poll::Ready(Err(error.into()));
                    }
                    let inner = &*(*this.retry).borrow().inner;
                    let Some(request) = this.spare.take() else {
                        unreachable!("a retry is scheduled only with a spare request");
                    };
                    *this.spare = this.replay.replay(&request);
                    *this.withdrawal = None;
                    inner.start_attempt(this.call);
                    *this.limit = inner.attempt_limit(this.call);
                    let timeout = this.limit.map(|limit| inner.sleeper.sleep(limit));
                    let future = this.service.call(request);
                    this.state.set(State::Calling { future, timeout });
                }
            }
        }
    }
}

impl<S, Req, P, R, H> std::fmt::Debug for ResponseFuture<S, Req, P, R, H>
where
    S: Service<Req>,
    H: Borrow<Retry>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.call.attempts)
            .finish_non_exhaustive()
    }
}
