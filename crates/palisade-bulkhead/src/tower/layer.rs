use tower_layer::Layer;

use super::{BulkheadService, Mode};
use crate::Bulkhead;

/// Wraps services in one shared [`Bulkhead`] (feature `tower`).
///
/// Two behaviours, chosen here:
///
/// - [`new`](Self::new), **rejection**: `poll_ready` takes a permit as the
///   bulkhead's waiting policy says (at once, or waiting up to `max_wait` in
///   its bounded queue); if it gets none, `poll_ready` is still ready and the
///   `call` that follows returns the [`Rejected`](crate::Rejected), boxed, without
///   calling the inner service (a `poll_ready` called again asks the bulkhead again).
/// - [`backpressure`](Self::backpressure): `poll_ready` stays pending until a
///   permit is free, however long that takes (the queue's order still
///   applies; `max_wait` and `max_waiting` do not), as tower's
///   `ConcurrencyLimit` does, so a `LoadShed` above sheds and a `Buffer` above queues.
///
/// Either way the permit is taken in `poll_ready` and held from there until
/// the response future finishes or is dropped.
///
/// ```
/// use palisade_bulkhead::{Bulkhead, BulkheadLayer};
/// use tower_layer::Layer;
///
/// let bulkhead = Bulkhead::builder().name("users-api").max_concurrent_calls(32).build()?;
/// let rejecting = BulkheadLayer::new(bulkhead.clone());
/// let waiting = BulkheadLayer::backpressure(bulkhead);
/// # let _ = (rejecting, waiting);
/// # Ok::<(), palisade_bulkhead::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
    mode: Mode,
}

impl std::fmt::Debug for BulkheadLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("bulkhead", &self.bulkhead.name())
            .field("mode", &self.mode)
            .finish()
    }
}

impl BulkheadLayer {
    /// A layer that rejects calls it has no permit for, with a boxed [`Rejected`](crate::Rejected).
    pub fn new(bulkhead: Bulkhead) -> Self {
        Self {
            bulkhead,
            mode: Mode::Reject,
        }
    }

    /// A layer whose `poll_ready` waits for a permit instead of rejecting.
    pub fn backpressure(bulkhead: Bulkhead) -> Self {
        Self {
            bulkhead,
            mode: Mode::Backpressure,
        }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService::with_mode(inner, self.bulkhead.clone(), self.mode)
    }
}
