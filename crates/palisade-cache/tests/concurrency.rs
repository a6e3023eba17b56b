//! Many threads at once: the bound holds, every value written is accounted
//! for exactly once, and the statistics count every read.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use palisade_cache::{Cache, RemovalCause};
use parking_lot::Mutex;

const THREADS: u64 = 4;
const OPS: u64 = 20_000;
const KEYS: u64 = 200;
const CAPACITY: u64 = 64;

#[test]
fn every_value_written_is_either_held_or_removed_exactly_once_and_the_bound_holds() {
    let removed: Arc<Mutex<Vec<(u64, u64, RemovalCause)>>> = Arc::default();
    let sink = Arc::clone(&removed);
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(CAPACITY)
        .removal_listener(move |k: &u64, v: &u64, cause| sink.lock().push((*k, *v, cause)))
        .build()
        .unwrap();
    let gets = AtomicU64::new(0);
    let written: Vec<Vec<(u64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (cache, gets) = (&cache, &gets);
                scope.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(t);
                    let mut written = Vec::new();
                    for i in 0..OPS {
                        let key = rng.u64(..KEYS);
                        match rng.u8(..10) {
                            0..=2 => {
                                // Unique values: thread in the high bits.
                                let value = t << 32 | i;
                                cache.insert(key, value);
                                written.push((key, value));
                                assert!(cache.entry_count() <= CAPACITY);
                            }
                            3 => cache.invalidate(&key),
                            _ => {
                                gets.fetch_add(1, Ordering::Relaxed);
                                if let Some(value) = cache.get(&key) {
                                    assert!(value >> 32 < THREADS);
                                }
                            }
                        }
                    }
                    written
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    cache.run_pending_tasks();
    assert!(cache.entry_count() <= CAPACITY);

    let all: HashSet<(u64, u64)> = written.into_iter().flatten().collect();
    let mut accounted: Vec<(u64, u64)> = removed.lock().iter().map(|(k, v, _)| (*k, *v)).collect();
    let held: Vec<(u64, u64)> = (0..KEYS)
        .filter_map(|k| cache.get(&k).map(|v| (k, v)))
        .collect();
    assert_eq!(held.len() as u64, cache.entry_count());
    accounted.extend(held);
    let unique: HashSet<(u64, u64)> = accounted.iter().copied().collect();
    assert_eq!(unique.len(), accounted.len(), "a value was reported twice");
    assert_eq!(unique, all, "a value was lost or invented");

    let stats = cache.stats();
    assert_eq!(
        stats.hits + stats.misses,
        gets.load(Ordering::Relaxed) + KEYS
    );
    let removed = removed.lock();
    let count = |c: RemovalCause| removed.iter().filter(|r| r.2 == c).count() as u64;
    assert_eq!(stats.evicted_size, count(RemovalCause::Size));
    assert_eq!(stats.replaced, count(RemovalCause::Replaced));
    assert_eq!(stats.invalidated, count(RemovalCause::Explicit));
}

#[test]
fn concurrent_readers_of_hot_keys_never_see_a_value_that_was_not_written_for_the_key() {
    let cache: Cache<u64, u64> = Cache::builder().max_capacity(1_000).build().unwrap();
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let cache = &cache;
            scope.spawn(move || {
                for i in 0..OPS {
                    let key = i % 16;
                    if t == 0 && i % 4 == 0 {
                        cache.insert(key, key * 1_000_000 + i);
                    } else if let Some(value) = cache.get(&key) {
                        assert_eq!(value / 1_000_000, key);
                    }
                }
            });
        }
    });
    assert_eq!(cache.entry_count(), 4); // keys 0, 4, 8 and 12 are written
}
