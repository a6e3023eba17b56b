//! The standard stack: the order (each part's effect, counted), the presets,
//! the error, clones sharing one budget, concurrency with exact counts.
#![cfg(all(feature = "stack", feature = "tower"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade::bulkhead::Bulkhead;
use palisade::circuit_breaker::{CircuitBreaker, SlidingWindow, State};
use palisade::core::{Outcome, Pattern, Rejected, TokioClock, TokioSleeper};
use palisade::rate_limit::{Quota, RateLimiter};
use palisade::retry::{Backoff, Retry, RetryBudget};
use palisade::stack::{Stack, StackBuilder, StackError, TimeoutKind};
use tokio::time::Instant;

fn reset() -> std::io::Error {
    std::io::Error::other("connection reset")
}

/// Tokio's paused time for the whole stack.
fn paused(builder: StackBuilder) -> StackBuilder {
    builder
        .clock(TokioClock::shared())
        .sleeper(TokioSleeper::shared())
}

fn no_delay(attempts: u32) -> palisade::retry::RetryBuilder {
    Retry::builder()
        .max_attempts(attempts)
        .backoff(Backoff::fixed(Duration::from_millis(1)))
        .no_budget()
}

#[tokio::test(start_paused = true)]
async fn the_breaker_sees_every_attempt_of_the_retry() {
    let stack = paused(Stack::builder())
        .retry(no_delay(3))
        .circuit_breaker(
            CircuitBreaker::builder()
                .sliding_window(SlidingWindow::count(10))
                .minimum_calls(10),
        )
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let err = stack
        .call(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(reset())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StackError::Inner(ref e) if e.to_string() == "connection reset"));
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    let snapshot = stack.circuit_breaker().unwrap().snapshot();
    assert_eq!((snapshot.calls, snapshot.failed_calls), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_not_retried_and_takes_no_bulkhead_slot() {
    let stack = paused(Stack::builder())
        .retry(no_delay(5))
        .circuit_breaker(CircuitBreaker::builder().open_duration(Duration::from_secs(7)))
        .bulkhead(Bulkhead::builder().max_concurrent_calls(1))
        .build()
        .unwrap();
    stack.circuit_breaker().unwrap().transition_to(State::Open);
    let calls = AtomicU32::new(0);
    let err = stack
        .call(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Ok::<_, std::io::Error>(())
        })
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    assert_eq!(err.pattern(), Some(Pattern::CircuitBreaker));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    let bulkhead = stack.bulkhead().unwrap().snapshot();
    assert_eq!(bulkhead.in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_is_not_retried_nor_counted_by_the_breaker() {
    let attempts = Arc::new(AtomicU32::new(0));
    let seen = Arc::clone(&attempts);
    let stack = paused(Stack::builder())
        .retry(no_delay(5).listener(move |e: &palisade::retry::Event| {
            if let palisade::retry::Event::Finished { attempts, .. } = e {
                seen.store(*attempts, Ordering::Relaxed);
            }
        }))
        .circuit_breaker(CircuitBreaker::builder())
        .bulkhead(
            Bulkhead::builder()
                .max_concurrent_calls(1)
                .retry_after(Duration::from_millis(40)),
        )
        .build()
        .unwrap();
    let held = stack.bulkhead().unwrap().try_acquire().unwrap();
    let err = stack
        .call(|| async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap_err();
    assert_eq!(err.pattern(), Some(Pattern::Bulkhead));
    assert_eq!(err.retry_after(), Some(Duration::from_millis(40)));
    assert_eq!(attempts.load(Ordering::Relaxed), 1);
    assert_eq!(stack.circuit_breaker().unwrap().snapshot().calls, 0);
    drop(held);
    stack
        .call(|| async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap();
    assert_eq!(stack.circuit_breaker().unwrap().snapshot().calls, 1);
}

#[tokio::test(start_paused = true)]
async fn the_attempt_timeout_frees_the_bulkhead_slot_for_the_retry() {
    let stack = paused(Stack::builder())
        .retry(no_delay(2))
        .circuit_breaker(CircuitBreaker::builder())
        .bulkhead(Bulkhead::builder().max_concurrent_calls(1))
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let answer = stack
        .call(|| async {
            // The first attempt hangs; the second answers at once.
            if calls.fetch_add(1, Ordering::Relaxed) == 0 {
                std::future::pending::<()>().await;
            }
            Ok::<_, std::io::Error>("paid")
        })
        .await
        .unwrap();
    assert_eq!(answer, "paid");
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    // The attempt timeout, then the 1 ms delay.
    assert_eq!(start.elapsed(), Duration::from_millis(1_001));
    let snapshot = stack.circuit_breaker().unwrap().snapshot();
    assert_eq!((snapshot.calls, snapshot.failed_calls), (2, 1));
    assert_eq!(stack.bulkhead().unwrap().snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn the_total_timeout_cuts_the_retries_and_the_attempt_timeout_is_retried() {
    let stack = paused(Stack::builder())
        .total_timeout(Duration::from_millis(2_500))
        .retry(no_delay(10))
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let err = stack
        .call(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            std::future::pending::<Result<(), std::io::Error>>().await
        })
        .await
        .unwrap_err();
    let timeout = err.timeout().copied().unwrap();
    assert_eq!(
        (timeout.kind(), timeout.limit()),
        (TimeoutKind::Total, Duration::from_millis(2_500))
    );
    assert_eq!(err.to_string(), "the total timeout of 2.5s ran out");
    // Attempts at 0 s, 1.001 s, 2.002 s; the third is cut at 2.5 s.
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(2_500));

    // With attempts left over: the last attempt's timeout.
    let stack = paused(Stack::builder())
        .retry(no_delay(2))
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let err = stack
        .call(std::future::pending::<Result<(), std::io::Error>>)
        .await
        .unwrap_err();
    assert_eq!(
        err.timeout().map(palisade::stack::Timeout::kind),
        Some(TimeoutKind::Attempt)
    );
    assert_eq!(err.to_string(), "the attempt timeout of 1s ran out");
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_refuses_before_anything_else_runs() {
    let stack = paused(Stack::builder())
        .rate_limiter(
            RateLimiter::builder()
                .quota(Quota::per_second(10).burst(2))
                .max_wait(Duration::ZERO),
        )
        .retry(no_delay(3))
        .circuit_breaker(CircuitBreaker::builder())
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let mut refused = Vec::new();
    for _ in 0..3 {
        let result = stack
            .call(|| async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(reset())
            })
            .await;
        if let Err(StackError::Rejected(r)) = result {
            refused.push((r.pattern(), r.retry_after()));
        }
    }
    // Two admitted calls of three attempts each; the third call is refused.
    assert_eq!(calls.load(Ordering::Relaxed), 6);
    // The next slot is 100 ms after the first call, which is 4 ms (two
    // delays of 1 ms per call) in the past.
    assert_eq!(
        refused,
        [(Pattern::RateLimit, Some(Duration::from_millis(96)))]
    );
    assert_eq!(stack.circuit_breaker().unwrap().snapshot().calls, 6);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_rate_limiter_waits_before_the_total_timeout_starts() {
    let stack = paused(Stack::builder())
        .rate_limiter(
            RateLimiter::builder()
                .quota(Quota::per_second(1).burst(1))
                .max_wait(Duration::from_secs(2)),
        )
        .total_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let start = Instant::now();
    stack
        .call(|| async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap();
    stack
        .call(|| async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn the_classifier_decides_for_the_breaker_and_the_retry() {
    let stack = paused(Stack::builder())
        .retry(no_delay(3))
        .circuit_breaker(CircuitBreaker::builder())
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    // A 404 is ignored: not retried, not counted; a 503 is retried and returned as Ok.
    let classifier = |r: &Result<u16, std::io::Error>| match r {
        Ok(404) => Outcome::Ignored,
        Ok(503) | Err(_) => Outcome::Failure,
        Ok(_) => Outcome::Success,
    };
    let status = stack
        .call_with(&classifier, || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Ok(404)
        })
        .await
        .unwrap();
    assert_eq!((status, calls.swap(0, Ordering::Relaxed)), (404, 1));
    let status = stack
        .call_with(&classifier, || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Ok(503)
        })
        .await
        .unwrap();
    assert_eq!((status, calls.load(Ordering::Relaxed)), (503, 3));
    let snapshot = stack.circuit_breaker().unwrap().snapshot();
    assert_eq!((snapshot.calls, snapshot.failed_calls), (3, 3));
}

#[tokio::test(start_paused = true)]
async fn a_rejection_inside_the_call_is_neither_retried_nor_counted() {
    let stack = paused(Stack::builder())
        .retry(no_delay(3))
        .circuit_breaker(CircuitBreaker::builder())
        .build()
        .unwrap();
    let calls = AtomicU32::new(0);
    let inner = Rejected::new(Pattern::Bulkhead, "full", None);
    let err = stack
        .call(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(inner)
        })
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert_eq!(Rejected::find(&err), Some(&inner));
    assert_eq!(stack.circuit_breaker().unwrap().snapshot().calls, 0);
}

#[tokio::test(start_paused = true)]
async fn call_once_skips_only_the_retry() {
    let stack = paused(Stack::builder())
        .retry(no_delay(3))
        .circuit_breaker(CircuitBreaker::builder())
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let err = stack
        .call_once(async { Err::<(), _>(reset()) })
        .await
        .unwrap_err();
    assert_eq!(
        err.into_inner().map(|e| e.to_string()).as_deref(),
        Some("connection reset")
    );
    let err = stack
        .call_once(std::future::pending::<Result<(), std::io::Error>>())
        .await
        .unwrap_err();
    assert_eq!(
        err.timeout().map(palisade::stack::Timeout::kind),
        Some(TimeoutKind::Attempt)
    );
    let snapshot = stack.circuit_breaker().unwrap().snapshot();
    assert_eq!((snapshot.calls, snapshot.failed_calls), (2, 2));
}

async fn attempts_of_one_failing_call_each(stacks: &[Stack]) -> u32 {
    let calls = AtomicU32::new(0);
    for stack in stacks {
        let _ = stack
            .call(|| async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(reset())
            })
            .await;
    }
    calls.load(Ordering::Relaxed)
}

/// Clones share one budget. This one keeps a reserve of 2 retries (1 per
/// second of a 2 s window) and earns next to nothing per call (1 %): eight
/// failing calls, one per clone, get 2 retries in all. Eight stacks built
/// apart (the trap: a stack built per connection) get 2 each, 16.
#[tokio::test(start_paused = true)]
async fn clones_share_one_retry_budget() {
    let build = || {
        let budget = RetryBudget::builder()
            .percent(0.01)
            .min_per_second(1)
            .window(Duration::from_secs(2))
            .clock(TokioClock::shared())
            .build()
            .unwrap();
        paused(Stack::builder())
            .retry(
                Retry::builder()
                    .max_attempts(10)
                    .backoff(Backoff::fixed(Duration::from_millis(1)))
                    .budget(budget),
            )
            .build()
            .unwrap()
    };
    let stack = build();
    let clones: Vec<Stack> = (0..8).map(|_| stack.clone()).collect();
    assert!(
        clones[7]
            .retry()
            .unwrap()
            .budget()
            .unwrap()
            .same_as(stack.retry().unwrap().budget().unwrap())
    );
    assert_eq!(attempts_of_one_failing_call_each(&clones).await, 8 + 2);
    let apart: Vec<Stack> = (0..8).map(|_| build()).collect();
    assert_eq!(attempts_of_one_failing_call_each(&apart).await, 8 + 16);
}

#[test]
fn build_names_the_method_that_set_a_bad_value() {
    let field = |b: StackBuilder| b.build().unwrap_err().field();
    assert_eq!(field(Stack::builder().name("")), "name");
    assert_eq!(
        field(Stack::builder().total_timeout(Duration::ZERO)),
        "total_timeout"
    );
    assert_eq!(
        field(Stack::builder().attempt_timeout(Duration::ZERO)),
        "attempt_timeout"
    );
    let err = Stack::builder()
        .total_timeout(Duration::from_secs(1))
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "attempt_timeout");
    assert_eq!(
        err.to_string(),
        "invalid configuration `attempt_timeout`: must be shorter than total_timeout (1s), got 1s"
    );
    // A part's own builder names its own method.
    assert_eq!(
        field(Stack::builder().retry(Retry::builder().max_attempts(0))),
        "max_attempts"
    );
    assert_eq!(
        field(Stack::builder().rate_limiter(RateLimiter::builder())),
        "quota"
    );
    assert_eq!(
        field(
            Stack::builder().circuit_breaker(CircuitBreaker::builder().failure_rate_threshold(2.0))
        ),
        "failure_rate_threshold"
    );
    assert_eq!(
        field(Stack::builder().bulkhead(Bulkhead::builder().max_concurrent_calls(0))),
        "max_concurrent_calls"
    );
}

#[tokio::test(start_paused = true)]
async fn the_stack_name_is_every_part_name() {
    let stack = Stack::http_client("payments").build().unwrap();
    assert_eq!(stack.name(), "payments");
    assert_eq!(stack.retry().unwrap().name(), "payments");
    assert_eq!(stack.circuit_breaker().unwrap().name(), "payments");
    assert_eq!(stack.bulkhead().unwrap().name(), "payments");
}

#[tokio::test(start_paused = true)]
async fn http_client_preset() {
    let stack = paused(Stack::http_client("payments")).build().unwrap();
    assert!(stack.rate_limiter().is_none());
    assert_eq!(stack.total_timeout(), Some(Duration::from_secs(30)));
    assert_eq!(stack.attempt_timeout(), Some(Duration::from_secs(10)));
    assert_eq!(stack.bulkhead().unwrap().snapshot().limit, 1000);
    // Four attempts, the delays full-jittered under 2 s, 4 s, 8 s.
    let calls = AtomicU32::new(0);
    let start = Instant::now();
    let _ = stack
        .call(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(reset())
        })
        .await;
    assert_eq!(calls.load(Ordering::Relaxed), 4);
    assert!(
        start.elapsed() <= Duration::from_secs(14),
        "{:?}",
        start.elapsed()
    );
    // 100 calls at least, 10 % failures: 90 successes and 9 failures keep it
    // closed; the 100th call, a failure, opens it.
    let stack = paused(Stack::http_client("payments").no_retry())
        .build()
        .unwrap();
    for i in 0..99 {
        let _ = stack
            .call(|| async move { if i < 9 { Err(reset()) } else { Ok(()) } })
            .await;
    }
    assert_eq!(stack.circuit_breaker().unwrap().state(), State::Closed);
    let _ = stack.call(|| async { Err::<(), _>(reset()) }).await;
    assert_eq!(stack.circuit_breaker().unwrap().state(), State::Open);
    let err = stack
        .call(|| async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));
}

#[tokio::test(start_paused = true)]
async fn database_client_preset() {
    let stack = paused(Stack::database_client("orders-db")).build().unwrap();
    assert_eq!(stack.total_timeout(), Some(Duration::from_secs(5)));
    assert_eq!(stack.attempt_timeout(), Some(Duration::from_secs(2)));
    assert_eq!(stack.bulkhead().unwrap().snapshot().limit, 10);
    let calls = AtomicU32::new(0);
    let _ = stack
        .call(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(reset())
        })
        .await;
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    // An 11th caller waits for a connection's slot up to 1 s, then is refused.
    let slots: Vec<_> = (0..10)
        .map(|_| stack.bulkhead().unwrap().try_acquire().unwrap())
        .collect();
    let start = Instant::now();
    let err = stack
        .call_once(async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap_err();
    assert_eq!(err.pattern(), Some(Pattern::Bulkhead));
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    drop(slots);
    // The last 20 calls, half failed: open for 10 s.
    let stack = paused(Stack::database_client("orders-db").no_retry())
        .build()
        .unwrap();
    for i in 0..20 {
        let _ = stack
            .call(|| async move { if i % 2 == 0 { Err(reset()) } else { Ok(()) } })
            .await;
    }
    let err = stack
        .call(|| async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(10)));
}

#[tokio::test(start_paused = true)]
async fn inbound_server_preset() {
    let stack = paused(Stack::inbound_server("api")).build().unwrap();
    assert!(stack.retry().is_none() && stack.circuit_breaker().is_none());
    assert_eq!(stack.total_timeout(), Some(Duration::from_secs(30)));
    assert_eq!(stack.attempt_timeout(), None);
    assert_eq!(stack.bulkhead().unwrap().snapshot().limit, 500);
    let calls = AtomicU32::new(0);
    let mut refused = 0;
    for _ in 0..101 {
        match stack
            .call(|| async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(reset())
            })
            .await
        {
            Err(StackError::Rejected(r)) => {
                assert_eq!(r.retry_after(), Some(Duration::from_millis(1)));
                refused += 1;
            }
            Err(StackError::Inner(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    // A burst of 100, each run once (no retry); the 101st refused at once.
    assert_eq!((calls.load(Ordering::Relaxed), refused), (100, 1));
}

#[test]
fn the_error_converts_into_a_box_error_and_keeps_its_sources() {
    use std::error::Error as _;
    let rejected = Rejected::new(
        Pattern::CircuitBreaker,
        "open",
        Some(Duration::from_secs(3)),
    );
    let err: StackError<std::io::Error> = rejected.into();
    assert_eq!(
        err.to_string(),
        "circuit breaker rejected the call (open); retry after 3s"
    );
    let boxed: tower::BoxError = err.into();
    assert_eq!(Rejected::find(&*boxed), Some(&rejected));
    let err = boxed.downcast::<StackError<std::io::Error>>().unwrap();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));

    let inner: StackError<std::io::Error> = StackError::Inner(std::io::Error::other("refused"));
    assert_eq!(inner.to_string(), "refused");
    assert!(inner.source().is_none());
    assert_eq!(
        inner.map_inner(|e| e.to_string()).into_inner().as_deref(),
        Some("refused")
    );
}

#[tokio::test(start_paused = true)]
async fn the_layer_retries_a_clone_of_the_request_and_the_once_layer_does_not() {
    use tower::{Layer, ServiceExt, service_fn};
    let stack = paused(Stack::builder()).retry(no_delay(3)).build().unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let inner = {
        let calls = Arc::clone(&calls);
        service_fn(move |n: u32| {
            let calls = Arc::clone(&calls);
            async move {
                if calls.fetch_add(1, Ordering::Relaxed) < 2 {
                    Err(reset())
                } else {
                    Ok(n * 2)
                }
            }
        })
    };
    let answer = stack
        .layer()
        .layer(inner.clone())
        .oneshot(21)
        .await
        .unwrap();
    assert_eq!((answer, calls.swap(0, Ordering::Relaxed)), (42, 3));
    let err = stack
        .once_layer()
        .layer(inner)
        .oneshot(21)
        .await
        .unwrap_err();
    assert!(err.inner().is_some());
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

/// 8 threads, 64 tasks, 50 calls each, through a bulkhead of 4: every call
/// either ran or was refused by the bulkhead, never more than 4 at once,
/// and the breaker counted exactly the calls that ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_calls_are_counted_exactly() {
    let stack = Stack::builder()
        .circuit_breaker(
            CircuitBreaker::builder()
                .sliding_window(SlidingWindow::count(100_000))
                .minimum_calls(100_000),
        )
        .bulkhead(Bulkhead::builder().max_concurrent_calls(4))
        .build()
        .unwrap();
    let running = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let ran = Arc::new(AtomicU32::new(0));
    let refused = Arc::new(AtomicU32::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (stack, running, most, ran, refused) = (
                stack.clone(),
                running.clone(),
                most.clone(),
                ran.clone(),
                refused.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..50 {
                    let result = stack
                        .call(|| async {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            running.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, std::io::Error>(())
                        })
                        .await;
                    match result {
                        Ok(()) => ran.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            assert_eq!(e.pattern(), Some(Pattern::Bulkhead));
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (ran, refused) = (ran.load(Ordering::Relaxed), refused.load(Ordering::Relaxed));
    assert_eq!(ran + refused, 64 * 50);
    assert!(most.load(Ordering::SeqCst) <= 4);
    assert!(ran >= 4);
    assert_eq!(
        stack.circuit_breaker().unwrap().snapshot().calls,
        u64::from(ran)
    );
    assert_eq!(stack.bulkhead().unwrap().snapshot().in_flight, 0);
}

#[tokio::test]
async fn the_future_of_a_call_is_send() {
    let stack = Stack::http_client("payments").build().unwrap();
    let answer =
        tokio::spawn(async move { stack.call(|| async { Ok::<_, std::io::Error>(5) }).await })
            .await
            .unwrap()
            .unwrap();
    assert_eq!(answer, 5);
}
