//! The rules of a bulkhead, one at a time, on a manual clock.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::FutureExt;
use palisade_bulkhead::{Bulkhead, CallError, Event, ManualClock, Pattern, QueueOrder, Reason};

fn waiting(limit: u32, order: QueueOrder, clock: &ManualClock) -> Bulkhead {
    Bulkhead::builder()
        .max_concurrent_calls(limit)
        .max_wait(Duration::from_secs(1))
        .max_waiting(3)
        .queue_order(order)
        .sleeper(clock.sleeper())
        .clock(clock.shared())
        .build()
        .unwrap()
}

fn poll<F: std::future::Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    f.poll_unpin(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn a_full_bulkhead_without_max_wait_rejects_at_once() {
    let bulkhead = Bulkhead::builder().max_concurrent_calls(2).build().unwrap();
    let a = bulkhead.try_acquire().unwrap();
    let b = bulkhead.try_acquire().unwrap();
    let err = bulkhead.try_acquire().unwrap_err();
    assert_eq!(err.pattern(), Pattern::Bulkhead);
    assert_eq!(err.reason(), "full");
    assert_eq!(err.retry_after(), None);
    // acquire() does not wait either.
    let mut third = Box::pin(bulkhead.acquire());
    let Poll::Ready(Err(err)) = poll(&mut third) else {
        panic!("rejected at once")
    };
    assert_eq!(Reason::of(&err), Some(Reason::Full));
    assert_eq!(bulkhead.snapshot().in_flight, 2);
    assert_eq!(bulkhead.snapshot().waiting, 0);
    drop((a, b));
    assert_eq!(bulkhead.snapshot().in_flight, 0);
    assert_eq!(bulkhead.snapshot().available(), 2);
}

#[test]
fn the_retry_after_hint_is_on_every_rejection() {
    let bulkhead = Bulkhead::builder()
        .max_concurrent_calls(1)
        .retry_after(Duration::from_millis(40))
        .build()
        .unwrap();
    let _held = bulkhead.try_acquire().unwrap();
    let err = bulkhead.try_acquire().unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_millis(40)));
    assert_eq!(
        err.to_string(),
        "bulkhead rejected the call (full); retry after 40ms"
    );
}

#[test]
fn fifo_serves_the_longest_waiting_first() {
    let clock = ManualClock::new();
    let bulkhead = waiting(1, QueueOrder::Fifo, &clock);
    let held = bulkhead.try_acquire().unwrap();
    let mut waiters: Vec<_> = (0..3)
        .map(|label| (label, Box::pin(bulkhead.acquire())))
        .collect();
    for (_, w) in &mut waiters {
        assert!(poll(w).is_pending());
    }
    assert_eq!(bulkhead.snapshot().waiting, 3);
    // Nobody jumps the queue.
    assert!(bulkhead.try_acquire().is_err());
    drop(held);
    let mut order = Vec::new();
    for _ in 0..3 {
        // Polled newest first, so a wrong order would show.
        let (at, permit) = waiters
            .iter_mut()
            .enumerate()
            .rev()
            .find_map(|(at, (_, w))| match poll(w) {
                Poll::Ready(Ok(p)) => Some((at, p)),
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => None,
            })
            .expect("one is granted");
        assert_eq!(bulkhead.snapshot().in_flight, 1);
        drop(permit);
        let (label, done) = waiters.remove(at);
        drop(done);
        order.push(label);
    }
    assert_eq!(order, [0, 1, 2]);
    assert_eq!(bulkhead.snapshot().waiting, 0);
    assert_eq!(bulkhead.snapshot().in_flight, 0);
    assert!(bulkhead.try_acquire().is_ok(), "the queued bit was cleared");
}

#[test]
fn lifo_serves_the_newest_first() {
    let clock = ManualClock::new();
    let bulkhead = waiting(1, QueueOrder::Lifo, &clock);
    let held = bulkhead.try_acquire().unwrap();
    let mut w0 = Box::pin(bulkhead.acquire());
    let mut w1 = Box::pin(bulkhead.acquire());
    let mut w2 = Box::pin(bulkhead.acquire());
    for w in [&mut w0, &mut w1, &mut w2] {
        assert!(poll(w).is_pending());
    }
    drop(held);
    assert!(poll(&mut w0).is_pending());
    assert!(poll(&mut w1).is_pending());
    let Poll::Ready(Ok(p2)) = poll(&mut w2) else {
        panic!("the newest first")
    };
    drop(p2);
    assert!(poll(&mut w0).is_pending());
    let Poll::Ready(Ok(p1)) = poll(&mut w1) else {
        panic!("then the next newest")
    };
    drop(p1);
    assert!(matches!(poll(&mut w0), Poll::Ready(Ok(_))));
}

#[test]
fn a_waiter_times_out_after_max_wait_and_the_queue_is_bounded() {
    let clock = ManualClock::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let bulkhead = Bulkhead::builder()
        .max_concurrent_calls(1)
        .max_wait(Duration::from_secs(1))
        .max_waiting(2)
        .sleeper(clock.sleeper())
        .clock(clock.shared())
        .listener(move |e: &Event| seen.lock().unwrap().push(*e))
        .build()
        .unwrap();
    let _held = bulkhead.try_acquire().unwrap();
    let mut a = Box::pin(bulkhead.acquire());
    assert!(poll(&mut a).is_pending());
    clock.advance(Duration::from_millis(400));
    let mut b = Box::pin(bulkhead.acquire());
    assert!(poll(&mut b).is_pending());
    // The queue holds two: a third is rejected at once.
    let mut c = Box::pin(bulkhead.acquire());
    let Poll::Ready(Err(full)) = poll(&mut c) else {
        panic!("queue full")
    };
    assert_eq!(Reason::of(&full), Some(Reason::Full));

    clock.advance(Duration::from_millis(599));
    assert!(poll(&mut a).is_pending(), "999 ms is not 1 s");
    clock.advance(Duration::from_millis(1));
    let Poll::Ready(Err(timed_out)) = poll(&mut a) else {
        panic!("timed out at 1 s")
    };
    assert_eq!(timed_out.reason(), "timed_out");
    assert_eq!(bulkhead.snapshot().waiting, 1);
    assert!(poll(&mut b).is_pending());
    clock.advance(Duration::from_millis(400));
    assert!(matches!(poll(&mut b), Poll::Ready(Err(_))));
    assert_eq!(bulkhead.snapshot().waiting, 0);
    assert_eq!(bulkhead.snapshot().in_flight, 1);

    let events = events.lock().unwrap();
    assert_eq!(
        *events,
        [
            Event::Permitted {
                weight: 1,
                waited: None
            },
            Event::Rejected {
                weight: 1,
                reason: Reason::Full,
                waited: None
            },
            Event::Rejected {
                weight: 1,
                reason: Reason::TimedOut,
                waited: Some(Duration::from_secs(1))
            },
            Event::Rejected {
                weight: 1,
                reason: Reason::TimedOut,
                waited: Some(Duration::from_secs(1))
            },
        ]
    );
}

#[test]
fn a_granted_waiter_reports_how_long_it_waited() {
    let clock = ManualClock::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let bulkhead = Bulkhead::builder()
        .max_concurrent_calls(1)
        .max_wait(Duration::from_secs(1))
        .sleeper(clock.sleeper())
        .clock(clock.shared())
        .listener(move |e: &Event| seen.lock().unwrap().push(*e))
        .build()
        .unwrap();
    let held = bulkhead.try_acquire().unwrap();
    let mut a = Box::pin(bulkhead.acquire());
    assert!(poll(&mut a).is_pending());
    clock.advance(Duration::from_millis(250));
    drop(held);
    let Poll::Ready(Ok(permit)) = poll(&mut a) else {
        panic!("granted")
    };
    drop(permit);
    assert_eq!(
        events.lock().unwrap()[1..],
        [
            Event::Released { weight: 1 },
            Event::Permitted {
                weight: 1,
                waited: Some(Duration::from_millis(250))
            },
            Event::Released { weight: 1 },
        ]
    );
}

#[test]
fn a_dropped_waiter_leaves_the_queue_and_strands_nothing() {
    let clock = ManualClock::new();
    let bulkhead = waiting(1, QueueOrder::Fifo, &clock);
    let held = bulkhead.try_acquire().unwrap();
    let mut a = Box::pin(bulkhead.acquire());
    let mut b = Box::pin(bulkhead.acquire());
    assert!(poll(&mut a).is_pending());
    assert!(poll(&mut b).is_pending());
    // a is dropped while queued: it leaves.
    drop(a);
    assert_eq!(bulkhead.snapshot().waiting, 1);
    // b is granted on the release but dropped before it sees it: the unit comes back.
    drop(held);
    assert_eq!(bulkhead.snapshot().in_flight, 1, "granted to b");
    drop(b);
    assert_eq!(bulkhead.snapshot().in_flight, 0);
    assert_eq!(bulkhead.snapshot().waiting, 0);
    assert!(bulkhead.try_acquire().is_ok());
}

#[test]
fn weighted_permits_hold_their_weight_and_a_heavy_head_is_not_starved() {
    let clock = ManualClock::new();
    let bulkhead = waiting(4, QueueOrder::Fifo, &clock);
    let three = bulkhead.try_acquire_many(3).unwrap();
    assert_eq!(three.weight(), 3);
    assert_eq!(bulkhead.snapshot().in_flight, 3);
    assert_eq!(bulkhead.try_acquire_many(2).unwrap_err().reason(), "full");
    assert_eq!(
        bulkhead.try_acquire_many(5).unwrap_err().reason(),
        "too_heavy"
    );
    let mut heavy = Box::pin(bulkhead.acquire_many(2));
    assert!(poll(&mut heavy).is_pending());
    // One unit is free, but the heavier waiter ahead keeps a light one out.
    let mut light = Box::pin(bulkhead.acquire());
    assert!(poll(&mut light).is_pending());
    drop(three);
    let Poll::Ready(Ok(h)) = poll(&mut heavy) else {
        panic!("the heavy head first")
    };
    let Poll::Ready(Ok(l)) = poll(&mut light) else {
        panic!("then the light one: 2 + 1 <= 4")
    };
    assert_eq!(bulkhead.snapshot().in_flight, 3);
    drop((h, l));
    // A zero weight takes nothing.
    let zero = bulkhead.try_acquire_many(0).unwrap();
    assert_eq!(bulkhead.snapshot().in_flight, 0);
    drop(zero);
    assert_eq!(bulkhead.snapshot().in_flight, 0);
}

#[test]
fn a_waiter_heavier_than_a_lowered_limit_is_refused_and_holds_nobody_back() {
    let clock = ManualClock::new();
    let bulkhead = waiting(4, QueueOrder::Fifo, &clock);
    let three = bulkhead.try_acquire_many(3).unwrap();
    let mut heavy = Box::pin(bulkhead.acquire_many(4));
    assert!(poll(&mut heavy).is_pending());
    let mut light = Box::pin(bulkhead.acquire());
    assert!(poll(&mut light).is_pending());
    bulkhead.set_limit(2).unwrap();
    drop(three);
    // The heavy head can never fit 2: refused at once, not after max_wait,
    // and the light one behind it gets its unit.
    match poll(&mut heavy) {
        Poll::Ready(Err(e)) => assert_eq!(e.reason(), "too_heavy"),
        other => panic!("{other:?}"),
    }
    let Poll::Ready(Ok(_permit)) = poll(&mut light) else {
        panic!("the light waiter is let in")
    };
    assert_eq!(bulkhead.snapshot().in_flight, 1);
    assert_eq!(bulkhead.snapshot().waiting, 0);
}

#[test]
fn a_lifo_queue_serves_newer_light_callers_before_a_heavy_one() {
    // As the guide says: the price of LIFO.
    let clock = ManualClock::new();
    let bulkhead = waiting(2, QueueOrder::Lifo, &clock);
    let one = bulkhead.try_acquire().unwrap();
    let mut heavy = Box::pin(bulkhead.acquire_many(2));
    assert!(poll(&mut heavy).is_pending());
    let mut light = Box::pin(bulkhead.acquire());
    assert!(
        matches!(poll(&mut light), Poll::Ready(Ok(_))),
        "the newest goes first"
    );
    assert!(poll(&mut heavy).is_pending());
    drop(one);
}

#[test]
fn a_heavy_waiter_timing_out_lets_the_light_ones_behind_it_in() {
    let clock = ManualClock::new();
    let bulkhead = waiting(2, QueueOrder::Fifo, &clock);
    let _one = bulkhead.try_acquire().unwrap();
    let mut heavy = Box::pin(bulkhead.acquire_many(2));
    assert!(poll(&mut heavy).is_pending());
    clock.advance(Duration::from_millis(500));
    let mut light = Box::pin(bulkhead.acquire());
    assert!(poll(&mut light).is_pending(), "behind the heavy head");
    clock.advance(Duration::from_millis(500));
    assert!(matches!(poll(&mut heavy), Poll::Ready(Err(_))));
    assert!(matches!(poll(&mut light), Poll::Ready(Ok(_))));
}

#[test]
fn set_limit_lets_waiters_in_or_holds_new_calls_back() {
    let clock = ManualClock::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let bulkhead = Bulkhead::builder()
        .max_concurrent_calls(1)
        .max_wait(Duration::from_secs(1))
        .sleeper(clock.sleeper())
        .listener(move |e: &Event| {
            if let Event::LimitChanged { .. } = e {
                seen.lock().unwrap().push(*e);
            }
        })
        .build()
        .unwrap();
    let a = bulkhead.try_acquire().unwrap();
    let mut b = Box::pin(bulkhead.acquire());
    let mut c = Box::pin(bulkhead.acquire());
    assert!(poll(&mut b).is_pending());
    assert!(poll(&mut c).is_pending());
    bulkhead.set_limit(3).unwrap();
    let (Poll::Ready(Ok(b)), Poll::Ready(Ok(c))) = (poll(&mut b), poll(&mut c)) else {
        panic!("both let in by the higher limit")
    };
    assert_eq!(bulkhead.snapshot().in_flight, 3);
    assert_eq!(bulkhead.snapshot().limit, 3);

    bulkhead.set_limit(1).unwrap();
    let snap = bulkhead.snapshot();
    assert_eq!((snap.in_flight, snap.limit, snap.available()), (3, 1, 0));
    drop(a);
    drop(b);
    assert!(bulkhead.try_acquire().is_err(), "one in flight, limit one");
    drop(c);
    assert!(bulkhead.try_acquire().is_ok());

    let err = bulkhead.set_limit(0).unwrap_err();
    assert_eq!(err.field(), "set_limit");
    assert_eq!(
        bulkhead.set_limit(1 << 31).unwrap_err().field(),
        "set_limit"
    );
    assert_eq!(bulkhead.snapshot().limit, 1, "unchanged by a bad limit");
    assert_eq!(
        *events.lock().unwrap(),
        [
            Event::LimitChanged { from: 1, to: 3 },
            Event::LimitChanged { from: 3, to: 1 }
        ]
    );
}

#[tokio::test]
async fn call_holds_a_permit_while_it_runs_and_passes_errors_through() {
    let bulkhead = Bulkhead::builder().max_concurrent_calls(1).build().unwrap();
    let inside = bulkhead
        .call(|| async {
            let snap = bulkhead.snapshot();
            let err = bulkhead.try_acquire().unwrap_err();
            Ok::<_, std::io::Error>((snap.in_flight, err.reason()))
        })
        .await
        .unwrap();
    assert_eq!(inside, (1, "full"));
    assert_eq!(bulkhead.snapshot().in_flight, 0);

    let err = bulkhead
        .call(|| async { Err::<(), _>(std::io::Error::other("refused")) })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "refused");
    assert!(err.rejected().is_none());

    // Another pattern's rejection returned by the call is found through the
    // bulkhead's error (it was not, in the bulkhead's own copy of CallError).
    let limited = palisade_bulkhead::Rejected::new(Pattern::RateLimit, "exhausted", None);
    let err = bulkhead
        .call(|| async { Err::<(), _>(limited) })
        .await
        .unwrap_err();
    assert!(err.rejected().is_none());
    assert_eq!(palisade_bulkhead::Rejected::find(&err), Some(&limited));

    let _held = bulkhead.try_acquire().unwrap();
    let err = bulkhead
        .call(|| async { Ok::<_, std::io::Error>(()) })
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::Rejected(r) if r.reason() == "full"));
}

#[tokio::test(start_paused = true)]
async fn the_tokio_sleeper_times_waits_under_paused_time() {
    let bulkhead = Bulkhead::builder()
        .max_concurrent_calls(1)
        .max_wait(Duration::from_millis(300))
        .sleeper(palisade_core::TokioSleeper::shared())
        .build()
        .unwrap();
    let _held = bulkhead.acquire_owned().await.unwrap();
    let start = tokio::time::Instant::now();
    let err = bulkhead.acquire().await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert_eq!(Reason::of(&err), Some(Reason::TimedOut));
}

/// With the `tokio` feature, tokio's timer is the default sleeper.
#[cfg(feature = "tokio")]
#[tokio::test(start_paused = true)]
async fn the_default_sleeper_is_tokios_with_the_tokio_feature() {
    let bulkhead = Bulkhead::builder()
        .max_concurrent_calls(1)
        .max_wait(Duration::from_millis(300))
        .build()
        .unwrap();
    let _held = bulkhead.try_acquire().unwrap();
    let start = tokio::time::Instant::now();
    assert!(bulkhead.acquire().await.is_err());
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}

/// Without it, `max_wait` needs a sleeper.
#[cfg(not(feature = "tokio"))]
#[test]
fn max_wait_without_a_sleeper_is_a_config_error() {
    let err = Bulkhead::builder()
        .max_wait(Duration::from_millis(300))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "sleeper");
}

#[test]
fn bad_configuration_names_the_builder_method() {
    let field = |b: palisade_bulkhead::BulkheadBuilder| b.build().unwrap_err().field();
    assert_eq!(
        field(Bulkhead::builder().max_concurrent_calls(0)),
        "max_concurrent_calls"
    );
    assert_eq!(
        field(Bulkhead::builder().max_concurrent_calls(u32::MAX)),
        "max_concurrent_calls"
    );
    assert_eq!(field(Bulkhead::builder().name("")), "name");
    assert_eq!(
        field(Bulkhead::builder().max_wait(Duration::ZERO)),
        "max_wait"
    );
    assert_eq!(
        field(
            Bulkhead::builder()
                .max_wait(Duration::from_secs(1))
                .max_waiting(0)
        ),
        "max_waiting"
    );
    assert_eq!(field(Bulkhead::builder().max_waiting(5)), "max_waiting");
    assert_eq!(
        field(Bulkhead::builder().retry_after(Duration::ZERO)),
        "retry_after"
    );
    let ok = Bulkhead::builder()
        .max_concurrent_calls((1 << 31) - 1)
        .build()
        .unwrap();
    assert_eq!(ok.snapshot().limit, (1 << 31) - 1);
    assert_eq!(ok.name(), "default");
}
