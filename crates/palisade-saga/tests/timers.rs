//! Durable timers on a manual clock: a step timeout and a saga deadline fire
//! when due, and after a restart when they passed while no runner ran.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Kind, Participant, crash_after, step};
use palisade_saga::{InMemoryEventStore, ManualClock, Outcome, Saga, SagaBuilder};

type State = Vec<usize>;

fn saga(
    store: &Arc<InMemoryEventStore>,
    clock: &ManualClock,
    p: &Participant,
    owner: &str,
    step_timeout: Option<Duration>,
) -> SagaBuilder<State> {
    let mut hanging = step(p, 1, Kind::Compensatable { compensation: true }, 1);
    if let Some(t) = step_timeout {
        hanging = hanging.timeout(t);
    }
    Saga::builder("timers", Arc::clone(store))
        .owner(owner.to_owned())
        .clock(clock.shared())
        .sleeper(clock.sleeper())
        .lease(Duration::from_secs(30))
        .step(step(p, 0, Kind::Compensatable { compensation: true }, 1))
        .step(hanging)
}

async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_step_timeout_fires_when_due() {
    let (store, clock, p) = (
        Arc::new(InMemoryEventStore::new()),
        ManualClock::new(),
        Participant::new(),
    );
    p.hang(1);
    let saga = saga(&store, &clock, &p, "a", Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    let run = tokio::spawn(async move { saga.start("t", vec![]).await });
    settle().await;
    clock.advance(Duration::from_secs(9));
    settle().await;
    assert!(!run.is_finished());
    clock.advance(Duration::from_secs(1));
    let outcome = run.await.unwrap().unwrap();
    assert_eq!(
        outcome,
        Outcome::Compensated {
            state: vec![0],
            error: "the step timed out after 10s".into()
        }
    );
    assert_eq!(
        p.calls_of("t"),
        [(0, false, 1), (1, false, 1), (0, true, 1)]
    );
}

#[tokio::test]
async fn a_saga_deadline_fires_when_due() {
    let (store, clock, p) = (
        Arc::new(InMemoryEventStore::new()),
        ManualClock::new(),
        Participant::new(),
    );
    p.hang(1);
    let saga = saga(&store, &clock, &p, "a", None)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let run = tokio::spawn(async move { saga.start("t", vec![]).await });
    settle().await;
    clock.advance(Duration::from_millis(4_999));
    settle().await;
    assert!(!run.is_finished());
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        run.await.unwrap().unwrap(),
        Outcome::Compensated {
            state: vec![0],
            error: "the saga's deadline passed".into()
        }
    );
}

/// A runner dies during step 1; time passes with no runner; another resumes it.
async fn crash_then_recover(
    step_timeout: Option<Duration>,
    saga_timeout: Option<Duration>,
) -> (Participant, Outcome<State>) {
    let (store, clock, p) = (
        Arc::new(InMemoryEventStore::new()),
        ManualClock::new(),
        Participant::new(),
    );
    p.hang(1);
    let mut first = saga(&store, &clock, &p, "a", step_timeout);
    if let Some(t) = saga_timeout {
        first = first.timeout(t);
    }
    let first = first.build().unwrap();
    assert!(crash_after(200, first.start("t", vec![])).await.is_none());
    drop(first);
    assert_eq!(p.calls_of("t"), [(0, false, 1), (1, false, 1)]);

    let second = saga(&store, &clock, &p, "b", step_timeout).build().unwrap();
    // The dead runner's claim still holds: nobody takes the saga over yet.
    clock.advance(Duration::from_secs(29));
    assert!(second.recover().await.unwrap().is_empty());
    // Its lease ends after the deadline did; the next runner acts on the deadline at once.
    clock.advance(Duration::from_secs(2));
    let mut resumed = second.recover().await.unwrap();
    assert_eq!(resumed.len(), 1);
    let resumed = resumed.pop().unwrap();
    assert_eq!(resumed.id, "t");
    (p, resumed.result.unwrap())
}

#[tokio::test]
async fn a_step_timeout_that_passed_while_no_runner_ran_fires_after_the_restart() {
    let (p, outcome) = crash_then_recover(Some(Duration::from_secs(10)), None).await;
    assert_eq!(
        outcome,
        Outcome::Compensated {
            state: vec![0],
            error: "the step timed out after 10s".into()
        }
    );
    // The step was not run again: its deadline had passed.
    assert_eq!(
        p.calls_of("t"),
        [(0, false, 1), (1, false, 1), (0, true, 1)]
    );
}

#[tokio::test]
async fn a_saga_deadline_that_passed_while_no_runner_ran_fires_after_the_restart() {
    let (p, outcome) = crash_then_recover(None, Some(Duration::from_secs(20))).await;
    assert_eq!(
        outcome,
        Outcome::Compensated {
            state: vec![0],
            error: "the saga's deadline passed".into()
        }
    );
    assert_eq!(
        p.calls_of("t"),
        [(0, false, 1), (1, false, 1), (0, true, 1)]
    );
}

#[tokio::test]
async fn without_a_deadline_a_resumed_step_runs_again_as_its_next_attempt() {
    let (store, clock, p) = (
        Arc::new(InMemoryEventStore::new()),
        ManualClock::new(),
        Participant::new(),
    );
    p.hang(1);
    let first = saga(&store, &clock, &p, "a", None).build().unwrap();
    assert!(crash_after(200, first.start("t", vec![])).await.is_none());
    clock.advance(Duration::from_secs(31));
    // The participant is back: the resumed step's second attempt succeeds.
    let p2 = Participant::new();
    let second = saga(&store, &clock, &p2, "b", None).build().unwrap();
    let resumed = second.recover().await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(
        resumed[0].result.as_ref().unwrap(),
        &Outcome::Completed { state: vec![0, 1] }
    );
    assert_eq!(p2.calls_of("t"), [(1, false, 2)]);
}
