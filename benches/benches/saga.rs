//! Sagas per second: a 3-step saga of no-op steps, 1 and 16 at once, with its
//! log in memory, on SQLite and on PostgreSQL, against the same three no-op
//! steps awaited with no log (what the log costs per step).
//!
//! ```text
//! PALISADE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p palisade-benches --bench saga
//! ```
//!
//! Without `PALISADE_POSTGRES_URL` the PostgreSQL rows are skipped (a line
//! says so). One iteration is C sagas started at once on a multi-threaded
//! runtime, each with a fresh id, all run to `Completed`; the throughput is C
//! sagas. A saga of 3 steps writes 9 records in 5 appends: the start and the
//! claim; step 1's start; each step's completion with the next step's start
//! (the last with the end). Results are in `docs/benchmarks.md`.
//!
//! Allocations per saga (in memory, one at a time), with the
//! `count-allocations` feature; the filter matches no benchmark, so nothing
//! is timed:
//!
//! ```text
//! cargo bench -p palisade-benches --bench saga --features count-allocations -- allocations
//! ```
//!
//! There is no peer crate to compare with here; `no_log` is the baseline.
//!
//! PostgreSQL uses the schema `palisade_bench_saga`, dropped and recreated at
//! the start of every run; SQLite a file in `std::env::temp_dir()`, removed
//! at the start of every run.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use palisade::saga::{
    EventStore, InMemoryEventStore, Outcome, PostgresEventStore, Saga, SqliteEventStore, Step,
};
use tokio::runtime::Runtime;

const SCHEMA: &str = "palisade_bench_saga";
const CONCURRENCY: [usize; 2] = [1, 16];

type E = std::io::Error;

fn saga(store: Arc<dyn EventStore>) -> Saga<u64> {
    let noop = |name: &'static str| Step::new(name, |n: u64, _| async move { Ok::<_, E>(n + 1) });
    Saga::builder("bench", store)
        .step(noop("a"))
        .step(noop("b"))
        .step(noop("c"))
        .build()
        .expect("a valid saga")
}

async fn postgres() -> Option<Arc<dyn EventStore>> {
    let Ok(url) = std::env::var("PALISADE_POSTGRES_URL") else {
        println!("SKIPPED saga/postgres: PALISADE_POSTGRES_URL is not set");
        return None;
    };
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL at PALISADE_POSTGRES_URL is reachable");
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "SET client_min_messages = warning; DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"
        ))
        .await
        .expect("drop the benchmark schema");
    drop(client);
    let _ = connection.await;
    let store = PostgresEventStore::builder(&url)
        .schema(SCHEMA)
        .pool_size(16)
        .connect()
        .await
        .expect("connect to PostgreSQL");
    Some(Arc::new(store))
}

async fn backends() -> Vec<(&'static str, Arc<dyn EventStore>)> {
    let mut all: Vec<(&'static str, Arc<dyn EventStore>)> =
        vec![("memory", Arc::new(InMemoryEventStore::new()))];
    let path = std::env::temp_dir().join("palisade-bench-saga.db");
    for p in [
        path.clone(),
        path.with_extension("db-wal"),
        path.with_extension("db-shm"),
    ] {
        let _ = std::fs::remove_file(p);
    }
    all.push((
        "sqlite",
        Arc::new(SqliteEventStore::open(&path).await.expect("open SQLite")),
    ));
    if let Some(pg) = postgres().await {
        all.push(("postgres", pg));
    }
    all
}

/// `iters` rounds of `concurrency` sagas started at once.
fn run(
    rt: &Runtime,
    saga: &Saga<u64>,
    next: &AtomicU64,
    concurrency: usize,
    iters: u64,
) -> Duration {
    rt.block_on(async {
        let began = Instant::now();
        for _ in 0..iters {
            let tasks: Vec<_> = (0..concurrency)
                .map(|_| {
                    let saga = saga.clone();
                    let id = next.fetch_add(1, Ordering::Relaxed).to_string();
                    tokio::spawn(async move { saga.start(&id, 0).await })
                })
                .collect();
            for t in tasks {
                let outcome = t.await.expect("the task").expect("the saga's log");
                assert_eq!(outcome, Outcome::Completed { state: 3 });
            }
        }
        began.elapsed()
    })
}

/// Heap allocations per saga, counted with `allocation-counter` (feature
/// `count-allocations`), whose counting global allocator is linked only when
/// this module is compiled.
#[cfg(feature = "count-allocations")]
mod allocations {
    use std::sync::Arc;

    use palisade::saga::{InMemoryEventStore, Outcome};
    use palisade_benches::{AllocRow, alloc_table};

    use super::saga;

    /// Sagas counted per row, after `WARM_UP` uncounted ones.
    const SAGAS: u64 = 1_000;
    const WARM_UP: u64 = 10;

    /// One saga at a time on a current-thread runtime, so that no task is
    /// spawned: what is counted is the saga, its log records and the store's
    /// growth by them (the in-memory store keeps every record).
    pub(crate) fn report() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        let saga = saga(Arc::new(InMemoryEventStore::new()));
        let mut next = 0_u64;
        let mut run = || {
            next += 1;
            let outcome = rt
                .block_on(saga.start(&next.to_string(), 0))
                .expect("the saga's log");
            assert_eq!(outcome, Outcome::Completed { state: 3 });
        };
        for _ in 0..WARM_UP {
            run();
        }
        let info = allocation_counter::measure(|| {
            for _ in 0..SAGAS {
                run();
            }
        });
        let row = AllocRow {
            operation: "saga/3_noop_steps, 1 at a time".to_owned(),
            subject: "memory".to_owned(),
            allocs_per_call: info.count_total as f64 / SAGAS as f64,
            bytes_per_call: info.bytes_total as f64 / SAGAS as f64,
        };
        println!(
            "\nHeap allocations per saga ({SAGAS} sagas; counted by allocation-counter):\n\n{}",
            alloc_table(&[row])
        );
    }
}

fn main() {
    #[cfg(feature = "count-allocations")]
    if !std::env::args().any(|a| a == "--list") {
        allocations::report();
    }
    let mut c = Criterion::default().configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let backends = rt.block_on(backends());
    let next = AtomicU64::new(0);
    let mut group = c.benchmark_group("saga/3_noop_steps");
    for concurrency in CONCURRENCY {
        group.throughput(Throughput::Elements(concurrency as u64));
        group.bench_function(BenchmarkId::new("no_log", concurrency), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let began = Instant::now();
                    for _ in 0..iters {
                        let tasks: Vec<_> = (0..concurrency)
                            .map(|_| {
                                tokio::spawn(async {
                                    let mut n = 0u64;
                                    for _ in 0..3 {
                                        n = async { Ok::<_, E>(black_box(n) + 1) }.await.unwrap();
                                    }
                                    n
                                })
                            })
                            .collect();
                        for t in tasks {
                            assert_eq!(t.await.unwrap(), 3);
                        }
                    }
                    began.elapsed()
                })
            });
        });
        for (name, store) in &backends {
            let saga = saga(Arc::clone(store));
            group.bench_function(BenchmarkId::new(*name, concurrency), |b| {
                b.iter_custom(|iters| run(&rt, &saga, &next, concurrency, iters));
            });
        }
    }
    group.finish();
    c.final_summary();
}
