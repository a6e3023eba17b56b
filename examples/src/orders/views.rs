//! The read side: one row per order, kept by a projection of the order
//! events (on SQLite, or on PostgreSQL beside its event store), and the
//! query that reads it through the cache.

use palisade::cqrs::rusqlite::{self, OptionalExtension, Transaction};
use palisade::cqrs::tokio_postgres;
use palisade::cqrs::{
    BoxError, PostgresProjection, PostgresReadModel, ProjectionContext, QueryContext, QueryHandler,
    RecordedEvent, SqliteProjection, SqliteReadModel, async_trait,
};
use serde::{Deserialize, Serialize};

use super::domain::{OrderEvent, OrderStatus};
use super::telemetry;

/// The projection's name: its checkpoint's key.
pub const PROJECTION: &str = "order_views";

/// An order as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    /// The order id.
    pub id: String,
    /// `placed`, `completed` or `cancelled`.
    pub status: String,
    /// The article.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// The price, in cents.
    pub total_cents: u64,
    /// The API key that placed it.
    pub customer: String,
    /// The provider's payment id, once completed.
    pub payment: Option<String>,
    /// The courier's tracking number, once completed.
    pub tracking: Option<String>,
    /// The order's version the view shows (events applied).
    pub version: u64,
}

/// The order id of an order event's stream (`order-{id}`).
pub fn order_id(event: &RecordedEvent) -> Option<&str> {
    event.stream.as_str().strip_prefix("order-")
}

/// What an order event does to its row.
enum Change {
    Insert(OrderView),
    Finish {
        status: &'static str,
        payment: Option<String>,
        tracking: Option<String>,
    },
}

fn change(event: &RecordedEvent) -> Result<Option<(String, Change)>, BoxError> {
    let Some(id) = order_id(event) else {
        return Ok(None);
    };
    let change = match event.decode::<OrderEvent>()? {
        OrderEvent::Placed(order) => Change::Insert(OrderView {
            id: id.to_owned(),
            status: OrderStatus::Placed.as_str().to_owned(),
            sku: order.sku,
            quantity: order.quantity,
            total_cents: order.total_cents,
            customer: order.customer,
            payment: None,
            tracking: None,
            version: event.version,
        }),
        OrderEvent::Completed { payment, tracking } => Change::Finish {
            status: OrderStatus::Completed.as_str(),
            payment: Some(payment),
            tracking: Some(tracking),
        },
        OrderEvent::Cancelled => Change::Finish {
            status: OrderStatus::Cancelled.as_str(),
            payment: None,
            tracking: None,
        },
    };
    Ok(Some((id.to_owned(), change)))
}

/// The projection on SQLite.
pub struct SqliteOrderViews;

impl SqliteProjection for SqliteOrderViews {
    fn setup(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS order_views (
                id TEXT PRIMARY KEY, status TEXT NOT NULL, sku TEXT NOT NULL,
                quantity INTEGER NOT NULL, total_cents INTEGER NOT NULL, customer TEXT NOT NULL,
                payment TEXT, tracking TEXT, version INTEGER NOT NULL)",
        )
    }

    fn apply(
        &self,
        tx: &Transaction<'_>,
        event: &RecordedEvent,
        _: ProjectionContext,
    ) -> Result<(), BoxError> {
        let _span = telemetry::event_span("project order_views", event);
        let Some((id, change)) = change(event)? else {
            return Ok(());
        };
        let version = i64::try_from(event.version)?;
        match change {
            Change::Insert(v) => tx.execute(
                "INSERT INTO order_views VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL, ?7)
                 ON CONFLICT (id) DO NOTHING",
                rusqlite::params![
                    v.id,
                    v.status,
                    v.sku,
                    v.quantity,
                    i64::try_from(v.total_cents)?,
                    v.customer,
                    version
                ],
            )?,
            Change::Finish {
                status,
                payment,
                tracking,
            } => tx.execute(
                "UPDATE order_views SET status = ?2, payment = ?3, tracking = ?4, version = ?5
                 WHERE id = ?1",
                rusqlite::params![id, status, payment, tracking, version],
            )?,
        };
        Ok(())
    }
}

/// The projection on PostgreSQL.
pub struct PostgresOrderViews;

#[async_trait]
impl PostgresProjection for PostgresOrderViews {
    async fn setup(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
    ) -> Result<(), tokio_postgres::Error> {
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS order_views (
                id TEXT PRIMARY KEY, status TEXT NOT NULL, sku TEXT NOT NULL,
                quantity BIGINT NOT NULL, total_cents BIGINT NOT NULL, customer TEXT NOT NULL,
                payment TEXT, tracking TEXT, version BIGINT NOT NULL)",
        )
        .await
    }

    async fn apply(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        event: &RecordedEvent,
        _: ProjectionContext,
    ) -> Result<(), BoxError> {
        let _span = telemetry::event_span("project order_views", event);
        let Some((id, change)) = change(event)? else {
            return Ok(());
        };
        let version = i64::try_from(event.version)?;
        match change {
            Change::Insert(v) => {
                tx.execute(
                    "INSERT INTO order_views VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL, $7)
                     ON CONFLICT (id) DO NOTHING",
                    &[
                        &v.id,
                        &v.status,
                        &v.sku,
                        &i64::from(v.quantity),
                        &i64::try_from(v.total_cents)?,
                        &v.customer,
                        &version,
                    ],
                )
                .await?
            }
            Change::Finish {
                status,
                payment,
                tracking,
            } => {
                tx.execute(
                    "UPDATE order_views SET status = $2, payment = $3, tracking = $4, version = $5
                     WHERE id = $1",
                    &[&id, &status, &payment, &tracking, &version],
                )
                .await?
            }
        };
        Ok(())
    }
}

/// Where the views are read from.
pub enum ReadModel {
    /// The SQLite file beside the event store's.
    Sqlite(SqliteReadModel),
    /// A schema in the event store's PostgreSQL database.
    Postgres(PostgresReadModel),
}

/// Why a view could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the read model failed: {0}")]
pub struct ViewError(String);

/// Answers "the view of order `id`" (`None`: no such order, or not projected yet).
pub struct OrderLookup {
    /// The read model.
    pub model: ReadModel,
}

const SELECT: &str = "SELECT id, status, sku, quantity, total_cents, customer, payment, tracking, version FROM order_views WHERE id = ";

impl QueryHandler for OrderLookup {
    type Query = String;
    type View = Option<OrderView>;
    type Error = ViewError;

    async fn handle(&self, id: &String, _: &QueryContext) -> Result<Option<OrderView>, ViewError> {
        match &self.model {
            ReadModel::Sqlite(model) => {
                let id = id.clone();
                model
                    .read(move |c| {
                        c.query_row(&format!("{SELECT}?1"), [id], |r| {
                            Ok(OrderView {
                                id: r.get(0)?,
                                status: r.get(1)?,
                                sku: r.get(2)?,
                                quantity: r.get(3)?,
                                total_cents: r.get::<_, i64>(4)? as u64,
                                customer: r.get(5)?,
                                payment: r.get(6)?,
                                tracking: r.get(7)?,
                                version: r.get::<_, i64>(8)? as u64,
                            })
                        })
                        .optional()
                    })
                    .await
                    .map_err(|e| ViewError(e.to_string()))
            }
            ReadModel::Postgres(model) => {
                let client = model.client().await;
                let row = client
                    .query_opt(&format!("{SELECT}$1"), &[id])
                    .await
                    .map_err(|e| ViewError(e.to_string()))?;
                Ok(row.map(|r| OrderView {
                    id: r.get(0),
                    status: r.get(1),
                    sku: r.get(2),
                    quantity: r.get::<_, i64>(3) as u32,
                    total_cents: r.get::<_, i64>(4) as u64,
                    customer: r.get(5),
                    payment: r.get(6),
                    tracking: r.get(7),
                    version: r.get::<_, i64>(8) as u64,
                }))
            }
        }
    }
}
