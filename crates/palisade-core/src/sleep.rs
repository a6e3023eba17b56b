//! Waiting, behind a trait so a pattern does not tie itself to one runtime.

use std::future::Future;
use std::time::Duration;

/// Something that can wait for a duration without blocking a thread.
///
/// The future is an associated type, so waiting allocates nothing.
pub trait Sleeper: Send + Sync + 'static {
    /// The future returned by [`Sleeper::sleep`].
    type Sleep: Future<Output = ()> + Send;

    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> Self::Sleep;
}

/// Waits with `tokio::time::sleep`; follows `tokio::time::pause` in tests.
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

#[cfg(feature = "tokio")]
impl Sleeper for TokioSleeper {
    type Sleep = tokio::time::Sleep;

    fn sleep(&self, duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }
}

#[cfg(all(test, feature = "tokio"))]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_sleeper_waits_on_paused_time() {
        let start = tokio::time::Instant::now();
        TokioSleeper.sleep(Duration::from_secs(3)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
}
