//! The repository and handler against a model: random commands, stale
//! appends (conflicts) and resubmissions; the state loaded is always the fold
//! of every event in the stream, and the stream is the model's list.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{Account, AccountEvent, Command};
use palisade_cqrs::{
    Aggregate, CommandContext, CommandHandler, EventStore, InMemoryEventStore, Metadata,
    SnapshotPolicy,
};
use proptest::prelude::*;
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    Execute(Command),
    /// Execute with command id number `k` (of a few), perhaps again.
    WithId(Command, u8),
    /// Append through the repository, `behind` versions behind the stream.
    Stale {
        behind: u64,
        amount: u64,
    },
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Open),
        (0..20u64).prop_map(Command::Deposit),
        (0..20u64).prop_map(Command::Withdraw),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        command().prop_map(Op::Execute),
        (command(), 0..4u8).prop_map(|(c, k)| Op::WithId(c, k)),
        (0..3u64, 1..5u64).prop_map(|(behind, amount)| Op::Stale { behind, amount }),
    ]
}

fn decide(state: &Account, command: &Command) -> Result<Vec<AccountEvent>, common::AccountError> {
    futures_lite_block_on(state.handle(command, &()))
}

/// The handler's futures here never wait, so polling once runs them to the end.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("the account decides at once"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn the_loaded_state_is_the_fold_of_the_stream(ops in proptest::collection::vec(op(), 1..40), every in 1..5u64, cached in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(async {
            let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
            let builder = CommandHandler::<Account>::builder(Arc::clone(&store), ())
                .snapshot_policy(SnapshotPolicy::EveryEvents(every));
            // With feature `cache`, half the cases keep the aggregate in a cache too.
            #[cfg(feature = "cache")]
            let builder = if cached {
                builder.cache(palisade_cache::Cache::builder().max_capacity(10).build().unwrap())
            } else {
                builder
            };
            #[cfg(not(feature = "cache"))]
            let _ = cached;
            let accounts = builder.build().unwrap();
            let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
            let mut used = HashSet::new();
            let mut model: Vec<AccountEvent> = Vec::new();
            let fold = |events: &[AccountEvent]| {
                let mut a = Account::default();
                for e in events {
                    a.apply(e.clone());
                }
                a
            };
            for op in ops {
                match op {
                    Op::Execute(c) => {
                        let expected = decide(&fold(&model), &c);
                        let r = accounts.execute("x", &c).await;
                        match (r, expected) {
                            (Ok(committed), Ok(events)) => {
                                prop_assert_eq!(committed.events, events.len());
                                model.extend(events);
                            }
                            (Err(e), Err(refusal)) => prop_assert_eq!(e.refused(), Some(&refusal)),
                            (r, expected) => prop_assert!(false, "{r:?} but the model says {expected:?}"),
                        }
                    }
                    Op::WithId(c, k) => {
                        let ctx = CommandContext::new().command_id(ids[k as usize]);
                        let expected = decide(&fold(&model), &c);
                        let r = accounts.execute_with("x", &c, &ctx).await;
                        if used.contains(&k) {
                            let committed = r.expect("a resubmission succeeds");
                            prop_assert!(committed.duplicate);
                            prop_assert_eq!(committed.events, 0);
                        } else {
                            match (r, expected) {
                                (Ok(committed), Ok(events)) => {
                                    prop_assert!(!committed.duplicate);
                                    prop_assert_eq!(committed.events, events.len());
                                    used.insert(k);
                                    model.extend(events);
                                }
                                (Err(e), Err(refusal)) => prop_assert_eq!(e.refused(), Some(&refusal)),
                                (r, expected) => prop_assert!(false, "{r:?} but the model says {expected:?}"),
                            }
                        }
                    }
                    Op::Stale { behind, amount } => {
                        let version = model.len() as u64;
                        let r = accounts
                            .repository()
                            .append("x", version.saturating_sub(behind), &[AccountEvent::Deposited(amount)], &Metadata::default())
                            .await;
                        if behind == 0 || version == 0 {
                            prop_assert!(r.is_ok());
                            model.push(AccountEvent::Deposited(amount));
                        } else {
                            prop_assert!(r.unwrap_err().is_conflict());
                        }
                    }
                }
                let loaded = accounts.load("x").await.unwrap();
                prop_assert_eq!(loaded.version, model.len() as u64);
                prop_assert_eq!(&loaded.state, &fold(&model));
            }
            Ok(())
        })?;
    }
}
