//! The `tracing` feature: lookups, loads and removals become events with the crate's target.
#![cfg(feature = "tracing")]

use palisade_cache::Cache;
use palisade_test_support::Collector;
use tracing::Level;

#[test]
fn lookups_loads_and_removals_are_traced_with_the_instance_name() {
    let collect = Collector::new();
    let cache: Cache<u64, u64> = Cache::builder()
        .name("sessions")
        .max_capacity(4)
        .tracing()
        .build()
        .unwrap();
    let silent: Cache<u64, u64> = Cache::builder().max_capacity(4).build().unwrap();
    collect.run(|| {
        assert_eq!(cache.get(&1), None);
        cache.insert(1, 10);
        assert_eq!(cache.get(&1), Some(10));
        cache.invalidate(&1);
        cache.run_pending_tasks(); // reports the buffered hit
        let _ = silent.get(&1); // built without `.tracing()`: says nothing
        silent.run_pending_tasks();
    });
    let seen: Vec<_> = collect
        .events()
        .into_iter()
        .map(|e| (e.target, e.level, e.fields))
        .collect();
    let event = |level, fields: &str| ("palisade_cache".to_owned(), level, fields.to_owned());
    assert_eq!(
        seen,
        [
            event(
                Level::TRACE,
                "message=lookups instance=sessions hits=0 misses=1 stale=0"
            ),
            event(
                Level::TRACE,
                "message=sizes instance=sessions entries=1 weighted_size=1"
            ),
            event(
                Level::TRACE,
                "message=entries removed instance=sessions cause=explicit count=1"
            ),
            event(
                Level::TRACE,
                "message=sizes instance=sessions entries=0 weighted_size=0"
            ),
            event(
                Level::TRACE,
                "message=lookups instance=sessions hits=1 misses=0 stale=0"
            ),
            event(
                Level::TRACE,
                "message=sizes instance=sessions entries=0 weighted_size=0"
            ),
        ]
    );
}
