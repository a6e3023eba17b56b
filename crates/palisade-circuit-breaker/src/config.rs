//! The builder and the validated configuration of a circuit breaker.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::config::{check_nonzero, check_positive_duration, check_ratio};
use palisade_core::{Backoff, ConfigError, Listener, Listeners, SharedClock, SystemClock};

use crate::breaker::CircuitBreaker;
use crate::event::Event;

/// Which calls the closed state judges: the last N, or those of the last period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlidingWindow {
    /// The last `size` calls.
    Count {
        /// How many calls the window holds.
        size: u32,
    },
    /// Calls of the last `period`, kept in `buckets` buckets of `period / buckets` each.
    Time {
        /// How far back the window reaches.
        period: Duration,
        /// How many buckets the period is cut into (the window moves one bucket at a time).
        buckets: u32,
    },
}

impl SlidingWindow {
    /// The last `size` calls.
    pub fn count(size: u32) -> Self {
        Self::Count { size }
    }

    /// Calls of the last `period`, in 10 buckets.
    pub fn time(period: Duration) -> Self {
        Self::Time {
            period,
            buckets: 10,
        }
    }

    /// Calls of the last `period`, in `buckets` buckets.
    pub fn time_with_buckets(period: Duration, buckets: u32) -> Self {
        Self::Time { period, buckets }
    }

    fn validate(self) -> Result<(), ConfigError> {
        match self {
            Self::Count { size } => check_nonzero("sliding_window", u64::from(size)),
            Self::Time { period, buckets } => {
                check_positive_duration("sliding_window", period)?;
                check_nonzero("sliding_window", u64::from(buckets))?;
                if period.as_nanos() < u128::from(buckets) {
                    return Err(ConfigError::new(
                        "sliding_window",
                        format!("period {period:?} is shorter than one nanosecond per bucket"),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// The validated settings of a breaker.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) name: Arc<str>,
    pub(crate) window: SlidingWindow,
    pub(crate) minimum_calls: u32,
    pub(crate) failure_rate_threshold: f64,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) slow_call_duration: Option<u64>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) half_open_probes: u32,
    pub(crate) open_backoff: Backoff,
    pub(crate) max_wait_in_half_open: Option<u64>,
}

/// Builds a [`CircuitBreaker`]; every setting has a default.
///
/// ```
/// use palisade_circuit_breaker::{CircuitBreaker, SlidingWindow};
/// use std::time::Duration;
///
/// let breaker = CircuitBreaker::builder()
///     .name("inventory")
///     .sliding_window(SlidingWindow::time(Duration::from_secs(60)))
///     .minimum_calls(20)
///     .failure_rate_threshold(0.25)
///     .slow_call_duration(Duration::from_millis(500))
///     .slow_call_rate_threshold(0.5)
///     .build()?;
/// # Ok::<(), palisade_circuit_breaker::ConfigError>(())
/// ```
#[must_use]
pub struct CircuitBreakerBuilder {
    name: Arc<str>,
    window: SlidingWindow,
    minimum_calls: u32,
    failure_rate_threshold: f64,
    slow_call_rate_threshold: f64,
    slow_call_duration: Option<Duration>,
    consecutive_failures: Option<u32>,
    half_open_probes: u32,
    open_backoff: Backoff,
    /// The method that set `open_backoff`, for the error if it is invalid.
    open_backoff_set_by: &'static str,
    max_wait_in_half_open: Option<Duration>,
    clock: Option<SharedClock>,
    listeners: Listeners<Event>,
    #[cfg(feature = "otel")]
    pub(crate) otel: Option<palisade_core::telemetry::MeterSource>,
    #[cfg(feature = "tracing")]
    pub(crate) tracing: bool,
}

impl Default for CircuitBreakerBuilder {
    fn default() -> Self {
        Self {
            name: Arc::from("default"),
            window: SlidingWindow::count(100),
            minimum_calls: 100,
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.0,
            slow_call_duration: None,
            consecutive_failures: None,
            half_open_probes: 10,
            open_backoff: Backoff::fixed(Duration::from_secs(60)),
            open_backoff_set_by: "open_duration",
            max_wait_in_half_open: None,
            clock: None,
            listeners: Listeners::new(),
            #[cfg(feature = "otel")]
            otel: None,
            #[cfg(feature = "tracing")]
            tracing: false,
        }
    }
}

impl CircuitBreakerBuilder {
    /// The instance name in telemetry (`palisade.instance`) and in `tracing` events. Default: `"default"`; must not be empty.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The window the closed state judges (default: the last 100 calls).
    pub fn sliding_window(mut self, window: SlidingWindow) -> Self {
        self.window = window;
        self
    }

    /// How many calls the window must hold before a rate can open the breaker (default 100).
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls;
        self
    }

    /// Opens when failures / calls reaches this ratio, in (0, 1] (default 0.5).
    pub fn failure_rate_threshold(mut self, ratio: f64) -> Self {
        self.failure_rate_threshold = ratio;
        self
    }

    /// Calls that take at least this long are slow (default: none are; the clock is then not read per call).
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.slow_call_duration = Some(duration);
        self
    }

    /// Opens when slow calls / calls reaches this ratio, in (0, 1] (default 1.0).
    pub fn slow_call_rate_threshold(mut self, ratio: f64) -> Self {
        self.slow_call_rate_threshold = ratio;
        self
    }

    /// Also opens after this many failures in a row, whatever the window holds (default: off).
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = Some(failures);
        self
    }

    /// How many probe calls the half-open state admits and judges (default 10).
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.half_open_probes = probes;
        self
    }

    /// How long the breaker stays open before admitting probes (default 60 s).
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.open_backoff = Backoff::fixed(duration);
        self.open_backoff_set_by = "open_duration";
        self
    }

    /// Open duration computed from the number of consecutive openings (1 for the
    /// first), for example exponential with jitter and a cap. Replaces [`CircuitBreakerBuilder::open_duration`].
    pub fn open_backoff(mut self, backoff: Backoff) -> Self {
        self.open_backoff = backoff;
        self.open_backoff_set_by = "open_backoff";
        self
    }

    /// Opens again if the probes have not all finished within this time (default: waits for them).
    pub fn max_wait_in_half_open(mut self, duration: Duration) -> Self {
        self.max_wait_in_half_open = Some(duration);
        self
    }

    /// The clock (default: the system clock). Tests pass a `ManualClock`.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Adds a listener that receives every [`Event`], synchronously, on the
    /// thread that caused it. Transitions are delivered in order, under the
    /// breaker's transition lock: a listener may read the breaker but must not
    /// call [`CircuitBreaker::transition_to`] or [`CircuitBreaker::reset`].
    pub fn listener(mut self, listener: impl Listener<Event>) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Validates the settings and builds the breaker.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first field out of bounds: a ratio outside
    /// (0, 1] or NaN, a zero window, probe count, minimum or duration.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        self.window.validate()?;
        check_nonzero("minimum_calls", u64::from(self.minimum_calls))?;
        check_ratio("failure_rate_threshold", self.failure_rate_threshold)?;
        check_ratio("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        if let Some(d) = self.slow_call_duration {
            check_positive_duration("slow_call_duration", d)?;
        }
        if let Some(n) = self.consecutive_failures {
            check_nonzero("consecutive_failures", u64::from(n))?;
        }
        check_nonzero("half_open_probes", u64::from(self.half_open_probes))?;
        self.open_backoff.validate(self.open_backoff_set_by)?;
        if let Some(d) = self.max_wait_in_half_open {
            check_positive_duration("max_wait_in_half_open", d)?;
        }
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }

        let config = Config {
            name: self.name,
            window: self.window,
            minimum_calls: self.minimum_calls,
            failure_rate_threshold: self.failure_rate_threshold,
            slow_call_rate_threshold: self.slow_call_rate_threshold,
            slow_call_duration: self
                .slow_call_duration
                .map(palisade_core::duration_to_nanos),
            consecutive_failures: self.consecutive_failures,
            half_open_probes: self.half_open_probes,
            open_backoff: self.open_backoff,
            max_wait_in_half_open: self
                .max_wait_in_half_open
                .map(palisade_core::duration_to_nanos),
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
        let otel = self
            .otel
            .map(|source| Arc::new(crate::telemetry::OtelListener::new(source, &config.name)));
        #[cfg(feature = "otel")]
        if let Some(otel) = &otel {
            listeners.push(Arc::clone(otel) as Arc<dyn Listener<Event>>);
        }
        let clock = self.clock.unwrap_or_else(SystemClock::shared);
        let breaker = CircuitBreaker::from_config(config, clock, listeners);
        #[cfg(feature = "otel")]
        if let Some(otel) = otel {
            otel.record_initial_state(breaker.state());
        }
        Ok(breaker)
    }
}
