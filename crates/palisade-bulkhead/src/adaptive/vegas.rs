//! TCP Vegas applied to concurrency (Netflix's `VegasLimit`): estimate how
//! many calls are queued at the dependency from how much slower they are
//! than the fastest ever seen, and keep that queue short.

use palisade_core::ConfigError;

use super::{Algorithm, Sample};

/// Vegas settings; pass to [`AdaptiveLimiterBuilder::vegas`](super::AdaptiveLimiterBuilder::vegas).
///
/// On each finished call, with `no_load` the lowest latency seen since the
/// limiter was built and `latency` this call's:
///
/// ```text
/// queue = ceil(limit × (1 − no_load / latency))
/// ```
///
/// and, with `l = log10(limit)`: a failure takes `l` off; while fewer than
/// half the limit are in flight nothing moves; a queue of at most `l` adds
/// `beta × l`; under `alpha × l` adds `l`; over `beta × l` takes `l` off;
/// between `alpha × l` and `beta × l` the limit holds. Bounded by the
/// limiter's minimum and maximum. (Netflix's periodic probe of the no-load
/// latency is not here: it is the lowest seen.)
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vegas {
    pub(crate) alpha: f64,
    pub(crate) beta: f64,
}

impl Default for Vegas {
    /// Netflix's defaults: alpha 3, beta 6.
    fn default() -> Self {
        Self {
            alpha: 3.0,
            beta: 6.0,
        }
    }
}

impl Vegas {
    /// The defaults: alpha 3, beta 6.
    pub fn new() -> Self {
        Self::default()
    }

    /// Below `alpha × log10(limit)` queued calls the limit grows (default 3, above 0).
    #[must_use]
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }

    /// Above `beta × log10(limit)` queued calls the limit shrinks (default 6, above alpha).
    #[must_use]
    pub fn beta(mut self, beta: f64) -> Self {
        self.beta = beta;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(self.alpha > 0.0 && self.beta > self.alpha && self.beta.is_finite()) {
            return Err(ConfigError::new(
                "vegas",
                format!(
                    "needs 0 < alpha < beta, got alpha {} and beta {}",
                    self.alpha, self.beta
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug)]
pub(crate) struct VegasState {
    settings: Vegas,
    /// The lowest latency seen, in nanoseconds.
    no_load: Option<f64>,
    estimate: f64,
}

impl VegasState {
    pub(crate) fn new(settings: Vegas, initial: u32) -> Self {
        Self {
            settings,
            no_load: None,
            estimate: f64::from(initial),
        }
    }
}

impl Algorithm for VegasState {
    fn update(&mut self, sample: Sample, _limit: u32, min: u32, max: u32) -> u32 {
        let latency = (sample.latency.as_nanos() as f64).max(1.0);
        let no_load = *self
            .no_load
            .insert(self.no_load.map_or(latency, |n: f64| n.min(latency)));
        let limit = self.estimate;
        let l = limit.max(1.0).log10().max(1.0);
        let queue = (limit * (1.0 - no_load / latency)).ceil();
        let next = if sample.dropped {
            limit - l
        } else if f64::from(sample.in_flight) * 2.0 < limit {
            limit
        } else if queue <= l {
            limit + self.settings.beta * l
        } else if queue < self.settings.alpha * l {
            limit + l
        } else if queue > self.settings.beta * l {
            limit - l
        } else {
            limit
        };
        self.estimate = next.clamp(f64::from(min), f64::from(max));
        self.estimate as u32
    }
}
