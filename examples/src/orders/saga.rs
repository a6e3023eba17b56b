//! The saga of one order: place it, reserve the stock, charge the card,
//! hand the parcel to the courier (the pivot), then settle the stock and
//! complete the order. A failure before the pivot undoes what was done,
//! newest first.
//!
//! The charge is the step whose outcome can be unknown: an attempt that
//! timed out may have gone through. So the undo of a payment is not the
//! charge's own compensation (a step that failed is never compensated) but
//! that of the step before it, `payment`, which does nothing going forward
//! and, going back, refunds by the charge's idempotency key: the provider
//! refunds the charge if it was made and voids the key if not. A charge
//! known not to have happened (refused unsent by the breaker, or answered
//! with an error) is noted in this process, and its undo sends nothing;
//! after a crash that note is gone, and the undo asks the provider, which
//! is always safe.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade::retry::{Backoff, Jitter};
use parking_lot::Mutex;

use palisade::cqrs::CommandHandler;
use palisade::event_store::EventStore;
use palisade::saga::{self, ExecutionOutcome, Saga, Step, StepContext};
use serde::{Deserialize, Serialize};

use super::domain::{NewOrder, Order, OrderCommand, StockCommand};
use super::payments::{PaymentError, Payments};
use super::stock::{StockCallError, StockDesk};

/// The saga's state: the order and what its steps learned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderSaga {
    /// The order id (the saga id too).
    pub order_id: String,
    /// The order.
    pub order: NewOrder,
    /// The provider's payment id, once charged.
    pub payment: Option<String>,
    /// The courier's tracking number, once shipped.
    pub tracking: Option<String>,
}

impl OrderSaga {
    /// The charge's idempotency key: the same for the charge and its undo.
    fn charge_key(&self) -> String {
        format!("{}/charge", self.order_id)
    }
}

/// Why the courier refused a parcel.
#[derive(Debug, thiserror::Error)]
#[error("the courier does not take a {0}")]
pub struct CourierRefused(String);

/// Sagas started and how they ended, counted by the saga's listener.
///
/// Running sagas are counted by id, not as runs started minus runs ended: a
/// run whose step outlived the lease loses its claim to the recovery, which
/// resumes the saga (a second `Started`) and ends it (one `Finished`), while
/// the first run stops without an end.
#[derive(Debug, Default)]
pub struct SagaStats {
    started: AtomicU64,
    completed: AtomicU64,
    compensated: AtomicU64,
    failed: AtomicU64,
    /// How long each ended run took, in microseconds.
    durations: Mutex<Vec<u64>>,
    running: Mutex<HashSet<Arc<str>>>,
}

/// A copy of [`SagaStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SagaCounts {
    /// Runs started (resumed ones included).
    pub started: u64,
    /// Ended completed.
    pub completed: u64,
    /// Ended compensated.
    pub compensated: u64,
    /// Ended failed: a compensation gave up, an operator must act.
    pub failed: u64,
    /// Running now: started in this process, not ended yet.
    pub running: u64,
    /// The median time from a run's start to its end (completed or
    /// undone), in milliseconds: how long a customer waits for the outcome.
    pub p50_ms: f64,
    /// The 99th percentile of the same.
    pub p99_ms: f64,
}

impl SagaStats {
    /// The counts now.
    pub fn counts(&self) -> SagaCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (started, completed, compensated, failed) = (
            get(&self.started),
            get(&self.completed),
            get(&self.compensated),
            get(&self.failed),
        );
        let mut durations = self.durations.lock().clone();
        durations.sort_unstable();
        let quantile = |q: f64| {
            if durations.is_empty() {
                return 0.0;
            }
            let i = ((durations.len() as f64 * q).ceil() as usize).clamp(1, durations.len()) - 1;
            durations[i] as f64 / 1e3
        };
        SagaCounts {
            started,
            completed,
            compensated,
            failed,
            running: self.running.lock().len() as u64,
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
        }
    }

    /// Counts `event`, an event of the order saga's runner.
    pub fn record(&self, event: &saga::Event) {
        match event {
            saga::Event::Started { id, .. } => {
                self.started.fetch_add(1, Ordering::Relaxed);
                self.running.lock().insert(Arc::clone(id));
            }
            saga::Event::Finished {
                id,
                outcome,
                duration,
                ..
            } => {
                self.durations.lock().push(duration.as_micros() as u64);
                let counter = match outcome {
                    ExecutionOutcome::Completed => &self.completed,
                    ExecutionOutcome::Compensated => &self.compensated,
                    ExecutionOutcome::Failed => &self.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                self.running.lock().remove(id);
            }
            _ => {}
        }
    }
}

/// The courier: refuses pianos, ships the rest.
fn courier(state: &OrderSaga, ctx: &StepContext) -> Result<String, CourierRefused> {
    if state.order.sku == "piano" {
        return Err(CourierRefused(state.order.sku.clone()));
    }
    Ok(format!("TRK-{}", ctx.saga_id()))
}

/// A step sending the stock command `command` makes of the state through
/// `desk`, with the invocation's command id (appended once however often
/// the step is retried or recovered); the state goes on unchanged.
fn stock_step(
    desk: &StockDesk,
    name: &'static str,
    command: fn(&OrderSaga) -> StockCommand,
) -> Step<OrderSaga> {
    let desk = desk.clone();
    Step::new(name, move |s: OrderSaga, ctx: StepContext| {
        let desk = desk.clone();
        async move {
            desk.execute(&s.order.sku, &command(&s), &ctx.command_context())
                .await?;
            Ok::<_, StockCallError>(s)
        }
    })
}

/// The compensation that sends `command` the same way as [`stock_step`].
fn stock_undo(
    desk: &StockDesk,
    command: fn(&OrderSaga) -> StockCommand,
) -> impl Fn(OrderSaga, StepContext) -> StockUndo + Send + Sync + 'static {
    let desk = desk.clone();
    move |s: OrderSaga, ctx: StepContext| {
        let desk = desk.clone();
        Box::pin(async move {
            desk.execute(&s.order.sku, &command(&s), &ctx.command_context())
                .await
                .map(drop)
        })
    }
}

/// What [`stock_undo`] returns.
type StockUndo =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StockCallError>> + Send>>;

/// The order saga, its log in `store`.
///
/// # Errors
/// A configuration error from the saga's builder.
pub fn order_saga(
    store: Arc<dyn EventStore>,
    orders: &CommandHandler<Order>,
    stock: &StockDesk,
    payments: &Payments,
    stats: &Arc<SagaStats>,
) -> Result<Saga<OrderSaga>, palisade::core::ConfigError> {
    let seen = Arc::clone(stats);
    let (charge, refund) = (payments.clone(), payments.clone());
    // Charge keys known not charged: their undo needs no call.
    let not_charged: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (noted, known) = (Arc::clone(&not_charged), not_charged);
    Saga::builder("order", store)
        // A crashed runner's sagas are taken over 10 s after its last record.
        .lease(Duration::from_secs(10))
        // An undo waiting for the provider tries again within a second of
        // its return (the breaker's probes decide when that is).
        .recovery_backoff(
            Backoff::exponential(Duration::from_millis(100))
                .max(Duration::from_secs(1))
                .jitter(Jitter::Full),
        )
        .otel()
        .listener(move |e: &saga::Event| seen.record(e))
        .step(
            Step::command("place", orders.clone(), |s: &OrderSaga| {
                (s.order_id.clone(), OrderCommand::Place(s.order.clone()))
            })
            .compensate_command(orders.clone(), |s: &OrderSaga| {
                (s.order_id.clone(), OrderCommand::Cancel)
            }),
        )
        .step(
            stock_step(stock, "reserve", |s| StockCommand::Reserve {
                order: s.order_id.clone(),
                quantity: s.order.quantity,
            })
            .compensate(stock_undo(stock, |s| StockCommand::Release {
                order: s.order_id.clone(),
            })),
        )
        .step(
            Step::new("payment", |s: OrderSaga, _: StepContext| async move {
                Ok::<_, PaymentError>(s)
            })
            .compensate(move |s: OrderSaga, _: StepContext| {
                let refund = refund.clone();
                let never_charged = known.lock().remove(&s.charge_key());
                async move {
                    if never_charged {
                        return Ok(());
                    }
                    refund.refund(&s.charge_key()).await
                }
            }),
        )
        .step(Step::new(
            "charge",
            move |mut s: OrderSaga, _: StepContext| {
                let charge = charge.clone();
                let noted = Arc::clone(&noted);
                async move {
                    let key = s.charge_key();
                    match charge.charge(&key, &s.order_id, s.order.total_cents).await {
                        Ok(payment) => s.payment = Some(payment),
                        Err(e) => {
                            if !e.outcome_unknown() {
                                noted.lock().insert(key);
                            }
                            return Err(e);
                        }
                    }
                    Ok::<_, PaymentError>(s)
                }
            },
        ))
        .step(
            Step::new("ship", |mut s: OrderSaga, ctx: StepContext| async move {
                s.tracking = Some(courier(&s, &ctx)?);
                Ok::<_, CourierRefused>(s)
            })
            .pivot(),
        )
        .step(
            stock_step(stock, "settle", |s| StockCommand::Ship {
                order: s.order_id.clone(),
            })
            .retriable(),
        )
        .step(
            Step::command("complete", orders.clone(), |s: &OrderSaga| {
                (
                    s.order_id.clone(),
                    OrderCommand::Complete {
                        payment: s.payment.clone().unwrap_or_default(),
                        tracking: s.tracking.clone().unwrap_or_default(),
                    },
                )
            })
            .retriable(),
        )
        .build()
}
