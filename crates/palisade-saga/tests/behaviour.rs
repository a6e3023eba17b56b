//! Behaviour of one runner: configuration, idempotent starts, keys and
//! attempts, retries and rejections, compensation backoff, the terminal
//! failure.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Kind, Participant, step};
use palisade_core::{Pattern, Rejected};
use palisade_saga::{
    Backoff, Error, EventStore, InMemoryEventStore, Outcome, Record, Retry, Saga, Step, StepContext,
};

type E = std::io::Error;

fn noop(name: &str) -> Step<u32> {
    Step::new(name.to_owned(), |n: u32, _| async move { Ok::<_, E>(n) })
}

fn builder() -> palisade_saga::SagaBuilder<u32> {
    Saga::builder("t", Arc::new(InMemoryEventStore::new()))
}

#[test]
fn bad_settings_fail_in_build_naming_the_method() {
    let field = |b: palisade_saga::SagaBuilder<u32>| b.build().unwrap_err().field();
    assert_eq!(field(builder()), "step");
    assert_eq!(
        field(Saga::builder("", InMemoryEventStore::new()).step(noop("a"))),
        "name"
    );
    assert_eq!(
        field(Saga::builder("a/b", InMemoryEventStore::new()).step(noop("a"))),
        "name"
    );
    assert_eq!(field(builder().step(noop("a")).step(noop("a"))), "step");
    assert_eq!(
        field(builder().step(noop("a").pivot()).step(noop("b").pivot())),
        "step"
    );
    assert_eq!(field(builder().step(noop("a").retriable())), "step");
    assert_eq!(
        field(builder().step(noop("a").pivot()).step(noop("b"))),
        "step"
    );
    let undoable_pivot = noop("a")
        .compensate(|_, _| async { Ok::<_, E>(()) })
        .pivot();
    assert_eq!(field(builder().step(undoable_pivot)), "step");
    assert_eq!(
        field(builder().step(noop("a").timeout(Duration::ZERO))),
        "timeout"
    );
    assert_eq!(
        field(builder().step(noop("a")).timeout(Duration::ZERO)),
        "timeout"
    );
    assert_eq!(field(builder().step(noop("a")).owner("")), "owner");
    assert_eq!(
        field(builder().step(noop("a")).lease(Duration::ZERO)),
        "lease"
    );
    assert_eq!(
        field(builder().step(noop("a")).recovery_attempts(0)),
        "recovery_attempts"
    );
    let nan = Backoff::exponential(Duration::from_millis(1)).factor(f64::NAN);
    assert_eq!(
        field(builder().step(noop("a")).recovery_backoff(nan)),
        "recovery_backoff"
    );
    assert!(
        builder()
            .step(noop("a").pivot())
            .step(noop("b").retriable())
            .build()
            .is_ok()
    );
}

#[tokio::test]
async fn a_bad_id_is_an_error_and_nothing_is_written() {
    let store = Arc::new(InMemoryEventStore::new());
    let saga = Saga::builder("t", Arc::clone(&store))
        .step(noop("a"))
        .build()
        .unwrap();
    for id in ["", "a/b", "a b"] {
        let err = saga.start(id, 1).await.unwrap_err();
        assert!(matches!(err, Error::InvalidId { .. }), "{id:?}: {err}");
    }
    assert_eq!(
        store.head().await.unwrap(),
        palisade_event_store::Position::START
    );
}

#[tokio::test]
async fn starting_an_existing_id_returns_that_saga_without_running_it_again() {
    let p = Participant::new();
    let saga = Saga::builder("t", InMemoryEventStore::new())
        .step(step(&p, 0, Kind::Compensatable { compensation: true }, 1))
        .step(step(&p, 1, Kind::Pivot, 1))
        .build()
        .unwrap();
    let first = saga.start("a", vec![7]).await.unwrap();
    assert_eq!(
        first,
        Outcome::Completed {
            state: vec![7, 0, 1]
        }
    );
    // Another state, the same id: the first saga's outcome, nothing run.
    assert_eq!(saga.start("a", vec![]).await.unwrap(), first);
    assert_eq!(p.calls_of("a"), [(0, false, 1), (1, false, 1)]);
}

#[tokio::test]
async fn a_saga_claimed_by_a_live_runner_is_not_started_twice() {
    let store = Arc::new(InMemoryEventStore::new());
    let p = Participant::new();
    p.hang(0);
    let build = |owner: &str| {
        Saga::builder("t", Arc::clone(&store))
            .owner(owner.to_owned())
            .step(step(
                &p,
                0,
                Kind::Compensatable {
                    compensation: false,
                },
                1,
            ))
            .build()
            .unwrap()
    };
    let (a, b) = (build("a"), build("b"));
    let running = tokio::spawn(async move { a.start("x", vec![]).await });
    tokio::task::yield_now().await;
    match b.start("x", vec![]).await.unwrap_err() {
        Error::Claimed { id, owner } => assert_eq!((id.as_str(), owner.as_str()), ("x", "a")),
        other => panic!("{other}"),
    }
    assert_eq!(p.calls_of("x"), [(0, false, 1)]);
    running.abort();
}

#[tokio::test(start_paused = true)]
async fn every_attempt_carries_the_same_key_and_its_number() {
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let retry = Retry::builder()
        .max_attempts(3)
        .backoff(Backoff::fixed(Duration::from_millis(10)))
        .no_budget()
        .build()
        .unwrap();
    let saga = builder()
        .step(noop("first"))
        .step(
            Step::new("flaky", move |n: u32, ctx: StepContext| {
                let record = Arc::clone(&record);
                async move {
                    record
                        .lock()
                        .push((ctx.key(), ctx.attempt(), ctx.step().to_owned()));
                    if ctx.attempt() < 3 {
                        Err(E::other("busy"))
                    } else {
                        Ok(n + 1)
                    }
                }
            })
            .retry(retry),
        )
        .build()
        .unwrap();
    assert_eq!(
        saga.start("o-9", 1).await.unwrap(),
        Outcome::Completed { state: 2 }
    );
    let key = "o-9/1/action".to_owned();
    assert_eq!(
        *seen.lock(),
        [
            (key.clone(), 1, "flaky".into()),
            (key.clone(), 2, "flaky".into()),
            (key, 3, "flaky".into())
        ]
    );
    let attempts: Vec<_> = saga
        .log("o-9")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::StepStarted {
                step: 1, attempt, ..
            } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_rejection_is_not_retried_and_the_saga_compensates() {
    let p = Participant::new();
    let retry = Retry::builder()
        .max_attempts(5)
        .no_budget()
        .build()
        .unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let saga = Saga::builder("t", InMemoryEventStore::new())
        .step(step(&p, 0, Kind::Compensatable { compensation: true }, 1))
        .step(
            Step::new("limited", move |s: Vec<usize>, _| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    let _ = s;
                    Err::<Vec<usize>, _>(Rejected::new(Pattern::Bulkhead, "full", None))
                }
            })
            .retry(retry),
        )
        .build()
        .unwrap();
    let outcome = saga.start("r", vec![]).await.unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        outcome,
        Outcome::Compensated {
            state: vec![0],
            error: Rejected::new(Pattern::Bulkhead, "full", None).to_string()
        }
    );
    assert_eq!(p.calls_of("r"), [(0, false, 1), (0, true, 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_failing_compensation_is_retried_after_the_backoff_and_never_skipped() {
    let p = Participant::new();
    p.fail(1, false, 1);
    p.fail(0, true, 2);
    let saga = Saga::builder("t", InMemoryEventStore::new())
        .recovery_backoff(Backoff::exponential(Duration::from_millis(100)))
        .step(step(&p, 0, Kind::Compensatable { compensation: true }, 1))
        .step(step(&p, 1, Kind::Pivot, 1))
        .build()
        .unwrap();
    let began = tokio::time::Instant::now();
    let outcome = saga.start("c", vec![]).await.unwrap();
    assert_eq!(began.elapsed(), Duration::from_millis(100 + 200));
    assert_eq!(outcome.kind(), palisade_saga::ExecutionOutcome::Compensated);
    assert_eq!(
        p.calls_of("c"),
        [
            (0, false, 1),
            (1, false, 1),
            (0, true, 1),
            (0, true, 2),
            (0, true, 3)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_compensation_that_cannot_finish_ends_failed_with_its_error() {
    let p = Participant::new();
    p.fail(2, false, 1);
    p.fail(1, true, 10);
    let saga = Saga::builder("t", InMemoryEventStore::new())
        .recovery_backoff(Backoff::fixed(Duration::from_secs(1)))
        .recovery_attempts(3)
        .step(step(&p, 0, Kind::Compensatable { compensation: true }, 1))
        .step(step(&p, 1, Kind::Compensatable { compensation: true }, 1))
        .step(step(&p, 2, Kind::Compensatable { compensation: true }, 1))
        .build()
        .unwrap();
    let outcome = saga.start("f", vec![]).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Failed {
            state: vec![0, 1],
            step: "s1".into(),
            error: "s1 compensation failed".into()
        }
    );
    // Step 0's compensation never ran: a failing one is not skipped.
    assert_eq!(
        p.calls_of("f"),
        [
            (0, false, 1),
            (1, false, 1),
            (2, false, 1),
            (1, true, 1),
            (1, true, 2),
            (1, true, 3)
        ]
    );
    let log = saga.log("f").await.unwrap();
    assert_eq!(
        log.last(),
        Some(&Record::SagaFailed {
            step: 1,
            branch: None,
            error: "s1 compensation failed".into()
        })
    );
    // Ended: starting it again returns the same failure.
    assert_eq!(saga.start("f", vec![]).await.unwrap(), outcome);
}

#[tokio::test(start_paused = true)]
async fn a_step_after_the_pivot_goes_forward_only() {
    let p = Participant::new();
    p.fail(1, false, 4);
    let saga = Saga::builder("t", InMemoryEventStore::new())
        .recovery_backoff(Backoff::fixed(Duration::from_secs(1)))
        .step(step(&p, 0, Kind::Pivot, 1))
        .step(step(&p, 1, Kind::Retriable, 2))
        .build()
        .unwrap();
    let began = tokio::time::Instant::now();
    assert_eq!(
        saga.start("g", vec![]).await.unwrap(),
        Outcome::Completed { state: vec![0, 1] }
    );
    // Two rounds of two attempts failed, 1 s apart; the third round's first attempt succeeded.
    assert_eq!(
        p.calls_of("g"),
        [
            (0, false, 1),
            (1, false, 1),
            (1, false, 2),
            (1, false, 3),
            (1, false, 4),
            (1, false, 5)
        ]
    );
    assert_eq!(
        began.elapsed(),
        Duration::from_secs(2) + Duration::from_millis(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_run_on_spawned_tasks_concurrently() {
    let p = Participant::new();
    let saga = Saga::builder("t", InMemoryEventStore::new())
        .step(step(&p, 0, Kind::Compensatable { compensation: true }, 1))
        .step(step(&p, 1, Kind::Pivot, 1))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let saga = saga.clone();
            tokio::spawn(async move { saga.start(&format!("s{i}"), vec![]).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(
            t.await.unwrap().unwrap(),
            Outcome::Completed { state: vec![0, 1] }
        );
    }
    assert_eq!(p.calls().len(), 128);
    assert_eq!(p.applied().len(), 128);
    assert_eq!(p.max_in_flight(), 1);
}
