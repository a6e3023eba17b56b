//! Client-side adaptive throttling: the formula, the window, and the load a
//! client sends to a backend that can take only 30 % of what it is offered.

use std::time::Duration;

use palisade_bulkhead::throttle::{AdaptiveThrottle, THROTTLED};
use palisade_bulkhead::{CallError, ManualClock, Pattern};

fn throttle(k: f64, clock: &ManualClock) -> AdaptiveThrottle {
    AdaptiveThrottle::builder()
        .k(k)
        .clock(clock.shared())
        .seed(42)
        .build()
        .unwrap()
}

#[test]
fn nothing_is_refused_while_the_backend_accepts_everything() {
    let clock = ManualClock::new();
    let t = throttle(1.0, &clock);
    for _ in 0..10_000 {
        t.try_acquire().expect("never refused").accepted();
        clock.advance(Duration::from_millis(1));
    }
    assert!(
        t.probability() == 0.0,
        "exactly zero: requests never exceed K × accepts"
    );
}

#[test]
fn the_probability_follows_the_formula_and_the_window_forgets() {
    let clock = ManualClock::new();
    let t = AdaptiveThrottle::builder()
        .k(2.0)
        .window(Duration::from_secs(10))
        .buckets(10)
        .clock(clock.shared())
        .seed(1)
        .build()
        .unwrap();
    // Four accepted, at t = 0.
    for _ in 0..4 {
        t.try_acquire().unwrap().accepted();
    }
    // Eight refused by the backend, at t = 5 s: requests 12, accepts 4.
    clock.advance(Duration::from_secs(5));
    for _ in 0..8 {
        if let Ok(permit) = t.try_acquire() {
            drop(permit); // not accepted
        }
    }
    let counts = t.counts();
    assert_eq!((counts.requests, counts.accepts), (12, 4));
    assert!((t.probability() - (12.0 - 8.0) / 13.0).abs() < 1e-12);
    // At t = 10 s the first bucket (t = 0) has left the window: requests 8, accepts 0.
    clock.advance(Duration::from_secs(5));
    let counts = t.counts();
    assert_eq!((counts.requests, counts.accepts), (8, 0));
    assert!((t.probability() - 8.0 / 9.0).abs() < 1e-12);
    // At t = 15 s nothing is left.
    clock.advance(Duration::from_secs(5));
    assert_eq!(t.counts().requests, 0);
    assert!(t.probability() == 0.0, "exactly zero with an empty window");
}

#[test]
fn a_local_refusal_is_a_bulkhead_rejection_and_counts_as_a_request() {
    let clock = ManualClock::new();
    let t = throttle(1.0, &clock);
    // The backend refuses everything: p climbs towards 1.
    let mut refused = 0;
    for _ in 0..1000 {
        match t.try_acquire() {
            Ok(permit) => drop(permit),
            Err(r) => {
                assert_eq!((r.pattern(), r.reason()), (Pattern::Throttle, THROTTLED));
                refused += 1;
            }
        }
    }
    assert_eq!(t.counts().requests, 1000);
    assert!(refused > 950, "{refused}");
}

#[tokio::test]
async fn call_counts_ok_as_accepted_and_err_as_refused_by_the_backend() {
    let clock = ManualClock::new();
    let t = throttle(2.0, &clock);
    t.call(|| async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap();
    let err = t
        .call(|| async { Err::<(), _>(std::io::Error::other("503")) })
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Inner(_)));
    let counts = t.counts();
    assert_eq!((counts.requests, counts.accepts), (2, 1));
}

#[test]
fn bad_settings_name_the_builder_method() {
    let field =
        |b: palisade_bulkhead::throttle::AdaptiveThrottleBuilder| b.build().unwrap_err().field();
    assert_eq!(field(AdaptiveThrottle::builder().k(0.5)), "k");
    assert_eq!(field(AdaptiveThrottle::builder().k(f64::NAN)), "k");
    assert_eq!(
        field(AdaptiveThrottle::builder().window(Duration::ZERO)),
        "window"
    );
    assert_eq!(field(AdaptiveThrottle::builder().buckets(0)), "buckets");
    assert_eq!(
        field(
            AdaptiveThrottle::builder()
                .window(Duration::from_nanos(5))
                .buckets(10)
        ),
        "buckets"
    );
}

/// Offers one request a millisecond for 10 minutes to a backend that can
/// accept 300 a second (30 % of the offer; a token bucket of 0.3 a
/// millisecond holding up to 100, so the random gaps in what the client sends
/// cost it no capacity) and refuses the rest; returns the share of the offer
/// the client sent over the last 2 minutes.
fn sent_share(k: f64) -> f64 {
    let clock = ManualClock::new();
    let t = throttle(k, &clock);
    let mut credit = 0.0_f64; // the backend's capacity not yet used, in requests
    let (mut offered, mut sent) = (0u64, 0u64);
    for ms in 0..600_000u64 {
        credit = (credit + 0.3).min(100.0);
        let measured = ms >= 480_000;
        offered += u64::from(measured);
        if let Ok(permit) = t.try_acquire() {
            sent += u64::from(measured);
            if credit >= 1.0 {
                credit -= 1.0;
                permit.accepted();
            }
        }
        clock.advance(Duration::from_millis(1));
    }
    sent as f64 / offered as f64
}

#[test]
fn against_a_backend_that_takes_30_percent_the_client_sends_k_times_that() {
    // requests = K × accepts, accepts = 0.3 × offered: sent = K × 0.3 × offered.
    for (k, expected) in [(2.0, 0.6), (1.5, 0.45), (1.1, 0.33)] {
        let share = sent_share(k);
        println!("K = {k}: sent {share:.3} of the offer (formula: {expected})");
        assert!(
            (share - expected).abs() < 0.02,
            "K = {k}: sent {share}, expected {expected}"
        );
    }
}
