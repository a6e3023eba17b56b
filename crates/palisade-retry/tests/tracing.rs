//! The `tracing` feature: retries, exhausted budgets and failed calls become events with the crate's target.
#![cfg(feature = "tracing")]

use std::io;
use std::time::Duration;

use palisade_retry::{Backoff, ManualClock, Retry, RetryBudget};
use palisade_test_support::Collector;
use tracing::Level;

#[test]
fn retries_and_the_budget_are_traced_with_the_instance_name() {
    let collect = Collector::new();
    let clock = ManualClock::new();
    let budget = RetryBudget::builder()
        .percent(0.0)
        .min_per_second(1)
        .window(Duration::from_secs(1))
        .clock(clock.shared())
        .build()
        .unwrap();
    let retry = Retry::builder()
        .tracing()
        .name("ledger")
        .backoff(Backoff::fixed(Duration::from_millis(100)))
        .max_delay(Duration::ZERO) // retries at once: nothing to wait for here
        .clock(clock.shared())
        .sleeper(clock.sleeper())
        .budget(budget)
        .build()
        .unwrap();
    let _ = collect.run(|| {
        futures::executor::block_on(
            retry.call(|_| async { Err::<(), _>(io::Error::other("down")) }),
        )
    });
    let events = collect.events();
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.target.as_str(), e.level, e.fields.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "palisade_retry",
                Level::DEBUG,
                "message=retry scheduled instance=ledger attempt=2 delay=0ns from_result=false"
            ),
            (
                "palisade_retry",
                Level::WARN,
                "message=retry budget exhausted; returning the last error instance=ledger attempts=2"
            ),
            (
                "palisade_retry",
                Level::DEBUG,
                "message=call failed instance=ledger attempts=2 stop=budget_exhausted"
            ),
        ]
    );
}
