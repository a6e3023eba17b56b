//! The direct limiter on a manual clock: bursts, spacing, counts, waiting in
//! order, cancellation, quota changes, events and bad configuration.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::noop_waker;
use palisade_rate_limit::{
    EXHAUSTED, Error, Event, ManualClock, Pattern, Quota, RateLimiter, Rejected,
};

const MS: Duration = Duration::from_millis(1);

fn limiter(clock: &ManualClock, quota: Quota) -> RateLimiter {
    RateLimiter::builder()
        .quota(quota)
        .clock(clock.shared())
        .sleeper(clock.sleeper())
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap()
}

fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    let waker = noop_waker();
    f.poll(&mut Context::from_waker(&waker))
}

#[test]
fn a_burst_then_one_per_interval_with_exact_retry_after() {
    let clock = ManualClock::new();
    let l = limiter(&clock, Quota::per_second(4).burst(3));
    for left in [2, 1, 0] {
        assert_eq!(l.check().unwrap().remaining(), left);
    }
    let denied = l.check().unwrap_err();
    assert_eq!(denied.retry_after(), 250 * MS);
    let r = denied.rejected();
    assert_eq!((r.pattern(), r.reason()), (Pattern::RateLimit, EXHAUSTED));
    assert_eq!(r.retry_after(), Some(250 * MS));
    assert_eq!(denied.decision().remaining(), 0);
    assert_eq!(denied.decision().reset(), 750 * MS);
    assert_eq!(
        denied.headers(),
        [
            ("RateLimit-Limit", 3),
            ("RateLimit-Remaining", 0),
            ("RateLimit-Reset", 1),
            ("Retry-After", 1)
        ]
    );
    clock.advance(249 * MS);
    assert_eq!(l.check().unwrap_err().retry_after(), MS);
    clock.advance(MS);
    assert!(l.check().is_ok());
    assert!(l.check().is_err());
    // Quiet for longer than a whole burst: the burst is back, not more.
    clock.advance(Duration::from_secs(10));
    assert_eq!(l.snapshot().remaining(), 3);
    for _ in 0..3 {
        l.check().unwrap();
    }
    assert!(l.check().is_err());
}

#[test]
fn check_n_takes_all_or_nothing_and_over_the_burst_is_an_error() {
    let clock = ManualClock::new();
    let l = limiter(&clock, Quota::per_second(10));
    assert_eq!(l.check_n(7).unwrap().remaining(), 3);
    let err = l.check_n(4).unwrap_err();
    assert_eq!(err.denied().unwrap().retry_after(), 100 * MS);
    // Nothing was taken by the refusal.
    assert_eq!(l.check_n(3).unwrap().remaining(), 0);
    assert_eq!(
        l.check_n(11).unwrap_err(),
        Error::InsufficientCapacity {
            requested: 11,
            burst: 10
        }
    );
    // Zero is admitted and takes nothing, even when the limit is spent.
    assert_eq!(l.check_n(0).unwrap().remaining(), 0);
    clock.advance(Duration::from_secs(1));
    assert_eq!(l.check_n(10).unwrap().remaining(), 0);
}

#[test]
fn bad_configuration_names_the_builder_method() {
    let err = RateLimiter::builder().build().unwrap_err();
    assert_eq!((err.field(), err.reason()), ("quota", "must be set"));
    for q in [
        Quota::per_second(0),
        Quota::new(5, Duration::ZERO),
        Quota::per_minute(5).burst(0),
    ] {
        let err = RateLimiter::builder().quota(q).build().unwrap_err();
        assert_eq!(err.field(), "quota");
    }
    let err = RateLimiter::builder()
        .quota(Quota::per_second(1))
        .name("")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "name");
    let l = RateLimiter::builder()
        .quota(Quota::per_second(1))
        .build()
        .unwrap();
    let err = l.set_quota(Quota::per_hour(0)).unwrap_err();
    assert_eq!(err.field(), "set_quota");
    assert_eq!(l.quota(), Quota::per_second(1));
}

#[test]
fn a_new_quota_applies_after_what_is_owed() {
    let clock = ManualClock::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let l = RateLimiter::builder()
        .quota(Quota::per_second(2))
        .clock(clock.shared())
        .listener(move |e: &Event| {
            if let Event::QuotaChanged { quota } = e {
                seen.lock().unwrap().push(*quota);
            }
        })
        .build()
        .unwrap();
    l.check_n(2).unwrap(); // owes 1 s
    l.set_quota(Quota::per_second(10)).unwrap();
    assert_eq!(l.quota(), Quota::per_second(10));
    // The TAT is 1 s ahead; the new burst of 10 × 100 ms tolerates that,
    // leaving room for exactly 0 more now: 1 s ahead of a 1 s tolerance.
    assert_eq!(l.check().unwrap_err().retry_after(), 100 * MS);
    clock.advance(500 * MS);
    // 500 ms ahead: 5 of the 10 cells are free.
    assert_eq!(l.snapshot().remaining(), 5);
    assert_eq!(l.check_n(5).unwrap().remaining(), 0);
    assert_eq!(l.snapshot().limit(), 10);
    assert_eq!(*events.lock().unwrap(), [Quota::per_second(10)]);
}

#[tokio::test(flavor = "current_thread")]
async fn waiters_are_served_first_come_first_served_at_their_slot() {
    let clock = ManualClock::new();
    let l = limiter(&clock, Quota::per_second(10).burst(1));
    l.check().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (l, order, clock) = (l.clone(), Arc::clone(&order), clock.clone());
        tasks.push(tokio::spawn(async move {
            let d = l.acquire().await.unwrap();
            order.lock().unwrap().push((
                i,
                palisade_rate_limit::Clock::now_nanos(&clock),
                d.reset(),
            ));
        }));
        tokio::task::yield_now().await;
    }
    // A check after them does not overtake them: it is due after the third.
    assert_eq!(l.check().unwrap_err().retry_after(), 400 * MS);
    for _ in 0..3 {
        clock.advance(100 * MS);
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        *order.lock().unwrap(),
        [
            (0, 100_000_000, 100 * MS),
            (1, 200_000_000, 100 * MS),
            (2, 300_000_000, 100 * MS)
        ]
    );
}

#[test]
fn a_wait_longer_than_max_wait_is_refused_without_taking_a_place() {
    let clock = ManualClock::new();
    let l = RateLimiter::builder()
        .quota(Quota::per_second(1))
        .clock(clock.shared())
        .sleeper(clock.sleeper())
        .max_wait(1500 * MS)
        .build()
        .unwrap();
    l.check().unwrap();
    let mut first = pin!(l.acquire());
    assert!(poll_once(first.as_mut()).is_pending()); // due at 1 s
    let mut second = pin!(l.acquire());
    let err = match poll_once(second.as_mut()) {
        Poll::Ready(Err(e)) => e,
        other => panic!("{other:?}"),
    };
    // It would have been due at 2 s: over the 1.5 s maximum.
    assert_eq!(err.denied().unwrap().retry_after(), Duration::from_secs(2));
    clock.advance(Duration::from_secs(1));
    assert!(matches!(poll_once(first.as_mut()), Poll::Ready(Ok(_))));
    clock.advance(Duration::from_secs(1));
    assert!(l.check().is_ok(), "the refused waiter took nothing");
}

#[test]
fn a_canceled_wait_gives_its_slot_back_only_when_last_in_line() {
    let clock = ManualClock::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let l = RateLimiter::builder()
        .quota(Quota::per_second(1))
        .clock(clock.shared())
        .sleeper(clock.sleeper())
        .listener(move |e: &Event| {
            if let Event::Canceled {
                returned, waited, ..
            } = e
            {
                seen.lock().unwrap().push((*returned, *waited));
            }
        })
        .build()
        .unwrap();
    l.check().unwrap();
    {
        let mut a = Box::pin(l.acquire()); // slot at 1 s
        assert!(poll_once(a.as_mut()).is_pending());
        let mut b = Box::pin(l.acquire()); // slot at 2 s
        assert!(poll_once(b.as_mut()).is_pending());
        clock.advance(100 * MS);
        drop(a); // someone is behind it: its slot is lost
        drop(b); // last in line: its slot goes back
    }
    assert_eq!(
        *events.lock().unwrap(),
        [(false, 100 * MS), (true, 100 * MS)]
    );
    // a's slot (due at 1 s) is still taken: the next is due at 2 s.
    assert_eq!(l.check().unwrap_err().retry_after(), 1900 * MS);
}

/// With the `tokio` feature tokio's timer is the default sleeper.
#[cfg(not(feature = "tokio"))]
#[test]
fn without_a_sleeper_a_wait_is_an_error_and_takes_nothing() {
    let clock = ManualClock::new();
    let l = RateLimiter::builder()
        .quota(Quota::per_second(1))
        .clock(clock.shared())
        .build()
        .unwrap();
    l.check().unwrap();
    let mut f = pin!(l.acquire());
    assert!(matches!(
        poll_once(f.as_mut()),
        Poll::Ready(Err(Error::NoSleeper))
    ));
    clock.advance(Duration::from_secs(1));
    assert!(l.check().is_ok());
}

#[test]
fn events_say_what_happened() {
    let clock = ManualClock::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let l = RateLimiter::builder()
        .quota(Quota::per_second(1))
        .clock(clock.shared())
        .sleeper(clock.sleeper())
        .listener(move |e: &Event| seen.lock().unwrap().push(*e))
        .build()
        .unwrap();
    l.check().unwrap();
    l.check().unwrap_err();
    let mut f = pin!(l.acquire());
    assert!(poll_once(f.as_mut()).is_pending());
    clock.advance(Duration::from_secs(1));
    assert!(matches!(poll_once(f.as_mut()), Poll::Ready(Ok(_))));
    assert_eq!(
        *events.lock().unwrap(),
        [
            Event::Acquired {
                permits: 1,
                waited: None
            },
            Event::Rejected {
                permits: 1,
                reason: EXHAUSTED,
                retry_after: Duration::from_secs(1)
            },
            Event::Acquired {
                permits: 1,
                waited: Some(Duration::from_secs(1))
            },
        ]
    );
}

#[test]
fn a_rejection_is_found_through_error_chains() {
    let clock = ManualClock::new();
    let l = limiter(&clock, Quota::per_second(1));
    l.check().unwrap();
    let err: Box<dyn std::error::Error + Send + Sync> = Box::new(l.check_n(1).unwrap_err());
    let r = Rejected::find(&*err).unwrap();
    assert_eq!(r.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(
        err.to_string(),
        "rate limit rejected the call (exhausted); retry after 1s"
    );
}
