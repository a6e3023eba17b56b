//! The events a bulkhead emits to its listeners.

use std::time::Duration;

use crate::Reason;

/// Something that happened in a bulkhead; sent to every listener as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A call was given a permit of `weight` units.
    Permitted {
        /// The units the permit holds.
        weight: u32,
        /// How long it waited in the queue; `None` when it did not queue.
        waited: Option<Duration>,
    },
    /// A call was refused a permit.
    Rejected {
        /// The units it asked for.
        weight: u32,
        /// Why: full, timed out in the queue, or heavier than the limit.
        reason: Reason,
        /// How long it waited in the queue before it gave up; `None` when it did not queue.
        waited: Option<Duration>,
    },
    /// A permit of `weight` units was dropped and its units given back.
    Released {
        /// The units given back.
        weight: u32,
    },
    /// [`Bulkhead::set_limit`](crate::Bulkhead::set_limit) changed the limit.
    LimitChanged {
        /// The limit before.
        from: u32,
        /// The limit now.
        to: u32,
    },
}
