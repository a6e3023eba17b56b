//! The `tracing` feature: transitions and rejections become events with the crate's target.
#![cfg(feature = "tracing")]

use palisade_circuit_breaker::{CircuitBreaker, SlidingWindow, State};
use palisade_test_support::Collector;
use tracing::Level;

#[test]
fn transitions_and_rejections_are_traced_with_the_instance_name() {
    let collect = Collector::new();
    let breaker = CircuitBreaker::builder()
        .tracing()
        .name("ledger")
        .sliding_window(SlidingWindow::count(1))
        .minimum_calls(1)
        .build()
        .unwrap();
    collect.run(|| {
        breaker.try_acquire().unwrap().failure();
        assert!(breaker.try_acquire().is_err());
    });
    assert_eq!(breaker.state(), State::Open);
    let events = collect.events();
    let seen: Vec<_> = events
        .iter()
        .map(|e| (e.target.as_str(), e.level, e.fields.as_str()))
        .collect();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert!(seen.iter().all(|e| e.0 == "palisade_circuit_breaker"));
    assert_eq!(seen[0].1, Level::TRACE);
    assert!(seen[0].2.contains("outcome=Failure"), "{}", seen[0].2);
    assert_eq!(
        seen[1],
        (
            "palisade_circuit_breaker",
            Level::INFO,
            "message=circuit breaker state changed instance=ledger from=closed to=open"
        )
    );
    assert_eq!(seen[2].1, Level::DEBUG);
    assert!(
        seen[2]
            .2
            .starts_with("message=call rejected instance=ledger state=open retry_after=Some("),
        "{}",
        seen[2].2
    );
}
