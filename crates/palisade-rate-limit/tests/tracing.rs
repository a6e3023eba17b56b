//! The `tracing` feature: events with the crate's target and the instance name.
#![cfg(feature = "tracing")]

use palisade_rate_limit::{ManualClock, Quota, RateLimiter};
use palisade_test_support::Collector;
use tracing::Level;

#[test]
fn admissions_rejections_and_quota_changes_are_traced() {
    let collect = Collector::new();
    let limiter = RateLimiter::builder()
        .tracing()
        .name("search")
        .quota(Quota::per_second(1))
        .clock(ManualClock::new().shared())
        .build()
        .unwrap();
    collect.run(|| {
        limiter.check().unwrap();
        limiter.check().unwrap_err();
        limiter.set_quota(Quota::per_second(5)).unwrap();
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
                "palisade_rate_limit",
                Level::TRACE,
                "message=requests admitted instance=search permits=1 waited=None"
            ),
            (
                "palisade_rate_limit",
                Level::DEBUG,
                "message=requests rejected instance=search permits=1 reason=exhausted retry_after=1s"
            ),
            (
                "palisade_rate_limit",
                Level::INFO,
                "message=quota changed instance=search count=5 period=1s burst=5"
            ),
        ]
    );
}
