//! The rules of the state machine, one at a time, on a manual clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_circuit_breaker::{
    Backoff, CircuitBreaker, CircuitBreakerBuilder, Event, Jitter, Outcome, SlidingWindow, State,
};
use palisade_core::ManualClock;

fn builder(clock: &ManualClock) -> CircuitBreakerBuilder {
    CircuitBreaker::builder()
        .clock(clock.shared())
        .sliding_window(SlidingWindow::count(10))
        .minimum_calls(4)
        .failure_rate_threshold(0.5)
        .open_duration(Duration::from_secs(10))
        .half_open_probes(2)
}

fn record(breaker: &CircuitBreaker, outcomes: &[Outcome]) {
    for &o in outcomes {
        breaker.try_acquire().expect("permitted").record(o);
    }
}

const S: Outcome = Outcome::Success;
const F: Outcome = Outcome::Failure;
const I: Outcome = Outcome::Ignored;

#[test]
fn opens_when_the_failure_rate_reaches_the_threshold_after_the_minimum() {
    let clock = ManualClock::new();
    let breaker = builder(&clock).build().unwrap();
    // 3 calls, all failures: below the minimum of 4, still closed
    record(&breaker, &[F, F, F]);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().failure_rate, None);
    // 4th call is a success: 3/4 = 0.75 >= 0.5
    record(&breaker, &[S]);
    assert_eq!(breaker.state(), State::Open);
    let snap = breaker.snapshot();
    assert_eq!((snap.calls, snap.failed_calls), (4, 3));
    assert_eq!(snap.failure_rate, Some(0.75));
}

#[test]
fn stays_closed_below_the_threshold_and_forgets_old_calls() {
    let clock = ManualClock::new();
    let breaker = builder(&clock).build().unwrap();
    // 4 failures in 10 calls = 0.4 < 0.5
    record(&breaker, &[S, S, S, S, S, S, F, F, F, F]);
    assert_eq!(breaker.state(), State::Closed);
    // 8 more successes: the last 10 calls are F F S S S S S S S S
    record(&breaker, &[S; 8]);
    assert_eq!(breaker.snapshot().failed_calls, 2);
    // 3 failures: S S S S S S S F F F, 3 of 10
    record(&breaker, &[F, F, F]);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().failed_calls, 3);
    // 2 more: S S S S S F F F F F, 5 of 10
    record(&breaker, &[F, F]);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn ignored_outcomes_do_not_count() {
    let clock = ManualClock::new();
    let breaker = builder(&clock).build().unwrap();
    record(&breaker, &[I, I, I, I, I, F, F, S]);
    let snap = breaker.snapshot();
    assert_eq!((snap.calls, snap.failed_calls), (3, 2));
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn a_minimum_above_the_window_size_is_capped_to_it() {
    let clock = ManualClock::new();
    let breaker = builder(&clock).minimum_calls(1000).build().unwrap();
    record(&breaker, &[F; 9]);
    assert_eq!(breaker.state(), State::Closed);
    record(&breaker, &[F]);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn open_rejects_with_the_time_left_then_admits_exactly_n_probes() {
    let clock = ManualClock::new();
    let breaker = builder(&clock).build().unwrap();
    record(&breaker, &[F, F, F, F]);
    assert_eq!(breaker.state(), State::Open);

    clock.advance(Duration::from_secs(4));
    let rejected = breaker.try_acquire().unwrap_err();
    assert_eq!(State::rejected_by(&rejected).unwrap(), State::Open);
    assert_eq!(rejected.retry_after(), Some(Duration::from_secs(6)));

    clock.advance(Duration::from_secs(6));
    let first = breaker.try_acquire().expect("first probe");
    assert_eq!(breaker.state(), State::HalfOpen);
    assert_eq!(first.state(), State::HalfOpen);
    let second = breaker.try_acquire().expect("second probe");
    let third = breaker.try_acquire().unwrap_err();
    assert_eq!(State::rejected_by(&third), Some(State::HalfOpen));
    assert_eq!(third.retry_after(), None);

    first.success();
    assert_eq!(breaker.state(), State::HalfOpen);
    second.success();
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().calls, 0, "closing empties the window");
}

#[test]
fn failed_probes_open_again() {
    let clock = ManualClock::new();
    let breaker = builder(&clock).build().unwrap();
    record(&breaker, &[F, F, F, F]);
    clock.advance(Duration::from_secs(10));
    // 1 failure of 2 probes = 0.5 >= 0.5
    record(&breaker, &[S, F]);
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(
        breaker.try_acquire().unwrap_err().retry_after(),
        Some(Duration::from_secs(10))
    );
}

#[test]
fn a_dropped_probe_gives_its_place_back() {
    let clock = ManualClock::new();
    let breaker = builder(&clock).half_open_probes(1).build().unwrap();
    record(&breaker, &[F, F, F, F]);
    clock.advance(Duration::from_secs(10));
    let probe = breaker.try_acquire().expect("probe");
    assert!(breaker.try_acquire().is_err());
    drop(probe);
    let probe = breaker.try_acquire().expect("place given back");
    // an ignored probe also gives it back
    probe.record(I);
    assert_eq!(breaker.state(), State::HalfOpen);
    breaker.try_acquire().expect("again").success();
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn an_outcome_from_an_earlier_generation_is_ignored() {
    let clock = ManualClock::new();
    let breaker = builder(&clock).build().unwrap();
    let late_closed = breaker.try_acquire().expect("closed permit");
    record(&breaker, &[F, F, F, F]);
    assert_eq!(breaker.state(), State::Open);
    clock.advance(Duration::from_secs(10));
    let probe = breaker.try_acquire().expect("probe");
    // the closed-state call finishes now: it must not count as a probe
    late_closed.failure();
    assert_eq!(breaker.state(), State::HalfOpen);
    // a probe that outlives its half-open period is ignored too
    breaker.transition_to(State::Open);
    probe.success();
    assert_eq!(breaker.state(), State::Open);
    clock.advance(Duration::from_secs(10));
    record(&breaker, &[S, S]);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().calls, 0);
}

#[test]
fn slow_calls_open_the_breaker() {
    let clock = ManualClock::new();
    let breaker = builder(&clock)
        .slow_call_duration(Duration::from_millis(100))
        .slow_call_rate_threshold(0.75)
        .build()
        .unwrap();
    for millis in [100, 150, 99, 300] {
        let permit = breaker.try_acquire().expect("closed");
        clock.advance(Duration::from_millis(millis));
        permit.success();
    }
    let snap = breaker.snapshot();
    assert_eq!((snap.calls, snap.slow_calls, snap.failed_calls), (4, 3, 0));
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn consecutive_failures_open_regardless_of_the_window() {
    let clock = ManualClock::new();
    let breaker = builder(&clock)
        .sliding_window(SlidingWindow::count(100))
        .minimum_calls(100)
        .consecutive_failures(3)
        .build()
        .unwrap();
    record(&breaker, &[F, F, S, F, F]);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().consecutive_failures, 2);
    record(&breaker, &[F]);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn open_duration_backs_off_over_consecutive_openings_and_resets_on_close() {
    let clock = ManualClock::new();
    let breaker = builder(&clock)
        .half_open_probes(1)
        .open_backoff(
            Backoff::exponential(Duration::from_secs(1))
                .max(Duration::from_secs(3))
                .jitter(Jitter::None),
        )
        .build()
        .unwrap();
    record(&breaker, &[F, F, F, F]);
    let waits: Vec<_> = (0..4)
        .map(|_| {
            let wait = breaker.try_acquire().unwrap_err().retry_after().unwrap();
            clock.advance(wait);
            record(&breaker, &[F]); // the probe fails: open again
            wait
        })
        .collect();
    assert_eq!(
        waits,
        [1, 2, 3, 3].map(Duration::from_secs),
        "1 s, 2 s, then capped at 3 s"
    );
    let wait = breaker.try_acquire().unwrap_err().retry_after().unwrap();
    clock.advance(wait);
    record(&breaker, &[S]);
    assert_eq!(breaker.state(), State::Closed);
    record(&breaker, &[F, F, F, F]);
    assert_eq!(
        breaker.try_acquire().unwrap_err().retry_after(),
        Some(Duration::from_secs(1))
    );
}

#[test]
fn half_open_reopens_when_probes_take_too_long() {
    let clock = ManualClock::new();
    let breaker = builder(&clock)
        .max_wait_in_half_open(Duration::from_secs(5))
        .build()
        .unwrap();
    record(&breaker, &[F, F, F, F]);
    clock.advance(Duration::from_secs(10));
    let probe = breaker.try_acquire().expect("probe");
    let _second = breaker.try_acquire().expect("probe");
    clock.advance(Duration::from_secs(5));
    let rejected = breaker.try_acquire().unwrap_err();
    assert_eq!(State::rejected_by(&rejected).unwrap(), State::Open);
    assert_eq!(rejected.retry_after(), Some(Duration::from_secs(10)));
    probe.success();
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn manual_states() {
    let clock = ManualClock::new();
    let breaker = builder(&clock).build().unwrap();

    breaker.transition_to(State::ForcedOpen);
    let rejected = breaker.try_acquire().unwrap_err();
    assert_eq!(
        (
            State::rejected_by(&rejected).unwrap(),
            rejected.retry_after()
        ),
        (State::ForcedOpen, None)
    );
    clock.advance(Duration::from_secs(3600));
    assert!(breaker.try_acquire().is_err(), "forced open never probes");

    breaker.transition_to(State::Disabled);
    record(&breaker, &[F; 20]);
    assert_eq!(breaker.state(), State::Disabled);
    assert_eq!(breaker.snapshot().calls, 0, "disabled records nothing");

    breaker.transition_to(State::MetricsOnly);
    record(&breaker, &[F; 20]);
    assert_eq!(breaker.state(), State::MetricsOnly);
    assert_eq!(breaker.snapshot().failed_calls, 10, "metrics only records");

    breaker.reset();
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().calls, 0);
    record(&breaker, &[F, F, F, F]);
    assert_eq!(breaker.state(), State::Open);
    breaker.transition_to(State::HalfOpen);
    record(&breaker, &[S, S]);
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn time_window_counts_only_the_last_period() {
    let clock = ManualClock::new();
    let breaker = builder(&clock)
        .sliding_window(SlidingWindow::time_with_buckets(
            Duration::from_secs(10),
            10,
        ))
        .minimum_calls(4)
        .build()
        .unwrap();
    record(&breaker, &[F, F, F]);
    clock.advance(Duration::from_secs(10));
    // the three failures have left the window
    record(&breaker, &[S, S, S, F]);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().failure_rate, Some(0.25));
    clock.advance(Duration::from_secs(9));
    // 2 failures of 5 within the last 10 s
    record(&breaker, &[F]);
    assert_eq!(breaker.state(), State::Closed);
    // 3 of 6
    record(&breaker, &[F]);
    assert_eq!(breaker.state(), State::Open);
    // one more second and the bucket at 10 s leaves: 2 calls remain
    clock.advance(Duration::from_secs(1));
    assert_eq!(breaker.snapshot().calls, 2);
}

#[test]
fn events_describe_calls_rejections_and_transitions_in_order() {
    let clock = ManualClock::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let breaker = builder(&clock)
        .half_open_probes(1)
        .listener(move |e: &Event| sink.lock().unwrap().push(*e))
        .build()
        .unwrap();
    let permit = breaker.try_acquire().unwrap();
    clock.advance(Duration::from_millis(7));
    permit.failure();
    record(&breaker, &[F, F, F]);
    let _ = breaker.try_acquire();
    clock.advance(Duration::from_secs(10));
    record(&breaker, &[S]);

    let events = events.lock().unwrap();
    assert_eq!(events.len(), 9, "{events:#?}");
    assert_eq!(
        events[0],
        Event::CallFinished {
            outcome: F,
            slow: false,
            duration: Some(Duration::from_millis(7)),
            state: State::Closed
        }
    );
    assert_eq!(
        events[4],
        Event::StateTransition {
            from: State::Closed,
            to: State::Open
        }
    );
    assert_eq!(
        events[5],
        Event::CallRejected {
            state: State::Open,
            retry_after: Some(Duration::from_secs(10))
        }
    );
    assert_eq!(
        events[6],
        Event::StateTransition {
            from: State::Open,
            to: State::HalfOpen
        }
    );
    assert!(matches!(
        events[7],
        Event::CallFinished {
            outcome: S,
            state: State::HalfOpen,
            ..
        }
    ));
    assert_eq!(
        events[8],
        Event::StateTransition {
            from: State::HalfOpen,
            to: State::Closed
        }
    );
}

#[test]
fn bad_configuration_names_the_field() {
    let cases: Vec<(CircuitBreakerBuilder, &str)> = vec![
        (
            CircuitBreaker::builder().failure_rate_threshold(0.0),
            "failure_rate_threshold",
        ),
        (
            CircuitBreaker::builder().failure_rate_threshold(1.01),
            "failure_rate_threshold",
        ),
        (
            CircuitBreaker::builder().failure_rate_threshold(f64::NAN),
            "failure_rate_threshold",
        ),
        (
            CircuitBreaker::builder().slow_call_rate_threshold(-1.0),
            "slow_call_rate_threshold",
        ),
        (
            CircuitBreaker::builder().sliding_window(SlidingWindow::count(0)),
            "sliding_window",
        ),
        (
            CircuitBreaker::builder().sliding_window(SlidingWindow::time(Duration::ZERO)),
            "sliding_window",
        ),
        (
            CircuitBreaker::builder()
                .sliding_window(SlidingWindow::time_with_buckets(Duration::from_secs(1), 0)),
            "sliding_window",
        ),
        (CircuitBreaker::builder().minimum_calls(0), "minimum_calls"),
        (
            CircuitBreaker::builder().half_open_probes(0),
            "half_open_probes",
        ),
        (
            CircuitBreaker::builder().consecutive_failures(0),
            "consecutive_failures",
        ),
        (
            CircuitBreaker::builder().open_duration(Duration::ZERO),
            "open_duration",
        ),
        (
            CircuitBreaker::builder().open_backoff(Backoff::exponential(Duration::ZERO)),
            "open_backoff",
        ),
        (
            CircuitBreaker::builder()
                .open_backoff(Backoff::exponential(Duration::from_secs(1)))
                .open_duration(Duration::ZERO),
            "open_duration",
        ),
        (
            CircuitBreaker::builder().slow_call_duration(Duration::ZERO),
            "slow_call_duration",
        ),
        (
            CircuitBreaker::builder().max_wait_in_half_open(Duration::ZERO),
            "max_wait_in_half_open",
        ),
        (CircuitBreaker::builder().name(""), "name"),
    ];
    for (builder, field) in cases {
        let err = builder.build().expect_err(field);
        assert_eq!(err.field(), field, "{err}");
    }
}

#[tokio::test]
async fn call_runs_the_closure_only_when_permitted() {
    let clock = ManualClock::new();
    let breaker = builder(&clock).build().unwrap();
    let value = breaker.call(|| async { Ok::<_, String>(5) }).await.unwrap();
    assert_eq!(value, 5);
    let err = breaker
        .call(|| async { Err::<u8, _>("boom".to_string()) })
        .await
        .unwrap_err();
    assert_eq!(err.into_inner().as_deref(), Some("boom"));

    breaker.transition_to(State::ForcedOpen);
    let mut ran = false;
    let err = breaker
        .call(|| {
            ran = true;
            async { Ok::<_, String>(1) }
        })
        .await
        .unwrap_err();
    assert!(!ran);
    assert_eq!(
        err.rejected().and_then(State::rejected_by),
        Some(State::ForcedOpen)
    );
}

#[tokio::test]
async fn call_with_uses_the_classifier() {
    let clock = ManualClock::new();
    let breaker = builder(&clock).build().unwrap();
    let server_error = |r: &Result<u16, String>| match r {
        Ok(status) if *status >= 500 => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Ignored,
    };
    for status in [503, 404, 500, 502] {
        let got = breaker
            .call_with(&server_error, || async move { Ok(status) })
            .await
            .unwrap();
        assert_eq!(got, status);
    }
    let _ = breaker
        .call_with(&server_error, || async { Err("canceled".to_string()) })
        .await;
    let snap = breaker.snapshot();
    assert_eq!((snap.calls, snap.failed_calls), (4, 3));
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test]
async fn a_cancelled_call_releases_its_probe() {
    let clock = ManualClock::new();
    let breaker = builder(&clock).half_open_probes(1).build().unwrap();
    breaker.transition_to(State::HalfOpen);
    {
        let pending = breaker.call(std::future::pending::<Result<(), ()>>);
        let mut pending = std::pin::pin!(pending);
        // poll once so the call takes the probe, then drop it
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(pending.as_mut().poll(&mut cx).is_pending());
        assert!(breaker.try_acquire().is_err(), "the probe is taken");
    }
    breaker.call(|| async { Ok::<_, ()>(()) }).await.unwrap();
    assert_eq!(breaker.state(), State::Closed);
}
