//! The `tracing` feature: permits, rejections and limit changes become events with the crate's target.
#![cfg(feature = "tracing")]

use palisade_bulkhead::Bulkhead;
use palisade_test_support::Collector;
use tracing::Level;

#[test]
fn events_are_traced_with_the_instance_name() {
    let collect = Collector::new();
    let bulkhead = Bulkhead::builder()
        .tracing()
        .name("ledger")
        .max_concurrent_calls(1)
        .build()
        .unwrap();
    collect.run(|| {
        let permit = bulkhead.try_acquire().unwrap();
        assert!(bulkhead.try_acquire().is_err());
        drop(permit);
        bulkhead.set_limit(2).unwrap();
    });
    let events = collect.events();
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.target.as_str(), e.level, e.fields.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "palisade_bulkhead",
                Level::TRACE,
                "message=permitted instance=ledger weight=1 waited=None"
            ),
            (
                "palisade_bulkhead",
                Level::DEBUG,
                "message=call rejected instance=ledger weight=1 reason=full waited=None"
            ),
            (
                "palisade_bulkhead",
                Level::TRACE,
                "message=released instance=ledger weight=1"
            ),
            (
                "palisade_bulkhead",
                Level::INFO,
                "message=bulkhead limit changed instance=ledger from=1 to=2"
            ),
        ]
    );
}
