//! Subscriptions through failures: backend errors are retried with backoff
//! on the subscription's sleeper, each reported, and nothing is skipped.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use palisade_event_store::*;

/// A store whose `read_all` fails while `failures` is above zero.
struct Flaky {
    inner: InMemoryEventStore,
    failures: AtomicU32,
}

#[derive(Debug, thiserror::Error)]
#[error("connection refused")]
struct Refused;

#[async_trait]
impl EventStore for Flaky {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.inner.append(stream, expected, events).await
    }
    async fn read_stream(&self, stream: &StreamName, options: ReadStream) -> Result<EventStream> {
        self.inner.read_stream(stream, options).await
    }
    async fn read_all(&self, options: ReadAll) -> Result<EventStream> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Error::backend(Refused));
        }
        self.inner.read_all(options).await
    }
    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState> {
        self.inner.stream_state(stream).await
    }
    async fn delete_stream(&self, stream: &StreamName, expected: ExpectedVersion) -> Result<()> {
        self.inner.delete_stream(stream, expected).await
    }
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn load_snapshot(&self, stream: &StreamName) -> Result<Option<Snapshot>> {
        self.inner.load_snapshot(stream).await
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes()
    }
    async fn head(&self) -> Result<Position> {
        self.inner.head().await
    }
    fn system_name(&self) -> &'static str {
        self.inner.system_name()
    }
}

fn event(n: u8) -> NewEvent {
    NewEvent::new("E", vec![n])
}

#[tokio::test]
async fn backend_errors_are_retried_with_backoff_and_nothing_is_skipped() {
    let store = Arc::new(Flaky {
        inner: InMemoryEventStore::new(),
        failures: AtomicU32::new(0),
    });
    let s = StreamName::new("order-1").unwrap();
    store
        .append(&s, ExpectedVersion::Any, vec![event(1)])
        .await
        .unwrap();
    let clock = ManualClock::new();
    let failed = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&failed);
    let mut sub = Subscription::builder(
        store.clone(),
        Arc::new(InMemoryCheckpointStore::new()),
        "mailer",
    )
    .sleeper(clock.sleeper())
    .retry_backoff(Backoff::exponential(Duration::from_secs(1)).max(Duration::from_secs(4)))
    .listener(move |e: &Event| {
        if let Event::SubscriptionFailed {
            error,
            attempt,
            retry_in,
            ..
        } = e
        {
            sink.lock()
                .unwrap()
                .push((error.clone(), *attempt, *retry_in));
        }
    })
    .start()
    .await
    .unwrap();
    assert_eq!(sub.next().await.unwrap().payload, [1]);

    // The store goes down for three reads; two events are written meanwhile.
    store.failures.store(3, Ordering::SeqCst);
    store
        .append(&s, ExpectedVersion::Any, vec![event(2), event(3)])
        .await
        .unwrap();
    let waiting = tokio::spawn(async move {
        let second = sub.next().await.unwrap();
        let third = sub.next().await.unwrap();
        (second.payload, third.payload)
    });
    let settle = || async {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    };
    settle().await;
    let secs = Duration::from_secs;
    let backend = "backend: connection refused".to_string();
    assert_eq!(*failed.lock().unwrap(), [(backend.clone(), 1, secs(1))]);
    clock.advance(secs(1));
    settle().await;
    assert_eq!(failed.lock().unwrap().len(), 2);
    clock.advance(secs(2));
    settle().await;
    assert_eq!(
        *failed.lock().unwrap(),
        [
            (backend.clone(), 1, secs(1)),
            (backend.clone(), 2, secs(2)),
            (backend, 3, secs(4)),
        ]
    );
    assert!(!waiting.is_finished(), "still waiting out the third delay");
    clock.advance(secs(4));
    let (second, third) = waiting.await.unwrap();
    assert_eq!(
        (second, third),
        (vec![2], vec![3]),
        "nothing skipped, in order"
    );
}

#[tokio::test]
async fn with_return_errors_a_backend_error_comes_back_at_once() {
    let store = Arc::new(Flaky {
        inner: InMemoryEventStore::new(),
        failures: AtomicU32::new(1),
    });
    let s = StreamName::new("order-1").unwrap();
    store
        .append(&s, ExpectedVersion::Any, vec![event(1)])
        .await
        .unwrap();
    let mut sub = Subscription::builder(store, Arc::new(InMemoryCheckpointStore::new()), "mailer")
        .return_errors()
        .start()
        .await
        .unwrap();
    let err = sub.next().await.unwrap_err();
    assert_eq!(err.to_string(), "backend: connection refused");
    assert_eq!(
        sub.next().await.unwrap().payload,
        [1],
        "polled again, it goes on"
    );
}

#[tokio::test]
async fn a_subscription_is_a_stream_and_can_checkpoint_between_items() {
    let store = Arc::new(InMemoryEventStore::new());
    let s = StreamName::new("order-1").unwrap();
    store
        .append(&s, ExpectedVersion::Any, vec![event(1), event(2)])
        .await
        .unwrap();
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let mut events =
        Subscription::start(store.clone(), checkpoints.clone(), "mailer", Filter::all())
            .await
            .unwrap()
            .into_stream();
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first.payload, [1]);
    let sub = events.subscription().expect("between items");
    assert_eq!(sub.position(), first.position);
    sub.checkpoint().await.unwrap();
    assert_eq!(
        checkpoints.load("mailer").await.unwrap(),
        Some(first.position)
    );
    assert_eq!(events.next().await.unwrap().unwrap().payload, [2]);
}
