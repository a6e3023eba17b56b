//! The clock a limiter reads: the default one without a virtual call.

#[cfg(feature = "quanta")]
use palisade_core::Clock;
use palisade_core::SharedClock;

/// The builder's clock, or the default. With the `quanta` feature the
/// default is read directly (inlined), not through `Arc<dyn Clock>`: the
/// clock read is most of a check.
#[derive(Debug, Clone)]
pub(crate) enum LimiterClock {
    #[cfg(feature = "quanta")]
    Quanta(crate::QuantaClock),
    Shared(SharedClock),
}

impl Default for LimiterClock {
    fn default() -> Self {
        #[cfg(feature = "quanta")]
        return Self::Quanta(crate::QuantaClock::new());
        #[cfg(not(feature = "quanta"))]
        Self::Shared(palisade_core::SystemClock::shared())
    }
}

impl LimiterClock {
    #[allow(clippy::inline_always)] // fewer instructions per check, counted by callgrind
    #[inline(always)]
    pub(crate) fn now(&self) -> u64 {
        match self {
            #[cfg(feature = "quanta")]
            Self::Quanta(c) => c.now_nanos(),
            Self::Shared(c) => c.now_nanos(),
        }
    }
}
