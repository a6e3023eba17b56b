//! The circuit breaker's state machine.
//!
//! ```text
//!            failure or slow-call rate reached,
//!            or N consecutive failures
//!   Closed ─────────────────────────────────────▶ Open
//!     ▲                                          │  ▲
//!     │ the probes succeed                       │  │ the probes fail, or do not
//!     │                     open duration passed │  │ finish within the maximum wait
//!     │                                          ▼  │
//!     └──────────────────────────────────────── HalfOpen
//! ```
//!
//! Manual states (`ForcedOpen`, `Disabled`, `MetricsOnly`) are entered and left
//! only by [`CircuitBreaker::transition_to`] and [`CircuitBreaker::reset`].
//!
//! The state and a generation number share one atomic word. The closed-state
//! path (admit, record) reads that word and writes the lock-free window; it
//! never takes a lock and never allocates. Every transition and the half-open
//! probe accounting happen under one mutex, and each bumps the generation, so
//! an outcome admitted under an earlier generation is recognised and ignored.
//! Open-to-half-open is lazy: the first call after the open duration makes it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::{Classifier, DefaultClassifier, Listeners, Outcome, SharedClock};
use parking_lot::{Mutex, MutexGuard};

use crate::config::{CircuitBreakerBuilder, Config};
use crate::error::{CallError, Rejected, rejection};
use crate::event::Event;
use crate::permit::{OwnedPermit, Permit};
use crate::snapshot::Snapshot;
use crate::state::{State, Word};
use crate::window::{CachePadded, Tally, Window};

/// A circuit breaker. Cheap to clone; clones share one state.
///
/// See the [crate docs](crate) for an example.
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// State and generation: read by every call, written only by transitions,
    /// so it gets a cache line of its own, away from the window's counters.
    word: CachePadded<AtomicU64>,
    /// When the open state may admit a probe (clock nanoseconds); meaningful while open.
    open_until: AtomicU64,
    window: Window,
    /// The minimum number of calls before a rate can open the breaker (capped to a count window's size).
    minimum_calls: u64,
    consecutive_failures: AtomicU32,
    transitions: Mutex<Transitions>,
    config: Config,
    /// Whether calls are timed (a slow-call rule or a listener needs durations).
    timed: bool,
    clock: SharedClock,
    listeners: Listeners<Event>,
}

/// What only transitions and probes touch, under the lock.
#[derive(Debug, Default)]
struct Transitions {
    /// Openings since the breaker was last closed; drives the open backoff.
    openings: u32,
    half_open_since: u64,
    probes: Probes,
}

#[derive(Debug, Default)]
struct Probes {
    admitted: u32,
    finished: u32,
    failures: u32,
    slow: u32,
}

/// What a permit carries back: the generation and state that admitted it, and when it started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    /// The packed state word that admitted it: two plain words keep the
    /// permit in registers (a byte-sized state field made copies stall).
    word: u64,
    /// Clock nanoseconds at admission, when the breaker times calls (else 0).
    started: u64,
}

impl Ticket {
    #[inline]
    fn new(word: Word, started: u64) -> Self {
        Self {
            word: word.pack(),
            started,
        }
    }

    #[inline]
    pub(crate) fn state(self) -> State {
        Word::unpack(self.word).state
    }

    #[inline]
    fn generation(self) -> u64 {
        Word::unpack(self.word).generation
    }
}

impl CircuitBreaker {
    /// A builder with the defaults: a count window of 100 calls, 100 minimum
    /// calls, failure rate 0.5, 10 half-open probes, 60 s open.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::default()
    }

    pub(crate) fn from_config(
        config: Config,
        clock: SharedClock,
        listeners: Listeners<Event>,
    ) -> Self {
        let timed = config.slow_call_duration.is_some() || !listeners.is_empty();
        Self {
            shared: Arc::new(Shared {
                word: CachePadded(AtomicU64::new(
                    Word {
                        generation: 0,
                        state: State::Closed,
                    }
                    .pack(),
                )),
                open_until: AtomicU64::new(0),
                window: Window::new(config.window),
                minimum_calls: u64::from(match config.window {
                    crate::SlidingWindow::Count { size } => config.minimum_calls.min(size),
                    crate::SlidingWindow::Time { .. } => config.minimum_calls,
                }),
                consecutive_failures: AtomicU32::new(0),
                transitions: Mutex::new(Transitions::default()),
                config,
                timed,
                clock,
                listeners,
            }),
        }
    }

    /// The name given to the builder.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// The current state. An open breaker whose open duration has passed still
    /// reads as open until a call arrives and moves it to half-open.
    pub fn state(&self) -> State {
        self.load().state
    }

    /// Asks for permission to make one call. Record its outcome on the permit;
    /// a permit dropped without an outcome gives its place back.
    ///
    /// # Errors
    /// [`Rejected`] when the breaker is open, forced open, or half-open with every probe taken.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        self.acquire_ticket()
            .map(|ticket| Permit::new(self, ticket))
    }

    /// Like [`try_acquire`](Self::try_acquire), with a permit that owns a
    /// handle to the breaker, so it can move into a `'static` task.
    ///
    /// # Errors
    /// As [`try_acquire`](Self::try_acquire).
    #[inline]
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, Rejected> {
        self.acquire_ticket()
            .map(|ticket| OwnedPermit::new(self.clone(), ticket))
    }

    /// Runs `call` if the breaker permits it and records the outcome (`Err` is a failure).
    ///
    /// If the returned future is dropped before `call` finishes, nothing is
    /// recorded and a half-open probe place is given back.
    ///
    /// # Errors
    /// [`CallError::Rejected`] if the call was not permitted (it did not run),
    /// [`CallError::Inner`] with the call's own error.
    pub async fn call<T, E, F, Fut>(&self, call: F) -> Result<T, CallError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with(&DefaultClassifier, call).await
    }

    /// Like [`CircuitBreaker::call`], with `classifier` deciding success, failure or ignored.
    ///
    /// # Errors
    /// As [`CircuitBreaker::call`].
    pub async fn call_with<T, E, C, F, Fut>(
        &self,
        classifier: &C,
        call: F,
    ) -> Result<T, CallError<E>>
    where
        C: Classifier<T, E>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire()?;
        let result = call().await;
        permit.record(classifier.classify(&result));
        result.map_err(CallError::Inner)
    }

    /// The state and the numbers of the current window.
    pub fn snapshot(&self) -> Snapshot {
        let s = &*self.shared;
        let now = if s.window.needs_time() {
            s.clock.now_nanos()
        } else {
            0
        };
        let tally = s.window.tally(now);
        Snapshot::new(
            self.state(),
            tally,
            s.consecutive_failures.load(Ordering::Acquire),
            s.minimum_calls,
        )
    }

    /// Moves the breaker to `to` now, whatever its state; a move to the current state does nothing.
    ///
    /// This is how the manual states are entered and left: `ForcedOpen` rejects
    /// everything, `Disabled` permits everything and records nothing,
    /// `MetricsOnly` records and reports but never opens. Entering `Closed` or
    /// `MetricsOnly` empties the window; entering `Open` starts a new open duration.
    pub fn transition_to(&self, to: State) {
        let now = self.shared.clock.now_nanos();
        let mut t = self.shared.transitions.lock();
        if self.load().state != to {
            self.transition(&mut t, to, now);
        }
    }

    /// Back to a fresh closed breaker: empty window, no openings counted.
    pub fn reset(&self) {
        let now = self.shared.clock.now_nanos();
        let mut t = self.shared.transitions.lock();
        if self.load().state == State::Closed {
            self.shared.window.reset();
            self.shared.consecutive_failures.store(0, Ordering::Release);
            t.openings = 0;
        } else {
            self.transition(&mut t, State::Closed, now);
        }
    }

    #[inline]
    fn load(&self) -> Word {
        Word::unpack(self.shared.word.load(Ordering::Acquire))
    }

    // ---- admission ---------------------------------------------------------

    #[inline]
    pub(crate) fn acquire_ticket(&self) -> Result<Ticket, Rejected> {
        let s = &*self.shared;
        let word = self.load();
        match word.state {
            State::Closed | State::MetricsOnly | State::Disabled => {
                Ok(Ticket::new(word, self.start_time()))
            }
            State::Open => {
                let now = s.clock.now_nanos();
                let until = s.open_until.load(Ordering::Acquire);
                if now < until {
                    Err(self.reject(State::Open, Some(until - now)))
                } else {
                    self.acquire_probe(now)
                }
            }
            State::HalfOpen => self.acquire_probe(s.clock.now_nanos()),
            State::ForcedOpen => Err(self.reject(State::ForcedOpen, None)),
        }
    }

    /// Whether a call now would be admitted, without taking anything and
    /// without counting a rejection: `Err` with the wait until a probe is
    /// due, when the breaker knows it. For readiness checks (`poll_ready`).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn admits(&self) -> Result<(), Option<Duration>> {
        let s = &*self.shared;
        match self.load().state {
            State::Closed | State::MetricsOnly | State::Disabled => Ok(()),
            State::Open => {
                let now = s.clock.now_nanos();
                let until = s.open_until.load(Ordering::Acquire);
                if now < until {
                    Err(Some(Duration::from_nanos(until - now)))
                } else {
                    Ok(()) // the next call moves it to half-open and probes
                }
            }
            State::HalfOpen => {
                let t = s.transitions.lock();
                if t.probes.admitted < s.config.half_open_probes {
                    Ok(())
                } else {
                    Err(None)
                }
            }
            State::ForcedOpen => Err(None),
        }
    }

    /// The slow path: open-to-half-open and probe admission, under the lock.
    #[cold]
    fn acquire_probe(&self, now: u64) -> Result<Ticket, Rejected> {
        let s = &*self.shared;
        let mut t = s.transitions.lock();
        let mut word = self.load();
        if word.state == State::Open {
            let until = s.open_until.load(Ordering::Acquire);
            if now < until {
                drop(t);
                return Err(self.reject(State::Open, Some(until - now)));
            }
            word = self.transition(&mut t, State::HalfOpen, now);
        }
        if word.state != State::HalfOpen {
            // Another thread moved the breaker while we waited for the lock.
            drop(t);
            return self.acquire_ticket();
        }
        if self.half_open_expired(&t, now) {
            self.transition(&mut t, State::Open, now);
            let until = s.open_until.load(Ordering::Acquire);
            drop(t);
            return Err(self.reject(State::Open, Some(until.saturating_sub(now))));
        }
        if t.probes.admitted >= s.config.half_open_probes {
            drop(t);
            return Err(self.reject(State::HalfOpen, None));
        }
        t.probes.admitted += 1;
        Ok(Ticket::new(word, self.start_time()))
    }

    #[inline]
    fn reject(&self, state: State, retry_after_nanos: Option<u64>) -> Rejected {
        self.shared.listeners.emit_with(|| Event::CallRejected {
            state,
            retry_after: retry_after_nanos.map(Duration::from_nanos),
        });
        rejection(state, retry_after_nanos)
    }

    #[inline]
    fn start_time(&self) -> u64 {
        if self.shared.timed {
            self.shared.clock.now_nanos()
        } else {
            0
        }
    }

    // ---- outcomes ------------------------------------------------------------

    /// Records the outcome of a permitted call.
    #[inline]
    pub(crate) fn complete(&self, ticket: Ticket, outcome: Outcome) {
        let s = &*self.shared;
        // The common case reads no clock and builds no event.
        if s.timed || s.window.needs_time() || ticket.state() == State::HalfOpen {
            self.complete_observed(ticket, outcome);
        } else if matches!(ticket.state(), State::Closed | State::MetricsOnly) {
            self.record_in_window(ticket, outcome, false, 0);
        }
    }

    /// Records an outcome that needs the time: for a slow-call rule, a time
    /// window, a listener, or a probe's maximum wait.
    fn complete_observed(&self, ticket: Ticket, outcome: Outcome) {
        let s = &*self.shared;
        let now = s.clock.now_nanos();
        let duration = s.timed.then(|| now.saturating_sub(ticket.started));
        let slow =
            matches!((s.config.slow_call_duration, duration), (Some(limit), Some(d)) if d >= limit);
        s.listeners.emit_with(|| Event::CallFinished {
            outcome,
            slow,
            duration: duration.map(Duration::from_nanos),
            state: ticket.state(),
        });
        match ticket.state() {
            State::Closed | State::MetricsOnly => self.record_in_window(ticket, outcome, slow, now),
            State::HalfOpen => self.record_probe(ticket, outcome, slow, now),
            State::Open | State::ForcedOpen | State::Disabled => {}
        }
    }

    /// A permit was dropped without an outcome: a probe gives its place back.
    pub(crate) fn release(&self, ticket: Ticket) {
        if ticket.state() == State::HalfOpen {
            let mut t = self.shared.transitions.lock();
            if self.is_at(ticket.generation(), State::HalfOpen) {
                t.probes.admitted -= 1;
            }
        }
    }

    #[inline]
    fn record_in_window(&self, ticket: Ticket, outcome: Outcome, slow: bool, now: u64) {
        let s = &*self.shared;
        if outcome == Outcome::Ignored || self.load().generation != ticket.generation() {
            return;
        }
        let failure = outcome == Outcome::Failure;
        let judge = s.window.record(failure, slow, now, s.minimum_calls);
        let streak_tripped = match s.config.consecutive_failures {
            Some(limit) if failure => {
                s.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1 >= limit
            }
            Some(_) => {
                if s.consecutive_failures.load(Ordering::Relaxed) != 0 {
                    s.consecutive_failures.store(0, Ordering::Release);
                }
                false
            }
            None => false,
        };
        let rates_tripped = judge.is_some_and(|tally| self.rates_trip(tally));
        if ticket.state() == State::Closed && (streak_tripped || rates_tripped) {
            self.trip(ticket.generation());
        }
    }

    fn rates_trip(&self, tally: Tally) -> bool {
        let c = &self.shared.config;
        if tally.calls < self.shared.minimum_calls {
            return false;
        }
        let calls = tally.calls as f64;
        tally.failures as f64 / calls >= c.failure_rate_threshold
            || (c.slow_call_duration.is_some()
                && tally.slow as f64 / calls >= c.slow_call_rate_threshold)
    }

    #[cold]
    fn trip(&self, generation: u64) {
        // The hot path may not have read the clock; the open duration starts now.
        let now = self.shared.clock.now_nanos();
        let mut t = self.shared.transitions.lock();
        if self.is_at(generation, State::Closed) {
            self.transition(&mut t, State::Open, now);
        }
    }

    fn record_probe(&self, ticket: Ticket, outcome: Outcome, slow: bool, now: u64) {
        let config = &self.shared.config;
        let mut t = self.shared.transitions.lock();
        if !self.is_at(ticket.generation(), State::HalfOpen) {
            return;
        }
        if self.half_open_expired(&t, now) {
            self.transition(&mut t, State::Open, now);
            return;
        }
        let probes = &mut t.probes;
        match outcome {
            Outcome::Ignored => probes.admitted -= 1,
            Outcome::Success | Outcome::Failure => {
                probes.finished += 1;
                probes.failures += u32::from(outcome == Outcome::Failure);
                probes.slow += u32::from(slow);
                if probes.finished == config.half_open_probes {
                    let judged = f64::from(config.half_open_probes);
                    let reopen = f64::from(probes.failures) / judged
                        >= config.failure_rate_threshold
                        || (config.slow_call_duration.is_some()
                            && f64::from(probes.slow) / judged >= config.slow_call_rate_threshold);
                    let to = if reopen { State::Open } else { State::Closed };
                    self.transition(&mut t, to, now);
                }
            }
        }
    }

    /// Whether the breaker is still in `state` at `generation`.
    #[inline]
    fn is_at(&self, generation: u64, state: State) -> bool {
        self.load() == (Word { generation, state })
    }

    fn half_open_expired(&self, t: &Transitions, now: u64) -> bool {
        self.shared
            .config
            .max_wait_in_half_open
            .is_some_and(|max| now.saturating_sub(t.half_open_since) >= max)
    }

    // ---- transitions -----------------------------------------------------------

    /// Enters `to` with a new generation and emits the transition. Caller holds the lock.
    fn transition(&self, t: &mut MutexGuard<'_, Transitions>, to: State, now: u64) -> Word {
        let s = &*self.shared;
        let from = self.load();
        match to {
            State::Open => {
                t.openings = t.openings.saturating_add(1);
                let wait =
                    palisade_core::duration_to_nanos(s.config.open_backoff.delay(t.openings));
                s.open_until
                    .store(now.saturating_add(wait), Ordering::Release);
            }
            State::HalfOpen => {
                t.probes = Probes::default();
                t.half_open_since = now;
            }
            State::Closed | State::MetricsOnly => {
                s.window.reset();
                s.consecutive_failures.store(0, Ordering::Release);
                if to == State::Closed {
                    t.openings = 0;
                }
            }
            State::ForcedOpen | State::Disabled => {}
        }
        let next = from.next(to);
        s.word.store(next.pack(), Ordering::Release);
        s.listeners.emit_with(|| Event::StateTransition {
            from: from.state,
            to,
        });
        next
    }
}
