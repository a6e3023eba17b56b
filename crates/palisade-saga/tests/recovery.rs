//! Crash recovery: runs dropped at random awaits (before or after an append,
//! during an action), then resumed by other runners, several at once. Every
//! saga ends completed or fully compensated, each is resumed by one runner,
//! no saga's steps run twice at once, and with a participant that
//! deduplicates by the idempotency key every effect happens exactly once.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Kind, Participant, Yielding, crash_after, step};
use palisade_saga::{
    Backoff, InMemoryEventStore, ManualClock, Outcome, Record, Saga, TokioSleeper,
};
use proptest::prelude::*;

type Store = Arc<Yielding<InMemoryEventStore>>;
const LEASE: Duration = Duration::from_secs(10);
const SAGAS: usize = 60;
/// reserve (undone by a compensation), check (nothing to undo), charge (the pivot), ship.
const KINDS: [Kind; 4] = [
    Kind::Compensatable { compensation: true },
    Kind::Compensatable {
        compensation: false,
    },
    Kind::Pivot,
    Kind::Retriable,
];

fn saga(store: &Store, clock: &ManualClock, p: &Participant, owner: &str) -> Saga<Vec<usize>> {
    let mut b = Saga::builder("order", Arc::clone(store))
        .owner(owner.to_owned())
        .clock(clock.shared())
        .sleeper(TokioSleeper::shared())
        .lease(LEASE)
        .recovery_backoff(Backoff::fixed(Duration::from_millis(1)));
    for (i, kind) in KINDS.into_iter().enumerate() {
        b = b.step(step(p, i, kind, 2));
    }
    b.build().unwrap()
}

/// The effects a saga that ended so must have had, each once.
fn expected_effects(id: &str, outcome: &Outcome<Vec<usize>>) -> BTreeMap<String, u32> {
    let mut keys = BTreeMap::new();
    for &i in outcome.state() {
        keys.insert(format!("{id}/{i}/action"), 1);
    }
    if let Outcome::Compensated { state, .. } = outcome {
        for &i in state {
            if KINDS[i] == (Kind::Compensatable { compensation: true }) {
                keys.insert(format!("{id}/{i}/compensation"), 1);
            }
        }
    }
    keys
}

fn check_log(log: &[Record]) {
    let ends = log.iter().filter(|r| r.is_terminal()).count();
    assert_eq!(ends, 1, "{log:#?}");
    assert!(log.last().unwrap().is_terminal());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn a_saga_crashed_at_random_awaits_ends_once_with_each_effect_once(
        failures in prop::collection::vec(0u32..3, 4),
        compensation_failures in 0u32..3,
        crashes in prop::collection::vec(0usize..40, 1..5),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let store: Store = Arc::new(Yielding(InMemoryEventStore::new()));
            let clock = ManualClock::new();
            let p = Participant::new();
            for (i, &f) in failures.iter().enumerate() {
                p.fail(i, false, f);
            }
            p.fail(0, true, compensation_failures);
            let mut outcome = crash_after(crashes[0], saga(&store, &clock, &p, "r0").start("x", vec![]))
                .await
                .map(Result::unwrap);
            for (n, &polls) in crashes.iter().enumerate().skip(1) {
                if outcome.is_some() {
                    break;
                }
                clock.advance(LEASE);
                let runner = saga(&store, &clock, &p, &format!("r{n}"));
                if let Some(resumed) = crash_after(polls, runner.recover()).await {
                    let mut resumed = resumed.unwrap();
                    prop_assert!(resumed.len() <= 1);
                    if let Some(r) = resumed.pop() {
                        outcome = Some(r.result.unwrap());
                    }
                }
            }
            if outcome.is_none() {
                // No crash this time. A saga whose start never wrote its first
                // record is started again by its caller, with the same id.
                clock.advance(LEASE);
                let runner = saga(&store, &clock, &p, "last");
                let resumed = runner.recover().await.unwrap();
                prop_assert!(resumed.len() <= 1);
                outcome = Some(match resumed.into_iter().next() {
                    Some(r) => r.result.unwrap(),
                    None => runner.start("x", vec![]).await.unwrap(),
                });
            }
            let outcome = outcome.unwrap();
            match &outcome {
                Outcome::Completed { state } => prop_assert_eq!(state, &vec![0, 1, 2, 3]),
                Outcome::Compensated { state, .. } => prop_assert!(state.len() < 3),
                Outcome::Failed { .. } => prop_assert!(false, "no limit on recovery: {outcome:?}"),
            }
            prop_assert_eq!(p.applied(), expected_effects("x", &outcome));
            prop_assert_eq!(p.max_in_flight(), 1);
            let log = saga(&store, &clock, &p, "reader").log("x").await.unwrap();
            check_log(&log);
            // Once ended, a start returns that outcome and runs nothing.
            let calls = p.calls().len();
            prop_assert_eq!(saga(&store, &clock, &p, "late").start("x", vec![]).await.unwrap(), outcome);
            prop_assert_eq!(p.calls().len(), calls);
            Ok(())
        })?;
    }
}

#[test]
fn several_runners_recover_at_once_and_each_saga_is_resumed_by_exactly_one() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let store: Store = Arc::new(Yielding(InMemoryEventStore::new()));
        let clock = ManualClock::new();
        let p = Participant::new();
        p.fail(1, false, 1); // every saga's check fails once, then passes on its retry
        // A first runner starts them all and dies at a different moment in each.
        let dead = saga(&store, &clock, &p, "dead");
        let mut finished = 0;
        for i in 0..SAGAS {
            if crash_after(3 + i % 20, dead.start(&format!("s{i}"), vec![]))
                .await
                .is_some()
            {
                finished += 1;
            }
        }
        let unfinished = dead.unfinished().await.unwrap();
        assert!(
            unfinished.len() > SAGAS / 2,
            "{} unfinished",
            unfinished.len()
        );
        clock.advance(LEASE);
        let runners: Vec<_> = (0..4)
            .map(|r| {
                let runner = saga(&store, &clock, &p, &format!("runner-{r}"));
                tokio::spawn(async move { runner.recover().await.unwrap() })
            })
            .collect();
        let mut resumed = Vec::new();
        for r in runners {
            resumed.extend(r.await.unwrap());
        }
        let mut ids: Vec<_> = resumed.iter().map(|r| r.id.clone()).collect();
        ids.sort();
        let mut expected = unfinished.clone();
        expected.sort();
        assert_eq!(
            ids, expected,
            "each unfinished saga resumed by exactly one runner"
        );
        for r in &resumed {
            assert_eq!(
                r.result.as_ref().unwrap(),
                &Outcome::Completed {
                    state: vec![0, 1, 2, 3]
                }
            );
        }
        // Those whose first record was never written are started again by their callers.
        let again = saga(&store, &clock, &p, "caller");
        for i in 0..SAGAS {
            let id = format!("s{i}");
            let outcome = again.start(&id, vec![]).await.unwrap();
            assert_eq!(
                outcome,
                Outcome::Completed {
                    state: vec![0, 1, 2, 3]
                }
            );
            assert_eq!(
                p.applied()
                    .keys()
                    .filter(|k| k.starts_with(&format!("{id}/")))
                    .count(),
                4
            );
            let log = again.log(&id).await.unwrap();
            check_log(&log);
            let claims = log
                .iter()
                .filter(|r| matches!(r, Record::Claimed { .. }))
                .count();
            let was_resumed = unfinished.contains(&id);
            // Claimed at the start, and once more by the one runner that resumed it.
            assert!(
                claims == 1 + usize::from(was_resumed),
                "{id}: {claims} claims"
            );
        }
        assert!(again.unfinished().await.unwrap().is_empty());
        assert_eq!(p.max_in_flight(), 1);
        assert!(finished < SAGAS);
    });
}
