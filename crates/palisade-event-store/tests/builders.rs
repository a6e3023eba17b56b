//! Builders: every setting out of bounds fails where it is checked, naming
//! the builder method; what a builder asks for is what is reported.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_event_store::*;

fn field(result: Result<impl Sized>) -> &'static str {
    match result {
        Err(Error::Config(e)) => e.field(),
        Err(other) => panic!("not a configuration error: {other}"),
        Ok(_) => panic!("accepted"),
    }
}

#[tokio::test]
async fn bad_settings_are_configuration_errors_naming_the_method() {
    let zero_batch = Limits {
        max_batch: 0,
        ..Limits::default()
    };
    assert_eq!(
        InMemoryEventStore::with_limits(zero_batch)
            .unwrap_err()
            .field(),
        "limits"
    );
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    assert_eq!(
        field(
            Subscription::builder(store.clone(), checkpoints.clone(), "s")
                .page_size(0)
                .start()
                .await
        ),
        "page_size"
    );
    assert_eq!(
        field(Subscription::builder(store, checkpoints, "").start().await),
        "builder"
    );
    assert_eq!(
        Instrumented::builder(InMemoryEventStore::new())
            .name("")
            .build()
            .unwrap_err()
            .field(),
        "name"
    );
}

/// Checked before any connection is tried: these fail with no server at the address.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn bad_postgres_settings_fail_in_connect_before_it_connects() {
    let url = "postgres://postgres@127.0.0.1:1/none";
    let builder = || PostgresEventStore::builder(url);
    assert_eq!(field(builder().pool_size(0).connect().await), "pool_size");
    assert_eq!(
        field(builder().poll_interval(Duration::ZERO).connect().await),
        "poll_interval"
    );
    assert_eq!(
        field(
            builder()
                .poll_interval(Duration::from_micros(999))
                .connect()
                .await
        ),
        "poll_interval"
    );
    assert_eq!(
        field(builder().schema("Bad-Name").connect().await),
        "schema"
    );
    assert_eq!(
        field(
            builder()
                .limits(Limits {
                    max_event_bytes: 0,
                    ..Limits::default()
                })
                .connect()
                .await
        ),
        "limits"
    );
    assert_eq!(
        field(
            PostgresEventStore::builder("not a url at all")
                .connect()
                .await
        ),
        "builder"
    );
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_rejects_zero_limits_before_it_opens_the_file() {
    let dir = std::env::temp_dir().join(format!("palisade-limits-{}", std::process::id()));
    let zero = Limits {
        max_batch: 0,
        ..Limits::default()
    };
    assert_eq!(
        field(SqliteEventStore::open_with_limits(&dir, zero).await),
        "limits"
    );
    assert!(!dir.exists(), "nothing was created");
}

#[tokio::test]
async fn an_instrumented_store_reports_each_operation_to_its_listeners() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let clock = ManualClock::new();
    let store = Instrumented::builder(InMemoryEventStore::new())
        .name("orders")
        .clock(clock.shared())
        .listener(move |e: &Event| sink.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let s = StreamName::new("order-1").unwrap();
    let events = vec![NewEvent::new("A", vec![1]), NewEvent::new("B", vec![2])];
    store
        .append(&s, ExpectedVersion::NoStream, events.clone())
        .await
        .unwrap();
    // The same ids again: an idempotent retry writes nothing and appends nothing.
    store
        .append(&s, ExpectedVersion::NoStream, events)
        .await
        .unwrap();
    let err = store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("C", vec![3])],
        )
        .await
        .unwrap_err();
    assert!(err.is_conflict());
    let finished = |error| Event::OperationFinished {
        operation: Operation::Append,
        duration: Duration::ZERO,
        error,
    };
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Event::Appended { events: 2 },
            finished(None),
            finished(None),
            finished(Some("conflict")),
        ]
    );
}

/// A caught-up subscription waits through its sleeper: with a manual clock,
/// it reads the log again exactly when the poll interval has passed.
#[tokio::test]
async fn a_caught_up_subscription_polls_on_its_sleeper() {
    let reads = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&reads);
    let clock = ManualClock::new();
    let store = Arc::new(InMemoryEventStore::new());
    let poll = store.poll_interval();
    let mut sub = Subscription::builder(store, Arc::new(InMemoryCheckpointStore::new()), "idle")
        .sleeper(clock.sleeper())
        .listener(move |e: &Event| {
            if let Event::SubscriptionRead { events, lag, .. } = e {
                sink.lock().unwrap().push((*events, *lag));
            }
        })
        .start()
        .await
        .unwrap();
    let waiting = tokio::spawn(async move { sub.next().await.map(|e| e.event_type) });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        *reads.lock().unwrap(),
        [(0, Some(0))],
        "one read, then a wait"
    );
    clock.advance(poll.checked_sub(Duration::from_millis(1)).unwrap());
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(reads.lock().unwrap().len(), 1, "not yet");
    clock.advance(Duration::from_millis(1));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        *reads.lock().unwrap(),
        [(0, Some(0)), (0, Some(0))],
        "read again at the interval"
    );
    waiting.abort();
}
