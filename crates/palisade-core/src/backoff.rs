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
    /// Uniform in `[base, 3 × the previous delay]`, capped at the maximum
    /// ("decorrelated jitter", as AWS's architecture blog gives it and Polly's
    /// first `DecorrelatedJitterBackoff` used it; Polly v8 smooths it further): each
    /// delay grows from the one before rather than from the attempt number, so
    /// clients that failed together spread apart at once. The schedule's kind
    /// then sets only the base and the cap. Use [`Backoff::delay_after`] with the
    /// delay actually waited; [`Backoff::delay`] takes the un-jittered delay of
    /// the attempt before as the previous one.
    Decorrelated,
}

/// How a schedule grows with the attempt number, before the cap and jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Growth {
    Constant,
    Linear,
    Exponential,
}

/// A delay schedule: fixed, linear or exponential from a base, with a cap
/// that holds after jitter, plus jitter.
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
    growth: Growth,
    base: Duration,
    factor: f64,
    max: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// The same delay for every attempt.
    pub fn fixed(delay: Duration) -> Self {
        Self {
            growth: Growth::Constant,
            base: delay,
            factor: 1.0,
            max: delay,
            jitter: Jitter::None,
        }
    }

    /// `base × (1 + factor × (attempt − 1))`, capped at `max`: with the default
    /// factor 1, `base`, `2 × base`, `3 × base`, … Defaults: factor 1, max 1 hour, no jitter.
    pub fn linear(base: Duration) -> Self {
        Self {
            growth: Growth::Linear,
            base,
            factor: 1.0,
            max: Duration::from_secs(3600),
            jitter: Jitter::None,
        }
    }

    /// `base × factor^(attempt − 1)`, capped at `max`. Defaults: factor 2, max 1 hour, no jitter.
    pub fn exponential(base: Duration) -> Self {
        Self {
            growth: Growth::Exponential,
            base,
            factor: 2.0,
            max: Duration::from_secs(3600),
            jitter: Jitter::None,
        }
    }

    /// The growth per attempt: the ratio between delays for an exponential
    /// schedule (default 2, at least 1), the step in units of `base` for a linear
    /// one (default 1, at least 0). Must be finite; a fixed schedule has none
    /// (anything but 1 is an error in [`validate`](Self::validate)).
    #[must_use]
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// The largest delay, after jitter too (default 1 hour for linear and
    /// exponential, the delay itself for fixed).
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

    /// The same schedule with every delay at most `cap`, applied before the
    /// jitter, so a jittered delay stays spread over `[0, cap]` (or
    /// `[cap / 2, cap]`) instead of piling up at the cap. A base above `cap`
    /// comes down to it.
    #[must_use]
    pub fn capped_at(mut self, cap: Duration) -> Self {
        self.max = self.max.min(cap);
        self.base = self.base.min(cap);
        self
    }

    /// Checks the schedule; `field` names it in the error.
    pub fn validate(&self, field: &'static str) -> Result<(), ConfigError> {
        check_positive_duration(field, self.base)?;
        let least = match self.growth {
            Growth::Constant | Growth::Exponential => 1.0,
            Growth::Linear => 0.0,
        };
        if !self.factor.is_finite() || self.factor < least {
            return Err(ConfigError::new(
                field,
                format!(
                    "factor must be finite and at least {least}, got {}",
                    self.factor
                ),
            ));
        }
        #[allow(clippy::float_cmp)] // exactly 1, as `fixed` sets it
        if self.growth == Growth::Constant && self.factor != 1.0 {
            return Err(ConfigError::new(
                field,
                format!("a fixed backoff does not grow; got factor {}", self.factor),
            ));
        }
        if self.jitter == Jitter::Decorrelated && self.max <= self.base {
            return Err(ConfigError::new(
                field,
                "decorrelated jitter needs a max above the base delay (a fixed backoff leaves it no room)",
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
        self.delay_with(attempt, self.draw())
    }

    /// The delay before attempt `attempt` (1-based) with `unit` in `[0, 1]` as the jitter draw;
    /// deterministic, for tests.
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let previous = self.schedule(attempt.saturating_sub(1).max(1));
        self.delay_after_with(attempt, previous, unit)
    }

    /// The delay before attempt `attempt`, when the delay before the previous
    /// attempt was `previous` (only [`Jitter::Decorrelated`] reads it), with a
    /// fresh jitter draw.
    pub fn delay_after(&self, attempt: u32, previous: Duration) -> Duration {
        self.delay_after_with(attempt, previous, self.draw())
    }

    /// As [`delay_after`](Self::delay_after), with `unit` in `[0, 1]` as the
    /// jitter draw. The result never exceeds the maximum, whatever the jitter.
    pub fn delay_after_with(&self, attempt: u32, previous: Duration, unit: f64) -> Duration {
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        let max = self.max.as_secs_f64();
        let capped = self.schedule_secs(attempt);
        let jittered = match self.jitter {
            Jitter::None => capped,
            Jitter::Full => capped * unit,
            Jitter::Equal => capped / 2.0 + capped / 2.0 * unit,
            Jitter::Decorrelated => {
                let low = self.base.as_secs_f64();
                let high = (previous.as_secs_f64().max(low) * 3.0).min(max);
                low + (high - low).max(0.0) * unit
            }
        };
        Duration::try_from_secs_f64(jittered.min(max)).unwrap_or(self.max)
    }

    /// The un-jittered, capped delay of `attempt`.
    fn schedule(&self, attempt: u32) -> Duration {
        Duration::try_from_secs_f64(self.schedule_secs(attempt)).unwrap_or(self.max)
    }

    fn schedule_secs(&self, attempt: u32) -> f64 {
        let steps = attempt.saturating_sub(1);
        let base = self.base.as_secs_f64();
        let raw = match self.growth {
            Growth::Constant => base,
            Growth::Linear => base * (1.0 + self.factor * f64::from(steps)),
            Growth::Exponential => base * self.factor.powi(steps.min(1024) as i32),
        };
        let max = self.max.as_secs_f64();
        if raw.is_finite() { raw.min(max) } else { max }
    }

    fn draw(&self) -> f64 {
        if self.jitter == Jitter::None {
            0.0
        } else {
            fastrand::f64()
        }
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
    fn linear_steps_by_its_factor() {
        let b = Backoff::linear(Duration::from_millis(100)).max(Duration::from_millis(450));
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(400));
        assert_eq!(b.delay(5), Duration::from_millis(450));
        let b = Backoff::linear(Duration::from_millis(100)).factor(0.5);
        assert_eq!(b.delay(3), Duration::from_millis(200));
        assert!(b.validate("delay").is_ok());
    }

    #[test]
    fn decorrelated_grows_from_the_previous_delay_and_keeps_the_cap() {
        let b = Backoff::exponential(Duration::from_secs(1))
            .max(Duration::from_secs(10))
            .jitter(Jitter::Decorrelated);
        // Uniform in [base, 3 × previous].
        assert_eq!(
            b.delay_after_with(2, Duration::from_secs(2), 0.0),
            Duration::from_secs(1)
        );
        assert_eq!(
            b.delay_after_with(2, Duration::from_secs(2), 1.0),
            Duration::from_secs(6)
        );
        assert_eq!(
            b.delay_after_with(2, Duration::from_secs(2), 0.5),
            Duration::from_millis(3500)
        );
        // 3 × 5 s = 15 s is above the cap: the range is [1 s, 10 s].
        assert_eq!(
            b.delay_after_with(3, Duration::from_secs(5), 1.0),
            Duration::from_secs(10)
        );
        let mut previous = Duration::from_secs(1);
        for attempt in 1..100_000 {
            let d = b.delay_after(attempt, previous);
            assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(10),
                "{d:?}"
            );
            previous = d;
        }
    }

    #[test]
    fn no_jitter_passes_the_cap() {
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ] {
            let b = Backoff::exponential(Duration::from_millis(300))
                .factor(3.0)
                .max(Duration::from_secs(2))
                .jitter(jitter);
            for attempt in 1..=20 {
                for unit in [0.0, 0.3, 0.999, 1.0, 7.0, f64::NAN] {
                    let d = b.delay_after_with(attempt, Duration::from_secs(5), unit);
                    assert!(
                        d <= Duration::from_secs(2),
                        "{jitter:?} {attempt} {unit}: {d:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_cap_applies_before_the_jitter() {
        let b = Backoff::exponential(Duration::from_millis(100))
            .jitter(Jitter::Full)
            .capped_at(Duration::from_secs(1));
        // Retry 10 would be 51.2 s: the draw is spread over [0, 1 s], not piled at 1 s.
        assert_eq!(b.delay_with(10, 0.5), Duration::from_millis(500));
        let b = Backoff::fixed(Duration::from_secs(5)).capped_at(Duration::from_secs(2));
        assert_eq!(b.delay(1), Duration::from_secs(2));
        assert!(b.validate("backoff").is_ok());
    }

    #[test]
    fn decorrelated_jitter_needs_room_above_the_base() {
        let err = Backoff::fixed(Duration::from_secs(1))
            .jitter(Jitter::Decorrelated)
            .validate("backoff")
            .unwrap_err();
        assert!(err.to_string().contains("decorrelated"), "{err}");
    }

    #[test]
    fn a_fixed_schedule_has_no_factor() {
        let err = Backoff::fixed(Duration::from_secs(1))
            .factor(2.0)
            .validate("backoff")
            .unwrap_err();
        assert_eq!(err.field(), "backoff");
        let err = Backoff::linear(Duration::from_secs(1))
            .factor(-1.0)
            .validate("backoff")
            .unwrap_err();
        assert!(err.to_string().contains("at least 0"), "{err}");
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
