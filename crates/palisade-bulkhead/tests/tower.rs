//! The tower layer: both behaviours, shared state, cancellation, and the
//! rejection found through a stack of tower's own middleware.
#![cfg(feature = "tower")]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::FutureExt;
use palisade_bulkhead::{BoxError, Bulkhead, BulkheadLayer, BulkheadService, Reason, Rejected};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

fn bulkhead(limit: u32) -> Bulkhead {
    Bulkhead::builder()
        .max_concurrent_calls(limit)
        .build()
        .unwrap()
}

fn poll_ready<S: Service<R>, R>(svc: &mut S) -> Poll<Result<(), S::Error>> {
    svc.poll_ready(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test]
async fn rejection_mode_refuses_the_call_without_reaching_the_service() {
    let bulkhead = bulkhead(1);
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let inner = service_fn(move |x: u32| {
        counted.fetch_add(1, SeqCst);
        async move { Ok::<_, Infallible>(x) }
    });
    let mut a = BulkheadLayer::new(bulkhead.clone()).layer(inner);
    let mut b = a.clone();

    // a's poll_ready takes the one unit and holds it until its call is done.
    assert!(matches!(poll_ready(&mut a), Poll::Ready(Ok(()))));
    assert_eq!(bulkhead.snapshot().in_flight, 1);
    // b is ready too, but its call is refused.
    assert!(matches!(poll_ready(&mut b), Poll::Ready(Ok(()))));
    let err = b.call(2).await.unwrap_err();
    let rejected = err.downcast_ref::<Rejected>().expect("a boxed Rejected");
    assert_eq!(Reason::of(rejected), Some(Reason::Full));
    assert_eq!(calls.load(SeqCst), 0);

    let future = a.call(1);
    assert_eq!(bulkhead.snapshot().in_flight, 1, "the call holds it");
    assert_eq!(future.await.unwrap(), 1);
    assert_eq!(bulkhead.snapshot().in_flight, 0, "given back when done");
    assert_eq!(b.ready().await.unwrap().call(3).await.unwrap(), 3);
    assert_eq!(calls.load(SeqCst), 2);
}

#[tokio::test]
async fn a_refusal_is_decided_again_when_poll_ready_is_called_again() {
    let bulkhead = bulkhead(1);
    let mut svc = BulkheadLayer::new(bulkhead.clone())
        .layer(service_fn(|x: u32| async move { Ok::<_, Infallible>(x) }));
    let held = bulkhead.try_acquire_owned().unwrap();
    assert!(matches!(poll_ready(&mut svc), Poll::Ready(Ok(()))));
    drop(held);
    // Ready again, now with the unit free: the call goes through.
    assert_eq!(svc.ready().await.unwrap().call(5).await.unwrap(), 5);
}

#[tokio::test]
async fn backpressure_mode_waits_in_poll_ready() {
    let bulkhead = bulkhead(1);
    let mut a = BulkheadLayer::backpressure(bulkhead.clone())
        .layer(service_fn(|x: u32| async move { Ok::<_, Infallible>(x) }));
    let mut b = a.clone();
    let mut ready_b = Box::pin(async move {
        b.ready().await.unwrap();
        b
    });
    a.ready().await.unwrap();
    assert!(ready_b.as_mut().now_or_never().is_none());
    assert_eq!(bulkhead.snapshot().waiting, 1);
    let future = a.call(1);
    assert!(
        ready_b.as_mut().now_or_never().is_none(),
        "still held by a's call"
    );
    // A response future dropped before it finished gives its unit back too.
    drop(future);
    let mut b = ready_b.await;
    let s = bulkhead.snapshot();
    assert_eq!((s.in_flight, s.waiting), (1, 0), "b holds the unit");
    assert_eq!(b.call(2).await.unwrap(), 2);
    assert_eq!(bulkhead.snapshot().in_flight, 0);
}

#[tokio::test]
async fn a_ready_service_dropped_or_unwrapped_gives_its_unit_back() {
    let bulkhead = bulkhead(1);
    let mut svc = BulkheadLayer::backpressure(bulkhead.clone())
        .layer(service_fn(|x: u32| async move { Ok::<_, Infallible>(x) }));
    svc.ready().await.unwrap();
    assert_eq!(bulkhead.snapshot().in_flight, 1);
    let _inner = svc.into_inner();
    assert_eq!(bulkhead.snapshot().in_flight, 0);

    let mut a = BulkheadService::new(
        service_fn(|x: u32| async move { Ok::<_, Infallible>(x) }),
        bulkhead.clone(),
    );
    let mut waiting = BulkheadLayer::backpressure(bulkhead.clone())
        .layer(service_fn(|x: u32| async move { Ok::<_, Infallible>(x) }));
    a.ready().await.unwrap();
    assert!(poll_ready(&mut waiting).is_pending());
    assert_eq!(bulkhead.snapshot().waiting, 1);
    // A waiting service dropped leaves the queue.
    drop(waiting);
    assert_eq!(bulkhead.snapshot().waiting, 0);
    drop(a);
    assert_eq!(bulkhead.snapshot().in_flight, 0);
}

#[tokio::test]
async fn a_call_without_poll_ready_is_refused_not_run_unlimited() {
    let bulkhead = bulkhead(1);
    let mut svc = BulkheadLayer::new(bulkhead)
        .layer(service_fn(|x: u32| async move { Ok::<_, Infallible>(x) }));
    let err = svc.call(1).await.unwrap_err();
    assert_eq!(
        Reason::of(Rejected::find(&*err).unwrap()),
        Some(Reason::Full)
    );
}

#[tokio::test(start_paused = true)]
async fn rejection_mode_waits_up_to_max_wait_in_poll_ready() {
    let bulkhead = Bulkhead::builder()
        .max_concurrent_calls(1)
        .max_wait(Duration::from_millis(200))
        .build()
        .unwrap();
    let layer = BulkheadLayer::new(bulkhead.clone());
    let mut a = layer.layer(service_fn(|x: u32| async move { Ok::<_, Infallible>(x) }));
    let mut b = a.clone();
    a.ready().await.unwrap();
    let start = tokio::time::Instant::now();
    let err = b.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(
        Reason::of(Rejected::find(&*err).unwrap()),
        Some(Reason::TimedOut)
    );
}

#[tokio::test]
async fn load_shed_above_backpressure_sheds_when_full() {
    let bulkhead = bulkhead(1);
    let mut svc = ServiceBuilder::new()
        .load_shed()
        .layer(BulkheadLayer::backpressure(bulkhead.clone()))
        .service(service_fn(|x: u32| async move { Ok::<_, Infallible>(x) }));
    let mut other = svc.clone();
    let held = svc.ready().await.unwrap().call(1);
    // Not awaited yet: the unit is held by `held`.
    let err = other.ready().await.unwrap().call(2).await.unwrap_err();
    assert!(err.is::<tower::load_shed::error::Overloaded>(), "{err}");
    assert_eq!(held.await.unwrap(), 1);
    assert_eq!(other.ready().await.unwrap().call(3).await.unwrap(), 3);
}

#[tokio::test]
async fn the_rejection_and_inner_errors_are_found_through_buffer_and_timeout() {
    let bulkhead = bulkhead(1);
    let held = bulkhead.try_acquire_owned().unwrap();
    let mut svc = ServiceBuilder::new()
        .timeout(Duration::from_secs(5))
        .buffer(8)
        .layer(BulkheadLayer::new(bulkhead.clone()))
        .service(service_fn(|fail: bool| async move {
            if fail {
                Err(std::io::Error::other("down"))
            } else {
                Ok(())
            }
        }));
    let err: BoxError = svc.ready().await.unwrap().call(false).await.unwrap_err();
    let rejected = Rejected::find(&*err).expect("found under Buffer and Timeout");
    assert_eq!(Reason::of(rejected), Some(Reason::Full));
    drop(held);
    let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
    assert!(Rejected::find(&*err).is_none());
    assert_eq!(err.to_string(), "down");
}

#[test]
fn many_tasks_through_the_layer_never_exceed_the_limit() {
    const LIMIT: u32 = 3;
    const TASKS: usize = 32;
    const CALLS: usize = 100;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    for backpressure in [true, false] {
        let bulkhead = bulkhead(LIMIT);
        let now = Arc::new(AtomicU32::new(0));
        let high = Arc::new(AtomicU32::new(0));
        let (n, h) = (Arc::clone(&now), Arc::clone(&high));
        let inner = service_fn(move |(): ()| {
            let (n, h) = (Arc::clone(&n), Arc::clone(&h));
            async move {
                let current = n.fetch_add(1, SeqCst) + 1;
                h.fetch_max(current, SeqCst);
                tokio::task::yield_now().await;
                n.fetch_sub(1, SeqCst);
                Ok::<_, Infallible>(())
            }
        });
        let layer = if backpressure {
            BulkheadLayer::backpressure(bulkhead.clone())
        } else {
            BulkheadLayer::new(bulkhead.clone())
        };
        let svc = layer.layer(inner);
        let (ok, refused) = rt.block_on(async {
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let mut svc = svc.clone();
                    tokio::spawn(async move {
                        let (mut ok, mut refused) = (0, 0);
                        for _ in 0..CALLS {
                            match svc.ready().await.unwrap().call(()).await {
                                Ok(()) => ok += 1,
                                Err(e) => {
                                    assert!(Rejected::find(&*e).is_some());
                                    refused += 1;
                                }
                            }
                        }
                        (ok, refused)
                    })
                })
                .collect();
            let mut sum = (0, 0);
            for t in tasks {
                let (o, r) = t.await.unwrap();
                sum.0 += o;
                sum.1 += r;
            }
            sum
        });
        assert!(high.load(SeqCst) <= LIMIT, "backpressure: {backpressure}");
        assert_eq!(ok + refused, TASKS * CALLS);
        if backpressure {
            assert_eq!(refused, 0, "backpressure waits, never rejects");
        }
        let s = bulkhead.snapshot();
        assert_eq!((s.in_flight, s.waiting), (0, 0));
    }
}
