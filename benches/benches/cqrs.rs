//! palisade-cqrs: projection catch-up into exactly-once read models.
//!
//! ```text
//! PALISADE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench -p palisade-benches --bench cqrs
//! ```
//!
//! | group | what one iteration is | throughput |
//! |---|---|---|
//! | `projection_catch_up/sqlite` | a new projection catches up on a log of 10,000 events into a SQLite read model (one upsert per event; writes and checkpoint in one transaction per batch of up to 500, the default) | 10,000 events |
//! | `projection_catch_up/postgres` | the same into a PostgreSQL read model, each batch (up to 500, the default) in one set-based statement (`apply_batch` over `unnest` arrays, summed per account) | 10,000 events |
//! | `projection_catch_up/postgres_batch_100` | the same with `batch_size(100)` | 10,000 events |
//! | `projection_catch_up/postgres_per_event` | the same with the default `apply_batch`: one upsert per event, each awaited before the next, batches of 100 | 10,000 events |
//!
//! The log is in memory, so the time is the read model's. Each iteration
//! starts a runner with a projection of a fresh name (so it starts from the
//! beginning of the log) and waits until it has caught up. Without
//! `PALISADE_POSTGRES_URL` the PostgreSQL group is skipped (a line says so).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use palisade::cqrs::rusqlite::{self, Transaction};
use palisade::cqrs::tokio_postgres;
use palisade::cqrs::{
    BoxError, PostgresProjection, PostgresReadModel, ProjectionContext, ProjectionRunner,
    RecordedEvent, SqliteProjection, SqliteReadModel,
};
use palisade::event_store::{
    EventStore, ExpectedVersion, InMemoryEventStore, NewEvent, StreamName,
};
use tokio::runtime::Runtime;

const EVENTS: u64 = 10_000;
const SCHEMA: &str = "palisade_bench_cqrs";

/// Counts deposits per account.
#[derive(Clone, Copy)]
struct Totals;

impl SqliteProjection for Totals {
    fn setup(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS totals (projection TEXT, account TEXT, total INTEGER, PRIMARY KEY (projection, account))",
        )
    }
    fn apply(
        &self,
        tx: &Transaction<'_>,
        e: &RecordedEvent,
        _: ProjectionContext,
    ) -> Result<(), BoxError> {
        let amount: i64 = e.decode()?;
        tx.execute(
            "INSERT INTO totals VALUES ('p', ?1, ?2) ON CONFLICT (projection, account) DO UPDATE SET total = total + ?2",
            rusqlite::params![e.stream.as_str(), amount],
        )?;
        Ok(())
    }
}

#[palisade::cqrs::async_trait]
impl PostgresProjection for Totals {
    async fn setup(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS totals (account TEXT PRIMARY KEY, total BIGINT NOT NULL)",
        )
        .await
    }
    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        e: &RecordedEvent,
        _: ProjectionContext,
    ) -> Result<(), BoxError> {
        let amount: i64 = e.decode()?;
        tx.execute(
            "INSERT INTO totals VALUES ($1, $2) ON CONFLICT (account) DO UPDATE SET total = totals.total + $2",
            &[&e.stream.as_str(), &amount],
        )
        .await?;
        Ok(())
    }
    async fn apply_batch(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        events: &[(RecordedEvent, ProjectionContext)],
    ) -> Result<(), BoxError> {
        let mut accounts = Vec::with_capacity(events.len());
        let mut amounts = Vec::with_capacity(events.len());
        for (e, _) in events {
            accounts.push(e.stream.as_str());
            amounts.push(e.decode::<i64>()?);
        }
        // Summed per account first: one row may take several events of a batch.
        tx.execute(
            "INSERT INTO totals
             SELECT account, SUM(amount) FROM unnest($1::text[], $2::bigint[]) AS t(account, amount)
             GROUP BY account
             ON CONFLICT (account) DO UPDATE SET total = totals.total + excluded.total",
            &[&accounts, &amounts],
        )
        .await?;
        Ok(())
    }
}

/// [`Totals`] with the default `apply_batch`: one statement per event.
#[derive(Clone, Copy)]
struct TotalsPerEvent;

#[palisade::cqrs::async_trait]
impl PostgresProjection for TotalsPerEvent {
    async fn setup(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), tokio_postgres::Error> {
        PostgresProjection::setup(&Totals, tx).await
    }
    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        e: &RecordedEvent,
        ctx: ProjectionContext,
    ) -> Result<(), BoxError> {
        PostgresProjection::apply(&Totals, tx, e, ctx).await
    }
}

async fn log() -> Arc<dyn EventStore> {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    for i in 0..EVENTS {
        let stream = StreamName::new(format!("account-{}", i % 100)).unwrap();
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::json("Deposited", &(i as i64 % 50)).unwrap()],
            )
            .await
            .unwrap();
    }
    store
}

/// What every PostgreSQL group shares.
struct Postgres<'a> {
    rt: &'a Runtime,
    store: &'a Arc<dyn EventStore>,
    run: &'a AtomicU64,
    url: &'a str,
}

/// One iteration: a fresh schema, a runner catching up into it, the schema dropped.
fn bench_postgres<P: PostgresProjection + Clone>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    pg: &Postgres<'_>,
    id: &str,
    projection: &P,
    batch: usize,
) {
    let Postgres {
        rt,
        store,
        run,
        url,
    } = *pg;
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let n = run.fetch_add(1, Ordering::Relaxed);
                    // A schema per iteration: a fresh table, as a rebuild into new tables has.
                    let schema = format!("{SCHEMA}_{n}");
                    let model = PostgresReadModel::connect(url, &schema)
                        .await
                        .expect("PostgreSQL reachable");
                    let start = Instant::now();
                    let runner = ProjectionRunner::builder(Arc::clone(store))
                        .batch_size(batch)
                        .projection(model.projector("totals", projection.clone()))
                        .start()
                        .await
                        .unwrap();
                    runner
                        .wait_caught_up(Duration::from_millis(1))
                        .await
                        .unwrap();
                    total += start.elapsed();
                    drop(runner);
                    model
                        .client()
                        .await
                        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
                        .await
                        .unwrap();
                }
                total
            })
        });
    });
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let rt = Runtime::new().expect("tokio runtime");
    let store = rt.block_on(log());
    let run = AtomicU64::new(0);
    let mut group = c.benchmark_group("projection_catch_up");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .throughput(Throughput::Elements(EVENTS));

    let path = std::env::temp_dir().join(format!("palisade-bench-cqrs-{}.db", std::process::id()));
    let sqlite = rt
        .block_on(SqliteReadModel::open(&path))
        .expect("open the SQLite read model");
    group.bench_function("sqlite", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let name = format!("totals_{}", run.fetch_add(1, Ordering::Relaxed));
                    let start = Instant::now();
                    let runner = ProjectionRunner::builder(Arc::clone(&store))
                        .projection(sqlite.projector(name, Totals))
                        .start()
                        .await
                        .unwrap();
                    runner
                        .wait_caught_up(Duration::from_millis(1))
                        .await
                        .unwrap();
                    total += start.elapsed();
                }
                total
            })
        });
    });

    match std::env::var("PALISADE_POSTGRES_URL") {
        Ok(url) => {
            let pg = Postgres {
                rt: &rt,
                store: &store,
                run: &run,
                url: &url,
            };
            bench_postgres(&mut group, &pg, "postgres", &Totals, 500);
            bench_postgres(&mut group, &pg, "postgres_batch_100", &Totals, 100);
            bench_postgres(&mut group, &pg, "postgres_per_event", &TotalsPerEvent, 100);
        }
        Err(_) => {
            println!("PALISADE_POSTGRES_URL is not set: skipping projection_catch_up/postgres");
        }
    }
    group.finish();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    c.final_summary();
}
