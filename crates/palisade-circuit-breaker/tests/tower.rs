//! The tower layer: rejection, classification of responses, shared state, cancellation.
#![cfg(feature = "tower")]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade_circuit_breaker::{
    CircuitBreaker, CircuitBreakerLayer, Outcome, SlidingWindow, State,
};
use palisade_core::ManualClock;
use tower::{Layer, Service, ServiceExt, service_fn};

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
    let rejected = *err.rejected().expect("a rejection");
    assert_eq!(rejected.state(), State::Open);
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
    assert!(err.rejected().is_some());
    let err = a.ready().await.unwrap().call(false).await.unwrap_err();
    assert!(err.rejected().is_some());
    let inner = layer
        .layer(service_fn(|()| async { Err::<(), _>("x") }))
        .oneshot(())
        .await
        .unwrap_err();
    assert!(
        inner.rejected().is_some(),
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
