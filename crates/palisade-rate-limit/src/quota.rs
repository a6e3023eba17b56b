//! How many requests a limit admits, over what period, and how many at once.

use std::time::Duration;

use palisade_core::{ConfigError, duration_to_nanos};

/// The largest tolerance (burst × emission interval) a quota may have:
/// 2^62 ns, about 146 years, so that the GCRA's sums never overflow.
const MAX_TOLERANCE_NANOS: u64 = 1 << 62;

/// A rate: `count` requests per `period`, with bursts of up to `burst` requests.
///
/// The limiter spaces requests evenly: one is due every `period / count`
/// (the *emission interval*), and a client that has been quiet may use up to
/// `burst` of them at once. The burst defaults to `count`, so
/// `Quota::per_second(10)` admits 10 requests at once and then one every
/// 100 ms.
///
/// A quota is a small `Copy` value; it is checked when a limiter is built (or
/// given a new quota), where a zero count, a zero period, a burst of 0 or an
/// interval under one nanosecond is a [`ConfigError`] naming the builder
/// method (`quota`).
///
/// ```
/// use palisade_rate_limit::Quota;
/// use std::time::Duration;
///
/// let q = Quota::per_minute(600).burst(20);
/// assert_eq!(q.emission_interval(), Duration::from_millis(100));
/// assert_eq!(q.burst_size(), 20);
/// assert_eq!(Quota::new(3, Duration::from_secs(9)).emission_interval(), Duration::from_secs(3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    count: u32,
    period: Duration,
    burst: Option<u32>,
}

impl Quota {
    /// `count` requests per `period`; burst `count`.
    pub const fn new(count: u32, period: Duration) -> Self {
        Self {
            count,
            period,
            burst: None,
        }
    }

    /// `count` requests per second; burst `count`.
    pub const fn per_second(count: u32) -> Self {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` requests per minute; burst `count`.
    pub const fn per_minute(count: u32) -> Self {
        Self::new(count, Duration::from_secs(60))
    }

    /// `count` requests per hour; burst `count`.
    pub const fn per_hour(count: u32) -> Self {
        Self::new(count, Duration::from_secs(3600))
    }

    /// At most `burst` requests at once (default: the count). 1 spaces every
    /// request by the emission interval.
    #[must_use]
    pub const fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The requests per period.
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// The period the count is over.
    pub const fn period(&self) -> Duration {
        self.period
    }

    /// How many requests may go at once (the count unless [`burst`](Self::burst) set it).
    pub const fn burst_size(&self) -> u32 {
        match self.burst {
            Some(b) => b,
            None => self.count,
        }
    }

    /// The time between two requests at the sustained rate: `period / count`,
    /// in whole nanoseconds, rounded up, so that a limit never admits more
    /// than its quota. Zero for an invalid quota.
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.emission_nanos())
    }

    fn emission_nanos(&self) -> u64 {
        let period = duration_to_nanos(self.period);
        if self.count == 0 || period < u64::from(self.count) {
            return 0;
        }
        period.div_ceil(u64::from(self.count))
    }

    /// Checks the quota; `field` is the builder method that set it.
    pub(crate) fn params(&self, field: &'static str) -> Result<Params, ConfigError> {
        if self.count == 0 {
            return Err(ConfigError::new(
                field,
                "the count must be at least 1, got 0",
            ));
        }
        if self.period.is_zero() {
            return Err(ConfigError::new(
                field,
                "the period must be longer than zero",
            ));
        }
        let burst = self.burst_size();
        if burst == 0 {
            return Err(ConfigError::new(
                field,
                "the burst must be at least 1, got 0",
            ));
        }
        let emission = self.emission_nanos();
        if emission == 0 {
            return Err(ConfigError::new(
                field,
                format!(
                    "{} requests per {:?} is more than one per nanosecond",
                    self.count, self.period
                ),
            ));
        }
        match emission.checked_mul(u64::from(burst)) {
            Some(tolerance) if tolerance <= MAX_TOLERANCE_NANOS => Ok(Params { emission, burst }),
            _ => Err(ConfigError::new(
                field,
                format!(
                    "a burst of {burst} every {:?} spans more than 2^62 ns",
                    self.emission_interval()
                ),
            )),
        }
    }
}

/// A validated quota as the GCRA uses it: the emission interval in
/// nanoseconds and the burst. `emission * burst` never exceeds 2^62.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    pub(crate) emission: u64,
    pub(crate) burst: u32,
}

impl Params {
    /// How far ahead of now the theoretical arrival time may run: burst × interval.
    #[inline]
    pub(crate) fn tolerance(self) -> u64 {
        self.emission * u64::from(self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_quotas_name_the_field() {
        for (q, why) in [
            (Quota::per_second(0), "the count must be at least 1, got 0"),
            (
                Quota::new(1, Duration::ZERO),
                "the period must be longer than zero",
            ),
            (
                Quota::per_second(5).burst(0),
                "the burst must be at least 1, got 0",
            ),
            (
                Quota::new(10, Duration::from_nanos(5)),
                "10 requests per 5ns is more than one per nanosecond",
            ),
        ] {
            let err = q.params("quota").unwrap_err();
            assert_eq!(err.field(), "quota");
            assert_eq!(err.reason(), why);
        }
        let err = Quota::per_hour(1)
            .burst(u32::MAX)
            .params("set_quota")
            .unwrap_err();
        assert_eq!(err.field(), "set_quota");
    }

    #[test]
    fn params_are_the_interval_and_the_burst() {
        let p = Quota::per_second(4).params("quota").unwrap();
        assert_eq!(
            p,
            Params {
                emission: 250_000_000,
                burst: 4
            }
        );
        assert_eq!(p.tolerance(), 1_000_000_000);
        // Rounded up: 3 per second is never more than 3 per second.
        assert_eq!(
            Quota::per_second(3).emission_interval(),
            Duration::from_nanos(333_333_334)
        );
        let p = Quota::per_minute(2).burst(7).params("quota").unwrap();
        assert_eq!(
            p,
            Params {
                emission: 30_000_000_000,
                burst: 7
            }
        );
    }
}
