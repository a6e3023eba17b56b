//! Waiting, behind a trait so that one manual clock or `tokio::time::pause`
//! drives every wait and every timeout of a pattern.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The future a [`Sleeper`] returns: boxed, so that sleepers are objects that
/// builders can hold without a type parameter. A wait is never on a hot path;
/// the one allocation per wait is the price of one `Arc<dyn Sleeper>` for all.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>>;

/// Something that can wait for a duration without blocking a thread.
///
/// Every Palisade pattern that waits (a retry delay, a timeout, a reconnect
/// back-off, a subscription's poll) waits through the sleeper of its
/// builder, so a test can make all of it happen at once: pass a
/// [`ManualClock`](crate::ManualClock), which is a sleeper woken by
/// [`advance`](crate::ManualClock::advance), or a `TokioSleeper` (feature
/// `tokio`) under `tokio::time::pause`.
pub trait Sleeper: Send + Sync + fmt::Debug + 'static {
    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// A sleeper shared by every clone of a pattern instance.
pub type SharedSleeper = Arc<dyn Sleeper>;

/// Waits with `tokio::time::sleep`; follows `tokio::time::pause` in tests.
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

#[cfg(feature = "tokio")]
impl TokioSleeper {
    /// The tokio sleeper as a [`SharedSleeper`].
    pub fn shared() -> SharedSleeper {
        Arc::new(Self)
    }
}

#[cfg(feature = "tokio")]
impl Sleeper for TokioSleeper {
    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// The error of a wait cut short by [`timeout`]: the limit passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {0:?}")]
pub struct Elapsed(pub Duration);

/// Runs `future` for at most `limit`, measured by `sleeper`.
///
/// The future is polled first, so one that is ready at once wins even with a
/// zero limit. Dropping the returned future drops both.
///
/// ```
/// use palisade_core::{timeout, Elapsed, ManualClock};
/// use std::future::Future;
/// use std::task::{Context, Poll, Waker};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let mut wait = Box::pin(timeout(&clock, Duration::from_secs(5), std::future::pending::<()>()));
/// let mut cx = Context::from_waker(Waker::noop());
/// assert!(wait.as_mut().poll(&mut cx).is_pending());
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(Err(Elapsed(Duration::from_secs(5)))));
/// ```
pub fn timeout<S, F>(sleeper: &S, limit: Duration, future: F) -> Timeout<F>
where
    S: Sleeper + ?Sized,
    F: Future,
{
    Timeout {
        future,
        sleep: sleeper.sleep(limit),
        limit,
    }
}

pin_project_lite::pin_project! {
    /// The future of [`timeout`]: the future itself, unboxed, and the sleep.
    #[must_use = "futures do nothing unless polled"]
    pub struct Timeout<F> {
        #[pin]
        future: F,
        sleep: Sleep,
        limit: Duration,
    }
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(*this.limit))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    #[test]
    fn a_ready_future_wins_over_a_zero_limit() {
        let clock = ManualClock::new();
        let mut t = Box::pin(timeout(&clock, Duration::ZERO, std::future::ready(7)));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(t.as_mut().poll(&mut cx), Poll::Ready(Ok(7)));
    }

    #[cfg(feature = "tokio")]
    #[tokio::test(start_paused = true)]
    async fn tokio_sleeper_waits_on_paused_time() {
        let start = tokio::time::Instant::now();
        TokioSleeper.sleep(Duration::from_secs(3)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        let r = timeout(
            &TokioSleeper,
            Duration::from_secs(2),
            std::future::pending::<()>(),
        )
        .await;
        assert_eq!(r, Err(Elapsed(Duration::from_secs(2))));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }
}
