//! The write side: an order, and the stock of one article, as aggregates.

use std::collections::BTreeMap;

use palisade::cqrs::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// What a customer asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    /// The article.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// The price of the whole order, in cents.
    pub total_cents: u64,
    /// The API key that placed it.
    pub customer: String,
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Not placed yet.
    #[default]
    New,
    /// Placed; its saga is running.
    Placed,
    /// Paid and shipped.
    Completed,
    /// Undone by its saga's compensations.
    Cancelled,
}

impl OrderStatus {
    /// The name used in the read model and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Placed => "placed",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// An order.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Order {
    status: OrderStatus,
}

/// What can be asked of an order.
#[derive(Debug, Clone)]
pub enum OrderCommand {
    /// Place it.
    Place(NewOrder),
    /// Record that it was paid and handed to the courier.
    Complete {
        /// The provider's payment id.
        payment: String,
        /// The courier's tracking number.
        tracking: String,
    },
    /// Record that its saga undid it.
    Cancel,
}

/// What happened to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    /// It was placed.
    Placed(NewOrder),
    /// It was paid and shipped.
    Completed {
        /// The provider's payment id.
        payment: String,
        /// The courier's tracking number.
        tracking: String,
    },
    /// It was cancelled.
    Cancelled,
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Placed(_) => "OrderPlaced",
            Self::Completed { .. } => "OrderCompleted",
            Self::Cancelled => "OrderCancelled",
        }
    }
}

/// Why an order refused a command.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OrderError {
    /// The order exists already.
    #[error("the order was placed already")]
    AlreadyPlaced,
    /// The order is finished (completed or cancelled) or was never placed.
    #[error("the order is {0}, not placed")]
    NotPlaced(&'static str),
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = ();

    async fn handle(&self, command: &OrderCommand, (): &()) -> Result<Vec<OrderEvent>, OrderError> {
        match (command, self.status) {
            (OrderCommand::Place(order), OrderStatus::New) => {
                Ok(vec![OrderEvent::Placed(order.clone())])
            }
            (OrderCommand::Place(_), _) => Err(OrderError::AlreadyPlaced),
            (OrderCommand::Complete { payment, tracking }, OrderStatus::Placed) => {
                Ok(vec![OrderEvent::Completed {
                    payment: payment.clone(),
                    tracking: tracking.clone(),
                }])
            }
            (OrderCommand::Cancel, OrderStatus::Placed) => Ok(vec![OrderEvent::Cancelled]),
            (_, status) => Err(OrderError::NotPlaced(status.as_str())),
        }
    }

    fn apply(&mut self, event: OrderEvent) {
        self.status = match event {
            OrderEvent::Placed(_) => OrderStatus::Placed,
            OrderEvent::Completed { .. } => OrderStatus::Completed,
            OrderEvent::Cancelled => OrderStatus::Cancelled,
        };
    }
}

/// The stock of one article: what is on the shelf and what orders hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stock {
    on_hand: u32,
    held: BTreeMap<String, u32>,
}

impl Stock {
    /// Units neither sold nor held.
    pub fn available(&self) -> u32 {
        self.on_hand - self.held.values().sum::<u32>()
    }
}

/// What can be asked of the stock.
#[derive(Debug, Clone)]
pub enum StockCommand {
    /// Put units on the shelf.
    Restock(u32),
    /// Hold units for an order.
    Reserve {
        /// The order.
        order: String,
        /// How many.
        quantity: u32,
    },
    /// Give an order's units back.
    Release {
        /// The order.
        order: String,
    },
    /// Take an order's units off the shelf: they left with the courier.
    Ship {
        /// The order.
        order: String,
    },
}

/// What happened to the stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StockEvent {
    /// Units were put on the shelf.
    Restocked(u32),
    /// Units were held for an order.
    Reserved {
        /// The order.
        order: String,
        /// How many.
        quantity: u32,
    },
    /// An order's units were given back.
    Released {
        /// The order.
        order: String,
    },
    /// An order's units left with the courier.
    Shipped {
        /// The order.
        order: String,
    },
}

impl DomainEvent for StockEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Restocked(_) => "Restocked",
            Self::Reserved { .. } => "StockReserved",
            Self::Released { .. } => "StockReleased",
            Self::Shipped { .. } => "StockShipped",
        }
    }
}

/// Why the stock refused a command.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StockError {
    /// Fewer units are free than the order asks for.
    #[error("out of stock: {available} free, {asked} asked")]
    OutOfStock {
        /// Units free.
        available: u32,
        /// Units asked.
        asked: u32,
    },
    /// A restock of no units, or one that would overflow the count.
    #[error("a restock must add between 1 and the room left")]
    BadRestock,
}

impl Aggregate for Stock {
    const TYPE: &'static str = "stock";
    type Command = StockCommand;
    type Event = StockEvent;
    type Error = StockError;
    type Services = ();

    async fn handle(&self, command: &StockCommand, (): &()) -> Result<Vec<StockEvent>, StockError> {
        match command {
            StockCommand::Restock(n) => {
                if *n == 0 || self.on_hand.checked_add(*n).is_none() {
                    return Err(StockError::BadRestock);
                }
                Ok(vec![StockEvent::Restocked(*n)])
            }
            StockCommand::Reserve { order, quantity } => {
                if self.held.contains_key(order) {
                    return Ok(vec![]); // held already: a retry of this reservation
                }
                let available = self.available();
                if *quantity > available {
                    return Err(StockError::OutOfStock {
                        available,
                        asked: *quantity,
                    });
                }
                Ok(vec![StockEvent::Reserved {
                    order: order.clone(),
                    quantity: *quantity,
                }])
            }
            StockCommand::Release { order } => Ok(if self.held.contains_key(order) {
                vec![StockEvent::Released {
                    order: order.clone(),
                }]
            } else {
                vec![] // never held, or given back already
            }),
            StockCommand::Ship { order } => Ok(if self.held.contains_key(order) {
                vec![StockEvent::Shipped {
                    order: order.clone(),
                }]
            } else {
                vec![] // shipped already: a retry of this step
            }),
        }
    }

    fn apply(&mut self, event: StockEvent) {
        match event {
            StockEvent::Restocked(n) => self.on_hand += n,
            StockEvent::Reserved { order, quantity } => {
                self.held.insert(order, quantity);
            }
            StockEvent::Released { order } => {
                self.held.remove(&order);
            }
            StockEvent::Shipped { order } => {
                if let Some(n) = self.held.remove(&order) {
                    self.on_hand -= n;
                }
            }
        }
    }
}
