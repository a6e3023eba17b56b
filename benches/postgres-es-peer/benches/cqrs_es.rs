//! Commands per second: palisade-cqrs's `CommandHandler` on its PostgreSQL
//! event store against cqrs-es's `CqrsFramework` on postgres-es, the same
//! bank account on both sides, in one process on the same server.
//!
//! ```text
//! PALISADE_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo bench --manifest-path benches/postgres-es-peer/Cargo.toml --bench cqrs_es
//! ```
//!
//! | group | what one iteration is | throughput |
//! |---|---|---|
//! | `command/10_past_events/1_writer` | one command on an account that has 10 events | 1 command |
//! | `command/10_past_events/16_writers` | 16 tasks at once, one command each, each on an account of its own with 10 events | 16 commands |
//! | `command/1000_past_events/1_writer` | one command on an account that has 1,000 events | 1 command |
//! | `command/1000_past_events/16_writers` | 16 tasks at once, one command each, each on an account of its own with 1,000 events | 16 commands |
//!
//! One command is the whole of what a caller waits for: load the account
//! (every event since the start: no snapshots on either side), decide
//! (deposit 100, or withdraw 50 under a no-overdraft rule: the commands
//! alternate), append the one event with the version loaded, and return.
//! Both sides use one aggregate type (`Account`, whose `handle` and `apply`
//! call the same two functions) with the same serde events, stored as the same
//! JSON; a pool of 16 connections each; no TLS; no queries, projections or
//! listeners on either side; empty metadata.
//!
//! The 16 writers each work on their own accounts, so nothing conflicts: this
//! is the shape of a service taking requests for many customers at once. (On a
//! shared account cqrs-es returns every conflict to the caller, and the
//! figures would measure how each side retries instead.)
//!
//! The accounts keep growing while they are measured: each writer cycles over
//! its own accounts (1,600 per 10-event cell, 64 per 1,000-event cell), and
//! the run prints the longest stream at the end of each group.
//!
//! - **palisade**: `CommandHandler::<Account>::execute(id, &command)` (a
//!   snapshot read, the stream's row, one page of events, then the append
//!   function; conflicts would be retried, none happen).
//! - **palisade_cached**: the same handler with its hot-aggregate cache on
//!   (`CommandHandlerBuilder::cache`, 10,000 entries): a command on an
//!   account whose cached version is current skips the load and sends the
//!   append alone. cqrs-es has no such cache (its nearest is snapshots, off on
//!   both sides); this row is what a palisade user who turns the cache on
//!   gets, not a like-for-like row. It works on accounts of its own
//!   (`c…` instead of `p…`, filled the same way), so the uncached rows never
//!   move its accounts under it.
//! - **cqrs-es**: `CqrsFramework::execute(id, command)` over
//!   `PersistedEventStore::new_event_store(PostgresEventRepository)` (one
//!   `SELECT` of the events, then `BEGIN`, one `INSERT`, `COMMIT`).
//!
//! The accounts are filled before any timing (palisade through
//! `Repository::append`, postgres-es through `persist`, in batches), the
//! tables analyzed and a `CHECKPOINT` taken. Schemas `palisade_bench_cqrs` and
//! `palisade_bench_cqrs_es`, dropped and recreated at the start of every run.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{PersistedEventRepository, PersistedEventStore, SerializedEvent};
use cqrs_es::{Aggregate as EsAggregate, CqrsFramework, DomainEvent as EsDomainEvent};
use criterion::{Criterion, Throughput};
use palisade_cqrs::{
    Aggregate as PalisadeAggregate, CommandHandler, DomainEvent as PalisadeDomainEvent, Metadata,
    Repository,
};
use palisade_event_store::{EventStore, PostgresEventStore};
use postgres_es::PostgresEventRepository;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::runtime::Runtime;

const PALISADE_SCHEMA: &str = "palisade_bench_cqrs";
const ES_SCHEMA: &str = "palisade_bench_cqrs_es";

/// Writer counts measured.
const WRITERS: [usize; 2] = [1, 16];

// ---- the aggregate, the same on both sides ----------------------------------------

/// A bank account that cannot be overdrawn.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

#[derive(Debug, Clone, Copy)]
enum AccountCommand {
    Deposit { amount: i64 },
    Withdraw { amount: i64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum AccountEvent {
    Deposited { amount: i64 },
    Withdrew { amount: i64 },
}

#[derive(Debug, thiserror::Error)]
#[error("insufficient funds: the balance is {balance}, {amount} was asked")]
struct Overdraft {
    balance: i64,
    amount: i64,
}

impl AccountEvent {
    fn name(&self) -> &'static str {
        match self {
            Self::Deposited { .. } => "Deposited",
            Self::Withdrew { .. } => "Withdrew",
        }
    }
}

impl Account {
    fn decide(&self, command: AccountCommand) -> Result<AccountEvent, Overdraft> {
        match command {
            AccountCommand::Deposit { amount } => Ok(AccountEvent::Deposited { amount }),
            AccountCommand::Withdraw { amount } if amount > self.balance => Err(Overdraft {
                balance: self.balance,
                amount,
            }),
            AccountCommand::Withdraw { amount } => Ok(AccountEvent::Withdrew { amount }),
        }
    }

    fn evolve(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrew { amount } => self.balance -= amount,
        }
    }
}

impl PalisadeDomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        self.name()
    }
}

impl EsDomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        self.name().to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

impl PalisadeAggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = Overdraft;
    type Services = ();

    async fn handle(
        &self,
        command: &AccountCommand,
        (): &(),
    ) -> Result<Vec<AccountEvent>, Overdraft> {
        self.decide(*command).map(|e| vec![e])
    }

    fn apply(&mut self, event: AccountEvent) {
        self.evolve(&event);
    }
}

impl EsAggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = Overdraft;
    type Services = ();

    async fn handle(
        &mut self,
        command: AccountCommand,
        (): &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Overdraft> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: AccountEvent) {
        self.evolve(&event);
    }
}

/// The `n`-th command a writer sends: deposits and withdrawals alternate, so
/// every one is accepted (the fill leaves every balance positive).
fn command(n: u64) -> AccountCommand {
    if n.is_multiple_of(2) {
        AccountCommand::Deposit { amount: 100 }
    } else {
        AccountCommand::Withdraw { amount: 50 }
    }
}

// ---- setup ------------------------------------------------------------------------

type EsFramework = CqrsFramework<Account, PersistedEventStore<PostgresEventRepository, Account>>;

struct Sides {
    palisade: CommandHandler<Account>,
    /// The same store, with the hot-aggregate cache.
    palisade_cached: CommandHandler<Account>,
    es: Arc<EsFramework>,
    /// postgres-es's repository, for the fill.
    es_repo: PostgresEventRepository,
    /// The pool under `es`, for setup statements.
    pool: PgPool,
}

async fn sides(url: &str) -> Sides {
    let pool = common::pool(url, common::POOL).await;
    common::drop_schema(&pool, PALISADE_SCHEMA).await;
    common::es_schema(&pool, ES_SCHEMA).await;
    let store = PostgresEventStore::builder(url)
        .schema(PALISADE_SCHEMA)
        .pool_size(common::POOL as usize)
        .connect()
        .await
        .expect("connect palisade");
    let store: Arc<dyn EventStore> = Arc::new(store);
    let palisade = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .build()
        .expect("a valid handler");
    let hot = palisade_cache::Cache::builder()
        .max_capacity(10_000)
        .build()
        .expect("a valid cache");
    let palisade_cached = CommandHandler::<Account>::builder(store, ())
        .cache(hot)
        .build()
        .expect("a valid handler");
    let repo = || {
        PostgresEventRepository::new(pool.clone()).with_tables(
            &format!("{ES_SCHEMA}.events"),
            &format!("{ES_SCHEMA}.snapshots"),
        )
    };
    let es = Arc::new(CqrsFramework::new(
        PersistedEventStore::new_event_store(repo()),
        vec![],
        (),
    ));
    Sides {
        palisade,
        palisade_cached,
        es,
        es_repo: repo(),
        pool,
    }
}

/// The id of account `index` of the cell with `past` events.
fn account(past: usize, index: usize) -> String {
    format!("p{past}.{index}")
}

/// The id of account `index` of the cached handler's own accounts.
fn cached_account(past: usize, index: usize) -> String {
    format!("c{past}.{index}")
}

/// Gives `accounts` accounts `past` deposits each, on both sides.
async fn fill(sides: &Sides, past: usize, accounts: usize) {
    let batch = past.min(100);
    let events: Vec<AccountEvent> = (0..batch)
        .map(|_| AccountEvent::Deposited { amount: 100 })
        .collect();
    let repository: &Repository<Account> = sides.palisade.repository();
    let payload = serde_json::to_value(&events[0]).expect("an event encodes");
    for index in 0..accounts {
        let id = account(past, index);
        for first in (0..past).step_by(batch) {
            repository
                .append(&id, first as u64, &events, &Metadata::default())
                .await
                .expect("palisade fill");
            repository
                .append(
                    &cached_account(past, index),
                    first as u64,
                    &events,
                    &Metadata::default(),
                )
                .await
                .expect("palisade fill");
            let serialized: Vec<SerializedEvent> = (first + 1..=first + batch)
                .map(|sequence| {
                    SerializedEvent::new(
                        id.clone(),
                        sequence,
                        <Account as EsAggregate>::TYPE.to_owned(),
                        "Deposited".to_owned(),
                        "1".to_owned(),
                        payload.clone(),
                        serde_json::to_value(HashMap::<String, String>::new())
                            .expect("metadata encodes"),
                    )
                })
                .collect();
            sides
                .es_repo
                .persist::<Account>(&serialized, None)
                .await
                .expect("postgres-es fill");
        }
    }
}

/// The longest stream on each side, for the report of how far the accounts grew.
async fn longest(pool: &PgPool, past: usize) -> (i64, i64) {
    let like = format!("p{past}.%");
    let palisade: i64 = sqlx::query_scalar(&format!(
        "SELECT coalesce(max(version), 0)::bigint FROM {PALISADE_SCHEMA}.streams WHERE name LIKE $1"
    ))
    .bind(format!("account-{like}"))
    .fetch_one(pool)
    .await
    .expect("palisade's longest stream");
    let es: i64 = sqlx::query_scalar(&format!(
        "SELECT coalesce(max(sequence), 0)::bigint FROM {ES_SCHEMA}.events WHERE aggregate_id LIKE $1"
    ))
    .bind(like)
    .fetch_one(pool)
    .await
    .expect("postgres-es's longest stream");
    (palisade, es)
}

// ---- the benchmarks -------------------------------------------------------------

/// What a writer's commands go through.
#[derive(Clone)]
enum Side {
    Palisade(CommandHandler<Account>),
    PalisadeCached(CommandHandler<Account>),
    Es(Arc<EsFramework>),
}

impl Side {
    async fn execute(&self, past: usize, index: usize, command: AccountCommand) {
        match self {
            Self::Palisade(handler) => {
                handler
                    .execute(&account(past, index), &command)
                    .await
                    .expect("palisade command");
            }
            Self::PalisadeCached(handler) => {
                handler
                    .execute(&cached_account(past, index), &command)
                    .await
                    .expect("palisade command");
            }
            Self::Es(cqrs) => cqrs
                .execute(&account(past, index), command)
                .await
                .expect("cqrs-es command"),
        }
    }
}

/// `writers` tasks at once, each sending `iters` commands round-robin over
/// its own share of the `accounts` accounts of the `past` cell; the wall time
/// until the last is done.
async fn run(
    side: &Side,
    past: usize,
    accounts: usize,
    writers: usize,
    iters: u64,
    next: &mut u64,
) -> Duration {
    let per_writer = accounts / writers;
    let first = *next;
    *next += iters;
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let side = side.clone();
            tokio::spawn(async move {
                for n in first..first + iters {
                    let index = writer * per_writer + (n as usize % per_writer);
                    side.execute(past, index, command(n)).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a writer panicked");
    }
    start.elapsed()
}

fn commands(c: &mut Criterion, rt: &Runtime, sides: &Sides, past: usize, accounts: usize) {
    for writers in WRITERS {
        let mut group = c.benchmark_group(format!(
            "command/{past}_past_events/{writers}_writer{}",
            if writers == 1 { "" } else { "s" }
        ));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Elements(writers as u64));
        for side in [
            ("palisade", Side::Palisade(sides.palisade.clone())),
            (
                "palisade_cached",
                Side::PalisadeCached(sides.palisade_cached.clone()),
            ),
            ("cqrs_es", Side::Es(Arc::clone(&sides.es))),
        ] {
            // Each side's own count, so both send the same command sequence.
            let mut next = 0;
            group.bench_function(side.0, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(run(&side.1, past, accounts, writers, iters, &mut next))
                });
            });
        }
        group.finish();
        let (palisade, es) = rt.block_on(longest(&sides.pool, past));
        println!(
            "command/{past}_past_events after {writers} writer(s): longest stream palisade {palisade}, postgres-es {es}"
        );
    }
}

fn main() {
    let Some(url) = common::url("the cqrs-es comparison") else {
        return;
    };
    let mut c = Criterion::default().configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // (past events, accounts): enough accounts that a cell's commands add a
    // few events to each, not a multiple of what it started with.
    let cells = [(10, 1_600), (1_000, 64)];
    let sides = rt.block_on(async {
        let sides = sides(&url).await;
        for (past, accounts) in cells {
            fill(&sides, past, accounts).await;
        }
        common::settle(
            &sides.pool,
            &format!("{PALISADE_SCHEMA}.events, {PALISADE_SCHEMA}.streams, {ES_SCHEMA}.events"),
        )
        .await;
        sides
    });
    for (past, accounts) in cells {
        commands(&mut c, &rt, &sides, past, accounts);
    }
    c.final_summary();
}
