//! Palisade's event store on its three backends: in memory, SQLite and PostgreSQL.
//!
//! ```text
//! PALISADE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p palisade-benches --bench event_store
//! ```
//!
//! Without `PALISADE_POSTGRES_URL` the PostgreSQL benchmarks are skipped (a
//! line says so) and only the in-memory and SQLite ones run.
//!
//! | group | what one iteration is | throughput |
//! |---|---|---|
//! | `append/1_event` | each of W writers appends 1 event to its own stream (`ExpectedVersion::Any`), W = 1, 4, 16 | W events |
//! | `append/100_events` | the same with batches of 100 events | 100 × W events |
//! | `read_stream/1000_events` | `read_stream` of one 1,000-event stream, collected | 1,000 events |
//! | `replay_all` | `read_all` from the start of a log of 100,000 events, every event pulled | 100,000 events |
//!
//! Every event carries the same JSON payload of about 150 bytes (see [`Tick`]).
//! The event objects (a fresh id, the type, a copy of the payload) are built
//! inside the timed loop, as a service would build them.
//!
//! PostgreSQL uses the schemas `palisade_bench` (appends and `read_stream`) and
//! `palisade_bench_replay` (the replay log), both dropped and recreated at the
//! start of every run; SQLite uses two files in `std::env::temp_dir()`, removed
//! at the start of every run. The stream and the log are written first; on
//! PostgreSQL the tables are then analyzed and a `CHECKPOINT` is taken, and the
//! read groups run before the append groups, so that reads are timed on settled
//! tables of a known size. The in-memory store gets a fresh store for each
//! batch of timed appends, so its memory does not grow over the run.
//!
//! The comparison with cqrs-es's PostgreSQL repository (`postgres-es`) is in
//! `benches/postgres-es-peer`: `sqlx` 0.8, which `postgres-es` needs, cannot be
//! in the same dependency graph as this workspace's `rusqlite`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use futures_util::TryStreamExt;
use palisade::event_store::{
    EventStore, ExpectedVersion, InMemoryEventStore, NewEvent, Position, PostgresEventStore,
    ReadAll, ReadStream, SqliteEventStore, StreamName,
};
use palisade_benches::own_settings;
use serde::Serialize;
use tokio::runtime::Runtime;

/// Concurrent writers in the append groups, each on its own stream.
const WRITERS: [usize; 3] = [1, 4, 16];

/// Events in the stream that `read_stream` reads back.
const STREAM_LEN: usize = 1_000;

/// Events in the global log that `replay_all` reads.
const LOG_LEN: usize = 100_000;

/// Events per append when the stream and the log are written before timing.
const FILL_BATCH: usize = 1_000;

/// The schema of the append and `read_stream` benchmarks.
const SCHEMA: &str = "palisade_bench";

/// The schema of the replay log.
const REPLAY_SCHEMA: &str = "palisade_bench_replay";

/// The payload of every event: a small domain event, as JSON.
#[derive(Serialize)]
struct Tick<'a> {
    account_id: &'a str,
    sequence: u64,
    amount_cents: i64,
    currency: &'a str,
    merchant: &'a str,
    recorded_at: &'a str,
}

/// The JSON payload every benchmark appends (`serde_json` of a [`Tick`]).
fn payload() -> Vec<u8> {
    let bytes = serde_json::to_vec(&Tick {
        account_id: "acct-000042",
        sequence: 1_048_576,
        amount_cents: -12_995,
        currency: "EUR",
        merchant: "Corner Bakery",
        recorded_at: "2026-11-22T03:31:14Z",
    })
    .expect("a Tick encodes");
    assert!(
        (100..=200).contains(&bytes.len()),
        "payload is {} bytes",
        bytes.len()
    );
    bytes
}

fn batch(payload: &[u8], events: usize) -> Vec<NewEvent> {
    (0..events)
        .map(|_| NewEvent::new("Tick", payload.to_vec()))
        .collect()
}

fn stream(name: &str) -> StreamName {
    StreamName::new(name).expect("valid stream name")
}

// ---- the stores ---------------------------------------------------------------

/// One backend under test.
struct Backend {
    name: &'static str,
    /// The store for appends and `read_stream`; `None` for the in-memory store,
    /// which gets a fresh store for every batch of timed appends.
    shared: Option<Arc<dyn EventStore>>,
    /// The store holding the `read_stream` stream (the shared one, or a
    /// long-lived in-memory store).
    reads: Arc<dyn EventStore>,
    /// The store holding the `LOG_LEN`-event global log.
    replay: Arc<dyn EventStore>,
}

impl Backend {
    /// The store to time appends on.
    fn append_store(&self) -> Arc<dyn EventStore> {
        match &self.shared {
            Some(store) => Arc::clone(store),
            None => Arc::new(InMemoryEventStore::new()),
        }
    }
}

/// Removes a SQLite database and its WAL files, if they exist.
fn remove_sqlite(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(PathBuf::from(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove {}: {e}", path.display()),
        }
    }
}

/// Runs `sql` on a connection of its own.
async fn admin(url: &str, sql: &str) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let connection = tokio::spawn(connection);
    let result = client.batch_execute(sql).await;
    drop(client);
    let _ = connection.await;
    result
}

/// Drops the benchmark schemas, so every run starts from empty tables.
async fn drop_schemas(url: &str) {
    admin(
        url,
        &format!(
            "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; DROP SCHEMA IF EXISTS {REPLAY_SCHEMA} CASCADE;"
        ),
    )
    .await
    .expect("PostgreSQL at PALISADE_POSTGRES_URL is reachable; drop the benchmark schemas");
}

/// After the fill: gives the planner statistics (the server may run without
/// autovacuum) and writes the filled pages out, so that neither happens
/// during a timed run.
async fn settle(url: &str) {
    admin(
        url,
        &format!(
            "ANALYZE {SCHEMA}.events, {SCHEMA}.streams, {REPLAY_SCHEMA}.events, {REPLAY_SCHEMA}.streams"
        ),
    )
    .await
    .expect("ANALYZE the benchmark schemas");
    if let Err(e) = admin(url, "CHECKPOINT").await {
        println!("CHECKPOINT after the fill failed ({e}); timing without it");
    }
}

/// Writes `events` events to `stream` in batches of [`FILL_BATCH`].
async fn fill(store: &dyn EventStore, stream: &StreamName, events: usize, payload: &[u8]) {
    let mut left = events;
    while left > 0 {
        let n = left.min(FILL_BATCH);
        store
            .append(stream, ExpectedVersion::Any, batch(payload, n))
            .await
            .expect("fill append");
        left -= n;
    }
}

/// Writes the `read_stream` stream and the replay log into a new backend.
async fn prepare(
    name: &'static str,
    shared: Option<Arc<dyn EventStore>>,
    replay: Arc<dyn EventStore>,
    payload: &[u8],
) -> Backend {
    let reads = shared
        .clone()
        .unwrap_or_else(|| Arc::new(InMemoryEventStore::new()));
    fill(&*reads, &stream("read-1000"), STREAM_LEN, payload).await;
    // The log holds many streams, as a real one would: 100 streams of 1,000.
    for i in 0..LOG_LEN / FILL_BATCH {
        fill(
            &*replay,
            &stream(&format!("replay-{i}")),
            FILL_BATCH,
            payload,
        )
        .await;
    }
    Backend {
        name,
        shared,
        reads,
        replay,
    }
}

async fn backends(payload: &[u8]) -> Vec<Backend> {
    let mut all = Vec::new();

    all.push(prepare("memory", None, Arc::new(InMemoryEventStore::new()), payload).await);

    let dir = std::env::temp_dir();
    let (main, replay) = (
        dir.join("palisade-bench.sqlite3"),
        dir.join("palisade-bench-replay.sqlite3"),
    );
    remove_sqlite(&main);
    remove_sqlite(&replay);
    let sqlite: Arc<dyn EventStore> =
        Arc::new(SqliteEventStore::open(&main).await.expect("open SQLite"));
    let sqlite_replay: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(&replay)
            .await
            .expect("open SQLite replay"),
    );
    all.push(prepare("sqlite", Some(sqlite), sqlite_replay, payload).await);

    match std::env::var("PALISADE_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            drop_schemas(&url).await;
            let connect = |schema: &str| {
                PostgresEventStore::builder(url.clone())
                    .schema(schema)
                    .pool_size(16)
                    .connect()
            };
            let pg: Arc<dyn EventStore> = Arc::new(connect(SCHEMA).await.expect("connect"));
            let pg_replay: Arc<dyn EventStore> =
                Arc::new(connect(REPLAY_SCHEMA).await.expect("connect"));
            all.push(prepare("postgres", Some(pg), pg_replay, payload).await);
            settle(&url).await;
        }
        _ => println!(
            "PALISADE_POSTGRES_URL is not set: skipping the PostgreSQL benchmarks \
             (memory and sqlite only)"
        ),
    }
    all
}

// ---- the benchmarks -------------------------------------------------------------

/// `writers` tasks each append `iters` batches of `events` events to their own
/// stream at once; returns the wall-clock time until the last one is done.
async fn timed_appends(
    store: Arc<dyn EventStore>,
    tag: &str,
    writers: usize,
    events: usize,
    iters: u64,
    payload: &Arc<[u8]>,
) -> Duration {
    let streams: Vec<_> = (0..writers)
        .map(|w| stream(&format!("{tag}-w{w}")))
        .collect();
    let start = Instant::now();
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|name| {
            let (store, payload) = (Arc::clone(&store), Arc::clone(payload));
            tokio::spawn(async move {
                for _ in 0..iters {
                    let result = store
                        .append(&name, ExpectedVersion::Any, batch(&payload, events))
                        .await
                        .expect("append");
                    black_box(result);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer task");
    }
    let elapsed = start.elapsed();
    drop(store);
    elapsed
}

fn writers_label(writers: usize) -> String {
    if writers == 1 {
        "1_writer".to_owned()
    } else {
        format!("{writers}_writers")
    }
}

fn append(c: &mut Criterion, rt: &Runtime, backends: &[Backend], payload: &Arc<[u8]>) {
    for events in [1_usize, 100] {
        let label = if events == 1 { "event" } else { "events" };
        let mut group = c.benchmark_group(format!("append/{events}_{label}"));
        // One iteration is a database round trip or more: fewer samples, longer runs.
        own_settings(
            &mut group,
            10,
            Duration::from_secs(1),
            Duration::from_secs(3),
        );
        for writers in WRITERS {
            group.throughput(Throughput::Elements((events * writers) as u64));
            for backend in backends {
                let tag = format!("append-{events}-{writers}");
                group.bench_function(
                    BenchmarkId::new(backend.name, writers_label(writers)),
                    |b| {
                        b.iter_custom(|iters| {
                            rt.block_on(timed_appends(
                                backend.append_store(),
                                &tag,
                                writers,
                                events,
                                iters,
                                payload,
                            ))
                        });
                    },
                );
            }
        }
        group.finish();
    }
}

fn read_stream(c: &mut Criterion, rt: &Runtime, backends: &[Backend]) {
    let mut group = c.benchmark_group(format!("read_stream/{STREAM_LEN}_events"));
    own_settings(
        &mut group,
        10,
        Duration::from_secs(1),
        Duration::from_secs(3),
    );
    group.throughput(Throughput::Elements(STREAM_LEN as u64));
    let name = stream("read-1000");
    for backend in backends {
        group.bench_function(backend.name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let events: Vec<_> = backend
                            .reads
                            .read_stream(&name, ReadStream::forward())
                            .await
                            .expect("read_stream")
                            .try_collect()
                            .await
                            .expect("read_stream page");
                        assert_eq!(events.len(), STREAM_LEN);
                        black_box(events);
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
}

fn replay_all(c: &mut Criterion, rt: &Runtime, backends: &[Backend]) {
    let mut group = c.benchmark_group("replay_all");
    // One replay of the PostgreSQL log takes about a quarter of a second: flat
    // sampling times 10 samples of equally many replays instead of 55 replays.
    own_settings(
        &mut group,
        10,
        Duration::from_secs(1),
        Duration::from_secs(5),
    );
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(LOG_LEN as u64));
    for backend in backends {
        group.bench_function(BenchmarkId::new(backend.name, LOG_LEN), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let seen = backend
                            .replay
                            .read_all(ReadAll::after(Position::START))
                            .await
                            .expect("read_all")
                            .try_fold(0_usize, |n, event| {
                                black_box(event);
                                async move { Ok(n + 1) }
                            })
                            .await
                            .expect("read_all page");
                        assert_eq!(seen, LOG_LEN);
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let payload: Arc<[u8]> = payload().into();
    let backends = rt.block_on(backends(&payload));
    // Reads first, on the settled fill; the appends then grow the tables.
    read_stream(&mut c, &rt, &backends);
    replay_all(&mut c, &rt, &backends);
    append(&mut c, &rt, &backends, &payload);
    c.final_summary();
}
