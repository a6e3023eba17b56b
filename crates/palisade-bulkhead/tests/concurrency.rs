//! Exact counts under contention: never more units in flight than the limit
//! at any instant (an atomic high-water mark), every permit and every
//! rejection counted once, and no units lost after cancellations at random points.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_bulkhead::{Bulkhead, Event, ManualClock, QueueOrder};

/// Units held right now by the test's own count, and the most ever held.
#[derive(Default)]
struct Gauge {
    now: AtomicU32,
    high: AtomicU32,
}

impl Gauge {
    fn enter(&self, weight: u32) {
        let now = self.now.fetch_add(weight, SeqCst) + weight;
        self.high.fetch_max(now, SeqCst);
    }
    fn leave(&self, weight: u32) {
        self.now.fetch_sub(weight, SeqCst);
    }
}

/// Counts the bulkhead's own events.
#[derive(Default)]
struct Counts {
    permitted: AtomicU64,
    rejected: AtomicU64,
    released_units: AtomicU64,
    permitted_units: AtomicU64,
}

fn counted(counts: &Arc<Counts>) -> impl Fn(&Event) + Send + Sync + 'static {
    let counts = Arc::clone(counts);
    move |e: &Event| match *e {
        Event::Permitted { weight, .. } => {
            counts.permitted.fetch_add(1, SeqCst);
            counts.permitted_units.fetch_add(u64::from(weight), SeqCst);
        }
        Event::Rejected { .. } => {
            counts.rejected.fetch_add(1, SeqCst);
        }
        Event::Released { weight } => {
            counts.released_units.fetch_add(u64::from(weight), SeqCst);
        }
        _ => {}
    }
}

#[test]
fn threads_never_hold_more_than_the_limit() {
    const THREADS: usize = 8;
    const ROUNDS: u64 = 20_000;
    const LIMIT: u32 = 3;
    let counts = Arc::new(Counts::default());
    let bulkhead = Bulkhead::builder()
        .max_concurrent_calls(LIMIT)
        .listener(counted(&counts))
        .build()
        .unwrap();
    let gauge = Arc::new(Gauge::default());
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (bulkhead, gauge, ok, refused) = (&bulkhead, &gauge, &ok, &refused);
            s.spawn(move || {
                for i in 0..ROUNDS {
                    // Weights 1 and 2, so weighted units are counted too.
                    let weight = 1 + ((i + t as u64) % 2) as u32;
                    match bulkhead.try_acquire_many(weight) {
                        Ok(permit) => {
                            gauge.enter(weight);
                            assert!(gauge.now.load(SeqCst) <= LIMIT);
                            std::hint::spin_loop();
                            gauge.leave(weight);
                            drop(permit);
                            ok.fetch_add(1, SeqCst);
                        }
                        Err(_) => {
                            refused.fetch_add(1, SeqCst);
                        }
                    }
                }
            });
        }
    });
    let total = THREADS as u64 * ROUNDS;
    assert!(gauge.high.load(SeqCst) <= LIMIT);
    assert_eq!(ok.load(SeqCst) + refused.load(SeqCst), total);
    assert_eq!(counts.permitted.load(SeqCst), ok.load(SeqCst));
    assert_eq!(counts.rejected.load(SeqCst), refused.load(SeqCst));
    assert_eq!(
        counts.permitted_units.load(SeqCst),
        counts.released_units.load(SeqCst)
    );
    let snap = bulkhead.snapshot();
    assert_eq!((snap.in_flight, snap.waiting), (0, 0));
    assert!(bulkhead.try_acquire_many(LIMIT).is_ok(), "nothing stranded");
}

#[test]
fn threads_that_wait_are_all_served_exactly_once() {
    // Waiting threads block on a future with `futures::executor::block_on`;
    // a wait never times out (an hour on a clock nobody advances), so every
    // call must be granted once, and none may be lost.
    const THREADS: usize = 6;
    const ROUNDS: u64 = 3_000;
    const LIMIT: u32 = 2;
    for order in [QueueOrder::Fifo, QueueOrder::Lifo] {
        let clock = ManualClock::new();
        let counts = Arc::new(Counts::default());
        let bulkhead = Bulkhead::builder()
            .max_concurrent_calls(LIMIT)
            .max_wait(Duration::from_secs(3600))
            .max_waiting(THREADS)
            .queue_order(order)
            .sleeper(clock.sleeper())
            .clock(clock.shared())
            .listener(counted(&counts))
            .build()
            .unwrap();
        let gauge = Gauge::default();
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for _ in 0..ROUNDS {
                        let permit = futures::executor::block_on(bulkhead.acquire())
                            .expect("never times out, never full");
                        gauge.enter(1);
                        std::hint::spin_loop();
                        gauge.leave(1);
                        drop(permit);
                    }
                });
            }
        });
        assert!(gauge.high.load(SeqCst) <= LIMIT, "{order:?}");
        assert_eq!(
            counts.permitted.load(SeqCst),
            THREADS as u64 * ROUNDS,
            "{order:?}"
        );
        assert_eq!(counts.rejected.load(SeqCst), 0, "{order:?}");
        let snap = bulkhead.snapshot();
        assert_eq!((snap.in_flight, snap.waiting), (0, 0), "{order:?}");
        assert!(bulkhead.try_acquire_many(LIMIT).is_ok());
    }
}

/// Polls `inner` at most `polls` times, then drops it: a cancellation at a chosen point.
struct CancelAfter<F> {
    inner: Option<Pin<Box<F>>>,
    polls: u32,
}

impl<F: Future> Future for CancelAfter<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(out) = inner.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if self.polls == 0 {
            self.inner = None;
            return Poll::Ready(None);
        }
        self.polls -= 1;
        // Come back soon, whether or not the bulkhead wakes us.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn tasks_cancelled_at_random_points_lose_no_units() {
    const TASKS: usize = 64;
    const ROUNDS: usize = 200;
    const LIMIT: u32 = 4;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    for order in [QueueOrder::Fifo, QueueOrder::Lifo] {
        let counts = Arc::new(Counts::default());
        let bulkhead = Bulkhead::builder()
            .max_concurrent_calls(LIMIT)
            .max_wait(Duration::from_secs(3600))
            .max_waiting(TASKS)
            .queue_order(order)
            .sleeper(palisade_core::TokioSleeper::shared())
            .listener(counted(&counts))
            .build()
            .unwrap();
        let gauge = Arc::new(Gauge::default());
        let cancelled = Arc::new(AtomicU64::new(0));
        let held = Arc::new(AtomicU64::new(0));
        rt.block_on(async {
            let mut tasks = Vec::new();
            for seed in 0..TASKS as u64 {
                let (bulkhead, gauge, cancelled, held) = (
                    bulkhead.clone(),
                    Arc::clone(&gauge),
                    Arc::clone(&cancelled),
                    Arc::clone(&held),
                );
                tasks.push(tokio::spawn(async move {
                    let mut rng = fastrand::Rng::with_seed(seed);
                    for _ in 0..ROUNDS {
                        let weight = rng.u32(1..=2);
                        let wait = CancelAfter {
                            inner: Some(Box::pin(bulkhead.acquire_many_owned(weight))),
                            polls: rng.u32(0..4),
                        };
                        match wait.await {
                            Some(Ok(permit)) => {
                                gauge.enter(weight);
                                assert!(gauge.now.load(SeqCst) <= LIMIT);
                                for _ in 0..rng.u32(0..3) {
                                    tokio::task::yield_now().await;
                                }
                                gauge.leave(weight);
                                held.fetch_add(1, SeqCst);
                                // Sometimes the permit goes to another task to drop.
                                if rng.bool() {
                                    tokio::spawn(async move { drop(permit) }).await.unwrap();
                                }
                            }
                            Some(Err(e)) => panic!("no wait here times out or is full: {e}"),
                            None => {
                                cancelled.fetch_add(1, SeqCst);
                            }
                        }
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        let total = (TASKS * ROUNDS) as u64;
        assert!(gauge.high.load(SeqCst) <= LIMIT, "{order:?}");
        assert_eq!(held.load(SeqCst) + cancelled.load(SeqCst), total);
        assert!(cancelled.load(SeqCst) > 0, "some waits were cancelled");
        assert_eq!(
            counts.permitted.load(SeqCst),
            held.load(SeqCst),
            "{order:?}"
        );
        assert_eq!(
            counts.permitted_units.load(SeqCst),
            counts.released_units.load(SeqCst)
        );
        let snap = bulkhead.snapshot();
        assert_eq!((snap.in_flight, snap.waiting), (0, 0), "{order:?}");
        assert!(
            bulkhead.try_acquire_many(LIMIT).is_ok(),
            "every unit came back"
        );
    }
}

#[test]
fn a_limit_changed_under_load_is_never_exceeded_once_it_settles() {
    // While the limit moves between 1 and 4, units in flight never exceed the
    // highest limit set; after it settles at 2 and the holders of the old
    // limit finish, never more than 2.
    const THREADS: usize = 4;
    let bulkhead = Bulkhead::builder().max_concurrent_calls(4).build().unwrap();
    let gauge = Gauge::default();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                while !stop.load(SeqCst) {
                    if let Ok(p) = bulkhead.try_acquire() {
                        gauge.enter(1);
                        gauge.leave(1);
                        drop(p);
                    }
                }
            });
        }
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            bulkhead.set_limit(rng.u32(1..=4)).unwrap();
        }
        stop.store(true, SeqCst);
    });
    assert!(gauge.high.load(SeqCst) <= 4);
    bulkhead.set_limit(2).unwrap();
    assert_eq!(bulkhead.snapshot().in_flight, 0);
    let a = bulkhead.try_acquire().unwrap();
    let b = bulkhead.try_acquire().unwrap();
    assert!(bulkhead.try_acquire().is_err());
    drop((a, b));
}
