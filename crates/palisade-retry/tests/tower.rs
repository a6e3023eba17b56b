//! The tower layer in a real stack: Buffer → retry → breaker → Timeout → service.
#![cfg(feature = "tower")]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, SlidingWindow, State};
use palisade_retry::tower::{BoxError, RetryLayer};
use palisade_retry::{
    Backoff, Outcome, Pattern, Rejected, Retry, RetryBudget, RetryPolicy, TimedOut, TokioClock,
    TokioSleeper,
};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("flaky failure {0}")]
struct Flaky(u32);

fn retry(attempts: u32) -> Retry {
    Retry::builder()
        .max_attempts(attempts)
        .backoff(Backoff::fixed(Duration::from_millis(10)))
        .clock(TokioClock::shared())
        .sleeper(TokioSleeper::shared())
        .no_budget()
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn failures_are_retried_and_the_breakers_rejection_is_not() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let flaky = service_fn(move |_req: u32| {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Err::<u32, _>(Flaky(n)) }
    });
    let breaker = CircuitBreaker::builder()
        .sliding_window(SlidingWindow::count(2))
        .minimum_calls(2)
        .failure_rate_threshold(0.5)
        .open_duration(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .buffer(8)
        .layer(RetryLayer::new(retry(5)))
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .timeout(Duration::from_secs(1))
        .service(flaky);
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    // Two failures open the breaker; its rejection of the third attempt ends the call.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(breaker.state(), State::Open);
    let rejected = Rejected::find(&*err).expect("the breaker's rejection, through Buffer");
    assert_eq!(rejected.pattern(), Pattern::CircuitBreaker);
}

#[tokio::test(start_paused = true)]
async fn the_inner_error_and_timeouts_downcast_to_their_types() {
    // Fails twice then answers.
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let flaky = service_fn(move |req: u32| {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move { if n <= 2 { Err(Flaky(n)) } else { Ok(req * 10) } }
    });
    let mut svc = ServiceBuilder::new()
        .buffer(8)
        .layer(RetryLayer::new(retry(3)))
        .timeout(Duration::from_secs(1))
        .service(flaky);
    assert_eq!(svc.ready().await.unwrap().call(4).await.unwrap(), 40);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Always fails: the last error, as it is.
    let flaky = service_fn(|_: u32| async { Err::<u32, _>(Flaky(7)) });
    let mut svc = RetryLayer::new(retry(3)).layer(flaky);
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Flaky>(), Some(&Flaky(7)));

    // Hangs: tower's Timeout below the retry fires on every attempt, and its
    // error is what the caller gets.
    let hangs = service_fn(|_: u32| async {
        std::future::pending::<()>().await;
        Ok::<u32, BoxError>(0)
    });
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::new(retry(3)))
        .timeout(Duration::from_millis(100))
        .service(hangs);
    let started = tokio::time::Instant::now();
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    assert_eq!(started.elapsed(), Duration::from_millis(320));

    // With the retry's own attempt timeout, the error is its TimedOut.
    let hangs = service_fn(|_: u32| async {
        std::future::pending::<()>().await;
        Ok::<u32, BoxError>(0)
    });
    let retry = Retry::builder()
        .max_attempts(2)
        .backoff(Backoff::fixed(Duration::from_millis(10)))
        .attempt_timeout(Duration::from_millis(50))
        .clock(TokioClock::shared())
        .sleeper(TokioSleeper::shared())
        .build()
        .unwrap();
    let mut svc = RetryLayer::new(retry).layer(hangs);
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<TimedOut>(),
        Some(&TimedOut {
            attempt: 2,
            limit: Duration::from_millis(50)
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_that_cannot_be_replayed_is_sent_once() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let flaky = service_fn(move |_req: (u32, bool)| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Err::<u32, _>(Flaky(0)) }
    });
    let layer = RetryLayer::new(retry(4)).replay(|req: &(u32, bool)| (!req.1).then_some(*req));
    let mut svc = layer.layer(flaky);
    // A streamed request (true): not replayed.
    let _ = svc.ready().await.unwrap().call((1, true)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let _ = svc.ready().await.unwrap().call((2, false)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1 + 4);
}

#[tokio::test(start_paused = true)]
async fn a_policy_retries_responses_and_reads_their_retry_after() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let svc = service_fn(move |(): ()| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<u16, BoxError>(if n == 0 { 503 } else { 200 }) }
    });
    let policy = (|r: &Result<u16, BoxError>| match r {
        Ok(503) | Err(_) => Outcome::Failure,
        Ok(_) => Outcome::Success,
    })
    .with_retry_after(|r: &Result<u16, BoxError>| {
        matches!(r, Ok(503)).then_some(Duration::from_secs(2))
    });
    let mut svc = RetryLayer::new(retry(3)).policy(policy).layer(svc);
    let started = tokio::time::Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), 200);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_response_future_during_a_delay_gives_the_retry_back() {
    let budget = RetryBudget::builder()
        .percent(0.0)
        .min_per_second(1)
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    let retry = Retry::builder()
        .backoff(Backoff::fixed(Duration::from_secs(1)))
        .clock(TokioClock::shared())
        .sleeper(TokioSleeper::shared())
        .budget(budget.clone())
        .build()
        .unwrap();
    let flaky = service_fn(|_: u32| async { Err::<u32, _>(Flaky(0)) });
    let mut svc = RetryLayer::new(retry).layer(flaky);
    let fut = svc.ready().await.unwrap().call(1);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), fut)
            .await
            .is_err()
    );
    assert_eq!(budget.available(), 10);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_budget() {
    let budget = RetryBudget::builder()
        .percent(0.0)
        .min_per_second(1)
        .window(Duration::from_secs(3))
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    let retry = Retry::builder()
        .max_attempts(10)
        .backoff(Backoff::fixed(Duration::from_millis(1)))
        .clock(TokioClock::shared())
        .sleeper(TokioSleeper::shared())
        .budget(budget)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let flaky = service_fn(move |_: u32| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Err::<u32, _>(Flaky(0)) }
    });
    let svc = RetryLayer::new(retry).layer(flaky);
    let mut handles = Vec::new();
    for i in 0..4 {
        let mut svc = svc.clone();
        handles.push(tokio::spawn(async move {
            svc.ready().await.unwrap().call(i).await
        }));
    }
    for h in handles {
        assert!(h.await.unwrap().is_err());
    }
    // 4 calls, and the 3 retries the reserve holds, shared.
    assert_eq!(calls.load(Ordering::SeqCst), 4 + 3);
}

/// Ready for its first call; each later clone takes 10 s to be ready (a rate
/// limit, a full bulkhead or pool below the retry).
struct SlowToBeReady {
    calls: Arc<AtomicU32>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Clone for SlowToBeReady {
    fn clone(&self) -> Self {
        Self {
            calls: Arc::clone(&self.calls),
            wait: None,
        }
    }
}

impl Service<u32> for SlowToBeReady {
    type Response = u32;
    type Error = Flaky;
    type Future = std::future::Ready<Result<u32, Flaky>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Flaky>> {
        if self.calls.load(Ordering::SeqCst) == 0 {
            return Poll::Ready(Ok(()));
        }
        let wait = self
            .wait
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::from_secs(10))));
        wait.as_mut().poll(cx).map(Ok)
    }

    fn call(&mut self, _: u32) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        std::future::ready(Err(Flaky(n)))
    }
}

#[tokio::test(start_paused = true)]
async fn the_deadline_counts_while_waiting_for_readiness() {
    let calls = Arc::new(AtomicU32::new(0));
    let svc = SlowToBeReady {
        calls: Arc::clone(&calls),
        wait: None,
    };
    let budget = RetryBudget::builder()
        .percent(0.0)
        .min_per_second(1)
        .window(Duration::from_secs(10))
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    let retry = Retry::builder()
        .max_attempts(3)
        .backoff(Backoff::fixed(Duration::from_millis(10)))
        .deadline(Duration::from_secs(1))
        .budget(budget.clone())
        .clock(TokioClock::shared())
        .sleeper(TokioSleeper::shared())
        .build()
        .unwrap();
    let svc = RetryLayer::new(retry).layer(svc);
    let started = tokio::time::Instant::now();
    let err = svc.oneshot(1).await.unwrap_err();
    // The deadline, not the 10 s the service needed: the last error, and the
    // retry that never started given back.
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(err.downcast_ref::<Flaky>(), Some(&Flaky(1)));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(budget.available(), 10);
}
