//! Delays that grow with the number of attempts, with jitter.

use std::time::Duration;

use crate::config::{ConfigError, check_positive_duration};

/// How much randomness to add to a computed delay, so that many clients do not wake at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// The delay as computed.
    #[default]
    None,
    /// Uniform in `[0, delay]` ("full jitter").
    Full,
    /// Uniform in `[delay / 2, delay]` ("equal jitter").
    Equal,
}

/// A delay schedule: fixed, or exponential from a base with a cap, plus jitter.
///
/// ```
/// use palisade_core::{Backoff, Jitter};
/// use std::time::Duration;
///
/// let backoff = Backoff::exponential(Duration::from_secs(1))
///     .factor(2.0)
///     .max(Duration::from_secs(30))
///     .jitter(Jitter::None);
/// assert_eq!(backoff.delay(1), Duration::from_secs(1));
/// assert_eq!(backoff.delay(3), Duration::from_secs(4));
/// assert_eq!(backoff.delay(10), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    factor: f64,
    max: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// The same delay for every attempt.
    pub fn fixed(delay: Duration) -> Self {
        Self {
            base: delay,
            factor: 1.0,
            max: delay,
            jitter: Jitter::None,
        }
    }

    /// `base * factor^(attempt - 1)`, capped at `max`. Defaults: factor 2, max 1 hour, no jitter.
    pub fn exponential(base: Duration) -> Self {
        Self {
            base,
            factor: 2.0,
            max: Duration::from_secs(3600),
            jitter: Jitter::None,
        }
    }

    /// The growth factor per attempt (default 2; must be finite and at least 1).
    #[must_use]
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// The largest delay, before jitter (default 1 hour for exponential, the delay itself for fixed).
    #[must_use]
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The jitter applied to each delay (default [`Jitter::None`]).
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Checks the schedule; `field` names it in the error.
    pub fn validate(&self, field: &'static str) -> Result<(), ConfigError> {
        check_positive_duration(field, self.base)?;
        if !self.factor.is_finite() || self.factor < 1.0 {
            return Err(ConfigError::new(
                field,
                format!("factor must be finite and at least 1, got {}", self.factor),
            ));
        }
        if self.max < self.base {
            return Err(ConfigError::new(
                field,
                format!(
                    "max ({:?}) must not be below the base delay ({:?})",
                    self.max, self.base
                ),
            ));
        }
        Ok(())
    }

    /// The delay before attempt `attempt` (1-based), with jitter drawn from a fast thread-local generator.
    pub fn delay(&self, attempt: u32) -> Duration {
        let unit = if self.jitter == Jitter::None {
            0.0
        } else {
            fastrand::f64()
        };
        self.delay_with(attempt, unit)
    }

    /// The delay before attempt `attempt` (1-based) with `unit` in `[0, 1)` as the jitter draw;
    /// deterministic, for tests.
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(1024) as i32;
        let raw = self.base.as_secs_f64() * self.factor.powi(exponent);
        let capped = if raw.is_finite() {
            raw.min(self.max.as_secs_f64())
        } else {
            self.max.as_secs_f64()
        };
        let unit = unit.clamp(0.0, 1.0);
        let jittered = match self.jitter {
            Jitter::None => capped,
            Jitter::Full => capped * unit,
            Jitter::Equal => capped / 2.0 + capped / 2.0 * unit,
        };
        Duration::try_from_secs_f64(jittered).unwrap_or(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_grows_and_caps() {
        let b = Backoff::exponential(Duration::from_millis(100))
            .factor(3.0)
            .max(Duration::from_secs(1));
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(300));
        assert_eq!(b.delay(3), Duration::from_millis(900));
        assert_eq!(b.delay(4), Duration::from_secs(1));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_in_its_range() {
        let full = Backoff::fixed(Duration::from_secs(8)).jitter(Jitter::Full);
        assert_eq!(full.delay_with(1, 0.0), Duration::ZERO);
        assert_eq!(full.delay_with(1, 0.25), Duration::from_secs(2));
        let equal = Backoff::fixed(Duration::from_secs(8)).jitter(Jitter::Equal);
        assert_eq!(equal.delay_with(1, 0.0), Duration::from_secs(4));
        assert_eq!(equal.delay_with(1, 0.5), Duration::from_secs(6));
        for _ in 0..1000 {
            let d = full.delay(1);
            assert!(d <= Duration::from_secs(8), "{d:?}");
        }
    }

    #[test]
    fn invalid_schedules_name_the_field() {
        let err = Backoff::exponential(Duration::ZERO)
            .validate("open_duration")
            .unwrap_err();
        assert_eq!(err.field(), "open_duration");
        let err = Backoff::exponential(Duration::from_secs(1))
            .factor(f64::NAN)
            .validate("open_duration")
            .unwrap_err();
        assert_eq!(err.field(), "open_duration");
        assert!(err.to_string().contains("factor"), "{err}");
        let err = Backoff::exponential(Duration::from_secs(2))
            .max(Duration::from_secs(1))
            .validate("delay")
            .unwrap_err();
        assert!(err.to_string().contains("max"), "{err}");
    }
}
