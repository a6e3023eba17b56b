//! The states of a breaker and their packing, with a generation, into one word.

use std::fmt;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    /// Calls pass; their outcomes fill the sliding window.
    Closed = 0,
    /// Calls are rejected until the open duration has passed.
    Open = 1,
    /// A fixed number of probe calls pass; their outcomes decide between closed and open.
    HalfOpen = 2,
    /// Manual: every call is rejected until another manual transition.
    ForcedOpen = 3,
    /// Manual: every call passes and nothing is recorded.
    Disabled = 4,
    /// Manual: every call passes, outcomes are recorded and reported, the breaker never opens.
    MetricsOnly = 5,
}

impl State {
    /// Every state, in gauge order.
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    pub(crate) const ALL: [State; 6] = [
        Self::Closed,
        Self::Open,
        Self::HalfOpen,
        Self::ForcedOpen,
        Self::Disabled,
        Self::MetricsOnly,
    ];

    /// The lower-case name used in telemetry (`"half_open"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
            Self::Disabled => "disabled",
            Self::MetricsOnly => "metrics_only",
        }
    }

    /// The state of the breaker that made `rejected`, or `None` when another
    /// pattern made it.
    pub fn rejected_by(rejected: &palisade_core::Rejected) -> Option<State> {
        if rejected.pattern() != palisade_core::Pattern::CircuitBreaker {
            return None;
        }
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == rejected.reason())
    }

    /// The value of the `palisade.circuit_breaker.state` gauge: 0 closed, 1 open, 2 half-open, 3+ manual.
    pub fn gauge_value(self) -> u64 {
        self as u64
    }

    fn from_tag(tag: u8) -> Self {
        match tag {
            0 => Self::Closed,
            1 => Self::Open,
            2 => Self::HalfOpen,
            3 => Self::ForcedOpen,
            4 => Self::Disabled,
            _ => Self::MetricsOnly,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state and its generation in one `u64`: every transition bumps the
/// generation, so an outcome admitted under an earlier one is recognised as stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) generation: u64,
    pub(crate) state: State,
}

impl Word {
    pub(crate) fn pack(self) -> u64 {
        (self.generation << 8) | self.state as u64
    }

    pub(crate) fn unpack(word: u64) -> Self {
        Self {
            generation: word >> 8,
            state: State::from_tag((word & 0xff) as u8),
        }
    }

    pub(crate) fn next(self, state: State) -> Self {
        Self {
            generation: (self.generation + 1) & (u64::MAX >> 8),
            state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips() {
        for state in State::ALL {
            let word = Word {
                generation: 123_456,
                state,
            };
            assert_eq!(Word::unpack(word.pack()), word);
        }
        let last = Word {
            generation: u64::MAX >> 8,
            state: State::Open,
        };
        assert_eq!(last.next(State::HalfOpen).generation, 0);
    }
}
