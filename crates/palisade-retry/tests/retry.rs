//! The retry loop: schedules, caps, deadlines, Retry-After, what is not
//! retried, timeouts, the budget and cancellation, under paused tokio time.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_retry::{
    Attempt, Backoff, Event, Jitter, Outcome, Pattern, Rejected, Retry, RetryBudget, RetryBuilder,
    RetryError, RetryPolicy, StopReason, TokioClock, TokioSleeper,
};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

/// A retry on tokio's paused clock, recording every event.
fn paused(events: &Arc<Mutex<Vec<Event>>>) -> RetryBuilder {
    let seen = Arc::clone(events);
    Retry::builder()
        .clock(TokioClock::shared())
        .sleeper(TokioSleeper::shared())
        .no_budget()
        .listener(move |e: &Event| seen.lock().unwrap().push(*e))
}

fn delays(events: &Mutex<Vec<Event>>) -> Vec<Duration> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::RetryScheduled { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect()
}

async fn always_fails(_: Attempt) -> Result<(), io::Error> {
    Err(io::Error::other("down"))
}

#[tokio::test(start_paused = true)]
async fn every_backoff_kind_waits_its_exact_delays() {
    let cases = [
        (Backoff::fixed(100 * MS), [100, 100, 100, 100]),
        (Backoff::linear(100 * MS), [100, 200, 300, 400]),
        (
            Backoff::exponential(100 * MS).factor(3.0),
            [100, 300, 900, 2700],
        ),
        (
            Backoff::exponential(100 * MS).max(Duration::from_millis(250)),
            [100, 200, 250, 250],
        ),
    ];
    for (backoff, expected) in cases {
        let events = Arc::new(Mutex::new(Vec::new()));
        let retry = paused(&events)
            .max_attempts(5)
            .backoff(backoff)
            .build()
            .unwrap();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let err = retry
            .call(|a| {
                starts.lock().unwrap().push(t0.elapsed());
                always_fails(a)
            })
            .await
            .unwrap_err();
        assert_eq!(err.attempts(), 5);
        assert_eq!(err.stop(), StopReason::MaxAttempts);
        let expected: Vec<Duration> = expected.iter().map(|ms: &u32| *ms * MS).collect();
        assert_eq!(delays(&events), expected, "{backoff:?}");
        // The attempts started after exactly those waits, on the paused clock.
        let mut at = Duration::ZERO;
        let mut wanted = vec![at];
        for d in &expected {
            at += *d;
            wanted.push(at);
        }
        assert_eq!(*starts.lock().unwrap(), wanted, "{backoff:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_seeded_jitter_replays_its_draws() {
    for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
        let backoff = Backoff::exponential(100 * MS)
            .max(Duration::from_secs(2))
            .jitter(jitter);
        let events = Arc::new(Mutex::new(Vec::new()));
        let retry = paused(&events)
            .max_attempts(6)
            .backoff(backoff)
            .jitter_seed(7)
            .build()
            .unwrap();
        let _ = retry.call(always_fails).await;
        // The same seed, drawn in the same order, gives the same delays.
        let mut rng = fastrand::Rng::with_seed(7);
        let mut previous = Duration::ZERO;
        let expected: Vec<Duration> = (1..=5)
            .map(|n| {
                let d = backoff.delay_after_with(n, previous, rng.f64());
                previous = d;
                d
            })
            .collect();
        assert_eq!(delays(&events), expected, "{jitter:?}");
        // And a second run of the same retry draws further, not again.
        events.lock().unwrap().clear();
        let _ = retry.call(always_fails).await;
        assert_ne!(delays(&events), expected, "{jitter:?}");
    }
}

#[test]
fn the_cap_holds_after_jitter_over_100_000_draws() {
    // Backoff's own cap, and the retry's max_delay below it.
    for jitter in [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ] {
        let backoff = Backoff::exponential(50 * MS)
            .max(Duration::from_secs(1))
            .jitter(jitter);
        let mut previous = Duration::ZERO;
        for n in 0..100_000u32 {
            let d = backoff.delay_after((n % 12) + 1, previous);
            assert!(d <= Duration::from_secs(1), "{jitter:?}: {d:?}");
            previous = d;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn max_delay_caps_the_schedule_before_the_jitter() {
    // Retry 9 would wait 25.6 s before the cap. Capped after the draw, most
    // of 1,000 callers would wake at exactly 10 s together; capped before
    // it, their delays stay spread over [0, 10 s] (full) or [5 s, 10 s] (equal).
    for (jitter, low) in [
        (Jitter::Full, Duration::ZERO),
        (Jitter::Equal, Duration::from_secs(5)),
    ] {
        let events = Arc::new(Mutex::new(Vec::new()));
        let retry = paused(&events)
            .max_attempts(10)
            .backoff(Backoff::exponential(100 * MS).jitter(jitter))
            .max_delay(Duration::from_secs(10))
            .jitter_seed(3)
            .build()
            .unwrap();
        for _ in 0..1000 {
            let _ = retry.call(always_fails).await;
        }
        let last: Vec<Duration> = events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::RetryScheduled {
                    attempt: 10, delay, ..
                } => Some(*delay),
                _ => None,
            })
            .collect();
        assert_eq!(last.len(), 1000);
        assert!(
            last.iter()
                .all(|d| *d >= low && *d <= Duration::from_secs(10))
        );
        let at_cap = last
            .iter()
            .filter(|d| **d == Duration::from_secs(10))
            .count();
        assert!(
            at_cap <= 1,
            "{jitter:?}: {at_cap} callers wake together at the cap"
        );
        let mean = last.iter().sum::<Duration>() / 1000;
        let expected = (low + Duration::from_secs(10)) / 2;
        assert!(
            mean.abs_diff(expected) < Duration::from_millis(400),
            "{jitter:?}: mean {mean:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_late_wake_starts_no_attempt_with_nothing_left() {
    // 999.5 ms of delay against a 1 s deadline: tokio's timer wakes at 1 s.
    let events = Arc::new(Mutex::new(Vec::new()));
    let retry = paused(&events)
        .max_attempts(2)
        .backoff(Backoff::fixed(Duration::from_micros(999_500)))
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let attempts = AtomicU32::new(0);
    let err = retry
        .call(|_| {
            attempts.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(io::Error::other("down")) }
        })
        .await
        .unwrap_err();
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert_eq!(err.stop(), StopReason::Deadline);
    assert_eq!(err.into_inner().unwrap().to_string(), "down");
}

#[tokio::test(start_paused = true)]
async fn the_default_clock_follows_paused_time() {
    // No clock and no sleeper given: tokio's, both, so the deadline holds.
    let retry = Retry::builder()
        .max_attempts(10)
        .backoff(Backoff::fixed(400 * MS))
        .deadline(Duration::from_secs(1))
        .no_budget()
        .build()
        .unwrap();
    let t0 = Instant::now();
    let err = retry.call(always_fails).await.unwrap_err();
    assert_eq!(err.stop(), StopReason::Deadline);
    assert_eq!(err.attempts(), 3);
    assert_eq!(t0.elapsed(), 800 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_rejection_returned_inside_a_breaker_call_is_not_retried() {
    let breaker = palisade_circuit_breaker::CircuitBreaker::builder()
        .build()
        .unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let retry = paused(&events).max_attempts(3).build().unwrap();
    let calls = AtomicU32::new(0);
    let err = retry
        .call(|_| {
            calls.fetch_add(1, Ordering::SeqCst);
            breaker.call(|| async {
                Err::<(), _>(Rejected::new(Pattern::RateLimit, "exhausted", None))
            })
        })
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(err.stop(), StopReason::NotRetryable);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_never_passed() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let retry = paused(&events)
        .max_attempts(100)
        .backoff(Backoff::fixed(300 * MS))
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    // Each attempt takes 50 ms and fails.
    let err = retry
        .call(|a| {
            seen.lock().unwrap().push((a.number(), a.remaining()));
            async {
                tokio::time::sleep(50 * MS).await;
                Err::<(), _>(io::Error::other("slow and down"))
            }
        })
        .await
        .unwrap_err();
    // Attempts at 0, 350, 700 ms; a fourth would start at 1050 ms: not made.
    assert_eq!(err.stop(), StopReason::Deadline);
    assert_eq!(err.attempts(), 3);
    assert_eq!(t0.elapsed(), 750 * MS);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (1, Some(1000 * MS)),
            (2, Some(650 * MS)),
            (3, Some(300 * MS))
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_attempt_is_cut_at_the_deadline() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let retry = paused(&events)
        .backoff(Backoff::fixed(100 * MS))
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let err = retry
        .call(|_| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, io::Error>(())
        })
        .await
        .unwrap_err();
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    assert!(matches!(
        err,
        RetryError::TimedOut {
            stop: StopReason::Deadline,
            ..
        }
    ));
    assert_eq!(err.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn attempt_timeouts_are_failures_that_are_retried() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let retry = paused(&events)
        .max_attempts(3)
        .backoff(Backoff::fixed(10 * MS))
        .attempt_timeout(200 * MS)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let answer = retry
        .call(|a| async move {
            if a.number() < 3 {
                std::future::pending::<()>().await;
            }
            Ok::<_, io::Error>(a.number())
        })
        .await
        .unwrap();
    assert_eq!(answer, 3);
    assert_eq!(t0.elapsed(), 420 * MS);
    let timeouts: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::AttemptTimedOut { attempt, limit } => Some((*attempt, *limit)),
            _ => None,
        })
        .collect();
    assert_eq!(timeouts, [(1, 200 * MS), (2, 200 * MS)]);
}

#[derive(Debug)]
struct Status(u16, Option<Duration>);

#[tokio::test(start_paused = true)]
async fn retry_after_overrides_the_backoff_and_is_capped() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let retry = paused(&events)
        .max_attempts(4)
        .backoff(Backoff::fixed(100 * MS))
        .max_delay(Duration::from_secs(3))
        .build()
        .unwrap();
    let policy = (|r: &Result<Status, io::Error>| match r {
        Ok(Status(503 | 429, _)) | Err(_) => Outcome::Failure,
        Ok(_) => Outcome::Success,
    })
    .with_retry_after(|r: &Result<Status, io::Error>| r.as_ref().ok().and_then(|s| s.1));
    let answers = [
        Status(503, Some(Duration::from_secs(2))),
        Status(429, Some(Duration::from_secs(30))),
        Status(503, None),
        Status(200, None),
    ];
    let answers = Mutex::new(answers.into_iter());
    let t0 = Instant::now();
    let status = retry
        .call_with(&policy, |_| {
            let next = answers.lock().unwrap().next().unwrap();
            async move { Ok(next) }
        })
        .await
        .unwrap();
    assert_eq!(status.0, 200);
    // 2 s as asked, 30 s capped to 3 s, then the backoff's 100 ms.
    assert_eq!(
        delays(&events),
        [Duration::from_secs(2), Duration::from_secs(3), 100 * MS]
    );
    let from_result: Vec<bool> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::RetryScheduled { from_result, .. } => Some(*from_result),
            _ => None,
        })
        .collect();
    assert_eq!(from_result, [true, true, false]);
    assert_eq!(t0.elapsed(), 5100 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_past_the_deadline_is_not_waited_for() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let retry = paused(&events)
        .max_delay(Duration::from_secs(60))
        .deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    let policy = (|_: &Result<(), io::Error>| Outcome::Failure)
        .with_retry_after(|_: &Result<(), io::Error>| Some(Duration::from_secs(10)));
    let t0 = Instant::now();
    let err = retry
        .call_with(&policy, |_| async { Err(io::Error::other("busy")) })
        .await
        .unwrap_err();
    assert_eq!(err.stop(), StopReason::Deadline);
    assert_eq!(err.attempts(), 1);
    assert_eq!(t0.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn rejections_by_other_patterns_are_not_retried() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let retry = paused(&events).max_attempts(5).build().unwrap();
    let calls = AtomicU32::new(0);
    let err = retry
        .call(|_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Err::<(), _>(Rejected::new(
                    Pattern::CircuitBreaker,
                    "open",
                    Some(Duration::from_secs(30)),
                ))
            }
        })
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(err.stop(), StopReason::NotRetryable);
    // The rejection is found through the retry's error.
    let rejected = Rejected::find(&err).expect("the breaker's rejection");
    assert_eq!(rejected.pattern(), Pattern::CircuitBreaker);
    assert_eq!(
        err.to_string(),
        "gave up after 1 attempt: the error is not retried"
    );
}

#[tokio::test(start_paused = true)]
async fn an_ok_classified_a_failure_is_retried_and_returned_when_attempts_run_out() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let retry = paused(&events)
        .max_attempts(3)
        .backoff(Backoff::fixed(MS))
        .build()
        .unwrap();
    let policy = |r: &Result<u16, io::Error>| match r {
        Ok(503) => Outcome::Failure,
        _ => Outcome::Success,
    };
    let calls = AtomicU32::new(0);
    let status = retry
        .call_with(&policy, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(503) }
        })
        .await
        .unwrap();
    assert_eq!(status, 503);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        events.lock().unwrap().last(),
        Some(&Event::Finished {
            attempts: 3,
            stop: StopReason::MaxAttempts
        })
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_returns_the_last_error_at_once() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let budget = RetryBudget::builder()
        .percent(0.0)
        .min_per_second(0)
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    let retry = paused(&events)
        .max_attempts(5)
        .budget(budget.clone())
        .build()
        .unwrap();
    let t0 = Instant::now();
    let err = retry.call(always_fails).await.unwrap_err();
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(err.stop(), StopReason::BudgetExhausted);
    assert_eq!(err.attempts(), 1);
    assert_eq!(err.into_inner().unwrap().to_string(), "down");
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

#[tokio::test(start_paused = true)]
async fn one_budget_caps_the_retries_of_every_call_and_every_retry_sharing_it() {
    // 10 retries in reserve and 50 % of calls: 40 calls that always fail,
    // from two retries sharing it, may retry 10 + 20 = 30 times in all.
    let budget = RetryBudget::builder()
        .percent(0.5)
        .min_per_second(1)
        .window(Duration::from_secs(10))
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let a = paused(&events)
        .max_attempts(10)
        .backoff(Backoff::fixed(MS))
        .budget(budget.clone())
        .build()
        .unwrap();
    let b = a.clone();
    let attempts = AtomicU32::new(0);
    let make = |_: Attempt| {
        attempts.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>(io::Error::other("down")) }
    };
    for i in 0..40 {
        let retry = if i % 2 == 0 { &a } else { &b };
        let _ = retry.call(make).await;
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 40 + 30);
    assert_eq!(budget.available(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_call_during_its_delay_gives_the_retry_back() {
    let budget = RetryBudget::builder()
        .percent(0.0)
        .min_per_second(1)
        .window(Duration::from_secs(10))
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    assert_eq!(budget.available(), 10);
    let events = Arc::new(Mutex::new(Vec::new()));
    let retry = paused(&events)
        .backoff(Backoff::fixed(Duration::from_secs(1)))
        .budget(budget.clone())
        .build()
        .unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&attempts);
    let call = retry.call(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>(io::Error::other("down")) }
    });
    // Cut off half-way through the first delay.
    let cut = tokio::time::timeout(500 * MS, call).await;
    assert!(cut.is_err());
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert_eq!(budget.available(), 10, "the granted retry was given back");

    // Cut off during the second attempt: that retry was made and stays spent.
    let counted = Arc::clone(&attempts);
    let call = retry.call(move |a| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if a.number() == 2 {
                std::future::pending::<()>().await;
            }
            Err::<(), _>(io::Error::other("down"))
        }
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .is_err()
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(budget.available(), 9);
}

#[test]
fn bad_configuration_names_the_builder_method() {
    let cases: [(RetryBuilder, &str); 6] = [
        (Retry::builder().max_attempts(0), "max_attempts"),
        (Retry::builder().name(""), "name"),
        (
            Retry::builder().backoff(Backoff::exponential(MS).factor(f64::NAN)),
            "backoff",
        ),
        (
            Retry::builder().backoff(Backoff::fixed(Duration::ZERO)),
            "backoff",
        ),
        (Retry::builder().deadline(Duration::ZERO), "deadline"),
        (
            Retry::builder().attempt_timeout(Duration::ZERO),
            "attempt_timeout",
        ),
    ];
    for (builder, field) in cases {
        assert_eq!(builder.build().unwrap_err().field(), field);
    }
    for (percent, field) in [(-0.1, "percent"), (1.5, "percent"), (f64::NAN, "percent")] {
        let err = RetryBudget::builder().percent(percent).build().unwrap_err();
        assert_eq!(err.field(), field);
    }
    for window in [Duration::from_millis(999), Duration::from_secs(61)] {
        let err = RetryBudget::builder().window(window).build().unwrap_err();
        assert_eq!(err.field(), "window");
    }
}

/// A policy object used through a reference to a trait object.
#[tokio::test(start_paused = true)]
async fn a_policy_may_be_a_trait_object() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let retry = paused(&events).backoff(Backoff::fixed(MS)).build().unwrap();
    let policy: Box<dyn RetryPolicy<(), io::Error>> = Box::new(|r: &Result<(), io::Error>| {
        if r.is_ok() {
            Outcome::Success
        } else {
            Outcome::Ignored
        }
    });
    let err = retry.call_with(&*policy, always_fails).await.unwrap_err();
    assert_eq!(err.attempts(), 1);
    assert_eq!(err.stop(), StopReason::NotRetryable);
}
