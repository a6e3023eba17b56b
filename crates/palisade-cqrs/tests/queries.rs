//! The query side: typed queries over a read model, cached, and invalidated
//! by the projection that changes the view, after it applied the event;
//! a load that read the old value is not stored; a version switch drops
//! everything; many readers while events flow end on the exact view.
#![cfg(feature = "cache")]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_cache::Cache;
use palisade_cqrs::{
    BoxError, Event, EventStore, InMemoryCheckpointStore, InMemoryEventStore, Position, Projection,
    ProjectionContext, ProjectionRunner, Projector, Queries, QueryContext, QueryHandler,
    RecordedEvent, StreamName,
};
use palisade_event_store::{ExpectedVersion, NewEvent};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

/// Balances per account, in memory; a version keeps its own table.
#[derive(Default)]
struct Tables {
    by_version: Mutex<HashMap<String, HashMap<String, u64>>>,
}

impl Tables {
    fn balance(&self, version: &str, account: &str) -> u64 {
        self.by_version
            .lock()
            .get(version)
            .and_then(|t| t.get(account))
            .copied()
            .unwrap_or(0)
    }
}

/// The projection of one version: adds each deposit, times `scale`.
struct Balances {
    tables: Arc<Tables>,
    version: &'static str,
    scale: u64,
}

#[async_trait::async_trait]
impl Projection for Balances {
    async fn handle(&self, event: &RecordedEvent, _: ProjectionContext) -> Result<(), BoxError> {
        let amount: u64 = event.decode()?;
        let account = event
            .stream
            .as_str()
            .trim_start_matches("account-")
            .to_owned();
        *self
            .tables
            .by_version
            .lock()
            .entry(self.version.to_owned())
            .or_default()
            .entry(account)
            .or_default() += amount * self.scale;
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BalanceOf(String);

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

/// A load that waits, after reading, until the test lets it finish.
struct Gate {
    read: oneshot::Sender<u64>,
    release: oneshot::Receiver<()>,
}

/// Reads a balance from the table of the serving version ("v1" when not versioned).
struct BalanceQuery {
    tables: Arc<Tables>,
    loads: AtomicU64,
    gate: Mutex<Option<Gate>>,
}

impl QueryHandler for BalanceQuery {
    type Query = BalanceOf;
    type View = u64;
    type Error = Never;

    async fn handle(&self, query: &BalanceOf, ctx: &QueryContext) -> Result<u64, Never> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let balance = self.tables.balance(ctx.version().unwrap_or("v1"), &query.0);
        let gate = self.gate.lock().take();
        if let Some(gate) = gate {
            let _ = gate.read.send(balance);
            let _ = gate.release.await;
        }
        Ok(balance)
    }
}

impl BalanceQuery {
    fn new(tables: &Arc<Tables>) -> Self {
        Self {
            tables: Arc::clone(tables),
            loads: AtomicU64::new(0),
            gate: Mutex::new(None),
        }
    }

    fn loads(&self) -> u64 {
        self.loads.load(Ordering::SeqCst)
    }

    /// The next load stops after reading: returns (what it read, its release).
    fn gate_next(&self) -> (oneshot::Receiver<u64>, oneshot::Sender<()>) {
        let (read, read_rx) = oneshot::channel();
        let (release_tx, release) = oneshot::channel();
        *self.gate.lock() = Some(Gate { read, release });
        (read_rx, release_tx)
    }
}

fn queries(tables: &Arc<Tables>) -> Queries<BalanceQuery> {
    Queries::builder(BalanceQuery::new(tables))
        .cache(Cache::builder().max_capacity(1_000).build().unwrap())
        .build()
        .unwrap()
}

/// The balance an event changes.
fn stale(event: &RecordedEvent) -> [BalanceOf; 1] {
    let account = event.stream.as_str().trim_start_matches("account-");
    [BalanceOf(account.to_owned())]
}

async fn deposit(store: &Arc<dyn EventStore>, account: &str, amount: u64) -> Position {
    let stream = StreamName::new(format!("account-{account}")).unwrap();
    store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::json("Deposited", &amount).unwrap()],
        )
        .await
        .unwrap()
        .position
}

/// The positions the runner reports applied, in order.
fn handled() -> (
    impl Fn(&Event) + Send + Sync + 'static,
    mpsc::UnboundedReceiver<Position>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = move |e: &Event| {
        if let Event::ProjectionHandled { position, .. } = e {
            let _ = tx.send(*position);
        }
    };
    (listener, rx)
}

async fn applied_up_to(rx: &mut mpsc::UnboundedReceiver<Position>, position: Position) {
    while rx.recv().await.expect("the runner runs") < position {}
}

#[tokio::test]
async fn answers_are_cached_until_the_projection_applies_an_event_that_changes_them() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let tables = Arc::new(Tables::default());
    let queries = queries(&tables);
    let (listener, mut handled) = handled();
    let _runner = ProjectionRunner::builder(Arc::clone(&store))
        .listener(listener)
        .projection(
            Projector::new(
                "v1",
                Balances {
                    tables: Arc::clone(&tables),
                    version: "v1",
                    scale: 1,
                },
                Arc::new(InMemoryCheckpointStore::new()),
            )
            .invalidates(queries.invalidation(stale)),
        )
        .start()
        .await
        .unwrap();
    let alice = || BalanceOf("alice".into());
    let bob = || BalanceOf("bob".into());

    let at = deposit(&store, "alice", 10).await;
    applied_up_to(&mut handled, at).await;
    assert_eq!(queries.ask(alice()).await.unwrap(), 10);
    assert_eq!(queries.ask(alice()).await.unwrap(), 10);
    assert_eq!(queries.ask(bob()).await.unwrap(), 0);
    assert_eq!(queries.handler().loads(), 2);

    // Alice's deposit drops her answer only.
    let at = deposit(&store, "alice", 5).await;
    applied_up_to(&mut handled, at).await;
    assert_eq!(queries.ask(alice()).await.unwrap(), 15);
    assert_eq!(queries.ask(bob()).await.unwrap(), 0);
    assert_eq!(queries.handler().loads(), 3);

    // By hand, too.
    queries.invalidate(&bob());
    assert_eq!(queries.ask(bob()).await.unwrap(), 0);
    assert_eq!(queries.handler().loads(), 4);
}

#[tokio::test]
async fn a_load_that_read_the_old_value_before_the_projection_applied_is_not_stored() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let tables = Arc::new(Tables::default());
    let queries = queries(&tables);
    let (listener, mut handled) = handled();
    let _runner = ProjectionRunner::builder(Arc::clone(&store))
        .listener(listener)
        .projection(
            Projector::new(
                "v1",
                Balances {
                    tables: Arc::clone(&tables),
                    version: "v1",
                    scale: 1,
                },
                Arc::new(InMemoryCheckpointStore::new()),
            )
            .invalidates(queries.invalidation(stale)),
        )
        .start()
        .await
        .unwrap();
    let at = deposit(&store, "alice", 10).await;
    applied_up_to(&mut handled, at).await;

    // A reader loads alice's balance and stops after reading 10.
    let (read, release) = queries.handler().gate_next();
    let reader = {
        let queries = queries.clone();
        tokio::spawn(async move { queries.ask(BalanceOf("alice".into())).await })
    };
    assert_eq!(read.await.unwrap(), 10);
    // Meanwhile the projection applies a deposit and drops alice's answer.
    let at = deposit(&store, "alice", 5).await;
    applied_up_to(&mut handled, at).await;
    assert_eq!(tables.balance("v1", "alice"), 15);
    // The reader's load ends with the old value: its caller gets it, the cache does not.
    release.send(()).unwrap();
    assert_eq!(reader.await.unwrap().unwrap(), 10);
    assert_eq!(queries.ask(BalanceOf("alice".into())).await.unwrap(), 15);
    assert_eq!(queries.handler().loads(), 2);
}

#[tokio::test]
async fn switching_versions_after_a_rebuild_drops_every_answer_and_loads_under_way() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let tables = Arc::new(Tables::default());
    let queries = Queries::builder(BalanceQuery::new(&tables))
        .version("v1")
        .cache(Cache::builder().max_capacity(1_000).build().unwrap())
        .build()
        .unwrap();
    let projector = |version: &'static str, scale| {
        Projector::new(
            version,
            Balances {
                tables: Arc::clone(&tables),
                version,
                scale,
            },
            Arc::new(InMemoryCheckpointStore::new()),
        )
        .invalidates(queries.invalidation(stale))
    };
    let mut runner = ProjectionRunner::builder(Arc::clone(&store))
        .projection(projector("v1", 1))
        .start()
        .await
        .unwrap();
    for (account, amount) in [("alice", 10), ("bob", 3), ("alice", 2)] {
        deposit(&store, account, amount).await;
    }
    runner
        .wait_caught_up(Duration::from_millis(1))
        .await
        .unwrap();
    let alice = || BalanceOf("alice".into());
    let bob = || BalanceOf("bob".into());
    assert_eq!(queries.ask(alice()).await.unwrap(), 12);
    assert_eq!(queries.ask(bob()).await.unwrap(), 3);

    // Version 2 keeps cents; while it rebuilds, its events drop nothing.
    runner
        .start_rebuild(projector("v2", 100), "v1")
        .await
        .unwrap();
    runner
        .wait_caught_up(Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(tables.balance("v2", "alice"), 1200);
    assert_eq!(queries.ask(alice()).await.unwrap(), 12);
    assert_eq!(queries.handler().loads(), 2);
    runner.promote("v2").await.unwrap();
    runner
        .wait_caught_up(Duration::from_millis(1))
        .await
        .unwrap();

    // A load of bob from version 1 is under way when reads switch.
    queries.invalidate(&bob());
    let (read, release) = queries.handler().gate_next();
    let reader = {
        let queries = queries.clone();
        tokio::spawn(async move { queries.ask(BalanceOf("bob".into())).await })
    };
    assert_eq!(read.await.unwrap(), 3);
    queries.switch_version("v2").unwrap();
    assert_eq!(queries.version().as_deref(), Some("v2"));
    release.send(()).unwrap();
    assert_eq!(reader.await.unwrap().unwrap(), 3);
    assert_eq!(queries.ask(alice()).await.unwrap(), 1200);
    assert_eq!(queries.ask(bob()).await.unwrap(), 300);
    assert_eq!(queries.handler().loads(), 5);

    // Version 2's events drop answers now.
    deposit(&store, "alice", 1).await;
    runner
        .wait_caught_up(Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(queries.ask(alice()).await.unwrap(), 1300);
    assert_eq!(queries.handler().loads(), 6);

    let err = queries.switch_version("").unwrap_err();
    assert_eq!(err.field(), "switch_version");
    let err = Queries::builder(BalanceQuery::new(&tables))
        .version("")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_readers_while_events_flow_end_on_the_exact_view() {
    const ACCOUNTS: u64 = 10;
    const DEPOSITS: u64 = 400;
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let tables = Arc::new(Tables::default());
    let queries = queries(&tables);
    let runner = ProjectionRunner::builder(Arc::clone(&store))
        .batch_size(7)
        .projection(
            Projector::new(
                "v1",
                Balances {
                    tables: Arc::clone(&tables),
                    version: "v1",
                    scale: 1,
                },
                Arc::new(InMemoryCheckpointStore::new()),
            )
            .invalidates(queries.invalidation(stale)),
        )
        .start()
        .await
        .unwrap();
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..DEPOSITS {
                deposit(&store, &format!("a{}", i % ACCOUNTS), i + 1).await;
                tokio::task::yield_now().await;
            }
        })
    };
    let readers: Vec<_> = (0..8)
        .map(|r| {
            let queries = queries.clone();
            tokio::spawn(async move {
                for i in 0..300u64 {
                    let account = format!("a{}", (i + r) % ACCOUNTS);
                    queries.ask(BalanceOf(account)).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    writer.await.unwrap();
    for reader in readers {
        reader.await.unwrap();
    }
    runner
        .wait_caught_up(Duration::from_millis(1))
        .await
        .unwrap();
    // Account a_k got deposits i + 1 for every i ≡ k (mod 10).
    for k in 0..ACCOUNTS {
        let expected: u64 = (0..DEPOSITS)
            .filter(|i| i % ACCOUNTS == k)
            .map(|i| i + 1)
            .sum();
        assert_eq!(tables.balance("v1", &format!("a{k}")), expected);
        assert_eq!(
            queries.ask(BalanceOf(format!("a{k}"))).await.unwrap(),
            expected,
            "a{k}"
        );
    }
}
