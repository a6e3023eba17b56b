//! What a black-box review found, each as the test that failed first: a
//! claim taken from an action that ran less than the lease, a redeployed
//! definition with fewer branches reading an old log, a corrupt step index.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use palisade_event_store::{ExpectedVersion, NewEvent, StreamName};
use palisade_saga::{
    EventStore, InMemoryEventStore, ManualClock, Outcome, Record, Retry, Saga, Step,
};

type E = std::io::Error;

/// Each attempt starts with at least half a lease ahead of it: an attempt
/// that has run for less than half the lease is never taken over, however
/// long the attempts before it took. (The claim used to be renewed only
/// before a step's first attempt: a second attempt could start with a
/// sliver of the lease left and be taken over while it ran.)
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_attempt_running_less_than_half_the_lease_keeps_its_claim() {
    let store = Arc::new(InMemoryEventStore::new());
    let clock = ManualClock::new();
    let runs = Arc::new(AtomicU32::new(0));
    let build = |owner: &str| {
        let (c, runs) = (clock.clone(), Arc::clone(&runs));
        let retry = Retry::builder()
            .max_attempts(2)
            .max_delay(Duration::ZERO)
            .no_budget()
            .build()
            .unwrap();
        Saga::<u32>::builder("lease", Arc::clone(&store))
            .owner(owner.to_owned())
            .clock(clock.shared())
            .lease(Duration::from_secs(10))
            .step(
                Step::new("two", move |s: u32, _| {
                    let c = c.clone();
                    let n = runs.fetch_add(1, SeqCst);
                    async move {
                        match n {
                            0 => {
                                c.advance(Duration::from_millis(5_100));
                                Err(E::other("first attempt fails late"))
                            }
                            1 => {
                                c.advance(Duration::from_millis(4_900));
                                std::future::pending::<()>().await;
                                Ok(s)
                            }
                            _ => Ok(s + 1),
                        }
                    }
                })
                .retry(retry),
            )
            .build()
            .unwrap()
    };
    let a = build("a");
    let first = tokio::spawn(async move { a.start("l1", 0).await });
    tokio::time::sleep(Duration::from_millis(1)).await;
    // 10 s since the first claim, 4.9 s into the second attempt, which
    // renewed the claim as it started (4.9 s were left): "a" still holds it.
    let resumed = build("b").recover().await.unwrap();
    assert!(resumed.is_empty(), "{resumed:?}");
    assert_eq!(runs.load(SeqCst), 2);
    assert!(!first.is_finished());
    // Past the lease renewed by that attempt, it may be taken over, as the guide says.
    clock.advance(Duration::from_millis(5_200));
    let resumed = build("b").recover().await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert!(matches!(
        resumed[0].result,
        Ok(Outcome::Completed { state: 1 })
    ));
    assert_eq!(runs.load(SeqCst), 3);
    first.abort();
}

/// A saga that ended failed in a branch, read by a definition that no longer
/// has that branch: the stored outcome, no panic.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_definition_with_fewer_branches_reads_an_old_failed_saga() {
    let store = Arc::new(InMemoryEventStore::new());
    let v1 = Saga::<u32>::builder("par", Arc::clone(&store))
        .recovery_attempts(1)
        .step(Step::parallel(
            "fan",
            vec![
                Step::new("a", |s: u32, _| async move { Ok::<_, E>(s) })
                    .compensate(|_, _| async { Ok::<_, E>(()) }),
                Step::new("b", |s: u32, _| async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok::<_, E>(s)
                })
                .compensate(|_, _| async { Err::<(), _>(E::other("undo b down")) }),
            ],
            |s, _| s,
        ))
        .step(
            Step::new("pay", |_: u32, _| async {
                Err::<u32, _>(E::other("declined"))
            })
            .pivot(),
        )
        .build()
        .unwrap();
    let first = v1.start("p1", 0).await.unwrap();
    assert!(matches!(first, Outcome::Failed { .. }), "{first:?}");
    let v2 = Saga::<u32>::builder("par", Arc::clone(&store))
        .step(Step::parallel(
            "fan",
            vec![
                Step::new("a", |s: u32, _| async move { Ok::<_, E>(s) })
                    .compensate(|_, _| async { Ok::<_, E>(()) }),
            ],
            |s, _| s,
        ))
        .step(Step::new("pay", |s: u32, _| async move { Ok::<_, E>(s) }).pivot())
        .build()
        .unwrap();
    let again = v2.start("p1", 0).await.unwrap();
    assert!(matches!(again, Outcome::Failed { .. }), "{again:?}");
}

/// A corrupt record naming step `usize::MAX`: an error, never a wrap to step 0
/// that would run completed steps again.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_corrupt_step_index_is_an_error_not_a_restart() {
    let store = Arc::new(InMemoryEventStore::new());
    let clock = ManualClock::new();
    let runs = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&runs);
    let saga = Saga::<u32>::builder("cor", Arc::clone(&store))
        .clock(clock.shared())
        .lease(Duration::from_secs(1))
        .step(Step::new("a", move |_s: u32, _| {
            counted.fetch_add(1, SeqCst);
            async move {
                std::future::pending::<()>().await;
                Ok::<_, E>(0)
            }
        }))
        .build()
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(1), saga.start("c1", 0))
            .await
            .is_err()
    );
    let record = Record::StepCompleted {
        step: usize::MAX,
        state: serde_json::json!(7),
    };
    let n = saga.log("c1").await.unwrap().len() as u64;
    store
        .append(
            &StreamName::new("saga-cor/c1").unwrap(),
            ExpectedVersion::Exact(n),
            vec![NewEvent::json(record.event_type(), &record).unwrap()],
        )
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));
    let resumed = saga.recover().await.unwrap();
    assert!(resumed.iter().all(|r| r.result.is_err()), "{resumed:?}");
    assert_eq!(runs.load(SeqCst), 1, "step a did not run again");
}
