//! An order as a saga on SQLite: reserve the stock, charge the card, ship the
//! parcel. Shipping is the pivot (a parcel handed over cannot be undone), so
//! when it fails the charge is refunded and the stock released, newest first.
//! Every decision is in the saga's own stream; the example prints both logs.
//!
//! Run with `cargo run -p palisade-examples --bin saga`.

use std::sync::Arc;

use palisade::saga::{Outcome, Record, Saga, SqliteEventStore, Step, StepContext};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    sku: String,
    quantity: u32,
    total_cents: u64,
    reservation: Option<String>,
    payment: Option<String>,
    tracking: Option<String>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn order(sku: &str) -> Order {
    Order {
        sku: sku.into(),
        quantity: 2,
        total_cents: 4_990,
        reservation: None,
        payment: None,
        tracking: None,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("palisade-saga-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let store = Arc::new(SqliteEventStore::open(dir.join("orders.db")).await?);

    let saga = Saga::builder("order", Arc::clone(&store))
        .step(
            Step::new("reserve", |mut o: Order, ctx: StepContext| async move {
                // The key is the same on every attempt: the warehouse deduplicates on it.
                println!(
                    "  warehouse: reserve {} x {} (key {})",
                    o.quantity,
                    o.sku,
                    ctx.key()
                );
                o.reservation = Some(format!("R-{}", ctx.saga_id()));
                Ok::<_, Error>(o)
            })
            .compensate(|o: Order, ctx: StepContext| async move {
                println!(
                    "  warehouse: release {:?} (key {})",
                    o.reservation,
                    ctx.key()
                );
                Ok::<_, Error>(())
            }),
        )
        .step(
            Step::new("charge", |mut o: Order, ctx: StepContext| async move {
                println!(
                    "  payments: charge {} cents (key {})",
                    o.total_cents,
                    ctx.key()
                );
                o.payment = Some(format!("P-{}", ctx.saga_id()));
                Ok::<_, Error>(o)
            })
            .compensate(|o: Order, ctx: StepContext| async move {
                println!("  payments: refund {:?} (key {})", o.payment, ctx.key());
                Ok::<_, Error>(())
            }),
        )
        .step(
            Step::new("ship", |mut o: Order, ctx: StepContext| async move {
                if o.sku == "piano" {
                    println!("  courier: no van for a piano");
                    return Err::<Order, Error>("no courier takes pianos".into());
                }
                println!("  courier: parcel handed over (key {})", ctx.key());
                o.tracking = Some(format!("T-{}", ctx.saga_id()));
                Ok(o)
            })
            .pivot(),
        )
        .build()?;

    for (id, sku) in [("o-1", "book"), ("o-2", "piano")] {
        println!("order {id} ({sku}):");
        match saga.start(id, order(sku)).await? {
            Outcome::Completed { state } => {
                println!("  => completed, tracking {:?}", state.tracking);
            }
            Outcome::Compensated { error, .. } => println!("  => compensated after: {error}"),
            Outcome::Failed { step, error, .. } => {
                println!("  => FAILED in {step}: {error} (an operator must act)");
            }
        }
        println!("  log of saga-order/{id}:");
        for (n, record) in saga.log(id).await?.iter().enumerate() {
            println!("    {:>2} {}", n + 1, describe(record));
        }
    }
    // Starting o-2 again runs nothing: it returns the saga that exists.
    let again = saga.start("o-2", order("piano")).await?;
    println!("order o-2 started again: {:?}, nothing ran", again.kind());

    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn describe(record: &Record) -> String {
    match record {
        Record::StepStarted { step, attempt, .. } => {
            format!("StepStarted step {step} attempt {attempt}")
        }
        Record::StepCompleted { step, .. } => format!("StepCompleted step {step}"),
        Record::StepAttemptFailed { step, error, .. } => {
            format!("StepAttemptFailed step {step}: {error}")
        }
        Record::StepFailed { step, error, .. } => format!("StepFailed step {step}: {error}"),
        Record::CompensationStarted { step, attempt, .. } => {
            format!("CompensationStarted step {step} attempt {attempt}")
        }
        Record::CompensationCompleted { step, .. } => format!("CompensationCompleted step {step}"),
        Record::Claimed { owner, .. } => format!("Claimed by {}…", owner.get(..8).unwrap_or(owner)),
        other => other.event_type().to_owned(),
    }
}
