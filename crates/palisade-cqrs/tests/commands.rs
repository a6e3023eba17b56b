//! The command handler: conflicts retried, resubmissions deduplicated,
//! metadata, snapshots, upcasters, configuration errors.

mod common;

use std::sync::{Arc, Mutex};

use common::{Account, AccountError, AccountEvent, Command};
use palisade_cqrs::{
    CommandContext, CommandError, CommandHandler, CommandOutcome, Event, EventStore,
    InMemoryEventStore, SnapshotPolicy, StreamName, Upcasters, event_id,
};
use palisade_event_store::{ExpectedVersion, NewEvent, ReadStream, TryStreamExt};
use uuid::Uuid;

fn memory() -> Arc<dyn EventStore> {
    Arc::new(InMemoryEventStore::new())
}

async fn versions(store: &Arc<dyn EventStore>, stream: &str) -> Vec<u64> {
    let stream = StreamName::new(stream).unwrap();
    let events: Vec<_> = store
        .read_stream(&stream, ReadStream::forward())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    events.iter().map(|e| e.version).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_on_one_account_never_see_a_conflict() {
    sixteen_writers(false).await;
}

#[cfg(feature = "cache")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_on_one_cached_account_never_see_a_conflict() {
    sixteen_writers(true).await;
}

async fn sixteen_writers(cached: bool) {
    let store = memory();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&outcomes);
    let accounts = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .name("bank")
        // A bound no scheduling hiccup on a shared 2-core machine reaches
        // (the most seen is about 7); the default is 16.
        .max_attempts(50)
        .listener(move |e: &Event| {
            if let Event::CommandExecuted {
                outcome,
                conflicts,
                attempts,
                ..
            } = e
            {
                seen.lock().unwrap().push((*outcome, *conflicts, *attempts));
            }
        });
    #[cfg(feature = "cache")]
    let accounts = if cached {
        accounts.cache(
            palisade_cache::Cache::builder()
                .max_capacity(10)
                .build()
                .unwrap(),
        )
    } else {
        accounts
    };
    #[cfg(not(feature = "cache"))]
    let _ = cached;
    let accounts = accounts.build().unwrap();
    accounts.execute("a1", &Command::Open).await.unwrap();
    accounts
        .execute("a1", &Command::Deposit(1_000))
        .await
        .unwrap();

    // 1,600 withdrawals of 1 or 2 (alternating by task) on a balance of 1,000.
    let tasks: Vec<_> = (0..16u64)
        .map(|task| {
            let accounts = accounts.clone();
            tokio::spawn(async move {
                let (mut accepted, mut refused, mut withdrawn) = (0u64, 0u64, 0u64);
                for _ in 0..100 {
                    let amount = 1 + task % 2;
                    match accounts.execute("a1", &Command::Withdraw(amount)).await {
                        Ok(c) => {
                            assert_eq!(c.events, 1);
                            accepted += 1;
                            withdrawn += amount;
                        }
                        Err(CommandError::Refused(AccountError::InsufficientFunds { .. })) => {
                            refused += 1;
                        }
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                }
                (accepted, refused, withdrawn)
            })
        })
        .collect();
    let (mut accepted, mut refused, mut withdrawn) = (0, 0, 0);
    for t in tasks {
        let (a, r, w) = t.await.unwrap();
        accepted += a;
        refused += r;
        withdrawn += w;
    }
    assert_eq!(accepted + refused, 1_600);
    let account = accounts.load("a1").await.unwrap();
    assert_eq!(account.state.balance, 1_000 - withdrawn);
    // No overdraft, and the money ran out: what is left is smaller than a withdrawal of 2.
    assert!(account.state.balance <= 1, "left {}", account.state.balance);
    assert_eq!(account.version, 2 + accepted);
    assert_eq!(
        versions(&store, "account-a1").await,
        (1..=2 + accepted).collect::<Vec<_>>()
    );
    let outcomes = outcomes.lock().unwrap();
    assert_eq!(outcomes.len(), 1_602);
    assert_eq!(
        outcomes
            .iter()
            .filter(|(o, ..)| *o == CommandOutcome::Accepted)
            .count() as u64,
        2 + accepted
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|(o, ..)| *o == CommandOutcome::Conflict)
            .count(),
        0
    );
    let conflicts: u32 = outcomes.iter().map(|(_, c, _)| c).sum();
    let most = outcomes.iter().map(|(.., a)| *a).max().unwrap();
    println!(
        "accepted {accepted}, refused {refused}, conflicts retried {conflicts}, most attempts {most}"
    );
    // Uncached loads read the stream, long enough for writers to collide;
    // cached ones read nothing and rarely do.
    if !cached {
        assert!(
            conflicts > 0,
            "sixteen writers on one stream conflict at least once"
        );
    }
}

#[tokio::test]
async fn a_resubmitted_command_appends_nothing_and_a_new_id_appends_again() {
    let store = memory();
    let accounts = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .build()
        .unwrap();
    accounts.execute("a1", &Command::Open).await.unwrap();
    let id = Uuid::new_v4();
    let ctx = CommandContext::new().command_id(id);
    let first = accounts
        .execute_with("a1", &Command::Deposit(5), &ctx)
        .await
        .unwrap();
    assert_eq!(
        (first.version, first.events, first.duplicate),
        (2, 1, false)
    );
    let again = accounts
        .execute_with("a1", &Command::Deposit(5), &ctx)
        .await
        .unwrap();
    assert_eq!((again.version, again.events, again.duplicate), (2, 0, true));
    assert_eq!(again.position, first.position);
    assert_eq!(versions(&store, "account-a1").await, [1, 2]);

    let other = accounts
        .execute_with(
            "a1",
            &Command::Deposit(5),
            &CommandContext::new().command_id(Uuid::new_v4()),
        )
        .await
        .unwrap();
    assert_eq!(
        (other.version, other.events, other.duplicate),
        (3, 1, false)
    );
    assert_eq!(accounts.load("a1").await.unwrap().state.balance, 10);

    // The events carry ids derived from the command id, and its causation.
    let stream = StreamName::new("account-a1").unwrap();
    let events: Vec<_> = store
        .read_stream(&stream, ReadStream::forward())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events[1].id, event_id(id, &stream, 0));
    assert_eq!(
        events[1].metadata.causation_id.as_deref(),
        Some(id.to_string().as_str())
    );
}

#[tokio::test]
async fn a_resubmission_hidden_by_a_snapshot_is_still_found() {
    let store = memory();
    let accounts = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .snapshot_policy(SnapshotPolicy::EveryEvents(1))
        .build()
        .unwrap();
    accounts.execute("a1", &Command::Open).await.unwrap();
    let ctx = CommandContext::new().command_id(Uuid::new_v4());
    accounts
        .execute_with("a1", &Command::Deposit(7), &ctx)
        .await
        .unwrap();
    accounts.execute("a1", &Command::Deposit(1)).await.unwrap();
    // The snapshot is at version 3: the deposit of 7 (version 2) is behind it.
    assert_eq!(accounts.load("a1").await.unwrap().snapshot, Some(3));
    let again = accounts
        .execute_with("a1", &Command::Deposit(7), &ctx)
        .await
        .unwrap();
    assert_eq!((again.version, again.events, again.duplicate), (2, 0, true));
    assert_eq!(versions(&store, "account-a1").await, [1, 2, 3]);
}

#[tokio::test]
async fn concurrent_resubmissions_append_once() {
    let store = memory();
    let accounts = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .build()
        .unwrap();
    accounts.execute("a1", &Command::Open).await.unwrap();
    let ctx = CommandContext::new().command_id(Uuid::new_v4());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (accounts, ctx) = (accounts.clone(), ctx.clone());
            tokio::spawn(async move {
                accounts
                    .execute_with("a1", &Command::Deposit(3), &ctx)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut written = 0;
    for t in tasks {
        written += t.await.unwrap().events;
    }
    assert_eq!(written, 1);
    assert_eq!(accounts.load("a1").await.unwrap().state.balance, 3);
}

#[tokio::test]
async fn metadata_reaches_every_event() {
    let store = memory();
    let accounts = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .build()
        .unwrap();
    let ctx = CommandContext::new()
        .correlation_id("req-1")
        .causation_id("msg-9")
        .field("user", "alice");
    accounts
        .execute_with("a1", &Command::Open, &ctx)
        .await
        .unwrap();
    let stream = StreamName::new("account-a1").unwrap();
    let events: Vec<_> = store
        .read_stream(&stream, ReadStream::forward())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let m = &events[0].metadata;
    assert_eq!(m.correlation_id.as_deref(), Some("req-1"));
    assert_eq!(m.causation_id.as_deref(), Some("msg-9"));
    assert_eq!(m.fields.get("user").map(String::as_str), Some("alice"));
    assert_eq!(events[0].event_type, "Opened");
}

#[tokio::test(start_paused = true)]
async fn refusals_and_lasting_conflicts_are_reported_as_such() {
    let store = memory();
    let accounts = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .build()
        .unwrap();
    let err = accounts
        .execute("a1", &Command::Deposit(1))
        .await
        .unwrap_err();
    assert_eq!(err.refused(), Some(&AccountError::NotOpen));
    assert!(versions(&store, "account-a1").await.is_empty());

    // A store whose stream always moves: every attempt conflicts.
    let moving = Arc::new(Moving(InMemoryEventStore::new()));
    let accounts = CommandHandler::<Account>::builder(moving, ())
        .max_attempts(3)
        .conflict_backoff(palisade_cqrs::Backoff::fixed(
            std::time::Duration::from_millis(5),
        ))
        .build()
        .unwrap();
    let err = accounts.execute("a1", &Command::Open).await.unwrap_err();
    assert!(
        matches!(err, CommandError::Conflict { attempts: 3, .. }),
        "{err}"
    );
}

/// A store where someone else appends just before every append.
struct Moving(InMemoryEventStore);

#[async_trait::async_trait]
impl EventStore for Moving {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> palisade_event_store::Result<palisade_event_store::AppendResult> {
        self.0
            .append(
                stream,
                ExpectedVersion::Any,
                vec![NewEvent::json("Deposited", &AccountEvent::Deposited(0))?],
            )
            .await?;
        self.0.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        s: &StreamName,
        o: ReadStream,
    ) -> palisade_event_store::Result<palisade_event_store::EventStream> {
        self.0.read_stream(s, o).await
    }
    async fn read_all(
        &self,
        o: palisade_event_store::ReadAll,
    ) -> palisade_event_store::Result<palisade_event_store::EventStream> {
        self.0.read_all(o).await
    }
    async fn stream_state(
        &self,
        s: &StreamName,
    ) -> palisade_event_store::Result<palisade_event_store::StreamState> {
        self.0.stream_state(s).await
    }
    async fn delete_stream(
        &self,
        s: &StreamName,
        e: ExpectedVersion,
    ) -> palisade_event_store::Result<()> {
        self.0.delete_stream(s, e).await
    }
    async fn save_snapshot(
        &self,
        s: palisade_event_store::Snapshot,
    ) -> palisade_event_store::Result<()> {
        self.0.save_snapshot(s).await
    }
    async fn load_snapshot(
        &self,
        s: &StreamName,
    ) -> palisade_event_store::Result<Option<palisade_event_store::Snapshot>> {
        self.0.load_snapshot(s).await
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.changes()
    }
    async fn head(&self) -> palisade_event_store::Result<palisade_event_store::Position> {
        self.0.head().await
    }
    fn system_name(&self) -> &'static str {
        "moving"
    }
}

#[tokio::test]
async fn snapshots_every_n_events_and_loads_start_from_them() {
    let store = memory();
    let saved = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&saved);
    let accounts = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .snapshot_policy(SnapshotPolicy::EveryEvents(3))
        .listener(move |e: &Event| {
            if let Event::SnapshotSaved { version, .. } = e {
                seen.lock().unwrap().push(*version);
            }
        })
        .build()
        .unwrap();
    accounts.execute("a1", &Command::Open).await.unwrap();
    for _ in 0..6 {
        accounts.execute("a1", &Command::Deposit(2)).await.unwrap();
    }
    assert_eq!(*saved.lock().unwrap(), [3, 6]);
    let loaded = accounts.load("a1").await.unwrap();
    assert_eq!(
        (loaded.version, loaded.snapshot, loaded.replayed),
        (7, Some(6), 1)
    );
    assert_eq!(loaded.state.balance, 12);

    // A user function: snapshot after every withdrawal-sized step past version 7.
    let custom = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .snapshot_policy(SnapshotPolicy::when(|_before, after| after == 8))
        .build()
        .unwrap();
    custom.execute("a1", &Command::Withdraw(1)).await.unwrap();
    custom.execute("a1", &Command::Withdraw(1)).await.unwrap();
    let loaded = custom.load("a1").await.unwrap();
    assert_eq!(
        (
            loaded.version,
            loaded.snapshot,
            loaded.replayed,
            loaded.state.balance
        ),
        (9, Some(8), 1, 10)
    );
}

#[tokio::test]
async fn upcasters_apply_before_decoding() {
    let store = memory();
    let stream = StreamName::new("account-a1").unwrap();
    // Version 1 of Deposited stored cents as a string.
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![
                NewEvent::json("Opened", &AccountEvent::Opened).unwrap(),
                NewEvent::json("Deposited", &serde_json::json!({"Deposited": "250"})).unwrap(),
            ],
        )
        .await
        .unwrap();
    let upcasters = Upcasters::new()
        .register("Deposited", 1, |mut e| {
            let v: serde_json::Value =
                serde_json::from_slice(&e.payload).map_err(|e| e.to_string())?;
            let n: u64 = v["Deposited"]
                .as_str()
                .ok_or("not a string")?
                .parse()
                .map_err(|_| "bad")?;
            e.payload =
                serde_json::to_vec(&AccountEvent::Deposited(n)).map_err(|e| e.to_string())?;
            Ok(e)
        })
        .unwrap();
    let plain = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .build()
        .unwrap();
    assert!(
        plain.load("a1").await.is_err(),
        "the old payload does not decode"
    );
    let accounts = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .upcasters(upcasters)
        .build()
        .unwrap();
    assert_eq!(accounts.load("a1").await.unwrap().state.balance, 250);
    accounts
        .execute("a1", &Command::Withdraw(50))
        .await
        .unwrap();
    assert_eq!(accounts.load("a1").await.unwrap().state.balance, 200);
}

#[test]
fn bad_settings_name_their_method() {
    let b = || CommandHandler::<Account>::builder(memory(), ());
    assert_eq!(b().name("").build().unwrap_err().field(), "name");
    assert_eq!(
        b().max_attempts(0).build().unwrap_err().field(),
        "max_attempts"
    );
    assert_eq!(
        b().conflict_backoff(
            palisade_cqrs::Backoff::exponential(std::time::Duration::from_millis(1)).factor(0.5)
        )
        .build()
        .unwrap_err()
        .field(),
        "conflict_backoff"
    );
    assert_eq!(
        b().snapshot_policy(SnapshotPolicy::EveryEvents(0))
            .build()
            .unwrap_err()
            .field(),
        "snapshot_policy"
    );
}

#[tokio::test]
async fn an_invalid_id_is_an_error_not_a_panic() {
    let accounts = CommandHandler::<Account>::builder(memory(), ())
        .build()
        .unwrap();
    let err = accounts
        .execute("has space", &Command::Open)
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::InvalidId(_)), "{err}");
}
