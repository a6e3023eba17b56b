//! Monotonic time as nanoseconds, behind a trait so tests can drive it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::sleep::{SharedSleeper, Sleep, Sleeper};

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
/// It is also a [`Sleeper`]: a sleep on it ends when the clock is advanced
/// past its deadline, so one manual clock drives both what a pattern reads
/// and what it waits for.
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
    shared: Arc<ManualTime>,
}

#[derive(Debug, Default)]
struct ManualTime {
    nanos: AtomicU64,
    /// Sleeps not yet due: their id, deadline and the waker of their last poll.
    /// A sleep removes its entry when it is dropped.
    sleeping: Mutex<Vec<(u64, u64, Waker)>>,
    next_id: AtomicU64,
}

impl ManualClock {
    /// A manual clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`, and wakes the sleeps that are then due.
    pub fn advance(&self, by: Duration) {
        self.shared
            .nanos
            .fetch_add(duration_to_nanos(by), Ordering::SeqCst);
        self.wake_due();
    }

    /// Moves the clock forward to `nanos`; an earlier time is ignored, so the clock stays monotonic.
    pub fn set_nanos(&self, nanos: u64) {
        self.shared.nanos.fetch_max(nanos, Ordering::SeqCst);
        self.wake_due();
    }

    /// This clock as a [`SharedClock`] (sharing the same time as `self`).
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }

    /// This clock as a [`SharedSleeper`] (woken as `self` advances).
    pub fn sleeper(&self) -> SharedSleeper {
        Arc::new(self.clone())
    }

    fn wake_due(&self) {
        let now = self.now_nanos();
        let due: Vec<Waker> = {
            let mut sleeping = self
                .shared
                .sleeping
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let (due, waiting) = std::mem::take(&mut *sleeping)
                .into_iter()
                .partition::<Vec<_>, _>(|(_, deadline, _)| *deadline <= now);
            *sleeping = waiting;
            due.into_iter().map(|(_, _, waker)| waker).collect()
        };
        // Woken outside the lock: a woken task may sleep again at once.
        for waker in due {
            waker.wake();
        }
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        self.shared.nanos.load(Ordering::SeqCst)
    }
}

impl Sleeper for ManualClock {
    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(ManualSleep {
            clock: self.clone(),
            deadline: self.now_nanos().saturating_add(duration_to_nanos(duration)),
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
        })
    }
}

/// A sleep on a [`ManualClock`]: due when the clock reaches its deadline.
struct ManualSleep {
    clock: ManualClock,
    deadline: u64,
    id: u64,
}

impl std::future::Future for ManualSleep {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.clock.now_nanos() >= self.deadline {
            return Poll::Ready(());
        }
        let mut sleeping = self
            .clock
            .shared
            .sleeping
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Checked again under the lock: an advance between the first check
        // and here has already taken the list, and would not wake us.
        if self.clock.now_nanos() >= self.deadline {
            return Poll::Ready(());
        }
        match sleeping.iter_mut().find(|(id, _, _)| *id == self.id) {
            Some(entry) => entry.2.clone_from(cx.waker()),
            None => sleeping.push((self.id, self.deadline, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        let mut sleeping = self
            .clock
            .shared
            .sleeping
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        sleeping.retain(|(id, _, _)| *id != self.id);
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

    #[test]
    fn a_manual_sleep_ends_when_the_clock_passes_its_deadline() {
        use std::sync::atomic::AtomicUsize;
        use std::task::{Context, Wake};

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&woken));
        let mut cx = Context::from_waker(&waker);

        let clock = ManualClock::new();
        let sleeper = clock.sleeper();
        let mut sleep = sleeper.sleep(Duration::from_secs(2));
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_millis(1999));
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
        clock.advance(Duration::from_millis(1));
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert_eq!(sleep.as_mut().poll(&mut cx), Poll::Ready(()));
        // A zero sleep is due at once.
        assert_eq!(
            sleeper.sleep(Duration::ZERO).as_mut().poll(&mut cx),
            Poll::Ready(())
        );
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
