//! A timeout whose timer is made only when the call has to wait.
//!
//! Core's `timeout` asks the sleeper for its (boxed) sleep up front, and a
//! deadline read from a clock costs a clock read per call. Here the call is
//! polled first, and only a call that is pending gets a sleep, for the whole
//! limit, from that moment: a call that completes at its first poll costs
//! nothing and allocates nothing. The limit therefore counts from the call's
//! first wait; the synchronous work of its first poll, which no timeout can
//! interrupt anyway, is not counted.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{Sleep, Sleeper};

pin_project_lite::pin_project! {
    /// `future`, cut off once `limit` (if any) has passed since it first waited.
    pub(crate) struct Deadline<'a, F> {
        #[pin]
        future: F,
        sleeper: &'a dyn Sleeper,
        limit: Option<Duration>,
        sleep: Option<Sleep>,
    }
}

impl<'a, F: Future> Deadline<'a, F> {
    /// With no `limit`, the future as it is.
    #[inline]
    pub(crate) fn new(sleeper: &'a dyn Sleeper, limit: Option<Duration>, future: F) -> Self {
        Self {
            future,
            sleeper,
            limit,
            sleep: None,
        }
    }
}

/// The limit passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expired(pub(crate) Duration);

impl<F: Future> Future for Deadline<'_, F> {
    type Output = Result<F::Output, Expired>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let Some(limit) = *this.limit else {
            return Poll::Pending;
        };
        let sleep = this.sleep.get_or_insert_with(|| this.sleeper.sleep(limit));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Expired(limit))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::ManualClock;
    use std::task::Waker;

    #[test]
    fn a_pending_future_is_cut_off_at_the_limit_counted_from_its_first_wait() {
        let clock = ManualClock::new();
        let mut cx = Context::from_waker(Waker::noop());
        let mut d = Box::pin(Deadline::new(
            &clock,
            Some(Duration::from_secs(5)),
            std::future::pending::<()>(),
        ));
        assert!(d.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_millis(4_999));
        assert!(d.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            d.as_mut().poll(&mut cx),
            Poll::Ready(Err(Expired(Duration::from_secs(5))))
        );
    }

    #[test]
    fn a_ready_future_wins_and_makes_no_sleep() {
        let clock = ManualClock::new();
        let mut cx = Context::from_waker(Waker::noop());
        let mut ready = Box::pin(Deadline::new(
            &clock,
            Some(Duration::from_secs(1)),
            std::future::ready(7),
        ));
        assert_eq!(ready.as_mut().poll(&mut cx), Poll::Ready(Ok(7)));
        assert!(ready.sleep.is_none());
    }
}
