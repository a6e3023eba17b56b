//! The retry budget: Finagle's token bucket over a sliding window.
//!
//! ```text
//!   every call      deposit   +D units   (D = percent × 1,000,000, rounded down)
//!   every retry     withdraw  −W units   (W = 1,000,000), only if the balance ≥ W
//!   always there    reserve   min_per_second × window retries, × W
//!   balance       = reserve + D × deposits − W × withdrawals, over the window
//! ```
//!
//! Deposits and withdrawals are kept in 10 slices of `window / 10`; a slice
//! older than the window is forgotten, deposits and withdrawals alike, which is
//! what lets the reserve come back. A retry is granted only if the balance
//! covers it, so whenever one is granted, the retries of the window ending
//! then are at most `min_per_second × window + percent × calls` of that
//! window, exactly in integers
//! (tower's `TpsBudget` rounds the percentage to a whole number of tokens per
//! call and grants 100 % when asked for 60 %: tower#857).
//!
//! # Concurrency
//!
//! A deposit is on every call's path, so it is one atomic add to the current
//! slice, with no lock and no clock read. The current slice is the one of the
//! budget's last clock reading, taken by every withdrawal and by every 16th
//! deposit of a slice; a deposit may therefore be dated a little earlier than
//! it happened, never later, so it leaves the window early, never late: the
//! budget errs towards fewer retries, never more. (At rates below about 16
//! calls per slice, some deposits count as older than they are; the reserve is
//! what such a trickle relies on.) Withdrawals, rotations and the balance are
//! read under one mutex, so concurrent retries are granted exactly as the
//! balance allows; that path runs only after a failure.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade_core::sync::{AtomicU64, Mutex};
use palisade_core::{CachePadded, ConfigError, SharedClock, TokioClock, duration_to_nanos};

const SLICES: usize = 10;
/// One retry, in budget units.
const WITHDRAWAL: u64 = 1_000_000;
/// Every 16th deposit into a slice reads the clock, so the current slice keeps up.
const CLOCK_EVERY: u64 = 16;

/// A retry budget shared by every clone and every call that uses it: each call
/// deposits, each retry withdraws, and a retry the balance cannot cover is not
/// made.
///
/// Finagle's semantics and defaults: retries may add `percent` (20 %) to the
/// calls of the last `window` (10 s), plus `min_per_second` (10) retries per
/// second of the window that are always there, so a client that calls rarely
/// can still retry. The same budget can be given to several
/// [`Retry`](crate::Retry) and [`Hedge`](crate::Hedge) instances, so a
/// service's retries to one dependency share one cap.
///
/// ```
/// use palisade_retry::{ManualClock, RetryBudget};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let budget = RetryBudget::builder()
///     .percent(0.5)
///     .min_per_second(0)
///     .window(Duration::from_secs(10))
///     .clock(clock.shared())
///     .build()?;
/// for _ in 0..4 {
///     budget.deposit();
/// }
/// // Half of 4 calls: 2 retries, not a third.
/// assert!(budget.try_withdraw());
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw());
/// // Once the window has passed, deposits and withdrawals are forgotten.
/// clock.advance(Duration::from_secs(10));
/// assert_eq!(budget.available(), 0);
/// # Ok::<(), palisade_retry::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    /// The epoch (clock nanos / slice length) of the budget's last clock reading.
    current: CachePadded<AtomicU64>,
    slices: [Slice; SLICES],
    /// Taken to rotate, withdraw, or read the balance.
    lock: Mutex<()>,
    slice_nanos: u64,
    deposit_units: u64,
    reserve_units: u64,
    clock: SharedClock,
    percent: f64,
    min_per_second: u32,
    window: Duration,
}

#[derive(Default)]
struct Slice {
    /// The epoch whose calls the counts below hold.
    epoch: AtomicU64,
    deposits: AtomicU64,
    withdrawals: AtomicU64,
}

/// A granted retry that may be handed back, if the retry is never made, with
/// [`RetryBudget::refund`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Withdrawal {
    epoch: u64,
}

impl RetryBudget {
    /// A builder with Finagle's defaults: 20 %, 10 retries per second, a 10 s window.
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder {
            percent: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
            clock: None,
        }
    }

    /// Records a call: it adds `percent` of a retry to the balance.
    #[inline]
    pub fn deposit(&self) {
        let inner = &*self.inner;
        let epoch = inner.current.load(Ordering::Acquire);
        let slice = &inner.slices[epoch as usize % SLICES];
        let before = slice.deposits.fetch_add(1, Ordering::AcqRel);
        if (before + 1).is_multiple_of(CLOCK_EVERY) {
            inner.refresh();
        }
    }

    /// Takes one retry from the balance; `false` if the balance cannot cover
    /// it (nothing is taken then).
    pub fn try_withdraw(&self) -> bool {
        self.withdraw().is_some()
    }

    pub(crate) fn withdraw(&self) -> Option<Withdrawal> {
        let inner = &*self.inner;
        let _guard = inner.lock.lock();
        let epoch = inner.rotate_locked();
        if inner.balance_locked() < i128::from(WITHDRAWAL) {
            return None;
        }
        inner.slices[epoch as usize % SLICES]
            .withdrawals
            .fetch_add(1, Ordering::AcqRel);
        Some(Withdrawal { epoch })
    }

    /// Gives back a withdrawal whose retry was never made (its caller went
    /// away during the delay). A withdrawal older than its slice is already
    /// forgotten and gives back nothing.
    pub(crate) fn refund(&self, withdrawal: Withdrawal) {
        let inner = &*self.inner;
        let _guard = inner.lock.lock();
        let slice = &inner.slices[withdrawal.epoch as usize % SLICES];
        if slice.epoch.load(Ordering::Acquire) == withdrawal.epoch {
            let _ = slice
                .withdrawals
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| w.checked_sub(1));
        }
    }

    /// How many retries the balance covers now.
    pub fn available(&self) -> u64 {
        let inner = &*self.inner;
        let _guard = inner.lock.lock();
        inner.rotate_locked();
        let balance = inner.balance_locked().max(0);
        u64::try_from(balance / i128::from(WITHDRAWAL)).unwrap_or(u64::MAX)
    }

    /// The share of calls that may be retried.
    pub fn percent(&self) -> f64 {
        self.inner.percent
    }

    /// The retries per second of the window that are always there.
    pub fn min_per_second(&self) -> u32 {
        self.inner.min_per_second
    }

    /// How far back deposits and withdrawals count.
    pub fn window(&self) -> Duration {
        self.inner.window
    }

    /// `true` if both are the same budget (clones of one another).
    pub fn same_as(&self, other: &RetryBudget) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Inner {
    /// Moves the current slice up to the clock, unless another thread is doing so.
    #[cold]
    fn refresh(&self) {
        if let Some(_guard) = self.lock.try_lock() {
            self.rotate_locked();
        }
    }

    /// Forgets the slices that have left the window and returns the current epoch.
    fn rotate_locked(&self) -> u64 {
        let now = self.clock.now_nanos() / self.slice_nanos;
        let current = self.current.load(Ordering::Acquire);
        if now > current {
            let first = (current + 1).max(now.saturating_sub(SLICES as u64 - 1));
            for epoch in first..=now {
                let slice = &self.slices[epoch as usize % SLICES];
                slice.deposits.store(0, Ordering::Release);
                slice.withdrawals.store(0, Ordering::Release);
                slice.epoch.store(epoch, Ordering::Release);
            }
            self.current.store(now, Ordering::Release);
            now
        } else {
            current
        }
    }

    fn balance_locked(&self) -> i128 {
        let (deposits, withdrawals) = self.slices.iter().fold((0u64, 0u64), |(d, w), s| {
            (
                d.saturating_add(s.deposits.load(Ordering::Acquire)),
                w.saturating_add(s.withdrawals.load(Ordering::Acquire)),
            )
        });
        i128::from(self.reserve_units) + i128::from(deposits) * i128::from(self.deposit_units)
            - i128::from(withdrawals) * i128::from(WITHDRAWAL)
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("percent", &self.inner.percent)
            .field("min_per_second", &self.inner.min_per_second)
            .field("window", &self.inner.window)
            .finish_non_exhaustive()
    }
}

/// Which budget a retry or hedge builder was asked for.
pub(crate) enum BudgetChoice {
    /// A budget of its own with Finagle's defaults, on the instance's clock.
    Default,
    Shared(RetryBudget),
    None,
}

impl BudgetChoice {
    pub(crate) fn resolve(self, clock: &SharedClock) -> Result<Option<RetryBudget>, ConfigError> {
        match self {
            Self::Default => RetryBudget::builder()
                .clock(clock.clone())
                .build()
                .map(Some)
                .map_err(|e| ConfigError::new("budget", e.reason().to_owned())),
            Self::Shared(budget) => Ok(Some(budget)),
            Self::None => Ok(None),
        }
    }
}

/// Builds a [`RetryBudget`]; see [`RetryBudget::builder`].
#[derive(Clone)]
#[must_use]
pub struct RetryBudgetBuilder {
    percent: f64,
    min_per_second: u32,
    window: Duration,
    clock: Option<SharedClock>,
}

impl RetryBudgetBuilder {
    /// The share of calls that may be retried, in `[0, 1]` (default 0.2: a
    /// retry for every fifth call). Counted exactly, to a millionth.
    pub fn percent(mut self, percent: f64) -> Self {
        self.percent = percent;
        self
    }

    /// Retries per second of the window that are there even without calls
    /// (default 10): `min_per_second × window` of them in any window.
    pub fn min_per_second(mut self, retries: u32) -> Self {
        self.min_per_second = retries;
        self
    }

    /// How far back calls and retries count, from 1 s to 60 s (default 10 s).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The clock the window runs on (default: tokio's clock, which is the
    /// system clock unless tokio's time is paused).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Checks the settings and builds the budget.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        if !(0.0..=1.0).contains(&self.percent) {
            return Err(ConfigError::new(
                "percent",
                format!("must be in [0, 1], got {}", self.percent),
            ));
        }
        if self.window < Duration::from_secs(1) || self.window > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "window",
                format!("must be from 1 s to 60 s, got {:?}", self.window),
            ));
        }
        let clock = self.clock.unwrap_or_else(TokioClock::shared);
        let slice_nanos = duration_to_nanos(self.window) / SLICES as u64;
        let reserve_retries =
            (f64::from(self.min_per_second) * self.window.as_secs_f64()).floor() as u64;
        let current = clock.now_nanos() / slice_nanos;
        let slices: [Slice; SLICES] = Default::default();
        // Each slice starts as the one of its epoch in the window that ends now.
        for back in 0..SLICES as u64 {
            if let Some(epoch) = current.checked_sub(back) {
                slices[epoch as usize % SLICES]
                    .epoch
                    .store(epoch, Ordering::Relaxed);
            }
        }
        Ok(RetryBudget {
            inner: Arc::new(Inner {
                current: CachePadded(AtomicU64::new(current)),
                slices,
                lock: Mutex::new(()),
                slice_nanos,
                deposit_units: (self.percent * WITHDRAWAL as f64).floor() as u64,
                reserve_units: reserve_retries.saturating_mul(WITHDRAWAL),
                clock,
                percent: self.percent,
                min_per_second: self.min_per_second,
                window: self.window,
            }),
        })
    }
}

impl fmt::Debug for RetryBudgetBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudgetBuilder")
            .field("percent", &self.percent)
            .field("min_per_second", &self.min_per_second)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

/// Every interleaving of deposits, a rotation and withdrawals (loom, up to 3
/// preemptions). Run with `RUSTFLAGS="--cfg palisade_loom" CARGO_TARGET_DIR=target/loom
/// cargo test -p palisade-retry --lib --release loom`.
#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;
    use palisade_core::ManualClock;

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(f);
    }

    fn budget(clock: &ManualClock, percent: f64) -> RetryBudget {
        RetryBudget::builder()
            .percent(percent)
            .min_per_second(0)
            .window(Duration::from_secs(1))
            .clock(clock.shared())
            .build()
            .unwrap()
    }

    /// Concurrent deposits and a withdrawal: nothing granted beyond the
    /// deposits, nothing lost: granted + still available = half the calls.
    #[test]
    fn loom_deposits_and_a_withdrawal_conserve_the_balance() {
        model(|| {
            let clock = ManualClock::new();
            let budget = budget(&clock, 0.5);
            let depositors: Vec<_> = (0..2)
                .map(|_| {
                    let budget = budget.clone();
                    loom::thread::spawn(move || {
                        budget.deposit();
                        budget.deposit();
                    })
                })
                .collect();
            let granted = u64::from(budget.try_withdraw());
            for d in depositors {
                d.join().unwrap();
            }
            assert_eq!(granted + budget.available(), 2);
        });
    }

    /// A deposit made with a stale current slice while a withdrawal moves the
    /// window on: the deposit counts at most once, in a slice no later than
    /// the one it was made in.
    #[test]
    fn loom_a_deposit_racing_a_rotation_counts_at_most_once() {
        model(|| {
            let clock = ManualClock::new();
            let budget = budget(&clock, 1.0);
            // The window moves on; the budget has not read the clock yet.
            clock.advance(Duration::from_millis(1_500));
            let depositor = {
                let budget = budget.clone();
                loom::thread::spawn(move || budget.deposit())
            };
            let granted = u64::from(budget.try_withdraw());
            depositor.join().unwrap();
            let left = budget.available();
            assert!(granted + left <= 1, "granted {granted}, left {left}");
        });
    }
}
