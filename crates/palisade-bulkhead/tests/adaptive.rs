//! Adaptive limits: the rules of each algorithm step by step, bad settings,
//! and both algorithms in a simulated service whose latency grows past a
//! knee in concurrency, on a manual clock.

use std::time::Duration;

use palisade_bulkhead::adaptive::{AdaptiveLimiter, AdaptivePermit, Aimd, Gradient2, Vegas};
use palisade_bulkhead::{Bulkhead, ManualClock, Outcome, Permit};

fn bulkhead(limit: u32) -> Bulkhead {
    Bulkhead::builder()
        .max_concurrent_calls(limit)
        .build()
        .unwrap()
}

fn limit(b: &Bulkhead) -> u32 {
    b.snapshot().limit
}

#[test]
fn aimd_grows_in_use_backs_off_on_failure_or_slowness_and_stays_in_bounds() {
    let clock = ManualClock::new();
    let b = bulkhead(4);
    let limiter = AdaptiveLimiter::builder(b.clone())
        .aimd(
            Aimd::new()
                .timeout(Duration::from_millis(50))
                .backoff_ratio(0.75)
                .increase(2),
        )
        .min_limit(3)
        .max_limit(9)
        .clock(clock.shared())
        .build()
        .unwrap();
    // One call of four: fewer than half in flight, the limit is not what holds calls back.
    limiter.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(limit(&b), 4);
    // Two in flight of four: in use, so it grows by 2 each.
    let (p, q) = (
        limiter.try_acquire().unwrap(),
        limiter.try_acquire().unwrap(),
    );
    p.record(Outcome::Success);
    assert_eq!(limit(&b), 6, "two in flight when it finished");
    q.record(Outcome::Success);
    assert_eq!(limit(&b), 6, "one in flight of six");
    let held: Vec<_> = (0..5).map(|_| limiter.try_acquire().unwrap()).collect();
    for p in held {
        p.record(Outcome::Success);
    }
    assert_eq!(limit(&b), 9, "capped at max_limit");
    // A failure: floor(9 × 0.75) = 6.
    let started_before = limiter.try_acquire().unwrap();
    clock.advance(Duration::from_millis(1));
    limiter.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(limit(&b), 6);
    // A call that started before that back-off fails too: the same overload, no second cut.
    started_before.record(Outcome::Failure);
    assert_eq!(limit(&b), 6);
    // A call started after it, slower than the timeout, counts as a failure: floor(6 × 0.75) = 4.
    clock.advance(Duration::from_millis(1));
    let slow = limiter.try_acquire().unwrap();
    clock.advance(Duration::from_millis(51));
    slow.record(Outcome::Success);
    assert_eq!(limit(&b), 4);
    // Ignored, or dropped unrecorded: no sample.
    limiter.try_acquire().unwrap().record(Outcome::Ignored);
    drop(limiter.try_acquire().unwrap());
    assert_eq!(limit(&b), 4);
    // floor(4 × 0.75) = 3, then the minimum holds.
    for _ in 0..2 {
        clock.advance(Duration::from_millis(1));
        limiter.try_acquire().unwrap().record(Outcome::Failure);
    }
    assert_eq!(limit(&b), 3);
    assert_eq!(b.snapshot().in_flight, 0);
}

#[tokio::test]
async fn call_feeds_errors_as_failures() {
    let b = bulkhead(10);
    let limiter = AdaptiveLimiter::builder(b.clone())
        .aimd(Aimd::new().backoff_ratio(0.5))
        .build()
        .unwrap();
    let err = limiter
        .call(|| async { Err::<(), _>(std::io::Error::other("overloaded")) })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "overloaded");
    assert_eq!(limit(&b), 5);
    assert_eq!(
        limiter
            .call(|| async { Ok::<_, std::io::Error>(7) })
            .await
            .unwrap(),
        7
    );
}

#[test]
fn the_builder_brings_the_limit_into_bounds() {
    let b = bulkhead(2000);
    let _ = AdaptiveLimiter::builder(b.clone())
        .gradient2(Gradient2::new())
        .max_limit(300)
        .build()
        .unwrap();
    assert_eq!(limit(&b), 300);
    let _ = AdaptiveLimiter::builder(b.clone())
        .aimd(Aimd::new())
        .min_limit(400)
        .max_limit(500)
        .build()
        .unwrap();
    assert_eq!(limit(&b), 400);
}

#[test]
fn gradient2_grows_while_latency_holds_and_shrinks_when_it_rises() {
    let clock = ManualClock::new();
    let b = bulkhead(10);
    // Smoothing 1 and queue size 2: with a steady latency each window adds exactly 2.
    let limiter = AdaptiveLimiter::builder(b.clone())
        .gradient2(
            Gradient2::new()
                .smoothing(1.0)
                .queue_size(2.0)
                .window(Duration::from_millis(10))
                .long_window(10),
        )
        .max_limit(100)
        .clock(clock.shared())
        .build()
        .unwrap();
    // One round: the limit's worth of calls, all answered after `latency_ms`.
    let round = |latency_ms: u64| {
        let n = limit(&b) as usize;
        let permits: Vec<_> = (0..n).map(|_| limiter.try_acquire().unwrap()).collect();
        clock.advance(Duration::from_millis(latency_ms));
        for p in permits {
            p.record(Outcome::Success);
        }
    };
    round(10);
    assert_eq!(limit(&b), 10, "the first window is not over: 0 ms long");
    // From the second round on, a window ends at the first call of each round.
    for r in 2..=6 {
        round(10);
        assert_eq!(limit(&b), 10 + 2 * (r - 1));
    }
    for _ in 0..60 {
        round(10);
    }
    assert_eq!(limit(&b), 100, "capped at max_limit");
    // Latency four times the long average. The window that ends at the first
    // slow call holds 99 fast ones: mean 10.3 ms, long 10.05 ms, gradient 1,
    // no change. The next window is all slow: long = 10.05 × 9/11 + 40 × 2/11
    // = 15.50 ms, gradient 1.5 × 15.50 / 40 = 0.58, so 100 × 0.58 + 2 = 60.
    round(40);
    assert_eq!(limit(&b), 100);
    round(40);
    assert_eq!(limit(&b), 60);
    round(40);
    assert!(limit(&b) < 60, "{}", limit(&b));
}

#[test]
fn bad_settings_name_the_builder_method() {
    let field =
        |b: palisade_bulkhead::adaptive::AdaptiveLimiterBuilder| b.build().unwrap_err().field();
    let b = bulkhead(10);
    assert_eq!(field(AdaptiveLimiter::builder(b.clone())), "aimd");
    assert_eq!(
        field(
            AdaptiveLimiter::builder(b.clone())
                .aimd(Aimd::new())
                .min_limit(0)
        ),
        "min_limit"
    );
    assert_eq!(
        field(
            AdaptiveLimiter::builder(b.clone())
                .aimd(Aimd::new())
                .min_limit(20)
                .max_limit(10)
        ),
        "min_limit"
    );
    assert_eq!(
        field(
            AdaptiveLimiter::builder(b.clone())
                .aimd(Aimd::new())
                .max_limit(u32::MAX)
        ),
        "max_limit"
    );
    for bad in [
        Aimd::new().backoff_ratio(1.0),
        Aimd::new().backoff_ratio(f64::NAN),
        Aimd::new().increase(0),
        Aimd::new().timeout(Duration::ZERO),
    ] {
        assert_eq!(field(AdaptiveLimiter::builder(b.clone()).aimd(bad)), "aimd");
    }
    for bad in [
        Gradient2::new().tolerance(0.9),
        Gradient2::new().smoothing(0.0),
        Gradient2::new().queue_size(-1.0),
        Gradient2::new().long_window(3),
        Gradient2::new().window(Duration::ZERO),
    ] {
        assert_eq!(
            field(AdaptiveLimiter::builder(b.clone()).gradient2(bad)),
            "gradient2"
        );
    }
    assert_eq!(limit(&b), 10, "nothing changed by a failed build");
}

// ---- the simulated service ------------------------------------------------------

/// Servers: up to this many calls run at full speed.
const KNEE: f64 = 20.0;
/// The work of one call, in ms: its latency when the service is not overloaded.
const WORK_MS: f64 = 10.0;
/// Above the knee the service thrashes: its total speed falls by this share per extra call.
const THRASH: f64 = 0.01;
/// Callers that send a call again as soon as theirs is answered or refused.
const CLIENTS: usize = 100;
const TICK_MS: f64 = 0.25;

/// The service's total speed with `n` calls in flight, in ms of work per ms.
fn speed(n: usize) -> f64 {
    let n = n as f64;
    if n <= KNEE {
        n
    } else {
        KNEE * (1.0 - THRASH * (n - KNEE)).max(0.1)
    }
}

enum Held<'a> {
    Fixed(#[allow(dead_code)] Permit<'a>),
    Adaptive(AdaptivePermit<'a>),
}

struct Run {
    /// Calls answered per second, over the second half.
    throughput: f64,
    /// The 99th percentile of latency over the second half, in ms.
    p99_ms: f64,
    /// The limit at the end of each second.
    limits: Vec<u32>,
}

/// Runs the closed loop for `seconds`: every tick, idle clients ask for a
/// permit until one is refused; calls in flight share the service's speed
/// (processor sharing); a call whose work is done is answered and recorded.
fn simulate(
    bulkhead: &Bulkhead,
    limiter: Option<&AdaptiveLimiter>,
    clock: &ManualClock,
    seconds: u32,
) -> Run {
    let ticks = (f64::from(seconds) * 1000.0 / TICK_MS) as u64;
    let mut in_flight: Vec<(Held<'_>, f64, f64)> = Vec::new(); // permit, work left, started (ms)
    let mut latencies = Vec::new();
    let mut answered_late = 0u64;
    let mut limits = Vec::new();
    for tick in 0..ticks {
        let now = tick as f64 * TICK_MS;
        while in_flight.len() < CLIENTS {
            let held = match limiter {
                Some(l) => l.try_acquire().map(Held::Adaptive),
                None => bulkhead.try_acquire().map(Held::Fixed),
            };
            match held {
                Ok(h) => in_flight.push((h, WORK_MS, now)),
                Err(_) => break,
            }
        }
        let share = speed(in_flight.len()) / in_flight.len().max(1) as f64 * TICK_MS;
        clock.advance(Duration::from_micros((TICK_MS * 1000.0) as u64));
        let end = now + TICK_MS;
        let mut i = 0;
        while i < in_flight.len() {
            in_flight[i].1 -= share;
            if in_flight[i].1 <= 1e-9 {
                let (held, _, started) = in_flight.swap_remove(i);
                if end >= f64::from(seconds) * 500.0 {
                    latencies.push(end - started);
                    answered_late += 1;
                }
                if let Held::Adaptive(p) = held {
                    p.record(Outcome::Success);
                }
            } else {
                i += 1;
            }
        }
        if (tick + 1) % (1000.0 / TICK_MS) as u64 == 0 {
            limits.push(bulkhead.snapshot().limit);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let p99_ms = latencies[(latencies.len() as f64 * 0.99) as usize];
    Run {
        throughput: answered_late as f64 / (f64::from(seconds) / 2.0),
        p99_ms,
        limits,
    }
}

fn best_fixed() -> (u32, f64) {
    [5, 10, 15, 18, 19, 20, 21, 22, 25, 30, 40, 60]
        .into_iter()
        .map(|l| {
            let clock = ManualClock::new();
            (l, simulate(&bulkhead(l), None, &clock, 6).throughput)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap()
}

fn check(name: &str, run: &Run, best: (u32, f64)) {
    println!(
        "{name}: throughput {:.0}/s (best fixed limit {} gives {:.0}/s), p99 {:.1} ms, limit each second {:?}",
        run.throughput, best.0, best.1, run.p99_ms, run.limits
    );
    assert!(
        run.throughput >= 0.9 * best.1,
        "{name}: throughput {} below 90 % of {}",
        run.throughput,
        best.1
    );
    assert!(
        run.p99_ms <= 2.0 * WORK_MS,
        "{name}: p99 {} ms above twice the unloaded {WORK_MS} ms",
        run.p99_ms
    );
}

#[test]
fn aimd_settles_near_the_knee() {
    let best = best_fixed();
    assert_eq!(best.0, 20, "the model's best fixed limit is its knee");
    let clock = ManualClock::new();
    let b = bulkhead(5);
    let limiter = AdaptiveLimiter::builder(b.clone())
        .aimd(Aimd::new().timeout(Duration::from_millis(12)))
        .max_limit(200)
        .clock(clock.shared())
        .build()
        .unwrap();
    let run = simulate(&b, Some(&limiter), &clock, 20);
    check("aimd", &run, best);
    let settled = &run.limits[10..];
    assert!(settled.iter().all(|l| (15..=30).contains(l)), "{settled:?}");
}

#[test]
fn gradient2_settles_near_the_knee() {
    let best = best_fixed();
    let clock = ManualClock::new();
    let b = bulkhead(5);
    let limiter = AdaptiveLimiter::builder(b.clone())
        .gradient2(Gradient2::new().tolerance(1.2).queue_size(2.0))
        .max_limit(200)
        .clock(clock.shared())
        .build()
        .unwrap();
    let run = simulate(&b, Some(&limiter), &clock, 20);
    check("gradient2", &run, best);
    let settled = &run.limits[10..];
    assert!(settled.iter().all(|l| (15..=40).contains(l)), "{settled:?}");
}

#[test]
fn vegas_settles_near_the_knee() {
    let best = best_fixed();
    let clock = ManualClock::new();
    let b = bulkhead(5);
    let limiter = AdaptiveLimiter::builder(b.clone())
        .vegas(Vegas::new())
        .max_limit(200)
        .clock(clock.shared())
        .build()
        .unwrap();
    let run = simulate(&b, Some(&limiter), &clock, 20);
    check("vegas", &run, best);
    let settled = &run.limits[10..];
    assert!(settled.iter().all(|l| (15..=30).contains(l)), "{settled:?}");
}

#[test]
fn vegas_steps_by_the_queue_it_estimates() {
    let clock = ManualClock::new();
    let b = bulkhead(100);
    let limiter = AdaptiveLimiter::builder(b.clone())
        .vegas(Vegas::new())
        .max_limit(1000)
        .clock(clock.shared())
        .build()
        .unwrap();
    let call = |latency_ms: u64, in_flight: usize, outcome: Outcome| {
        let held: Vec<_> = (1..in_flight).map(|_| b.try_acquire().unwrap()).collect();
        let p = limiter.try_acquire().unwrap();
        clock.advance(Duration::from_millis(latency_ms));
        p.record(outcome);
        drop(held);
    };
    // The first call sets the no-load latency; no queue: + beta × log10(100) = + 12.
    call(10, 60, Outcome::Success);
    assert_eq!(limit(&b), 112);
    // Twice as slow: queue = ceil(112 × 0.5) = 56 > beta × log10(112) ≈ 12.3: − log10(112).
    call(20, 60, Outcome::Success);
    assert_eq!(limit(&b), 109, "112 − 2.05");
    // A failure takes log10(limit) off too; too few in flight moves nothing.
    call(10, 60, Outcome::Failure);
    assert_eq!(limit(&b), 107);
    call(10, 10, Outcome::Success);
    assert_eq!(limit(&b), 107);
}
