//! Why a retried call ended, and what it returns when it failed.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// Why no further attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// The last attempt succeeded (its result was classified a success).
    Succeeded,
    /// The policy said the last result is not to be retried (classified ignored).
    NotRetryable,
    /// Every allowed attempt was made.
    MaxAttempts,
    /// The retry budget could not cover another attempt.
    BudgetExhausted,
    /// Another attempt would have started, or its delay ended, past the deadline.
    Deadline,
}

impl StopReason {
    /// The reason as one word, as in events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::NotRetryable => "not_retryable",
            Self::MaxAttempts => "max_attempts",
            Self::BudgetExhausted => "budget_exhausted",
            Self::Deadline => "deadline",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Succeeded => "it succeeded",
            Self::NotRetryable => "the error is not retried",
            Self::MaxAttempts => "no attempts were left",
            Self::BudgetExhausted => "the retry budget was spent",
            Self::Deadline => "the deadline would have passed",
        })
    }
}

/// The last attempt did not finish in time: its per-attempt timeout, or the
/// time left before the deadline, ran out. The attempt's future was dropped;
/// whether it had any effect is unknown to the retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("attempt {attempt} did not finish within {limit:?}")]
pub struct TimedOut {
    /// The attempt that timed out.
    pub attempt: u32,
    /// The time it was given.
    pub limit: Duration,
}

/// The error of [`Retry::call`](crate::Retry::call): the last attempt's own
/// error, or its timeout, with the number of attempts made and why no more were.
///
/// It displays as a summary (`gave up after 3 attempts: no attempts were
/// left`); the last error is its [`source`](Error::source), so reporters print
/// both and [`Rejected::find`](crate::Rejected::find) finds a rejection in it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryError<E> {
    /// The last attempt returned this error.
    Failed {
        /// The last attempt's error.
        error: E,
        /// How many attempts were made.
        attempts: u32,
        /// Why no further attempt was made.
        stop: StopReason,
    },
    /// The last attempt timed out.
    TimedOut {
        /// Which attempt, and the time it was given.
        timed_out: TimedOut,
        /// Why no further attempt was made.
        stop: StopReason,
    },
}

impl<E> RetryError<E> {
    /// How many attempts were made.
    pub fn attempts(&self) -> u32 {
        match self {
            Self::Failed { attempts, .. } => *attempts,
            Self::TimedOut { timed_out, .. } => timed_out.attempt,
        }
    }

    /// Why no further attempt was made.
    pub fn stop(&self) -> StopReason {
        match self {
            Self::Failed { stop, .. } | Self::TimedOut { stop, .. } => *stop,
        }
    }

    /// The last attempt's error, if it returned one.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Failed { error, .. } => Some(error),
            Self::TimedOut { .. } => None,
        }
    }

    /// The last attempt's error, if it returned one.
    pub fn inner(&self) -> Option<&E> {
        match self {
            Self::Failed { error, .. } => Some(error),
            Self::TimedOut { .. } => None,
        }
    }
}

impl<E> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attempts = self.attempts();
        let plural = if attempts == 1 { "" } else { "s" };
        match self {
            Self::Failed { stop, .. } => {
                write!(f, "gave up after {attempts} attempt{plural}: {stop}")
            }
            Self::TimedOut { stop, .. } => write!(
                f,
                "gave up after {attempts} attempt{plural}, the last timed out: {stop}"
            ),
        }
    }
}

impl<E: Error + 'static> Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Failed { error, .. } => Some(error),
            Self::TimedOut { timed_out, .. } => Some(timed_out),
        }
    }
}
