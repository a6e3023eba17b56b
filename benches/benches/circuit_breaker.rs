//! Palisade's circuit breaker against recloser 1.4, failsafe 1.3 and
//! tower-resilience 0.13, with tower's `ConcurrencyLimit` and a bare
//! `service_fn` as baselines for the layer benchmark.
//!
//! ```text
//! cargo bench -p palisade-benches --bench circuit_breaker -- --warm-up-time 1 --measurement-time 2
//! ```
//!
//! Every group compares all crates that can do its operation, in the same run:
//!
//! | group | what one iteration is |
//! |---|---|
//! | `closed_call/1_thread` | one guarded successful call on a closed breaker: the closure `\|\| Ok(42)` run, its `Result` classified and recorded, on every side |
//! | `closed_call/2_threads` | the same, two threads sharing one breaker (see [`closed_call_2_threads`]) |
//! | `open_reject` | one call rejected by an open breaker |
//! | `time_window/<crate>/<fill>` | one guarded successful call on a 60 s time window holding `fill` calls; `palisade-layer` and `tower-resilience` through the same tower harness, `palisade` and `failsafe` direct |
//! | `tower_layer` | one `ready().await` + `call().await` through a tower service, on a current-thread runtime |
//!
//! `time_window` sets 10 samples, 0.5 s warm-up and 1 s measurement unless
//! the command line gives them (see `palisade_benches::own_settings`); every
//! other group takes criterion's defaults or the command line's.
//!
//! Instructions per call, under valgrind (see `callgrind_subjects` for the list):
//!
//! ```text
//! benches/callgrind.sh circuit_breaker
//! ```
//!
//! Allocations are counted separately, with the `count-allocations` feature:
//!
//! ```text
//! cargo bench -p palisade-benches --bench circuit_breaker --features count-allocations -- allocations
//! ```
//!
//! prints a Markdown table of heap allocations per call for every operation and
//! crate below (see `allocations::report`) before the groups run; the filter
//! `allocations` matches no benchmark, so only the table is printed. The
//! feature is off by default because `allocation-counter`'s global allocator
//! charges every allocation a little bookkeeping, which would slow down the
//! crates that allocate per call in the timed runs.
//!
//! Configurations: a count window of 100 calls (recloser: `closed_len(100)`,
//! tower-resilience: `sliding_window_size(100)`), failure rate 0.5, 10 half-open
//! probes, 60 s open. failsafe has no count window: `consecutive_failures(5)`,
//! and `success_rate_over_time_window(0.5, 5, 60 s)` labelled `time_window`.

use std::convert::Infallible;
use std::hint::black_box;
use std::rc::Rc;
use std::time::Duration;

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, measurement::WallTime};
use failsafe::CircuitBreaker as _;
use palisade::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, SlidingWindow, State};
use palisade_benches::service_call;
use palisade_benches::{FilledWindow, concurrent_elapsed, own_settings};
use tokio::runtime::Runtime;
use tower::{Layer, Service, limit::ConcurrencyLimitLayer, service_fn};
use tower_resilience::circuitbreaker::{
    CircuitBreakerError, CircuitBreakerLayer as TrLayer, SlidingWindowType,
};

/// Open duration, and the period of every time window.
const MINUTE: Duration = Duration::from_secs(60);

/// How many calls the time windows hold when a call is timed.
const FILLS: [u64; 3] = [1_000, 10_000, 100_000];

/// The measured calls may grow a pre-filled window by at most `1 / GROWTH_DIVISOR`
/// of its fill before it is rebuilt (see [`FilledWindow`]).
const GROWTH_DIVISOR: u64 = 10;

// ---- the breakers under test -------------------------------------------------

fn palisade_count() -> CircuitBreaker {
    CircuitBreaker::builder()
        .sliding_window(SlidingWindow::count(100))
        .minimum_calls(100)
        .failure_rate_threshold(0.5)
        .half_open_probes(10)
        .open_duration(MINUTE)
        .build()
        .expect("valid palisade configuration")
}

/// A 60 s time window (10 buckets) holding `fill` successes; it never trips.
fn palisade_time(fill: u64) -> CircuitBreaker {
    let breaker = CircuitBreaker::builder()
        .sliding_window(SlidingWindow::time(MINUTE))
        .minimum_calls(u32::MAX)
        .failure_rate_threshold(0.5)
        .half_open_probes(10)
        .open_duration(MINUTE)
        .build()
        .expect("valid palisade configuration");
    for _ in 0..fill {
        palisade_call(&breaker);
    }
    breaker
}

fn recloser() -> recloser::Recloser {
    recloser::Recloser::custom()
        .error_rate(0.5)
        .closed_len(100)
        .half_open_len(10)
        .open_wait(MINUTE)
        .build()
}

fn failsafe_consecutive() -> impl failsafe::CircuitBreaker + Send + Sync {
    failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            5,
            failsafe::backoff::constant(MINUTE),
        ))
        .build()
}

/// failsafe's success rate over a 60 s window, holding `fill` successes.
fn failsafe_time(fill: u64) -> impl failsafe::CircuitBreaker + Send + Sync {
    let breaker = failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::success_rate_over_time_window(
            0.5,
            5,
            MINUTE,
            failsafe::backoff::constant(MINUTE),
        ))
        .build();
    for _ in 0..fill {
        failsafe_call(&breaker);
    }
    breaker
}

#[allow(clippy::unused_async)] // a tower service_fn needs a future
async fn echo(x: u32) -> Result<u32, Infallible> {
    Ok(x)
}

fn tower_resilience_count() -> TrLayer {
    TrLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_type(SlidingWindowType::CountBased)
        .sliding_window_size(100)
        .wait_duration_in_open(MINUTE)
        .build()
        .expect("valid tower-resilience configuration")
}

/// A 60 s time window holding `fill` successes; it never trips.
fn tower_resilience_time(
    rt: &Runtime,
    fill: u64,
) -> impl Service<u32, Response = u32, Error = CircuitBreakerError<Infallible>> + use<> {
    let mut svc = TrLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_type(SlidingWindowType::TimeBased)
        .sliding_window_duration(MINUTE)
        .minimum_number_of_calls(u32::MAX as usize)
        .wait_duration_in_open(MINUTE)
        .build()
        .expect("valid tower-resilience configuration")
        .layer(service_fn(echo));
    for _ in 0..fill {
        service_call(rt, &mut svc).expect("closed breaker admits");
    }
    svc
}

/// palisade's layer on a 60 s time window holding `fill` successes, each
/// made through the layer as tower-resilience's are.
fn palisade_time_layer(
    rt: &Runtime,
    fill: u64,
) -> impl Service<u32, Response = u32, Error = tower::BoxError> + use<> {
    let mut svc = CircuitBreakerLayer::new(palisade_time(0)).layer(service_fn(echo));
    for _ in 0..fill {
        service_call(rt, &mut svc).expect("closed breaker admits");
    }
    svc
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

// ---- one operation each ----------------------------------------------------------

/// One guarded successful call, made the way the peers' `call(|| Ok(42))`
/// makes it: take a permit, run the closure, classify its `Result` (`Err` is a
/// failure) and record it. Panics if the breaker rejects the call.
#[inline]
fn palisade_call(breaker: &CircuitBreaker) {
    black_box(palisade_guard(breaker, || Ok::<u32, ()>(black_box(42))))
        .expect("closed breaker admits");
}

/// The synchronous counterpart of recloser's and failsafe's `call`: the
/// permit, the call, and the default classification of its result.
#[inline]
fn palisade_guard<T, E>(
    breaker: &CircuitBreaker,
    call: impl FnOnce() -> Result<T, E>,
) -> Result<T, Option<E>> {
    let permit = black_box(breaker).try_acquire().map_err(|_| None)?;
    let result = call();
    permit.record_result(&result);
    result.map_err(Some)
}

/// The permit alone, without a closure or a classification: the figure the
/// closed call had before it made the peers' work (callgrind only).
#[inline]
fn palisade_permit_only(breaker: &CircuitBreaker) {
    black_box(breaker)
        .try_acquire()
        .expect("closed breaker admits")
        .success();
}

#[inline]
fn recloser_call(breaker: &recloser::Recloser) {
    black_box(breaker.call(|| Ok::<u32, ()>(black_box(42)))).expect("closed breaker admits");
}

#[inline]
fn failsafe_call(breaker: &impl failsafe::CircuitBreaker) {
    black_box(breaker.call(|| Ok::<u32, ()>(black_box(42)))).expect("closed breaker admits");
}

/// One call that an open breaker rejects; panics if it is admitted.
#[inline]
fn palisade_reject(breaker: &CircuitBreaker) {
    assert!(black_box(black_box(breaker).try_acquire()).is_err());
}

#[inline]
fn recloser_reject(breaker: &recloser::Recloser) {
    let result = black_box(breaker.call(|| Ok::<u32, ()>(black_box(42))));
    assert!(matches!(result, Err(recloser::Error::Rejected)));
}

#[inline]
fn failsafe_reject(breaker: &impl failsafe::CircuitBreaker) {
    let result = black_box(breaker.call(|| Ok::<u32, ()>(black_box(42))));
    assert!(matches!(result, Err(failsafe::Error::Rejected)));
}

fn palisade_open() -> CircuitBreaker {
    let breaker = palisade_count();
    breaker.transition_to(State::Open);
    palisade_reject(&breaker);
    breaker
}

/// recloser has no manual open: its ring reports a rate only when full, so the 101st failure trips it.
fn recloser_open() -> recloser::Recloser {
    let breaker = recloser();
    for _ in 0..101 {
        let _ = breaker.call(|| Err::<(), ()>(()));
    }
    recloser_reject(&breaker);
    breaker
}

fn failsafe_open() -> impl failsafe::CircuitBreaker + Send + Sync {
    let breaker = failsafe_consecutive();
    for _ in 0..5 {
        let _ = breaker.call(|| Err::<(), ()>(()));
    }
    failsafe_reject(&breaker);
    breaker
}

// ---- groups ---------------------------------------------------------------------

fn closed_call_1_thread(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("closed_call/1_thread");
    let pal = palisade_count();
    group.bench_function("palisade", |b| b.iter(|| palisade_call(&pal)));
    let rec = recloser();
    group.bench_function("recloser", |b| b.iter(|| recloser_call(&rec)));
    let fs = failsafe_consecutive();
    group.bench_function("failsafe/consecutive", |b| b.iter(|| failsafe_call(&fs)));
    let pal_time = palisade_time(0);
    group.bench_function("palisade/time_window", |b| {
        b.iter(|| palisade_call(&pal_time));
    });
    let fs_time = failsafe_time(0);
    group.bench_function("failsafe/time_window", |b| {
        b.iter(|| failsafe_call(&fs_time));
    });
    group.finish();
}

/// Two threads share one breaker and each makes `iters` guarded successful
/// calls at the same time. What is measured, per sample: both threads are
/// spawned and released together by a barrier; each times its own `iters`
/// calls from the barrier to its last call, and the longer of the two times is
/// handed to criterion, which divides it by `iters`. The reported time is
/// therefore the wall-clock time per call **per thread** under two-way
/// contention (the breaker completes two calls in that time); thread spawn and
/// join are not included. Compare it with `closed_call/1_thread`: equal means
/// no contention cost, double means the two threads were fully serialised.
fn closed_call_2_threads(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("closed_call/2_threads");
    let pal = palisade_count();
    group.bench_function("palisade", |b| {
        b.iter_custom(|iters| concurrent_elapsed(2, iters, &|| palisade_call(&pal)));
    });
    let rec = recloser();
    group.bench_function("recloser", |b| {
        b.iter_custom(|iters| concurrent_elapsed(2, iters, &|| recloser_call(&rec)));
    });
    let fs = failsafe_consecutive();
    group.bench_function("failsafe/consecutive", |b| {
        b.iter_custom(|iters| concurrent_elapsed(2, iters, &|| failsafe_call(&fs)));
    });
    let pal_time = palisade_time(0);
    group.bench_function("palisade/time_window", |b| {
        b.iter_custom(|iters| concurrent_elapsed(2, iters, &|| palisade_call(&pal_time)));
    });
    let fs_time = failsafe_time(0);
    group.bench_function("failsafe/time_window", |b| {
        b.iter_custom(|iters| concurrent_elapsed(2, iters, &|| failsafe_call(&fs_time)));
    });
    group.finish();
}

fn open_reject(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("open_reject");
    let pal = palisade_open();
    group.bench_function("palisade", |b| b.iter(|| palisade_reject(&pal)));
    let rec = recloser_open();
    group.bench_function("recloser", |b| b.iter(|| recloser_reject(&rec)));
    let fs = failsafe_open();
    group.bench_function("failsafe/consecutive", |b| b.iter(|| failsafe_reject(&fs)));
    group.finish();
}

/// One guarded successful call on a 60 s time window holding `fill` calls.
///
/// Every timed call adds a call to the window, and tower-resilience's cost
/// grows with what its window holds, so each subject is a [`FilledWindow`]:
/// after at most `fill / 10` timed calls it is dropped and a fresh one is
/// built and filled, untimed. The window therefore holds between `fill` and
/// 1.1 × `fill` calls whenever a call is timed, for every crate. The rebuilds
/// make this group take several times its measurement time in wall-clock time,
/// so by default it takes 10 samples, 0.5 s warm-up and 1 s measurement; the
/// command line's `--warm-up-time`, `--measurement-time` and `--sample-size`
/// win when given.
///
/// tower-resilience is only a tower service, so `palisade-layer` times
/// palisade's `CircuitBreakerLayer` on the same window through the same
/// `service_call` (`block_on` of `ready` + `call`): that pair is like for like.
/// `palisade` and `failsafe` are direct calls, like for like with each other.
fn time_window(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("time_window");
    own_settings(
        &mut group,
        10,
        Duration::from_millis(500),
        Duration::from_secs(1),
    );
    for fill in FILLS {
        let mut w = FilledWindow::new(fill, GROWTH_DIVISOR, palisade_time);
        bench_filled(&mut group, "palisade", &mut w, |b| palisade_call(b));
    }
    for fill in FILLS {
        let rt = Rc::new(runtime());
        let rt2 = Rc::clone(&rt);
        let mut w = FilledWindow::new(fill, GROWTH_DIVISOR, move |n| palisade_time_layer(&rt2, n));
        bench_filled(&mut group, "palisade-layer", &mut w, |svc| {
            service_call(&rt, svc).expect("closed breaker admits");
        });
    }
    for fill in FILLS {
        let rt = Rc::new(runtime());
        let rt2 = Rc::clone(&rt);
        let mut w = FilledWindow::new(fill, GROWTH_DIVISOR, move |n| {
            tower_resilience_time(&rt2, n)
        });
        bench_filled(&mut group, "tower-resilience", &mut w, |svc| {
            service_call(&rt, svc).expect("closed breaker admits");
        });
    }
    // failsafe keeps an exponentially weighted success rate and a bucketed call count:
    // its cost does not depend on the fill, so one size is enough.
    let mut w = FilledWindow::new(10_000, GROWTH_DIVISOR, failsafe_time);
    bench_filled(&mut group, "failsafe", &mut w, |b| failsafe_call(b));
    group.finish();
}

fn bench_filled<T>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    w: &mut FilledWindow<T>,
    mut op: impl FnMut(&mut T),
) {
    group.bench_function(BenchmarkId::new(name, w.fill()), |b| {
        // Here rather than before `bench_function`: criterion calls this
        // closure only when the benchmark is selected, and times (even during
        // warm-up) only what runs inside `iter_custom`.
        w.prepare();
        b.iter_custom(|iters| w.time(iters, &mut op));
    });
}

fn tower_layer(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("tower_layer");
    let rt = runtime();
    let mut bare = service_fn(echo);
    group.bench_function("service_fn", |b| b.iter(|| service_call(&rt, &mut bare)));
    let mut limit = ConcurrencyLimitLayer::new(1000).layer(service_fn(echo));
    group.bench_function("concurrency_limit", |b| {
        b.iter(|| service_call(&rt, &mut limit));
    });
    let mut pal = CircuitBreakerLayer::new(palisade_count()).layer(service_fn(echo));
    group.bench_function("palisade", |b| b.iter(|| service_call(&rt, &mut pal)));
    let mut tr = tower_resilience_count().layer(service_fn(echo));
    group.bench_function("tower-resilience", |b| {
        b.iter(|| service_call(&rt, &mut tr));
    });
    group.finish();
}

// ---- allocations ------------------------------------------------------------------

/// Heap allocations per call, counted with `allocation-counter` (feature
/// `count-allocations`). Its counting global allocator is linked only when this
/// module is compiled: with the feature off, the timed code runs on the plain
/// system allocator, so crates that allocate per call are not charged for the
/// counting.
#[cfg(feature = "count-allocations")]
mod allocations {
    use super::{
        CircuitBreakerLayer, ConcurrencyLimitLayer, Layer, State, echo, failsafe_call,
        failsafe_consecutive, failsafe_open, failsafe_reject, failsafe_time, palisade_call,
        palisade_count, palisade_open, palisade_reject, palisade_time, palisade_time_layer,
        recloser, recloser_call, recloser_open, recloser_reject, runtime, service_call, service_fn,
        tower_resilience_count, tower_resilience_time,
    };
    use palisade_benches::{AllocRow, alloc_table};

    /// Calls counted per row of the allocation table.
    const ALLOC_CALLS: u64 = 10_000;

    /// Calls counted per row for the time windows (see `report`).
    const ALLOC_WINDOW_CALLS: u64 = 1_000;

    /// Runs `op` 100 times to get past lazy set-up (thread-local registration,
    /// first buffer growth), then counts what `ALLOC_CALLS` more calls allocate
    /// on this thread. Single-threaded and free of timing, so the counts are
    /// the same on every run.
    fn count(operation: &str, subject: &str, op: impl FnMut()) -> AllocRow {
        count_n(operation, subject, ALLOC_CALLS, op)
    }

    fn count_n(operation: &str, subject: &str, calls: u64, mut op: impl FnMut()) -> AllocRow {
        for _ in 0..100 {
            op();
        }
        let info = allocation_counter::measure(|| {
            for _ in 0..calls {
                op();
            }
        });
        AllocRow {
            operation: operation.to_owned(),
            subject: subject.to_owned(),
            allocs_per_call: info.count_total as f64 / calls as f64,
            bytes_per_call: info.bytes_total as f64 / calls as f64,
        }
    }

    /// Heap allocations per call for every operation and crate benchmarked
    /// below, printed once as a Markdown table for `docs/benchmarks.md`.
    ///
    /// Time windows are pre-filled with 10,000 calls and counted over
    /// `ALLOC_WINDOW_CALLS` calls: 10,000 + 100 warm-up + 1,000 stays below the
    /// capacity of 16,384 that tower-resilience's `VecDeque` has after the fill,
    /// so its row shows the cost per call without the (amortised) buffer growth.
    pub(crate) fn report() {
        let mut rows = Vec::new();

        let p = palisade_count();
        rows.push(count("closed_call", "palisade", || palisade_call(&p)));
        let r = recloser();
        rows.push(count("closed_call", "recloser", || recloser_call(&r)));
        let f = failsafe_consecutive();
        rows.push(count("closed_call", "failsafe/consecutive", || {
            failsafe_call(&f);
        }));
        let p = palisade_time(0);
        rows.push(count("closed_call", "palisade/time_window", || {
            palisade_call(&p);
        }));
        let t = failsafe_time(0);
        rows.push(count("closed_call", "failsafe/time_window", || {
            failsafe_call(&t);
        }));

        let p = palisade_open();
        rows.push(count("open_reject", "palisade", || palisade_reject(&p)));
        let r = recloser_open();
        rows.push(count("open_reject", "recloser", || recloser_reject(&r)));
        let f = failsafe_open();
        rows.push(count("open_reject", "failsafe/consecutive", || {
            failsafe_reject(&f);
        }));

        let rt = runtime();
        let p = palisade_time(10_000);
        rows.push(count_n(
            "time_window/10000",
            "palisade",
            ALLOC_WINDOW_CALLS,
            || palisade_call(&p),
        ));
        let mut pl = palisade_time_layer(&rt, 10_000);
        rows.push(count_n(
            "time_window/10000",
            "palisade-layer",
            ALLOC_WINDOW_CALLS,
            || {
                service_call(&rt, &mut pl).expect("closed breaker admits");
            },
        ));
        let mut tr = tower_resilience_time(&rt, 10_000);
        rows.push(count_n(
            "time_window/10000",
            "tower-resilience",
            ALLOC_WINDOW_CALLS,
            || {
                service_call(&rt, &mut tr).expect("closed breaker admits");
            },
        ));
        let t = failsafe_time(10_000);
        rows.push(count_n(
            "time_window/10000",
            "failsafe",
            ALLOC_WINDOW_CALLS,
            || failsafe_call(&t),
        ));

        let mut bare = service_fn(echo);
        rows.push(count("tower_layer", "service_fn", || {
            let _ = service_call(&rt, &mut bare);
        }));
        let mut limit = ConcurrencyLimitLayer::new(1000).layer(service_fn(echo));
        rows.push(count("tower_layer", "concurrency_limit", || {
            let _ = service_call(&rt, &mut limit);
        }));
        let mut pal = CircuitBreakerLayer::new(palisade_count()).layer(service_fn(echo));
        rows.push(count("tower_layer", "palisade", || {
            service_call(&rt, &mut pal).expect("closed breaker admits");
        }));
        let mut tr = tower_resilience_count().layer(service_fn(echo));
        rows.push(count("tower_layer", "tower-resilience", || {
            service_call(&rt, &mut tr).expect("closed breaker admits");
        }));

        // Not timed below, but worth knowing: a rejection through each layer.
        let open = palisade_count();
        open.transition_to(State::Open);
        let mut pal = CircuitBreakerLayer::new(open).layer(service_fn(echo));
        rows.push(count("tower_layer (open)", "palisade", || {
            assert!(service_call(&rt, &mut pal).is_err());
        }));
        let mut tr = tower_resilience_count().layer(service_fn(echo));
        rt.block_on(tr.force_open());
        rows.push(count("tower_layer (open)", "tower-resilience", || {
            assert!(service_call(&rt, &mut tr).is_err());
        }));

        println!(
            "\nHeap allocations per call ({ALLOC_CALLS} calls each, {ALLOC_WINDOW_CALLS} for time_window; counted by allocation-counter):\n\n{}",
            alloc_table(&rows)
        );
    }
}

/// The hot paths, for `benches/callgrind.sh circuit_breaker` (instructions per call).
///
/// Named as the criterion rows, plus `closed_call/1_thread/palisade/permit_only`
/// (the permit without a closure or classification). Two-thread rows are not
/// here: valgrind runs one thread at a time, so it cannot show contention.
/// tower-resilience's time window is not here either: every call grows it, and
/// its cost grows with it, so a count over N and 2N calls measures a window
/// that the timed group never holds.
#[allow(clippy::semicolon_if_nothing_returned)] // closures that return ()
fn callgrind_subjects() -> bool {
    let pal = palisade_count();
    let pal_time = palisade_time(0);
    let rec = recloser();
    let fs = failsafe_consecutive();
    let fs_time = failsafe_time(0);
    let pal_open = palisade_open();
    let rec_open = recloser_open();
    let fs_open = failsafe_open();
    let rt = runtime();
    let pal_1k = palisade_time(1_000);
    let pal_filled = palisade_time(10_000);
    let pal_100k = palisade_time(100_000);
    let fs_filled = failsafe_time(10_000);
    let mut pal_layer_filled = palisade_time_layer(&rt, 10_000);
    let mut bare = service_fn(echo);
    let mut limit = ConcurrencyLimitLayer::new(1000).layer(service_fn(echo));
    let mut layer = CircuitBreakerLayer::new(palisade_count()).layer(service_fn(echo));
    let mut tr = tower_resilience_count().layer(service_fn(echo));
    palisade_benches::callgrind(&mut [
        ("closed_call/1_thread/palisade", &mut || palisade_call(&pal)),
        ("closed_call/1_thread/palisade/permit_only", &mut || {
            palisade_permit_only(&pal)
        }),
        ("closed_call/1_thread/recloser", &mut || recloser_call(&rec)),
        ("closed_call/1_thread/failsafe/consecutive", &mut || {
            failsafe_call(&fs)
        }),
        ("closed_call/1_thread/palisade/time_window", &mut || {
            palisade_call(&pal_time)
        }),
        ("closed_call/1_thread/failsafe/time_window", &mut || {
            failsafe_call(&fs_time)
        }),
        ("open_reject/palisade", &mut || palisade_reject(&pal_open)),
        ("open_reject/recloser", &mut || recloser_reject(&rec_open)),
        ("open_reject/failsafe/consecutive", &mut || {
            failsafe_reject(&fs_open)
        }),
        ("time_window/palisade/1000", &mut || palisade_call(&pal_1k)),
        ("time_window/palisade/10000", &mut || {
            palisade_call(&pal_filled)
        }),
        ("time_window/palisade/100000", &mut || {
            palisade_call(&pal_100k)
        }),
        ("time_window/palisade-layer/10000", &mut || {
            service_call(&rt, &mut pal_layer_filled).expect("closed breaker admits");
        }),
        ("time_window/failsafe/10000", &mut || {
            failsafe_call(&fs_filled)
        }),
        ("tower_layer/service_fn", &mut || {
            let _ = service_call(&rt, &mut bare);
        }),
        ("tower_layer/concurrency_limit", &mut || {
            let _ = service_call(&rt, &mut limit);
        }),
        ("tower_layer/palisade", &mut || {
            let _ = service_call(&rt, &mut layer);
        }),
        ("tower_layer/tower-resilience", &mut || {
            let _ = service_call(&rt, &mut tr);
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
    closed_call_1_thread(&mut c);
    closed_call_2_threads(&mut c);
    open_reject(&mut c);
    time_window(&mut c);
    tower_layer(&mut c);
    c.final_summary();
}
