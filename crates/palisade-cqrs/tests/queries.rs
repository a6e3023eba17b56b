//! The query side: typed queries over a read model, cached, and invalidated
//! by the projection that changes the view, after it applied the event;
//! a load that read the old value is not stored; a version switch drops
//! everything; many readers while events flow end on the exact view.
//!
//! With a tiered cache (two instances over one `InMemoryTier`, then over
//! Redis): a projection on one instance drops the answer in the tier and on
//! the other instance, the event is reported handled only once the tier has
//! dropped it, and a load under way on either instance during the commit is
//! stored neither there nor in the tier. The Redis test uses
//! `PALISADE_REDIS_URL` (by default the local server), a key prefix of its
//! own that it deletes when it ends, and says plainly when it was skipped
//! (under `PALISADE_REQUIRE_SERVICES=1` it fails instead).
#![cfg(feature = "cache")]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use palisade_cache::Cache;
use palisade_cache::tier::{
    InMemoryTier, Invalidations, RemoteTier, TierError, TierStats, TieredCache,
};
use palisade_cqrs::{
    BoxError, Event, EventStore, InMemoryCheckpointStore, InMemoryEventStore, Position, Projection,
    ProjectionContext, ProjectionRunner, Projector, Queries, QueryContext, QueryHandler,
    RecordedEvent, StreamName,
};
use palisade_event_store::{ExpectedVersion, NewEvent};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};

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

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
    queries.invalidate(&bob()).await;
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
    queries.invalidate(&bob()).await;
    let (read, release) = queries.handler().gate_next();
    let reader = {
        let queries = queries.clone();
        tokio::spawn(async move { queries.ask(BalanceOf("bob".into())).await })
    };
    assert_eq!(read.await.unwrap(), 3);
    queries.switch_version("v2").await.unwrap();
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

    let err = queries.switch_version("").await.unwrap_err();
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

// ------------------------------------------------- a tiered cache, two instances

fn alice() -> BalanceOf {
    BalanceOf("alice".into())
}

fn bob() -> BalanceOf {
    BalanceOf("bob".into())
}

/// A tiered cache over `tier`, patient enough that a loaded test machine
/// never times a remote call out.
fn tiered(tier: impl RemoteTier<BalanceOf, u64>) -> TieredCache<BalanceOf, u64> {
    TieredCache::builder(Cache::builder().max_capacity(1_000).build().unwrap(), tier)
        .remote_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// One instance's queries over its tiered cache, with a handler of its own.
fn tiered_queries(
    tables: &Arc<Tables>,
    cache: &TieredCache<BalanceOf, u64>,
) -> Queries<BalanceQuery> {
    Queries::builder(BalanceQuery::new(tables))
        .tiered_cache(cache.clone())
        .build()
        .unwrap()
}

/// The balances projection ("v1"), dropping `queries`' answers.
fn balances(tables: &Arc<Tables>, queries: &Queries<BalanceQuery>) -> Projector {
    Projector::new(
        "v1",
        Balances {
            tables: Arc::clone(tables),
            version: "v1",
            scale: 1,
        },
        Arc::new(InMemoryCheckpointStore::new()),
    )
    .invalidates(queries.invalidation(stale))
}

/// `(remote_hits, remote_misses, remote_errors, invalidations_received)`
fn tier_counts(stats: TierStats) -> (u64, u64, u64, u64) {
    (
        stats.remote_hits,
        stats.remote_misses,
        stats.remote_errors,
        stats.invalidations_received,
    )
}

/// Lets the other tasks of this single-threaded runtime run until `done`
/// holds (an in-memory tier delivers at once; its listener task only needs
/// a turn).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{what}: not after 1,000 turns of the scheduler");
}

#[tokio::test]
async fn a_projection_on_instance_a_drops_the_answer_cached_on_instance_b() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let tables = Arc::new(Tables::default());
    let tier = InMemoryTier::new();
    let observer = tier.connect();
    let mut told = observer.subscribe();
    let (cache_a, cache_b) = (tiered(tier.connect()), tiered(tier.connect()));
    let (a, b) = (
        tiered_queries(&tables, &cache_a),
        tiered_queries(&tables, &cache_b),
    );
    let (listener, mut handled) = handled();
    let _runner = ProjectionRunner::builder(Arc::clone(&store))
        .listener(listener)
        .projection(balances(&tables, &a))
        .start()
        .await
        .unwrap();

    let key = || Some(Some(palisade_cache::tier::Invalidation::Key(alice())));
    let at = deposit(&store, "alice", 10).await;
    applied_up_to(&mut handled, at).await;
    // Every event invalidates, whether or not an answer was cached.
    assert_eq!(told.recv().now_or_never(), key());
    until("B hears of it", || {
        cache_b.tier_stats().invalidations_received == 1
    })
    .await;
    assert_eq!(b.ask(alice()).await.unwrap(), 10); // loaded on B, written to the tier
    assert_eq!(a.ask(alice()).await.unwrap(), 10); // read from the tier
    assert_eq!((a.handler().loads(), b.handler().loads()), (0, 1));
    assert_eq!(observer.get(&alice()).await.unwrap(), Some(10));

    let at = deposit(&store, "alice", 5).await;
    applied_up_to(&mut handled, at).await;
    // Reported handled: the answer is gone from the tier, and B was told.
    assert_eq!(observer.get(&alice()).await.unwrap(), None);
    assert_eq!(told.recv().now_or_never(), key());
    assert_eq!(told.recv().now_or_never(), None);
    until("B drops its copy", || {
        cache_b.tier_stats().invalidations_received == 2
    })
    .await;
    assert_eq!(cache_b.local().get(&alice()), None);
    assert_eq!(b.ask(alice()).await.unwrap(), 15);
    assert_eq!(a.ask(alice()).await.unwrap(), 15); // B's answer, from the tier
    assert_eq!((a.handler().loads(), b.handler().loads()), (0, 2));
    assert_eq!(tier_counts(cache_a.tier_stats()), (2, 0, 0, 0));
    assert_eq!(tier_counts(cache_b.tier_stats()), (0, 2, 0, 2));

    // By hand, from B: A drops its copy too.
    b.invalidate(&alice()).await;
    assert_eq!(observer.get(&alice()).await.unwrap(), None);
    until("A drops its copy", || {
        cache_a.tier_stats().invalidations_received == 1
    })
    .await;
    assert_eq!(cache_a.local().get(&alice()), None);
}

/// Holds the next `remove`, once armed, until released.
#[derive(Default)]
struct Hold {
    armed: AtomicBool,
    entered: Notify,
    release: Notify,
}

/// A member of an `InMemoryTier` whose removals can be held at a [`Hold`].
struct HeldRemoves {
    inner: InMemoryTier<BalanceOf, u64>,
    hold: Arc<Hold>,
}

#[async_trait::async_trait]
impl RemoteTier<BalanceOf, u64> for HeldRemoves {
    async fn get(&self, key: &BalanceOf) -> Result<Option<u64>, TierError> {
        self.inner.get(key).await
    }

    async fn set(
        &self,
        key: &BalanceOf,
        value: &u64,
        ttl: Option<Duration>,
    ) -> Result<(), TierError> {
        self.inner.set(key, value, ttl).await
    }

    async fn get_versioned(&self, key: &BalanceOf) -> Result<(Option<u64>, u64), TierError> {
        self.inner.get_versioned(key).await
    }

    async fn set_if_absent(
        &self,
        key: &BalanceOf,
        value: &u64,
        ttl: Option<Duration>,
        version: u64,
    ) -> Result<bool, TierError> {
        self.inner.set_if_absent(key, value, ttl, version).await
    }

    async fn remove(&self, key: &BalanceOf) -> Result<(), TierError> {
        if self.hold.armed.swap(false, Ordering::SeqCst) {
            self.hold.entered.notify_one();
            self.hold.release.notified().await;
        }
        self.inner.remove(key).await
    }

    async fn publish_invalidation(&self, key: &BalanceOf) -> Result<(), TierError> {
        self.inner.publish_invalidation(key).await
    }

    async fn remove_all(&self) -> Result<(), TierError> {
        self.inner.remove_all().await
    }

    async fn publish_resync(&self) -> Result<(), TierError> {
        self.inner.publish_resync().await
    }

    fn subscribe(&self) -> Invalidations<BalanceOf> {
        self.inner.subscribe()
    }
}

/// The projection's invalidation is held in the tier's removal: the event
/// is not reported handled meanwhile; a reader on the same instance may get
/// the old answer then (the event is not handled yet) but must not keep it,
/// which it would if the local copy went before the remote one (it would
/// read the old value back from the tier, and this instance never hears its
/// own invalidations).
#[tokio::test]
async fn the_event_is_reported_handled_once_the_tier_dropped_the_answer_and_a_read_meanwhile_keeps_nothing()
 {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let tables = Arc::new(Tables::default());
    let tier = InMemoryTier::new();
    let observer = tier.connect();
    let hold = Arc::new(Hold::default());
    let cache = tiered(HeldRemoves {
        inner: tier.connect(),
        hold: Arc::clone(&hold),
    });
    let queries = tiered_queries(&tables, &cache);
    let (listener, mut handled) = handled();
    let runner = ProjectionRunner::builder(Arc::clone(&store))
        .listener(listener)
        .projection(balances(&tables, &queries))
        .start()
        .await
        .unwrap();
    let first = deposit(&store, "alice", 10).await;
    applied_up_to(&mut handled, first).await;
    assert_eq!(queries.ask(alice()).await.unwrap(), 10);
    assert_eq!(observer.get(&alice()).await.unwrap(), Some(10));

    hold.armed.store(true, Ordering::SeqCst);
    let at = deposit(&store, "alice", 5).await;
    hold.entered.notified().await;
    assert_eq!(tables.balance("v1", "alice"), 15); // committed
    assert_eq!(runner.status("v1").unwrap().position, first);
    assert!(
        handled.try_recv().is_err(),
        "reported before the tier dropped it"
    );
    assert_eq!(queries.ask(alice()).await.unwrap(), 10);

    hold.release.notify_one();
    applied_up_to(&mut handled, at).await;
    assert_eq!(runner.status("v1").unwrap().position, at);
    assert_eq!(observer.get(&alice()).await.unwrap(), None);
    assert_eq!(cache.local().get(&alice()), None, "a stale answer was kept");
    assert_eq!(queries.ask(alice()).await.unwrap(), 15);
    assert_eq!(queries.handler().loads(), 2);
}

#[tokio::test]
async fn a_load_under_way_on_either_instance_during_the_commit_is_stored_neither_there_nor_in_the_tier()
 {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let tables = Arc::new(Tables::default());
    let tier = InMemoryTier::new();
    let observer = tier.connect();
    let (cache_a, cache_b) = (tiered(tier.connect()), tiered(tier.connect()));
    let (a, b) = (
        tiered_queries(&tables, &cache_a),
        tiered_queries(&tables, &cache_b),
    );
    let (listener, mut handled) = handled();
    let _runner = ProjectionRunner::builder(Arc::clone(&store))
        .listener(listener)
        .projection(balances(&tables, &a))
        .start()
        .await
        .unwrap();
    let at = deposit(&store, "alice", 10).await;
    applied_up_to(&mut handled, at).await;
    until("B hears of it", || {
        cache_b.tier_stats().invalidations_received == 1
    })
    .await;

    // A reader on each instance loads alice's balance and stops after reading 10.
    let ((read_a, release_a), (read_b, release_b)) =
        (a.handler().gate_next(), b.handler().gate_next());
    let reader = |queries: &Queries<BalanceQuery>| {
        let queries = queries.clone();
        tokio::spawn(async move { queries.ask(alice()).await })
    };
    let (reader_a, reader_b) = (reader(&a), reader(&b));
    assert_eq!(read_a.await.unwrap(), 10);
    assert_eq!(read_b.await.unwrap(), 10);
    // Meanwhile A's projection applies a deposit; B hears of it.
    let at = deposit(&store, "alice", 5).await;
    applied_up_to(&mut handled, at).await;
    until("B hears of it", || {
        cache_b.tier_stats().invalidations_received == 2
    })
    .await;
    // The loads end with the old value: their callers get it, no cache keeps it.
    release_a.send(()).unwrap();
    release_b.send(()).unwrap();
    assert_eq!(reader_a.await.unwrap().unwrap(), 10);
    assert_eq!(reader_b.await.unwrap().unwrap(), 10);
    assert_eq!(cache_a.local().get(&alice()), None);
    assert_eq!(cache_b.local().get(&alice()), None);
    assert_eq!(observer.get(&alice()).await.unwrap(), None);
    assert_eq!(b.ask(alice()).await.unwrap(), 15);
    assert_eq!(a.ask(alice()).await.unwrap(), 15); // B's answer, from the tier
    assert_eq!((a.handler().loads(), b.handler().loads()), (1, 2));
}

#[tokio::test]
async fn a_local_and_a_tiered_cache_together_fail_in_build_naming_tiered_cache() {
    let tables = Arc::new(Tables::default());
    let err = Queries::builder(BalanceQuery::new(&tables))
        .cache(Cache::builder().max_capacity(10).build().unwrap())
        .tiered_cache(tiered(InMemoryTier::new()))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "tiered_cache");
}

mod on_redis {
    use super::*;
    use palisade_cache::tier::RedisTier;
    use palisade_test_support::{Cleanup, redis_url, test_name, unique_name};

    /// Deletes every key under `prefix` when the test ends, passed or failed.
    fn cleanup(url: &str, prefix: &str) -> Cleanup {
        let (url, pattern) = (url.to_owned(), format!("{prefix}*"));
        Cleanup::new(format!("delete {pattern}"), move || {
            let mut c = redis::Client::open(url.as_str())?.get_connection()?;
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut c)?;
            if !keys.is_empty() {
                redis::cmd("DEL").arg(keys).query::<()>(&mut c)?;
            }
            Ok::<(), redis::RedisError>(())
        })
    }

    /// Polls `done` until it holds: for a message through a real server to
    /// arrive, never to measure time; fails after 5 s.
    async fn delivered(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_redis_a_projection_on_one_instance_drops_the_answer_on_the_other_and_no_load_under_way_is_stored()
     {
        let Some(url) = redis_url(test_name!()) else {
            return; // skipped, and the output says so
        };
        let prefix = format!("{}:", unique_name("palisade_test_cqrs"));
        let _cleanup = cleanup(&url, &prefix);
        let member = || async {
            RedisTier::<BalanceOf, u64>::connect(&url, &prefix)
                .await
                .expect("connect to Redis")
        };
        let observer = member().await;
        let (cache_a, cache_b) = (tiered(member().await), tiered(member().await));
        let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
        let tables = Arc::new(Tables::default());
        let (a, b) = (
            tiered_queries(&tables, &cache_a),
            tiered_queries(&tables, &cache_b),
        );
        let (listener, mut handled) = handled();
        let _runner = ProjectionRunner::builder(Arc::clone(&store))
            .listener(listener)
            .projection(balances(&tables, &a))
            .start()
            .await
            .unwrap();
        deposit(&store, "alice", 10).await;
        let at = deposit(&store, "bob", 3).await;
        applied_up_to(&mut handled, at).await;
        // Every event invalidates, whether or not an answer was cached.
        delivered("B hears of both", || {
            cache_b.tier_stats().invalidations_received == 2
        })
        .await;
        assert_eq!(b.ask(alice()).await.unwrap(), 10); // loaded on B, written to Redis
        assert_eq!(a.ask(alice()).await.unwrap(), 10); // read from Redis
        assert_eq!(observer.get(&alice()).await.unwrap(), Some(10));

        // A reader on B loads bob's balance and stops after reading 3.
        let (read, release) = b.handler().gate_next();
        let reader = {
            let b = b.clone();
            tokio::spawn(async move { b.ask(bob()).await })
        };
        assert_eq!(read.await.unwrap(), 3);
        // Meanwhile A's projection applies a deposit to each account.
        deposit(&store, "alice", 5).await;
        let at = deposit(&store, "bob", 4).await;
        applied_up_to(&mut handled, at).await;
        // Reported handled: both answers are gone from Redis.
        assert_eq!(observer.get(&alice()).await.unwrap(), None);
        assert_eq!(observer.get(&bob()).await.unwrap(), None);
        delivered("B hears of both", || {
            cache_b.tier_stats().invalidations_received == 4
        })
        .await;
        release.send(()).unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), 3);
        assert_eq!(cache_b.local().get(&alice()), None);
        assert_eq!(
            cache_b.local().get(&bob()),
            None,
            "B kept a load from before the commit"
        );
        assert_eq!(
            observer.get(&bob()).await.unwrap(),
            None,
            "written back to Redis"
        );

        assert_eq!(b.ask(bob()).await.unwrap(), 7);
        assert_eq!(b.ask(alice()).await.unwrap(), 15);
        assert_eq!(a.ask(alice()).await.unwrap(), 15); // B's answers, from Redis
        assert_eq!(a.ask(bob()).await.unwrap(), 7);
        assert_eq!((a.handler().loads(), b.handler().loads()), (0, 4));
        assert_eq!(tier_counts(cache_a.tier_stats()), (3, 0, 0, 0));
        assert_eq!(tier_counts(cache_b.tier_stats()), (0, 4, 0, 4));
    }
}
