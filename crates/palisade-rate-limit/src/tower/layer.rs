use tower_layer::Layer;

use super::{Keyed, RateLimitService};
use crate::{KeyedRateLimiter, RateLimiter};

/// Wraps services in one shared limiter (feature `tower`).
///
/// `Clone`: every clone, and every service it makes, shares the one limiter,
/// so a limit of 5 per second is 5 per second across all connections.
///
/// ```
/// use palisade_rate_limit::{KeyedRateLimiter, Quota, RateLimitLayer, RateLimiter};
/// use tower_layer::Layer;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // One limit for the whole service, waiting in poll_ready for a slot.
/// let global = RateLimitLayer::new(RateLimiter::builder().quota(Quota::per_second(100)).build()?)
///     .waiting();
/// // One limit per client, keyed by a function of the request.
/// struct Request { client: u64 }
/// let per_client = RateLimitLayer::keyed(
///     KeyedRateLimiter::<u64>::builder().quota(Quota::per_second(5)).build()?,
///     |req: &Request| req.client,
/// );
/// # let _ = (global, per_client);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitLayer<L> {
    limiter: L,
    wait: bool,
}

impl RateLimitLayer<RateLimiter> {
    /// A layer over `limiter`: a call over the limit is rejected, without
    /// calling the inner service, with a boxed [`Rejected`](crate::Rejected).
    pub fn new(limiter: RateLimiter) -> Self {
        Self {
            limiter,
            wait: false,
        }
    }

    /// Waits in `poll_ready` instead: `poll_ready` reserves the next slot
    /// (first come, first served, as [`RateLimiter::acquire`]) and stays
    /// pending until it is due; the following `call` uses it. A slot due
    /// later than the limiter's `max_wait` is not reserved: `poll_ready` is
    /// then ready at once and that `call` is rejected. A service dropped
    /// while it waits gives its slot back (when nobody queued behind it);
    /// one made ready and dropped without a call has spent its slot.
    #[must_use]
    pub fn waiting(mut self) -> Self {
        self.wait = true;
        self
    }
}

impl<K> RateLimitLayer<Keyed<K, ()>> {
    /// A layer over a keyed limiter: `key` gives each request's key (a
    /// client id, an address); a call over its key's limit is rejected,
    /// without calling the inner service, with a boxed
    /// [`Rejected`](crate::Rejected).
    pub fn keyed<F>(limiter: KeyedRateLimiter<K>, key: F) -> RateLimitLayer<Keyed<K, F>> {
        RateLimitLayer {
            limiter: Keyed { limiter, key },
            wait: false,
        }
    }
}

impl<L> RateLimitLayer<L> {
    /// The limiter.
    pub fn limiter(&self) -> &L {
        &self.limiter
    }
}

impl<S, L: Clone> Layer<S> for RateLimitLayer<L> {
    type Service = RateLimitService<S, L>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService::new(inner, self.limiter.clone(), self.wait)
    }
}
