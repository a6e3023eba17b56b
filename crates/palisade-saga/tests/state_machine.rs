//! The saga state machine against a model: random definitions, random
//! failures of actions and compensations; exactly the invocations the model
//! says, in its order, with its attempt numbers and its outcome.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Kind, Participant, step};
use palisade_saga::{Backoff, ExecutionOutcome, InMemoryEventStore, Outcome, Record, Saga};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    steps: Vec<(Kind, u32)>,
    action_failures: Vec<u32>,
    compensation_failures: Vec<u32>,
    recovery_attempts: u32,
}

fn case() -> impl Strategy<Value = Case> {
    let before = prop::collection::vec((any::<bool>(), 1u32..4), 0..4);
    let after = prop::collection::vec(1u32..4, 0..3);
    (before, prop::option::of((1u32..4, after)), 1u32..5)
        .prop_filter("a saga has a step", |(b, p, _)| {
            !b.is_empty() || p.is_some()
        })
        .prop_flat_map(|(before, pivot, recovery_attempts)| {
            let mut steps: Vec<(Kind, u32)> = before
                .into_iter()
                .map(|(compensation, a)| (Kind::Compensatable { compensation }, a))
                .collect();
            if let Some((a, after)) = pivot {
                steps.push((Kind::Pivot, a));
                steps.extend(after.into_iter().map(|a| (Kind::Retriable, a)));
            }
            let n = steps.len();
            (
                Just(steps),
                prop::collection::vec(0u32..6, n),
                prop::collection::vec(0u32..4, n),
                Just(recovery_attempts),
            )
        })
        .prop_map(
            |(steps, action_failures, compensation_failures, recovery_attempts)| Case {
                steps,
                action_failures,
                compensation_failures,
                recovery_attempts,
            },
        )
}

/// What must run: (step, compensation, attempt) in order, and the outcome.
fn model(case: &Case) -> (Vec<(usize, bool, u32)>, ExecutionOutcome) {
    let mut calls = Vec::new();
    let mut completed = Vec::new();
    // One round of attempts: whether it succeeded.
    let round =
        |calls: &mut Vec<_>, i: usize, attempts: u32, fails: &mut u32, attempt: &mut u32| {
            for _ in 0..attempts {
                *attempt += 1;
                calls.push((i, false, *attempt));
                if *fails == 0 {
                    return true;
                }
                *fails -= 1;
            }
            false
        };
    for (i, &(kind, attempts)) in case.steps.iter().enumerate() {
        let mut fails = case.action_failures[i];
        let mut attempt = 0;
        if kind == Kind::Retriable {
            let mut rounds = 0;
            while !round(&mut calls, i, attempts, &mut fails, &mut attempt) {
                rounds += 1;
                if rounds >= case.recovery_attempts {
                    return (calls, ExecutionOutcome::Failed);
                }
            }
            continue;
        }
        if round(&mut calls, i, attempts, &mut fails, &mut attempt) {
            completed.push(i);
            continue;
        }
        for &k in completed.iter().rev() {
            if case.steps[k].0 != (Kind::Compensatable { compensation: true }) {
                continue;
            }
            let mut fails = case.compensation_failures[k];
            let mut attempt = 0;
            loop {
                attempt += 1;
                calls.push((k, true, attempt));
                if fails == 0 {
                    break;
                }
                fails -= 1;
                if attempt >= case.recovery_attempts {
                    return (calls, ExecutionOutcome::Failed);
                }
            }
        }
        return (calls, ExecutionOutcome::Compensated);
    }
    (calls, ExecutionOutcome::Completed)
}

async fn run(case: &Case) -> (Vec<(usize, bool, u32)>, Outcome<Vec<usize>>, Vec<Record>) {
    let participant = Participant::new();
    for (i, (&a, &c)) in case
        .action_failures
        .iter()
        .zip(&case.compensation_failures)
        .enumerate()
    {
        participant.fail(i, false, a);
        participant.fail(i, true, c);
    }
    let mut builder = Saga::builder("model", Arc::new(InMemoryEventStore::new()))
        .recovery_backoff(Backoff::fixed(Duration::from_millis(5)))
        .recovery_attempts(case.recovery_attempts);
    for (i, &(kind, attempts)) in case.steps.iter().enumerate() {
        builder = builder.step(step(&participant, i, kind, attempts));
    }
    let saga = builder.build().unwrap();
    let outcome = saga.start("x", Vec::new()).await.unwrap();
    let log = saga.log("x").await.unwrap();
    (participant.calls_of("x"), outcome, log)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn runs_exactly_what_the_model_says(case in case()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (calls, outcome, log) = rt.block_on(run(&case));
        let (expected, kind) = model(&case);
        prop_assert_eq!(&calls, &expected);
        prop_assert_eq!(outcome.kind(), kind);
        // The state holds the steps that completed, in order.
        let forward: Vec<usize> = {
            let mut seen = Vec::new();
            for &(step, compensation, _) in &expected {
                if !compensation && !seen.contains(&step) {
                    seen.push(step);
                }
            }
            seen
        };
        match &outcome {
            Outcome::Completed { state } => prop_assert_eq!(state, &forward),
            Outcome::Compensated { state, error } => {
                let failed = *forward.last().unwrap();
                prop_assert_eq!(state.as_slice(), &forward[..forward.len() - 1]);
                prop_assert_eq!(error, &format!("s{failed} action failed"));
            }
            Outcome::Failed { step, error, .. } => {
                let (last, compensation, _) = *expected.last().unwrap();
                prop_assert_eq!(step, &format!("s{last}"));
                let what = if compensation { "compensation" } else { "action" };
                prop_assert_eq!(error, &format!("s{last} {what} failed"));
            }
        }
        // The log ends with the outcome, and names every attempt it ran before it ran.
        prop_assert!(log.last().unwrap().is_terminal());
        let started = log
            .iter()
            .filter(|r| matches!(r, Record::StepStarted { .. } | Record::CompensationStarted { .. }))
            .count();
        prop_assert_eq!(started, expected.len());
    }
}
