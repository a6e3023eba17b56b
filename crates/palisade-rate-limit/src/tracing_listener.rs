//! Events as `tracing` events with target `palisade_rate_limit` (feature
//! `tracing`): an adapter over the limiter's [`Event`]s, added when the
//! builder asks with `tracing()`.

use std::sync::Arc;

use palisade_core::Listener;

#[cfg(feature = "redis")]
use crate::RedisRateLimiterBuilder;
use crate::{Event, KeyedRateLimiterBuilder, RateLimiterBuilder, WindowLimiterBuilder};

impl RateLimiterBuilder {
    /// Emits every event as a `tracing` event with target
    /// `palisade_rate_limit`: rejections and cancellations at `DEBUG`,
    /// quota changes at `INFO`, admissions at `TRACE`.
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    pub fn tracing(mut self) -> Self {
        self.common.tracing = true;
        self
    }
}

impl<K> KeyedRateLimiterBuilder<K> {
    /// Emits every event as a `tracing` event with target
    /// `palisade_rate_limit`: rejections at `DEBUG`, evictions at `DEBUG`,
    /// admissions at `TRACE`.
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    pub fn tracing(mut self) -> Self {
        self.common.tracing = true;
        self
    }
}

impl WindowLimiterBuilder {
    /// Emits every event as a `tracing` event with target
    /// `palisade_rate_limit`: rejections at `DEBUG`, admissions at `TRACE`.
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    pub fn tracing(mut self) -> Self {
        self.common.tracing = true;
        self
    }
}

#[cfg(feature = "redis")]
impl RedisRateLimiterBuilder {
    /// Emits every event as a `tracing` event with target
    /// `palisade_rate_limit`: Redis failures at `WARN`, rejections at
    /// `DEBUG`, admissions at `TRACE`.
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    pub fn tracing(mut self) -> Self {
        self.common.tracing = true;
        self
    }
}

pub(crate) struct TracingListener {
    pub(crate) name: Arc<str>,
}

impl Listener<Event> for TracingListener {
    fn on_event(&self, event: &Event) {
        const T: &str = "palisade_rate_limit";
        match *event {
            Event::Acquired { permits, waited } => tracing::trace!(
                target: T, instance = %self.name, permits, ?waited, "requests admitted"
            ),
            Event::Rejected {
                permits,
                reason,
                retry_after,
            } => tracing::debug!(
                target: T, instance = %self.name, permits, reason, ?retry_after, "requests rejected"
            ),
            Event::Canceled {
                permits,
                waited,
                returned,
            } => tracing::debug!(
                target: T, instance = %self.name, permits, ?waited, returned, "wait canceled"
            ),
            Event::QuotaChanged { quota } => tracing::info!(
                target: T, instance = %self.name,
                count = quota.count(), period = ?quota.period(), burst = quota.burst_size(),
                "quota changed"
            ),
            Event::BackendUnavailable { failures } => tracing::warn!(
                target: T, instance = %self.name, failures, "redis unavailable; backing off"
            ),
            Event::KeysEvicted { count } => tracing::debug!(
                target: T, instance = %self.name, count, "refilled keys evicted"
            ),
        }
    }
}
