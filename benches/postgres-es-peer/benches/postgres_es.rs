//! Palisade's PostgreSQL event store against cqrs-es's PostgreSQL repository,
//! [postgres-es](https://crates.io/crates/postgres-es) 0.5, in one process on
//! the same server.
//!
//! ```text
//! PALISADE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench --manifest-path benches/postgres-es-peer/Cargo.toml
//! ```
//!
//! | group | what one iteration is | throughput |
//! |---|---|---|
//! | `peer_append/100_events` | one writer appends a batch of 100 events to one stream (aggregate) | 100 events |
//! | `peer_load/1000_events` | all events of one 1,000-event stream (aggregate), each payload decoded into a typed `Tick` | 1,000 events |
//!
//! Both get the same JSON payload (the `Tick` of `benches/benches/event_store.rs`,
//! 150 bytes) and empty metadata, a pool of 16 connections, no TLS, and build
//! their event objects inside the timed loop:
//!
//! - **palisade**: `append(stream, ExpectedVersion::Any, 100 × NewEvent::new("Tick", payload))`
//!   and `read_stream(stream, ReadStream::forward())`, each event's
//!   `decode::<Tick>()` (serde_json from the bytes) collected, schema
//!   `palisade_bench_peer`.
//! - **postgres-es**: `persist::<Account>(&100 × SerializedEvent, None)` (no
//!   snapshot) and `get_events::<Account>(id)` (which parses every payload
//!   and metadata into a `serde_json::Value`), each payload then
//!   `serde_json::from_value::<Tick>` (what cqrs-es does to load an aggregate)
//!   collected, on the tables of its `db/init.sql` in the schema
//!   `palisade_bench_es`.
//!
//! The load ends on both sides in the same `Vec<Tick>`; both keep the
//! events' metadata (palisade's parsed into its `Metadata`, postgres-es's as a
//! `Value`) and drop it with the envelopes.
//!
//! Both schemas are dropped and recreated at the start of every run. The
//! 1,000-event streams are written first, the tables analyzed and a `CHECKPOINT`
//! taken; then `peer_load` runs, then `peer_append`. Without
//! `PALISADE_POSTGRES_URL` the benchmark prints a line and does nothing.

#[path = "common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
use cqrs_es::{Aggregate, DomainEvent};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use futures_util::TryStreamExt;
use palisade_event_store::{
    EventStore, ExpectedVersion, NewEvent, PostgresEventStore, ReadStream, StreamName,
};
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use tokio::runtime::Runtime;

use common::POOL;

/// Events per append.
const BATCH: usize = 100;

/// Events in the stream (aggregate) that is loaded.
const STREAM_LEN: usize = 1_000;

const PALISADE_SCHEMA: &str = "palisade_bench_peer";
const ES_SCHEMA: &str = "palisade_bench_es";

/// The payload of every event; the same as in `benches/benches/event_store.rs`.
#[derive(Serialize)]
struct Tick<'a> {
    account_id: &'a str,
    sequence: u64,
    amount_cents: i64,
    currency: &'a str,
    merchant: &'a str,
    recorded_at: &'a str,
}

/// [`Tick`] as a load decodes it.
#[derive(Debug, Deserialize, PartialEq)]
struct TickOwned {
    account_id: String,
    sequence: u64,
    amount_cents: i64,
    currency: String,
    merchant: String,
    recorded_at: String,
}

fn tick() -> Tick<'static> {
    Tick {
        account_id: "acct-000042",
        sequence: 1_048_576,
        amount_cents: -12_995,
        currency: "EUR",
        merchant: "Corner Bakery",
        recorded_at: "2026-11-22T03:31:14Z",
    }
}

// ---- the cqrs-es aggregate the events belong to ---------------------------------

/// postgres-es needs an aggregate type for its generic calls; only its `TYPE` is used.
#[derive(Default, Serialize, Deserialize)]
struct Account;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TickEvent;

impl DomainEvent for TickEvent {
    fn event_type(&self) -> String {
        "Tick".into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = ();
    type Event = TickEvent;
    type Error = Infallible;
    type Services = ();

    async fn handle(&mut self, (): (), (): &(), _sink: &EventSink<Self>) -> Result<(), Infallible> {
        Ok(())
    }

    fn apply(&mut self, _event: TickEvent) {}
}

/// `count` events for `aggregate`, numbered from `first`, as postgres-es persists them.
fn serialized(
    aggregate: &str,
    first: usize,
    count: usize,
    payload: &Value,
) -> Vec<SerializedEvent> {
    (first..first + count)
        .map(|sequence| {
            SerializedEvent::new(
                aggregate.to_owned(),
                sequence,
                Account::TYPE.to_owned(),
                "Tick".to_owned(),
                "1".to_owned(),
                payload.clone(),
                Value::Object(serde_json::Map::new()),
            )
        })
        .collect()
}

fn new_events(payload: &[u8], count: usize) -> Vec<NewEvent> {
    (0..count)
        .map(|_| NewEvent::new("Tick", payload.to_vec()))
        .collect()
}

// ---- setup ------------------------------------------------------------------------

struct Stores {
    palisade: PostgresEventStore,
    es: PostgresEventRepository,
    /// The pool under `es`, for setup statements.
    pool: PgPool,
}

async fn stores(url: &str) -> Stores {
    let pool = common::pool(url, POOL).await;
    common::drop_schema(&pool, PALISADE_SCHEMA).await;
    common::es_schema(&pool, ES_SCHEMA).await;
    let es = PostgresEventRepository::new(pool.clone()).with_tables(
        &format!("{ES_SCHEMA}.events"),
        &format!("{ES_SCHEMA}.snapshots"),
    );
    let palisade = PostgresEventStore::builder(url)
        .schema(PALISADE_SCHEMA)
        .pool_size(POOL as usize)
        .connect()
        .await
        .expect("connect palisade");
    Stores { palisade, es, pool }
}

/// Writes the 1,000-event stream (aggregate) that `peer_load` reads into both
/// stores, in batches of [`BATCH`], then analyzes the tables (the server may
/// run without autovacuum) and takes a `CHECKPOINT`, so that neither happens
/// during a timed run.
async fn fill(stores: &Stores, payload: &[u8], value: &Value) {
    let stream = StreamName::new("load-1000").expect("valid stream name");
    for first in (1..=STREAM_LEN).step_by(BATCH) {
        stores
            .palisade
            .append(&stream, ExpectedVersion::Any, new_events(payload, BATCH))
            .await
            .expect("palisade fill");
        stores
            .es
            .persist::<Account>(&serialized("load-1000", first, BATCH, value), None)
            .await
            .expect("postgres-es fill");
    }
    common::settle(
        &stores.pool,
        &format!("{PALISADE_SCHEMA}.events, {PALISADE_SCHEMA}.streams, {ES_SCHEMA}.events"),
    )
    .await;
}

// ---- the benchmarks -------------------------------------------------------------

fn group_settings(c: &mut Criterion, name: String, events: usize) -> BenchmarkGroup<'_, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(events as u64));
    group
}

fn append(c: &mut Criterion, rt: &Runtime, stores: &Stores, payload: &[u8], value: &Value) {
    let mut group = group_settings(c, format!("peer_append/{BATCH}_events"), BATCH);
    let stream = StreamName::new("append-1").expect("valid stream name");
    group.bench_function("palisade", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let result = stores
                        .palisade
                        .append(&stream, ExpectedVersion::Any, new_events(payload, BATCH))
                        .await
                        .expect("palisade append");
                    black_box(result);
                }
                start.elapsed()
            })
        });
    });
    // postgres-es has no "any version": the caller numbers the events, here
    // on from the last batch, so every persist succeeds like palisade's.
    let mut next = 1;
    group.bench_function("postgres_es", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let events = serialized("append-1", next, BATCH, value);
                    stores
                        .es
                        .persist::<Account>(&events, None)
                        .await
                        .expect("postgres-es persist");
                    next += BATCH;
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn load(c: &mut Criterion, rt: &Runtime, stores: &Stores) {
    let stream = StreamName::new("load-1000").expect("valid stream name");
    let mut group = group_settings(c, format!("peer_load/{STREAM_LEN}_events"), STREAM_LEN);
    // Both sides end in the same typed events.
    let (ours, theirs) = rt.block_on(async {
        let ours: Vec<TickOwned> = stores
            .palisade
            .read_stream(&stream, ReadStream::forward())
            .await
            .expect("palisade read_stream")
            .map_ok(|e| e.decode::<TickOwned>().expect("a Tick"))
            .try_collect()
            .await
            .expect("palisade page");
        let theirs: Vec<TickOwned> = stores
            .es
            .get_events::<Account>("load-1000")
            .await
            .expect("postgres-es get_events")
            .into_iter()
            .map(|e| serde_json::from_value(e.payload).expect("a Tick"))
            .collect();
        (ours, theirs)
    });
    assert_eq!(ours.len(), STREAM_LEN);
    assert_eq!(ours, theirs, "both loads decode the same events");
    group.bench_function("palisade", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let events: Vec<TickOwned> = stores
                        .palisade
                        .read_stream(&stream, ReadStream::forward())
                        .await
                        .expect("palisade read_stream")
                        .map_ok(|e| e.decode::<TickOwned>().expect("a Tick"))
                        .try_collect()
                        .await
                        .expect("palisade page");
                    assert_eq!(events.len(), STREAM_LEN);
                    black_box(events);
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("postgres_es", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let events: Vec<TickOwned> = stores
                        .es
                        .get_events::<Account>("load-1000")
                        .await
                        .expect("postgres-es get_events")
                        .into_iter()
                        .map(|e| serde_json::from_value(e.payload).expect("a Tick"))
                        .collect();
                    assert_eq!(events.len(), STREAM_LEN);
                    black_box(events);
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn main() {
    let Some(url) = common::url("the postgres-es comparison") else {
        return;
    };
    let mut c = Criterion::default().configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let payload = serde_json::to_vec(&tick()).expect("a Tick encodes");
    let value: Value = serde_json::from_slice(&payload).expect("a Tick decodes");
    let stores = rt.block_on(async {
        let stores = stores(&url).await;
        fill(&stores, &payload, &value).await;
        stores
    });
    // The load first, on the settled fill; the appends then grow the tables.
    load(&mut c, &rt, &stores);
    append(&mut c, &rt, &stores, &payload, &value);
    c.final_summary();
}
