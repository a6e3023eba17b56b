//! The tower layer: one limit for every clone, keys from the request,
//! rejections through a real stack, waiting in poll_ready, no allocation per call.
#![cfg(feature = "tower")]

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::noop_waker;
use palisade_rate_limit::{
    BoxError, EXHAUSTED, KEY_CAPACITY, KeyedRateLimiter, ManualClock, Pattern, Quota,
    RateLimitLayer, RateLimiter, Rejected,
};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

#[allow(clippy::unused_async)]
async fn echo(x: u32) -> Result<u32, Infallible> {
    Ok(x)
}

fn limiter(clock: &ManualClock, quota: Quota) -> RateLimiter {
    RateLimiter::builder()
        .quota(quota)
        .clock(clock.shared())
        .sleeper(clock.sleeper())
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// tower#794: a limit of 5 per second must be 5 per second across every
/// clone of the layer and of the service (one per connection), not 5 each.
#[tokio::test]
async fn every_clone_shares_one_limit() {
    let clock = ManualClock::new();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let layer = RateLimitLayer::new(limiter(&clock, Quota::per_second(5)));
    let inner = service_fn(move |x: u32| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, Infallible>(x) }
    });
    let mut ok = 0;
    let mut rejected = 0;
    for connection in 0..300 {
        // A new layer clone and a new service per "connection", as axum does.
        let mut svc = layer.clone().layer(inner.clone()).clone();
        for _ in 0..5 {
            match svc.ready().await.unwrap().call(connection).await {
                Ok(_) => ok += 1,
                Err(e) => {
                    let r = e.downcast_ref::<Rejected>().expect("a boxed Rejected");
                    assert_eq!((r.pattern(), r.reason()), (Pattern::RateLimit, EXHAUSTED));
                    assert_eq!(r.retry_after(), Some(Duration::from_millis(200)));
                    rejected += 1;
                }
            }
        }
    }
    assert_eq!((ok, rejected), (5, 1_495));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "rejected calls never reach the service"
    );
}

#[derive(Clone, Copy)]
struct Request {
    client: u32,
}

#[tokio::test]
async fn a_keyed_layer_limits_each_client_by_its_own_quota() {
    let clock = ManualClock::new();
    let keyed = KeyedRateLimiter::<u32>::builder()
        .quota_fn(|client| {
            if *client == 1 {
                Quota::per_second(3)
            } else {
                Quota::per_second(1)
            }
        })
        .clock(clock.shared())
        .build()
        .unwrap();
    let mut svc = RateLimitLayer::keyed(keyed.clone(), |r: &Request| r.client).layer(service_fn(
        |r: Request| async move { Ok::<_, Infallible>(r.client) },
    ));
    let mut admitted = [0; 3];
    for _ in 0..5 {
        for client in 0..3 {
            if svc
                .ready()
                .await
                .unwrap()
                .call(Request { client })
                .await
                .is_ok()
            {
                admitted[client as usize] += 1;
            }
        }
    }
    assert_eq!(admitted, [1, 3, 1]);
    assert_eq!(keyed.len(), 3);
}

#[tokio::test]
async fn a_full_key_table_rejects_new_clients_through_the_layer() {
    let clock = ManualClock::new();
    let keyed = KeyedRateLimiter::<u32>::builder()
        .quota(Quota::per_second(1))
        .max_keys(1)
        .clock(clock.shared())
        .build()
        .unwrap();
    let mut svc = RateLimitLayer::keyed(keyed, |r: &Request| r.client).layer(service_fn(
        |r: Request| async move { Ok::<_, Infallible>(r.client) },
    ));
    svc.ready()
        .await
        .unwrap()
        .call(Request { client: 7 })
        .await
        .unwrap();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request { client: 8 })
        .await
        .unwrap_err();
    let r = Rejected::find(&*err).unwrap();
    assert_eq!(r.reason(), KEY_CAPACITY);
    assert_eq!(r.retry_after(), Some(Duration::from_secs(1)));
}

/// Rejections and inner errors both survive `Buffer` and `Timeout` around the layer.
#[tokio::test]
async fn rejections_and_inner_errors_are_found_through_a_real_stack() {
    let clock = ManualClock::new();
    let l = limiter(&clock, Quota::per_second(1));
    let mut svc = ServiceBuilder::new()
        .buffer(8)
        .timeout(Duration::from_secs(5))
        .layer(RateLimitLayer::new(l))
        .service(service_fn(|fail: bool| async move {
            if fail {
                Err::<(), BoxError>("backend down".into())
            } else {
                Ok(())
            }
        }));
    let err = svc.ready().await.unwrap().call(true).await.unwrap_err();
    assert_eq!(err.to_string(), "backend down");
    assert!(Rejected::find(&*err).is_none());
    let err = svc.ready().await.unwrap().call(false).await.unwrap_err();
    let r = Rejected::find(&*err).expect("found under Buffer and Timeout");
    assert_eq!(r.retry_after(), Some(Duration::from_secs(1)));
}

fn poll_ready<S: Service<u32>>(svc: &mut S) -> Poll<Result<(), S::Error>> {
    let waker = noop_waker();
    svc.poll_ready(&mut Context::from_waker(&waker))
}

#[test]
fn waiting_mode_holds_callers_in_poll_ready_in_order() {
    let clock = ManualClock::new();
    let l = limiter(&clock, Quota::per_second(10).burst(1));
    let layer = RateLimitLayer::new(l.clone()).waiting();
    let mut a = layer.layer(service_fn(echo));
    let mut b = layer.layer(service_fn(echo));
    assert!(poll_ready(&mut a).is_ready()); // the burst
    assert!(poll_ready(&mut b).is_pending()); // due at 100 ms
    // A check after b does not overtake it.
    assert_eq!(
        l.check().unwrap_err().retry_after(),
        Duration::from_millis(200)
    );
    let fut = a.call(1);
    assert!(matches!(futures::executor::block_on(fut), Ok(1)));
    clock.advance(Duration::from_millis(99));
    assert!(poll_ready(&mut b).is_pending());
    clock.advance(Duration::from_millis(1));
    assert!(poll_ready(&mut b).is_ready());
    assert_eq!(futures::executor::block_on(b.call(2)).unwrap(), 2);
}

#[test]
fn a_service_dropped_while_waiting_gives_its_slot_back() {
    let clock = ManualClock::new();
    let l = limiter(&clock, Quota::per_second(1));
    let layer = RateLimitLayer::new(l.clone()).waiting();
    let mut a = layer.layer(service_fn(echo));
    assert!(poll_ready(&mut a).is_ready());
    futures::executor::block_on(a.call(0)).unwrap();
    let mut b = layer.layer(service_fn(echo));
    assert!(poll_ready(&mut b).is_pending());
    drop(b);
    clock.advance(Duration::from_secs(1));
    assert!(l.check().is_ok(), "b's slot went back");
}

#[test]
fn a_wait_over_max_wait_is_ready_at_once_and_rejected_by_call() {
    let clock = ManualClock::new();
    let l = RateLimiter::builder()
        .quota(Quota::per_minute(1))
        .clock(clock.shared())
        .sleeper(clock.sleeper())
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut svc = RateLimitLayer::new(l).waiting().layer(service_fn(echo));
    assert!(poll_ready(&mut svc).is_ready());
    futures::executor::block_on(svc.call(0)).unwrap();
    assert!(poll_ready(&mut svc).is_ready());
    let err = futures::executor::block_on(svc.call(1)).unwrap_err();
    let r = err.downcast_ref::<Rejected>().unwrap();
    assert_eq!(r.retry_after(), Some(Duration::from_secs(60)));
}

/// An admitted call through the layer, a direct or keyed one, allocates nothing.
#[test]
fn an_admitted_call_allocates_nothing() {
    let clock = ManualClock::new();
    let mut direct =
        RateLimitLayer::new(limiter(&clock, Quota::per_second(1_000_000))).layer(service_fn(echo));
    let keyed = KeyedRateLimiter::<u32>::builder()
        .quota(Quota::per_second(1_000_000))
        .clock(clock.shared())
        .build()
        .unwrap();
    let mut keyed = RateLimitLayer::keyed(keyed, |r: &Request| r.client).layer(service_fn(
        |r: Request| async move { Ok::<_, Infallible>(r.client) },
    ));
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    // The keyed table stores its key on first sight: warm it up first.
    let f = std::pin::pin!(keyed.call(Request { client: 3 }));
    assert!(matches!(f.poll(&mut cx), Poll::Ready(Ok(3))));
    let info = allocation_counter::measure(|| {
        for i in 0..1_000 {
            clock.advance(Duration::from_micros(1));
            assert!(direct.poll_ready(&mut cx).is_ready());
            let f = std::pin::pin!(direct.call(i));
            assert!(matches!(f.poll(&mut cx), Poll::Ready(Ok(_))));
            assert!(Service::<Request>::poll_ready(&mut keyed, &mut cx).is_ready());
            let f = std::pin::pin!(keyed.call(Request { client: 3 }));
            assert!(matches!(f.poll(&mut cx), Poll::Ready(Ok(3))));
        }
    });
    assert_eq!(info.count_total, 0);
}
