//! A step of a saga: an action, its compensation, its kind, retries and timeout.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use palisade_retry::Retry;

use crate::error::BoxError;

/// What a step's action or compensation is told about its invocation.
///
/// [`key`](Self::key) is the same for every attempt of the step, in this
/// process or after a recovery, so a participant that stores the keys it has
/// served does each effect once. [`attempt`](Self::attempt) tells attempts apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepContext {
    pub(crate) saga_id: Arc<str>,
    pub(crate) step: Arc<str>,
    pub(crate) index: usize,
    pub(crate) branch: Option<usize>,
    pub(crate) attempt: u32,
    pub(crate) compensation: bool,
}

impl StepContext {
    /// The saga id.
    pub fn saga_id(&self) -> &str {
        &self.saga_id
    }

    /// The step's name.
    pub fn step(&self) -> &str {
        &self.step
    }

    /// The step's position in the definition, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The branch's position in its parallel step, from 0 (`None` outside one).
    pub fn branch(&self) -> Option<usize> {
        self.branch
    }

    /// The attempt of this action (or compensation), from 1, counted across
    /// recoveries: a resumed saga goes on from the attempts its log records.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether this is the step's compensation.
    pub fn is_compensation(&self) -> bool {
        self.compensation
    }

    /// The idempotency key of this invocation: `{saga id}/{step index}/action`
    /// or `{saga id}/{step index}/compensation` (`{step index}.{branch index}`
    /// in a parallel step). Stable across attempts and recoveries;
    /// deduplicate on it.
    pub fn key(&self) -> String {
        let what = if self.compensation {
            "compensation"
        } else {
            "action"
        };
        match self.branch {
            Some(b) => format!("{}/{}.{b}/{what}", self.saga_id, self.index),
            None => format!("{}/{}/{what}", self.saga_id, self.index),
        }
    }
}

pub(crate) type Action<S> =
    Arc<dyn Fn(S, StepContext) -> BoxFuture<'static, Result<S, BoxError>> + Send + Sync>;
pub(crate) type Merge<S> = Arc<dyn Fn(S, Vec<S>) -> S + Send + Sync>;
pub(crate) type Correlation<S> = Arc<dyn Fn(&S) -> String + Send + Sync>;
pub(crate) type OnEvent<S> =
    Arc<dyn Fn(S, &palisade_event_store::RecordedEvent) -> Result<S, BoxError> + Send + Sync>;
pub(crate) type Compensation<S> =
    Arc<dyn Fn(S, StepContext) -> BoxFuture<'static, Result<(), BoxError>> + Send + Sync>;

/// What a step runs: one action, or branches at once.
pub(crate) enum Body<S> {
    Action(Action<S>),
    Parallel {
        branches: Vec<Step<S>>,
        merge: Merge<S>,
    },
    Await {
        correlation: Correlation<S>,
        on_event: OnEvent<S>,
    },
}

/// Where a step stands with respect to the saga's point of no return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Before the pivot: undone by its compensation (if it has one) when a later step fails.
    Compensatable,
    /// The point of no return: if it fails, the steps before it are
    /// compensated; once it completes, the saga only goes forward.
    Pivot,
    /// After the pivot: never compensated; when its attempts run out it is
    /// tried again after the saga's recovery backoff.
    Retriable,
}

/// One step of a saga over the state `S`.
///
/// ```
/// use palisade_saga::{Step, StepKind};
///
/// type E = std::io::Error;
/// let reserve = Step::new("reserve", |n: u32, _ctx| async move { Ok::<_, E>(n + 1) })
///     .compensate(|_n: u32, _ctx| async move { Ok::<_, E>(()) });
/// assert_eq!(reserve.kind(), StepKind::Compensatable);
/// let charge = Step::new("charge", |n: u32, _ctx| async move { Ok::<_, E>(n) }).pivot();
/// assert_eq!(charge.kind(), StepKind::Pivot);
/// ```
pub struct Step<S> {
    pub(crate) name: Arc<str>,
    pub(crate) kind: StepKind,
    pub(crate) body: Body<S>,
    pub(crate) compensation: Option<Compensation<S>>,
    pub(crate) retry: Option<Retry>,
    pub(crate) timeout: Option<Duration>,
}

impl<S> fmt::Debug for Step<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("compensation", &self.compensation.is_some())
            .field(
                "branches",
                &match &self.body {
                    Body::Action(_) | Body::Await { .. } => None,
                    Body::Parallel { branches, .. } => Some(branches),
                },
            )
            .field("retry", &self.retry.as_ref().map(Retry::name))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<S: Send + 'static> Step<S> {
    /// A compensatable step whose action takes the saga's state and returns
    /// the next one. Without [`compensate`](Self::compensate) it has nothing
    /// to undo (a read, a validation).
    pub fn new<F, Fut, E>(name: impl Into<Arc<str>>, action: F) -> Self
    where
        F: Fn(S, StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        Self {
            name: name.into(),
            kind: StepKind::Compensatable,
            body: Body::Action(Arc::new(move |s, ctx| {
                action(s, ctx).map(|r| r.map_err(Into::into)).boxed()
            })),
            compensation: None,
            retry: None,
            timeout: None,
        }
    }

    /// A step whose `branches` run at once (fan out), each with its own
    /// action, compensation and retries; when every branch completed, `merge`
    /// makes the saga's next state from the state before the step and the
    /// branches' states, in branch order (join).
    ///
    /// When a branch fails for good, the branches still running are
    /// cancelled (their futures dropped), and the saga compensates: the
    /// completed branches newest first, then the steps before. A cancelled
    /// branch is not compensated (it did not complete); its participant sees
    /// at most an attempt that never answered, as after a crash.
    ///
    /// A parallel step is compensatable (it comes before the pivot); its
    /// branches are plain steps (no pivot, no timeout of their own: set
    /// [`timeout`](Self::timeout) on the parallel step, it bounds them all).
    /// A resumed saga runs again only the branches its log does not record
    /// as completed.
    pub fn parallel<M>(name: impl Into<Arc<str>>, branches: Vec<Step<S>>, merge: M) -> Self
    where
        M: Fn(S, Vec<S>) -> S + Send + Sync + 'static,
    {
        Self {
            name: name.into(),
            kind: StepKind::Compensatable,
            body: Body::Parallel {
                branches,
                merge: Arc::new(merge),
            },
            compensation: None,
            retry: None,
            timeout: None,
        }
    }

    /// A step that waits for an event (choreography): the first event
    /// delivered for the correlation `correlation` makes of the saga's state
    /// (by [`Saga::deliver`](crate::Saga::deliver), or a
    /// [`ProcessManager`](crate::ProcessManager) with
    /// [`advance`](crate::ProcessManager::advance)) ends the wait, and
    /// `on_event` makes the next state from it (an error fails the step, as
    /// an action's would). It gets the event as kept for the correlation: the
    /// delivered event's id, type, schema version, payload and metadata (plus
    /// the field `palisade.saga.delivered`), in the correlation's stream.
    ///
    /// The wait is in the log: `StepStarted` and `Waiting` (with the
    /// correlation and the [`timeout`](Self::timeout)'s deadline) before it,
    /// `EventReceived` (the event's id) with the step's completion. Events are
    /// kept per correlation in the saga's store, so one delivered before the
    /// wait began ends it at once, a recovered saga waits on with the same
    /// deadline and finds an event delivered meanwhile, and an event
    /// delivered twice is kept once. Use a correlation per wait (an order id
    /// and what is awaited): every wait on one correlation sees its first event.
    ///
    /// While it waits, the runner renews its claim and checks the store at
    /// its notifications, its poll interval and the deadline. With a timeout
    /// that passes, the step fails like an action that timed out. It has no
    /// attempts: [`retry`](Self::retry) on it fails `build()`.
    pub fn await_event<C, F, E>(name: impl Into<Arc<str>>, correlation: C, on_event: F) -> Self
    where
        C: Fn(&S) -> String + Send + Sync + 'static,
        F: Fn(S, &palisade_event_store::RecordedEvent) -> Result<S, E> + Send + Sync + 'static,
        E: Into<BoxError>,
    {
        Self {
            name: name.into(),
            kind: StepKind::Compensatable,
            body: Body::Await {
                correlation: Arc::new(correlation),
                on_event: Arc::new(move |s, e| on_event(s, e).map_err(Into::into)),
            },
            compensation: None,
            retry: None,
            timeout: None,
        }
    }

    /// The compensation that undoes the action; it gets the saga's latest
    /// state. A failing compensation is retried after the saga's recovery
    /// backoff, never skipped.
    #[must_use]
    pub fn compensate<F, Fut, E>(mut self, compensation: F) -> Self
    where
        F: Fn(S, StepContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.compensation = Some(Arc::new(move |s, ctx| {
            compensation(s, ctx).map(|r| r.map_err(Into::into)).boxed()
        }));
        self
    }

    /// Makes this the pivot: the step that cannot be undone. A saga has at
    /// most one, and it has no compensation.
    #[must_use]
    pub fn pivot(mut self) -> Self {
        self.kind = StepKind::Pivot;
        self
    }

    /// Makes this a step after the pivot that only goes forward.
    #[must_use]
    pub fn retriable(mut self) -> Self {
        self.kind = StepKind::Retriable;
        self
    }

    /// The attempts of the action, by a `palisade-retry` policy: its
    /// attempts, backoff, budget and deadline. An error with a
    /// [`Rejected`](palisade_core::Rejected) in its chain is not retried.
    /// Default: one attempt.
    #[must_use]
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The most time the step's action may take, its attempts together. The
    /// deadline is written to the log with the first attempt, so it holds
    /// across crashes: a step whose deadline passed while no process ran
    /// fails when the saga is resumed. For a step after the pivot, each round
    /// of attempts has its own deadline. A compensation attempt gets this
    /// much time too. Default: none.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The step's kind.
    pub fn kind(&self) -> StepKind {
        self.kind
    }
}
