//! The `tracing` feature: operations, appends and subscription reads become
//! events with the crate's target.
#![cfg(feature = "tracing")]

use std::sync::Arc;
use std::time::Duration;

use palisade_event_store::*;
use palisade_test_support::Collector;
use tracing::Level;

#[test]
fn operations_are_traced_with_the_instance_name() {
    let collect = Collector::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = Instrumented::builder(InMemoryEventStore::new())
        .name("orders")
        .clock(ManualClock::new().shared())
        .tracing()
        .build()
        .unwrap();
    let s = StreamName::new("order-1").unwrap();
    collect.run(|| {
        rt.block_on(async {
            store
                .append(
                    &s,
                    ExpectedVersion::NoStream,
                    vec![NewEvent::new("A", vec![1])],
                )
                .await
                .unwrap();
            let err = store
                .append(
                    &s,
                    ExpectedVersion::NoStream,
                    vec![NewEvent::new("B", vec![2])],
                )
                .await
                .unwrap_err();
            assert!(err.is_conflict());
            let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
            let mut sub = Subscription::builder(
                store.clone(),
                Arc::new(InMemoryCheckpointStore::new()),
                "mailer",
            )
            .tracing()
            .start()
            .await
            .unwrap();
            store
                .append(&s, ExpectedVersion::Any, vec![NewEvent::new("C", vec![3])])
                .await
                .unwrap();
            sub.next().await.unwrap();
        });
    });
    let seen: Vec<_> = collect
        .events()
        .into_iter()
        .map(|e| (e.target, e.level, e.fields))
        .collect();
    let event = |level, fields: &str| ("palisade_event_store".to_owned(), level, fields.to_owned());
    let zero = format!("{:?}", Duration::ZERO);
    assert_eq!(
        seen,
        [
            event(
                Level::DEBUG,
                "message=events appended instance=orders events=1"
            ),
            event(
                Level::TRACE,
                &format!(
                    "message=operation finished instance=orders operation=append duration={zero}"
                )
            ),
            event(
                Level::DEBUG,
                &format!(
                    "message=operation failed instance=orders operation=append duration={zero} error.type=conflict"
                )
            ),
            event(
                Level::DEBUG,
                "message=subscription read instance=mailer subscription=mailer events=1 lag=1"
            ),
        ]
    );
}
