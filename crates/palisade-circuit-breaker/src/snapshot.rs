//! A point-in-time view of a breaker.

use crate::State;
use crate::window::Tally;

/// The state of a breaker and the numbers in its window, read at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The state.
    pub state: State,
    /// Calls in the window (at most the window size for a count window).
    pub calls: u64,
    /// Failed calls in the window.
    pub failed_calls: u64,
    /// Slow calls in the window.
    pub slow_calls: u64,
    /// Failures in a row (counted only when the consecutive-failures rule is on).
    pub consecutive_failures: u32,
    /// `failed_calls / calls`, once the window holds the minimum number of calls.
    pub failure_rate: Option<f64>,
    /// `slow_calls / calls`, once the window holds the minimum number of calls.
    pub slow_call_rate: Option<f64>,
}

impl Snapshot {
    pub(crate) fn new(
        state: State,
        tally: Tally,
        consecutive_failures: u32,
        minimum_calls: u64,
    ) -> Self {
        let judged = tally.calls > 0 && tally.calls >= minimum_calls;
        let rate = |n: u64| judged.then(|| n as f64 / tally.calls as f64);
        Self {
            state,
            calls: tally.calls,
            failed_calls: tally.failures,
            slow_calls: tally.slow,
            consecutive_failures,
            failure_rate: rate(tally.failures),
            slow_call_rate: rate(tally.slow),
        }
    }
}
