//! Projections: read models fed from the store's global order, each with its
//! own checkpoint, run side by side by a [`ProjectionRunner`].
//!
//! ```text
//! subscription (after checkpoint) ─▶ apply ─ok─▶ checkpoint = event ─▶ next
//!                                      │ error
//!                          attempt < N ─▶ wait backoff(attempt), apply again
//!                          attempt = N ─▶ Stop: the projection stops at this event
//!                                         DeadLetter: store it, checkpoint = event, next
//! ```
//!
//! A [`Projection`] (any target) is at least once: its checkpoint is saved
//! after its `handle` returns, so a crash between the two delivers the event
//! again; each event carries its [`Position`] to deduplicate by. A SQLite read
//! model (`SqliteReadModel`, feature `sqlite`) or a PostgreSQL one
//! (`PostgresReadModel`, feature `postgres`) is exactly once: the
//! projection's writes, its checkpoint and any dead letter commit in one
//! transaction, which first checks the checkpoint, so an event takes effect
//! once whatever crashes and whichever runner gets there first. Events
//! already read are applied in batches of up to `batch_size`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use palisade_core::{
    Backoff, ConfigError, Jitter, Listener, Listeners, SharedSleeper, TokioSleeper,
};
use palisade_event_store::{
    CheckpointStore, EventStore, Filter, Position, ReadAll, RecordedEvent, Subscription,
    TryStreamExt,
};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::event::Event;
use crate::query::Invalidation;

/// The error a projection returns: anything.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a projection knows about the event it is handed besides the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ProjectionContext {
    /// The event already took effect in the version of the projection this
    /// one rebuilds (see [`ProjectionRunner::start_rebuild`]): update the view,
    /// but do not repeat side effects (emails, calls to other services).
    pub replaying: bool,
}

impl ProjectionContext {
    /// A live event (`replaying: false`).
    pub fn live() -> Self {
        Self { replaying: false }
    }

    /// An event being replayed.
    pub fn replaying() -> Self {
        Self { replaying: true }
    }
}

/// A read model or a reaction fed by events, at least once.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Applies one event. An error is retried by the projection's
    /// [`FailurePolicy`]; after a crash, events after the last checkpoint come again.
    async fn handle(&self, event: &RecordedEvent, ctx: ProjectionContext) -> Result<(), BoxError>;
}

/// A shared projection is a projection, so the caller can keep a handle to its view.
#[async_trait]
impl<P: Projection + ?Sized> Projection for Arc<P> {
    async fn handle(&self, event: &RecordedEvent, ctx: ProjectionContext) -> Result<(), BoxError> {
        (**self).handle(event, ctx).await
    }
}

/// An event that kept failing, kept for listing and replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The projection it failed in.
    pub projection: String,
    /// The event.
    pub event: RecordedEvent,
    /// The last error, as text.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
}

/// Where the dead letters of at-least-once projections are kept.
#[async_trait]
pub trait DeadLetterStore: Send + Sync + 'static {
    /// Keeps `letter`.
    async fn put(&self, letter: DeadLetter) -> Result<(), BoxError>;
    /// The dead letters of `projection`, oldest position first.
    async fn list(&self, projection: &str) -> Result<Vec<DeadLetter>, BoxError>;
    /// Drops the dead letter of `projection` at `position`.
    async fn remove(&self, projection: &str, position: Position) -> Result<(), BoxError>;
}

/// Dead letters in memory.
#[derive(Debug, Default)]
pub struct InMemoryDeadLetters {
    letters: Mutex<Vec<DeadLetter>>,
}

impl InMemoryDeadLetters {
    /// None.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl DeadLetterStore for InMemoryDeadLetters {
    async fn put(&self, letter: DeadLetter) -> Result<(), BoxError> {
        let mut letters = self.letters.lock();
        letters.retain(|l| {
            !(l.projection == letter.projection && l.event.position == letter.event.position)
        });
        letters.push(letter);
        letters.sort_by_key(|l| l.event.position);
        Ok(())
    }

    async fn list(&self, projection: &str) -> Result<Vec<DeadLetter>, BoxError> {
        Ok(self
            .letters
            .lock()
            .iter()
            .filter(|l| l.projection == projection)
            .cloned()
            .collect())
    }

    async fn remove(&self, projection: &str, position: Position) -> Result<(), BoxError> {
        self.letters
            .lock()
            .retain(|l| !(l.projection == projection && l.event.position == position));
        Ok(())
    }
}

/// What a projection does after an event failed every attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AfterRetries {
    /// Stop the projection at that event (it is not checkpointed).
    Stop,
    /// Move the event to the dead letters, checkpoint it, and go on.
    DeadLetter,
}

/// How a projection retries a failing event, and what it does after.
#[derive(Debug, Clone, PartialEq)]
pub struct FailurePolicy {
    attempts: u32,
    backoff: Backoff,
    then: AfterRetries,
}

impl Default for FailurePolicy {
    /// Five attempts, waiting 100 ms doubling to 10 s with equal jitter, then stop.
    fn default() -> Self {
        Self::stop_after(5)
    }
}

impl FailurePolicy {
    fn default_backoff() -> Backoff {
        Backoff::exponential(Duration::from_millis(100))
            .max(Duration::from_secs(10))
            .jitter(Jitter::Equal)
    }

    /// `attempts` tries (at least 1), then stop.
    pub fn stop_after(attempts: u32) -> Self {
        Self {
            attempts,
            backoff: Self::default_backoff(),
            then: AfterRetries::Stop,
        }
    }

    /// `attempts` tries (at least 1), then dead-letter the event and go on.
    pub fn dead_letter_after(attempts: u32) -> Self {
        Self {
            attempts,
            backoff: Self::default_backoff(),
            then: AfterRetries::DeadLetter,
        }
    }

    /// The wait after the Nth failed attempt: `backoff.delay(N)`. Default:
    /// 100 ms doubling to 10 s, equal jitter.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.attempts == 0 {
            return Err(ConfigError::new(
                "on_failure",
                "attempts must be at least 1, got 0",
            ));
        }
        self.backoff.validate("on_failure")
    }
}

/// Where a projection's effects and checkpoint go (erased over the kinds of target).
#[async_trait]
pub(crate) trait Target: Send + Sync + 'static {
    async fn checkpoint(&self) -> Result<Option<Position>, BoxError>;
    /// Applies the events in order and saves the last as the checkpoint: on
    /// an exactly-once target, all in one transaction. On an error, `.0` is
    /// how many of the first events took effect and are checkpointed (on an
    /// exactly-once target, those committed before the failing one, if it
    /// looked for it), and the error is the event's after them.
    async fn apply(
        &self,
        events: &[(RecordedEvent, ProjectionContext)],
    ) -> Result<(), (usize, BoxError)>;
    /// Keeps the event as a dead letter and saves it as the checkpoint.
    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), BoxError>;
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BoxError>;
    /// Applies a dead letter's event (not moving the checkpoint) and drops the
    /// letter: `true` when this call applied it, `false` when it was gone
    /// already (replayed by another caller).
    async fn replay(&self, letter: &DeadLetter) -> Result<bool, BoxError>;
}

/// A [`Projection`] with a [`CheckpointStore`] and a [`DeadLetterStore`]: at least once.
struct AtLeastOnce<P> {
    name: String,
    projection: P,
    checkpoints: Arc<dyn CheckpointStore>,
    dead: Arc<dyn DeadLetterStore>,
}

#[async_trait]
impl<P: Projection> Target for AtLeastOnce<P> {
    async fn checkpoint(&self) -> Result<Option<Position>, BoxError> {
        Ok(self.checkpoints.load(&self.name).await?)
    }
    async fn apply(
        &self,
        events: &[(RecordedEvent, ProjectionContext)],
    ) -> Result<(), (usize, BoxError)> {
        for (i, (event, ctx)) in events.iter().enumerate() {
            if let Err(error) = in_trace(event, self.projection.handle(event, *ctx)).await {
                // Keep what took effect, so a retry of the rest does not repeat it.
                if i > 0
                    && self
                        .checkpoints
                        .save(&self.name, events[i - 1].0.position)
                        .await
                        .is_ok()
                {
                    return Err((i, error));
                }
                return Err((0, error));
            }
        }
        match events.last() {
            Some((last, _)) => self
                .checkpoints
                .save(&self.name, last.position)
                .await
                .map_err(|e| (0, e.into())),
            None => Ok(()),
        }
    }
    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), BoxError> {
        let position = letter.event.position;
        self.dead.put(letter).await?;
        Ok(self.checkpoints.save(&self.name, position).await?)
    }
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BoxError> {
        self.dead.list(&self.name).await
    }
    async fn replay(&self, letter: &DeadLetter) -> Result<bool, BoxError> {
        // At least once: two replays at once may both handle the event.
        self.projection
            .handle(&letter.event, ProjectionContext::live())
            .await?;
        self.dead.remove(&self.name, letter.event.position).await?;
        Ok(true)
    }
}

/// Runs `work` in the trace `event`'s `traceparent` names (feature `otel`).
pub(crate) async fn in_trace<F: std::future::Future>(event: &RecordedEvent, work: F) -> F::Output {
    #[cfg(feature = "otel")]
    if let Some(cx) = crate::telemetry::parent_context(event.metadata.traceparent.as_deref()) {
        use opentelemetry::context::FutureExt as _;
        return work.with_context(cx).await;
    }
    let _ = event;
    work.await
}

/// One projection to run: its name (the checkpoint's key), target, filter and failure policy.
pub struct Projector {
    pub(crate) name: Arc<str>,
    pub(crate) target: Arc<dyn Target>,
    pub(crate) filter: Filter,
    pub(crate) failure: FailurePolicy,
    pub(crate) invalidations: Vec<Invalidation>,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("name", &self.name)
            .field("filter", &self.filter)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl Projector {
    /// `projection`, at least once, with its checkpoint in `checkpoints` and
    /// its dead letters in memory.
    pub fn new(
        name: impl Into<Arc<str>>,
        projection: impl Projection,
        checkpoints: Arc<dyn CheckpointStore>,
    ) -> Self {
        Self::with_dead_letters(
            name,
            projection,
            checkpoints,
            Arc::new(InMemoryDeadLetters::new()),
        )
    }

    /// `projection`, at least once, with its checkpoint in `checkpoints` and
    /// its dead letters in `dead_letters`.
    pub fn with_dead_letters(
        name: impl Into<Arc<str>>,
        projection: impl Projection,
        checkpoints: Arc<dyn CheckpointStore>,
        dead_letters: Arc<dyn DeadLetterStore>,
    ) -> Self {
        let name = name.into();
        Self::from_target(
            Arc::clone(&name),
            Arc::new(AtLeastOnce {
                name: name.to_string(),
                projection,
                checkpoints,
                dead: dead_letters,
            }),
        )
    }

    pub(crate) fn from_target(name: Arc<str>, target: Arc<dyn Target>) -> Self {
        Self {
            name,
            target,
            filter: Filter::all(),
            failure: FailurePolicy::default(),
            invalidations: Vec::new(),
        }
    }

    /// After each event this projection applies (once its transaction has
    /// committed, on a SQLite or PostgreSQL read model), drops the cached
    /// query answers `invalidation` names for it (made by
    /// [`Queries::invalidation`](crate::Queries::invalidation)), and waits
    /// for that (with a tiered cache: the remote tier's removal and the
    /// message to the other instances) before it reports the event handled;
    /// a dead-letter replay that succeeds does too. May be called again for
    /// more queries. Default: none.
    #[must_use]
    pub fn invalidates(mut self, invalidation: Invalidation) -> Self {
        self.invalidations.push(invalidation);
        self
    }

    /// Only events that pass `filter`. Default: every event.
    #[must_use]
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// How failing events are retried and what happens after. Default:
    /// [`FailurePolicy::default`] (five attempts, then stop).
    #[must_use]
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }
}

/// The state of one running projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionStatus {
    /// The position of the last event applied (or dead-lettered): its checkpoint.
    pub position: Position,
    /// Events applied by this runner (replays included).
    pub handled: u64,
    /// Of those, events applied as replays (by a rebuild).
    pub replayed: u64,
    /// Events moved to the dead letters by this runner.
    pub dead_lettered: u64,
    /// Why it stopped, if it did.
    pub stopped: Option<String>,
}

struct Running {
    projector: Projector,
    status: Arc<Mutex<ProjectionStatus>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Set to stop the worker between events.
    stop: watch::Sender<bool>,
    /// Its position after each event, for a rebuild that follows it.
    position: watch::Receiver<Position>,
    /// Live, or following another projection's progress (a rebuild).
    role: watch::Sender<Role>,
    /// The projection it rebuilds, while it does.
    rebuilds: Option<Arc<str>>,
}

/// How a worker treats the events it applies.
#[derive(Debug, Clone)]
enum Role {
    /// Every event is live.
    Live,
    /// A rebuild: apply only what the other version has applied, each as a replay.
    Follow(watch::Receiver<Position>),
    /// A promoted rebuild: events up to the other version's last are replays.
    LiveAfter(Position),
}

/// What every worker of a runner shares.
#[derive(Clone)]
struct Shared {
    store: Arc<dyn EventStore>,
    page: u64,
    batch: usize,
    sleeper: SharedSleeper,
    listeners: Arc<Listeners<Event>>,
}

/// Loads `projector`'s checkpoint and starts its worker.
async fn spawn(shared: &Shared, projector: Projector, role: Role) -> Result<Running, RunnerError> {
    let from = projector
        .target
        .checkpoint()
        .await
        .map_err(|source| RunnerError::Checkpoint {
            projection: projector.name.to_string(),
            source,
        })?;
    let at = from.unwrap_or(Position::START);
    let status = Arc::new(Mutex::new(ProjectionStatus {
        position: at,
        handled: 0,
        replayed: 0,
        dead_lettered: 0,
        stopped: None,
    }));
    let (stop, stop_rx) = watch::channel(false);
    let (position_tx, position) = watch::channel(at);
    let (role, role_rx) = watch::channel(role);
    let worker = Worker {
        store: Arc::clone(&shared.store),
        name: Arc::clone(&projector.name),
        target: Arc::clone(&projector.target),
        filter: projector.filter.clone(),
        failure: projector.failure.clone(),
        from,
        page: shared.page,
        batch: shared.batch,
        sleeper: Arc::clone(&shared.sleeper),
        listeners: Arc::clone(&shared.listeners),
        status: Arc::clone(&status),
        stop: stop_rx,
        position: position_tx,
        role: role_rx,
        invalidations: projector.invalidations.clone(),
    };
    let task = Some(tokio::spawn(run_stopping_on_panic(worker)));
    Ok(Running {
        projector,
        status,
        task,
        stop,
        position,
        role,
        rebuilds: None,
    })
}

/// Runs `worker`. A panic in the projection's own code (a `handle` or
/// `apply`, an invalidation's closure) stops the projection with the panic's
/// message, as a failure under [`FailurePolicy::stop_after`] would: without this
/// the task would end unseen, its status never saying it stopped, and
/// [`ProjectionRunner::wait_caught_up`] would wait for ever.
async fn run_stopping_on_panic(worker: Worker) {
    use futures_util::FutureExt as _;
    let name = Arc::clone(&worker.name);
    let listeners = Arc::clone(&worker.listeners);
    let status = Arc::clone(&worker.status);
    if let Err(panic) = std::panic::AssertUnwindSafe(worker.run())
        .catch_unwind()
        .await
    {
        let error = format!("the projection panicked: {}", panic_message(&*panic));
        let position = status.lock().position;
        listeners.emit_with(|| Event::ProjectionStopped {
            projection: name,
            position,
            error: error.clone(),
        });
        status.lock().stopped = Some(error);
    }
}

/// The text a panic was raised with (`panic!("…")` gives a `&str` or a `String`).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

/// Builds a [`ProjectionRunner`]: `ProjectionRunner::builder(store).projection(…)…start()`.
#[must_use]
pub struct ProjectionRunnerBuilder {
    store: Arc<dyn EventStore>,
    name: Arc<str>,
    projectors: Vec<Projector>,
    page: u64,
    batch: usize,
    sleeper: Option<SharedSleeper>,
    listeners: Listeners<Event>,
    #[cfg(feature = "tracing")]
    tracing: bool,
    #[cfg(feature = "otel")]
    meter: Option<palisade_core::telemetry::MeterSource>,
}

impl std::fmt::Debug for ProjectionRunnerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunnerBuilder")
            .field("name", &self.name)
            .field("projections", &self.projectors)
            .finish_non_exhaustive()
    }
}

impl ProjectionRunnerBuilder {
    /// The instance name in telemetry. Default `"default"`; not empty.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Adds a projection. Names must be distinct and not empty.
    pub fn projection(mut self, projector: Projector) -> Self {
        self.projectors.push(projector);
        self
    }

    /// How many events one read of the log fetches. Default 512; at least 1.
    pub fn page_size(mut self, events: u64) -> Self {
        self.page = events;
        self
    }

    /// The most events applied together: events already read are applied in
    /// one call (one transaction on a SQLite or PostgreSQL read model, one
    /// checkpoint save otherwise). When a batch fails, the events before the
    /// failing one are kept (a PostgreSQL read model finds it inside the
    /// transaction, one savepoint per event; a SQLite one applies the batch
    /// again one event at a time), the failing event is applied alone under
    /// the failure policy, and the events after it go on as a batch. Default
    /// 500 (about one page of the log, which is read 512 at a time): a
    /// PostgreSQL read model pays a few round trips per batch, so larger
    /// batches catch up faster (see docs/benchmarks.md, "CQRS"); at least 1.
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch = events;
        self
    }

    /// What waits between retries and polls. Default: tokio's timer.
    pub fn sleeper(mut self, sleeper: SharedSleeper) -> Self {
        self.sleeper = Some(sleeper);
        self
    }

    /// Adds a listener for the runner's [`Event`]s. Default: none.
    pub fn listener(mut self, listener: impl Listener<Event>) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Emits `tracing` events with target `palisade_cqrs`.
    #[cfg(feature = "tracing")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
    pub fn tracing(mut self) -> Self {
        self.tracing = true;
        self
    }

    /// Records `palisade.cqrs.projection.lag` on the global meter provider (as it is at `start()`).
    #[cfg(feature = "otel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
    pub fn otel(mut self) -> Self {
        self.meter = Some(palisade_core::telemetry::MeterSource::Global);
        self
    }

    /// Records `palisade.cqrs.projection.lag` on `meter`.
    #[cfg(feature = "otel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
    pub fn meter(mut self, meter: opentelemetry::metrics::Meter) -> Self {
        self.meter = Some(palisade_core::telemetry::MeterSource::Meter(meter));
        self
    }

    /// Checks the settings, loads each projection's checkpoint and starts a
    /// task per projection on the current tokio runtime.
    ///
    /// # Errors
    /// [`RunnerError::Config`] naming `name`, `projection` (an empty or repeated name),
    /// `page_size` or `on_failure`; [`RunnerError::Checkpoint`] when a checkpoint cannot be loaded.
    pub async fn start(self) -> Result<ProjectionRunner, RunnerError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty").into());
        }
        if self.page == 0 {
            return Err(ConfigError::new("page_size", "must be at least 1, got 0").into());
        }
        if self.batch == 0 {
            return Err(ConfigError::new("batch_size", "must be at least 1, got 0").into());
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.projectors {
            if p.name.is_empty() || !seen.insert(Arc::clone(&p.name)) {
                return Err(ConfigError::new(
                    "projection",
                    format!(
                        "projection names must be distinct and not empty, got {:?}",
                        p.name
                    ),
                )
                .into());
            }
            p.failure.validate()?;
        }
        #[allow(unused_mut)]
        let mut listeners = self.listeners;
        #[cfg(feature = "tracing")]
        if self.tracing {
            listeners.push(Arc::new(crate::tracing_listener::TracingListener));
        }
        #[cfg(feature = "otel")]
        if let Some(source) = self.meter {
            listeners.push(Arc::new(crate::telemetry::LagMetrics::new(
                source, &self.name,
            )));
        }
        let shared = Shared {
            store: Arc::clone(&self.store),
            page: self.page,
            batch: self.batch,
            sleeper: self.sleeper.unwrap_or_else(TokioSleeper::shared),
            listeners: Arc::new(listeners),
        };
        let mut running = HashMap::new();
        for projector in self.projectors {
            let name = Arc::clone(&projector.name);
            running.insert(name, spawn(&shared, projector, Role::Live).await?);
        }
        Ok(ProjectionRunner {
            store: self.store,
            shared,
            running,
        })
    }
}

/// The error of starting a runner or of a runner's dead-letter calls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunnerError {
    /// A setting is out of bounds.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A projection's checkpoint could not be loaded.
    #[error("loading the checkpoint of projection `{projection}`: {source}")]
    Checkpoint {
        /// The projection.
        projection: String,
        /// What failed.
        #[source]
        source: BoxError,
    },
    /// No projection of that name runs here.
    #[error("no projection named `{0}`")]
    UnknownProjection(String),
    /// The dead letters could not be read or replayed.
    #[error("dead letters of projection `{projection}`: {source}")]
    DeadLetters {
        /// The projection.
        projection: String,
        /// What failed.
        #[source]
        source: BoxError,
    },
    /// The store failed (reading the head, for the lag).
    #[error("event store: {0}")]
    Store(#[source] palisade_event_store::Error),
}

/// Several projections, each on its own task with its own checkpoint.
/// Dropping the runner stops them (an event being applied may still commit,
/// exactly once on a SQLite read model).
pub struct ProjectionRunner {
    store: Arc<dyn EventStore>,
    shared: Shared,
    running: HashMap<Arc<str>, Running>,
}

impl std::fmt::Debug for ProjectionRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("projections", &self.running.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Drop for ProjectionRunner {
    fn drop(&mut self) {
        for r in self.running.values() {
            if let Some(task) = &r.task {
                task.abort();
            }
        }
    }
}

impl ProjectionRunner {
    /// A builder over `store`.
    pub fn builder(store: Arc<dyn EventStore>) -> ProjectionRunnerBuilder {
        ProjectionRunnerBuilder {
            store,
            name: Arc::from("default"),
            projectors: Vec::new(),
            page: 512,
            batch: 500,
            sleeper: None,
            listeners: Listeners::new(),
            #[cfg(feature = "tracing")]
            tracing: false,
            #[cfg(feature = "otel")]
            meter: None,
        }
    }

    fn get(&self, projection: &str) -> Result<&Running, RunnerError> {
        self.running
            .get(projection)
            .ok_or_else(|| RunnerError::UnknownProjection(projection.to_owned()))
    }

    /// The status of `projection`.
    ///
    /// # Errors
    /// [`RunnerError::UnknownProjection`].
    pub fn status(&self, projection: &str) -> Result<ProjectionStatus, RunnerError> {
        Ok(self.get(projection)?.status.lock().clone())
    }

    /// How many events of the global log come after `projection`'s checkpoint
    /// (all events, not only those its filter passes).
    ///
    /// # Errors
    /// [`RunnerError::UnknownProjection`] or a store error.
    pub async fn lag(&self, projection: &str) -> Result<u64, RunnerError> {
        let position = self.status(projection)?.position;
        let head = self.store.head().await.map_err(RunnerError::Store)?;
        Ok(head.sequence.saturating_sub(position.sequence))
    }

    /// Waits until no projection has an event its filter passes after its
    /// checkpoint, or it stopped; checks every `every` through tokio's timer.
    ///
    /// # Errors
    /// A store error reading the log.
    pub async fn wait_caught_up(&self, every: Duration) -> Result<(), RunnerError> {
        loop {
            let mut done = true;
            for r in self.running.values() {
                let (position, stopped) = {
                    let s = r.status.lock();
                    (s.position, s.stopped.is_some())
                };
                if stopped {
                    continue;
                }
                let mut next = self
                    .store
                    .read_all(
                        ReadAll::after(position)
                            .filter(r.projector.filter.clone())
                            .limit(1),
                    )
                    .await
                    .map_err(RunnerError::Store)?;
                if next.try_next().await.map_err(RunnerError::Store)?.is_some() {
                    done = false;
                    break;
                }
            }
            if done {
                return Ok(());
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Starts `projector` as a new version of the running projection `of`,
    /// from its own checkpoint (the start of the log, for new tables): it
    /// applies only events `of` has applied already, each with
    /// [`ProjectionContext::replaying`] set, so it never runs ahead of the
    /// version that serves and never repeats its side effects. `of` goes on
    /// serving; [`promote`](Self::promote) switches over.
    ///
    /// # Errors
    /// [`RunnerError::UnknownProjection`] for `of`; [`RunnerError::Config`]
    /// naming `start_rebuild` when the new name is taken or empty, or its
    /// failure policy is invalid; [`RunnerError::Checkpoint`].
    pub async fn start_rebuild(
        &mut self,
        projector: Projector,
        of: &str,
    ) -> Result<(), RunnerError> {
        let leader = self.get(of)?.position.clone();
        if projector.name.is_empty() || self.running.contains_key(&projector.name) {
            return Err(ConfigError::new(
                "start_rebuild",
                format!(
                    "the new version needs a name of its own, got {:?}",
                    projector.name
                ),
            )
            .into());
        }
        projector.failure.validate()?;
        let name = Arc::clone(&projector.name);
        let mut running = spawn(&self.shared, projector, Role::Follow(leader)).await?;
        running.rebuilds = Some(Arc::from(of));
        self.running.insert(name, running);
        Ok(())
    }

    /// Stops `projection` after the event it is applying (if any) and waits
    /// for it; returns its last position. Its status says it stopped.
    ///
    /// # Errors
    /// [`RunnerError::UnknownProjection`].
    pub async fn stop(&mut self, projection: &str) -> Result<Position, RunnerError> {
        let r = self
            .running
            .get_mut(projection)
            .ok_or_else(|| RunnerError::UnknownProjection(projection.to_owned()))?;
        r.stop.send_replace(true);
        if let Some(task) = r.task.take() {
            // A worker ends by itself between events; a panic in a projection ends it too.
            let _ = task.await;
        }
        let mut status = r.status.lock();
        status.stopped.get_or_insert_with(|| "stopped".to_owned());
        Ok(status.position)
    }

    /// Switches from the version a rebuild follows to the rebuild: stops the
    /// old version between events, and lets `rebuild` go on live. Events up
    /// to the old version's last are still replays for it; every later event
    /// is live, so each event's side effects happen once, in one version.
    /// Returns the old version's last position. Point reads at the new
    /// version's tables once [`wait_caught_up`](Self::wait_caught_up) returns.
    ///
    /// # Errors
    /// [`RunnerError::UnknownProjection`], or [`RunnerError::Config`] naming
    /// `promote` when `rebuild` is not a rebuild.
    pub async fn promote(&mut self, rebuild: &str) -> Result<Position, RunnerError> {
        let Some(old) = self.get(rebuild)?.rebuilds.clone() else {
            return Err(
                ConfigError::new("promote", format!("`{rebuild}` is not a rebuild")).into(),
            );
        };
        let last = self.stop(&old).await?;
        if let Some(r) = self.running.get_mut(rebuild) {
            r.rebuilds = None;
            r.role.send_replace(Role::LiveAfter(last));
        }
        Ok(last)
    }

    /// The dead letters of `projection`, oldest first.
    ///
    /// # Errors
    /// [`RunnerError::UnknownProjection`] or [`RunnerError::DeadLetters`].
    pub async fn dead_letters(&self, projection: &str) -> Result<Vec<DeadLetter>, RunnerError> {
        self.get(projection)?
            .projector
            .target
            .dead_letters()
            .await
            .map_err(|source| RunnerError::DeadLetters {
                projection: projection.to_owned(),
                source,
            })
    }

    /// Applies each dead letter of `projection` again (once, no retry) and
    /// drops those that succeed; returns how many this call applied (on a
    /// SQLite or PostgreSQL read model a letter another replay took first is
    /// not applied again; on an at-least-once target two replays at once may
    /// both apply it). The checkpoint does not move.
    ///
    /// # Errors
    /// [`RunnerError::UnknownProjection`], or [`RunnerError::DeadLetters`]
    /// when listing fails (a letter that fails again stays, and is not an error).
    pub async fn replay_dead_letters(&self, projection: &str) -> Result<usize, RunnerError> {
        let letters = self.dead_letters(projection).await?;
        let projector = &self.get(projection)?.projector;
        let mut replayed = 0;
        for letter in &letters {
            if let Ok(true) = projector.target.replay(letter).await {
                for invalidation in &projector.invalidations {
                    invalidation.applied(&projector.name, &letter.event).await;
                }
                replayed += 1;
            }
        }
        Ok(replayed)
    }
}

/// A checkpoint store that only answers the position the runner loaded
/// from the target (the subscription starts after it; the runner saves
/// checkpoints through the target).
struct Start(Option<Position>);

#[async_trait]
impl CheckpointStore for Start {
    async fn load(&self, _: &str) -> palisade_event_store::Result<Option<Position>> {
        Ok(self.0)
    }
    async fn save(&self, _: &str, _: Position) -> palisade_event_store::Result<()> {
        Ok(())
    }
}

struct Worker {
    store: Arc<dyn EventStore>,
    name: Arc<str>,
    target: Arc<dyn Target>,
    filter: Filter,
    failure: FailurePolicy,
    from: Option<Position>,
    page: u64,
    batch: usize,
    sleeper: SharedSleeper,
    listeners: Arc<Listeners<Event>>,
    status: Arc<Mutex<ProjectionStatus>>,
    stop: watch::Receiver<bool>,
    position: watch::Sender<Position>,
    role: watch::Receiver<Role>,
    invalidations: Vec<Invalidation>,
}

impl Worker {
    /// Whether `event` is a replay, waiting first (as a rebuild) until the
    /// version it follows has applied it; `None` when told to stop meanwhile.
    async fn replaying(&mut self, event: &RecordedEvent) -> Option<bool> {
        loop {
            let role = self.role.borrow_and_update().clone();
            match role {
                Role::Live => return Some(false),
                Role::LiveAfter(last) => return Some(event.position <= last),
                Role::Follow(mut leader) => {
                    if *leader.borrow_and_update() >= event.position {
                        return Some(true);
                    }
                    let leader_gone = tokio::select! {
                        biased;
                        _ = self.stop.wait_for(|s| *s) => return None,
                        _ = self.role.changed() => false,
                        changed = leader.changed() => changed.is_err(),
                    };
                    if leader_gone {
                        // The old version is gone: wait to be promoted (or stopped).
                        tokio::select! {
                            biased;
                            _ = self.stop.wait_for(|s| *s) => return None,
                            _ = self.role.changed() => {}
                        }
                    }
                }
            }
        }
    }

    fn stop(&self, position: Position, error: String) {
        self.listeners.emit_with(|| Event::ProjectionStopped {
            projection: Arc::clone(&self.name),
            position,
            error: error.clone(),
        });
        self.status.lock().stopped = Some(error);
    }

    async fn run(mut self) {
        let started = Subscription::builder(
            Arc::clone(&self.store),
            Arc::new(Start(self.from)),
            Arc::clone(&self.name),
        )
        .filter(self.filter.clone())
        .page_size(self.page)
        .sleeper(Arc::clone(&self.sleeper))
        .start()
        .await;
        let mut sub = match started {
            Ok(s) => s,
            Err(e) => return self.stop(self.from.unwrap_or_default(), e.to_string()),
        };
        // An event read ahead (while filling a batch) that is next in line.
        let mut pending: Option<Result<RecordedEvent, palisade_event_store::Error>> = None;
        loop {
            let next = if let Some(next) = pending.take() {
                next
            } else {
                tokio::select! {
                    biased;
                    _ = self.stop.wait_for(|s| *s) => return,
                    next = sub.next() => next,
                }
            };
            let event = match next {
                Ok(e) => e,
                Err(e) => return self.stop(sub.position(), e.to_string()),
            };
            let Some(replaying) = self.replaying(&event).await else {
                return;
            };
            let mut batch = vec![(event, ProjectionContext { replaying })];
            // Fill the batch with events already at hand, whose replay flag is known now.
            while batch.len() < self.batch {
                let Some(next) = futures_util::FutureExt::now_or_never(sub.next()) else {
                    break;
                };
                match next {
                    Ok(e) => {
                        if let Some(replaying) = self.replaying_now(&e) {
                            batch.push((e, ProjectionContext { replaying }));
                        } else {
                            pending = Some(Ok(e));
                            break;
                        }
                    }
                    Err(e) => {
                        pending = Some(Err(e));
                        break;
                    }
                }
            }
            // A batch in one call; when it fails, the events before the
            // failing one are kept, that one is applied alone under the
            // failure policy, and the rest goes on as a batch again.
            let mut from = 0;
            while from < batch.len() {
                let rest = &batch[from..];
                if rest.len() > 1 {
                    match self.target.apply(rest).await {
                        Ok(()) => {
                            for (event, ctx) in rest {
                                self.applied(event, *ctx).await;
                            }
                            break;
                        }
                        Err((done, _)) => {
                            for (event, ctx) in &rest[..done] {
                                self.applied(event, *ctx).await;
                            }
                            from += done;
                        }
                    }
                }
                if !self.apply_one(&batch[from]).await {
                    return;
                }
                from += 1;
            }
        }
    }

    /// Whether `event` is a replay, when that is known without waiting.
    fn replaying_now(&self, event: &RecordedEvent) -> Option<bool> {
        match &*self.role.borrow() {
            Role::Live => Some(false),
            Role::LiveAfter(last) => Some(event.position <= *last),
            Role::Follow(leader) => (*leader.borrow() >= event.position).then_some(true),
        }
    }

    /// Reports an applied (committed) event, first dropping the query
    /// answers it made stale (with a tiered cache, waiting for the remote
    /// tier and the message to the other instances), so that nothing that
    /// learns of the event from the runner (its status, `wait_caught_up`, a
    /// listener) sees an answer from before it.
    async fn applied(&self, event: &RecordedEvent, ctx: ProjectionContext) {
        for invalidation in &self.invalidations {
            invalidation.applied(&self.name, event).await;
        }
        {
            let mut s = self.status.lock();
            s.position = event.position;
            s.handled += 1;
            s.replayed += u64::from(ctx.replaying);
        }
        self.position.send_replace(event.position);
        if !self.listeners.is_empty() {
            let lag = self
                .store
                .head()
                .await
                .ok()
                .map(|h| h.sequence.saturating_sub(event.position.sequence));
            self.listeners.emit_with(|| Event::ProjectionHandled {
                projection: Arc::clone(&self.name),
                position: event.position,
                lag,
            });
        }
    }

    /// Applies one event with retries, then dead-letters it or stops;
    /// `false` when the projection stopped.
    async fn apply_one(&self, item: &(RecordedEvent, ProjectionContext)) -> bool {
        let mut attempt = 0;
        let one = std::slice::from_ref(item);
        let (event, ctx) = (&item.0, item.1);
        loop {
            attempt += 1;
            match self.target.apply(one).await.map_err(|(_, e)| e) {
                Ok(()) => {
                    self.applied(event, ctx).await;
                    return true;
                }
                Err(error) if attempt < self.failure.attempts => {
                    let retry_in = self.failure.backoff.delay(attempt);
                    self.listeners.emit_with(|| Event::ProjectionFailed {
                        projection: Arc::clone(&self.name),
                        position: event.position,
                        attempt,
                        error: error.to_string(),
                        retry_in,
                    });
                    self.sleeper.sleep(retry_in).await;
                }
                Err(error) if self.failure.then == AfterRetries::DeadLetter => {
                    let letter = DeadLetter {
                        projection: self.name.to_string(),
                        event: event.clone(),
                        error: error.to_string(),
                        attempts: attempt,
                    };
                    if let Err(e) = self.target.dead_letter(letter).await {
                        self.stop(event.position, format!("keeping a dead letter: {e}"));
                        return false;
                    }
                    {
                        let mut s = self.status.lock();
                        s.position = event.position;
                        s.dead_lettered += 1;
                    }
                    self.position.send_replace(event.position);
                    self.listeners.emit_with(|| Event::DeadLettered {
                        projection: Arc::clone(&self.name),
                        position: event.position,
                        error: error.to_string(),
                    });
                    return true;
                }
                Err(error) => {
                    self.stop(event.position, error.to_string());
                    return false;
                }
            }
        }
    }
}
