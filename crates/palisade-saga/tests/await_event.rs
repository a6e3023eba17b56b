//! Choreography that advances running sagas: a step waits for the first
//! event delivered for its correlation. An event delivered before the wait
//! or during it ends it, a redelivery advances nothing twice, a recovered
//! saga neither waits again nor misses the event, and the step's timeout
//! bounds the wait (manual clock).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::crash_after;
use palisade_event_store::{ExpectedVersion, NewEvent, RecordedEvent, StreamName, TryStreamExt};
use palisade_saga::{
    EventStore, Filter, InMemoryCheckpointStore, InMemoryEventStore, ManualClock, Outcome,
    ProcessManager, Reaction, Record, Saga, Step, Subscription,
};

type E = std::io::Error;
/// The order id, and what happened to it.
type State = (String, Vec<String>);
const LEASE: Duration = Duration::from_secs(30);

fn saga(store: &Arc<dyn EventStore>, clock: &ManualClock, owner: &str) -> Saga<State> {
    Saga::builder("pay", Arc::clone(store))
        .owner(owner.to_owned())
        .clock(clock.shared())
        .sleeper(clock.sleeper())
        .lease(LEASE)
        .step(
            Step::new("reserve", |mut s: State, _ctx| async move {
                s.1.push("reserved".into());
                Ok::<_, E>(s)
            })
            .compensate(|_s: State, _ctx| async move { Ok::<_, E>(()) }),
        )
        .step(
            Step::await_event(
                "payment",
                |s: &State| s.0.clone(),
                |mut s: State, e: &RecordedEvent| {
                    s.1.push(e.event_type.clone());
                    Ok::<_, E>(s)
                },
            )
            .timeout(Duration::from_secs(60)),
        )
        .step(Step::new("ship", |mut s: State, _ctx| async move {
            s.1.push("shipped".into());
            Ok::<_, E>(s)
        }))
        .build()
        .unwrap()
}

/// Appends `event_type` to the stream `payment-{order}` and returns it as recorded.
async fn paid(store: &Arc<dyn EventStore>, order: &str, event_type: &str) -> RecordedEvent {
    let stream = StreamName::new(format!("payment-{order}")).unwrap();
    store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::json(event_type, &()).unwrap()],
        )
        .await
        .unwrap();
    let events: Vec<_> = store
        .read_stream(&stream, palisade_event_store::ReadStream::forward())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    events.last().unwrap().clone()
}

fn types(log: &[Record]) -> Vec<&'static str> {
    log.iter().map(Record::event_type).collect()
}

const COMPLETED: [&str; 11] = [
    "SagaStarted",
    "Claimed",
    "StepStarted",
    "StepCompleted",
    "StepStarted",
    "Waiting",
    "EventReceived",
    "StepCompleted",
    "StepStarted",
    "StepCompleted",
    "SagaCompleted",
];

fn done(order: &str) -> Outcome<State> {
    Outcome::Completed {
        state: (
            order.into(),
            vec!["reserved".into(), "PaymentTaken".into(), "shipped".into()],
        ),
    }
}

/// Lets a spawned run go as far as it can without the clock moving.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn an_event_delivered_before_the_wait_ends_it_at_once() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let clock = ManualClock::new();
    let saga = saga(&store, &clock, "a");
    let event = paid(&store, "o1", "PaymentTaken").await;
    assert!(saga.deliver("o1", &event).await.unwrap());
    assert_eq!(
        saga.start("o1", ("o1".into(), vec![])).await.unwrap(),
        done("o1")
    );
    let log = saga.log("o1").await.unwrap();
    assert_eq!(types(&log), COMPLETED);
    assert_eq!(
        log[5],
        Record::Waiting {
            step: 1,
            correlation: "o1".into()
        }
    );
    assert_eq!(
        log[6],
        Record::EventReceived {
            step: 1,
            event: event.id,
            event_type: "PaymentTaken".into()
        }
    );
}

#[tokio::test]
async fn a_process_manager_advances_a_waiting_saga_once_however_often_the_event_comes() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let clock = ManualClock::new();
    let runner = saga(&store, &clock, "a");
    let run = tokio::spawn({
        let runner = runner.clone();
        async move { runner.start("o2", ("o2".into(), vec![])).await }
    });
    settle().await;
    assert!(!run.is_finished());
    assert_eq!(
        types(&runner.log("o2").await.unwrap()).last(),
        Some(&"Waiting")
    );

    paid(&store, "o2", "PaymentTaken").await;
    let manager = |checkpoints: Arc<InMemoryCheckpointStore>| {
        let (store, saga) = (Arc::clone(&store), saga(&store, &clock, "pm"));
        async move {
            let subscription =
                Subscription::start(store, checkpoints, "payments", Filter::category("payment"))
                    .await
                    .unwrap();
            ProcessManager::new(saga, subscription, |_| None).advance(|e| {
                (e.event_type == "PaymentTaken")
                    .then(|| e.stream.as_str()["payment-".len()..].to_owned())
            })
        }
    };
    let mut pm = manager(Arc::new(InMemoryCheckpointStore::new())).await;
    assert_eq!(
        pm.handle_next().await.unwrap(),
        Reaction::Delivered {
            correlation: "o2".into(),
            duplicate: false
        }
    );
    assert_eq!(run.await.unwrap().unwrap(), done("o2"));
    // A process manager without the checkpoint delivers the event again: kept once, nothing advances.
    let mut again = manager(Arc::new(InMemoryCheckpointStore::new())).await;
    assert_eq!(
        again.handle_next().await.unwrap(),
        Reaction::Delivered {
            correlation: "o2".into(),
            duplicate: true
        }
    );
    let kept: Vec<_> = store
        .read_stream(
            &StreamName::new("sagaevent-pay/o2").unwrap(),
            palisade_event_store::ReadStream::forward(),
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(types(&runner.log("o2").await.unwrap()), COMPLETED);
    assert_eq!(
        runner.start("o2", ("o2".into(), vec![])).await.unwrap(),
        done("o2")
    );
}

#[tokio::test]
async fn a_saga_recovered_while_waiting_waits_on_and_finds_the_event_delivered_meanwhile() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let clock = ManualClock::new();
    let dead = saga(&store, &clock, "dead");
    assert!(
        crash_after(200, dead.start("o3", ("o3".into(), vec![])))
            .await
            .is_none()
    );
    assert_eq!(
        types(&dead.log("o3").await.unwrap()),
        COMPLETED[..6].to_vec()
    );
    // The event comes while no runner runs the saga.
    let event = paid(&store, "o3", "PaymentTaken").await;
    assert!(dead.deliver("o3", &event).await.unwrap());
    assert!(!dead.deliver("o3", &event).await.unwrap());
    clock.advance(LEASE);
    let mut resumed = saga(&store, &clock, "b").recover().await.unwrap();
    assert_eq!(resumed.len(), 1);
    let resumed = resumed.pop().unwrap();
    assert_eq!(resumed.id, "o3");
    assert_eq!(resumed.result.unwrap(), done("o3"));
    // It did not wait again: one StepStarted and one Waiting for the wait, then the event.
    let log = dead.log("o3").await.unwrap();
    assert_eq!(
        types(&log),
        [
            "SagaStarted",
            "Claimed",
            "StepStarted",
            "StepCompleted",
            "StepStarted",
            "Waiting",
            "Claimed",
            "EventReceived",
            "StepCompleted",
            "StepStarted",
            "StepCompleted",
            "SagaCompleted",
        ]
    );
}

#[tokio::test]
async fn the_steps_timeout_ends_the_wait_and_its_deadline_holds_across_a_recovery() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let clock = ManualClock::new();
    let dead = saga(&store, &clock, "dead");
    assert!(
        crash_after(200, dead.start("o4", ("o4".into(), vec![])))
            .await
            .is_none()
    );
    // 40 s of the 60 s pass with no runner; the next one waits only the 20 s left.
    clock.advance(Duration::from_secs(40));
    let runner = saga(&store, &clock, "b");
    let run = tokio::spawn(async move { runner.recover().await });
    settle().await;
    clock.advance(Duration::from_secs(19));
    settle().await;
    assert!(!run.is_finished());
    clock.advance(Duration::from_secs(1));
    let mut resumed = run.await.unwrap().unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(
        resumed.pop().unwrap().result.unwrap(),
        Outcome::Compensated {
            state: ("o4".into(), vec!["reserved".into()]),
            error: "the step timed out after 60s".into()
        }
    );
    let log = dead.log("o4").await.unwrap();
    let types = types(&log);
    assert_eq!(types.iter().filter(|t| **t == "Waiting").count(), 1);
    assert!(!types.contains(&"EventReceived"));
    assert_eq!(
        types[types.len() - 4..],
        [
            "StepFailed",
            "CompensationStarted",
            "CompensationCompleted",
            "SagaCompensated"
        ]
    );
    // An event that comes after the timeout advances nothing.
    let event = paid(&store, "o4", "PaymentTaken").await;
    assert!(dead.deliver("o4", &event).await.unwrap());
    assert_eq!(dead.log("o4").await.unwrap().len(), log.len());
}

#[test]
fn a_wait_step_with_retries_fails_build() {
    let store = Arc::new(InMemoryEventStore::new());
    let err = Saga::<State>::builder("pay", store)
        .step(
            Step::await_event(
                "payment",
                |s: &State| s.0.clone(),
                |s: State, _e: &RecordedEvent| Ok::<_, E>(s),
            )
            .retry(
                palisade_saga::Retry::builder()
                    .max_attempts(2)
                    .build()
                    .unwrap(),
            ),
        )
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "step");
    assert!(
        err.to_string()
            .contains("`payment` waits for an event: it has no attempts to retry"),
        "{err}"
    );
}

#[tokio::test]
async fn an_invalid_correlation_fails_the_delivery_and_the_step() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let clock = ManualClock::new();
    let saga = saga(&store, &clock, "a");
    let event = paid(&store, "o5", "PaymentTaken").await;
    assert!(matches!(
        saga.deliver("", &event).await,
        Err(palisade_saga::Error::InvalidCorrelation { correlation, .. }) if correlation.is_empty()
    ));
    let outcome = saga.start("o5", (String::new(), vec![])).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Compensated {
            state: (String::new(), vec!["reserved".into()]),
            error: "invalid correlation \"\": must not be empty".into()
        }
    );
}
