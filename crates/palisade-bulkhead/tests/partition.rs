//! Partitions: idle capacity is borrowed and given back, each share gets its
//! guarantee under full contention, the total never exceeds the limit, and
//! waiters that leave or time out strand nothing.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::FutureExt;
use palisade_bulkhead::partition::{
    Partition, PartitionAcquire, PartitionPermit, PartitionedBulkhead,
};
use palisade_bulkhead::{ManualClock, Reason};

fn two(limit: u32, clock: &ManualClock) -> (PartitionedBulkhead, Partition, Partition) {
    let b = PartitionedBulkhead::builder()
        .name("api")
        .max_concurrent_calls(limit)
        .partition("interactive", 0.8)
        .partition("batch", 0.2)
        .max_wait(Duration::from_secs(1))
        .sleeper(clock.sleeper())
        .build()
        .unwrap();
    let i = b.partition("interactive").unwrap();
    let batch = b.partition("batch").unwrap();
    (b, i, batch)
}

fn poll(f: &mut PartitionAcquire) -> Poll<Result<PartitionPermit, palisade_bulkhead::Rejected>> {
    f.poll_unpin(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn idle_capacity_is_borrowed_and_given_back_to_its_owner() {
    let clock = ManualClock::new();
    let (b, interactive, batch) = two(10, &clock);
    assert_eq!(interactive.snapshot().limit, 8);
    assert_eq!(batch.snapshot().limit, 2);
    // Interactive is idle: batch borrows all ten.
    let mut borrowed: Vec<_> = (0..10).map(|_| batch.try_acquire().unwrap()).collect();
    assert_eq!(b.snapshot().in_flight, 10);
    // Three interactive callers wait.
    let mut waiting: Vec<_> = (0..3).map(|_| interactive.acquire()).collect();
    for w in &mut waiting {
        assert!(poll(w).is_pending());
    }
    // Each unit batch gives back goes to interactive; batch cannot take it back.
    let mut granted = Vec::new();
    for n in 1..=3 {
        drop(borrowed.pop());
        assert_eq!(
            Reason::of(&batch.try_acquire().unwrap_err()),
            Some(Reason::Full)
        );
        let permit = waiting
            .iter_mut()
            .find_map(|w| match poll(w) {
                Poll::Ready(Ok(p)) => Some(p),
                _ => None,
            })
            .expect("the freed unit went to a waiting interactive caller");
        granted.push(permit);
        assert_eq!(interactive.snapshot().in_flight, n);
    }
    assert_eq!(b.snapshot().waiting, 0);
    // Nobody waits any more: batch borrows again what is freed.
    drop(borrowed.pop());
    let again = batch.try_acquire().unwrap();
    assert_eq!(
        (interactive.snapshot().in_flight, batch.snapshot().in_flight),
        (3, 7)
    );
    drop((again, granted, borrowed));
    assert_eq!(b.snapshot().in_flight, 0);
}

#[test]
fn within_its_guarantee_a_partition_takes_any_free_unit_at_once() {
    let clock = ManualClock::new();
    let (_, interactive, batch) = two(10, &clock);
    let _held: Vec<_> = (0..9).map(|_| batch.try_acquire().unwrap()).collect();
    // One unit free; interactive holds none of its eight: it takes it.
    let _p = interactive.try_acquire().unwrap();
    assert!(interactive.try_acquire().is_err(), "nothing free now");
}

#[test]
fn under_full_contention_each_partition_holds_its_guarantee() {
    // Both partitions keep callers waiting; at every step one permit, chosen
    // at random, finishes. Once batch's borrowed units are back, interactive
    // holds at least 8 and batch at least 2, and all 10 units are in use.
    let clock = ManualClock::new();
    let (b, interactive, batch) = two(10, &clock);
    let mut held: Vec<(bool, PartitionPermit)> = (0..10)
        .map(|_| (false, batch.try_acquire().unwrap()))
        .collect();
    let mut waiting: Vec<(bool, PartitionAcquire)> = Vec::new();
    let mut rng = fastrand::Rng::with_seed(3);
    let mut settled_at = None;
    for step in 0..2_000 {
        for (is_interactive, part) in [(true, &interactive), (false, &batch)] {
            while waiting.iter().filter(|(i, _)| *i == is_interactive).count() < 4 {
                let mut w = part.acquire();
                match poll(&mut w) {
                    Poll::Pending => waiting.push((is_interactive, w)),
                    Poll::Ready(Ok(p)) => held.push((is_interactive, p)),
                    Poll::Ready(Err(e)) => panic!("{e}"),
                }
            }
        }
        let done = rng.usize(0..held.len());
        drop(held.swap_remove(done));
        let mut still = Vec::new();
        for (is_interactive, mut w) in waiting.drain(..) {
            match poll(&mut w) {
                Poll::Ready(Ok(p)) => held.push((is_interactive, p)),
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => still.push((is_interactive, w)),
            }
        }
        waiting = still;
        let (i, bt) = (interactive.snapshot().in_flight, batch.snapshot().in_flight);
        assert_eq!(i + bt, 10, "step {step}: every unit in use");
        assert_eq!(b.snapshot().in_flight, 10);
        if settled_at.is_none() && i >= 8 && bt >= 2 {
            settled_at = Some(step);
        }
        if settled_at.is_some() {
            assert!(
                i >= 8 && bt >= 2,
                "step {step}: interactive {i}, batch {bt}"
            );
        }
    }
    let settled_at = settled_at.expect("the guarantees were reached");
    assert!(settled_at < 100, "settled at step {settled_at}");
    drop(waiting);
    drop(held);
    assert_eq!(b.snapshot().in_flight, 0);
    assert_eq!(b.snapshot().waiting, 0);
}

#[test]
fn threads_never_hold_more_than_the_limit_in_total() {
    let clock = ManualClock::new();
    let (b, interactive, batch) = two(5, &clock);
    let (now, high) = (AtomicU32::new(0), AtomicU32::new(0));
    std::thread::scope(|s| {
        for t in 0..6 {
            let part = if t % 2 == 0 { &interactive } else { &batch };
            let (now, high) = (&now, &high);
            s.spawn(move || {
                for _ in 0..5_000 {
                    if let Ok(p) = part.try_acquire() {
                        let n = now.fetch_add(1, SeqCst) + 1;
                        high.fetch_max(n, SeqCst);
                        now.fetch_sub(1, SeqCst);
                        drop(p);
                    }
                }
            });
        }
    });
    assert!(high.load(SeqCst) <= 5);
    assert_eq!(b.snapshot().in_flight, 0);
}

#[test]
fn waiters_that_leave_or_time_out_strand_nothing() {
    let clock = ManualClock::new();
    let (b, interactive, batch) = two(10, &clock);
    let mut borrowed: Vec<_> = (0..10).map(|_| batch.try_acquire().unwrap()).collect();
    let mut leaves = interactive.acquire();
    assert!(poll(&mut leaves).is_pending());
    // While it waits, batch cannot re-borrow a freed unit...
    drop(borrowed.pop());
    assert_eq!(interactive.snapshot().in_flight, 1, "granted to the waiter");
    // ... and the waiter, dropped before it saw the grant, gives it back.
    drop(leaves);
    assert_eq!(interactive.snapshot().in_flight, 0);
    let reborrowed = batch.try_acquire().expect("no reservation left behind");

    let mut times_out = interactive.acquire_many(2);
    assert!(poll(&mut times_out).is_pending());
    clock.advance(Duration::from_secs(1));
    let Poll::Ready(Err(e)) = poll(&mut times_out) else {
        panic!("timed out")
    };
    assert_eq!(Reason::of(&e), Some(Reason::TimedOut));
    assert_eq!(b.snapshot().waiting, 0);
    drop(borrowed);
    assert_eq!(b.snapshot().in_flight, 1, "the unit batch borrowed again");
    drop(reborrowed);
    assert_eq!(b.snapshot().in_flight, 0);
}

#[test]
fn without_max_wait_nobody_waits() {
    let b = PartitionedBulkhead::builder()
        .max_concurrent_calls(2)
        .partition("a", 0.5)
        .partition("b", 0.5)
        .build()
        .unwrap();
    let a = b.partition("a").unwrap();
    let _held = (a.try_acquire().unwrap(), a.try_acquire().unwrap());
    let mut w = b.partition("b").unwrap().acquire();
    let Poll::Ready(Err(e)) = poll(&mut w) else {
        panic!("rejected at once")
    };
    assert_eq!(Reason::of(&e), Some(Reason::Full));
    assert!(b.partition("c").is_none());
    assert_eq!(
        Reason::of(&a.try_acquire_many(3).unwrap_err()),
        Some(Reason::TooHeavy)
    );
}

#[test]
fn shares_that_do_not_add_up_and_other_bad_settings_name_the_method() {
    let field = |b: palisade_bulkhead::partition::PartitionedBulkheadBuilder| {
        b.build().unwrap_err().field()
    };
    let base = || PartitionedBulkhead::builder().max_concurrent_calls(10);
    assert_eq!(field(base()), "partition");
    assert_eq!(
        field(base().partition("a", 0.9).partition("b", 0.2)),
        "partition"
    );
    assert_eq!(
        field(base().partition("a", 0.5).partition("a", 0.5)),
        "partition"
    );
    assert_eq!(
        field(base().partition("a", 0.0).partition("b", 1.0)),
        "partition"
    );
    assert_eq!(
        field(base().partition("a", 1.0).max_concurrent_calls(0)),
        "max_concurrent_calls"
    );
    assert_eq!(
        field(base().partition("a", 1.0).max_wait(Duration::from_secs(1))),
        "sleeper"
    );
    assert_eq!(field(base().partition("a", 1.0).name("")), "name");
    assert!(
        base()
            .partition("a", 0.7)
            .partition("b", 0.2)
            .partition("c", 0.1)
            .build()
            .is_ok()
    );
}
