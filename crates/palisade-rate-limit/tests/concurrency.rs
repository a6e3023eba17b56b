//! Exact counts under contention, and the keyed limiter's memory bound under
//! 10 million distinct keys, measured on the heap.

use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_rate_limit::{KEY_CAPACITY, KeyedRateLimiter, ManualClock, Quota, RateLimiter};

const THREADS: usize = 8;

#[test]
fn with_time_frozen_many_threads_admit_exactly_the_burst() {
    for burst in [1, 7, 1_000] {
        let clock = ManualClock::new();
        let limiter = RateLimiter::builder()
            .quota(Quota::per_second(10).burst(burst))
            .clock(clock.shared())
            .build()
            .unwrap();
        let admitted = AtomicU64::new(0);
        let barrier = Barrier::new(THREADS);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    barrier.wait();
                    for _ in 0..2_000 {
                        if limiter.check().is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), u64::from(burst));
        // One interval later, exactly one more.
        clock.advance(Duration::from_millis(100));
        assert!(limiter.check().is_ok());
        assert!(limiter.check().is_err());
    }
}

#[test]
fn check_n_under_contention_never_overshoots() {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder()
        .quota(Quota::per_second(100).burst(100))
        .clock(clock.shared())
        .build()
        .unwrap();
    let admitted = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (limiter, admitted) = (&limiter, &admitted);
            s.spawn(move || {
                let n = 1 + (t as u32 % 3); // 1, 2 or 3 at once
                for _ in 0..1_000 {
                    if limiter.check_n(n).is_ok() {
                        admitted.fetch_add(u64::from(n), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    // 100 cells; requests of 1 always fit the last cell, so all 100 are used.
    assert_eq!(admitted.load(Ordering::Relaxed), 100);
}

#[test]
fn a_keyed_limiter_admits_exactly_each_keys_burst_under_contention() {
    let clock = ManualClock::new();
    let limiter = KeyedRateLimiter::<u32>::builder()
        .quota_fn(|k| Quota::per_second(10).burst(1 + k % 5))
        .clock(clock.shared())
        .build()
        .unwrap();
    let admitted: Vec<AtomicU64> = (0..50).map(|_| AtomicU64::new(0)).collect();
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..20 {
                    for key in 0..50u32 {
                        if limiter.check(&key).is_ok() {
                            admitted[key as usize].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    for (key, count) in admitted.iter().enumerate() {
        assert_eq!(
            count.load(Ordering::Relaxed),
            1 + key as u64 % 5,
            "key {key}"
        );
    }
    assert_eq!(limiter.len(), 50);
}

/// 10 million distinct keys through a limiter bounded to 10,000 keys, the
/// clock moving so that keys keep refilling and being dropped: the table
/// never holds more than 10,000 keys, and the heap it takes, measured by a
/// counting allocator, stays within that bound's size (about 56 bytes a key
/// slot: 32-byte entries in power-of-two tables), nowhere near what 10
/// million keys would need (at least 33 bytes each: 330 MB).
#[test]
fn ten_million_distinct_keys_stay_within_the_key_bound_in_memory() {
    const KEYS: u64 = 10_000_000;
    const MAX_KEYS: usize = 10_000;
    let clock = ManualClock::new();
    let mut refused = 0u64;
    let mut admitted = 0u64;
    let mut max_len = 0;
    let info = allocation_counter::measure(|| {
        let limiter = KeyedRateLimiter::<u64>::builder()
            .quota(Quota::per_second(1))
            .max_keys(MAX_KEYS)
            .clock(clock.shared())
            .build()
            .unwrap();
        for key in 0..KEYS {
            // 20 µs per key: 50,000 new keys a second against 10,000 slots
            // that each take 1 s to refill.
            clock.advance(Duration::from_micros(20));
            match limiter.check(&key) {
                Ok(_) => admitted += 1,
                Err(e) => {
                    assert_eq!(e.denied().unwrap().rejected().reason(), KEY_CAPACITY);
                    refused += 1;
                }
            }
            if key % 100_000 == 0 {
                max_len = max_len.max(limiter.len());
            }
        }
        max_len = max_len.max(limiter.len());
    });
    assert!(max_len <= MAX_KEYS, "held {max_len}");
    assert_eq!(admitted + refused, KEYS);
    // Room for 10,000 keys per second of clock: 200 s of clock, at most 2 million
    // admitted; and every second the whole table refills, so nearly that many.
    let seconds = KEYS * 20 / 1_000_000;
    assert!(
        admitted <= seconds * MAX_KEYS as u64 + MAX_KEYS as u64,
        "{admitted}"
    );
    assert!(
        admitted >= (seconds - 2) * (MAX_KEYS as u64 * 9 / 10),
        "{admitted}"
    );
    let per_key = info.bytes_max as f64 / MAX_KEYS as f64;
    eprintln!(
        "10M distinct keys, max_keys {MAX_KEYS}: peak heap {} bytes ({per_key:.1} per key slot), {admitted} admitted, {refused} refused",
        info.bytes_max
    );
    // 64 shards of 157 keys: 256 buckets of 33 bytes each, 540 KB, plus one
    // shard being rebuilt. (Removing in place, tombstones doubled it to 1.1 MB.)
    assert!(info.bytes_max < 700_000, "peak heap {}", info.bytes_max);
}

/// A new key whose quota function is slow: while it runs, another thread
/// inserts the key, drains its burst, time passes and a sweep drops it.
/// The slow check must then count at the time it inserts, not at the time it
/// started, or the key gets a burst on top of the one just spent.
#[test]
fn a_key_inserted_after_a_sweep_is_dated_when_it_is_inserted() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    let clock = ManualClock::new();
    let entered = Arc::new(Barrier::new(2));
    let release = Arc::new(Barrier::new(2));
    let calls = Arc::new(AtomicUsize::new(0));
    let (e, r, c) = (
        Arc::clone(&entered),
        Arc::clone(&release),
        Arc::clone(&calls),
    );
    let limiter = KeyedRateLimiter::<u32>::builder()
        .quota_fn(move |_| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                e.wait();
                r.wait();
            }
            Quota::new(5, Duration::from_millis(500))
        })
        .max_keys(16)
        .shards(1)
        .clock(clock.shared())
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(1));
    let slow_admitted = std::thread::scope(|s| {
        let slow = s.spawn(|| limiter.check(&7).is_ok()); // reads 1 s, then waits in quota_fn
        entered.wait();
        assert_eq!((0..10).filter(|_| limiter.check(&7).is_ok()).count(), 5);
        clock.advance(Duration::from_secs(1)); // 2 s: refilled
        assert_eq!(limiter.sweep(), 1);
        release.wait();
        slow.join().unwrap()
    });
    // The slow check counts at 2 s: with it, a burst of 5 at 2 s.
    assert!(slow_admitted);
    let more = (0..10).filter(|_| limiter.check(&7).is_ok()).count();
    assert_eq!(1 + more, 5);
}

/// `sweep()` gives memory back: it never rebuilds a table larger than what it keeps.
#[test]
fn a_sweep_never_grows_the_heap() {
    let limiter = KeyedRateLimiter::<u64>::builder()
        .quota(Quota::per_second(10))
        .max_keys(1_000_000)
        .build()
        .unwrap();
    for k in 0..10 {
        limiter.check(&k).unwrap();
    }
    let info = allocation_counter::measure(|| {
        assert_eq!(limiter.sweep(), 0);
    });
    assert!(
        info.bytes_max <= 4096,
        "a sweep of 10 held keys took {} bytes",
        info.bytes_max
    );
    let huge = KeyedRateLimiter::<u64>::builder()
        .quota(Quota::per_second(1))
        .max_keys(usize::MAX)
        .build()
        .unwrap();
    huge.check(&1).unwrap();
    assert_eq!(huge.sweep(), 0);
}
