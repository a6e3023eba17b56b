//! Hedged calls: a second attempt of an idempotent call that has not answered in time.
//!
//! ```text
//!  attempt 1 ──────────────────────────── answers? ─▶ first final answer wins,
//!      │ no answer after `delay`                        the others are dropped
//!      ▼ (and the budget covers it)
//!  attempt 2 ──────────────── … up to max_attempts; a failed attempt starts the next at once
//! ```
//!
//! The delay is fixed, or a percentile of the first attempts' latencies over
//! the previous window ([`LatencyWindow`]): hedging the slowest 5 % costs
//! about 5 % more load and cuts the tail that a slow replica or a lost packet
//! makes. Every hedge is a withdrawal from the retry budget, so hedging
//! cannot double the load when everything is slow.

use std::fmt;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use palisade_core::{
    ConfigError, Listener, Listeners, Outcome, SharedClock, SharedSleeper, Sleep, TokioClock,
    TokioSleeper, duration_to_nanos,
};
use parking_lot::Mutex;

use crate::attempt::Attempt;
use crate::budget::{BudgetChoice, RetryBudget};
use crate::error::{RetryError, StopReason};
use crate::event::{Event, Listening};
use crate::policy::{DefaultPolicy, RetryPolicy};

/// When a hedged call sends its next attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum HedgeDelay {
    /// After this long without an answer.
    Fixed(Duration),
    /// After the given percentile of the first attempts' latencies, measured
    /// over the previous `window`; no hedge until a window has held
    /// `min_samples` answers.
    Percentile {
        /// In `(0, 1)`: 0.95 hedges the slowest 5 %.
        percentile: f64,
        /// How long latencies are gathered before they set the delay.
        window: Duration,
        /// Answers a window needs before its percentile is used.
        min_samples: u32,
    },
}

impl HedgeDelay {
    /// The given percentile of the last 10 s, once 20 answers were seen.
    pub fn percentile(percentile: f64) -> Self {
        Self::Percentile {
            percentile,
            window: Duration::from_secs(10),
            min_samples: 20,
        }
    }

    fn validate(self) -> Result<(), ConfigError> {
        match self {
            Self::Fixed(delay) if delay.is_zero() => Err(ConfigError::new(
                "delay",
                "a zero hedge delay sends every attempt at once; use a positive delay",
            )),
            Self::Fixed(_) => Ok(()),
            Self::Percentile {
                percentile,
                window,
                min_samples,
            } => {
                if !(percentile > 0.0 && percentile < 1.0) {
                    return Err(ConfigError::new(
                        "delay",
                        format!("percentile must be in (0, 1), got {percentile}"),
                    ));
                }
                if window.is_zero() {
                    return Err(ConfigError::new("delay", "the window must not be zero"));
                }
                if min_samples == 0 {
                    return Err(ConfigError::new("delay", "min_samples must be at least 1"));
                }
                Ok(())
            }
        }
    }
}

/// Sends further attempts of a call that has not answered after a delay and
/// takes the first final answer, dropping the others.
///
/// Only for idempotent calls: two attempts may both take effect. Cheap to
/// clone; clones share the latency window, the budget and the listeners.
///
/// ```
/// use palisade_retry::{Hedge, HedgeDelay, ManualClock};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = ManualClock::new();
/// let hedge = Hedge::builder()
///     .delay(HedgeDelay::Fixed(Duration::from_millis(50)))
///     .clock(clock.shared())
///     .sleeper(clock.sleeper())
///     .build()?;
/// // The first replica hangs; the hedge, sent after 50 ms, answers.
/// let call = hedge.call(|attempt| async move {
///     if attempt.number() == 1 {
///         std::future::pending::<()>().await;
///     }
///     Ok::<_, std::io::Error>(attempt.number())
/// });
/// let driver = async {
///     tokio::task::yield_now().await;
///     clock.advance(Duration::from_millis(50));
/// };
/// let (answer, ()) = tokio::join!(call, driver);
/// assert_eq!(answer?, 2);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Hedge {
    inner: Arc<Inner>,
}

struct Inner {
    name: Arc<str>,
    max_attempts: u32,
    delay: HedgeDelay,
    latencies: Option<LatencyWindow>,
    budget: Option<RetryBudget>,
    clock: SharedClock,
    sleeper: SharedSleeper,
    listeners: Listeners<Event>,
}

impl Hedge {
    /// A builder with the defaults on its methods.
    pub fn builder() -> HedgeBuilder {
        HedgeBuilder {
            name: Arc::from("default"),
            max_attempts: 2,
            delay: HedgeDelay::percentile(0.95),
            budget: BudgetChoice::Default,
            clock: None,
            sleeper: None,
            listening: Listening::new(),
        }
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The delay after which the next attempt would be sent now, if any:
    /// `None` while a percentile delay has too few samples.
    pub fn current_delay(&self) -> Option<Duration> {
        match (&self.inner.latencies, self.inner.delay) {
            (_, HedgeDelay::Fixed(d)) => Some(d),
            (Some(window), _) => window.delay(&*self.inner.clock),
            (None, _) => None,
        }
    }

    /// Runs `make_attempt`, and again after the delay while no attempt has
    /// answered, up to `max_attempts` at once; the first result that is not
    /// a failure (by [`DefaultPolicy`]) is returned and the other attempts are
    /// dropped. A failed attempt starts the next one at once. If every attempt
    /// fails, the last error is returned.
    pub async fn call<T, E, F, Fut>(&self, make_attempt: F) -> Result<T, RetryError<E>>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        self.call_with(&DefaultPolicy, make_attempt).await
    }

    /// Like [`call`](Self::call), with `policy` deciding which results are failures.
    pub async fn call_with<T, E, P, F, Fut>(
        &self,
        policy: &P,
        mut make_attempt: F,
    ) -> Result<T, RetryError<E>>
    where
        P: RetryPolicy<T, E> + ?Sized,
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let inner = &*self.inner;
        if let Some(budget) = &inner.budget {
            budget.deposit();
        }
        let started = inner.clock.now_nanos();
        let mut running = FuturesUnordered::new();
        let tag = |number: u32, fut: Fut| async move { (number, fut.await) };
        running.push(tag(1, make_attempt(Attempt::new(1, None))));
        let mut attempts = 1;
        let mut timer = inner.next_timer(attempts);
        let mut first_answered = false;
        loop {
            let next = poll_fn(|cx| {
                if let Poll::Ready(Some(done)) = running.poll_next_unpin(cx) {
                    return Poll::Ready(Some(done));
                }
                if let Some(sleep) = timer.as_mut()
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await;
            let Some((number, result)) = next else {
                // The timer fired: no answer yet, hedge if allowed.
                timer = None;
                if attempts < inner.max_attempts && inner.withdraw() {
                    attempts += 1;
                    inner.started_hedge(attempts, started);
                    running.push(tag(attempts, make_attempt(Attempt::new(attempts, None))));
                    timer = inner.next_timer(attempts);
                }
                continue;
            };
            if number == 1 {
                first_answered = true;
                inner.record(started);
            }
            let stop = match policy.classify(&result) {
                Outcome::Success => Some(StopReason::Succeeded),
                Outcome::Ignored => Some(StopReason::NotRetryable),
                Outcome::Failure => None,
            };
            if let Some(stop) = stop {
                inner.finish(attempts, stop, started, first_answered);
                return result.map_err(|error| RetryError::Failed {
                    error,
                    attempts,
                    stop,
                });
            }
            let last = result;
            // A failure makes room for the next attempt at once.
            if attempts < inner.max_attempts {
                if inner.withdraw() {
                    attempts += 1;
                    inner.started_hedge(attempts, started);
                    running.push(tag(attempts, make_attempt(Attempt::new(attempts, None))));
                    timer = inner.next_timer(attempts);
                    drop(last);
                    continue;
                }
                timer = None;
            }
            if running.is_empty() {
                let stop = if attempts < inner.max_attempts {
                    StopReason::BudgetExhausted
                } else {
                    StopReason::MaxAttempts
                };
                inner.finish(attempts, stop, started, first_answered);
                return last.map_err(|error| RetryError::Failed {
                    error,
                    attempts,
                    stop,
                });
            }
        }
    }
}

impl Inner {
    /// The timer for the next hedge, if one may follow attempt `attempts`.
    fn next_timer(&self, attempts: u32) -> Option<Sleep> {
        if attempts >= self.max_attempts {
            return None;
        }
        let delay = match (&self.latencies, self.delay) {
            (_, HedgeDelay::Fixed(d)) => d,
            (Some(window), _) => window.delay(&*self.clock)?,
            (None, _) => return None,
        };
        Some(self.sleeper.sleep(delay))
    }

    fn withdraw(&self) -> bool {
        self.budget.as_ref().is_none_or(RetryBudget::try_withdraw)
    }

    fn started_hedge(&self, attempt: u32, started: u64) {
        self.listeners.emit_with(|| Event::HedgeStarted {
            attempt,
            after: Duration::from_nanos(self.clock.now_nanos().saturating_sub(started)),
        });
    }

    /// The first attempt answered: its latency is a sample.
    fn record(&self, started: u64) {
        if let Some(window) = &self.latencies {
            let now = self.clock.now_nanos();
            window.record(now, now.saturating_sub(started));
        }
    }

    fn finish(&self, attempts: u32, stop: StopReason, started: u64, first_answered: bool) {
        // A first attempt that a hedge beat took at least this long: a sample
        // too, or the percentile would learn only from the fast answers.
        if !first_answered {
            self.record(started);
        }
        // Once per call, and only when the budget is why it failed (a hedge
        // the budget refused to a call that then succeeded is no failure).
        if stop == StopReason::BudgetExhausted {
            self.listeners
                .emit_with(|| Event::BudgetExhausted { attempts });
        }
        self.listeners
            .emit_with(|| Event::Finished { attempts, stop });
    }
}

impl fmt::Debug for Hedge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("name", &self.inner.name)
            .field("max_attempts", &self.inner.max_attempts)
            .field("delay", &self.inner.delay)
            .field("budget", &self.inner.budget)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Hedge`]; see [`Hedge::builder`].
#[must_use]
pub struct HedgeBuilder {
    name: Arc<str>,
    max_attempts: u32,
    delay: HedgeDelay,
    budget: BudgetChoice,
    clock: Option<SharedClock>,
    sleeper: Option<SharedSleeper>,
    pub(crate) listening: Listening,
}

impl HedgeBuilder {
    /// The instance name in telemetry and `tracing` events (default `"default"`; must not be empty).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The most attempts of one call, the first included (default 2: one hedge; at least 2).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// When the next attempt is sent (default the 95th percentile of the
    /// last 10 s, once 20 answers were seen).
    pub fn delay(mut self, delay: HedgeDelay) -> Self {
        self.delay = delay;
        self
    }

    /// Shares `budget` (default: a budget of its own with Finagle's defaults).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = BudgetChoice::Shared(budget);
        self
    }

    /// No budget: every slow call is hedged, even when every call is slow.
    pub fn no_budget(mut self) -> Self {
        self.budget = BudgetChoice::None;
        self
    }

    /// The clock latencies are measured on (default: tokio's clock, like the
    /// default sleeper).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// What the hedge delay waits on (default: tokio's timer).
    pub fn sleeper(mut self, sleeper: SharedSleeper) -> Self {
        self.sleeper = Some(sleeper);
        self
    }

    /// Adds a listener for this instance's [`Event`]s.
    pub fn listener(mut self, listener: impl Listener<Event>) -> Self {
        self.listening.push(listener);
        self
    }

    /// Checks every setting and builds the hedge.
    pub fn build(self) -> Result<Hedge, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if self.max_attempts < 2 {
            return Err(ConfigError::new(
                "max_attempts",
                format!(
                    "a hedge needs at least 2 attempts, got {}",
                    self.max_attempts
                ),
            ));
        }
        self.delay.validate()?;
        let clock = self.clock.unwrap_or_else(TokioClock::shared);
        let budget = self.budget.resolve(&clock)?;
        let latencies = match self.delay {
            HedgeDelay::Fixed(_) => None,
            HedgeDelay::Percentile {
                percentile,
                window,
                min_samples,
            } => Some(LatencyWindow::new(
                percentile,
                window,
                min_samples,
                clock.now_nanos(),
            )),
        };
        let listeners = self.listening.build(&self.name);
        Ok(Hedge {
            inner: Arc::new(Inner {
                name: self.name,
                max_attempts: self.max_attempts,
                delay: self.delay,
                latencies,
                budget,
                clock,
                sleeper: self.sleeper.unwrap_or_else(TokioSleeper::shared),
                listeners,
            }),
        })
    }
}

impl fmt::Debug for HedgeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeBuilder")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

/// Latencies of one window in log-linear buckets (8 per power of two, so a
/// percentile is read to within 12.5 %, rounded up); the delay in use is the
/// percentile of the window before.
struct LatencyWindow {
    percentile: f64,
    window_nanos: u64,
    min_samples: u32,
    /// The percentile of the previous window in nanoseconds, `u64::MAX` for none.
    delay_nanos: AtomicU64,
    current: Mutex<Window>,
}

struct Window {
    ends: u64,
    count: u32,
    buckets: Box<[u32; BUCKETS]>,
}

const BUCKETS: usize = 16 + 60 * 8;

impl LatencyWindow {
    fn new(percentile: f64, window: Duration, min_samples: u32, now: u64) -> Self {
        let window_nanos = duration_to_nanos(window);
        Self {
            percentile,
            window_nanos,
            min_samples,
            delay_nanos: AtomicU64::new(u64::MAX),
            current: Mutex::new(Window {
                ends: now.saturating_add(window_nanos),
                count: 0,
                buckets: Box::new([0; BUCKETS]),
            }),
        }
    }

    fn delay(&self, clock: &dyn palisade_core::Clock) -> Option<Duration> {
        self.rotate(clock.now_nanos());
        let nanos = self.delay_nanos.load(Ordering::Acquire);
        (nanos != u64::MAX).then(|| Duration::from_nanos(nanos))
    }

    fn record(&self, now: u64, latency: u64) {
        self.rotate(now);
        let mut window = self.current.lock();
        window.count = window.count.saturating_add(1);
        let bucket = &mut window.buckets[bucket_of(latency)];
        *bucket = bucket.saturating_add(1);
    }

    /// Ends the window if its time is up: its percentile becomes the delay.
    fn rotate(&self, now: u64) {
        let mut window = self.current.lock();
        if now < window.ends {
            return;
        }
        let delay = if window.count >= self.min_samples {
            let rank = (f64::from(window.count) * self.percentile).ceil().max(1.0) as u32;
            let mut seen = 0;
            let mut found = u64::MAX;
            for (index, count) in window.buckets.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    found = bucket_top(index);
                    break;
                }
            }
            found
        } else {
            u64::MAX
        };
        self.delay_nanos.store(delay, Ordering::Release);
        // A window with nothing in it leaves no estimate; an idle spell of
        // several windows starts again from the next one.
        let behind = (now - window.ends) / self.window_nanos;
        window.ends = window
            .ends
            .saturating_add((behind + 1).saturating_mul(self.window_nanos));
        window.count = 0;
        window.buckets.fill(0);
    }
}

fn bucket_of(nanos: u64) -> usize {
    if nanos < 16 {
        return nanos as usize;
    }
    let exponent = nanos.ilog2(); // ≥ 4
    let mantissa = (nanos >> (exponent - 3)) & 7;
    16 + (exponent as usize - 4) * 8 + mantissa as usize
}

/// The largest latency that falls in `index`.
fn bucket_top(index: usize) -> u64 {
    if index < 16 {
        return index as u64;
    }
    let exponent = (index - 16) / 8 + 4;
    let mantissa = ((index - 16) % 8) as u64;
    // In u128: the top bucket's bound is past u64::MAX.
    let top = u128::from(8 + mantissa + 1) << (exponent - 3);
    u64::try_from(top - 1).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_values_within_an_eighth() {
        for nanos in [0u64, 1, 15, 16, 17, 100, 1_000, 123_456_789, u64::MAX / 3] {
            let index = bucket_of(nanos);
            let top = bucket_top(index);
            assert!(top >= nanos, "{nanos} in {index} tops at {top}");
            assert!(top as f64 <= nanos as f64 * 1.125 + 1.0, "{nanos}: {top}");
            if index > 0 {
                assert!(bucket_top(index - 1) < nanos, "{nanos}");
            }
        }
        assert!(bucket_of(u64::MAX) < BUCKETS);
        assert_eq!(bucket_top(bucket_of(u64::MAX)), u64::MAX);
    }

    #[test]
    fn the_delay_is_the_percentile_of_the_window_before() {
        let w = LatencyWindow::new(0.9, Duration::from_secs(1), 10, 0);
        for i in 1..=10u64 {
            w.record(i, i * 1_000_000); // 1 ms … 10 ms
        }
        assert_eq!(w.delay_nanos.load(Ordering::Acquire), u64::MAX);
        w.rotate(1_000_000_000);
        // The 9th of 10 samples is 9 ms; its bucket tops at 9.4 ms.
        let delay = w.delay_nanos.load(Ordering::Acquire);
        assert!((9_000_000..=9_437_183).contains(&delay), "{delay}");
        // The next window had no samples: no estimate after it.
        w.rotate(2_000_000_000);
        assert_eq!(w.delay_nanos.load(Ordering::Acquire), u64::MAX);
    }
}
