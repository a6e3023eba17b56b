//! A timeout whose timer is made only when the call has to wait.
//!
//! Core's `timeout` asks the sleeper for its (boxed) sleep up front. Here the
//! start is read from the clock, the call is polled, and only a call that is
//! still pending gets a sleep, for what is left of the limit. A call that
//! completes at its first poll costs one clock read and allocates nothing.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{Clock, Sleep, Sleeper};

pin_project_lite::pin_project! {
    /// `future`, cut off once `limit` has passed since it was made.
    pub(crate) struct Deadline<'a, F> {
        #[pin]
        future: F,
        clock: &'a dyn Clock,
        sleeper: &'a dyn Sleeper,
        started: u64,
        limit: Duration,
        sleep: Option<Sleep>,
    }
}

impl<'a, F: Future> Deadline<'a, F> {
    pub(crate) fn new(
        clock: &'a dyn Clock,
        sleeper: &'a dyn Sleeper,
        limit: Duration,
        future: F,
    ) -> Self {
        Self {
            future,
            clock,
            sleeper,
            started: clock.now_nanos(),
            limit,
            sleep: None,
        }
    }
}

/// The limit passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expired;

impl<F: Future> Future for Deadline<'_, F> {
    type Output = Result<F::Output, Expired>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if this.sleep.is_none() {
            let elapsed =
                Duration::from_nanos(this.clock.now_nanos().saturating_sub(*this.started));
            let Some(left) = this.limit.checked_sub(elapsed).filter(|d| !d.is_zero()) else {
                return Poll::Ready(Err(Expired));
            };
            *this.sleep = Some(this.sleeper.sleep(left));
        }
        match this.sleep.as_mut().map(|s| s.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(Expired)),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::ManualClock;
    use std::task::Waker;

    #[test]
    fn a_pending_future_is_cut_off_at_the_limit_counted_from_its_creation() {
        let clock = ManualClock::new();
        let mut cx = Context::from_waker(Waker::noop());
        let mut d = Box::pin(Deadline::new(
            &clock,
            &clock,
            Duration::from_secs(5),
            std::future::pending::<()>(),
        ));
        clock.advance(Duration::from_secs(2));
        // First poll: pending, a sleep for the 3 s that are left.
        assert!(d.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_millis(2_999));
        assert!(d.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_millis(1));
        assert_eq!(d.as_mut().poll(&mut cx), Poll::Ready(Err(Expired)));
    }

    #[test]
    fn a_ready_future_wins_even_past_its_limit_and_a_late_first_poll_expires() {
        let clock = ManualClock::new();
        let mut cx = Context::from_waker(Waker::noop());
        let mut ready = Box::pin(Deadline::new(
            &clock,
            &clock,
            Duration::from_secs(1),
            std::future::ready(7),
        ));
        clock.advance(Duration::from_secs(9));
        assert_eq!(ready.as_mut().poll(&mut cx), Poll::Ready(Ok(7)));
        let mut late = Box::pin(Deadline::new(
            &clock,
            &clock,
            Duration::from_secs(1),
            std::future::pending::<()>(),
        ));
        clock.advance(Duration::from_secs(1));
        assert_eq!(late.as_mut().poll(&mut cx), Poll::Ready(Err(Expired)));
    }
}
