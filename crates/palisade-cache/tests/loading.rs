//! Coalesced loading: one load per key, errors to every waiter, no waiter
//! left hanging by a cancelled or panicking leader; `LoadingCache`'s
//! refresh-ahead, stale-if-error, timeouts and negative caching under
//! `tokio::time::pause`.
#![cfg(feature = "tokio")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_cache::{Cache, LoadError};
use palisade_core::TokioClock;
use tokio::sync::Barrier;

fn cache() -> Cache<u64, u64> {
    Cache::builder().max_capacity(1_000).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_on_the_same_and_different_keys_run_one_load_per_key() {
    let cache = cache();
    let loads: Arc<Vec<AtomicU64>> = Arc::new((0..8).map(|_| AtomicU64::new(0)).collect());
    let barrier = Arc::new(Barrier::new(64));
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let (cache, loads, barrier) = (cache.clone(), Arc::clone(&loads), Arc::clone(&barrier));
            tokio::spawn(async move {
                let key = i % 8;
                barrier.wait().await;
                cache
                    .get_with(key, async {
                        loads[key as usize].fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        key * 100
                    })
                    .await
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), (i as u64 % 8) * 100);
    }
    let counts: Vec<u64> = loads.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    assert_eq!(counts, vec![1; 8]);
    assert_eq!(cache.stats().loads, 8);
}

#[tokio::test(start_paused = true)]
async fn a_failed_load_reaches_every_waiter_and_is_not_cached() {
    let cache = cache();
    let calls = Arc::new(AtomicU64::new(0));
    let load = |fail: bool| {
        let calls = Arc::clone(&calls);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            if fail { Err("database down") } else { Ok(7) }
        }
    };
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let cache = cache.clone();
            let load = load(true);
            tokio::spawn(async move { cache.try_get_with(1, load).await })
        })
        .collect();
    for waiter in waiters {
        assert_eq!(*waiter.await.unwrap().unwrap_err(), "database down");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().load_failures, 1);
    // Not cached: the next call loads again, and succeeds.
    assert_eq!(cache.try_get_with(1, load(false)).await.unwrap(), 7);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn with_negative_caching_an_error_is_served_until_its_ttl_passes() {
    let cache: Cache<u64, u64> = Cache::builder()
        .max_capacity(10)
        .negative_ttl(Duration::from_secs(5))
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    let calls = AtomicU64::new(0);
    let failing = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Err::<u64, _>("not found")
    };
    assert_eq!(
        *cache.try_get_with(1, failing()).await.unwrap_err(),
        "not found"
    );
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(
        *cache.try_get_with(1, failing()).await.unwrap_err(),
        "not found"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the error was served from cache"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        *cache.try_get_with(1, failing()).await.unwrap_err(),
        "not found"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // A write clears the remembered error.
    cache.insert(1, 5);
    assert_eq!(cache.try_get_with(1, failing()).await.unwrap(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_leader_hands_the_load_to_a_waiter() {
    let cache = cache();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_with(1, async {
                    tokio::time::sleep(Duration::from_secs(3_600)).await;
                    1
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1)).await; // the leader starts its load
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get_with(1, async { 2 }).await })
    };
    tokio::time::sleep(Duration::from_millis(1)).await; // the waiter waits
    assert!(!waiter.is_finished());
    leader.abort();
    assert_eq!(waiter.await.unwrap(), 2);
    assert_eq!(cache.get(&1), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_loader_does_not_leave_waiters_hanging() {
    let cache = cache();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_with(1, async {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    panic!("loader bug");
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    let waiters: Vec<_> = (0..5)
        .map(|i| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get_with(1, async move { 10 + i }).await })
        })
        .collect();
    assert!(leader.await.unwrap_err().is_panic());
    let values: Vec<u64> = futures::future::join_all(waiters)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // One waiter became the next leader; everyone got its value.
    assert!(values.iter().all(|v| *v == values[0]), "{values:?}");
    assert_eq!(cache.get(&1), Some(values[0]));
}

#[tokio::test(start_paused = true)]
async fn a_write_during_a_load_is_not_overwritten_by_the_loaded_value() {
    let cache = cache();
    let loading = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_with(1, async {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    100 // read before the write below
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    cache.insert(1, 200);
    assert_eq!(loading.await.unwrap(), 100);
    assert_eq!(cache.get(&1), Some(200));
}

fn counting_loader(
    calls: &Arc<AtomicU64>,
    fail: &Arc<std::sync::atomic::AtomicBool>,
    delay: Duration,
) -> impl Fn(
    u64,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, &'static str>> + Send>>
+ Send
+ Sync
+ 'static {
    let (calls, fail) = (Arc::clone(calls), Arc::clone(fail));
    move |key| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let fail = fail.load(Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if fail {
                Err("source down")
            } else {
                Ok(key * 1_000 + n)
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn refresh_ahead_serves_the_old_value_while_reloading_once_in_the_background() {
    let calls = Arc::new(AtomicU64::new(0));
    let fail = Arc::default();
    let cache = Cache::builder()
        .max_capacity(10)
        .time_to_live(Duration::from_secs(60))
        .clock(TokioClock::shared())
        .loading()
        .refresh_after(Duration::from_secs(30))
        .build(counting_loader(&calls, &fail, Duration::from_millis(100)))
        .unwrap();
    assert_eq!(cache.get(1).await.unwrap(), 1_001);
    tokio::time::advance(Duration::from_secs(30)).await;
    // Old enough: served at once, and one refresh starts however many read.
    for _ in 0..5 {
        assert_eq!(cache.get(1).await.unwrap(), 1_001);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(cache.get(1).await.unwrap(), 1_002);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_the_expired_value_until_the_maximum_staleness() {
    let calls = Arc::new(AtomicU64::new(0));
    let fail: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    let cache = Cache::builder()
        .max_capacity(10)
        .time_to_live(Duration::from_secs(60))
        .clock(TokioClock::shared())
        .loading()
        .stale_if_error(Duration::from_secs(120))
        .build(counting_loader(&calls, &fail, Duration::from_millis(10)))
        .unwrap();
    assert_eq!(cache.get(1).await.unwrap(), 1_001);
    fail.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(
        cache.get(1).await.unwrap(),
        1_001,
        "stale value served on error"
    );
    assert_eq!(cache.cache().stats().stale_hits, 1);
    tokio::time::advance(Duration::from_secs(120)).await; // 181 s: past 60 + 120
    let error = cache.get(1).await.unwrap_err();
    assert_eq!(error.loader_error(), Some(&"source down"));
    fail.store(false, Ordering::SeqCst);
    assert_eq!(cache.get(1).await.unwrap(), 1_004);
}

#[tokio::test(start_paused = true)]
async fn soft_timeout_returns_the_stale_value_and_hard_timeout_abandons_the_load() {
    let calls = Arc::new(AtomicU64::new(0));
    let fail = Arc::default();
    let cache = Cache::builder()
        .max_capacity(10)
        .time_to_live(Duration::from_secs(60))
        .clock(TokioClock::shared())
        .loading()
        .stale_if_error(Duration::from_secs(600))
        .soft_timeout(Duration::from_millis(50))
        .hard_timeout(Duration::from_secs(1))
        .build(counting_loader(&calls, &fail, Duration::from_millis(200)))
        .unwrap();
    assert_eq!(cache.get(1).await.unwrap(), 1_001);
    tokio::time::advance(Duration::from_secs(61)).await;
    let started = tokio::time::Instant::now();
    assert_eq!(
        cache.get(1).await.unwrap(),
        1_001,
        "stale after the soft timeout"
    );
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    // The load went on in the background and filled the cache.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cache.get(1).await.unwrap(), 1_002);

    // With no stale value, a load slower than the hard timeout fails with Timeout.
    let slow = Cache::builder()
        .max_capacity(10)
        .clock(TokioClock::shared())
        .loading()
        .hard_timeout(Duration::from_secs(1))
        .build(counting_loader(&calls, &fail, Duration::from_secs(5)))
        .unwrap();
    let started = tokio::time::Instant::now();
    assert!(matches!(slow.get(2).await, Err(LoadError::Timeout(d)) if d == Duration::from_secs(1)));
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(slow.cache().stats().load_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn a_loading_cache_caller_that_gives_up_does_not_stop_the_load() {
    let calls = Arc::new(AtomicU64::new(0));
    let fail = Arc::default();
    let cache = Cache::builder()
        .max_capacity(10)
        .loading()
        .build(counting_loader(&calls, &fail, Duration::from_millis(100)))
        .unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(10), cache.get(3)).await;
    assert!(gave_up.is_err());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(cache.cache().get(&3), Some(3_001));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn an_invalidation_during_a_load_keeps_the_loaded_value_out_of_the_cache() {
    let cache = cache();
    for invalidate_all in [false, true] {
        let loading = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_with(1, async {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        100 // read before the invalidation below
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        if invalidate_all {
            cache.invalidate_all();
        } else {
            cache.invalidate(&1); // the key has no value yet
        }
        assert_eq!(loading.await.unwrap(), 100, "the waiters still get it");
        assert_eq!(cache.get(&1), None, "but it is not stored");
    }
}

#[tokio::test(start_paused = true)]
async fn a_caller_arriving_after_an_invalidation_does_not_join_the_older_load() {
    let cache = cache();
    let old = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_with(1, async {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    100
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1)).await;
    cache.invalidate(&1); // the source changed to 200
    assert_eq!(cache.get_with(1, async { 200 }).await, 200);
    assert_eq!(old.await.unwrap(), 100);
    assert_eq!(cache.get(&1), Some(200));
}

#[tokio::test(start_paused = true)]
async fn negative_caching_still_serves_a_stale_value_under_stale_if_error() {
    let calls = Arc::new(AtomicU64::new(0));
    let fail: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    let cache = Cache::builder()
        .max_capacity(10)
        .time_to_live(Duration::from_secs(60))
        .negative_ttl(Duration::from_secs(30))
        .clock(TokioClock::shared())
        .loading()
        .stale_if_error(Duration::from_secs(120))
        .build(counting_loader(&calls, &fail, Duration::from_millis(10)))
        .unwrap();
    assert_eq!(cache.get(1).await.unwrap(), 1_001);
    fail.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(cache.get(1).await.unwrap(), 1_001); // the load fails: stale
    assert_eq!(cache.get(1).await.unwrap(), 1_001); // the error is cached: still stale
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the cached error spared the source"
    );
    assert_eq!(cache.cache().stats().stale_hits, 2);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_refresh_is_counted_and_can_be_tried_again() {
    let calls = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&calls);
    let cache = Cache::builder()
        .max_capacity(10)
        .time_to_live(Duration::from_secs(60))
        .clock(TokioClock::shared())
        .loading()
        .refresh_after(Duration::from_secs(30))
        .build(move |key: u64| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                assert!(n != 2, "the loader panics on its second call");
                Ok::<_, &str>(key + n)
            }
        })
        .unwrap();
    assert_eq!(cache.get(1).await.unwrap(), 2);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(cache.get(1).await.unwrap(), 2); // starts the refresh, which panics
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(cache.cache().stats().load_failures, 1);
    assert_eq!(cache.get(1).await.unwrap(), 2); // claims the refresh again
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(cache.get(1).await.unwrap(), 4);
}

#[test]
fn invalid_loading_settings_fail_in_build_and_name_the_field() {
    let loader = |k: u64| async move { Ok::<u64, String>(k) };
    let loading_field = |built: Result<
        palisade_cache::LoadingCache<u64, u64, _>,
        palisade_cache::ConfigError,
    >| { built.map(|_| ()).unwrap_err().field() };
    assert_eq!(
        loading_field(
            Cache::builder()
                .max_capacity(1)
                .time_to_live(Duration::from_secs(10))
                .loading()
                .refresh_after(Duration::from_secs(10))
                .build(loader)
        ),
        "refresh_after"
    );
    assert_eq!(
        loading_field(
            Cache::builder()
                .max_capacity(1)
                .loading()
                .soft_timeout(Duration::from_secs(2))
                .hard_timeout(Duration::from_secs(1))
                .build(loader)
        ),
        "soft_timeout"
    );
    assert_eq!(
        loading_field(
            Cache::builder()
                .max_capacity(1)
                .loading()
                .hard_timeout(Duration::ZERO)
                .build(loader)
        ),
        "hard_timeout"
    );
}

/// An insert and a load that starts while the insert is under way: the load
/// read the source before the insert's value existed, so its value must not
/// replace the inserted one. The load is started at the one moment the
/// insert gives away, from inside its `Expiry` callback (which runs after the
/// insert has begun and before it writes), and finishes after the insert.
#[test]
fn a_load_started_during_an_insert_does_not_overwrite_it() {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Mutex, mpsc};

    struct StartLoadDuringInsert {
        once: AtomicBool,
        start: mpsc::SyncSender<()>,
        loading: Mutex<mpsc::Receiver<()>>,
    }
    impl palisade_cache::Expiry<u64, &'static str> for StartLoadDuringInsert {
        fn expire_after_create(&self, _: &u64, value: &&'static str) -> Option<Duration> {
            if *value == "inserted" && !self.once.swap(true, Ordering::SeqCst) {
                self.start.send(()).unwrap();
                // The load has joined its flight and is inside its loader.
                self.loading.lock().unwrap().recv().unwrap();
            }
            None
        }
        fn expire_after_update(
            &self,
            _: &u64,
            _: &&'static str,
            left: Option<Duration>,
        ) -> Option<Duration> {
            left
        }
    }

    let (start, started) = mpsc::sync_channel(1);
    let (in_loader, loading) = mpsc::sync_channel(1);
    let (release, released) = mpsc::sync_channel::<()>(1);
    let cache: Cache<u64, &'static str> = Cache::builder()
        .max_capacity(10)
        .expiry(StartLoadDuringInsert {
            once: AtomicBool::new(false),
            start,
            loading: Mutex::new(loading),
        })
        .build()
        .unwrap();
    let loader = {
        let cache = cache.clone();
        std::thread::spawn(move || {
            started.recv().unwrap();
            futures::executor::block_on(cache.get_with(7, async move {
                in_loader.send(()).unwrap();
                released.recv().unwrap();
                "loaded before the insert"
            }))
        })
    };
    cache.insert(7, "inserted");
    release.send(()).unwrap();
    let got = loader.join().unwrap();
    assert_eq!(
        got, "loaded before the insert",
        "its own caller gets what it loaded"
    );
    assert_eq!(cache.get(&7), Some("inserted"), "the insert's value stays");
}

/// A loader's error is the load error's source, itself: a downcast reaches
/// it, and so does `Rejected::find` when the loader was refused by a pattern.
#[test]
fn the_loaders_own_error_is_the_source() {
    use palisade_core::{Pattern, Rejected};
    use std::error::Error as _;
    let refused = Rejected::new(Pattern::CircuitBreaker, "open", None);
    let error: LoadError<Rejected> = LoadError::Loader(Arc::new(refused));
    assert_eq!(
        error.source().and_then(|s| s.downcast_ref::<Rejected>()),
        Some(&refused)
    );
    assert_eq!(Rejected::find(&error), Some(&refused));
    assert_eq!(
        error.to_string(),
        "the loader failed: circuit breaker rejected the call (open)"
    );
}

/// A load superseded by an insert, whose value turns out heavier than the
/// whole cache: it stores nothing, and removes nothing either.
#[test]
fn a_superseded_load_too_heavy_to_store_leaves_the_insert_alone() {
    use std::sync::mpsc;
    let cache: Cache<u64, String> = Cache::builder()
        .max_capacity(10)
        .weigher(|_: &u64, v: &String| v.len() as u32)
        .build()
        .unwrap();
    let (in_loader, loading) = mpsc::sync_channel(1);
    let (release, released) = mpsc::sync_channel::<()>(1);
    let loader = {
        let cache = cache.clone();
        std::thread::spawn(move || {
            futures::executor::block_on(cache.get_with(7, async move {
                in_loader.send(()).unwrap();
                released.recv().unwrap();
                "x".repeat(100)
            }))
        })
    };
    loading.recv().unwrap();
    cache.insert(7, "small".to_string()); // supersedes the load
    release.send(()).unwrap();
    assert_eq!(
        loader.join().unwrap().len(),
        100,
        "its caller gets what it loaded"
    );
    assert_eq!(cache.get(&7).as_deref(), Some("small"));
}
