//! `SagaBuilder`: the definition (its steps) and the runner's settings.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::config::check_positive_duration;
use palisade_core::{
    Backoff, ConfigError, Jitter, Listener, Listeners, SharedClock, SharedSleeper, TokioSleeper,
};
use palisade_event_store::EventStore;

use crate::clock::WallClock;
use crate::event::Event;
use crate::saga::{Inner, Saga, SagaState};
use crate::step::{Body, Step, StepKind};

/// Builds a [`Saga`]: its steps in order, then the runner's settings.
pub struct SagaBuilder<S> {
    name: Arc<str>,
    store: Arc<dyn EventStore>,
    steps: Vec<Step<S>>,
    timeout: Option<Duration>,
    owner: Option<Arc<str>>,
    lease: Duration,
    recovery_backoff: Backoff,
    recovery_attempts: Option<u32>,
    clock: SharedClock,
    sleeper: SharedSleeper,
    pub(crate) listeners: Listeners<Event>,
    #[cfg(feature = "tracing")]
    pub(crate) tracing: bool,
    #[cfg(feature = "otel")]
    pub(crate) otel: crate::telemetry::OtelConfig,
    _state: PhantomData<fn() -> S>,
}

impl<S: SagaState> SagaBuilder<S> {
    pub(crate) fn new(name: impl Into<Arc<str>>, store: impl EventStore) -> Self {
        Self {
            name: name.into(),
            store: Arc::new(store),
            steps: Vec::new(),
            timeout: None,
            owner: None,
            lease: Duration::from_secs(30),
            recovery_backoff: Backoff::exponential(Duration::from_millis(100))
                .max(Duration::from_secs(30))
                .jitter(Jitter::Full),
            recovery_attempts: None,
            clock: WallClock::shared(),
            sleeper: TokioSleeper::shared(),
            listeners: Listeners::new(),
            #[cfg(feature = "tracing")]
            tracing: false,
            #[cfg(feature = "otel")]
            otel: crate::telemetry::OtelConfig::default(),
            _state: PhantomData,
        }
    }

    /// Appends a step. Order: compensatable steps, at most one pivot, then
    /// retriable steps (checked by [`build`](Self::build)).
    #[must_use]
    pub fn step(mut self, step: Step<S>) -> Self {
        self.steps.push(step);
        self
    }

    /// The whole saga's deadline, from its start, written to its log so it
    /// holds across crashes. When it passes before the pivot completed, the
    /// running step's attempt is dropped and the saga compensates; after the
    /// pivot it no longer applies (the saga can only go forward). Default: none.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// This runner's name in the claims it writes. Default: a random UUID,
    /// so each process is a runner of its own. Two runners must never share one.
    #[must_use]
    pub fn owner(mut self, owner: impl Into<Arc<str>>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// How long a claim lasts: a runner renews it before each step while less
    /// than half is left; a saga whose claim ran out is resumed by
    /// [`Saga::recover`]. It should be much longer than any step takes.
    /// Default: 30 s.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The wait before a failed compensation (or a step after the pivot that
    /// ran out of attempts) is tried again: `backoff.delay(n)` after the `n`th
    /// failure. Default: exponential from 100 ms, at most 30 s, full jitter.
    #[must_use]
    pub fn recovery_backoff(mut self, backoff: Backoff) -> Self {
        self.recovery_backoff = backoff;
        self
    }

    /// How many times a compensation, or a round of a step after the pivot,
    /// is tried before the saga ends [`Outcome::Failed`](crate::Outcome::Failed)
    /// for an operator. Default: no limit (it is retried until it succeeds).
    #[must_use]
    pub fn recovery_attempts(mut self, attempts: u32) -> Self {
        self.recovery_attempts = Some(attempts);
        self
    }

    /// The clock deadlines and claims are read on. It must mean the same in
    /// every process that shares the store. Default: [`WallClock`].
    #[must_use]
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// What timeouts and the recovery backoff wait on. Default: tokio's timer.
    #[must_use]
    pub fn sleeper(mut self, sleeper: SharedSleeper) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// Adds a listener for the runner's events.
    #[must_use]
    pub fn listener(mut self, listener: impl Listener<Event>) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Checks every setting and the order of the steps, and builds the saga.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the method: `name` (empty, or a character
    /// outside `A-Z a-z 0-9 - _ . :`), `step` (no step, a duplicate or empty
    /// step name, a second pivot, a pivot or retriable step with a
    /// compensation, a compensatable step after the pivot, a retriable step
    /// without a pivot before it), `timeout` (zero, also a step's), `owner`
    /// (empty), `lease` (zero), `recovery_backoff`, `recovery_attempts` (zero).
    pub fn build(self) -> Result<Saga<S>, ConfigError> {
        check_name(&self.name)?;
        if self.steps.is_empty() {
            return Err(ConfigError::new("step", "a saga needs at least one step"));
        }
        let mut pivot = None;
        for (i, step) in self.steps.iter().enumerate() {
            let name = &step.name;
            if name.is_empty() {
                return Err(ConfigError::new(
                    "step",
                    format!("step {i} has an empty name"),
                ));
            }
            if self.steps[..i].iter().any(|s| s.name == *name) {
                return Err(ConfigError::new(
                    "step",
                    format!("two steps are named `{name}`"),
                ));
            }
            if let Some(t) = step.timeout {
                check_positive_duration("timeout", t)?;
            }
            if let Body::Parallel { branches, .. } = &step.body {
                check_parallel(step, branches)?;
            }
            if matches!(step.body, Body::Await { .. }) && step.retry.is_some() {
                return Err(ConfigError::new(
                    "step",
                    format!("`{name}` waits for an event: it has no attempts to retry"),
                ));
            }
            match step.kind {
                StepKind::Compensatable if pivot.is_some() => {
                    return Err(ConfigError::new(
                        "step",
                        format!(
                            "`{name}` is compensatable but comes after the pivot; make it retriable"
                        ),
                    ));
                }
                StepKind::Compensatable => {}
                StepKind::Pivot | StepKind::Retriable if step.compensation.is_some() => {
                    return Err(ConfigError::new(
                        "step",
                        format!(
                            "`{name}` cannot be undone (a pivot or after it) but has a compensation"
                        ),
                    ));
                }
                StepKind::Pivot if pivot.is_some() => {
                    return Err(ConfigError::new(
                        "step",
                        format!("`{name}` is a second pivot"),
                    ));
                }
                StepKind::Pivot => pivot = Some(i),
                StepKind::Retriable if pivot.is_none() => {
                    return Err(ConfigError::new(
                        "step",
                        format!("`{name}` is retriable but no pivot comes before it"),
                    ));
                }
                StepKind::Retriable => {}
            }
        }
        if let Some(t) = self.timeout {
            check_positive_duration("timeout", t)?;
        }
        let owner = self
            .owner
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string().into());
        if owner.is_empty() {
            return Err(ConfigError::new("owner", "must not be empty"));
        }
        check_positive_duration("lease", self.lease)?;
        self.recovery_backoff.validate("recovery_backoff")?;
        if self.recovery_attempts == Some(0) {
            return Err(ConfigError::new("recovery_attempts", "must be at least 1"));
        }
        #[allow(unused_mut)]
        let mut listeners = self.listeners;
        #[cfg(feature = "tracing")]
        if self.tracing {
            listeners.push(Arc::new(crate::tracing_listener::TracingListener));
        }
        #[allow(unused_mut)]
        let mut traceparent: Option<fn() -> Option<String>> = None;
        #[cfg(feature = "otel")]
        if self.otel.tracer.is_some() {
            traceparent = Some(crate::telemetry::current_traceparent);
        }
        #[cfg(feature = "otel")]
        if self.otel.meter.is_some() || self.otel.tracer.is_some() {
            listeners.push(Arc::new(crate::telemetry::OtelListener::new(
                self.otel, &self.name,
            )));
        }
        let one_attempt = palisade_retry::Retry::builder()
            .max_attempts(1)
            .no_budget()
            .build()?;
        Ok(Saga::from_inner(Inner {
            prefix: format!("saga-{}/", self.name),
            name: self.name,
            store: self.store,
            steps: self.steps,
            pivot,
            timeout: self.timeout,
            owner,
            lease: self.lease,
            recovery_backoff: self.recovery_backoff,
            recovery_attempts: self.recovery_attempts,
            clock: self.clock,
            sleeper: self.sleeper,
            listeners,
            one_attempt,
            scan: parking_lot::Mutex::new(crate::saga::Scan::default()),
            traceparent,
            #[cfg(feature = "tracing")]
            tracing: self.tracing,
        }))
    }
}

fn check_parallel<S>(step: &Step<S>, branches: &[Step<S>]) -> Result<(), ConfigError> {
    let name = &step.name;
    let bad = |why: String| {
        Err(ConfigError::new(
            "step",
            format!("parallel step `{name}`: {why}"),
        ))
    };
    if branches.is_empty() {
        return bad("has no branch".into());
    }
    if step.kind != StepKind::Compensatable {
        return bad("must come before the pivot (it is undone branch by branch)".into());
    }
    if step.compensation.is_some() || step.retry.is_some() {
        return bad("its branches have the compensations and retries, not the step".into());
    }
    for (i, b) in branches.iter().enumerate() {
        if b.name.is_empty() || branches[..i].iter().any(|o| o.name == b.name) {
            return bad(format!("branch {i} has an empty or repeated name"));
        }
        if b.kind != StepKind::Compensatable || !matches!(b.body, Body::Action(_)) {
            return bad(format!("branch `{}` must be a plain step", b.name));
        }
        if b.timeout.is_some() {
            return bad(format!(
                "branch `{}` has a timeout; set it on the parallel step",
                b.name
            ));
        }
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::new("name", "must not be empty"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:".contains(*c)))
    {
        return Err(ConfigError::new(
            "name",
            format!("has the character {c:?}; allowed are A-Z a-z 0-9 - _ . :"),
        ));
    }
    if name.len() > 100 {
        return Err(ConfigError::new("name", "is longer than 100 bytes"));
    }
    Ok(())
}
