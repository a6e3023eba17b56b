//! Palisade's retry against backon 1.6, tower 0.5's `retry::Retry` and
//! tower-resilience 0.13's retry layer, with the bare call (or a bare
//! `service_fn`) as the baseline of each happy-path group.
//!
//! ```text
//! cargo bench -p palisade-benches --bench retry -- --warm-up-time 1 --measurement-time 2
//! ```
//!
//! Every group compares all crates that can do its operation, in the same run:
//!
//! | group | what one iteration is |
//! |---|---|
//! | `success/direct` | one call that succeeds at once, through the crate's direct API, polled once with a no-op waker |
//! | `success/tower_layer` | one `ready().await` + `call(1).await` through a retry layer over a `service_fn` that succeeds, polled once with a no-op waker |
//! | `fail_twice` | one call whose first two attempts fail and whose third succeeds, `block_on` on a current-thread runtime with paused time |
//!
//! tower's `Retry` has no direct API, so it is in the layer groups only; backon
//! has no tower layer, so it is in the direct groups only.
//!
//! Allocations are counted separately, with the `count-allocations` feature:
//!
//! ```text
//! cargo bench -p palisade-benches --bench retry --features count-allocations -- allocations
//! ```
//!
//! prints a Markdown table of heap allocations per call for every row below
//! (see `allocations::report`) before the groups run; the filter `allocations`
//! matches no benchmark, so only the table is printed.
//!
//! # Configurations
//!
//! The same schedule everywhere: at most 3 attempts (2 retries), exponential
//! backoff from 10 ms with factor 2 (10 ms, then 20 ms), no jitter; every error
//! is retried.
//!
//! - **palisade**: `Retry::builder().max_attempts(3).backoff(Backoff::exponential(10 ms))`,
//!   no deadline, no attempt timeout, no listener. In the `success` groups it
//!   keeps its **default budget** (Finagle's: 20 %, 10 per second, 10 s, on the
//!   system clock), since that is what a user gets; the `palisade/no_budget`
//!   rows show what the budget costs. In `fail_twice` the peers have no budget
//!   (backon and tower's `Retry` have none, tower-resilience's is off by
//!   default), and palisade's default budget would refuse almost every retry of
//!   a loop that retries twice per call, so the like-for-like rows run it with
//!   `no_budget()`. `palisade/direct+budget` runs it with a budget that never
//!   refuses here (100 %, 100 per second over 10 s, on tokio's paused clock,
//!   while each call moves that clock 30 ms), to show what granting a retry costs.
//! - **backon**: `ExponentialBuilder::new().with_min_delay(10 ms).with_factor(2.0).with_max_times(2)`
//!   (jitter is off by default), tokio's sleep.
//! - **tower**: `tower::retry::RetryLayer` with [`TowerPolicy`]: clones the request,
//!   retries an `Err` at most twice after `tokio::time::sleep` of 10 ms then 20 ms,
//!   and is done on `Ok`. The "bare Retry" of the issue: nothing but the policy.
//!   `tower/tps_budget` adds tower's own budget ([`TowerBudgetPolicy`]), for
//!   comparison with palisade's budgeted rows (success groups only).
//! - **tower-resilience**: `RetryLayer::builder().max_attempts(3).exponential_backoff(10 ms)`
//!   (multiplier 2, no randomisation), no budget, no listener.

use palisade_benches::poll_now;
use std::error::Error;
use std::fmt;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use criterion::Criterion;
use palisade_retry::tower::RetryLayer as PalisadeLayer;
use palisade_retry::{Backoff, Retry, RetryBudget, TokioClock};
use tokio::runtime::Runtime;
use tower::retry::budget::{Budget as _, TpsBudget};
use tower::retry::{Policy, RetryLayer as TowerLayer};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_resilience::retry::RetryLayer as TrLayer;

/// The first delay; each next one doubles it.
const BASE: Duration = Duration::from_millis(10);

/// Attempts per call, the first included.
const ATTEMPTS: u32 = 3;

/// The error every failed attempt returns.
#[derive(Debug, Clone, Copy)]
struct Flaky;

impl fmt::Display for Flaky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("flaky")
    }
}

impl Error for Flaky {}

/// An attempt that succeeds at once.
#[allow(clippy::unused_async)] // a service_fn needs a future
async fn ok(x: u32) -> Result<u32, Flaky> {
    Ok(x)
}

/// A dependency whose attempts fail twice, then succeed, then fail twice, …
/// Shared by the clones a layer makes, so every call makes exactly 3 attempts
/// (the groups check that each call ends in `Ok`, so a peer that stopped early
/// would fail the next call's check).
#[derive(Clone, Default)]
struct FailTwice {
    attempts: Arc<AtomicU32>,
}

impl FailTwice {
    fn attempt(&self, x: u32) -> Result<u32, Flaky> {
        if self.attempts.fetch_add(1, Ordering::Relaxed) % 3 < 2 {
            Err(Flaky)
        } else {
            Ok(x)
        }
    }

    fn service(
        &self,
    ) -> impl Service<u32, Response = u32, Error = Flaky, Future: Send> + Clone + Send + 'static
    {
        let this = self.clone();
        service_fn(move |x| {
            let result = this.attempt(x);
            async move { result }
        })
    }
}

// ---- the retries under test ----------------------------------------------------------

/// The default budget on, the system clock, tokio's sleeper.
fn palisade() -> Retry {
    Retry::builder()
        .max_attempts(ATTEMPTS)
        .backoff(Backoff::exponential(BASE))
        .build()
        .expect("valid palisade configuration")
}

fn palisade_no_budget() -> Retry {
    Retry::builder()
        .max_attempts(ATTEMPTS)
        .backoff(Backoff::exponential(BASE))
        .no_budget()
        .build()
        .expect("valid palisade configuration")
}

/// A budget on tokio's clock that never refuses in `fail_twice`: each call
/// moves the paused clock by 30 ms, so a 10 s window holds about 333 calls and
/// needs 667 retries; it has 1,000 in reserve plus one per call. Must be built
/// inside the paused runtime.
fn palisade_paused_budget() -> Retry {
    let clock = TokioClock::shared();
    let budget = RetryBudget::builder()
        .percent(1.0)
        .min_per_second(100)
        .window(Duration::from_secs(10))
        .clock(Arc::clone(&clock))
        .build()
        .expect("valid palisade budget");
    Retry::builder()
        .max_attempts(ATTEMPTS)
        .backoff(Backoff::exponential(BASE))
        .clock(clock)
        .budget(budget)
        .build()
        .expect("valid palisade configuration")
}

fn backon() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(BASE)
        .with_factor(2.0)
        .with_max_times(ATTEMPTS as usize - 1)
}

/// tower's retry policy, as small as it can be: clone the request, retry an
/// `Err` at most twice after 10 ms then 20 ms, stop on `Ok`.
#[derive(Clone, Copy)]
struct TowerPolicy {
    retries_left: u32,
    next_delay: Duration,
}

impl TowerPolicy {
    fn new() -> Self {
        Self {
            retries_left: ATTEMPTS - 1,
            next_delay: BASE,
        }
    }
}

impl<Req: Clone, Res, E> Policy<Req, Res, E> for TowerPolicy {
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        if result.is_ok() || self.retries_left == 0 {
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

fn tower_layer() -> TowerLayer<TowerPolicy> {
    TowerLayer::new(TowerPolicy::new())
}

/// [`TowerPolicy`] with tower's own budget, `TpsBudget` with Finagle's
/// defaults (10 s, 10 per second, 20 %), shared through an `Arc` as tower's
/// docs show: a success deposits, a retry withdraws. For the `success` group
/// only (in `fail_twice` this budget would refuse, as palisade's default would).
#[derive(Clone)]
struct TowerBudgetPolicy {
    policy: TowerPolicy,
    budget: Arc<TpsBudget>,
}

impl<Req: Clone, Res, E> Policy<Req, Res, E> for TowerBudgetPolicy {
    type Future = tokio::time::Sleep;

    fn retry(&mut self, req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        if result.is_ok() {
            self.budget.deposit();
            return None;
        }
        if !self.budget.withdraw() {
            return None;
        }
        self.policy.retry(req, result)
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

fn tower_budget_layer() -> TowerLayer<TowerBudgetPolicy> {
    TowerLayer::new(TowerBudgetPolicy {
        policy: TowerPolicy::new(),
        budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2)),
    })
}

fn tower_resilience() -> TrLayer<u32, u32, Flaky> {
    TrLayer::<u32, u32, Flaky>::builder()
        .max_attempts(ATTEMPTS as usize)
        .exponential_backoff(BASE)
        .build()
}

fn paused_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a paused current-thread runtime")
}

// ---- one operation each ----------------------------------------------------------------

#[inline]
fn bare_success() {
    let answer = poll_now(ok(black_box(1)));
    assert_eq!(black_box(answer).ok(), Some(1));
}

#[inline]
fn palisade_success(retry: &Retry) {
    let answer = poll_now(black_box(retry).call(|_| ok(black_box(1))));
    assert_eq!(black_box(answer).ok(), Some(1));
}

#[inline]
fn backon_success(builder: &ExponentialBuilder) {
    let answer = poll_now((|| ok(black_box(1))).retry(*black_box(builder)));
    assert_eq!(black_box(answer).ok(), Some(1));
}

/// One `ready().await` + `call(1).await`, polled once; it must succeed at once.
#[inline]
fn service_success<S>(svc: &mut S)
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

#[inline]
fn palisade_fail_twice(rt: &Runtime, retry: &Retry, dep: &FailTwice) {
    let answer = rt.block_on(retry.call(|_| {
        let result = dep.attempt(black_box(1));
        async move { result }
    }));
    assert_eq!(answer.expect("third attempt succeeds"), 1);
}

#[inline]
fn backon_fail_twice(rt: &Runtime, builder: &ExponentialBuilder, dep: &FailTwice) {
    let answer = rt.block_on(
        (|| {
            let result = dep.attempt(black_box(1));
            async move { result }
        })
        .retry(*builder),
    );
    assert_eq!(answer.expect("third attempt succeeds"), 1);
}

#[inline]
fn service_fail_twice<S>(rt: &Runtime, svc: &mut S)
where
    S: Service<u32, Response = u32>,
    S::Error: fmt::Debug,
{
    let answer = rt.block_on(async {
        svc.ready()
            .await
            .expect("service is ready")
            .call(black_box(1))
            .await
    });
    assert_eq!(answer.expect("third attempt succeeds"), 1);
}

// ---- groups -----------------------------------------------------------------------------

fn success_direct(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("success/direct");
    group.bench_function("bare_call", |b| b.iter(bare_success));
    let pal = palisade();
    group.bench_function("palisade", |b| b.iter(|| palisade_success(&pal)));
    let pal_nb = palisade_no_budget();
    group.bench_function("palisade/no_budget", |b| {
        b.iter(|| palisade_success(&pal_nb));
    });
    let bo = backon();
    group.bench_function("backon", |b| b.iter(|| backon_success(&bo)));
    group.finish();
}

fn success_tower_layer(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("success/tower_layer");
    let mut bare = service_fn(ok);
    group.bench_function("service_fn", |b| b.iter(|| service_success(&mut bare)));
    let mut pal = PalisadeLayer::new(palisade()).layer(service_fn(ok));
    group.bench_function("palisade", |b| b.iter(|| service_success(&mut pal)));
    let mut pal_nb = PalisadeLayer::new(palisade_no_budget()).layer(service_fn(ok));
    group.bench_function("palisade/no_budget", |b| {
        b.iter(|| service_success(&mut pal_nb));
    });
    // A retry built once and leaked: the future holds `&'static Retry`, no `Arc` clone.
    let leaked: &'static Retry = Box::leak(Box::new(palisade()));
    let mut pal_static = PalisadeLayer::from_static(leaked).layer(service_fn(ok));
    group.bench_function("palisade/static", |b| {
        b.iter(|| service_success(&mut pal_static));
    });
    let leaked_nb: &'static Retry = Box::leak(Box::new(palisade_no_budget()));
    let mut pal_static_nb = PalisadeLayer::from_static(leaked_nb).layer(service_fn(ok));
    group.bench_function("palisade/static+no_budget", |b| {
        b.iter(|| service_success(&mut pal_static_nb));
    });
    let mut tw = tower_layer().layer(service_fn(ok));
    group.bench_function("tower", |b| b.iter(|| service_success(&mut tw)));
    let mut tw_budget = tower_budget_layer().layer(service_fn(ok));
    group.bench_function("tower/tps_budget", |b| {
        b.iter(|| service_success(&mut tw_budget));
    });
    let mut tr = tower_resilience().layer(service_fn(ok));
    group.bench_function("tower-resilience", |b| {
        b.iter(|| service_success(&mut tr));
    });
    group.finish();
}

fn fail_twice(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("fail_twice");
    let rt = paused_runtime();
    let dep = FailTwice::default();

    let pal = palisade_no_budget();
    group.bench_function("palisade/direct", |b| {
        b.iter(|| palisade_fail_twice(&rt, &pal, &dep));
    });
    let pal_budget = {
        let _entered = rt.enter();
        palisade_paused_budget()
    };
    group.bench_function("palisade/direct+budget", |b| {
        b.iter(|| palisade_fail_twice(&rt, &pal_budget, &dep));
    });
    let mut pal_layer = PalisadeLayer::new(palisade_no_budget()).layer(dep.service());
    group.bench_function("palisade/tower_layer", |b| {
        b.iter(|| service_fail_twice(&rt, &mut pal_layer));
    });
    let bo = backon();
    group.bench_function("backon", |b| b.iter(|| backon_fail_twice(&rt, &bo, &dep)));
    let mut tw = tower_layer().layer(dep.service());
    group.bench_function("tower", |b| b.iter(|| service_fail_twice(&rt, &mut tw)));
    let mut tr = tower_resilience().layer(dep.service());
    group.bench_function("tower-resilience", |b| {
        b.iter(|| service_fail_twice(&rt, &mut tr));
    });
    group.finish();
}

// ---- allocations ---------------------------------------------------------------------

/// Heap allocations per call, counted with `allocation-counter` (feature
/// `count-allocations`). Its counting global allocator is linked only when
/// this module is compiled, so the timed code otherwise runs on the plain
/// system allocator.
#[cfg(feature = "count-allocations")]
mod allocations {
    use super::{
        FailTwice, Layer, PalisadeLayer, backon, backon_fail_twice, backon_success, bare_success,
        ok, palisade, palisade_fail_twice, palisade_no_budget, palisade_paused_budget,
        palisade_success, paused_runtime, service_fail_twice, service_fn, service_success,
        tower_budget_layer, tower_layer, tower_resilience,
    };
    use palisade_benches::{AllocRow, alloc_table};

    /// Calls counted per row.
    const ALLOC_CALLS: u64 = 10_000;

    /// Runs `op` 100 times to get past lazy set-up, then counts what
    /// `ALLOC_CALLS` more calls allocate on this thread.
    fn count(operation: &str, subject: &str, mut op: impl FnMut()) -> AllocRow {
        for _ in 0..100 {
            op();
        }
        let info = allocation_counter::measure(|| {
            for _ in 0..ALLOC_CALLS {
                op();
            }
        });
        AllocRow {
            operation: operation.to_owned(),
            subject: subject.to_owned(),
            allocs_per_call: info.count_total as f64 / ALLOC_CALLS as f64,
            bytes_per_call: info.bytes_total as f64 / ALLOC_CALLS as f64,
        }
    }

    /// Heap allocations per call for every row of every group, printed once
    /// as a Markdown table for `docs/benchmarks.md`.
    pub(crate) fn report() {
        let mut rows = Vec::new();

        rows.push(count("success/direct", "bare_call", bare_success));
        let p = palisade();
        rows.push(count("success/direct", "palisade", || palisade_success(&p)));
        let p = palisade_no_budget();
        rows.push(count("success/direct", "palisade/no_budget", || {
            palisade_success(&p);
        }));
        let b = backon();
        rows.push(count("success/direct", "backon", || backon_success(&b)));

        let mut s = service_fn(ok);
        rows.push(count("success/tower_layer", "service_fn", || {
            service_success(&mut s);
        }));
        let mut s = PalisadeLayer::new(palisade()).layer(service_fn(ok));
        rows.push(count("success/tower_layer", "palisade", || {
            service_success(&mut s);
        }));
        let mut s = PalisadeLayer::new(palisade_no_budget()).layer(service_fn(ok));
        rows.push(count("success/tower_layer", "palisade/no_budget", || {
            service_success(&mut s);
        }));
        let mut s = tower_layer().layer(service_fn(ok));
        rows.push(count("success/tower_layer", "tower", || {
            service_success(&mut s);
        }));
        let mut s = tower_budget_layer().layer(service_fn(ok));
        rows.push(count("success/tower_layer", "tower/tps_budget", || {
            service_success(&mut s);
        }));
        let mut s = tower_resilience().layer(service_fn(ok));
        rows.push(count("success/tower_layer", "tower-resilience", || {
            service_success(&mut s);
        }));

        let rt = paused_runtime();
        let dep = FailTwice::default();
        let p = palisade_no_budget();
        rows.push(count("fail_twice", "palisade/direct", || {
            palisade_fail_twice(&rt, &p, &dep);
        }));
        let p = {
            let _entered = rt.enter();
            palisade_paused_budget()
        };
        rows.push(count("fail_twice", "palisade/direct+budget", || {
            palisade_fail_twice(&rt, &p, &dep);
        }));
        let mut s = PalisadeLayer::new(palisade_no_budget()).layer(dep.service());
        rows.push(count("fail_twice", "palisade/tower_layer", || {
            service_fail_twice(&rt, &mut s);
        }));
        let b = backon();
        rows.push(count("fail_twice", "backon", || {
            backon_fail_twice(&rt, &b, &dep);
        }));
        let mut s = tower_layer().layer(dep.service());
        rows.push(count("fail_twice", "tower", || {
            service_fail_twice(&rt, &mut s);
        }));
        let mut s = tower_resilience().layer(dep.service());
        rows.push(count("fail_twice", "tower-resilience", || {
            service_fail_twice(&rt, &mut s);
        }));

        println!(
            "\nHeap allocations per call ({ALLOC_CALLS} calls each; counted by allocation-counter):\n\n{}",
            alloc_table(&rows)
        );
    }
}

/// The happy paths, for `benches/callgrind.sh retry` (instructions per call).
#[allow(clippy::semicolon_if_nothing_returned)] // closures that return ()
fn callgrind_subjects() -> bool {
    let pal = palisade();
    let pal_nb = palisade_no_budget();
    let backon = backon();
    let mut layer = PalisadeLayer::new(palisade()).layer(service_fn(ok));
    let mut layer_nb = PalisadeLayer::new(palisade_no_budget()).layer(service_fn(ok));
    let leaked: &'static Retry = Box::leak(Box::new(palisade()));
    let mut layer_static = PalisadeLayer::from_static(leaked).layer(service_fn(ok));
    let mut tower = tower_layer().layer(service_fn(ok));
    let mut tower_budget = tower_budget_layer().layer(service_fn(ok));
    let mut tr = tower_resilience().layer(service_fn(ok));
    let mut bare = service_fn(ok);
    palisade_benches::callgrind(&mut [
        ("success/direct/bare_call", &mut bare_success),
        ("success/direct/palisade", &mut || palisade_success(&pal)),
        ("success/direct/palisade/no_budget", &mut || {
            palisade_success(&pal_nb)
        }),
        ("success/direct/backon", &mut || backon_success(&backon)),
        ("success/tower_layer/service_fn", &mut || {
            service_success(&mut bare)
        }),
        ("success/tower_layer/palisade", &mut || {
            service_success(&mut layer)
        }),
        ("success/tower_layer/palisade/no_budget", &mut || {
            service_success(&mut layer_nb)
        }),
        ("success/tower_layer/palisade/static", &mut || {
            service_success(&mut layer_static)
        }),
        ("success/tower_layer/tower", &mut || {
            service_success(&mut tower)
        }),
        ("success/tower_layer/tower/tps_budget", &mut || {
            service_success(&mut tower_budget)
        }),
        ("success/tower_layer/tower-resilience", &mut || {
            service_success(&mut tr)
        }),
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
    success_direct(&mut c);
    success_tower_layer(&mut c);
    fail_twice(&mut c);
    c.final_summary();
}
