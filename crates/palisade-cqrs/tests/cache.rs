//! Hot aggregates in palisade-cache: a command on a cached aggregate reads
//! only the events after the cached version, and the state stays exact when
//! other writers append.
#![cfg(feature = "cache")]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{Account, Command};
use palisade_cqrs::{
    CommandContext, CommandHandler, EventStore, InMemoryEventStore, SnapshotPolicy, StreamName,
    Uuid,
};
use palisade_event_store::{
    AppendResult, EventStream, ExpectedVersion, NewEvent, Position, ReadAll, ReadStream, Result,
    Snapshot, StreamExt, StreamState,
};

/// Counts the events read from streams.
#[derive(Default)]
struct Counting {
    inner: InMemoryEventStore,
    read: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl EventStore for Counting {
    async fn append(
        &self,
        s: &StreamName,
        e: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.inner.append(s, e, events).await
    }
    async fn read_stream(&self, s: &StreamName, o: ReadStream) -> Result<EventStream> {
        let read = Arc::clone(&self.read);
        let events = self.inner.read_stream(s, o).await?;
        Ok(Box::pin(events.inspect(move |_| {
            read.fetch_add(1, Ordering::SeqCst);
        })))
    }
    async fn read_all(&self, o: ReadAll) -> Result<EventStream> {
        self.inner.read_all(o).await
    }
    async fn stream_state(&self, s: &StreamName) -> Result<StreamState> {
        self.inner.stream_state(s).await
    }
    async fn delete_stream(&self, s: &StreamName, e: ExpectedVersion) -> Result<()> {
        self.inner.delete_stream(s, e).await
    }
    async fn save_snapshot(&self, s: Snapshot) -> Result<()> {
        self.inner.save_snapshot(s).await
    }
    async fn load_snapshot(&self, s: &StreamName) -> Result<Option<Snapshot>> {
        self.inner.load_snapshot(s).await
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes()
    }
    async fn head(&self) -> Result<Position> {
        self.inner.head().await
    }
    fn system_name(&self) -> &'static str {
        "counting"
    }
}

fn cache() -> palisade_cache::Cache<StreamName, (Account, u64)> {
    palisade_cache::Cache::builder()
        .max_capacity(100)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_cached_aggregate_reads_only_newer_events() {
    let store = Arc::new(Counting::default());
    let read = Arc::clone(&store.read);
    let hot = cache();
    let cached = CommandHandler::<Account>::builder(store.clone(), ())
        .cache(hot.clone())
        .build()
        .unwrap();
    cached.execute("a", &Command::Open).await.unwrap();
    for _ in 0..50 {
        cached.execute("a", &Command::Deposit(1)).await.unwrap();
    }
    assert_eq!(
        read.load(Ordering::SeqCst),
        0,
        "every load started from the cached, current state"
    );
    let stream = StreamName::new("account-a").unwrap();
    assert_eq!(
        hot.get(&stream).map(|(a, v)| (a.balance, v)),
        Some((50, 51))
    );

    // Another writer (no cache) appends 3 events: the cached handler reads those 3 only.
    let plain = CommandHandler::<Account>::builder(store.clone(), ())
        .build()
        .unwrap();
    read.store(0, Ordering::SeqCst);
    for _ in 0..3 {
        plain.execute("a", &Command::Deposit(10)).await.unwrap();
    }
    let uncached_reads = read.swap(0, Ordering::SeqCst);
    assert_eq!(
        uncached_reads,
        51 + 52 + 53,
        "without a cache, each load reads the whole stream"
    );
    cached.execute("a", &Command::Withdraw(80)).await.unwrap();
    assert_eq!(read.load(Ordering::SeqCst), 3);
    assert_eq!(plain.load("a").await.unwrap().state.balance, 0);
    assert_eq!(hot.get(&stream).map(|(a, v)| (a.balance, v)), Some((0, 55)));
}

#[tokio::test]
async fn a_resubmission_is_found_behind_the_cached_version() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let cached = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .cache(cache())
        .snapshot_policy(SnapshotPolicy::EveryEvents(2))
        .build()
        .unwrap();
    cached.execute("a", &Command::Open).await.unwrap();
    let ctx = CommandContext::new().command_id(Uuid::new_v4());
    cached
        .execute_with("a", &Command::Deposit(5), &ctx)
        .await
        .unwrap();
    cached.execute("a", &Command::Withdraw(5)).await.unwrap();
    // The same deposit again: the cached state is at version 3, the deposit at 2;
    // the aggregate would accept it again, and the store refuses its ids.
    let again = cached
        .execute_with("a", &Command::Deposit(5), &ctx)
        .await
        .unwrap();
    assert_eq!((again.version, again.events, again.duplicate), (2, 0, true));
    // A resubmitted withdrawal the aggregate would now refuse is found too.
    let w = CommandContext::new().command_id(Uuid::new_v4());
    cached.execute("a", &Command::Deposit(4)).await.unwrap();
    cached
        .execute_with("a", &Command::Withdraw(4), &w)
        .await
        .unwrap();
    let again = cached
        .execute_with("a", &Command::Withdraw(4), &w)
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(cached.load("a").await.unwrap().state.balance, 0);
}
