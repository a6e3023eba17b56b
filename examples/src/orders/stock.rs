//! One writer at a time per article: the stock commands of one article wait
//! their turn in a bulkhead of one, in arrival order, instead of racing.
//!
//! Every order writes the stock stream of its article, a handful of streams
//! for every order. Raced, the commands of one article conflict on its
//! version and retry, and after an outage, when hundreds of sagas undo their
//! reservations at once, the retries crowd out the work: nearly every
//! attempt conflicts. Queued, each command appends at its first attempt.
//! Another process on the same store still races this one, and the command
//! handler's conflict retries cover that.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use palisade::bulkhead::{Bulkhead, CallError};
use palisade::core::ConfigError;
use palisade::cqrs::{CommandContext, CommandError, CommandHandler, Committed};

use super::CATALOGUE;
use super::domain::{Stock, StockCommand, StockError};

/// How long a stock command waits for its article's turn.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// Why a stock command failed: refused by the stock, a store error, or its
/// turn did not come within the wait.
pub type StockCallError = CallError<CommandError<StockError>>;

/// The stock commands, one article at a time.
#[derive(Clone)]
pub struct StockDesk {
    handler: CommandHandler<Stock>,
    lanes: Arc<HashMap<&'static str, Bulkhead>>,
}

impl StockDesk {
    /// A desk with a lane for every article of the catalogue.
    ///
    /// # Errors
    /// A configuration error from a bulkhead's builder.
    pub fn new(handler: CommandHandler<Stock>) -> Result<Self, ConfigError> {
        let lanes = CATALOGUE
            .iter()
            .map(|(sku, ..)| {
                let lane = Bulkhead::builder()
                    .name(format!("stock-{sku}"))
                    .max_concurrent_calls(1)
                    .max_wait(MAX_WAIT)
                    .max_waiting(10_000)
                    .otel()
                    .build()?;
                Ok((*sku, lane))
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Self {
            handler,
            lanes: Arc::new(lanes),
        })
    }

    /// The command handler.
    pub fn handler(&self) -> &CommandHandler<Stock> {
        &self.handler
    }

    /// Sends `command` to the stock of `sku` in its turn (an article outside
    /// the catalogue goes straight to the handler).
    ///
    /// # Errors
    /// The command's error, or a rejection when its turn did not come in time.
    pub async fn execute(
        &self,
        sku: &str,
        command: &StockCommand,
        ctx: &CommandContext,
    ) -> Result<Committed, StockCallError> {
        match self.lanes.get(sku) {
            Some(lane) => {
                lane.call(|| self.handler.execute_with(sku, command, ctx))
                    .await
            }
            None => self
                .handler
                .execute_with(sku, command, ctx)
                .await
                .map_err(CallError::Inner),
        }
    }
}
