//! A process manager: sagas started by other services' events, once each,
//! however often the events are delivered.

mod common;

use std::sync::Arc;

use common::{Kind, Participant, step};
use palisade_event_store::{ExpectedVersion, NewEvent, StreamName};
use palisade_saga::{
    EventStore, Filter, InMemoryCheckpointStore, InMemoryEventStore, Outcome, ProcessManager,
    Reaction, Saga, Subscription,
};

#[tokio::test]
async fn events_start_sagas_once_each_even_when_delivered_again() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    for (order, kind) in [
        ("order-1", "OrderPlaced"),
        ("order-1", "OrderNoted"),
        ("order-2", "OrderPlaced"),
    ] {
        store
            .append(
                &StreamName::new(order).unwrap(),
                ExpectedVersion::Any,
                vec![NewEvent::json(kind, &()).unwrap()],
            )
            .await
            .unwrap();
    }
    let p = Participant::new();
    let saga = Saga::builder("fulfil", Arc::clone(&store))
        .step(step(&p, 0, Kind::Compensatable { compensation: true }, 1))
        .step(step(&p, 1, Kind::Pivot, 1))
        .build()
        .unwrap();
    let manager = |checkpoints: Arc<InMemoryCheckpointStore>| {
        let saga = saga.clone();
        let store = Arc::clone(&store);
        async move {
            let subscription =
                Subscription::start(store, checkpoints, "fulfilment", Filter::category("order"))
                    .await
                    .unwrap();
            ProcessManager::new(saga, subscription, |e| {
                (e.event_type == "OrderPlaced").then(|| (e.stream.as_str().to_owned(), Vec::new()))
            })
        }
    };
    let done = Outcome::Completed { state: vec![0, 1] };
    let mut pm = manager(Arc::new(InMemoryCheckpointStore::new())).await;
    assert_eq!(
        pm.handle_next().await.unwrap(),
        Reaction::Finished {
            id: "order-1".into(),
            outcome: done.clone()
        }
    );
    assert_eq!(pm.handle_next().await.unwrap(), Reaction::Ignored);
    assert_eq!(
        pm.handle_next().await.unwrap(),
        Reaction::Finished {
            id: "order-2".into(),
            outcome: done.clone()
        }
    );
    assert_eq!(p.calls().len(), 4);

    // A process manager with a lost checkpoint reads the events again: no saga runs twice.
    let mut again = manager(Arc::new(InMemoryCheckpointStore::new())).await;
    assert_eq!(
        again.handle_next().await.unwrap(),
        Reaction::Finished {
            id: "order-1".into(),
            outcome: done.clone()
        }
    );
    assert_eq!(again.handle_next().await.unwrap(), Reaction::Ignored);
    assert_eq!(
        again.handle_next().await.unwrap(),
        Reaction::Finished {
            id: "order-2".into(),
            outcome: done
        }
    );
    assert_eq!(p.calls().len(), 4);
}
