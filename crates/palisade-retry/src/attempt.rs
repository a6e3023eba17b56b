//! What an attempt knows about itself.

use std::time::Duration;

/// The attempt a closure is asked to make: its number and the time left.
///
/// The first attempt is number 1; [`resend_count`](Self::resend_count) is the
/// number of attempts before it, as OpenTelemetry's `http.request.resend_count`
/// counts. With a [`deadline`](crate::RetryBuilder::deadline), [`remaining`](Self::remaining)
/// is the time left when the attempt starts, so it can bound its own timeouts
/// (a gRPC deadline, a database statement timeout) to what is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    number: u32,
    remaining: Option<Duration>,
}

impl Attempt {
    pub(crate) fn new(number: u32, remaining: Option<Duration>) -> Self {
        Self { number, remaining }
    }

    /// 1 for the first attempt, 2 for the first retry, …
    pub fn number(&self) -> u32 {
        self.number
    }

    /// How many attempts were made before this one.
    pub fn resend_count(&self) -> u32 {
        self.number - 1
    }

    /// `true` for every attempt but the first.
    pub fn is_retry(&self) -> bool {
        self.number > 1
    }

    /// The time left before the retry's deadline, when it has one.
    pub fn remaining(&self) -> Option<Duration> {
        self.remaining
    }
}
