//! The conformance suite and PostgreSQL-specific guarantees, against a real server.
#![cfg(feature = "postgres")]

mod conformance;

use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use palisade_event_store::*;
use palisade_test_support::{Cleanup, test_name};
use tokio_postgres::NoTls;

/// A schema of its own for one test, so tests run in parallel, dropped with
/// everything in it when the test ends, passed or failed. Shows as its name.
struct Schema {
    url: String,
    name: String,
    cleanup: Cleanup,
}

impl Schema {
    /// A fresh schema on the server of `PALISADE_POSTGRES_URL` (by default
    /// the local one), or `None` when that cannot be reached: `test` is then
    /// skipped, and the output says so (under `PALISADE_REQUIRE_SERVICES=1`
    /// it fails instead).
    fn new(test: &str) -> Option<Self> {
        let url = palisade_test_support::postgres_url(test)?;
        let name = palisade_test_support::unique_name("palisade_test");
        let cleanup = drop_schema_on_drop(url.clone(), name.clone());
        Some(Self { url, name, cleanup })
    }
}

impl std::fmt::Display for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// A guard that drops `schema` (if it was made) on `url` when dropped.
fn drop_schema_on_drop(url: String, schema: String) -> Cleanup {
    Cleanup::new(format!("drop schema {schema}"), move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime
            .block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!(
                        "SET lock_timeout = '10s'; SET client_min_messages = warning; \
                         DROP SCHEMA IF EXISTS {schema} CASCADE"
                    ))
                    .await
            })
            .map_err(|e| e.to_string())
    })
}

async fn store_in(schema: &Schema) -> PostgresEventStore {
    PostgresEventStore::builder(&schema.url)
        .schema(&schema.name)
        .pool_size(8)
        .poll_interval(Duration::from_millis(100))
        .connect()
        .await
        .expect("connect to PostgreSQL")
}

async fn postgres(test: &str) -> Option<(conformance::Store, Cleanup)> {
    let schema = Schema::new(test)?;
    let store = Arc::new(store_in(&schema).await);
    Some((store, schema.cleanup))
}

conformance_tests!(postgres);

async fn raw_client(schema: &Schema) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&schema.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

async fn read_all(store: &PostgresEventStore, after: Position) -> Vec<RecordedEvent> {
    store
        .read_all(ReadAll::after(after))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_is_never_skipped_by_a_reader() {
    let Some(schema) = Schema::new(test_name!()) else {
        return;
    };
    let store = store_in(&schema).await;
    // Transaction A takes the earlier sequence but commits last.
    let mut a = raw_client(&schema).await;
    let tx = a.transaction().await.unwrap();
    tx.query_one(
        &format!("SELECT * FROM {schema}.append('slow-1', 0, 0, $1, ARRAY['E'], ARRAY[1], ARRAY['\\x01'::bytea], ARRAY['{{}}'::bytea])"),
        &[&vec![uuid::Uuid::new_v4()]],
    )
    .await
    .unwrap();

    // B appends after A started and commits first.
    let b = store
        .append(
            &name("fast-1"),
            ExpectedVersion::Any,
            vec![NewEvent::new("E", vec![2])],
        )
        .await
        .unwrap();
    assert!(b.written);

    // A reader now must not move past A's open transaction: it sees nothing yet.
    assert!(
        read_all(&store, Position::START).await.is_empty(),
        "B must wait for A"
    );
    // A subscriber started now receives both, in order, once A commits.
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
    let shared: Arc<dyn EventStore> = Arc::new(store);
    let mut sub = Subscription::start(shared.clone(), checkpoints, "ordered", Filter::all())
        .await
        .unwrap();
    let waiting = tokio::spawn(async move {
        let first = sub.next().await.unwrap();
        let second = sub.next().await.unwrap();
        (first, second)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "nothing is delivered while A is open"
    );
    tx.commit().await.unwrap();
    let (first, second) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.stream.as_str(), first.payload.as_slice()),
        ("slow-1", &[1u8][..])
    );
    assert_eq!(
        (second.stream.as_str(), second.payload.as_slice()),
        ("fast-1", &[2u8][..])
    );
    assert!(first.position < second.position);
    assert!(
        first.position.sequence < second.position.sequence,
        "A took the earlier sequence"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_mid_append_is_resolved_or_says_its_outcome_is_unknown() {
    let Some(schema) = Schema::new(test_name!()) else {
        return;
    };
    // Without resolution: the outcome is unknown, and here nothing was written.
    let store = PostgresEventStore::builder(&schema.url)
        .schema(&schema.name)
        .resolve_unknown_outcomes(0, Backoff::fixed(Duration::from_millis(1)))
        .connect()
        .await
        .unwrap();
    let stream = name("victim-1");
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("E", vec![0])],
        )
        .await
        .unwrap();
    let (lock, result) = kill_a_blocked_append(&schema, Arc::new(store), &stream).await;
    assert!(
        matches!(result, Err(Error::OutcomeUnknown { .. })),
        "{result:?}"
    );
    lock.rollback().await.unwrap();
    let store = store_in(&schema).await;
    assert_eq!(
        store.stream_state(&stream).await.unwrap(),
        StreamState::Active { version: 1 },
        "the killed append had not committed"
    );

    // With resolution (the default): the append is sent again once the lock
    // is gone, and succeeds; the broken connection left the pool.
    let store = Arc::new(store);
    let (lock, pending) = start_blocked_append(&schema, Arc::clone(&store), &stream).await;
    kill_blocked(&schema).await;
    lock.rollback().await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .unwrap()
        .unwrap();
    let r = result.unwrap();
    assert_eq!((r.version, r.written), (51, true));
    let events: Vec<_> = store
        .read_stream(&stream, ReadStream::forward())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events.len(), 51, "written once");
}

type Pending = tokio::task::JoinHandle<Result<AppendResult>>;

/// A connection holding a stream's row lock in an open transaction.
struct Lock(tokio_postgres::Client);

impl Lock {
    async fn rollback(&self) -> std::result::Result<(), tokio_postgres::Error> {
        self.0.batch_execute("ROLLBACK").await
    }
}

/// Holds the stream's row lock and starts an append of 50 events at version
/// 1, which blocks inside its transaction.
async fn start_blocked_append(
    schema: &Schema,
    store: Arc<PostgresEventStore>,
    stream: &StreamName,
) -> (Lock, Pending) {
    let lock = Lock(raw_client(schema).await);
    lock.0
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM {schema}.streams WHERE name = '{stream}' FOR UPDATE"
        ))
        .await
        .unwrap();
    let stream = stream.clone();
    let pending = tokio::spawn(async move {
        let batch = (1..=50u8).map(|i| NewEvent::new("E", vec![i])).collect();
        store
            .append(&stream, ExpectedVersion::Exact(1), batch)
            .await
    });
    (lock, pending)
}

/// Finds the append blocked on the lock and terminates its connection.
async fn kill_blocked(schema: &Schema) {
    let killer = raw_client(schema).await;
    let mut killed = 0i64;
    for _ in 0..100 {
        let row = killer
            .query_one(
                &format!(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE wait_event_type = 'Lock' AND query LIKE '%{schema}.append%'"
                ),
                &[],
            )
            .await
            .unwrap();
        killed = row.get(0);
        if killed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(killed, 1, "the append was blocked and killed");
}

async fn kill_a_blocked_append(
    schema: &Schema,
    store: Arc<PostgresEventStore>,
    stream: &StreamName,
) -> (Lock, Result<AppendResult>) {
    let (lock, pending) = start_blocked_append(schema, store, stream).await;
    kill_blocked(schema).await;
    let result = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .unwrap()
        .unwrap();
    (lock, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_checkpoints_survive_a_new_store() {
    let Some(schema) = Schema::new(test_name!()) else {
        return;
    };
    let first = store_in(&schema).await;
    let s = name("durable-1");
    first
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("E", vec![1]), NewEvent::new("E", vec![2])],
        )
        .await
        .unwrap();
    let last = read_all(&first, Position::START).await.pop().unwrap();
    first.save("projector", last.position).await.unwrap();
    drop(first);

    let second = store_in(&schema).await;
    assert_eq!(
        second.stream_state(&s).await.unwrap(),
        StreamState::Active { version: 2 }
    );
    assert_eq!(
        CheckpointStore::load(&second, "projector").await.unwrap(),
        Some(last.position)
    );
    assert_eq!(CheckpointStore::load(&second, "other").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_is_woken_by_notify_not_by_polling() {
    let Some(schema) = Schema::new(test_name!()) else {
        return;
    };
    let writer = store_in(&schema).await;
    // The reader polls once a minute: only a notification can wake it in time.
    let reader: Arc<dyn EventStore> = Arc::new(
        PostgresEventStore::builder(&schema.url)
            .schema(&schema.name)
            .pool_size(2)
            .poll_interval(Duration::from_secs(60))
            .connect()
            .await
            .unwrap(),
    );
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
    let mut sub = Subscription::start(reader, checkpoints, "remote", Filter::all())
        .await
        .unwrap();
    let waiting = tokio::spawn(async move { sub.next().await.unwrap() });
    // Give the subscription time to read (nothing) and start waiting, and the listener to LISTEN.
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer
        .append(
            &name("remote-1"),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Ping", vec![7])],
        )
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("woken by NOTIFY well before the 60 s poll")
        .unwrap();
    assert_eq!(
        (event.event_type.as_str(), event.payload.as_slice()),
        ("Ping", &[7u8][..])
    );
}

/// An append stuck behind a lock is cancelled by the server at the
/// statement timeout; the error says what the server said, nothing was
/// written, and the store works again once the lock is gone.
#[tokio::test]
async fn a_statement_timeout_cancels_a_stuck_append_and_says_why() {
    let Some(schema) = Schema::new(test_name!()) else {
        return;
    };
    let store = PostgresEventStore::builder(&schema.url)
        .schema(&schema.name)
        .statement_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let s = StreamName::new("order-1").unwrap();
    let (mut locker, connection) = tokio_postgres::connect(&schema.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute(&format!(
        "LOCK TABLE {schema}.streams IN ACCESS EXCLUSIVE MODE"
    ))
    .await
    .unwrap();

    let err = store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Placed", vec![1])],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "backend: ERROR 57014: canceling statement due to statement timeout"
    );
    lock.rollback().await.unwrap();
    assert_eq!(store.stream_state(&s).await.unwrap(), StreamState::NoStream);
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Placed", vec![1])],
        )
        .await
        .unwrap();
}

/// A server that accepts the connection and never answers: `connect` gives
/// up at the connect timeout instead of hanging. Needs no PostgreSQL; the
/// timeout runs on paused tokio time, so the test waits for nothing.
#[tokio::test(start_paused = true)]
async fn connect_gives_up_at_the_connect_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("postgres://postgres@{}/test", silent.local_addr().unwrap());
    let started = tokio::time::Instant::now();
    let err = PostgresEventStore::builder(&url)
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err}");
    assert!(err.to_string().contains("Timeout"), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    drop(silent);
}

/// The versions `options` reads from `stream`.
async fn versions(
    store: &PostgresEventStore,
    stream: &StreamName,
    options: ReadStream,
) -> Vec<u64> {
    store
        .read_stream(stream, options)
        .await
        .unwrap()
        .map_ok(|e| e.version)
        .try_collect()
        .await
        .unwrap()
}

/// Forward reads fetch the stream's row with their first page (one
/// statement); the pages after it, `from`, `limit` and the versions a delete
/// hides behave as before, across the 1,000-event page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_reads_page_from_any_version_past_hidden_events() {
    let Some(schema) = Schema::new(test_name!()) else {
        return;
    };
    let store = store_in(&schema).await;
    let s = name("ledger-1");
    let batch = |n: usize| (0..n).map(|_| NewEvent::new("E", b"{}".to_vec())).collect();
    for _ in 0..12 {
        store
            .append(&s, ExpectedVersion::Any, batch(100))
            .await
            .unwrap();
    }
    store
        .delete_stream(&s, ExpectedVersion::Exact(1_200))
        .await
        .unwrap();
    store
        .append(&s, ExpectedVersion::Recreate, batch(100))
        .await
        .unwrap();
    for _ in 0..12 {
        store
            .append(&s, ExpectedVersion::Any, batch(100))
            .await
            .unwrap();
    }
    let range = |a: u64, b: u64| (a..=b).collect::<Vec<_>>();
    assert_eq!(
        versions(&store, &s, ReadStream::forward()).await,
        range(1_201, 2_500)
    );
    assert_eq!(
        versions(&store, &s, ReadStream::forward().from(5)).await,
        range(1_201, 2_500),
        "the first life stays hidden"
    );
    assert_eq!(
        versions(&store, &s, ReadStream::forward().from(2_000)).await,
        range(2_000, 2_500)
    );
    assert_eq!(
        versions(&store, &s, ReadStream::forward().from(1_300).limit(1_000)).await,
        range(1_300, 2_299),
        "a full first page that is the whole limit"
    );
    assert_eq!(
        versions(&store, &s, ReadStream::forward().from(1_300).limit(1_001)).await,
        range(1_300, 2_300),
        "one event on the second page"
    );
    assert_eq!(
        versions(&store, &s, ReadStream::forward().from(1_201).limit(1_300)).await,
        range(1_201, 2_500)
    );
    assert!(
        versions(&store, &s, ReadStream::forward().limit(0))
            .await
            .is_empty()
    );
    assert!(
        versions(&store, &s, ReadStream::forward().from(2_501))
            .await
            .is_empty()
    );
    assert!(
        versions(&store, &name("ledger-2"), ReadStream::forward())
            .await
            .is_empty()
    );
    assert_eq!(
        versions(&store, &s, ReadStream::backward().limit(3)).await,
        [2_500, 2_499, 2_498]
    );
    store
        .delete_stream(&s, ExpectedVersion::Exact(2_500))
        .await
        .unwrap();
    assert!(matches!(
        store.read_stream(&s, ReadStream::forward()).await,
        Err(Error::StreamDeleted { .. })
    ));
}
