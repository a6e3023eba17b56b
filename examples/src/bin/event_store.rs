//! An order service's event log on SQLite: append with optimistic concurrency,
//! read a stream back, follow the global log with a checkpointed subscription,
//! then reopen the file as a restarted process would and carry on.
//!
//! Run with `cargo run -p palisade-examples --bin event_store`.

use std::sync::Arc;
use std::time::Duration;

use palisade::event_store::{
    CheckpointStore, EventStore, ExpectedVersion, Filter, NewEvent, ReadStream, SqliteEventStore,
    StreamName, Subscription, TryStreamExt,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type")]
enum OrderEvent {
    Placed { customer: String, total_cents: u64 },
    Paid { method: String },
    Shipped { carrier: String },
}

impl OrderEvent {
    fn name(&self) -> &'static str {
        match self {
            Self::Placed { .. } => "OrderPlaced",
            Self::Paid { .. } => "OrderPaid",
            Self::Shipped { .. } => "OrderShipped",
        }
    }

    fn to_new(&self) -> palisade::event_store::Result<NewEvent> {
        NewEvent::json(self.name(), self)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("palisade-example-{}.db", std::process::id()));
    let order = StreamName::new("order-1001")?;

    // ---- first run ----
    {
        let store = Arc::new(SqliteEventStore::open(&path).await?);
        let placed = OrderEvent::Placed {
            customer: "ada".into(),
            total_cents: 4_250,
        };
        store
            .append(&order, ExpectedVersion::NoStream, vec![placed.to_new()?])
            .await?;
        let paid = OrderEvent::Paid {
            method: "card".into(),
        };
        let r = store
            .append(&order, ExpectedVersion::Exact(1), vec![paid.to_new()?])
            .await?;
        println!(
            "appended 2 events to {order}; it is at version {}",
            r.version
        );

        // A second writer that read version 1 loses: optimistic concurrency.
        let stale = OrderEvent::Shipped {
            carrier: "late-post".into(),
        };
        if let Err(e) = store
            .append(&order, ExpectedVersion::Exact(1), vec![stale.to_new()?])
            .await
        {
            println!("a stale writer was refused: {e}");
        }

        // The email service follows every order, and remembers where it stopped.
        let mut emails = Subscription::start(
            store.clone(),
            store.clone(),
            "emails",
            Filter::category("order"),
        )
        .await?;
        for _ in 0..2 {
            let e = emails.next().await?;
            println!(
                "emails: {} v{} at {} -> {:?}",
                e.stream,
                e.version,
                e.position,
                e.decode::<OrderEvent>()?
            );
        }
        emails.checkpoint().await?;
    }

    // ---- the process restarts ----
    let store = Arc::new(SqliteEventStore::open(&path).await?);
    let shipped = OrderEvent::Shipped {
        carrier: "post".into(),
    };
    store
        .append(&order, ExpectedVersion::Exact(2), vec![shipped.to_new()?])
        .await?;

    let history: Vec<_> = store
        .read_stream(&order, ReadStream::forward())
        .await?
        .try_collect()
        .await?;
    println!(
        "after the restart {order} reads back {} events:",
        history.len()
    );
    for e in &history {
        println!("  v{} {}", e.version, e.event_type);
    }

    let checkpoint = CheckpointStore::load(store.as_ref(), "emails").await?;
    println!(
        "the email subscription resumes after {}",
        checkpoint.unwrap_or_default()
    );
    let mut emails = Subscription::start(
        store.clone(),
        store.clone(),
        "emails",
        Filter::category("order"),
    )
    .await?;
    let next = tokio::time::timeout(Duration::from_secs(5), emails.next()).await??;
    println!(
        "emails: only the new one -> {} v{}",
        next.event_type, next.version
    );
    emails.checkpoint().await?;

    drop((emails, store));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
