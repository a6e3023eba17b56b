//! Parallel branches: fan out and join; when a branch fails, the running
//! ones are cancelled and the completed ones compensated; a resumed saga runs
//! again only the branches its log does not record as completed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::crash_after;
use palisade_saga::{
    InMemoryEventStore, ManualClock, Outcome, Record, Saga, SagaBuilder, Step, StepContext,
};
use parking_lot::Mutex;

type E = std::io::Error;
type Log = Arc<Mutex<Vec<String>>>;

/// How a branch behaves.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    Succeed,
    Fail,
    Hang,
}

/// Records itself when it is dropped unfinished (cancelled).
struct Cancelled(Log, String);
impl Drop for Cancelled {
    fn drop(&mut self) {
        self.0.lock().push(format!("cancelled {}", self.1));
    }
}

/// A branch named `name` that appends its name to the state; it waits for an
/// entry of the log starting with `after` before it answers, so the order is fixed.
fn branch(
    log: &Log,
    name: &'static str,
    then: Then,
    after: Option<&'static str>,
) -> Step<Vec<String>> {
    let (l, c) = (Arc::clone(log), Arc::clone(log));
    Step::new(name, move |mut s: Vec<String>, ctx: StepContext| {
        let l = Arc::clone(&l);
        async move {
            l.lock().push(format!(
                "{} attempt {} key {}",
                ctx.step(),
                ctx.attempt(),
                ctx.key()
            ));
            let guard = Cancelled(Arc::clone(&l), name.to_owned());
            while let Some(a) = after {
                if l.lock().iter().any(|e| e.starts_with(a)) {
                    break;
                }
                tokio::task::yield_now().await;
            }
            match then {
                Then::Hang => std::future::pending::<()>().await,
                Then::Fail => {
                    std::mem::forget(guard);
                    return Err(E::other(format!("{name} failed")));
                }
                Then::Succeed => {}
            }
            std::mem::forget(guard);
            l.lock().push(format!("{name} done"));
            s.push(name.to_owned());
            Ok::<_, E>(s)
        }
    })
    .compensate(move |_s: Vec<String>, ctx: StepContext| {
        let c = Arc::clone(&c);
        async move {
            c.lock().push(format!("undo {}", ctx.step()));
            Ok::<_, E>(())
        }
    })
}

fn saga(log: &Log, branches: Vec<Step<Vec<String>>>) -> SagaBuilder<Vec<String>> {
    let l = Arc::clone(log);
    Saga::builder("trip", InMemoryEventStore::new())
        .step(
            Step::new("quote", |mut s: Vec<String>, _| async move {
                s.push("quote".into());
                Ok::<_, E>(s)
            })
            .compensate(move |_s, _| {
                let l = Arc::clone(&l);
                async move {
                    l.lock().push("undo quote".into());
                    Ok::<_, E>(())
                }
            }),
        )
        .step(Step::parallel(
            "book",
            branches,
            |mut before: Vec<String>, done: Vec<Vec<String>>| {
                for d in done {
                    before.push(d.last().unwrap().clone());
                }
                before
            },
        ))
}

#[tokio::test]
async fn branches_fan_out_and_join_in_branch_order() {
    let log: Log = Arc::default();
    let barrier = Arc::new(tokio::sync::Barrier::new(3));
    let together = |name: &'static str| {
        let barrier = Arc::clone(&barrier);
        Step::new(name, move |mut s: Vec<String>, _| {
            let barrier = Arc::clone(&barrier);
            async move {
                // Returns only when all three branches are running at once.
                barrier.wait().await;
                s.push(name.into());
                Ok::<_, E>(s)
            }
        })
    };
    let saga = saga(
        &log,
        vec![together("flight"), together("hotel"), together("car")],
    )
    .build()
    .unwrap();
    assert_eq!(
        saga.start("t1", vec![]).await.unwrap(),
        Outcome::Completed {
            state: vec![
                "quote".into(),
                "flight".into(),
                "hotel".into(),
                "car".into()
            ]
        }
    );
    let completed: Vec<_> = saga
        .log("t1")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::BranchCompleted { step, branch, .. } => Some((step, branch)),
            _ => None,
        })
        .collect();
    assert_eq!(completed.len(), 3);
}

#[tokio::test]
async fn a_failed_branch_cancels_the_running_ones_and_compensates_the_completed_ones() {
    let log: Log = Arc::default();
    let saga = saga(
        &log,
        vec![
            branch(&log, "flight", Then::Succeed, Some("car attempt")),
            branch(&log, "hotel", Then::Fail, Some("flight done")),
            branch(&log, "car", Then::Hang, None),
        ],
    )
    .build()
    .unwrap();
    let outcome = saga.start("t2", vec![]).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Compensated {
            state: vec!["quote".into()],
            error: "hotel failed".into()
        }
    );
    assert_eq!(
        *log.lock(),
        [
            "flight attempt 1 key t2/1.0/action",
            "hotel attempt 1 key t2/1.1/action",
            "car attempt 1 key t2/1.2/action",
            "flight done",
            "cancelled car",
            "undo flight",
            "undo quote",
        ]
    );
    let log = saga.log("t2").await.unwrap();
    assert!(log.contains(&Record::StepFailed {
        step: 1,
        branch: Some(1),
        error: "hotel failed".into(),
        compensate: true
    }));
    assert!(log.contains(&Record::CompensationCompleted {
        step: 1,
        branch: Some(0)
    }));
}

#[tokio::test]
async fn a_resumed_parallel_step_runs_only_the_branches_not_completed() {
    let clock = ManualClock::new();
    let store = Arc::new(InMemoryEventStore::new());
    let build = |log: &Log, hotel: Then, after: Option<&'static str>, owner: &str| {
        let l = Arc::clone(log);
        Saga::builder("trip", Arc::clone(&store))
            .owner(owner.to_owned())
            .clock(clock.shared())
            .lease(Duration::from_secs(10))
            .step(Step::parallel(
                "book",
                vec![
                    branch(&l, "flight", Then::Succeed, None),
                    branch(&l, "hotel", hotel, after),
                ],
                |mut before: Vec<String>, done: Vec<Vec<String>>| {
                    before.extend(done.into_iter().flatten());
                    before
                },
            ))
            .build()
            .unwrap()
    };
    let first_log: Log = Arc::default();
    let first = build(&first_log, Then::Hang, Some("flight done"), "a");
    assert!(crash_after(500, first.start("t3", vec![])).await.is_none());
    assert!(first_log.lock().contains(&"flight done".to_owned()));

    clock.advance(Duration::from_secs(10));
    let second_log: Log = Arc::default();
    let second = build(&second_log, Then::Succeed, None, "b");
    let resumed = second.recover().await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(
        resumed[0].result.as_ref().unwrap(),
        &Outcome::Completed {
            state: vec!["flight".into(), "hotel".into()]
        }
    );
    // Only the hotel ran again, as its second attempt; the flight's state came from the log.
    assert_eq!(
        *second_log.lock(),
        ["hotel attempt 2 key t3/0.1/action", "hotel done"]
    );
}

#[test]
fn bad_parallel_steps_fail_in_build() {
    let log: Log = Arc::default();
    let merge = |s: Vec<String>, _: Vec<Vec<String>>| s;
    let field = |steps: Vec<Step<Vec<String>>>| {
        let mut b = Saga::builder("t", InMemoryEventStore::new());
        for s in steps {
            b = b.step(s);
        }
        b.build().unwrap_err().field()
    };
    assert_eq!(field(vec![Step::parallel("p", vec![], merge)]), "step");
    assert_eq!(
        field(vec![
            Step::parallel("p", vec![branch(&log, "a", Then::Succeed, None)], merge).pivot()
        ]),
        "step"
    );
    let timed = branch(&log, "a", Then::Succeed, None).timeout(Duration::from_secs(1));
    assert_eq!(field(vec![Step::parallel("p", vec![timed], merge)]), "step");
    let twins = vec![
        branch(&log, "a", Then::Succeed, None),
        branch(&log, "a", Then::Succeed, None),
    ];
    assert_eq!(field(vec![Step::parallel("p", twins, merge)]), "step");
}
