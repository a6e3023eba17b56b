//! The tower layer: rejection, classification of responses, shared state, cancellation.
#![cfg(feature = "tower")]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade_circuit_breaker::{
    BoxError, CircuitBreaker, CircuitBreakerLayer, ManualClock, Outcome, Rejected, SlidingWindow,
    State,
};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

fn rejection(err: &BoxError) -> Option<&Rejected> {
    Rejected::find(&**err)
}

fn breaker(clock: &ManualClock) -> CircuitBreaker {
    CircuitBreaker::builder()
        .clock(clock.shared())
        .sliding_window(SlidingWindow::count(4))
        .minimum_calls(4)
        .half_open_probes(1)
        .open_duration(Duration::from_secs(1))
        .build()
        .unwrap()
}

#[tokio::test]
async fn responses_are_classified_and_an_open_breaker_does_not_call_the_service() {
    let clock = ManualClock::new();
    let breaker = breaker(&clock);
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let inner = service_fn(move |status: u16| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<u16, Infallible>(status) }
    });
    let mut svc = CircuitBreakerLayer::new(breaker.clone())
        .classifier(|r: &Result<u16, Infallible>| match r {
            Ok(s) if *s >= 500 => Outcome::Failure,
            _ => Outcome::Success,
        })
        .layer(inner);

    for status in [200, 503, 404, 500] {
        let got = svc.ready().await.unwrap().call(status).await.unwrap();
        assert_eq!(got, status);
    }
    assert_eq!(breaker.state(), State::Open, "two 5xx of four calls");
    let err = svc.ready().await.unwrap().call(200).await.unwrap_err();
    let rejected = *err.downcast_ref::<Rejected>().expect("a rejection");
    assert_eq!(State::rejected_by(&rejected), Some(State::Open));
    assert_eq!(rejected.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "the rejected call never reached the service"
    );
}

#[tokio::test]
async fn errors_are_failures_and_clones_share_one_breaker() {
    let clock = ManualClock::new();
    let breaker = breaker(&clock);
    let layer = CircuitBreakerLayer::new(breaker.clone());
    let failing = service_fn(|fail: bool| async move { if fail { Err("down") } else { Ok(()) } });
    let mut a = layer.layer(failing);
    let mut b = a.clone();
    for (use_a, fail) in [(true, true), (false, true), (true, false), (false, true)] {
        let svc = if use_a { &mut a } else { &mut b };
        let _ = svc.ready().await.unwrap().call(fail).await;
    }
    assert_eq!(breaker.snapshot().failed_calls, 3);
    assert_eq!(breaker.state(), State::Open);
    let err = b.ready().await.unwrap().call(false).await.unwrap_err();
    assert!(rejection(&err).is_some());
    let err = a.ready().await.unwrap().call(false).await.unwrap_err();
    assert!(rejection(&err).is_some());
    let inner = layer
        .layer(service_fn(|()| async { Err::<(), _>("x") }))
        .oneshot(())
        .await
        .unwrap_err();
    assert!(
        rejection(&inner).is_some(),
        "a new service from the layer shares the open state"
    );
}

#[tokio::test]
async fn a_dropped_response_future_gives_the_probe_back() {
    let clock = ManualClock::new();
    let breaker = breaker(&clock);
    breaker.transition_to(State::HalfOpen);
    let mut hanging = CircuitBreakerLayer::new(breaker.clone()).layer(service_fn(|()| {
        std::future::pending::<Result<(), Infallible>>()
    }));
    let future = hanging.ready().await.unwrap().call(());
    assert!(breaker.try_acquire().is_err(), "the one probe is taken");
    drop(future);
    let mut ok = CircuitBreakerLayer::new(breaker.clone())
        .layer(service_fn(|()| async { Ok::<(), Infallible>(()) }));
    ok.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(breaker.state(), State::Closed);
}

/// Buffer → breaker → Timeout → service: the breaker sits under and over
/// tower's own middleware, and every error is found again by downcasting.
#[tokio::test(start_paused = true)]
async fn a_real_stack_reports_timeouts_and_rejections_as_box_errors() {
    let clock = ManualClock::new();
    let breaker = breaker(&clock);
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let slow = service_fn(move |delay_ms: u64| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            Ok::<u64, Infallible>(delay_ms)
        }
    });
    let mut stack = ServiceBuilder::new()
        .buffer(8)
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .timeout(Duration::from_millis(100))
        .service(slow);

    assert_eq!(stack.ready().await.unwrap().call(10).await.unwrap(), 10);
    for _ in 0..3 {
        let err = stack.ready().await.unwrap().call(500).await.unwrap_err();
        assert!(
            err.downcast_ref::<tower::timeout::error::Elapsed>()
                .is_some(),
            "the timeout's own error, not wrapped: {err}"
        );
    }
    assert_eq!(breaker.state(), State::Open, "three timeouts of four calls");
    let err = stack.ready().await.unwrap().call(10).await.unwrap_err();
    let rejected = err
        .downcast_ref::<Rejected>()
        .expect("a rejection, through Buffer");
    assert_eq!(State::rejected_by(rejected), Some(State::Open));
    assert_eq!(rejected.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "the rejected call never ran"
    );
}

/// With backpressure, an open breaker makes `poll_ready` pending: `LoadShed`
/// above sheds at once, and the service is ready again when a probe is due.
#[tokio::test]
async fn backpressure_holds_callers_in_poll_ready_until_a_probe_is_due() {
    let clock = ManualClock::new();
    let breaker = breaker(&clock);
    breaker.transition_to(State::Open);
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let inner = service_fn(move |()| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<(), Infallible>(()) }
    });
    let layer = CircuitBreakerLayer::new(breaker.clone())
        .backpressure(clock.sleeper(), Duration::from_millis(50));
    let mut shed = ServiceBuilder::new()
        .load_shed()
        .layer(layer.clone())
        .service(inner.clone());
    let err = shed.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(
        err.downcast_ref::<tower::load_shed::error::Overloaded>()
            .is_some(),
        "shed on readiness: {err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // A caller that waits for readiness is woken when the open duration ends.
    let mut waiting = layer.layer(inner);
    let ready = tokio::spawn(async move {
        waiting.ready().await.unwrap().call(()).await.unwrap();
    });
    tokio::task::yield_now().await;
    assert!(!ready.is_finished());
    clock.advance(Duration::from_secs(1));
    ready.await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        breaker.state(),
        State::Closed,
        "the probe taken in poll_ready closed it"
    );
}

/// `poll_ready` takes nothing: a service left ready and idle holds no
/// half-open probe, and the call is judged when it is made.
#[tokio::test]
async fn a_ready_idle_service_holds_no_probe() {
    let clock = ManualClock::new();
    let breaker = breaker(&clock);
    breaker.transition_to(State::HalfOpen);
    let mut svc = CircuitBreakerLayer::new(breaker.clone())
        .backpressure(clock.sleeper(), Duration::from_millis(50))
        .layer(service_fn(|()| async { Ok::<(), Infallible>(()) }));
    svc.ready().await.unwrap();
    let probe = breaker.try_acquire().expect("the one probe is still free");
    // Now the breaker has no probe left: the ready service's call is rejected.
    let err = svc.call(()).await.unwrap_err();
    assert!(rejection(&err).is_some());
    probe.success();
    assert_eq!(breaker.state(), State::Closed);
}

/// A reset while callers are held: under `LoadShed` the next request goes
/// through at once, and a caller waiting in `poll_ready` is let through
/// within `recheck`, not at the end of the open duration.
#[tokio::test]
async fn a_reset_ends_the_backpressure_within_recheck() {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder()
        .clock(clock.shared())
        .open_duration(Duration::from_secs(60))
        .build()
        .unwrap();
    breaker.transition_to(State::Open);
    let inner = service_fn(|()| async { Ok::<(), Infallible>(()) });
    let layer = CircuitBreakerLayer::new(breaker.clone())
        .backpressure(clock.sleeper(), Duration::from_millis(100));
    let mut shed = ServiceBuilder::new()
        .load_shed()
        .layer(layer.clone())
        .service(inner);
    assert!(
        shed.ready().await.unwrap().call(()).await.is_err(),
        "shed while open"
    );

    let mut waiting = layer.layer(inner);
    let held = tokio::spawn(async move {
        waiting.ready().await.unwrap().call(()).await.unwrap();
    });
    tokio::task::yield_now().await;
    breaker.reset();
    shed.ready().await.unwrap().call(()).await.unwrap();
    tokio::task::yield_now().await;
    assert!(!held.is_finished(), "asleep until its recheck");
    clock.advance(Duration::from_millis(100));
    held.await.unwrap();
    assert_eq!(breaker.snapshot().calls, 2);
}
