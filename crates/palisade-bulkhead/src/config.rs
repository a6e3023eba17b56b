//! The builder and the validated configuration of a bulkhead.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::config::{check_nonzero, check_positive_duration};
use palisade_core::{ConfigError, Listener, Listeners, SharedClock, SharedSleeper, SystemClock};

use crate::bulkhead::{Bulkhead, MAX_LIMIT};
use crate::event::Event;

/// Which waiter gets units first when they come free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum QueueOrder {
    /// The longest-waiting caller first (the default): fair, and no caller
    /// waits behind others that came later.
    #[default]
    Fifo,
    /// The newest caller first, as Netflix's LIFO limiter does: under overload
    /// the callers served are the ones whose clients are still listening, and
    /// the oldest give up at `max_wait`, so latency stays low.
    Lifo,
}

/// The validated settings of a bulkhead.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) name: Arc<str>,
    /// Nanoseconds a caller may wait in the queue; `None`: it does not wait.
    pub(crate) max_wait: Option<Duration>,
    pub(crate) max_waiting: usize,
    pub(crate) order: QueueOrder,
    pub(crate) retry_after: Option<u64>,
}

/// Builds a [`Bulkhead`]; every setting has a default.
///
/// ```
/// use palisade_bulkhead::{Bulkhead, ManualClock, QueueOrder};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let bulkhead = Bulkhead::builder()
///     .name("inventory")
///     .max_concurrent_calls(20)
///     .max_wait(Duration::from_millis(50))
///     .max_waiting(100)
///     .queue_order(QueueOrder::Lifo)
///     .sleeper(clock.sleeper())
///     .clock(clock.shared())
///     .build()?;
/// assert_eq!(bulkhead.snapshot().limit, 20);
/// # Ok::<(), palisade_bulkhead::ConfigError>(())
/// ```
#[must_use]
pub struct BulkheadBuilder {
    name: Arc<str>,
    max_concurrent_calls: u32,
    max_wait: Option<Duration>,
    max_waiting: Option<usize>,
    order: QueueOrder,
    retry_after: Option<Duration>,
    clock: Option<SharedClock>,
    sleeper: Option<SharedSleeper>,
    listeners: Listeners<Event>,
    #[cfg(feature = "otel")]
    pub(crate) otel: Option<palisade_core::telemetry::MeterSource>,
    #[cfg(feature = "tracing")]
    pub(crate) tracing: bool,
}

/// The queue bound when `max_wait` is set and `max_waiting` is not.
pub(crate) const DEFAULT_MAX_WAITING: usize = 100;

impl Default for BulkheadBuilder {
    fn default() -> Self {
        Self {
            name: Arc::from("default"),
            max_concurrent_calls: 25,
            max_wait: None,
            max_waiting: None,
            order: QueueOrder::Fifo,
            retry_after: None,
            clock: None,
            sleeper: None,
            listeners: Listeners::new(),
            #[cfg(feature = "otel")]
            otel: None,
            #[cfg(feature = "tracing")]
            tracing: false,
        }
    }
}

impl BulkheadBuilder {
    /// The instance name in telemetry (`palisade.instance`) and in `tracing`
    /// events. Default: `"default"`; must not be empty.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The most units permits may hold at once, in 1..=2³¹−1 (default 25). A
    /// plain permit holds one unit; a weighted one holds its weight. Change it
    /// later with [`Bulkhead::set_limit`].
    pub fn max_concurrent_calls(mut self, limit: u32) -> Self {
        self.max_concurrent_calls = limit;
        self
    }

    /// Lets [`Bulkhead::acquire`] and [`Bulkhead::call`] wait up to this long
    /// for units in a bounded queue, then reject with reason `timed_out`
    /// (default: they do not wait; a full bulkhead rejects at once with `full`).
    /// Needs a [`sleeper`](Self::sleeper), or the `tokio` feature for tokio's timer.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// How many callers may wait at once (default 100, at least 1); one more
    /// is rejected at once with `full`. Only with [`max_wait`](Self::max_wait).
    pub fn max_waiting(mut self, waiters: usize) -> Self {
        self.max_waiting = Some(waiters);
        self
    }

    /// Which waiter is served first when units come free (default [`QueueOrder::Fifo`]).
    /// In FIFO order a waiter whose weight does not fit holds back those behind
    /// it, so a heavy call is not starved by light ones; in LIFO order newer
    /// light callers go first and a heavy one may wait out its `max_wait`.
    pub fn queue_order(mut self, order: QueueOrder) -> Self {
        self.order = order;
        self
    }

    /// The wait every rejection suggests in [`Rejected::retry_after`](palisade_core::Rejected::retry_after)
    /// (default: none; a bulkhead cannot know when a call will finish).
    pub fn retry_after(mut self, hint: Duration) -> Self {
        self.retry_after = Some(hint);
        self
    }

    /// The clock that times waits in the queue (default: the system clock).
    /// Read only when a caller queues. Tests pass a `ManualClock`.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// What `max_wait` waits on (default: tokio's timer with the `tokio`
    /// feature, none without it). A `ManualClock` is a sleeper too.
    pub fn sleeper(mut self, sleeper: SharedSleeper) -> Self {
        self.sleeper = Some(sleeper);
        self
    }

    /// Adds a listener that receives every [`Event`], synchronously, on the
    /// thread that caused it, after the bulkhead let go of its lock (so it may
    /// use the bulkhead).
    pub fn listener(mut self, listener: impl Listener<Event>) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Validates the settings and builds the bulkhead.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first method whose value is out of bounds:
    /// a limit of 0 or above 2³¹−1, a zero `max_wait` or `max_waiting`,
    /// `max_waiting` without `max_wait`, `max_wait` with no sleeper (`sleeper`),
    /// a zero `retry_after`, an empty name.
    pub fn build(self) -> Result<Bulkhead, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        check_limit("max_concurrent_calls", self.max_concurrent_calls)?;
        if let Some(d) = self.max_wait {
            check_positive_duration("max_wait", d)?;
        }
        if let Some(n) = self.max_waiting {
            check_nonzero("max_waiting", n as u64)?;
            if self.max_wait.is_none() {
                return Err(ConfigError::new(
                    "max_waiting",
                    "has no effect without max_wait (callers do not wait)",
                ));
            }
        }
        if let Some(d) = self.retry_after {
            check_positive_duration("retry_after", d)?;
        }
        let sleeper = self.sleeper.or_else(default_sleeper);
        if self.max_wait.is_some() && sleeper.is_none() {
            return Err(ConfigError::new(
                "sleeper",
                "max_wait needs a sleeper: pass sleeper(..) or turn on the `tokio` feature",
            ));
        }

        let config = Config {
            name: self.name,
            max_wait: self.max_wait,
            max_waiting: self.max_waiting.unwrap_or(DEFAULT_MAX_WAITING),
            order: self.order,
            retry_after: self.retry_after.map(palisade_core::duration_to_nanos),
        };
        #[allow(unused_mut)]
        let mut listeners = self.listeners;
        #[cfg(feature = "tracing")]
        if self.tracing {
            listeners.push(Arc::new(crate::tracing_listener::TracingListener {
                name: Arc::clone(&config.name),
            }));
        }
        #[cfg(feature = "otel")]
        if let Some(source) = self.otel {
            let otel = crate::telemetry::OtelListener::new(source, &config.name);
            otel.record_limit(self.max_concurrent_calls);
            listeners.push(Arc::new(otel));
        }
        let clock = self.clock.unwrap_or_else(SystemClock::shared);
        Ok(Bulkhead::from_config(
            config,
            self.max_concurrent_calls,
            clock,
            sleeper,
            listeners,
        ))
    }
}

/// A limit must be in 1..=2³¹−1.
pub(crate) fn check_limit(field: &'static str, limit: u32) -> Result<(), ConfigError> {
    check_nonzero(field, u64::from(limit))?;
    if limit > MAX_LIMIT {
        return Err(ConfigError::new(
            field,
            format!("must be at most {MAX_LIMIT}, got {limit}"),
        ));
    }
    Ok(())
}

#[cfg(feature = "tokio")]
#[allow(clippy::unnecessary_wraps)] // the same signature as without the feature
fn default_sleeper() -> Option<SharedSleeper> {
    Some(palisade_core::TokioSleeper::shared())
}

#[cfg(not(feature = "tokio"))]
fn default_sleeper() -> Option<SharedSleeper> {
    None
}
