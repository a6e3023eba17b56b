//! The orders service: every Palisade crate in one HTTP service.
//!
//! ```text
//! POST /orders ─▶ rate limit (per API key) ─▶ saga "order" ───────────────────────────────┐
//!                                             place → reserve → payment → charge → ship ▶ settle → complete
//!                                             (CQRS)  (CQRS)     (undo:    (standard     (pivot) (CQRS)  (CQRS)
//!                                                                 refund)   stack ▶ provider)
//! events ─▶ projection "order_views" ─▶ read model ◀─ GET /orders/{id} through the cache
//! ```
//!
//! The event store is SQLite in a temporary directory, or PostgreSQL when
//! [`Settings::database_url`] is set; the view cache and the rate limits are
//! in the process, or backed by Redis when [`Settings::redis_url`] is set.
//! The payment provider is [`provider::Provider`], started by the service on
//! a local port, flaky on purpose. `GET /status` is a live page of it all.

pub mod client;
pub mod domain;
pub mod http;
pub mod limits;
pub mod load;
pub mod payments;
pub mod provider;
pub mod saga;
pub mod status;
pub mod stock;
pub mod telemetry;
pub mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use palisade::cache::Cache;
use palisade::cache::tier::{RedisTier, TieredCache};
use palisade::core::SharedClock;
use palisade::cqrs::{
    BoxError, CommandHandler, PostgresReadModel, ProjectionRunner, Queries, SqliteReadModel,
};
use palisade::event_store::{EventStore, Instrumented, PostgresEventStore, SqliteEventStore};
use palisade::saga::Saga;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use domain::{Order, Stock, StockCommand};
use limits::Limits;
use payments::Payments;
use provider::{Faults, Provider};
use saga::{OrderSaga, SagaStats};
use stock::StockDesk;
use views::{OrderLookup, OrderView, PostgresOrderViews, ReadModel, SqliteOrderViews};

/// What the shop sells: the article, its price in cents, and the stock it
/// starts with. The vinyl sells out; the courier refuses pianos.
pub const CATALOGUE: [(&str, u64, u32); 5] = [
    ("book", 1_299, 1_000_000),
    ("mug", 899, 1_000_000),
    ("lamp", 4_599, 1_000_000),
    ("vinyl", 2_499, 40),
    ("piano", 499_900, 1_000_000),
];

/// How to run the service.
#[derive(Clone)]
pub struct Settings {
    /// The address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// PostgreSQL for the event store and the read model (`postgres://…`);
    /// `None`: SQLite files in [`data_dir`](Self::data_dir).
    pub database_url: Option<String>,
    /// The PostgreSQL schema of the events (the read model's is `{schema}_views`).
    pub schema: String,
    /// Redis for the view cache's second tier and the rate limits; `None`: in the process.
    pub redis_url: Option<String>,
    /// The prefix of every Redis key the service writes.
    pub redis_prefix: String,
    /// Where the SQLite files go; `None`: a new temporary directory,
    /// removed when the service stops.
    pub data_dir: Option<PathBuf>,
    /// Whether calls to the provider go through the standard stack.
    pub with_stack: bool,
    /// How the provider misbehaves.
    pub faults: Faults,
    /// The clock of the in-process rate limits (tests give a manual one);
    /// `None`: the system's.
    pub rate_limit_clock: Option<SharedClock>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: None,
            schema: "palisade_orders".into(),
            redis_url: None,
            redis_prefix: "palisade-orders:".into(),
            data_dir: None,
            with_stack: true,
            faults: Faults::default(),
            rate_limit_clock: None,
        }
    }
}

impl Settings {
    /// The defaults, with `DATABASE_URL` and `REDIS_URL` from the environment when set.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            database_url: var("DATABASE_URL"),
            redis_url: var("REDIS_URL"),
            ..Self::default()
        }
    }
}

/// Everything a request handler reaches.
pub struct App {
    started: Instant,
    settings: Settings,
    store: Arc<dyn EventStore>,
    saga: Saga<OrderSaga>,
    sagas: Arc<SagaStats>,
    queries: Queries<OrderLookup>,
    cache: Cache<String, Option<OrderView>>,
    tier: Option<TieredCache<String, Option<OrderView>>>,
    runner: ProjectionRunner,
    limits: Limits,
    payments: Payments,
    provider: Provider,
}

/// A running service; stopped when dropped (its temporary directory removed).
pub struct Service {
    addr: SocketAddr,
    app: Arc<App>,
    server: JoinHandle<()>,
    recovery: JoinHandle<()>,
    temp_dir: Option<PathBuf>,
}

/// How often unfinished sagas whose claim ran out are looked for.
const RECOVERY_EVERY: Duration = Duration::from_secs(5);

impl Drop for Service {
    fn drop(&mut self) {
        self.server.abort();
        self.recovery.abort();
        if let Some(dir) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Service {
    /// Starts the provider, the stores, the projection and the HTTP server.
    ///
    /// # Errors
    /// When a store, Redis or the port cannot be opened, or a setting is invalid.
    pub async fn start(settings: Settings) -> Result<Self, BoxError> {
        let provider = Provider::start(settings.faults).await?;
        let (temp_dir, data_dir) = if let Some(dir) = &settings.data_dir {
            (None, dir.clone())
        } else {
            let dir = scratch_dir().join(format!(
                "palisade-orders-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            (Some(dir.clone()), dir)
        };
        std::fs::create_dir_all(&data_dir)?;

        // The event store, instrumented: a span per operation, the trace
        // context written into every event appended.
        let (store, model): (Arc<dyn EventStore>, ReadModel) =
            if let Some(url) = &settings.database_url {
                let store = PostgresEventStore::builder(url.clone())
                    .schema(settings.schema.clone())
                    .connect()
                    .await?;
                let model =
                    PostgresReadModel::connect(url, &format!("{}_views", settings.schema)).await?;
                (instrument(store)?, ReadModel::Postgres(model))
            } else {
                let store = SqliteEventStore::open(data_dir.join("events.db")).await?;
                let model = SqliteReadModel::open(data_dir.join("views.db")).await?;
                (instrument(store)?, ReadModel::Sqlite(model))
            };

        let orders = CommandHandler::<Order>::builder(Arc::clone(&store), ())
            .name("orders")
            .otel()
            .build()?;
        // Every order reserves from one of five stock streams: keep them
        // loaded (the hot-aggregate cache), and retry the version conflicts
        // of concurrent orders of one article.
        let stock = CommandHandler::<Stock>::builder(Arc::clone(&store), ())
            .name("stock")
            .max_attempts(64)
            .cache(Cache::builder().name("stock").max_capacity(64).build()?)
            .otel()
            .build()?;
        for (sku, _, units) in CATALOGUE {
            if stock.load(sku).await?.version == 0 {
                stock.execute(sku, &StockCommand::Restock(units)).await?;
            }
        }

        let payments = Payments::new(&format!("http://{}", provider.addr()), settings.with_stack)?;
        let sagas = Arc::new(SagaStats::default());
        let desk = StockDesk::new(stock)?;
        let saga = saga::order_saga(Arc::clone(&store), &orders, &desk, &payments, &sagas)?;

        let local = Cache::builder()
            .name("order_views")
            .max_capacity(10_000)
            .time_to_live(Duration::from_secs(300))
            .otel()
            .build()?;
        // With Redis, answers are shared by every instance, and a
        // projection's event drops them everywhere before it counts as handled.
        let lookup = Queries::builder(OrderLookup {
            model: read_model_handle(&model),
        });
        let (queries, tier) = if let Some(url) = &settings.redis_url {
            let remote =
                RedisTier::connect(url, &format!("{}views:", settings.redis_prefix)).await?;
            let tiered = TieredCache::builder(local.clone(), remote)
                .remote_ttl(Duration::from_secs(300))
                .build()?;
            (lookup.tiered_cache(tiered.clone()).build()?, Some(tiered))
        } else {
            (lookup.cache(local.clone()).build()?, None)
        };
        let invalidation = queries.invalidation(|event| {
            views::order_id(event)
                .map(str::to_owned)
                .into_iter()
                .collect::<Vec<_>>()
        });
        let projector = match &model {
            ReadModel::Sqlite(m) => m.projector(views::PROJECTION, SqliteOrderViews),
            ReadModel::Postgres(m) => m.projector(views::PROJECTION, PostgresOrderViews),
        }
        .filter(palisade::event_store::Filter::category("order"))
        .invalidates(invalidation);
        let runner = ProjectionRunner::builder(Arc::clone(&store))
            .projection(projector)
            .otel()
            .start()
            .await?;

        let limits = match &settings.redis_url {
            Some(url) => Limits::redis(url, &format!("{}rl:", settings.redis_prefix)).await?,
            None => Limits::local(settings.rate_limit_clock.clone())?,
        };

        let app = Arc::new(App {
            started: Instant::now(),
            settings: settings.clone(),
            store,
            saga,
            sagas,
            queries,
            cache: local,
            tier,
            runner,
            limits,
            payments,
            provider,
        });
        // Sagas a crash (of this process or another on the same store) left
        // unfinished are finished, completed or undone, once their claim runs
        // out: at the start, then every few seconds.
        let saga = app.saga.clone();
        let recovery = tokio::spawn(async move {
            loop {
                let _ = saga.recover().await;
                tokio::time::sleep(RECOVERY_EVERY).await;
            }
        });

        let listener = tokio::net::TcpListener::bind(settings.listen).await?;
        let addr = listener.local_addr()?;
        let router = http::router(Arc::clone(&app));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self {
            addr,
            app,
            server,
            recovery,
            temp_dir,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes how the payment provider misbehaves from now on.
    pub fn provider_faults(&self, faults: Faults) {
        self.app.provider.set_faults(faults);
    }

    /// Its base URL (`http://127.0.0.1:port`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The live state of every part, as `GET /status.json` shows it.
    pub async fn status(&self) -> status::Status {
        status::Status::of(&self.app).await
    }

    /// Waits, up to `within`, until every saga has ended and the projection
    /// has applied every event; the status then.
    ///
    /// # Errors
    /// When sagas are still running after `within`, or the projection stopped.
    pub async fn settle(&self, within: Duration) -> Result<status::Status, BoxError> {
        let deadline = Instant::now() + within;
        loop {
            let running = self.app.sagas.counts().running;
            if running == 0 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("{running} sagas still running after {within:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::timeout_at(deadline, self.caught_up())
            .await
            .map_err(|_| format!("the projection did not catch up within {within:?}"))??;
        Ok(self.status().await)
    }

    /// Waits until the projection has applied every event appended so far.
    ///
    /// # Errors
    /// When the projection stopped.
    pub async fn caught_up(&self) -> Result<(), BoxError> {
        self.app
            .runner
            .wait_caught_up(Duration::from_millis(5))
            .await?;
        Ok(())
    }
}

/// Where a temporary data directory goes: `/dev/shm` (memory) when there is
/// one and `TMPDIR` is not set, else the system's temporary directory.
///
/// The SQLite store syncs every append to the disk (`synchronous = FULL`):
/// on a disk whose sync takes 4 ms, as a cloud VM's may, that is about 250
/// appends a second, some 20 orders a second of a dozen appends each, half
/// of the demo's 40; the backlog then grows until the end, and the run fails.
/// Files removed at the end gain nothing from the sync.
fn scratch_dir() -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if std::env::var_os("TMPDIR").is_none() && shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn instrument(store: impl EventStore) -> Result<Arc<dyn EventStore>, BoxError> {
    Ok(Arc::new(
        Instrumented::builder(store).name("orders").otel().build()?,
    ))
}

/// The read model the query handler reads: the same database as the projection's.
fn read_model_handle(model: &ReadModel) -> ReadModel {
    match model {
        ReadModel::Sqlite(m) => ReadModel::Sqlite(m.clone()),
        ReadModel::Postgres(m) => ReadModel::Postgres(m.clone()),
    }
}
