//! Netflix's Gradient2: the limit follows the ratio of a long-term average
//! latency to the latest one, so it shrinks as soon as latency rises above
//! what the dependency has shown over the long run, and grows by a small
//! queue allowance while it does not.

use std::time::Duration;

use palisade_core::ConfigError;

use super::{Algorithm, Sample};

/// Gradient2 settings; pass to [`AdaptiveLimiterBuilder::gradient2`](super::AdaptiveLimiterBuilder::gradient2).
///
/// Calls are gathered in windows of at least [`window`](Self::window) and 10
/// calls (as Netflix wraps Gradient2 in its `WindowedLimit`); at the end of
/// each, with `short` the window's mean latency and `long` an exponential
/// average over the last [`long_window`](Self::long_window) windows:
///
/// ```text
/// gradient = clamp(tolerance × long / short, 0.5, 1.0)
/// target   = estimate × gradient + queue_size
/// estimate = estimate × (1 − smoothing) + target × smoothing
/// ```
///
/// bounded by the limiter's minimum and maximum. While fewer than half the
/// limit were in flight at most in the window, the limit is not what holds
/// calls back and does not move. When `long` grows past twice `short`, it is pulled down by 5 %, so
/// the long average recovers after a period of high latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gradient2 {
    pub(crate) tolerance: f64,
    pub(crate) smoothing: f64,
    pub(crate) queue_size: f64,
    pub(crate) long_window: u32,
    pub(crate) window: Duration,
}

impl Default for Gradient2 {
    /// Netflix's defaults (tolerance 1.5, smoothing 0.2, queue size 4, a long
    /// window of 600 windows), with windows of 100 ms.
    fn default() -> Self {
        Self {
            tolerance: 1.5,
            smoothing: 0.2,
            queue_size: 4.0,
            long_window: 600,
            window: Duration::from_millis(100),
        }
    }
}

impl Gradient2 {
    /// The defaults: tolerance 1.5, smoothing 0.2, queue size 4, long window 600, window 100 ms.
    pub fn new() -> Self {
        Self::default()
    }

    /// How much slower than the long average a call may be before the limit
    /// shrinks, at least 1 (default 1.5).
    #[must_use]
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// How far each window moves the estimate toward its target, in (0, 1] (default 0.2).
    #[must_use]
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// The allowance added above the latency-scaled estimate, at least 0 (default 4).
    #[must_use]
    pub fn queue_size(mut self, queue_size: f64) -> Self {
        self.queue_size = queue_size;
        self
    }

    /// How many windows the long average reaches back, at least 10 (default 600).
    #[must_use]
    pub fn long_window(mut self, windows: u32) -> Self {
        self.long_window = windows;
        self
    }

    /// The shortest window the calls are gathered in before the limit moves,
    /// longer than zero (default 100 ms); a window also holds at least 10 calls.
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |why: String| Err(ConfigError::new("gradient2", why));
        if !(self.tolerance >= 1.0 && self.tolerance.is_finite()) {
            return bad(format!(
                "tolerance must be at least 1, got {}",
                self.tolerance
            ));
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return bad(format!(
                "smoothing must be in (0, 1], got {}",
                self.smoothing
            ));
        }
        if !(self.queue_size >= 0.0 && self.queue_size.is_finite()) {
            return bad(format!(
                "queue_size must be at least 0, got {}",
                self.queue_size
            ));
        }
        if self.window.is_zero() {
            return bad("window must be longer than zero".to_owned());
        }
        if self.long_window < 10 {
            return bad(format!(
                "long_window must be at least 10, got {}",
                self.long_window
            ));
        }
        Ok(())
    }
}

/// An exponential average that starts as the plain mean of its first samples.
#[derive(Debug)]
struct ExpAvg {
    factor: f64,
    warmup: u32,
    count: u32,
    value: f64,
}

impl ExpAvg {
    fn new(window: u32, warmup: u32) -> Self {
        Self {
            factor: 2.0 / (f64::from(window) + 1.0),
            warmup,
            count: 0,
            value: 0.0,
        }
    }

    fn add(&mut self, sample: f64) -> f64 {
        if self.count < self.warmup {
            self.count += 1;
            self.value += (sample - self.value) / f64::from(self.count);
        } else {
            self.value = self.value * (1.0 - self.factor) + sample * self.factor;
        }
        self.value
    }
}

/// The calls of the window under way.
#[derive(Debug, Default)]
struct Window {
    started: Option<u64>,
    calls: u32,
    latency_sum: f64,
    max_in_flight: u32,
}

/// The fewest calls a window holds.
const WINDOW_CALLS: u32 = 10;

#[derive(Debug)]
pub(crate) struct Gradient2State {
    settings: Gradient2,
    long: ExpAvg,
    estimate: f64,
    window: Window,
    window_nanos: u64,
}

impl Gradient2State {
    pub(crate) fn new(settings: Gradient2, initial: u32) -> Self {
        Self {
            settings,
            long: ExpAvg::new(settings.long_window, 10),
            estimate: f64::from(initial),
            window: Window::default(),
            window_nanos: palisade_core::duration_to_nanos(settings.window),
        }
    }
}

impl Algorithm for Gradient2State {
    fn update(&mut self, sample: Sample, limit: u32, min: u32, max: u32) -> u32 {
        let w = &mut self.window;
        let started = *w.started.get_or_insert(sample.finished);
        w.calls += 1;
        w.latency_sum += sample.latency.as_nanos() as f64;
        w.max_in_flight = w.max_in_flight.max(sample.in_flight);
        if w.calls < WINDOW_CALLS || sample.finished.saturating_sub(started) < self.window_nanos {
            return limit.clamp(min, max);
        }
        let window = std::mem::take(w);
        // Nanoseconds, at least one, so the ratio is always defined.
        let short = (window.latency_sum / f64::from(window.calls)).max(1.0);
        let mut long = self.long.add(short);
        if long / short > 2.0 {
            self.long.value *= 0.95;
            long = self.long.value;
        }
        if f64::from(window.max_in_flight) >= self.estimate / 2.0 {
            let s = &self.settings;
            let gradient = (s.tolerance * long / short).clamp(0.5, 1.0);
            let target = self.estimate * gradient + s.queue_size;
            self.estimate = (self.estimate * (1.0 - s.smoothing) + target * s.smoothing)
                .clamp(f64::from(min), f64::from(max));
        }
        self.estimate as u32
    }
}
