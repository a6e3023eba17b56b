//! Palisade's bulkhead against tokio's `Semaphore` (1.x), tower's
//! `ConcurrencyLimit` (0.5) and tower-resilience's bulkhead (0.13), with a
//! bare `service_fn` as the baseline for the layer benchmark.
//!
//! ```text
//! cargo bench -p palisade-benches --bench bulkhead -- --warm-up-time 1 --measurement-time 2
//! ```
//!
//! Every group compares all crates that can do its operation, in the same run:
//!
//! | group | what one iteration is |
//! |---|---|
//! | `permit/1_thread` | take one permit and give it back, never waiting (`try_acquire` + drop) |
//! | `permit/2_threads` | the same, two threads on one bulkhead or semaphore (see [`permit_2_threads`]) |
//! | `reject` | one `try_acquire` refused by a full bulkhead or semaphore |
//! | `tower_layer` | one `ready().await` + `call().await` through a tower service, on a current-thread runtime |
//! | `adaptive` | one permit taken and recorded through an adaptive limiter (AIMD, Gradient2, Vegas), against the bare permit |
//!
//! Allocations are counted separately, with the `count-allocations` feature:
//!
//! ```text
//! cargo bench -p palisade-benches --bench bulkhead --features count-allocations -- allocations
//! ```
//!
//! prints a Markdown table of heap allocations per call before the groups run
//! (the filter `allocations` matches no benchmark, so only the table is printed).
//!
//! Every limit is 1,000 so that nothing is ever refused outside `reject`;
//! tower-resilience runs in its rejection mode (`reject_when_full`) and in its
//! backpressure mode, as Palisade's layer does.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;

use criterion::Criterion;
use palisade::bulkhead::adaptive::{AdaptiveLimiter, Aimd, Gradient2, Vegas};
use palisade::bulkhead::{Bulkhead, BulkheadLayer, Outcome};
use palisade_benches::concurrent_elapsed;
use palisade_benches::service_call;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tower::{Layer, limit::ConcurrencyLimitLayer, service_fn};
use tower_resilience::bulkhead::BulkheadLayer as TrLayer;

const LIMIT: u32 = 1000;

fn palisade() -> Bulkhead {
    Bulkhead::builder()
        .max_concurrent_calls(LIMIT)
        .build()
        .expect("valid palisade configuration")
}

fn semaphore() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(LIMIT as usize))
}

fn tower_resilience(backpressure: bool) -> TrLayer {
    let builder = TrLayer::builder().max_concurrent_calls(LIMIT as usize);
    let builder = if backpressure {
        builder.backpressure()
    } else {
        builder.reject_when_full()
    };
    builder
        .build()
        .expect("valid tower-resilience configuration")
}

#[allow(clippy::unused_async)] // a tower service_fn needs a future
async fn echo(x: u32) -> Result<u32, Infallible> {
    Ok(x)
}

/// A current-thread runtime without timers, as in the circuit breaker's bench.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
}

/// A current-thread runtime with timers: tower-resilience's rejection mode
/// runs `tokio::time::timeout` with a zero limit on every call, and panics
/// without them. Its rows run here, next to `service_fn/timer` as their baseline.
fn timer_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
}

// ---- one operation each ----------------------------------------------------------

#[inline]
fn palisade_permit(b: &Bulkhead) {
    drop(black_box(
        black_box(b).try_acquire().expect("below the limit"),
    ));
}

#[inline]
fn palisade_owned(b: &Bulkhead) {
    drop(black_box(
        black_box(b).try_acquire_owned().expect("below the limit"),
    ));
}

#[inline]
fn tokio_permit(s: &Semaphore) {
    drop(black_box(
        black_box(s).try_acquire().expect("below the limit"),
    ));
}

#[inline]
fn tokio_owned(s: &Arc<Semaphore>) {
    drop(black_box(
        Arc::clone(black_box(s))
            .try_acquire_owned()
            .expect("below the limit"),
    ));
}

fn aimd() -> AdaptiveLimiter {
    AdaptiveLimiter::builder(palisade())
        .aimd(Aimd::new())
        .max_limit(LIMIT)
        .build()
        .expect("valid limiter")
}

fn vegas() -> AdaptiveLimiter {
    AdaptiveLimiter::builder(palisade())
        .vegas(Vegas::new())
        .max_limit(LIMIT)
        .build()
        .expect("valid limiter")
}

fn gradient2() -> AdaptiveLimiter {
    AdaptiveLimiter::builder(palisade())
        .gradient2(Gradient2::new())
        .max_limit(LIMIT)
        .build()
        .expect("valid limiter")
}

/// One permit through the limiter, recorded as a success: two clock reads,
/// the algorithm under its lock, and `set_limit` when the limit moves.
#[inline]
fn adaptive_call(limiter: &AdaptiveLimiter) {
    black_box(limiter)
        .try_acquire()
        .expect("below the limit")
        .record(Outcome::Success);
}

fn full_palisade() -> (Bulkhead, palisade::bulkhead::OwnedPermit) {
    let b = palisade();
    let held = b.try_acquire_many_owned(LIMIT).expect("empty");
    (b, held)
}

fn full_semaphore() -> (Arc<Semaphore>, tokio::sync::OwnedSemaphorePermit) {
    let s = semaphore();
    let held = Arc::clone(&s).try_acquire_many_owned(LIMIT).expect("empty");
    (s, held)
}

// ---- groups ---------------------------------------------------------------------

fn permit_1_thread(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("permit/1_thread");
    let pal = palisade();
    group.bench_function("palisade", |b| b.iter(|| palisade_permit(&pal)));
    group.bench_function("palisade/owned", |b| b.iter(|| palisade_owned(&pal)));
    let sem = semaphore();
    group.bench_function("tokio", |b| b.iter(|| tokio_permit(&sem)));
    group.bench_function("tokio/owned", |b| b.iter(|| tokio_owned(&sem)));
    group.finish();
}

/// Two threads share one bulkhead (or semaphore) and each takes and gives
/// back `iters` permits at the same time. As in the circuit breaker's
/// `closed_call/2_threads`: both threads are released together by a barrier,
/// each times its own `iters` calls, and the longer time is what criterion
/// divides by `iters`. The result is the wall-clock time per permit **per
/// thread** under two-way contention.
fn permit_2_threads(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("permit/2_threads");
    let pal = palisade();
    group.bench_function("palisade", |b| {
        b.iter_custom(|iters| concurrent_elapsed(2, iters, &|| palisade_permit(&pal)));
    });
    let sem = semaphore();
    group.bench_function("tokio", |b| {
        b.iter_custom(|iters| concurrent_elapsed(2, iters, &|| tokio_permit(&sem)));
    });
    group.finish();
}

fn reject(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("reject");
    let (pal, _held) = full_palisade();
    group.bench_function("palisade", |b| {
        b.iter(|| assert!(black_box(black_box(&pal).try_acquire()).is_err()));
    });
    let (sem, _held) = full_semaphore();
    group.bench_function("tokio", |b| {
        b.iter(|| assert!(black_box(black_box(&sem).try_acquire()).is_err()));
    });
    group.finish();
}

fn adaptive(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("adaptive");
    let pal = palisade();
    group.bench_function("permit", |b| b.iter(|| palisade_permit(&pal)));
    let a = aimd();
    group.bench_function("aimd", |b| b.iter(|| adaptive_call(&a)));
    let g = gradient2();
    group.bench_function("gradient2", |b| b.iter(|| adaptive_call(&g)));
    let v = vegas();
    group.bench_function("vegas", |b| b.iter(|| adaptive_call(&v)));
    group.finish();
}

fn tower_layer(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("tower_layer");
    let rt = runtime();
    let mut bare = service_fn(echo);
    group.bench_function("service_fn", |b| b.iter(|| service_call(&rt, &mut bare)));
    let mut limit = ConcurrencyLimitLayer::new(LIMIT as usize).layer(service_fn(echo));
    group.bench_function("concurrency_limit", |b| {
        b.iter(|| service_call(&rt, &mut limit));
    });
    let mut pal = BulkheadLayer::new(palisade()).layer(service_fn(echo));
    group.bench_function("palisade", |b| b.iter(|| service_call(&rt, &mut pal)));
    let mut pal_bp = BulkheadLayer::backpressure(palisade()).layer(service_fn(echo));
    group.bench_function("palisade/backpressure", |b| {
        b.iter(|| service_call(&rt, &mut pal_bp));
    });
    let mut tr_bp = tower_resilience(true).layer(service_fn(echo));
    group.bench_function("tower-resilience/backpressure", |b| {
        b.iter(|| service_call(&rt, &mut tr_bp));
    });
    let timer_rt = timer_runtime();
    let mut bare = service_fn(echo);
    group.bench_function("service_fn/timer", |b| {
        b.iter(|| service_call(&timer_rt, &mut bare));
    });
    let mut pal = BulkheadLayer::new(palisade()).layer(service_fn(echo));
    group.bench_function("palisade/timer", |b| {
        b.iter(|| service_call(&timer_rt, &mut pal));
    });
    let mut tr = tower_resilience(false).layer(service_fn(echo));
    group.bench_function("tower-resilience/timer", |b| {
        b.iter(|| service_call(&timer_rt, &mut tr));
    });
    group.finish();
}

// ---- allocations ------------------------------------------------------------------

/// Heap allocations per call, counted with `allocation-counter` (feature
/// `count-allocations`), as in the circuit breaker's benchmark.
#[cfg(feature = "count-allocations")]
mod allocations {
    use super::{
        BulkheadLayer, ConcurrencyLimitLayer, LIMIT, Layer, adaptive_call, aimd, echo,
        full_palisade, full_semaphore, gradient2, palisade, palisade_owned, palisade_permit,
        runtime, semaphore, service_call, service_fn, timer_runtime, tokio_owned, tokio_permit,
        tower_resilience, vegas,
    };
    use palisade_benches::{AllocRow, alloc_table};

    /// Calls counted per row of the allocation table.
    const ALLOC_CALLS: u64 = 10_000;

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

    pub(crate) fn report() {
        let mut rows = Vec::new();
        let p = palisade();
        rows.push(count("permit", "palisade", || palisade_permit(&p)));
        rows.push(count("permit", "palisade/owned", || palisade_owned(&p)));
        let s = semaphore();
        rows.push(count("permit", "tokio", || tokio_permit(&s)));
        rows.push(count("permit", "tokio/owned", || tokio_owned(&s)));

        let (p, _held) = full_palisade();
        rows.push(count("reject", "palisade", || {
            assert!(p.try_acquire().is_err());
        }));
        let (s, _held) = full_semaphore();
        rows.push(count("reject", "tokio", || {
            assert!(s.try_acquire().is_err());
        }));

        let rt = runtime();
        let mut bare = service_fn(echo);
        rows.push(count("tower_layer", "service_fn", || {
            let _ = service_call(&rt, &mut bare);
        }));
        let mut limit = ConcurrencyLimitLayer::new(LIMIT as usize).layer(service_fn(echo));
        rows.push(count("tower_layer", "concurrency_limit", || {
            let _ = service_call(&rt, &mut limit);
        }));
        let mut pal = BulkheadLayer::new(palisade()).layer(service_fn(echo));
        rows.push(count("tower_layer", "palisade", || {
            service_call(&rt, &mut pal).expect("below the limit");
        }));
        let mut pal_bp = BulkheadLayer::backpressure(palisade()).layer(service_fn(echo));
        rows.push(count("tower_layer", "palisade/backpressure", || {
            service_call(&rt, &mut pal_bp).expect("below the limit");
        }));
        let timer_rt = timer_runtime();
        let mut tr = tower_resilience(false).layer(service_fn(echo));
        rows.push(count("tower_layer", "tower-resilience/timer", || {
            service_call(&timer_rt, &mut tr).expect("below the limit");
        }));
        let mut tr_bp = tower_resilience(true).layer(service_fn(echo));
        rows.push(count(
            "tower_layer",
            "tower-resilience/backpressure",
            || {
                service_call(&rt, &mut tr_bp).expect("below the limit");
            },
        ));

        let a = aimd();
        rows.push(count("adaptive", "aimd", || adaptive_call(&a)));
        let g = gradient2();
        rows.push(count("adaptive", "gradient2", || adaptive_call(&g)));
        let vg = vegas();
        rows.push(count("adaptive", "vegas", || adaptive_call(&vg)));

        // Not timed below, but worth knowing: a rejection through each rejecting layer.
        let (full, _held) = full_palisade();
        let mut pal = BulkheadLayer::new(full).layer(service_fn(echo));
        rows.push(count("tower_layer (full)", "palisade", || {
            assert!(service_call(&rt, &mut pal).is_err());
        }));

        println!(
            "\nHeap allocations per call ({ALLOC_CALLS} calls each; counted by allocation-counter):\n\n{}",
            alloc_table(&rows)
        );
    }
}

/// The hot paths, for `benches/callgrind.sh bulkhead` (instructions per
/// call, through `palisade_benches::callgrind`).
#[allow(clippy::semicolon_if_nothing_returned)] // closures that return ()
fn callgrind_subjects() -> bool {
    let rt = runtime();
    let timer_rt = timer_runtime();
    let pal = palisade();
    let sem = semaphore();
    let (a, g, v) = (aimd(), gradient2(), vegas());
    let mut bare = service_fn(echo);
    let mut limit = ConcurrencyLimitLayer::new(LIMIT as usize).layer(service_fn(echo));
    let mut layer = BulkheadLayer::new(palisade()).layer(service_fn(echo));
    let mut backpressure = BulkheadLayer::backpressure(palisade()).layer(service_fn(echo));
    let mut tr_backpressure = tower_resilience(true).layer(service_fn(echo));
    let mut bare_timer = service_fn(echo);
    let mut tr_timer = tower_resilience(false).layer(service_fn(echo));
    palisade_benches::callgrind(&mut [
        ("permit/palisade", &mut || palisade_permit(&pal)),
        ("permit/tokio", &mut || tokio_permit(&sem)),
        ("permit/palisade_owned", &mut || palisade_owned(&pal)),
        ("permit/tokio_owned", &mut || tokio_owned(&sem)),
        ("adaptive/aimd", &mut || adaptive_call(&a)),
        ("adaptive/gradient2", &mut || adaptive_call(&g)),
        ("adaptive/vegas", &mut || adaptive_call(&v)),
        ("tower/service_fn", &mut || {
            let _ = black_box(service_call(&rt, &mut bare));
        }),
        ("tower/concurrency_limit", &mut || {
            let _ = black_box(service_call(&rt, &mut limit));
        }),
        ("tower/palisade", &mut || {
            let _ = black_box(service_call(&rt, &mut layer));
        }),
        ("tower/palisade_backpressure", &mut || {
            let _ = black_box(service_call(&rt, &mut backpressure));
        }),
        ("tower/tower_resilience_backpressure", &mut || {
            let _ = black_box(service_call(&rt, &mut tr_backpressure));
        }),
        ("tower/service_fn_timer", &mut || {
            let _ = black_box(service_call(&timer_rt, &mut bare_timer));
        }),
        ("tower/tower_resilience_timer", &mut || {
            let _ = black_box(service_call(&timer_rt, &mut tr_timer));
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
    permit_1_thread(&mut c);
    permit_2_threads(&mut c);
    reject(&mut c);
    tower_layer(&mut c);
    adaptive(&mut c);
    c.final_summary();
}
