//! Palisade's rate limiter against governor 0.10 (direct and keyed), tower's
//! `RateLimit` and tower-resilience 0.13's rate limiter, in the same run.
//!
//! ```text
//! cargo bench -p palisade-benches --bench rate_limit -- --warm-up-time 1 --measurement-time 2
//! ```
//!
//! | group | what one iteration is |
//! |---|---|
//! | `direct/allowed/1_thread` | one admitted check on a limit that never runs out |
//! | `direct/allowed/2_threads` | the same, two threads on one limiter (time per call per thread, see `palisade_benches::concurrent_elapsed`) |
//! | `direct/denied` | one refused check on a spent limit |
//! | `keyed/hot_key` | one admitted check of the same key |
//! | `keyed/1M_keys` | one admitted check of a key picked at random among 1 million held keys |
//! | `tower_layer` | one `ready().await` + `call().await` through a service on a current-thread runtime |
//! | `redis/sequential` | one `RedisRateLimiter::check` awaited before the next, one connection (`PALISADE_REDIS_URL` or 127.0.0.1:6379; skipped when unreachable) |
//! | `redis/pipelined` | the same, 64 checks in flight at once on the one (multiplexed) connection: time per check |
//!
//! Both crates read the CPU's time-stamp counter through quanta: governor's
//! default clock, and Palisade's with its `quanta` feature (on here). The
//! `direct/allowed/1_thread` group adds Palisade on the system clock
//! (`Instant::now`, its default without the feature) and on a manual clock
//! (one atomic load), to separate the GCRA from the clock.
//!
//! Instructions per call, under valgrind (subjects in `callgrind_subjects`):
//!
//! ```text
//! benches/callgrind.sh rate_limit
//! ```
//!
//! Allocations and bytes per key, with the `count-allocations` feature:
//!
//! ```text
//! cargo bench -p palisade-benches --bench rate_limit --features count-allocations -- allocations
//! ```

use std::convert::Infallible;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::Criterion;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter};
use palisade::rate_limit::{
    KeyedRateLimiter, ManualClock, Quota, RateLimitLayer, RateLimiter, SystemClock,
};
use palisade_benches::concurrent_elapsed;
use palisade_benches::service_call;
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A rate no benchmark reaches: one per nanosecond, a burst of a billion.
const FAST: u32 = 1_000_000_000;
/// Keys held in `keyed/1M_keys`.
const MANY_KEYS: u64 = 1_000_000;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

// ---- the limiters under test ----------------------------------------------------

fn palisade(quota: Quota) -> RateLimiter {
    RateLimiter::builder()
        .quota(quota)
        .build()
        .expect("valid palisade quota")
}

fn palisade_system(quota: Quota) -> RateLimiter {
    RateLimiter::builder()
        .quota(quota)
        .clock(SystemClock::shared())
        .build()
        .expect("valid palisade quota")
}

fn palisade_manual(quota: Quota) -> RateLimiter {
    RateLimiter::builder()
        .quota(quota)
        .clock(ManualClock::new().shared())
        .build()
        .expect("valid palisade quota")
}

fn governor_direct(per_second: u32) -> DefaultDirectRateLimiter {
    governor::RateLimiter::direct(governor::Quota::per_second(nz(per_second)))
}

fn palisade_keyed(max_keys: usize) -> KeyedRateLimiter<u64> {
    KeyedRateLimiter::builder()
        .quota(Quota::per_second(FAST))
        .max_keys(max_keys)
        .build()
        .expect("valid palisade quota")
}

fn governor_keyed() -> DefaultKeyedRateLimiter<u64> {
    governor::RateLimiter::keyed(governor::Quota::per_second(nz(FAST)))
}

fn palisade_spent() -> RateLimiter {
    let l = palisade(Quota::per_hour(1));
    l.check().expect("the first is admitted");
    l
}

fn governor_spent() -> DefaultDirectRateLimiter {
    let l = governor::RateLimiter::direct(governor::Quota::per_hour(nz(1)));
    l.check().expect("the first is admitted");
    l
}

/// Keys in a fixed pseudo-random order (xorshift), the same for every crate.
struct Keys(u64);

impl Keys {
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % MANY_KEYS
    }
}

/// Headroom for uneven shards: every one of the million keys must fit.
fn palisade_many() -> KeyedRateLimiter<u64> {
    let l = palisade_keyed(2 * MANY_KEYS as usize);
    for k in 0..MANY_KEYS {
        l.check(&k).expect("room for every key");
    }
    l
}

fn governor_many() -> DefaultKeyedRateLimiter<u64> {
    let l = governor_keyed();
    for k in 0..MANY_KEYS {
        l.check_key(&k).expect("admitted");
    }
    l
}

#[allow(clippy::unused_async)] // a tower service_fn needs a future
async fn echo(x: u32) -> Result<u32, Infallible> {
    Ok(x)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
}

fn tower_rate_limit() -> impl Service<u32, Response = u32, Error = tower::BoxError> {
    tower::limit::RateLimitLayer::new(u64::MAX / 4, Duration::from_secs(1))
        .layer(service_fn(echo))
        .map_err(Into::into)
}

fn tower_resilience()
-> impl Service<u32, Response = u32, Error = impl std::fmt::Debug + use<>> + use<> {
    tower_resilience::ratelimiter::RateLimiterLayer::builder()
        .limit_for_period(FAST as usize)
        .refresh_period(Duration::from_secs(1))
        .timeout_duration(Duration::ZERO)
        .build()
        .expect("valid tower-resilience configuration")
        .layer(service_fn(echo))
}

// ---- one operation each -----------------------------------------------------------

#[inline]
fn palisade_check(l: &RateLimiter) {
    black_box(black_box(l).check()).expect("admitted");
}

#[inline]
fn governor_check(l: &DefaultDirectRateLimiter) {
    black_box(black_box(l).check()).expect("admitted");
}

#[inline]
fn palisade_denied(l: &RateLimiter) {
    assert!(black_box(black_box(l).check()).is_err());
}

#[inline]
fn governor_denied(l: &DefaultDirectRateLimiter) {
    assert!(black_box(black_box(l).check()).is_err());
}

#[inline]
fn palisade_key(l: &KeyedRateLimiter<u64>, key: u64) {
    black_box(black_box(l).check(&key)).expect("admitted");
}

#[inline]
fn governor_key(l: &DefaultKeyedRateLimiter<u64>, key: u64) {
    black_box(black_box(l).check_key(&key)).expect("admitted");
}

// ---- groups -------------------------------------------------------------------------

fn direct(c: &mut Criterion) {
    let mut g = c.benchmark_group("direct/allowed/1_thread");
    let p = palisade(Quota::per_second(FAST));
    g.bench_function("palisade", |b| b.iter(|| palisade_check(&p)));
    let ps = palisade_system(Quota::per_second(FAST));
    g.bench_function("palisade-system-clock", |b| b.iter(|| palisade_check(&ps)));
    // Time does not move on a manual clock: a fresh limiter (a burst of a
    // billion) for each of criterion's runs keeps it admitting.
    g.bench_function("palisade-manual-clock", |b| {
        let l = palisade_manual(Quota::per_second(FAST));
        b.iter(|| palisade_check(&l));
    });
    let gov = governor_direct(FAST);
    g.bench_function("governor", |b| b.iter(|| governor_check(&gov)));
    g.finish();

    let mut g = c.benchmark_group("direct/allowed/2_threads");
    let p = palisade(Quota::per_second(FAST));
    g.bench_function("palisade", |b| {
        b.iter_custom(|iters| concurrent_elapsed(2, iters, &|| palisade_check(&p)));
    });
    let gov = governor_direct(FAST);
    g.bench_function("governor", |b| {
        b.iter_custom(|iters| concurrent_elapsed(2, iters, &|| governor_check(&gov)));
    });
    g.finish();

    let mut g = c.benchmark_group("direct/denied");
    let p = palisade_spent();
    g.bench_function("palisade", |b| b.iter(|| palisade_denied(&p)));
    let gov = governor_spent();
    g.bench_function("governor", |b| b.iter(|| governor_denied(&gov)));
    g.finish();
}

fn keyed(c: &mut Criterion) {
    let mut g = c.benchmark_group("keyed/hot_key");
    let p = palisade_keyed(100_000);
    g.bench_function("palisade", |b| b.iter(|| palisade_key(&p, 42)));
    let gov = governor_keyed();
    g.bench_function("governor", |b| b.iter(|| governor_key(&gov, 42)));
    g.finish();

    let mut g = c.benchmark_group("keyed/1M_keys");
    let p = palisade_many();
    let mut keys = Keys(0x2545_f491_4f6c_dd1d);
    g.bench_function("palisade", |b| b.iter(|| palisade_key(&p, keys.next())));
    drop(p);
    let gov = governor_many();
    let mut keys = Keys(0x2545_f491_4f6c_dd1d);
    g.bench_function("governor", |b| b.iter(|| governor_key(&gov, keys.next())));
    g.finish();
}

fn tower_layer(c: &mut Criterion) {
    let mut g = c.benchmark_group("tower_layer");
    let rt = runtime();
    let mut bare = service_fn(echo);
    g.bench_function("service_fn", |b| b.iter(|| service_call(&rt, &mut bare)));
    let mut pal = RateLimitLayer::new(palisade(Quota::per_second(FAST))).layer(service_fn(echo));
    g.bench_function("palisade", |b| b.iter(|| service_call(&rt, &mut pal)));
    let mut tower_rl = rt.block_on(async { tower_rate_limit() });
    g.bench_function("tower-rate-limit", |b| {
        b.iter(|| service_call(&rt, &mut tower_rl));
    });
    let mut tr = rt.block_on(async { tower_resilience() });
    g.bench_function("tower-resilience", |b| {
        b.iter(|| service_call(&rt, &mut tr));
    });
    g.finish();
}

// ---- allocations ------------------------------------------------------------------

/// Heap allocations per call and heap bytes per key, counted with
/// `allocation-counter` (feature `count-allocations`), whose counting global
/// allocator is linked only when this module is compiled.
#[cfg(feature = "count-allocations")]
mod allocations {
    use super::{
        FAST, MANY_KEYS, Quota, RateLimitLayer, echo, governor_check, governor_denied,
        governor_direct, governor_key, governor_keyed, governor_spent, palisade, palisade_check,
        palisade_denied, palisade_key, palisade_keyed, palisade_spent, runtime, service_call,
        service_fn, tower_rate_limit, tower_resilience,
    };
    use palisade_benches::{AllocRow, alloc_table};
    use tower::Layer;

    const CALLS: u64 = 10_000;

    fn count(operation: &str, subject: &str, mut op: impl FnMut()) -> AllocRow {
        for _ in 0..100 {
            op();
        }
        let info = allocation_counter::measure(|| {
            for _ in 0..CALLS {
                op();
            }
        });
        AllocRow {
            operation: operation.to_owned(),
            subject: subject.to_owned(),
            allocs_per_call: info.count_total as f64 / CALLS as f64,
            bytes_per_call: info.bytes_total as f64 / CALLS as f64,
        }
    }

    /// Heap bytes held after `fill` puts `MANY_KEYS` keys in, per key.
    fn bytes_per_key<T>(fill: impl FnOnce() -> T) -> f64 {
        let mut held = None;
        let info = allocation_counter::measure(|| held = Some(fill()));
        drop(held);
        info.bytes_current as f64 / MANY_KEYS as f64
    }

    pub(crate) fn report() {
        let mut rows = Vec::new();
        let p = palisade(Quota::per_second(FAST));
        rows.push(count("direct/allowed", "palisade", || palisade_check(&p)));
        let g = governor_direct(FAST);
        rows.push(count("direct/allowed", "governor", || governor_check(&g)));
        let p = palisade_spent();
        rows.push(count("direct/denied", "palisade", || palisade_denied(&p)));
        let g = governor_spent();
        rows.push(count("direct/denied", "governor", || governor_denied(&g)));
        let p = palisade_keyed(100_000);
        rows.push(count("keyed/hot_key", "palisade", || palisade_key(&p, 42)));
        let g = governor_keyed();
        rows.push(count("keyed/hot_key", "governor", || governor_key(&g, 42)));

        let rt = runtime();
        let mut bare = service_fn(echo);
        rows.push(count("tower_layer", "service_fn", || {
            let _ = service_call(&rt, &mut bare);
        }));
        let mut pal =
            RateLimitLayer::new(palisade(Quota::per_second(FAST))).layer(service_fn(echo));
        rows.push(count("tower_layer", "palisade", || {
            service_call(&rt, &mut pal).expect("admitted");
        }));
        let mut t = rt.block_on(async { tower_rate_limit() });
        rows.push(count("tower_layer", "tower-rate-limit", || {
            service_call(&rt, &mut t).expect("admitted");
        }));
        let mut tr = rt.block_on(async { tower_resilience() });
        rows.push(count("tower_layer", "tower-resilience", || {
            service_call(&rt, &mut tr).expect("admitted");
        }));
        let spent = palisade_spent();
        let mut pal = RateLimitLayer::new(spent).layer(service_fn(echo));
        rows.push(count("tower_layer (denied)", "palisade", || {
            assert!(service_call(&rt, &mut pal).is_err());
        }));
        println!(
            "\nHeap allocations per call ({CALLS} calls each; counted by allocation-counter):\n\n{}",
            alloc_table(&rows)
        );

        let pal = bytes_per_key(|| {
            let l = palisade_keyed(MANY_KEYS as usize * 2);
            for k in 0..MANY_KEYS {
                l.check(&k).expect("room");
            }
            l
        });
        let pal_exact = bytes_per_key(|| {
            // max_keys at the key count: shards fill unevenly, so a few keys
            // are refused; what is held is bounded by max_keys.
            let l = palisade_keyed(MANY_KEYS as usize);
            for k in 0..MANY_KEYS {
                let _ = l.check(&k);
            }
            l
        });
        let gov = bytes_per_key(|| {
            let l = governor_keyed();
            for k in 0..MANY_KEYS {
                governor_key(&l, k);
            }
            l
        });
        println!(
            "Heap bytes per key, {MANY_KEYS} u64 keys held:\n\n| crate | bytes / key |\n|---|---:|\n| palisade (max_keys 2M) | {pal:.1} |\n| palisade (max_keys 1M) | {pal_exact:.1} |\n| governor (dashmap, unbounded) | {gov:.1} |\n"
        );
    }
}

fn redis(c: &mut Criterion) {
    let url = std::env::var("PALISADE_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime with I/O");
    let prefix = format!("palisade_bench_rl_{}:", std::process::id());
    let connected = rt.block_on(async {
        palisade_rate_limit::RedisRateLimiter::builder(prefix.clone())
            .url(url.clone())
            .quota(Quota::per_second(FAST))
            .connect()
            .await
    });
    let limiter = match connected {
        Ok(l) => l,
        Err(e) => {
            eprintln!("SKIPPED redis benchmarks: {e}");
            return;
        }
    };
    let mut g = c.benchmark_group("redis");
    g.bench_function("sequential", |b| {
        b.iter(|| {
            rt.block_on(limiter.check("bench-key")).expect("admitted");
        });
    });
    g.bench_function("pipelined", |b| {
        b.iter_custom(|iters| {
            let start = std::time::Instant::now();
            rt.block_on(async {
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(64);
                    let checks = (0..batch).map(|_| limiter.check("bench-key"));
                    for r in futures_util::future::join_all(checks).await {
                        r.expect("admitted");
                    }
                    left -= batch;
                }
            });
            start.elapsed()
        });
    });
    g.finish();
    if let Ok(client) = redis::Client::open(url.as_str())
        && let Ok(mut conn) = client.get_connection()
    {
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(format!("{prefix}bench-key"))
            .query(&mut conn);
    }
}

/// The hot paths, for `benches/callgrind.sh rate_limit` (instructions per
/// call), named as the criterion rows. A million-key limiter is built (before
/// the loop of calls, so its fill is not counted) only when its subject is
/// asked for: filling one takes a million checks under valgrind. Two-thread
/// rows and Redis are not here: valgrind runs one thread at a time, and a
/// round trip is not instructions.
#[allow(clippy::semicolon_if_nothing_returned)] // closures that return ()
fn callgrind_subjects() -> bool {
    let p = palisade(Quota::per_second(FAST));
    let ps = palisade_system(Quota::per_second(FAST));
    let pm = palisade_manual(Quota::per_second(FAST));
    let gov = governor_direct(FAST);
    let p_spent = palisade_spent();
    let gov_spent = governor_spent();
    let p_keyed = palisade_keyed(100_000);
    let gov_keyed = governor_keyed();
    let asked = |subject: &str| {
        std::env::var("PALISADE_CALLGRIND")
            .is_ok_and(|spec| spec.starts_with(&format!("{subject}:")))
    };
    let p_many = asked("keyed/1M_keys/palisade").then(palisade_many);
    let gov_many = asked("keyed/1M_keys/governor").then(governor_many);
    let (mut p_keys, mut gov_keys) = (Keys(0x2545_f491_4f6c_dd1d), Keys(0x2545_f491_4f6c_dd1d));
    let rt = runtime();
    let mut bare = service_fn(echo);
    let mut pal = RateLimitLayer::new(palisade(Quota::per_second(FAST))).layer(service_fn(echo));
    let mut tower_rl = rt.block_on(async { tower_rate_limit() });
    let mut tr = rt.block_on(async { tower_resilience() });
    palisade_benches::callgrind(&mut [
        ("direct/allowed/1_thread/palisade", &mut || {
            palisade_check(&p)
        }),
        ("direct/allowed/1_thread/palisade-system-clock", &mut || {
            palisade_check(&ps)
        }),
        ("direct/allowed/1_thread/palisade-manual-clock", &mut || {
            palisade_check(&pm)
        }),
        ("direct/allowed/1_thread/governor", &mut || {
            governor_check(&gov)
        }),
        ("direct/denied/palisade", &mut || palisade_denied(&p_spent)),
        ("direct/denied/governor", &mut || {
            governor_denied(&gov_spent)
        }),
        ("keyed/hot_key/palisade", &mut || palisade_key(&p_keyed, 42)),
        ("keyed/hot_key/governor", &mut || {
            governor_key(&gov_keyed, 42)
        }),
        ("keyed/1M_keys/palisade", &mut || {
            palisade_key(
                p_many.as_ref().expect("built when asked for"),
                p_keys.next(),
            )
        }),
        ("keyed/1M_keys/governor", &mut || {
            governor_key(
                gov_many.as_ref().expect("built when asked for"),
                gov_keys.next(),
            )
        }),
        ("tower_layer/service_fn", &mut || {
            let _ = service_call(&rt, &mut bare);
        }),
        ("tower_layer/palisade", &mut || {
            service_call(&rt, &mut pal).expect("admitted");
        }),
        ("tower_layer/tower-rate-limit", &mut || {
            service_call(&rt, &mut tower_rl).expect("admitted");
        }),
        ("tower_layer/tower-resilience", &mut || {
            service_call(&rt, &mut tr).expect("admitted");
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
    direct(&mut c);
    keyed(&mut c);
    tower_layer(&mut c);
    redis(&mut c);
    c.final_summary();
}
