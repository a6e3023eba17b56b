//! Window counters: at most `limit` requests per fixed window of time, or per
//! sliding window estimated from two fixed ones.
//!
//! ```text
//!   window k = [k·W, (k+1)·W) on the limiter's clock; e = now − k·W
//!   fixed:    admit n if  curr + n ≤ limit                    (curr: this window's count)
//!   sliding:  admit n if  prev·(W − e)/W + curr + n ≤ limit   (prev: the last window's)
//! ```
//!
//! The sliding estimate is the usual two-bucket one (as nginx and Cloudflare
//! count): the last window's requests are taken as spread evenly over it, so
//! the share of them still inside the sliding window shrinks linearly. It is
//! computed exactly, in integers. For the GCRA's even spacing and fair waiting
//! use [`RateLimiter`](crate::RateLimiter); these are for contracts written as
//! "N per minute".
//!
//! **Concurrency.** The state (window index and two counts) sits behind one
//! short `parking_lot` mutex: a check is a lock, a few integer operations and
//! an unlock, with no allocation. Listeners run after the unlock.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::config::{check_nonzero, check_positive_duration};
use palisade_core::{ConfigError, Listeners, duration_to_nanos};
use parking_lot::Mutex;

use crate::clock::LimiterClock;
use crate::config::Common;
use crate::decision::{Decision, Denied, EXHAUSTED, Error};
use crate::event::Event;

/// Which window a [`WindowLimiter`] counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WindowKind {
    /// Calendar-like windows `[k·W, (k+1)·W)`: the count starts again at each
    /// boundary (so up to twice the limit can pass around one).
    Fixed,
    /// The last `W`, estimated from this window's count and the last one's,
    /// weighted by how much of it is still inside.
    Sliding,
}

/// A window counter: at most `limit` requests per window.
///
/// ```
/// use palisade_rate_limit::{ManualClock, WindowLimiter};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = WindowLimiter::builder()
///     .fixed(100, Duration::from_secs(60)) // "100 requests per minute"
///     .clock(clock.shared())
///     .build()?;
/// assert_eq!(limiter.check_n(100)?.remaining(), 0);
/// clock.advance(Duration::from_secs(45));
/// let denied = limiter.check().unwrap_err();
/// assert_eq!(denied.denied().unwrap().retry_after(), Duration::from_secs(15));
/// clock.advance(Duration::from_secs(15)); // a new window
/// assert_eq!(limiter.check()?.remaining(), 99);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct WindowLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    kind: WindowKind,
    limit: u32,
    /// The window's length, in nanoseconds.
    window: u64,
    state: Mutex<State>,
    name: Arc<str>,
    clock: LimiterClock,
    listeners: Listeners<Event>,
}

#[derive(Debug, Clone, Copy, Default)]
struct State {
    /// The index of the current window.
    index: u64,
    /// Requests admitted in the window before it.
    prev: u64,
    /// Requests admitted in it.
    curr: u64,
}

impl State {
    /// Moves the counts on to the window holding `now`.
    fn roll(&mut self, index: u64) {
        if index == self.index {
            return;
        }
        self.prev = if index == self.index + 1 {
            self.curr
        } else {
            0
        };
        self.curr = 0;
        self.index = index;
    }
}

impl WindowLimiter {
    /// A builder; `fixed(…)` or `sliding(…)` is required.
    pub fn builder() -> WindowLimiterBuilder {
        WindowLimiterBuilder {
            common: Common::new(),
            kind: None,
        }
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Fixed or sliding.
    pub fn kind(&self) -> WindowKind {
        self.inner.kind
    }

    /// The most requests per window.
    pub fn limit(&self) -> u32 {
        self.inner.limit
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.inner.window)
    }

    /// Admits one request now, or refuses it.
    ///
    /// # Errors
    /// [`Error::Denied`] (reason [`EXHAUSTED`]) when the window is full.
    pub fn check(&self) -> Result<Decision, Error> {
        self.check_n(1)
    }

    /// Admits `n` requests at once, or none; `n = 0` is admitted and counts nothing.
    ///
    /// # Errors
    /// [`Error::InsufficientCapacity`] when `n` is over the limit,
    /// [`Error::Denied`] when the window has no room for `n` now: its
    /// `retry_after` is the earliest time it will.
    pub fn check_n(&self, n: u32) -> Result<Decision, Error> {
        let limit = self.inner.limit;
        if n > limit {
            return Err(Error::InsufficientCapacity {
                requested: n,
                burst: limit,
            });
        }
        let (result, decision) = {
            let mut state = self.inner.state.lock();
            // Read under the lock, and never behind the window already
            // entered: a reading taken before another thread moved the
            // window on must not take it back and wipe its counts.
            let (index, e) = self.position(&state);
            state.roll(index);
            let fits = self.room(&state, e) >= u64::from(n);
            if fits {
                state.curr += u64::from(n);
            }
            let decision = self.decide(&state, e);
            let result = if fits {
                Ok(())
            } else {
                Err(self.wait_for(&state, e, n))
            };
            (result, decision)
        };
        match result {
            Ok(()) => {
                if n > 0 {
                    self.inner.listeners.emit_with(|| Event::Acquired {
                        permits: n,
                        waited: None,
                    });
                }
                Ok(decision)
            }
            Err(retry_after) => {
                self.inner.listeners.emit_with(|| Event::Rejected {
                    permits: n,
                    reason: EXHAUSTED,
                    retry_after: Duration::from_nanos(retry_after),
                });
                Err(Error::Denied(Denied::new(EXHAUSTED, retry_after, decision)))
            }
        }
    }

    /// The window's state now, counting nothing.
    pub fn snapshot(&self) -> Decision {
        let mut state = *self.inner.state.lock();
        let (index, e) = self.position(&state);
        state.roll(index);
        self.decide(&state, e)
    }

    /// The window the clock is in and how far into it, read with the state
    /// locked, and never behind the window already entered.
    fn position(&self, state: &State) -> (u64, u64) {
        let now = self.inner.clock.now();
        let w = self.inner.window;
        if now / w < state.index {
            (state.index, 0)
        } else {
            (now / w, now % w)
        }
    }

    /// How many more requests fit now, `e` ns into the current window.
    fn room(&self, state: &State, e: u64) -> u64 {
        let limit = u64::from(self.inner.limit);
        match self.inner.kind {
            WindowKind::Fixed => limit.saturating_sub(state.curr),
            WindowKind::Sliding => {
                let w = u128::from(self.inner.window);
                let carried = u128::from(state.prev) * (w - u128::from(e));
                let avail = (u128::from(limit) * w).saturating_sub(carried);
                ((avail / w) as u64).saturating_sub(state.curr)
            }
        }
    }

    fn decide(&self, state: &State, e: u64) -> Decision {
        let w = self.inner.window;
        let reset = match self.inner.kind {
            WindowKind::Fixed if state.curr > 0 => w - e,
            WindowKind::Sliding if state.curr > 0 => w.saturating_mul(2).saturating_sub(e),
            WindowKind::Sliding if state.prev > 0 => w - e,
            _ => 0,
        };
        let remaining = self.room(state, e).min(u64::from(self.inner.limit)) as u32;
        Decision::window(self.inner.limit, remaining, reset)
    }

    /// Nanoseconds until `n` requests fit, `e` ns into the current window.
    fn wait_for(&self, state: &State, e: u64, n: u32) -> u64 {
        let w = self.inner.window;
        let (limit, n) = (u64::from(self.inner.limit), u64::from(n));
        match self.inner.kind {
            WindowKind::Fixed => w - e,
            WindowKind::Sliding => {
                // Later in this window, as the last window's share shrinks:
                // need prev·(W − e′) ≤ (limit − curr − n)·W.
                if state.curr + n <= limit && state.prev > 0 {
                    let spare = u128::from(limit - state.curr - n) * u128::from(w);
                    let m = (spare / u128::from(state.prev)) as u64;
                    if m > 0 {
                        // e′ = W − m > e, since n does not fit at e.
                        return (w - m) - e;
                    }
                }
                // In the next window, where this one's count is the last one's.
                let to_next = w - e;
                if state.curr == 0 {
                    return to_next;
                }
                let spare = u128::from(limit - n) * u128::from(w);
                let m = (spare / u128::from(state.curr)).min(u128::from(w)) as u64;
                to_next + (w - m)
            }
        }
    }
}

impl fmt::Debug for WindowLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowLimiter")
            .field("name", &self.inner.name)
            .field("kind", &self.inner.kind)
            .field("limit", &self.inner.limit)
            .field("window", &self.window())
            .finish_non_exhaustive()
    }
}

/// Builds a [`WindowLimiter`]: `fixed(…)` or `sliding(…)` is required.
///
/// ```
/// use palisade_rate_limit::{WindowKind, WindowLimiter};
/// use std::time::Duration;
///
/// let limiter = WindowLimiter::builder()
///     .name("partner-api")
///     .sliding(1_000, Duration::from_secs(3600))
///     .build()?;
/// assert_eq!(limiter.kind(), WindowKind::Sliding);
/// let err = WindowLimiter::builder().fixed(0, Duration::from_secs(1)).build().unwrap_err();
/// assert_eq!(err.field(), "fixed");
/// # Ok::<(), palisade_rate_limit::ConfigError>(())
/// ```
#[must_use]
pub struct WindowLimiterBuilder {
    pub(crate) common: Common,
    kind: Option<(WindowKind, u32, Duration)>,
}

impl WindowLimiterBuilder {
    crate::config::common_methods!();

    /// At most `limit` requests in each fixed window of `window`.
    pub fn fixed(mut self, limit: u32, window: Duration) -> Self {
        self.kind = Some((WindowKind::Fixed, limit, window));
        self
    }

    /// At most `limit` requests in any `window`, estimated from two fixed windows.
    pub fn sliding(mut self, limit: u32, window: Duration) -> Self {
        self.kind = Some((WindowKind::Sliding, limit, window));
        self
    }

    /// Validates the settings and builds the limiter.
    ///
    /// # Errors
    /// A [`ConfigError`] named `fixed` or `sliding` (the method that set it):
    /// neither called, a zero limit, a zero window or one over 2^62 ns (about
    /// 146 years, so that two windows still count in 64 bits); an empty `name`.
    pub fn build(self) -> Result<WindowLimiter, ConfigError> {
        let (kind, limit, window) = self
            .kind
            .ok_or_else(|| ConfigError::new("fixed", "must be set: fixed(…) or sliding(…)"))?;
        let field = match kind {
            WindowKind::Fixed => "fixed",
            WindowKind::Sliding => "sliding",
        };
        check_nonzero(field, u64::from(limit))?;
        check_positive_duration(field, window)?;
        if duration_to_nanos(window) > 1 << 62 {
            return Err(ConfigError::new(
                field,
                format!("the window must be at most 2^62 ns (about 146 years), got {window:?}"),
            ));
        }
        let (name, clock, listeners) = self.common.finish()?;
        Ok(WindowLimiter {
            inner: Arc::new(Inner {
                kind,
                limit,
                window: duration_to_nanos(window),
                state: Mutex::new(State::default()),
                name,
                clock,
                listeners,
            }),
        })
    }
}
