//! Monotonic time as nanoseconds, behind a trait so tests can drive it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock read in nanoseconds since an arbitrary origin.
///
/// Every Palisade pattern reads time through this trait, so a test can replace
/// the system clock with a [`ManualClock`] (or, under `tokio::time::pause`, a
/// `TokioClock`) and check timing rules without sleeping.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Nanoseconds since the clock's origin. Never decreases.
    fn now_nanos(&self) -> u64;
}

/// A clock shared by every clone of a pattern instance.
pub type SharedClock = Arc<dyn Clock>;

/// The default clock: [`std::time::Instant`] measured from the moment the clock was made.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A system clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// The system clock as a [`SharedClock`].
    pub fn shared() -> SharedClock {
        Arc::new(Self::new())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        // Seconds and nanoseconds separately: cheaper than a u128 `as_nanos`.
        let d = Instant::now().saturating_duration_since(self.origin);
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()))
    }
}

/// A clock that moves only when told to; clones share the same time.
///
/// ```
/// use palisade_core::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_millis(1500));
/// assert_eq!(clock.now_nanos(), 1_500_000_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos
            .fetch_add(duration_to_nanos(by), Ordering::SeqCst);
    }

    /// Moves the clock forward to `nanos`; an earlier time is ignored, so the clock stays monotonic.
    pub fn set_nanos(&self, nanos: u64) {
        self.nanos.fetch_max(nanos, Ordering::SeqCst);
    }

    /// This clock as a [`SharedClock`] (sharing the same time as `self`).
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }
}

/// A clock that reads `tokio::time::Instant`, so it stops and jumps with
/// `tokio::time::pause` and `tokio::time::advance`.
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

#[cfg(feature = "tokio")]
impl TokioClock {
    /// A tokio clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }

    /// The tokio clock as a [`SharedClock`].
    pub fn shared() -> SharedClock {
        Arc::new(Self::new())
    }
}

#[cfg(feature = "tokio")]
impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "tokio")]
impl Clock for TokioClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        duration_to_nanos(self.origin.elapsed())
    }
}

/// A duration in whole nanoseconds, saturating at `u64::MAX` (about 584 years).
#[inline]
pub fn duration_to_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_shared_by_clones_and_never_goes_back() {
        let clock = ManualClock::new();
        let shared = clock.shared();
        clock.advance(Duration::from_nanos(40));
        assert_eq!(shared.now_nanos(), 40);
        clock.set_nanos(10);
        assert_eq!(shared.now_nanos(), 40);
        clock.set_nanos(70);
        assert_eq!(shared.now_nanos(), 70);
    }

    #[test]
    fn system_clock_is_monotonic() {
        let clock = SystemClock::new();
        let a = clock.now_nanos();
        let b = clock.now_nanos();
        assert!(b >= a);
    }

    #[cfg(feature = "tokio")]
    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::new();
        assert_eq!(clock.now_nanos(), 0);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(clock.now_nanos(), 250_000_000);
    }
}
