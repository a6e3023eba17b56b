//! A clock on the CPU's time-stamp counter, read by quanta (feature `quanta`).

use std::fmt;
use std::sync::Arc;

use palisade_core::{Clock, SharedClock};

/// Monotonic nanoseconds from the CPU's time-stamp counter, read by
/// [quanta](https://docs.rs/quanta) and scaled by its calibration (the clock
/// governor reads): a few nanoseconds a read where `Instant::now` costs a
/// `clock_gettime`. Where quanta finds no usable counter it reads the OS's
/// monotonic clock instead. The default clock of the limiters when the
/// `quanta` feature is on.
///
/// ```
/// use palisade_rate_limit::{Clock, QuantaClock};
///
/// let clock = QuantaClock::new();
/// let a = clock.now_nanos();
/// assert!(clock.now_nanos() >= a);
/// ```
#[derive(Clone)]
pub struct QuantaClock {
    clock: quanta::Clock,
    origin: u64,
}

impl QuantaClock {
    /// A clock whose origin is now (the first one made calibrates the counter, about 10 ms).
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin = clock.raw();
        Self { clock, origin }
    }

    /// A new quanta clock as a [`SharedClock`].
    pub fn shared() -> SharedClock {
        Arc::new(Self::new())
    }
}

impl Default for QuantaClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for QuantaClock {
    #[inline]
    fn now_nanos(&self) -> u64 {
        self.clock.delta_as_nanos(self.origin, self.clock.raw())
    }
}

impl fmt::Debug for QuantaClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuantaClock").finish_non_exhaustive()
    }
}
