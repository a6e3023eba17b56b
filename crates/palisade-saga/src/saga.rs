//! The saga runner: the state machine, driven by and written to the saga's log.
//!
//! ```text
//!             ┌──────── step i ok ────────┐
//!             ▼                           │
//! start ──▶ Forward(i) ── i == n ──▶ Completed
//!             │  failed, i ≤ pivot
//!             ▼
//!        Compensating(top of the completed steps) ── ok: pop ──▶ … ── empty ──▶ Compensated
//!             │ failed: backoff, again (never skipped)
//!             └── recovery_attempts spent ──▶ Failed (an operator acts)
//! Forward(i > pivot) failed: backoff, again ── recovery_attempts spent ──▶ Failed
//! ```
//!
//! Every transition is a [`Record`] appended to the saga's stream at the
//! version the runner last wrote (`ExpectedVersion::Exact`), and the work a
//! record announces (an attempt, a compensation) runs only after the append
//! returned. So the log always says what may have run, and a crashed runner's
//! successor, folding the same log, takes the same next decision. A runner's
//! right to write is its claim: `Claimed { owner, until }` in the log. Whoever
//! appends a claim at the saga's version owns it; every other runner's next
//! append fails with a conflict and it stops ([`Error::LostClaim`]). That is the
//! whole concurrency argument: the store's expected-version check serializes
//! every decision of a saga, so two runners never both advance it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{StreamExt, TryStreamExt};
use palisade_core::{Outcome as Verdict, Rejected, duration_to_nanos, timeout};
use palisade_event_store::{
    EventStore, ExpectedVersion, Filter, NewEvent, Position, ReadAll, ReadStream, RecordedEvent,
    StreamName,
};
use palisade_retry::{RetryError, RetryPolicy};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::SagaBuilder;
use crate::error::{BoxError, Error};
use crate::event::{Event, ExecutionOutcome, StepOutcome};
use crate::record::{LIFECYCLE_TYPES, Record};
use crate::step::{Body, Merge, Step, StepContext};

/// What a saga's state must be: stored in its log as JSON, cloned into each step.
pub trait SagaState: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> SagaState for T {}

/// How a saga ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<S> {
    /// Every step completed; the final state.
    Completed {
        /// The state after the last step.
        state: S,
    },
    /// A step failed and every completed step was compensated.
    Compensated {
        /// The state when the compensation began.
        state: S,
        /// The failure that started the compensation.
        error: String,
    },
    /// A compensation, or a step after the pivot, failed as many times as
    /// [`recovery_attempts`](crate::SagaBuilder::recovery_attempts) allows:
    /// the saga stopped there, and an operator must finish it.
    Failed {
        /// The state when it stopped.
        state: S,
        /// The step whose compensation (or action) could not finish.
        step: String,
        /// Its last error.
        error: String,
    },
}

impl<S> Outcome<S> {
    /// The outcome's kind, as in telemetry.
    pub fn kind(&self) -> ExecutionOutcome {
        match self {
            Self::Completed { .. } => ExecutionOutcome::Completed,
            Self::Compensated { .. } => ExecutionOutcome::Compensated,
            Self::Failed { .. } => ExecutionOutcome::Failed,
        }
    }

    /// The saga's state at its end.
    pub fn state(&self) -> &S {
        match self {
            Self::Completed { state }
            | Self::Compensated { state, .. }
            | Self::Failed { state, .. } => state,
        }
    }
}

/// A saga resumed by [`Saga::recover`], and how its run ended.
#[derive(Debug)]
pub struct Resumed<S> {
    /// The saga id.
    pub id: String,
    /// Its outcome, or why this runner stopped running it.
    pub result: Result<Outcome<S>, Error>,
}

/// A saga definition bound to a store: starts sagas, resumes them, reads their logs.
///
/// Cheap to clone (one `Arc`). Each saga instance lives in the stream
/// `saga-{name}/{id}`.
pub struct Saga<S> {
    inner: Arc<Inner<S>>,
}

impl<S> Clone for Saga<S> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> std::fmt::Debug for Saga<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saga")
            .field("name", &self.inner.name)
            .field("owner", &self.inner.owner)
            .field("steps", &self.inner.steps)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner<S> {
    pub(crate) name: Arc<str>,
    pub(crate) prefix: String,
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) steps: Vec<Step<S>>,
    pub(crate) pivot: Option<usize>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) owner: Arc<str>,
    pub(crate) lease: Duration,
    pub(crate) recovery_backoff: palisade_core::Backoff,
    pub(crate) recovery_attempts: Option<u32>,
    pub(crate) clock: palisade_core::SharedClock,
    pub(crate) sleeper: palisade_core::SharedSleeper,
    pub(crate) listeners: palisade_core::Listeners<Event>,
    pub(crate) one_attempt: palisade_retry::Retry,
    pub(crate) scan: Mutex<Scan>,
    /// The current span's `traceparent` (set by the `otel` adapter's tracer).
    pub(crate) traceparent: Option<fn() -> Option<String>>,
    #[cfg(feature = "tracing")]
    pub(crate) tracing: bool,
}

/// What recovery has read of the global log: the sagas started and not ended.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    after: Position,
    unfinished: BTreeSet<String>,
}

/// The saga as its log says, folded record by record.
#[derive(Debug, Clone, Default)]
struct Progress {
    version: u64,
    state: serde_json::Value,
    deadline: Option<u64>,
    traceparent: Option<Arc<str>>,
    owner: String,
    lease_until: u64,
    next: usize,
    attempts: u32,
    step_deadline: Option<u64>,
    rounds: u32,
    /// Branch attempts and completed branches' states of the parallel step running.
    branch_attempts: BTreeMap<usize, u32>,
    branch_states: BTreeMap<usize, serde_json::Value>,
    /// What completed and may need undoing, oldest first: (step, branch).
    completed: Vec<(usize, Option<usize>)>,
    compensating: Option<String>,
    compensation_attempts: u32,
    /// The step running has written its `Waiting` this round.
    waiting: bool,
    end: Option<Record>,
}

impl Progress {
    fn apply(&mut self, record: &Record) {
        match record {
            Record::SagaStarted {
                state,
                deadline,
                traceparent,
                ..
            } => {
                self.state = state.clone();
                self.deadline = *deadline;
                self.traceparent = traceparent.as_deref().map(Arc::from);
            }
            Record::Claimed { owner, until } => {
                owner.clone_into(&mut self.owner);
                self.lease_until = *until;
            }
            Record::StepStarted {
                attempt,
                deadline,
                branch,
                ..
            } => {
                match branch {
                    Some(b) => {
                        self.branch_attempts.insert(*b, *attempt);
                    }
                    None => self.attempts = *attempt,
                }
                self.step_deadline = *deadline;
            }
            Record::BranchCompleted {
                step,
                branch,
                state,
            } => {
                self.branch_states.insert(*branch, state.clone());
                self.completed.push((*step, Some(*branch)));
            }
            Record::Waiting { .. } => self.waiting = true,
            Record::StepAttemptFailed { .. }
            | Record::CompensationStarted { .. }
            | Record::EventReceived { .. } => {}
            Record::StepCompleted { step, state } => {
                self.state = state.clone();
                self.completed.push((*step, None));
                self.next = step.saturating_add(1);
                self.attempts = 0;
                self.branch_attempts.clear();
                self.branch_states.clear();
                self.step_deadline = None;
                self.rounds = 0;
                self.waiting = false;
            }
            Record::StepFailed {
                error, compensate, ..
            } => {
                self.step_deadline = None;
                self.waiting = false;
                if *compensate {
                    self.compensating = Some(error.clone());
                } else {
                    self.rounds += 1;
                }
            }
            Record::CompensationFailed { attempt, .. } => self.compensation_attempts = *attempt,
            Record::CompensationCompleted { .. } => {
                self.completed.pop();
                self.compensation_attempts = 0;
            }
            Record::SagaCompleted { .. }
            | Record::SagaCompensated { .. }
            | Record::SagaFailed { .. } => self.end = Some(record.clone()),
        }
    }
}

/// One run of one saga: its stream and its progress, which every append updates.
struct Run<'a, S> {
    saga: &'a Inner<S>,
    id: Arc<str>,
    stream: StreamName,
    progress: Mutex<Progress>,
    /// Held across an append: the branches of a parallel step write in turn.
    writing: tokio::sync::Mutex<()>,
    /// Records already folded in, written with the next append (see [`Run::defer`]).
    deferred: Mutex<Vec<Record>>,
}

impl<S: SagaState> Run<'_, S> {
    /// Appends `records` at the version this run last wrote, then folds them in.
    async fn write(&self, records: Vec<Record>) -> Result<(), Error> {
        let _turn = self.writing.lock().await;
        let deferred = std::mem::take(&mut *self.deferred.lock());
        let version = self.progress.lock().version;
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        let events = deferred
            .iter()
            .chain(&records)
            .map(|r| NewEvent::json(r.event_type(), r))
            .collect::<Result<Vec<_>, _>>()?;
        let mut result = self
            .saga
            .store
            .append(&self.stream, expected, events.clone())
            .await;
        if let Err(palisade_event_store::Error::OutcomeUnknown { .. }) = result {
            // The same ids again: written once at most, and we learn whether it was.
            result = self.saga.store.append(&self.stream, expected, events).await;
        }
        match result {
            Ok(r) => {
                let mut p = self.progress.lock();
                p.version = r.version;
                for record in &records {
                    p.apply(record);
                }
                Ok(())
            }
            Err(e) if e.is_conflict() => Err(Error::LostClaim {
                id: self.id.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Folds `record` in now and writes it with the next append, which every
    /// next decision makes before any work runs (the next step's
    /// `StepStarted`, a claim, the end). A step's completion thus costs no
    /// append of its own; a crash before the next append loses it, and the
    /// step runs again after the recovery, as if the crash came just before
    /// it completed.
    fn defer(&self, record: Record) {
        self.progress.lock().apply(&record);
        self.deferred.lock().push(record);
    }

    fn now(&self) -> u64 {
        self.saga.clock.now_nanos()
    }

    fn state(&self) -> Result<S, Error> {
        let value = self.progress.lock().state.clone();
        serde_json::from_value(value).map_err(|source| Error::Codec {
            id: self.id.to_string(),
            reason: "decoding the saga's state".into(),
            source,
        })
    }

    /// The step, or the branch of a parallel step.
    /// (A branch the definition no longer has, named by an older log, is the
    /// step itself: a redeployed definition must not make reading it panic.)
    fn unit(&self, index: usize, branch: Option<usize>) -> &Step<S> {
        let step = &self.saga.steps[index];
        match (&step.body, branch) {
            (Body::Parallel { branches, .. }, Some(b)) => branches.get(b).unwrap_or(step),
            _ => step,
        }
    }

    fn ctx(
        &self,
        index: usize,
        branch: Option<usize>,
        attempt: u32,
        compensation: bool,
    ) -> StepContext {
        StepContext {
            saga_id: Arc::clone(&self.id),
            step: Arc::clone(&self.unit(index, branch).name),
            index,
            branch,
            attempt,
            compensation,
        }
    }

    fn emit_step(
        &self,
        (index, branch): (usize, Option<usize>),
        outcome: StepOutcome,
        attempt: u32,
        since: u64,
    ) {
        let duration = Duration::from_nanos(self.now().saturating_sub(since));
        self.saga.listeners.emit_with(|| Event::Step {
            saga: Arc::clone(&self.saga.name),
            id: Arc::clone(&self.id),
            step: Arc::clone(&self.unit(index, branch).name),
            outcome,
            attempt,
            duration,
        });
    }

    /// A fresh claim when less than half of the lease is left, for the same
    /// append as the record of an action about to run: every attempt and
    /// every compensation starts with at least half a lease ahead of it.
    fn renewal(&self) -> Option<Record> {
        let now = self.now();
        let until = self.progress.lock().lease_until;
        (until.saturating_sub(now) < duration_to_nanos(self.saga.lease) / 2).then(|| {
            Record::Claimed {
                owner: self.saga.owner.to_string(),
                until: now.saturating_add(duration_to_nanos(self.saga.lease)),
            }
        })
    }

    /// Renews the claim when less than half of its lease is left.
    async fn renew(&self) -> Result<(), Error> {
        let now = self.now();
        let until = self.progress.lock().lease_until;
        if until.saturating_sub(now) < duration_to_nanos(self.saga.lease) / 2 {
            self.write(vec![Record::Claimed {
                owner: self.saga.owner.to_string(),
                until: now.saturating_add(duration_to_nanos(self.saga.lease)),
            }])
            .await?;
        }
        Ok(())
    }

    fn outcome(&self, end: &Record) -> Result<Outcome<S>, Error> {
        let state = self.state()?;
        Ok(match end {
            Record::SagaCompensated { error } => Outcome::Compensated {
                state,
                error: error.clone(),
            },
            Record::SagaFailed {
                step,
                branch,
                error,
            } => Outcome::Failed {
                state,
                step: if *step < self.saga.steps.len() {
                    self.unit(*step, *branch).name.to_string()
                } else {
                    step.to_string()
                },
                error: error.clone(),
            },
            _ => Outcome::Completed { state },
        })
    }

    /// Runs the saga from where its log stands to its end (in its span, with `tracing`).
    async fn drive(&self, resumed: bool) -> Result<Outcome<S>, Error> {
        #[cfg(feature = "tracing")]
        {
            use tracing::Instrument;
            let span =
                crate::tracing_listener::saga_span(self.saga.tracing, &self.saga.name, &self.id);
            self.drive_in_span(resumed).instrument(span).await
        }
        #[cfg(not(feature = "tracing"))]
        self.drive_in_span(resumed).await
    }

    /// A step's or compensation's future, in its span with `tracing`.
    #[cfg_attr(not(feature = "tracing"), allow(clippy::unused_self, unused_variables))]
    fn in_step_span<F: std::future::Future>(
        &self,
        (index, branch): (usize, Option<usize>),
        compensation: bool,
        attempt: u32,
        fut: F,
    ) -> impl std::future::Future<Output = F::Output> {
        #[cfg(feature = "tracing")]
        {
            use tracing::Instrument;
            fut.instrument(crate::tracing_listener::step_span(
                self.saga.tracing,
                &self.unit(index, branch).name,
                compensation,
                attempt,
            ))
        }
        #[cfg(not(feature = "tracing"))]
        fut
    }

    async fn drive_in_span(&self, resumed: bool) -> Result<Outcome<S>, Error> {
        let began = self.now();
        let saga = self.saga;
        let traceparent = self.progress.lock().traceparent.clone();
        saga.listeners.emit_with(|| Event::Started {
            saga: Arc::clone(&saga.name),
            id: Arc::clone(&self.id),
            resumed,
            traceparent,
        });
        loop {
            let p = self.progress.lock().clone();
            if let Some(end) = &p.end {
                let outcome = self.outcome(end)?;
                let duration = Duration::from_nanos(self.now().saturating_sub(began));
                saga.listeners.emit_with(|| Event::Finished {
                    saga: Arc::clone(&saga.name),
                    id: Arc::clone(&self.id),
                    outcome: outcome.kind(),
                    duration,
                });
                return Ok(outcome);
            }
            if let Some(error) = p.compensating {
                self.compensate_top(&p.completed, p.compensation_attempts, error)
                    .await?;
            } else if p.next >= saga.steps.len() {
                self.write(vec![Record::SagaCompleted { state: p.state }])
                    .await?;
            } else {
                self.forward(&p).await?;
            }
        }
    }

    /// One attempt of the compensation of the newest completed step.
    async fn compensate_top(
        &self,
        completed: &[(usize, Option<usize>)],
        attempts: u32,
        error: String,
    ) -> Result<(), Error> {
        let saga = self.saga;
        let Some(&(index, branch)) = completed.last() else {
            return self.write(vec![Record::SagaCompensated { error }]).await;
        };
        let unit = (index, branch);
        let step = self.unit(index, branch);
        let Some(compensation) = &step.compensation else {
            // Nothing to undo: no record, the fold of the same log pops it too.
            self.progress.lock().completed.pop();
            return Ok(());
        };
        let attempt = attempts + 1;
        let started = Record::CompensationStarted {
            step: index,
            branch,
            attempt,
        };
        self.write(self.renewal().into_iter().chain([started]).collect())
            .await?;
        let since = self.now();
        let fut = self.in_step_span(
            unit,
            true,
            attempt,
            compensation(self.state()?, self.ctx(index, branch, attempt, true)),
        );
        let result = match step.timeout {
            Some(limit) => timeout(&*saga.sleeper, limit, fut)
                .await
                .unwrap_or_else(|_| Err(format!("timed out after {limit:?}").into())),
            None => fut.await,
        };
        match result {
            Ok(()) => {
                self.emit_step(unit, StepOutcome::Compensated, attempt, since);
                self.write(vec![Record::CompensationCompleted {
                    step: index,
                    branch,
                }])
                .await
            }
            Err(e) => {
                self.emit_step(unit, StepOutcome::CompensationFailed, attempt, since);
                let error = e.to_string();
                let mut records = vec![Record::CompensationFailed {
                    step: index,
                    branch,
                    attempt,
                    error: error.clone(),
                }];
                let spent = saga.recovery_attempts.is_some_and(|max| attempt >= max);
                if spent {
                    records.push(Record::SagaFailed {
                        step: index,
                        branch,
                        error,
                    });
                }
                self.write(records).await?;
                if !spent {
                    saga.sleeper
                        .sleep(saga.recovery_backoff.delay(attempt))
                        .await;
                }
                Ok(())
            }
        }
    }

    /// One round of attempts of the next step (of all its branches, for a parallel one).
    async fn forward(&self, p: &Progress) -> Result<(), Error> {
        let saga = self.saga;
        let index = p.next;
        let step = &saga.steps[index];
        let committed = saga.pivot.is_some_and(|pivot| index > pivot);
        self.renew().await?;
        let now = self.now();
        let saga_deadline = if committed { None } else { p.deadline };
        let step_deadline = p.step_deadline.or_else(|| {
            step.timeout
                .map(|t| now.saturating_add(duration_to_nanos(t)))
        });
        let limit = match (saga_deadline, step_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let deadlines = Deadlines {
            step: step_deadline,
            limit,
            expired: if saga_deadline.is_some() && saga_deadline == limit {
                "the saga's deadline passed".to_owned()
            } else {
                format!(
                    "the step timed out after {:?}",
                    step.timeout.unwrap_or_default()
                )
            },
        };
        let since = now;
        let (failure, branch) = if limit.is_some_and(|l| now >= l) {
            (deadlines.expired.clone(), None)
        } else if let Body::Parallel { branches, merge } = &step.body {
            match self.parallel(p, index, branches, merge, &deadlines).await? {
                None => return Ok(()),
                Some(failed) => failed,
            }
        } else {
            let state = self.state()?;
            let result = if let Body::Await {
                correlation,
                on_event,
            } = &step.body
            {
                self.wait(p, index, state, (correlation, on_event), &deadlines)
                    .await?
            } else {
                self.attempts((index, None), p.attempts, state, &deadlines)
                    .await?
            };
            match result {
                Ok(state) => {
                    let state = self.encode(&state, index)?;
                    let attempt = self.progress.lock().attempts;
                    self.defer(Record::StepCompleted { step: index, state });
                    self.emit_step((index, None), StepOutcome::Completed, attempt, since);
                    return Ok(());
                }
                Err(error) => (error, None),
            }
        };
        let attempt = self.progress.lock().attempts;
        self.emit_step((index, branch), StepOutcome::Failed, attempt, since);
        if !committed {
            return self
                .write(vec![Record::StepFailed {
                    step: index,
                    branch,
                    error: failure,
                    compensate: true,
                }])
                .await;
        }
        let round = p.rounds + 1;
        let spent = saga.recovery_attempts.is_some_and(|max| round >= max);
        let mut records = vec![Record::StepFailed {
            step: index,
            branch: None,
            error: failure.clone(),
            compensate: false,
        }];
        if spent {
            records.push(Record::SagaFailed {
                step: index,
                branch: None,
                error: failure,
            });
        }
        self.write(records).await?;
        if !spent {
            saga.sleeper.sleep(saga.recovery_backoff.delay(round)).await;
        }
        Ok(())
    }

    /// A wait step: recorded (once a round), then the first event of its
    /// correlation's mailbox, looked for at each store notification, poll
    /// interval and renewal, until the deadline.
    async fn wait(
        &self,
        p: &Progress,
        index: usize,
        state: S,
        (correlation, on_event): (&crate::step::Correlation<S>, &crate::step::OnEvent<S>),
        deadlines: &Deadlines,
    ) -> Result<Result<S, String>, Error> {
        let saga = self.saga;
        let key = correlation(&state);
        let mailbox = match saga.mailbox(&key) {
            Ok(m) => m,
            Err(e) => return Ok(Err(e.to_string())),
        };
        if !p.waiting {
            self.write(vec![
                Record::StepStarted {
                    step: index,
                    branch: None,
                    attempt: p.attempts + 1,
                    deadline: deadlines.step,
                },
                Record::Waiting {
                    step: index,
                    correlation: key,
                },
            ])
            .await?;
        }
        let mut changes = saga.store.changes();
        let mut notified = true;
        let lease = saga.lease / 2;
        loop {
            changes.borrow_and_update();
            let first = saga
                .store
                .read_stream(&mailbox, ReadStream::forward().limit(1))
                .await?
                .try_next()
                .await?;
            if let Some(mut event) = first {
                if let Some(id) = event
                    .metadata
                    .fields
                    .get(DELIVERED)
                    .and_then(|id| uuid::Uuid::parse_str(id).ok())
                {
                    event.id = id;
                }
                return Ok(match on_event(state, &event) {
                    Ok(state) => {
                        self.defer(Record::EventReceived {
                            step: index,
                            event: event.id,
                            event_type: event.event_type,
                        });
                        Ok(state)
                    }
                    Err(e) => Err(e.to_string()),
                });
            }
            let now = self.now();
            let mut wake = lease.min(saga.store.poll_interval());
            if let Some(limit) = deadlines.limit {
                if now >= limit {
                    return Ok(Err(deadlines.expired.clone()));
                }
                wake = wake.min(Duration::from_nanos(limit - now));
            }
            let slept = saga.sleeper.sleep(wake);
            if notified {
                // A store without notifications (its sender gone) is polled only.
                let changed = async { notified = changes.changed().await.is_ok() };
                futures_util::future::select(std::pin::pin!(changed), slept).await;
            } else {
                slept.await;
            }
            self.renew().await?;
        }
    }

    fn encode(&self, state: &S, index: usize) -> Result<serde_json::Value, Error> {
        serde_json::to_value(state).map_err(|source| Error::Codec {
            id: self.id.to_string(),
            reason: format!("encoding the state after `{}`", self.saga.steps[index].name),
            source,
        })
    }

    /// Runs the branches its log does not record as completed at once; the
    /// first to fail for good cancels the others. `None` when all completed
    /// (and the merged state was written), else the failed branch's error.
    async fn parallel(
        &self,
        p: &Progress,
        index: usize,
        branches: &[Step<S>],
        merge: &Merge<S>,
        deadlines: &Deadlines,
    ) -> Result<Option<(String, Option<usize>)>, Error> {
        let state = self.state()?;
        let mut running: FuturesUnordered<_> = (0..branches.len())
            .filter(|b| !p.branch_states.contains_key(b))
            .map(|b| {
                let base = p.branch_attempts.get(&b).copied().unwrap_or(0);
                let state = state.clone();
                async move {
                    let since = self.now();
                    match self
                        .attempts((index, Some(b)), base, state, deadlines)
                        .await?
                    {
                        Ok(done) => {
                            let done = self.encode(&done, index)?;
                            self.write(vec![Record::BranchCompleted {
                                step: index,
                                branch: b,
                                state: done,
                            }])
                            .await?;
                            let attempt = self.progress.lock().branch_attempts[&b];
                            self.emit_step(
                                (index, Some(b)),
                                StepOutcome::Completed,
                                attempt,
                                since,
                            );
                            Ok::<_, Error>(None)
                        }
                        Err(error) => Ok(Some((error, Some(b)))),
                    }
                }
            })
            .collect();
        while let Some(result) = running.next().await {
            if let Some(failed) = result? {
                // Dropping the others cancels them.
                return Ok(Some(failed));
            }
        }
        drop(running);
        let states = self.progress.lock().branch_states.clone();
        let states = states
            .into_values()
            .map(serde_json::from_value)
            .collect::<Result<Vec<S>, _>>()
            .map_err(|source| Error::Codec {
                id: self.id.to_string(),
                reason: "decoding a branch's state".into(),
                source,
            })?;
        let merged = self.encode(&merge(state, states), index)?;
        self.defer(Record::StepCompleted {
            step: index,
            state: merged,
        });
        Ok(None)
    }

    /// One round of attempts of a step or branch, by its retry policy: its
    /// state, or why it failed for good.
    async fn attempts(
        &self,
        unit: (usize, Option<usize>),
        base: u32,
        state: S,
        deadlines: &Deadlines,
    ) -> Result<Result<S, String>, Error> {
        let step = self.unit(unit.0, unit.1);
        let retry = step.retry.as_ref().unwrap_or(&self.saga.one_attempt);
        let result = retry.call_with(&StepPolicy, |attempt| {
            let state = state.clone();
            let number = base + attempt.number();
            async move { self.attempt(unit, number, state, deadlines).await }
        });
        match self.in_step_span(unit, false, base + 1, result).await {
            Ok(state) => Ok(Ok(state)),
            Err(RetryError::Failed {
                error: AttemptError::Run(e),
                ..
            }) => Err(e),
            Err(RetryError::Failed {
                error: AttemptError::Deadline,
                ..
            }) => Ok(Err(deadlines.expired.clone())),
            Err(RetryError::Failed {
                error: AttemptError::Action(e),
                ..
            }) => Ok(Err(e.to_string())),
            Err(other) => Ok(Err(other.to_string())),
        }
    }

    /// One attempt of a step's action: recorded, then run within the deadline.
    async fn attempt(
        &self,
        (index, branch): (usize, Option<usize>),
        number: u32,
        state: S,
        deadlines: &Deadlines,
    ) -> Result<S, AttemptError> {
        let now = self.now();
        if deadlines.limit.is_some_and(|l| now >= l) {
            return Err(AttemptError::Deadline);
        }
        let started = Record::StepStarted {
            step: index,
            branch,
            attempt: number,
            deadline: deadlines.step,
        };
        self.write(self.renewal().into_iter().chain([started]).collect())
            .await
            .map_err(AttemptError::Run)?;
        let Body::Action(action) = &self.unit(index, branch).body else {
            unreachable!("build() lets only plain steps be run as one action");
        };
        let fut = action(state, self.ctx(index, branch, number, false));
        let failed = |error: String| Record::StepAttemptFailed {
            step: index,
            branch,
            attempt: number,
            error,
        };
        let result = match deadlines.limit {
            Some(l) => {
                let left = Duration::from_nanos(l.saturating_sub(self.now()));
                match timeout(&*self.saga.sleeper, left, fut).await {
                    Ok(r) => r,
                    Err(elapsed) => {
                        self.write(vec![failed(format!("timed out after {:?}", elapsed.0))])
                            .await
                            .map_err(AttemptError::Run)?;
                        return Err(AttemptError::Deadline);
                    }
                }
            }
            None => fut.await,
        };
        match result {
            Ok(state) => Ok(state),
            Err(e) => {
                self.write(vec![failed(e.to_string())])
                    .await
                    .map_err(AttemptError::Run)?;
                Err(AttemptError::Action(e))
            }
        }
    }
}

/// A round's deadlines (wall-clock nanoseconds) and what to say when they pass.
struct Deadlines {
    /// The step's, written with each attempt.
    step: Option<u64>,
    /// The nearer of the step's and the saga's.
    limit: Option<u64>,
    expired: String,
}

/// Why an attempt of a step's action did not return a state.
enum AttemptError {
    /// The action failed (retried unless it is a rejection).
    Action(BoxError),
    /// The step's or the saga's deadline passed (not retried).
    Deadline,
    /// The log could not be written (the run stops).
    Run(Error),
}

/// Retries an action's errors but rejections; never a deadline or a log failure.
struct StepPolicy;

impl<S> RetryPolicy<S, AttemptError> for StepPolicy {
    fn classify(&self, result: &Result<S, AttemptError>) -> Verdict {
        match result {
            Ok(_) => Verdict::Success,
            Err(AttemptError::Action(e)) if Rejected::find(&**e).is_none() => Verdict::Failure,
            Err(_) => Verdict::Ignored,
        }
    }
}

/// The metadata field of a kept event that holds the delivered event's id.
const DELIVERED: &str = "palisade.saga.delivered";

impl<S> Inner<S> {
    /// The stream of the events delivered for `correlation`.
    fn mailbox(&self, correlation: &str) -> Result<StreamName, Error> {
        let invalid = |reason: String| Error::InvalidCorrelation {
            correlation: correlation.to_owned(),
            reason,
        };
        if correlation.is_empty() {
            return Err(invalid("must not be empty".into()));
        }
        StreamName::new(format!("sagaevent-{}/{correlation}", self.name)).map_err(|e| match e {
            palisade_event_store::Error::InvalidStreamName { reason, .. } => invalid(reason),
            other => invalid(other.to_string()),
        })
    }
}

impl<S: SagaState> Saga<S> {
    /// Delivers `event` to the waits on `correlation` (steps made by
    /// [`Step::await_event`]): it is kept, under its own id, in the
    /// correlation's stream `sagaevent-{saga name}/{correlation}` in the
    /// saga's store, where a waiting run (in any process) finds it, and a
    /// wait that begins later finds it at once. `false` when that event was
    /// delivered before (nothing is kept twice).
    ///
    /// # Errors
    /// [`Error::InvalidCorrelation`] when `correlation` cannot be part of a
    /// stream name, [`Error::Store`] when the append fails.
    pub async fn deliver(&self, correlation: &str, event: &RecordedEvent) -> Result<bool, Error> {
        let mailbox = self.inner.mailbox(correlation)?;
        // Event ids are unique in a store: the kept copy's id is derived from
        // the event's and the correlation, its metadata names the event.
        let id = uuid::Uuid::new_v5(&event.id, correlation.as_bytes());
        let mut metadata = event.metadata.clone();
        metadata
            .fields
            .insert(DELIVERED.to_owned(), event.id.to_string());
        let new = NewEvent::new(event.event_type.clone(), event.payload.clone())
            .with_id(id)
            .with_schema_version(event.schema_version)
            .with_metadata(metadata);
        let mut kept = self
            .inner
            .store
            .read_stream(&mailbox, ReadStream::forward())
            .await?;
        while let Some(e) = kept.try_next().await? {
            if e.id == id {
                return Ok(false);
            }
        }
        drop(kept);
        match self
            .inner
            .store
            .append(&mailbox, ExpectedVersion::Any, vec![new])
            .await
        {
            Ok(_) => Ok(true),
            Err(palisade_event_store::Error::DuplicateEventId { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A builder for the saga `name`, whose logs live in `store`.
    pub fn builder(name: impl Into<Arc<str>>, store: impl EventStore) -> SagaBuilder<S> {
        SagaBuilder::new(name, store)
    }

    pub(crate) fn from_inner(inner: Inner<S>) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The definition's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This runner's name in the claims it writes.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    fn stream(&self, id: &str) -> Result<StreamName, Error> {
        let invalid = |reason: &str| Error::InvalidId {
            id: id.to_owned(),
            reason: reason.to_owned(),
        };
        if id.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if id.contains('/') {
            return Err(invalid("must not contain `/`"));
        }
        StreamName::new(format!("{}{id}", self.inner.prefix)).map_err(|e| match e {
            palisade_event_store::Error::InvalidStreamName { reason, .. } => invalid(&reason),
            other => Error::Store(other),
        })
    }

    fn run(&self, id: &str, stream: StreamName, progress: Progress) -> Run<'_, S> {
        Run {
            saga: &self.inner,
            id: id.into(),
            stream,
            progress: Mutex::new(progress),
            writing: tokio::sync::Mutex::new(()),
            deferred: Mutex::new(Vec::new()),
        }
    }

    /// Starts the saga `id` with `state` and runs it to its end.
    ///
    /// If a saga with this id exists, none is started: an ended one returns
    /// its outcome; an unfinished one whose claim ran out is claimed and
    /// resumed; one claimed by a runner (this one included) whose lease has
    /// not ended is [`Error::Claimed`]. `state` is then ignored.
    ///
    /// Dropping the future stops the run where the log stands; the saga is
    /// resumed by [`recover`](Self::recover) once its claim runs out.
    ///
    /// # Errors
    /// [`Error::InvalidId`], [`Error::Claimed`], [`Error::LostClaim`], a
    /// store or codec error. A step's failure is not an error: it is the
    /// saga's [`Outcome`].
    pub async fn start(&self, id: &str, state: S) -> Result<Outcome<S>, Error> {
        let stream = self.stream(id)?;
        let now = self.inner.clock.now_nanos();
        let state = serde_json::to_value(&state).map_err(|source| Error::Codec {
            id: id.to_owned(),
            reason: "encoding the initial state".into(),
            source,
        })?;
        let run = self.run(id, stream.clone(), Progress::default());
        let started = run
            .write(vec![
                Record::SagaStarted {
                    saga: self.inner.name.to_string(),
                    state,
                    deadline: self
                        .inner
                        .timeout
                        .map(|t| now.saturating_add(duration_to_nanos(t))),
                    traceparent: self.inner.traceparent.and_then(|current| current()),
                },
                Record::Claimed {
                    owner: self.inner.owner.to_string(),
                    until: now.saturating_add(duration_to_nanos(self.inner.lease)),
                },
            ])
            .await;
        match started {
            Ok(()) => run.drive(false).await,
            Err(Error::LostClaim { .. }) => match self.resume(id, stream, true).await? {
                Some(outcome) => outcome,
                None => Err(Error::Claimed {
                    id: id.to_owned(),
                    owner: self.load(id).await?.owner,
                }),
            },
            Err(e) => Err(e),
        }
    }

    async fn load(&self, id: &str) -> Result<Progress, Error> {
        let mut progress = Progress::default();
        for (version, record) in self.records(id).await? {
            progress.apply(&record);
            progress.version = version;
        }
        Ok(progress)
    }

    async fn records(&self, id: &str) -> Result<Vec<(u64, Record)>, Error> {
        let stream = self.stream(id)?;
        let events: Vec<_> = self
            .inner
            .store
            .read_stream(&stream, ReadStream::forward())
            .await?
            .try_collect()
            .await?;
        events
            .into_iter()
            .map(|e| {
                e.decode::<Record>()
                    .map(|r| (e.version, r))
                    .map_err(Error::Store)
            })
            .collect()
    }

    /// The saga's log, oldest first (empty if it never started).
    ///
    /// # Errors
    /// [`Error::InvalidId`], a store error.
    pub async fn log(&self, id: &str) -> Result<Vec<Record>, Error> {
        Ok(self
            .records(id)
            .await?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Claims and runs an unfinished saga whose claim ran out; the outcome of
    /// an ended one if `ended` (else `None`). `None` when another runner holds
    /// it (or just claimed it).
    async fn resume(
        &self,
        id: &str,
        stream: StreamName,
        ended: bool,
    ) -> Result<Option<Result<Outcome<S>, Error>>, Error> {
        let progress = self.load(id).await?;
        if progress.version == 0 {
            return Ok(None);
        }
        let end = progress.end.clone();
        let run = self.run(id, stream, progress);
        if let Some(end) = end {
            return Ok(ended.then(|| run.outcome(&end)));
        }
        let known = |step: usize, branch: Option<usize>| match (self.inner.steps.get(step), branch)
        {
            (Some(_), None) => true,
            (Some(s), Some(b)) => {
                matches!(&s.body, Body::Parallel { branches, .. } if b < branches.len())
            }
            (None, _) => false,
        };
        let unknown = {
            let p = run.progress.lock();
            p.completed
                .iter()
                .map(|&(s, b)| (s, b))
                .chain(p.branch_attempts.keys().map(|&b| (p.next, Some(b))))
                .find(|&(s, b)| !known(s, b))
                .map(|(s, _)| s)
                .or((p.next > self.inner.steps.len()).then_some(p.next))
        };
        if let Some(step) = unknown {
            return Err(Error::UnknownStep {
                id: id.to_owned(),
                step,
            });
        }
        let now = self.inner.clock.now_nanos();
        if run.progress.lock().lease_until > now {
            return Ok(None);
        }
        match run
            .write(vec![Record::Claimed {
                owner: self.inner.owner.to_string(),
                until: now.saturating_add(duration_to_nanos(self.inner.lease)),
            }])
            .await
        {
            Ok(()) => Ok(Some(run.drive(true).await)),
            Err(Error::LostClaim { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The ids of the sagas of this definition that started and have not
    /// ended, as the store's global log says now.
    ///
    /// Reads only the log written since the last call (the runner remembers
    /// where it stopped), filtered to the records that start or end a saga.
    ///
    /// # Errors
    /// A store error.
    pub async fn unfinished(&self) -> Result<Vec<String>, Error> {
        let after = self.inner.scan.lock().after;
        let filter = Filter::stream_prefix(self.inner.prefix.clone()).event_types(LIFECYCLE_TYPES);
        let events: Vec<_> = self
            .inner
            .store
            .read_all(ReadAll::after(after).filter(filter))
            .await?
            .try_collect()
            .await?;
        let mut scan = self.inner.scan.lock();
        for event in events {
            // A concurrent call may have read these already: only move forward.
            if event.position <= scan.after {
                continue;
            }
            scan.after = event.position;
            let id = event.stream.as_str()[self.inner.prefix.len()..].to_owned();
            if event.event_type == "SagaStarted" {
                scan.unfinished.insert(id);
            } else {
                scan.unfinished.remove(&id);
            }
        }
        Ok(scan.unfinished.iter().cloned().collect())
    }

    /// Finds every unfinished saga whose claim ran out (a crashed or stopped
    /// runner's), claims it by appending `Claimed` at its log's version, and
    /// runs the ones it won to their ends, concurrently. Several runners may
    /// recover at once: each saga is claimed by exactly one of them.
    ///
    /// # Errors
    /// A store error while finding them; each resumed saga's own errors are in its [`Resumed`].
    pub async fn recover(&self) -> Result<Vec<Resumed<S>>, Error> {
        let ids = self.unfinished().await?;
        let runs = ids.into_iter().map(|id| async move {
            let stream = match self.stream(&id) {
                Ok(s) => s,
                Err(e) => return Some(Resumed { id, result: Err(e) }),
            };
            match self.resume(&id, stream, false).await {
                Ok(None) => None,
                Ok(Some(result)) => Some(Resumed { id, result }),
                Err(e) => Some(Resumed { id, result: Err(e) }),
            }
        });
        Ok(futures_util::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect())
    }
}
