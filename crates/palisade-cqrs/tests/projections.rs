//! Projections: several side by side with their own checkpoints, failure
//! handling (stop, dead letters and their replay), at least once and, on
//! SQLite, exactly once through crashes at random moments.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use palisade_cqrs::{
    Backoff, BoxError, CheckpointStore, Event, EventStore, FailurePolicy, InMemoryCheckpointStore,
    InMemoryEventStore, Projection, ProjectionContext, ProjectionRunner, Projector, RecordedEvent,
    StreamName,
};
use palisade_event_store::{ExpectedVersion, NewEvent};
use parking_lot::Mutex;

async fn append(store: &Arc<dyn EventStore>, stream: &str, n: u64) {
    let stream = StreamName::new(stream).unwrap();
    for i in 0..n {
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::json("Counted", &i).unwrap()],
            )
            .await
            .unwrap();
    }
}

/// Counts events per stream; fails on events whose payload is `poison` while `broken`.
#[derive(Default)]
struct Counter {
    seen: Mutex<HashMap<String, u64>>,
    total: AtomicU64,
    poison: Option<u64>,
    broken: AtomicBool,
}

#[async_trait::async_trait]
impl Projection for Counter {
    async fn handle(&self, event: &RecordedEvent, _: ProjectionContext) -> Result<(), BoxError> {
        let value: u64 = event.decode()?;
        if Some(value) == self.poison && self.broken.load(Ordering::SeqCst) {
            return Err(format!("cannot count {value}").into());
        }
        *self
            .seen
            .lock()
            .entry(event.stream.to_string())
            .or_default() += 1;
        self.total.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn quick(policy: FailurePolicy) -> FailurePolicy {
    policy.backoff(Backoff::fixed(Duration::from_millis(10)))
}

#[tokio::test(start_paused = true)]
async fn projections_run_side_by_side_with_their_own_checkpoints() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    append(&store, "order-1", 3).await;
    append(&store, "cart-1", 2).await;
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let all = Arc::new(Counter::default());
    let orders = Arc::new(Counter::default());
    let runner = ProjectionRunner::builder(Arc::clone(&store))
        .projection(Projector::new("all", Arc::clone(&all), checkpoints.clone()))
        .projection(
            Projector::new("orders", Arc::clone(&orders), checkpoints.clone())
                .filter(palisade_cqrs::Filter::category("order")),
        )
        .start()
        .await
        .unwrap();
    runner
        .wait_caught_up(Duration::from_millis(5))
        .await
        .unwrap();
    assert_eq!(runner.status("all").unwrap().handled, 5);
    assert_eq!(runner.status("orders").unwrap().handled, 3);
    assert_eq!(runner.lag("all").await.unwrap(), 0);
    assert_eq!(
        runner.lag("orders").await.unwrap(),
        2,
        "the two cart events come after its checkpoint"
    );
    drop(runner);

    // A restart resumes after each checkpoint.
    append(&store, "order-2", 1).await;
    let runner = ProjectionRunner::builder(Arc::clone(&store))
        .projection(Projector::new("all", Arc::clone(&all), checkpoints.clone()))
        .projection(
            Projector::new("orders", Arc::clone(&orders), checkpoints.clone())
                .filter(palisade_cqrs::Filter::category("order")),
        )
        .start()
        .await
        .unwrap();
    runner
        .wait_caught_up(Duration::from_millis(5))
        .await
        .unwrap();
    assert_eq!(all.total.load(Ordering::SeqCst), 6);
    assert_eq!(orders.total.load(Ordering::SeqCst), 4);
    assert_eq!(
        checkpoints.load("all").await.unwrap(),
        Some(store.head().await.unwrap())
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_event_is_retried_then_stops_the_projection() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    append(&store, "order-1", 4).await;
    let counter = Arc::new(Counter {
        poison: Some(2),
        broken: AtomicBool::new(true),
        ..Counter::default()
    });
    let failures = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&failures);
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let runner = ProjectionRunner::builder(Arc::clone(&store))
        .listener(move |e: &Event| {
            if let Event::ProjectionFailed {
                attempt, retry_in, ..
            } = e
            {
                seen.lock().push((*attempt, *retry_in));
            }
        })
        .projection(
            Projector::new("p", Arc::clone(&counter), checkpoints.clone())
                .on_failure(quick(FailurePolicy::stop_after(3))),
        )
        .start()
        .await
        .unwrap();
    runner
        .wait_caught_up(Duration::from_millis(5))
        .await
        .unwrap();
    let status = runner.status("p").unwrap();
    assert_eq!(status.handled, 2);
    assert_eq!(status.stopped.as_deref(), Some("cannot count 2"));
    assert_eq!(
        *failures.lock(),
        [
            (1, Duration::from_millis(10)),
            (2, Duration::from_millis(10))
        ]
    );
    // The checkpoint is the last event applied: event 3 of 4 comes again after a fix.
    assert_eq!(checkpoints.load("p").await.unwrap().unwrap().sequence, 2);
}

#[tokio::test(start_paused = true)]
async fn dead_letters_let_the_projection_go_on_and_replay_once() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    append(&store, "order-1", 5).await;
    let counter = Arc::new(Counter {
        poison: Some(1),
        broken: AtomicBool::new(true),
        ..Counter::default()
    });
    let runner = ProjectionRunner::builder(Arc::clone(&store))
        .projection(
            Projector::new(
                "p",
                Arc::clone(&counter),
                Arc::new(InMemoryCheckpointStore::new()),
            )
            .on_failure(quick(FailurePolicy::dead_letter_after(2))),
        )
        .start()
        .await
        .unwrap();
    runner
        .wait_caught_up(Duration::from_millis(5))
        .await
        .unwrap();
    let status = runner.status("p").unwrap();
    assert_eq!(
        (status.handled, status.dead_lettered, status.stopped),
        (4, 1, None)
    );
    let letters = runner.dead_letters("p").await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!((letters[0].event.version, letters[0].attempts), (2, 2));
    assert_eq!(letters[0].error, "cannot count 1");

    // Still broken: the replay fails and the letter stays.
    assert_eq!(runner.replay_dead_letters("p").await.unwrap(), 0);
    assert_eq!(runner.dead_letters("p").await.unwrap().len(), 1);
    counter.broken.store(false, Ordering::SeqCst);
    assert_eq!(runner.replay_dead_letters("p").await.unwrap(), 1);
    assert_eq!(runner.replay_dead_letters("p").await.unwrap(), 0);
    assert!(runner.dead_letters("p").await.unwrap().is_empty());
    assert_eq!(counter.total.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn bad_runner_settings_name_their_method() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let cp: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
    let c = || Arc::new(Counter::default());
    let field = |r: Result<ProjectionRunner, palisade_cqrs::RunnerError>| match r.unwrap_err() {
        palisade_cqrs::RunnerError::Config(e) => e.field(),
        other => panic!("{other}"),
    };
    let b = || ProjectionRunner::builder(Arc::clone(&store));
    assert_eq!(field(b().name("").start().await), "name");
    assert_eq!(field(b().page_size(0).start().await), "page_size");
    assert_eq!(field(b().batch_size(0).start().await), "batch_size");
    assert_eq!(
        field(
            b().projection(Projector::new("a", c(), cp.clone()))
                .projection(Projector::new("a", c(), cp.clone()))
                .start()
                .await
        ),
        "projection"
    );
    assert_eq!(
        field(
            b().projection(
                Projector::new("a", c(), cp.clone()).on_failure(FailurePolicy::stop_after(0))
            )
            .start()
            .await
        ),
        "on_failure"
    );
    assert!(matches!(
        b().start().await.unwrap().status("nope"),
        Err(palisade_cqrs::RunnerError::UnknownProjection(_))
    ));
}

/// A view (events per stream) with a side effect (an "email" per live event).
#[derive(Default)]
struct Emailing {
    view: Mutex<std::collections::BTreeMap<String, u64>>,
    emails: AtomicU64,
}

#[async_trait::async_trait]
impl Projection for Emailing {
    async fn handle(&self, event: &RecordedEvent, ctx: ProjectionContext) -> Result<(), BoxError> {
        *self
            .view
            .lock()
            .entry(event.stream.to_string())
            .or_default() += 1;
        if !ctx.replaying {
            self.emails.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

async fn head_at_least(store: &Arc<dyn EventStore>, sequence: u64) {
    while store.head().await.unwrap().sequence < sequence {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_while_writes_go_on_matches_a_fresh_replay_and_repeats_no_side_effect() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..550u64 {
                let stream = StreamName::new(format!("order-{}", i % 5)).unwrap();
                store
                    .append(
                        &stream,
                        ExpectedVersion::Any,
                        vec![NewEvent::json("Counted", &i).unwrap()],
                    )
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let v1 = Arc::new(Emailing::default());
    let v2 = Arc::new(Emailing::default());
    let mut runner = ProjectionRunner::builder(Arc::clone(&store))
        .page_size(16)
        .projection(Projector::new(
            "orders_v1",
            Arc::clone(&v1),
            checkpoints.clone(),
        ))
        .start()
        .await
        .unwrap();
    head_at_least(&store, 100).await;
    runner
        .start_rebuild(
            Projector::new("orders_v2", Arc::clone(&v2), checkpoints.clone()),
            "orders_v1",
        )
        .await
        .unwrap();
    head_at_least(&store, 350).await;
    // While it rebuilds, the new version never runs ahead of the old one and sends nothing.
    let (old, new) = (
        runner.status("orders_v1").unwrap(),
        runner.status("orders_v2").unwrap(),
    );
    assert!(new.position <= old.position, "{new:?} ran ahead of {old:?}");
    assert_eq!(v2.emails.load(Ordering::SeqCst), 0);
    assert_eq!(new.replayed, new.handled);

    let last = runner.promote("orders_v2").await.unwrap();
    assert_eq!(runner.status("orders_v1").unwrap().position, last);
    assert!(runner.status("orders_v1").unwrap().stopped.is_some());
    writer.await.unwrap();
    // And 50 more after the switch, which only the new version sees.
    for i in 550..600u64 {
        let stream = StreamName::new(format!("order-{}", i % 5)).unwrap();
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::json("Counted", &i).unwrap()],
            )
            .await
            .unwrap();
    }
    runner
        .wait_caught_up(Duration::from_millis(2))
        .await
        .unwrap();

    // Every event's side effect happened once, in one version or the other.
    let (sent1, sent2) = (
        v1.emails.load(Ordering::SeqCst),
        v2.emails.load(Ordering::SeqCst),
    );
    assert_eq!(
        sent1 + sent2,
        600,
        "v1 sent {sent1}, v2 sent {sent2}, last {last}, v2 {:?}, head {}",
        runner.status("orders_v2").unwrap(),
        store.head().await.unwrap()
    );
    assert_eq!(
        sent1, last.sequence,
        "the old version sent one per event up to its last"
    );
    let status = runner.status("orders_v2").unwrap();
    assert_eq!(status.handled, 600);
    assert_eq!(status.replayed, last.sequence);

    // The rebuilt view is the view a fresh replay gives.
    let fresh = Arc::new(Emailing::default());
    let replay = ProjectionRunner::builder(Arc::clone(&store))
        .projection(Projector::new(
            "fresh",
            Arc::clone(&fresh),
            Arc::new(InMemoryCheckpointStore::new()),
        ))
        .start()
        .await
        .unwrap();
    replay
        .wait_caught_up(Duration::from_millis(2))
        .await
        .unwrap();
    assert_eq!(*v2.view.lock(), *fresh.view.lock());
    assert_eq!(fresh.view.lock().values().sum::<u64>(), 600);
}

#[tokio::test]
async fn only_a_rebuild_can_be_promoted_and_a_rebuild_needs_a_running_original() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let cp: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
    let mut runner = ProjectionRunner::builder(Arc::clone(&store))
        .projection(Projector::new(
            "a",
            Arc::new(Counter::default()),
            cp.clone(),
        ))
        .start()
        .await
        .unwrap();
    let config = |e: palisade_cqrs::RunnerError| match e {
        palisade_cqrs::RunnerError::Config(c) => c.field(),
        other => panic!("{other}"),
    };
    assert_eq!(config(runner.promote("a").await.unwrap_err()), "promote");
    assert!(matches!(
        runner
            .start_rebuild(
                Projector::new("b", Arc::new(Counter::default()), cp.clone()),
                "nope"
            )
            .await,
        Err(palisade_cqrs::RunnerError::UnknownProjection(_))
    ));
    assert_eq!(
        config(
            runner
                .start_rebuild(
                    Projector::new("a", Arc::new(Counter::default()), cp.clone()),
                    "a"
                )
                .await
                .unwrap_err()
        ),
        "start_rebuild"
    );
}

/// Panics on the event whose payload is `at`; counts the others.
struct PanicsAt {
    at: u64,
    handled: AtomicU64,
}

#[async_trait::async_trait]
impl Projection for PanicsAt {
    async fn handle(&self, event: &RecordedEvent, _: ProjectionContext) -> Result<(), BoxError> {
        let value: u64 = event.decode()?;
        assert!(value != self.at, "projection bug on {value}");
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_projection_stops_with_the_panic_and_wait_caught_up_returns() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    append(&store, "order-1", 3).await; // payloads 0, 1, 2
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let projection = Arc::new(PanicsAt {
        at: 1,
        handled: AtomicU64::new(0),
    });
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let runner = ProjectionRunner::builder(Arc::clone(&store))
        .batch_size(1)
        .projection(Projector::new(
            "panics",
            Arc::clone(&projection),
            checkpoints.clone(),
        ))
        .listener(move |e: &Event| {
            if let Event::ProjectionStopped { error, .. } = e {
                seen.lock().push(error.clone());
            }
        })
        .start()
        .await
        .unwrap();
    // Before the fix the worker's task died with the panic: the status never
    // said stopped and this waited for ever.
    tokio::time::timeout(
        Duration::from_secs(60),
        runner.wait_caught_up(Duration::from_millis(5)),
    )
    .await
    .expect("wait_caught_up returns once the projection stopped")
    .unwrap();
    let status = runner.status("panics").unwrap();
    assert_eq!(
        status.stopped.as_deref(),
        Some("the projection panicked: projection bug on 1")
    );
    assert_eq!(status.handled, 1);
    assert_eq!(projection.handled.load(Ordering::SeqCst), 1);
    assert_eq!(
        *events.lock(),
        vec!["the projection panicked: projection bug on 1".to_owned()]
    );
    // The first event's checkpoint, where the projection stopped.
    let checkpoint = checkpoints.load("panics").await.unwrap();
    assert_eq!(checkpoint, Some(status.position));
    assert!(status.position > palisade_cqrs::Position::START);
}
