//! The standard stack on the happy path: palisade's `Stack` against the same
//! stack built from tower 0.5's layers and from tower-resilience 0.13's, in
//! the same run, with a bare call as the baseline.
//!
//! ```text
//! cargo bench -p palisade-benches --bench stack -- --warm-up-time 1 --measurement-time 3
//! cargo bench -p palisade-benches --bench stack --features count-allocations -- allocations
//! benches/callgrind.sh stack
//! ```
//!
//! One iteration is one call that succeeds at once, through every part, polled
//! once with a no-op waker inside a current-thread tokio runtime's context
//! (tower's timeouts make their tokio `Sleep` there; none is ever polled, as
//! the call is ready first, in every stack). Every part is configured alike:
//!
//! | part | palisade (`Stack`) | tower | tower-resilience |
//! |---|---|---|---|
//! | rate limit | `RateLimiter`, 10⁹ per second, no waiting | `RateLimitLayer`, 10⁹ per second (per instance) | `RateLimiterLayer`, 10⁹ per 1 s period, no waiting |
//! | total timeout | 30 s (one clock read) | `TimeoutLayer` 30 s | tower's `TimeoutLayer` 30 s (tower-resilience has no timeout in this build) |
//! | retry | 3 attempts, exponential 10 ms, default budget (20 %, 10/s, 10 s) | `RetryLayer`, 3 attempts, `TpsBudget` with the same defaults | `RetryLayer`, 3 attempts, exponential 10 ms, no budget (it has none) |
//! | circuit breaker | count window of 100 | **none** (tower has no breaker: one part fewer) | count window of 100 |
//! | bulkhead | 1000 at once, rejecting | `ConcurrencyLimitLayer` 1000 (waits instead) | `BulkheadLayer` 1000, rejecting |
//! | attempt timeout | 10 s (one clock read) | `TimeoutLayer` 10 s | tower's `TimeoutLayer` 10 s |
//!
//! Rows: `bare` (the call alone), `palisade/call` (the direct `Stack::call`),
//! `palisade/layer` (`Stack::layer()` over a `service_fn`: one `ready` + `call`,
//! its response future boxed), `tower`, `tower-resilience` (`ready` + `call`
//! over a `service_fn`).

use palisade_benches::poll_now;
use std::fmt;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::Criterion;
use palisade::bulkhead::Bulkhead;
use palisade::circuit_breaker::{CircuitBreaker, SlidingWindow};
use palisade::rate_limit::{Quota, RateLimiter};
use palisade::retry::{Backoff, Retry};
use palisade::stack::Stack;
use tokio::runtime::Runtime;
use tower::retry::Policy;
use tower::retry::budget::{Budget as _, TpsBudget};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

const RATE: u32 = 1_000_000_000;
const ATTEMPTS: u32 = 3;
const BASE: Duration = Duration::from_millis(10);
const TOTAL: Duration = Duration::from_secs(30);
const ATTEMPT: Duration = Duration::from_secs(10);
const LIMIT: u32 = 1000;

/// The error of the inner call (never returned here).
#[derive(Debug, Clone, Copy)]
struct Flaky;

impl fmt::Display for Flaky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("flaky")
    }
}

impl std::error::Error for Flaky {}

#[allow(clippy::unused_async)] // a service_fn needs a future
async fn ok(x: u32) -> Result<u32, Flaky> {
    Ok(x)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
}

// ---- the stacks ---------------------------------------------------------------------

fn palisade() -> Stack {
    Stack::builder()
        .name("bench")
        .rate_limiter(
            RateLimiter::builder()
                .quota(Quota::per_second(RATE))
                .max_wait(Duration::ZERO),
        )
        .total_timeout(TOTAL)
        .retry(
            Retry::builder()
                .max_attempts(ATTEMPTS)
                .backoff(Backoff::exponential(BASE)),
        )
        .circuit_breaker(
            CircuitBreaker::builder()
                .sliding_window(SlidingWindow::count(100))
                .minimum_calls(100),
        )
        .bulkhead(Bulkhead::builder().max_concurrent_calls(LIMIT))
        .attempt_timeout(ATTEMPT)
        .build()
        .expect("valid palisade configuration")
}

/// tower's retry with its `TpsBudget` (Finagle's defaults, as palisade's):
/// a success deposits, a retry withdraws; 3 attempts, 10 ms then 20 ms.
#[derive(Clone)]
struct TowerPolicy {
    retries_left: u32,
    next_delay: Duration,
    budget: Arc<TpsBudget>,
}

impl<Req: Clone, Res, E> Policy<Req, Res, E> for TowerPolicy {
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        if result.is_ok() {
            self.budget.deposit();
            return None;
        }
        if self.retries_left == 0 || !self.budget.withdraw() {
            return None;
        }
        self.retries_left -= 1;
        let delay = self.next_delay;
        self.next_delay *= 2;
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

fn tower() -> impl Service<u32, Response = u32, Error = tower::BoxError> {
    let policy = TowerPolicy {
        retries_left: ATTEMPTS - 1,
        next_delay: BASE,
        budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
    };
    ServiceBuilder::new()
        .rate_limit(u64::from(RATE), Duration::from_secs(1))
        .timeout(TOTAL)
        .retry(policy)
        .concurrency_limit(LIMIT as usize)
        .timeout(ATTEMPT)
        .service(service_fn(ok))
}

fn tower_resilience() -> impl Service<u32, Response = u32, Error = tower::BoxError> {
    use tower_resilience::bulkhead::BulkheadLayer;
    use tower_resilience::circuitbreaker::{CircuitBreakerLayer, SlidingWindowType};
    use tower_resilience::ratelimiter::RateLimiterLayer;
    use tower_resilience::retry::RetryLayer;
    let rate = RateLimiterLayer::builder()
        .limit_for_period(RATE as usize)
        .refresh_period(Duration::from_secs(1))
        .timeout_duration(Duration::ZERO)
        .build()
        .expect("valid tower-resilience rate limit");
    let retry = RetryLayer::<u32, u32, tower::BoxError>::builder()
        .max_attempts(ATTEMPTS as usize)
        .exponential_backoff(BASE)
        .build();
    let breaker = CircuitBreakerLayer::builder()
        .sliding_window_type(SlidingWindowType::CountBased)
        .sliding_window_size(100)
        .minimum_number_of_calls(100)
        .build()
        .expect("valid tower-resilience breaker");
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent_calls(LIMIT as usize)
        .reject_when_full()
        .build()
        .expect("valid tower-resilience bulkhead");
    ServiceBuilder::new()
        .map_err(Into::<tower::BoxError>::into)
        .layer(rate)
        .map_err(boxed)
        .timeout(TOTAL)
        .map_err(boxed)
        .layer(retry)
        .map_err(Into::<tower::BoxError>::into)
        .layer(breaker)
        .map_err(boxed)
        .layer(bulkhead)
        .map_err(boxed)
        .timeout(ATTEMPT)
        .service(service_fn(ok))
}

/// tower's `BoxError` as an `Error`, for the tower-resilience layers whose
/// errors wrap their inner error (touched only when a call fails).
#[derive(Debug)]
struct Boxed(tower::BoxError);

impl fmt::Display for Boxed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Boxed {}

fn boxed<E: Into<tower::BoxError>>(error: E) -> Boxed {
    Boxed(error.into())
}

// ---- one call each --------------------------------------------------------------------

#[inline]
fn bare_call() {
    let answer = poll_now(ok(black_box(1)));
    assert_eq!(black_box(answer).ok(), Some(1));
}

#[inline]
fn palisade_call(stack: &Stack) {
    let answer = poll_now(black_box(stack).call(|| ok(black_box(1))));
    assert_eq!(black_box(answer).ok(), Some(1));
}

/// One `ready().await` + `call(1).await`, polled once; it must succeed at once.
#[inline]
fn service_call<S>(svc: &mut S)
where
    S: Service<u32, Response = u32>,
    S::Error: fmt::Debug,
{
    let answer = poll_now(async {
        svc.ready()
            .await
            .expect("service is ready")
            .call(black_box(1))
            .await
    });
    assert_eq!(black_box(answer).expect("call succeeds"), 1);
}

fn happy_path(criterion: &mut Criterion) {
    let rt = runtime();
    let _entered = rt.enter();
    let mut group = criterion.benchmark_group("stack");
    group.bench_function("bare", |b| b.iter(bare_call));
    let stack = palisade();
    group.bench_function("palisade/call", |b| b.iter(|| palisade_call(&stack)));
    let mut layer = stack.layer().layer(service_fn(ok));
    group.bench_function("palisade/layer", |b| b.iter(|| service_call(&mut layer)));
    let mut tower = tower();
    group.bench_function("tower", |b| b.iter(|| service_call(&mut tower)));
    let mut tr = tower_resilience();
    group.bench_function("tower-resilience", |b| b.iter(|| service_call(&mut tr)));
    group.finish();
}

// ---- allocations ------------------------------------------------------------------------

/// Heap allocations per call, counted with `allocation-counter` (feature
/// `count-allocations`); its counting allocator is linked only then.
#[cfg(feature = "count-allocations")]
mod allocations {
    use super::{
        Layer, bare_call, ok, palisade, palisade_call, runtime, service_call, service_fn, tower,
        tower_resilience,
    };
    use palisade_benches::{AllocRow, alloc_table};

    const ALLOC_CALLS: u64 = 10_000;

    fn count(subject: &str, mut op: impl FnMut()) -> AllocRow {
        for _ in 0..100 {
            op();
        }
        let info = allocation_counter::measure(|| {
            for _ in 0..ALLOC_CALLS {
                op();
            }
        });
        AllocRow {
            operation: "stack".to_owned(),
            subject: subject.to_owned(),
            allocs_per_call: info.count_total as f64 / ALLOC_CALLS as f64,
            bytes_per_call: info.bytes_total as f64 / ALLOC_CALLS as f64,
        }
    }

    pub(crate) fn report() {
        let rt = runtime();
        let _entered = rt.enter();
        let stack = palisade();
        let mut layer = stack.layer().layer(service_fn(ok));
        let mut tower = tower();
        let mut tr = tower_resilience();
        let rows = [
            count("bare", bare_call),
            count("palisade/call", || palisade_call(&stack)),
            count("palisade/layer", || service_call(&mut layer)),
            count("tower", || service_call(&mut tower)),
            count("tower-resilience", || service_call(&mut tr)),
        ];
        println!(
            "\nHeap allocations per call ({ALLOC_CALLS} calls each; counted by allocation-counter):\n\n{}",
            alloc_table(&rows)
        );
    }
}

/// The happy paths, for `benches/callgrind.sh stack` (instructions per call).
#[allow(clippy::semicolon_if_nothing_returned)] // closures that return ()
fn callgrind_subjects() -> bool {
    let rt = runtime();
    let _entered = rt.enter();
    let stack = palisade();
    let mut layer = stack.layer().layer(service_fn(ok));
    let mut tower = tower();
    let mut tr = tower_resilience();
    palisade_benches::callgrind(&mut [
        ("stack/bare", &mut bare_call),
        ("stack/palisade/call", &mut || palisade_call(&stack)),
        ("stack/palisade/layer", &mut || service_call(&mut layer)),
        ("stack/tower", &mut || service_call(&mut tower)),
        ("stack/tower-resilience", &mut || service_call(&mut tr)),
    ])
}

fn main() {
    if callgrind_subjects() {
        return;
    }
    #[cfg(feature = "count-allocations")]
    if !std::env::args().any(|a| a == "--list") {
        allocations::report();
    }
    let mut c = Criterion::default().configure_from_args();
    happy_path(&mut c);
    c.final_summary();
}
