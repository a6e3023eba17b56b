//! Additive increase, multiplicative decrease: the limit grows by a step
//! while calls succeed in time with the bulkhead in use, and shrinks by a
//! ratio when one fails or is slower than a threshold (Netflix's `AimdLimit`).

use std::time::Duration;

use palisade_core::ConfigError;

use super::{Algorithm, Sample};

/// AIMD settings; pass to [`AdaptiveLimiterBuilder::aimd`](super::AdaptiveLimiterBuilder::aimd).
///
/// On each finished call: if it failed, or took longer than
/// [`timeout`](Self::timeout), the limit becomes `floor(limit × backoff_ratio)`
/// — once per overload: a call that started before the last back-off does not
/// back off again (as TCP halves its window once per loss event, not once per
/// lost packet), so a burst of slow calls cuts the limit once, not once each;
/// otherwise, if at least half the limit was in flight (the limit was what
/// held calls back), it grows by [`increase`](Self::increase). Bounded by the
/// limiter's minimum and maximum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aimd {
    pub(crate) backoff_ratio: f64,
    pub(crate) increase: u32,
    pub(crate) timeout: Duration,
}

impl Default for Aimd {
    /// Back off by 0.9, grow by 1, a call slower than 5 s counts as a failure.
    fn default() -> Self {
        Self {
            backoff_ratio: 0.9,
            increase: 1,
            timeout: Duration::from_secs(5),
        }
    }
}

impl Aimd {
    /// The defaults: back off by 0.9, grow by 1, time out at 5 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the limit is multiplied by after a failure or a slow call, in [0.5, 1) (default 0.9).
    #[must_use]
    pub fn backoff_ratio(mut self, ratio: f64) -> Self {
        self.backoff_ratio = ratio;
        self
    }

    /// How much the limit grows after a call in time with the limit in use, at least 1 (default 1).
    #[must_use]
    pub fn increase(mut self, step: u32) -> Self {
        self.increase = step;
        self
    }

    /// A call slower than this counts as a failure (default 5 s): set it a
    /// little above the latency the dependency has when it is not overloaded.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(0.5..1.0).contains(&self.backoff_ratio) {
            return Err(ConfigError::new(
                "aimd",
                format!(
                    "backoff_ratio must be in [0.5, 1), got {}",
                    self.backoff_ratio
                ),
            ));
        }
        if self.increase == 0 {
            return Err(ConfigError::new("aimd", "increase must be at least 1"));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("aimd", "timeout must be longer than zero"));
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct AimdState {
    settings: Aimd,
    /// When it last backed off (clock nanoseconds).
    backed_off_at: Option<u64>,
}

impl AimdState {
    pub(crate) fn new(settings: Aimd) -> Self {
        Self {
            settings,
            backed_off_at: None,
        }
    }
}

impl Algorithm for AimdState {
    fn update(&mut self, sample: Sample, limit: u32, min: u32, max: u32) -> u32 {
        let next = if sample.dropped || sample.latency > self.settings.timeout {
            if self.backed_off_at.is_some_and(|at| sample.started <= at) {
                // The same overload as the last back-off.
                return limit.clamp(min, max);
            }
            self.backed_off_at = Some(sample.finished);
            (f64::from(limit) * self.settings.backoff_ratio).floor() as u32
        } else if u64::from(sample.in_flight) * 2 >= u64::from(limit) {
            limit.saturating_add(self.settings.increase)
        } else {
            limit
        };
        next.clamp(min, max)
    }
}
