//! Behaviour of the in-process cache: bound, expiry, removal causes, stats
//! and configuration errors, on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use palisade_cache::{Cache, Expiry, ManualClock, RemovalCause};
use parking_lot::Mutex;

type Log = Arc<Mutex<Vec<(u64, u64, RemovalCause)>>>;

fn logged(builder: palisade_cache::CacheBuilder<u64, u64>) -> (Cache<u64, u64>, Log) {
    let log: Log = Arc::default();
    let sink = Arc::clone(&log);
    let cache = builder
        .removal_listener(move |k: &u64, v: &u64, cause| sink.lock().push((*k, *v, cause)))
        .build()
        .unwrap();
    (cache, log)
}

#[test]
fn the_entry_count_never_exceeds_the_capacity_and_evictions_are_reported_with_size() {
    let (cache, log) = logged(Cache::builder().max_capacity(100));
    for key in 0..1_000 {
        cache.insert(key, key * 10);
        assert!(cache.entry_count() <= 100, "over capacity after key {key}");
    }
    assert_eq!(cache.entry_count(), 100);
    let log = log.lock();
    assert_eq!(log.len(), 900);
    assert!(
        log.iter()
            .all(|(k, v, cause)| *v == k * 10 && *cause == RemovalCause::Size)
    );
    assert_eq!(cache.stats().evicted_size, 900);
}

#[test]
fn a_weigher_bounds_the_total_weight_and_an_entry_heavier_than_the_cache_is_refused() {
    let (cache, log) = logged(
        Cache::builder()
            .max_capacity(100)
            .weigher(|_: &u64, v: &u64| *v as u32),
    );
    for key in 0..50 {
        cache.insert(key, 7);
        assert!(cache.weighted_size() <= 100);
    }
    assert_eq!(cache.weighted_size(), 98); // 14 entries of 7
    assert_eq!(cache.entry_count(), 14);
    cache.insert(1_000, 101);
    assert_eq!(cache.get(&1_000), None);
    assert_eq!(log.lock().last(), Some(&(1_000, 101, RemovalCause::Size)));

    // A value too heavy for the cache written over a held one: the held one
    // goes as replaced (a new value was written for its key), not as invalidated.
    let held = (0..50)
        .find(|k| cache.get(k).is_some())
        .expect("a held key");
    let before = cache.stats();
    log.lock().clear();
    cache.insert(held, 101);
    assert_eq!(cache.get(&held), None);
    assert_eq!(
        *log.lock(),
        [
            (held, 7, RemovalCause::Replaced),
            (held, 101, RemovalCause::Size)
        ]
    );
    let after = cache.stats();
    assert_eq!(after.replaced - before.replaced, 1);
    assert_eq!(after.invalidated - before.invalidated, 0);
    assert_eq!(after.evicted_size - before.evicted_size, 1);
}

#[test]
fn time_to_live_expires_entries_on_read_and_reclaims_them_without_a_read() {
    let clock = ManualClock::new();
    let (cache, log) = logged(
        Cache::builder()
            .max_capacity(10)
            .time_to_live(Duration::from_secs(10))
            .clock(clock.shared()),
    );
    cache.insert(1, 100);
    clock.advance(Duration::from_secs(9));
    cache.insert(2, 200);
    assert_eq!(cache.get(&1), Some(100));
    clock.advance(Duration::from_secs(1));
    assert_eq!(cache.get(&1), None, "expired at exactly 10 s");
    assert_eq!(cache.get(&2), Some(200));
    // Reclaimed by maintenance, within the wheel's 17 ms resolution.
    clock.advance(Duration::from_millis(20));
    cache.run_pending_tasks();
    assert_eq!(cache.entry_count(), 1);
    assert_eq!(*log.lock(), vec![(1, 100, RemovalCause::Expired)]);
    clock.advance(Duration::from_secs(9));
    cache.run_pending_tasks();
    assert_eq!(cache.entry_count(), 0);
    assert_eq!(cache.stats().expired, 2);
}

#[test]
fn time_to_idle_is_pushed_back_by_every_read() {
    let clock = ManualClock::new();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .time_to_idle(Duration::from_secs(5))
        .clock(clock.shared())
        .build()
        .unwrap();
    cache.insert(1, 1);
    cache.insert(2, 2);
    for _ in 0..4 {
        clock.advance(Duration::from_secs(4));
        assert_eq!(cache.get(&1), Some(1));
    }
    assert_eq!(cache.get(&2), None, "idle for 16 s");
    clock.advance(Duration::from_secs(5));
    assert_eq!(cache.get(&1), None, "idle for 5 s");
    cache.run_pending_tasks();
    assert_eq!(cache.entry_count(), 0);
}

struct ByValue;

impl Expiry<u64, u64> for ByValue {
    fn expire_after_create(&self, _: &u64, value: &u64) -> Option<Duration> {
        (*value > 0).then(|| Duration::from_secs(*value))
    }

    fn expire_after_update(
        &self,
        _: &u64,
        _: &u64,
        remaining: Option<Duration>,
    ) -> Option<Duration> {
        remaining // an update keeps the original deadline
    }
}

#[test]
fn per_entry_expiry_is_chosen_at_insert_and_update_and_capped_by_the_ttl() {
    let clock = ManualClock::new();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .expiry(ByValue)
        .time_to_live(Duration::from_secs(30))
        .clock(clock.shared())
        .build()
        .unwrap();
    cache.insert(1, 5); // 5 s
    cache.insert(2, 60); // 60 s, capped at 30 s
    cache.insert(3, 0); // none of its own: 30 s
    clock.advance(Duration::from_secs(3));
    cache.insert(1, 50); // keeps its 2 s left
    clock.advance(Duration::from_secs(2));
    assert_eq!(cache.get(&1), None);
    assert_eq!(cache.get(&2), Some(60));
    clock.advance(Duration::from_secs(25));
    assert_eq!((cache.get(&2), cache.get(&3)), (None, None));
}

#[test]
fn replacing_and_invalidating_report_their_causes_and_counts() {
    let (cache, log) = logged(Cache::builder().max_capacity(10));
    cache.insert(1, 10);
    cache.insert(1, 11);
    cache.insert(2, 20);
    cache.invalidate(&1);
    cache.invalidate(&99);
    cache.insert(3, 30);
    cache.invalidate_all();
    assert_eq!(cache.get(&1), None);
    assert_eq!(cache.entry_count(), 0);
    let mut log = log.lock().clone();
    log[2..].sort_unstable(); // invalidate_all: in no particular order
    assert_eq!(
        log,
        vec![
            (1, 10, RemovalCause::Replaced),
            (1, 11, RemovalCause::Explicit),
            (2, 20, RemovalCause::Explicit),
            (3, 30, RemovalCause::Explicit),
        ]
    );
    let stats = cache.stats();
    assert_eq!((stats.replaced, stats.invalidated), (1, 3));
}

#[test]
fn stats_count_hits_and_misses() {
    let cache: Cache<&str, u64> = Cache::builder().max_capacity(10).build().unwrap();
    cache.insert("a", 1);
    for _ in 0..3 {
        cache.get("a");
    }
    cache.get("b");
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (3, 1));
    assert!((stats.hit_rate() - 0.75).abs() < 1e-9);
}

#[test]
fn a_frequently_read_key_survives_a_scan_of_new_keys() {
    let cache: Cache<u64, u64> = Cache::builder().max_capacity(100).build().unwrap();
    for key in 0..100 {
        cache.insert(key, key);
    }
    for _ in 0..10 {
        for key in 0..10 {
            assert_eq!(cache.get(&key), Some(key));
        }
    }
    for key in 1_000..11_000 {
        cache.insert(key, key);
    }
    cache.run_pending_tasks();
    let kept = (0..10).filter(|k| cache.get(k).is_some()).count();
    assert_eq!(kept, 10, "a one-time scan pushed out hot keys");
}

#[test]
fn invalid_settings_fail_in_build_and_name_the_field() {
    fn field(result: Result<Cache<u64, u64>, palisade_cache::ConfigError>) -> &'static str {
        result.unwrap_err().field()
    }
    assert_eq!(field(Cache::builder().build()), "max_capacity");
    assert_eq!(
        field(Cache::builder().max_capacity(0).build()),
        "max_capacity"
    );
    assert_eq!(
        field(Cache::builder().max_capacity(1 << 50).build()),
        "max_capacity"
    );
    assert_eq!(
        field(
            Cache::builder()
                .max_capacity(1)
                .time_to_live(Duration::ZERO)
                .build()
        ),
        "time_to_live"
    );
    assert_eq!(
        field(Cache::builder().max_capacity(1).name("").build()),
        "name"
    );
    assert_eq!(
        field(Cache::builder().max_capacity(1).shards(0).build()),
        "shards"
    );
    let error = Cache::<u64, u64>::builder().build().unwrap_err();
    assert!(error.to_string().contains("max_capacity"), "{error}");
}

/// Every lookup, load, removal and resize reaches a listener as a typed
/// event: lookups and removals as counts after each maintenance run, loads as
/// they finish.
#[test]
fn listeners_receive_every_event_in_order() {
    use palisade_cache::{Event, Outcome};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let clock = ManualClock::new();
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(1)
        .clock(clock.shared())
        .time_to_live(Duration::from_secs(60))
        .listener(move |e: &Event| sink.lock().push(*e))
        .build()
        .unwrap();
    assert_eq!(cache.get(&1), None);
    let loaded = futures::executor::block_on(cache.get_with(1, async {
        clock.advance(Duration::from_millis(30));
        10
    }));
    assert_eq!(loaded, 10);
    assert_eq!(cache.get(&1), Some(10));
    assert_eq!(cache.get(&1), Some(10));
    cache.invalidate(&1);
    let stats = cache.stats(); // applies the buffered reads: the two hits are reported
    assert_eq!((stats.hits, stats.misses), (2, 2));
    let events = seen.lock().clone();
    assert_eq!(
        events,
        [
            Event::LoadFinished {
                outcome: Outcome::Success,
                duration: Duration::from_millis(30)
            },
            // The insert of the loaded value: two misses so far (the get, and get_with's own look).
            Event::Lookups {
                hits: 0,
                misses: 2,
                stale: 0
            },
            Event::Sizes {
                entries: 1,
                weighted_size: 1
            },
            Event::Removed {
                cause: RemovalCause::Explicit,
                count: 1
            },
            Event::Sizes {
                entries: 0,
                weighted_size: 0
            },
            Event::Lookups {
                hits: 2,
                misses: 0,
                stale: 0
            },
            Event::Sizes {
                entries: 0,
                weighted_size: 0
            },
        ]
    );
}

/// A listener runs after the cache lets go of its locks: it may read, write
/// and count the cache it listens to.
#[test]
fn a_listener_may_use_the_cache() {
    use palisade_cache::Event;
    use std::sync::OnceLock;
    let me: Arc<OnceLock<Cache<u64, u64>>> = Arc::new(OnceLock::new());
    let heard = Arc::clone(&me);
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(4)
        .listener(move |e: &Event| {
            if let (Event::Removed { .. }, Some(cache)) = (e, heard.get()) {
                let _ = cache.stats();
                cache.insert(100, 1);
                let _ = cache.get(&100);
            }
        })
        .build()
        .unwrap();
    me.set(cache.clone()).unwrap();
    cache.insert(1, 1);
    cache.invalidate(&1); // reported: the listener writes key 100
    assert_eq!(cache.get(&100), Some(1));
}

/// A cache-aside replay of a skewed key stream; which requests hit.
fn replay_hits(cache: &Cache<u64, u64>) -> Vec<bool> {
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    (0..50_000)
        .map(|_| {
            // xorshift, then a skew: small keys far more often than large ones.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = (state % 1_000) * (state % 1_000) / 1_000;
            let hit = cache.get(&key).is_some();
            if !hit {
                cache.insert(key, key);
            }
            hit
        })
        .collect()
}

#[test]
fn caches_built_with_the_same_hash_seed_make_the_same_decisions() {
    let build = || {
        Cache::<u64, u64>::builder()
            .max_capacity(64)
            .hash_seed(7)
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    let (hits_a, hits_b) = (replay_hits(&a), replay_hits(&b));
    assert_eq!(hits_a, hits_b, "the same requests hit in both");
    assert_eq!(a.window_capacity(), b.window_capacity());
    assert_eq!(a.stats().hits, b.stats().hits);
    assert!(a.stats().hits > 10_000, "{}", a.stats().hits);
}
