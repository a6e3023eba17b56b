use std::borrow::Borrow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{Outcome, Sleep};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{BoxError, Replay};
use crate::Retry;
use crate::budget::Withdrawal;
use crate::error::{StopReason, TimedOut};
use crate::policy::RetryPolicy;
use crate::retry::{CallState, Inner, Next};

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
        // The last attempt's result, kept while the next one is prepared: it
        // is the answer if the deadline passes before that one can start.
        last: Option<Result<S::Response, BoxError>>,
        // Fires at the deadline while waiting for a delay or for readiness.
        deadline: Option<Sleep>,
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
            last: None,
            deadline: None,
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
            let inner = &*(*this.retry).borrow().inner;
            match this.state.as_mut().project() {
                StateProj::Calling { future, timeout } => {
                    let (result, timed_out) = match future.poll(cx) {
                        Poll::Ready(result) => (result.map_err(Into::into), false),
                        Poll::Pending => match timeout.as_mut().map(|s| s.as_mut().poll(cx)) {
                            Some(Poll::Ready(())) => {
                                let limit = this.limit.unwrap_or_default();
                                inner.timed_out(this.call.attempts, limit);
                                let attempt = this.call.attempts;
                                let error: BoxError = Box::new(TimedOut { attempt, limit });
                                (Err(error), true)
                            }
                            _ => return Poll::Pending,
                        },
                    };
                    let (outcome, retry_after) = if timed_out {
                        (Outcome::Failure, None)
                    } else {
                        (
                            this.policy.classify(&result),
                            this.policy.retry_after(&result),
                        )
                    };
                    let next = match outcome {
                        Outcome::Success => Next::Stop(StopReason::Succeeded),
                        Outcome::Ignored => Next::Stop(StopReason::NotRetryable),
                        Outcome::Failure
                            if this.spare.is_none() && this.call.attempts < inner.max_attempts =>
                        {
                            Next::Stop(StopReason::NotRetryable)
                        }
                        Outcome::Failure => inner.after_failure(this.call, retry_after),
                    };
                    match next {
                        Next::Stop(stop) => {
                            inner.finish(this.call, stop);
                            return Poll::Ready(result);
                        }
                        Next::Retry { delay, withdrawal } => {
                            *this.withdrawal = withdrawal;
                            *this.last = Some(result);
                            *this.deadline = inner
                                .remaining(this.call)
                                .map(|left| inner.sleeper.sleep(left));
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
                    if sleep.as_mut().poll(cx).is_pending() {
                        if deadline_passed(this.deadline, cx) {
                            return Poll::Ready(give_up(
                                inner,
                                this.call,
                                this.withdrawal,
                                this.last,
                            ));
                        }
                        return Poll::Pending;
                    }
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    // A sleeper may wake late: no attempt starts with no time left.
                    if inner.remaining(this.call) == Some(Duration::ZERO) {
                        return Poll::Ready(give_up(inner, this.call, this.withdrawal, this.last));
                    }
                    match this.service.poll_ready(cx) {
                        Poll::Pending => {
                            if deadline_passed(this.deadline, cx) {
                                return Poll::Ready(give_up(
                                    inner,
                                    this.call,
                                    this.withdrawal,
                                    this.last,
                                ));
                            }
                            return Poll::Pending;
                        }
                        Poll::Ready(Err(error)) => {
                            // The service cannot take the retry: its error is the call's.
                            refund(inner, this.withdrawal);
                            inner.finish(this.call, StopReason::NotRetryable);
                            return Poll::Ready(Err(error.into()));
                        }
                        Poll::Ready(Ok(())) => {}
                    }
                    let Some(request) = this.spare.take() else {
                        // Only after a panic in `replay` or the inner `call`, polled again.
                        return Poll::Ready(Err(
                            "the retry's response future was polled after a panic".into(),
                        ));
                    };
                    *this.spare = this.replay.replay(&request);
                    *this.withdrawal = None;
                    *this.last = None;
                    *this.deadline = None;
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

fn deadline_passed(deadline: &mut Option<Sleep>, cx: &mut Context<'_>) -> bool {
    deadline
        .as_mut()
        .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
}

fn refund(inner: &Inner, withdrawal: &mut Option<Withdrawal>) {
    if let (Some(w), Some(budget)) = (withdrawal.take(), &inner.budget) {
        budget.refund(w);
    }
}

/// The deadline passed before the next attempt could start: the retry the
/// budget granted goes back, and the last attempt's result is the answer.
fn give_up<T>(
    inner: &Inner,
    call: &CallState,
    withdrawal: &mut Option<Withdrawal>,
    last: &mut Option<Result<T, BoxError>>,
) -> Result<T, BoxError> {
    refund(inner, withdrawal);
    inner.finish(call, StopReason::Deadline);
    last.take()
        .unwrap_or_else(|| Err("the retry's response future was polled after it finished".into()))
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
