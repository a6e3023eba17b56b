//! The retry budget against a small model, and under many threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_retry::{ManualClock, RetryBudget};
use proptest::prelude::*;

const SLICES: u64 = 10;

#[derive(Debug, Clone)]
enum Op {
    Deposit(u8),
    Withdraw(u8),
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..40).prop_map(Op::Deposit),
        4 => (1u8..20).prop_map(Op::Withdraw),
        2 => (1u16..3000).prop_map(Op::Advance),
    ]
}

/// Finagle's budget as a list of dated calls and retries.
struct Model {
    reserve: u64,
    /// Per call, in millionths of a retry.
    deposit: u64,
    slice_ms: u64,
    deposits: Vec<u64>,
    withdrawals: Vec<u64>,
}

impl Model {
    fn new(percent: f64, min_per_second: u32, window_s: u64) -> Self {
        Self {
            reserve: u64::from(min_per_second) * window_s,
            deposit: (percent * 1_000_000.0).floor() as u64,
            slice_ms: window_s * 1000 / SLICES,
            deposits: Vec::new(),
            withdrawals: Vec::new(),
        }
    }

    fn in_window(&self, times: &[u64], now: u64) -> u64 {
        let epoch = now / self.slice_ms;
        let first = epoch.saturating_sub(SLICES - 1);
        times
            .iter()
            .filter(|t| **t / self.slice_ms >= first)
            .count() as u64
    }

    fn covers_a_retry(&self, now: u64) -> bool {
        let balance = self.reserve * 1_000_000 + self.in_window(&self.deposits, now) * self.deposit;
        let spent = self.in_window(&self.withdrawals, now) * 1_000_000;
        balance >= spent + 1_000_000
    }
}

fn budget(clock: &ManualClock, percent: f64, min_per_second: u32, window_s: u64) -> RetryBudget {
    RetryBudget::builder()
        .percent(percent)
        .min_per_second(min_per_second)
        .window(Duration::from_secs(window_s))
        .clock(clock.shared())
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// With the budget's current slice kept up to date before each deposit,
    /// every withdrawal is granted exactly when the model grants it.
    #[test]
    fn grants_exactly_as_the_model(
        percent in prop_oneof![Just(0.0), Just(0.2), Just(0.6), Just(1.0), 0.0f64..1.0],
        min_per_second in 0u32..4,
        window_s in 1u64..20,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let clock = ManualClock::new();
        let budget = budget(&clock, percent, min_per_second, window_s);
        let mut model = Model::new(percent, min_per_second, window_s);
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Deposit(n) => {
                    for _ in 0..n {
                        let _ = budget.available(); // brings the current slice up to the clock
                        budget.deposit();
                        model.deposits.push(now);
                    }
                }
                Op::Withdraw(n) => {
                    for _ in 0..n {
                        let expected = model.covers_a_retry(now);
                        prop_assert_eq!(budget.try_withdraw(), expected, "at {} ms", now);
                        if expected {
                            model.withdrawals.push(now);
                        }
                    }
                }
                Op::Advance(ms) => {
                    now += u64::from(ms);
                    clock.advance(Duration::from_millis(u64::from(ms)));
                }
            }
        }
    }

    /// Left to date deposits by itself (its clock read every 16th deposit and
    /// at every withdrawal), the budget grants a retry only if, with it, the
    /// retries of the window ending then are at most
    /// `min_per_second × window + percent × calls` of that window, the calls
    /// dated by when they were really made.
    #[test]
    fn never_grants_more_than_the_bound(
        percent in prop_oneof![Just(0.0), Just(0.2), Just(0.6), 0.0f64..1.0],
        min_per_second in 0u32..4,
        window_s in 1u64..20,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let clock = ManualClock::new();
        let budget = budget(&clock, percent, min_per_second, window_s);
        let mut model = Model::new(percent, min_per_second, window_s);
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Deposit(n) => {
                    for _ in 0..n {
                        budget.deposit();
                        model.deposits.push(now);
                    }
                }
                Op::Withdraw(n) => {
                    for _ in 0..n {
                        if budget.try_withdraw() {
                            model.withdrawals.push(now);
                            let granted = model.in_window(&model.withdrawals, now) * 1_000_000;
                            let bound = model.reserve * 1_000_000
                                + model.in_window(&model.deposits, now) * model.deposit;
                            prop_assert!(granted <= bound, "at {} ms: {} > {}", now, granted, bound);
                        }
                    }
                }
                Op::Advance(ms) => {
                    now += u64::from(ms);
                    clock.advance(Duration::from_millis(u64::from(ms)));
                }
            }
        }
    }
}

#[test]
fn sixty_percent_grants_sixty_percent() {
    // tower#857: a TpsBudget asked for 60 % granted 100 %.
    let clock = ManualClock::new();
    let budget = budget(&clock, 0.6, 0, 10);
    for _ in 0..1000 {
        budget.deposit();
    }
    let granted = (0..2000).filter(|_| budget.try_withdraw()).count();
    assert_eq!(granted, 600);
}

#[test]
fn the_reserve_comes_back_after_the_window() {
    let clock = ManualClock::new();
    let budget = budget(&clock, 0.0, 10, 10);
    assert_eq!((0..500).filter(|_| budget.try_withdraw()).count(), 100);
    clock.advance(Duration::from_millis(9_999));
    assert_eq!(budget.available(), 0);
    clock.advance(Duration::from_millis(1));
    assert_eq!(budget.available(), 100);
}

#[test]
fn many_threads_on_one_budget_get_exact_totals() {
    const THREADS: u64 = 8;
    const CALLS: u64 = 20_000;
    let clock = ManualClock::new();
    let budget = budget(&clock, 0.2, 10, 10);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..CALLS {
                    budget.deposit();
                }
            });
        }
    });
    let granted = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..CALLS {
                    if budget.try_withdraw() {
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    // 10 per second × 10 s, plus a fifth of 160,000 calls.
    assert_eq!(granted.load(Ordering::Relaxed), 100 + 32_000);
    assert_eq!(budget.available(), 0);
}

#[test]
fn concurrent_deposits_and_withdrawals_stay_within_the_bound() {
    const THREADS: u64 = 4;
    const CALLS: u64 = 50_000;
    let clock = ManualClock::new();
    let budget = Arc::new(budget(&clock, 0.1, 0, 10));
    let granted = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for i in 0..CALLS {
                    budget.deposit();
                    if i % 2 == 0 && budget.try_withdraw() {
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let granted = granted.load(Ordering::Relaxed);
    // Never more than a tenth of the calls; with a withdrawal asked every
    // other call, at most one tenth's worth is left unspent at the end.
    assert!(granted <= THREADS * CALLS / 10, "{granted}");
    assert_eq!(granted + budget.available(), THREADS * CALLS / 10);
}
