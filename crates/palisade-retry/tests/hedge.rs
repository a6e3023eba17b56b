//! Hedged calls under paused tokio time.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_retry::{
    Event, Hedge, HedgeBuilder, HedgeDelay, RetryBudget, StopReason, TokioClock, TokioSleeper,
};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

fn paused(delay: HedgeDelay, events: &Arc<Mutex<Vec<Event>>>) -> HedgeBuilder {
    let seen = Arc::clone(events);
    Hedge::builder()
        .delay(delay)
        .clock(TokioClock::shared())
        .sleeper(TokioSleeper::shared())
        .no_budget()
        .listener(move |e: &Event| seen.lock().unwrap().push(*e))
}

/// Counts its drops, so a test can see an attempt cancelled.
struct DropCounter(Arc<AtomicU32>);

impl Drop for DropCounter {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_first_attempt_is_hedged_and_dropped() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let hedge = paused(HedgeDelay::Fixed(50 * MS), &events).build().unwrap();
    let dropped = Arc::new(AtomicU32::new(0));
    let t0 = Instant::now();
    let answer = hedge
        .call(|attempt| {
            let guard = DropCounter(Arc::clone(&dropped));
            async move {
                let _guard = guard;
                if attempt.number() == 1 {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(10 * MS).await;
                Ok::<_, io::Error>(attempt.number())
            }
        })
        .await
        .unwrap();
    assert_eq!(answer, 2);
    assert_eq!(t0.elapsed(), 60 * MS);
    // Both attempts' futures are gone: the winner finished, the hung one was dropped.
    assert_eq!(dropped.load(Ordering::SeqCst), 2);
    assert_eq!(
        *events.lock().unwrap(),
        [
            Event::HedgeStarted {
                attempt: 2,
                after: 50 * MS
            },
            Event::Finished {
                attempts: 2,
                stop: StopReason::Succeeded
            }
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_fast_answer_sends_no_hedge() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let hedge = paused(HedgeDelay::Fixed(50 * MS), &events).build().unwrap();
    let attempts = AtomicU32::new(0);
    for _ in 0..100 {
        let answer = hedge
            .call(|_| {
                attempts.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(20 * MS).await;
                    Ok::<_, io::Error>(1)
                }
            })
            .await
            .unwrap();
        assert_eq!(answer, 1);
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 100);
    assert!(
        !events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::HedgeStarted { .. }))
    );
}

#[tokio::test(start_paused = true)]
async fn a_failure_starts_the_next_attempt_at_once_and_the_last_error_is_returned() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let hedge = paused(HedgeDelay::Fixed(Duration::from_secs(10)), &events)
        .max_attempts(3)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let err = hedge
        .call(|attempt| async move {
            tokio::time::sleep(5 * MS).await;
            Err::<(), _>(io::Error::other(format!("failure {}", attempt.number())))
        })
        .await
        .unwrap_err();
    assert_eq!(t0.elapsed(), 15 * MS);
    assert_eq!(err.attempts(), 3);
    assert_eq!(err.stop(), StopReason::MaxAttempts);
    assert_eq!(err.into_inner().unwrap().to_string(), "failure 3");
}

#[tokio::test(start_paused = true)]
async fn the_percentile_delay_is_learned_from_the_window_before() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let hedge = paused(
        HedgeDelay::Percentile {
            percentile: 0.9,
            window: Duration::from_secs(1),
            min_samples: 10,
        },
        &events,
    )
    .build()
    .unwrap();
    assert_eq!(hedge.current_delay(), None);
    // 10 answers in the first second: 10, 20, …, 100 ms.
    for i in 1..=10u32 {
        let latency = MS * (i * 10);
        hedge
            .call(|_| async move {
                tokio::time::sleep(latency).await;
                Ok::<_, io::Error>(())
            })
            .await
            .unwrap();
    }
    assert_eq!(hedge.current_delay(), None, "the first window is not over");
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The 9th of 10 is 90 ms; its bucket reaches up to 94.37 ms.
    let delay = hedge.current_delay().expect("learned");
    assert!(delay >= 90 * MS && delay < 95 * MS, "{delay:?}");
    assert!(
        !events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::HedgeStarted { .. })),
        "no hedge before the delay was known"
    );
    // Now a slow call is hedged after that delay.
    let t0 = Instant::now();
    let answer = hedge
        .call(|attempt| async move {
            if attempt.number() == 1 {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Ok::<_, io::Error>(attempt.number())
        })
        .await
        .unwrap();
    assert_eq!(answer, 2);
    // tokio's timer counts whole milliseconds, rounding up.
    let on_tokio_timer = Duration::from_millis(delay.as_nanos().div_ceil(1_000_000) as u64);
    assert_eq!(t0.elapsed(), on_tokio_timer);
}

#[tokio::test(start_paused = true)]
async fn hedges_are_paid_from_the_budget() {
    let budget = RetryBudget::builder()
        .percent(0.0)
        .min_per_second(1)
        .window(Duration::from_secs(2))
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let hedge = paused(HedgeDelay::Fixed(10 * MS), &events)
        .budget(budget.clone())
        .build()
        .unwrap();
    let attempts = AtomicU32::new(0);
    for _ in 0..5 {
        hedge
            .call(|_| {
                attempts.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(30 * MS).await;
                    Ok::<_, io::Error>(())
                }
            })
            .await
            .unwrap();
    }
    // 5 slow calls, but the budget holds 2 hedges.
    assert_eq!(attempts.load(Ordering::SeqCst), 5 + 2);
    let exhausted = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Event::BudgetExhausted { .. }))
        .count();
    // The three refused hedges were of calls that then succeeded: no failure to report.
    assert_eq!(exhausted, 0);
}

#[tokio::test(start_paused = true)]
async fn a_call_the_budget_stops_reports_it_once() {
    let budget = RetryBudget::builder()
        .percent(0.0)
        .min_per_second(0)
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let hedge = paused(HedgeDelay::Fixed(10 * MS), &events)
        .max_attempts(3)
        .budget(budget)
        .build()
        .unwrap();
    let err = hedge
        .call(|_| async {
            tokio::time::sleep(30 * MS).await;
            Err::<(), _>(io::Error::other("down"))
        })
        .await
        .unwrap_err();
    assert_eq!(err.stop(), StopReason::BudgetExhausted);
    assert_eq!(
        *events.lock().unwrap(),
        [
            Event::BudgetExhausted { attempts: 1 },
            Event::Finished {
                attempts: 1,
                stop: StopReason::BudgetExhausted
            }
        ]
    );
}

#[test]
fn bad_configuration_names_the_builder_method() {
    let err = Hedge::builder().max_attempts(1).build().unwrap_err();
    assert_eq!(err.field(), "max_attempts");
    for percentile in [0.0, 1.0, f64::NAN] {
        let err = Hedge::builder()
            .delay(HedgeDelay::percentile(percentile))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "delay");
    }
    let err = Hedge::builder().name("").build().unwrap_err();
    assert_eq!(err.field(), "name");
    let err = Hedge::builder()
        .delay(HedgeDelay::Fixed(Duration::ZERO))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "delay");
}
