//! Executing a command end to end: load, handle, append; on a version
//! conflict, reload and handle again, a bounded number of times.
//!
//! ```text
//! load (snapshot + events) ─▶ already applied? ─yes─▶ Ok(duplicate)
//!        ▲                         │ no
//!        │                      handle ─Err─▶ Refused
//!        │                         │ events
//!   wait backoff(N) ◀─conflict── append(expected = loaded version) ─ok─▶ snapshot? ─▶ Ok
//! ```
//!
//! Concurrency: nothing is locked. Two writers on one aggregate both load;
//! the store's expected-version check lets one append win, the other sees a
//! conflict, reloads the state that now includes the winner's events and
//! decides again. The decision is therefore always made on the state the
//! events are appended after.
//!
//! Idempotency: a command carrying an id gets event ids derived from it
//! (UUIDv5 of `<stream>/<index>` in the command id's namespace). When the
//! load finds the first of them among the events read, the command was
//! applied before and nothing is handled or appended. When the earlier events
//! are hidden by a snapshot, either the aggregate decides the same events
//! again and the store refuses their ids as duplicates, or it refuses the
//! command or decides nothing; in each case the handler then reads the
//! stream up to the snapshot for the first id, and a find is a resubmission.
//! The id names the command: a resubmission is not handled again, whatever
//! it carries.

use std::sync::Arc;

use palisade_core::{Backoff, Listeners, SharedSleeper};
use palisade_event_store::{
    Error as StoreError, EventStore, Metadata, Position, ReadStream, StreamName, TryStreamExt,
};
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::config::{CommandHandlerBuilder, SnapshotPolicy};
use crate::error::CommandError;
use crate::event::{CommandOutcome, Event};
use crate::repository::{Repository, encode, expected_version};

/// Who and what caused a command: its id (for idempotency), correlation and
/// causation ids and user fields, all copied into every event's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandContext {
    command_id: Option<Uuid>,
    metadata: Metadata,
}

impl CommandContext {
    /// No id, no metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// The command's id: its events get ids derived from it, so submitting
    /// it again appends nothing. Also the causation id (and the correlation
    /// id) unless they are set.
    #[must_use]
    pub fn command_id(mut self, id: Uuid) -> Self {
        self.command_id = Some(id);
        self
    }

    /// The id shared by everything one request caused.
    #[must_use]
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.correlation_id = Some(id.into());
        self
    }

    /// The id of the message that caused this command.
    #[must_use]
    pub fn causation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.causation_id = Some(id.into());
        self
    }

    /// A user field.
    #[must_use]
    pub fn field(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.fields.insert(key.into(), value.into());
        self
    }

    /// The metadata every event of the command carries.
    fn event_metadata(&self) -> Metadata {
        let mut m = self.metadata.clone();
        if let Some(id) = self.command_id {
            m.causation_id.get_or_insert_with(|| id.to_string());
            m.correlation_id.get_or_insert_with(|| id.to_string());
        }
        #[cfg(feature = "otel")]
        if m.traceparent.is_none() {
            m.traceparent = crate::telemetry::current_traceparent();
        }
        m
    }
}

/// The id of the `index`-th event of command `command` on `stream`.
pub fn event_id(command: Uuid, stream: &StreamName, index: usize) -> Uuid {
    Uuid::new_v5(&command, format!("{stream}/{index}").as_bytes())
}

/// What an accepted command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The stream's version after the command (its last event's version);
    /// for a resubmission, the version of the first event it appended the first time.
    pub version: u64,
    /// The position of that event; `None` when it caused no event.
    pub position: Option<Position>,
    /// Events this call appended (0 for a resubmission).
    pub events: usize,
    /// Attempts made (1 when nothing conflicted).
    pub attempts: u32,
    /// Whether the command had been applied before (same command id): nothing was appended.
    pub duplicate: bool,
}

pub(crate) struct Inner<A: Aggregate> {
    pub(crate) repository: Repository<A>,
    pub(crate) services: A::Services,
    pub(crate) name: Arc<str>,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) sleeper: SharedSleeper,
    pub(crate) snapshots: SnapshotPolicy,
    pub(crate) listeners: Listeners<Event>,
    #[cfg(feature = "tracing")]
    pub(crate) tracing: bool,
    /// Where the `cqrs.command` spans go (feature `otel`).
    #[cfg(feature = "otel")]
    pub(crate) tracer: Option<opentelemetry::global::BoxedTracer>,
    /// Hot aggregates: their state and version, to read only newer events.
    pub(crate) cache: Option<Arc<dyn StateCache<A>>>,
}

/// A cache of aggregate states by stream (feature `cache`: palisade-cache).
pub(crate) trait StateCache<A>: Send + Sync {
    fn get(&self, stream: &StreamName) -> Option<(A, u64)>;
    fn put(&self, stream: StreamName, state: A, version: u64);
    fn remove(&self, stream: &StreamName);
}

#[cfg(feature = "cache")]
impl<A: Clone + Send + Sync + 'static> StateCache<A>
    for palisade_cache::Cache<StreamName, (A, u64)>
{
    fn get(&self, stream: &StreamName) -> Option<(A, u64)> {
        palisade_cache::Cache::get(self, stream)
    }
    fn put(&self, stream: StreamName, state: A, version: u64) {
        self.insert(stream, (state, version));
    }
    fn remove(&self, stream: &StreamName) {
        self.invalidate(stream);
    }
}

/// Executes commands on aggregates of type `A`. Cheap to clone; clones share everything.
///
/// ```
/// # use palisade_cqrs::*;
/// # use std::sync::Arc;
/// # #[derive(Default, serde::Serialize, serde::Deserialize)] struct Counter(u64);
/// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct Added;
/// # impl DomainEvent for Added { fn event_type(&self) -> &'static str { "Added" } }
/// # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
/// # impl Aggregate for Counter {
/// #     const TYPE: &'static str = "counter";
/// #     type Command = (); type Event = Added; type Error = Never; type Services = ();
/// #     async fn handle(&self, _: &(), _: &()) -> Result<Vec<Added>, Never> { Ok(vec![Added]) }
/// #     fn apply(&mut self, _: Added) { self.0 += 1; }
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = Arc::new(InMemoryEventStore::new());
/// let counters = CommandHandler::<Counter>::builder(store, ()).build()?;
/// let id = uuid::Uuid::new_v4();
/// let first = counters.execute_with("c1", &(), &CommandContext::new().command_id(id)).await?;
/// let again = counters.execute_with("c1", &(), &CommandContext::new().command_id(id)).await?;
/// assert_eq!((first.events, again.events, again.duplicate), (1, 0, true));
/// assert_eq!(counters.load("c1").await?.state.0, 1);
/// # Ok(())
/// # }
/// ```
pub struct CommandHandler<A: Aggregate> {
    pub(crate) inner: Arc<Inner<A>>,
}

impl<A: Aggregate> Clone for CommandHandler<A> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<A: Aggregate> std::fmt::Debug for CommandHandler<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandHandler")
            .field("aggregate", &A::TYPE)
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

type CommandResult<A> = Result<Committed, CommandError<<A as Aggregate>::Error>>;

impl<A: Aggregate> CommandHandler<A> {
    /// A builder over `store`, with `services` for [`Aggregate::handle`].
    pub fn builder(store: Arc<dyn EventStore>, services: A::Services) -> CommandHandlerBuilder<A> {
        CommandHandlerBuilder::new(store, services)
    }

    /// The repository the handler loads and appends through.
    pub fn repository(&self) -> &Repository<A> {
        &self.inner.repository
    }

    /// Loads aggregate `id` (latest snapshot plus the events after it).
    ///
    /// # Errors
    /// As [`Repository::load`].
    pub async fn load(&self, id: &str) -> Result<crate::Loaded<A>, StoreError> {
        self.inner.repository.load(id).await
    }

    /// Executes `command` on aggregate `id`, with no command id or metadata.
    ///
    /// # Errors
    /// As [`execute_with`](Self::execute_with).
    pub async fn execute(&self, id: &str, command: &A::Command) -> CommandResult<A> {
        self.execute_with(id, command, &CommandContext::new()).await
    }

    /// Executes `command` on aggregate `id`: load, handle, append; on a
    /// version conflict, waits by the conflict backoff and does it all again,
    /// up to [`max_attempts`](CommandHandlerBuilder::max_attempts) times.
    ///
    /// # Errors
    /// [`CommandError::Refused`] with the aggregate's error,
    /// [`CommandError::Conflict`] when every attempt conflicted,
    /// [`CommandError::InvalidId`], or [`CommandError::Store`].
    pub async fn execute_with(
        &self,
        id: &str,
        command: &A::Command,
        context: &CommandContext,
    ) -> CommandResult<A> {
        #[cfg(feature = "otel")]
        if let Some(tracer) = &self.inner.tracer {
            return crate::telemetry::in_command_span(
                tracer,
                &self.inner.name,
                A::TYPE,
                id,
                |r| {
                    let (outcome, attempts, _) = Self::summary(r);
                    (outcome, attempts)
                },
                self.traced(id, command, context),
            )
            .await;
        }
        self.traced(id, command, context).await
    }

    /// `run` in the `tracing` span, when asked for.
    async fn traced(
        &self,
        id: &str,
        command: &A::Command,
        context: &CommandContext,
    ) -> CommandResult<A> {
        #[cfg(feature = "tracing")]
        if self.inner.tracing {
            use tracing::Instrument;
            let span = tracing::info_span!(
                target: "palisade_cqrs",
                "cqrs.command",
                otel.name = format!("cqrs.command {}", A::TYPE),
                aggregate = A::TYPE,
                aggregate.id = id,
                handler = &*self.inner.name,
                outcome = tracing::field::Empty,
                attempts = tracing::field::Empty,
                conflicts = tracing::field::Empty,
            );
            let result = self
                .run(id, command, context)
                .instrument(span.clone())
                .await;
            let (outcome, attempts, conflicts) = Self::summary(&result);
            span.record("outcome", outcome.as_str());
            span.record("attempts", attempts);
            span.record("conflicts", conflicts);
            return result;
        }
        self.run(id, command, context).await
    }

    #[cfg(any(feature = "tracing", feature = "otel"))]
    fn summary(result: &CommandResult<A>) -> (CommandOutcome, u32, u32) {
        match result {
            Ok(c) => (CommandOutcome::Accepted, c.attempts, c.attempts - 1),
            Err(CommandError::Conflict { attempts, .. }) => {
                (CommandOutcome::Conflict, *attempts, *attempts)
            }
            Err(CommandError::Refused(_)) => (CommandOutcome::Rejected, 0, 0),
            Err(_) => (CommandOutcome::Failed, 0, 0),
        }
    }

    async fn run(
        &self,
        id: &str,
        command: &A::Command,
        context: &CommandContext,
    ) -> CommandResult<A> {
        let inner = &*self.inner;
        let stream = inner
            .repository
            .stream(id)
            .map_err(CommandError::InvalidId)?;
        let metadata = context.event_metadata();
        let watch = context.command_id.map(|c| event_id(c, &stream, 0));
        let mut conflicts = 0;
        let report = |outcome, attempts, conflicts, events, duplicate| {
            inner.listeners.emit_with(|| Event::CommandExecuted {
                handler: Arc::clone(&inner.name),
                aggregate: A::TYPE,
                outcome,
                attempts,
                conflicts,
                events,
                duplicate,
            });
        };
        for attempt in 1..=inner.max_attempts {
            let cached = inner.cache.as_ref().and_then(|c| c.get(&stream));
            let cached_at = cached.as_ref().map(|(_, v)| *v);
            let (loaded, found) = match inner.repository.load_stream(&stream, watch, cached).await {
                Ok(l) => l,
                Err(e) => {
                    report(CommandOutcome::Failed, attempt, conflicts, 0, false);
                    return Err(CommandError::Store(e));
                }
            };
            if let Some((version, position)) = found {
                report(CommandOutcome::Accepted, attempt, conflicts, 0, true);
                return Ok(Committed {
                    version,
                    position: Some(position),
                    events: 0,
                    attempts: attempt,
                    duplicate: true,
                });
            }
            let decided = loaded.state.handle(command, &inner.services).await;
            // A refusal or a no-op may be a resubmission whose events a
            // snapshot hides: look behind the snapshot before saying so.
            if let (Some(through), true) = (
                loaded.snapshot.or(cached_at),
                watch.is_some() && decided.as_ref().map_or(true, Vec::is_empty),
            ) {
                match find(&**inner.repository.store(), &stream, watch, Some(through)).await {
                    Ok(Some((version, position))) => {
                        report(CommandOutcome::Accepted, attempt, conflicts, 0, true);
                        return Ok(Committed {
                            version,
                            position: Some(position),
                            events: 0,
                            attempts: attempt,
                            duplicate: true,
                        });
                    }
                    Ok(None) => {}
                    Err(e) => {
                        report(CommandOutcome::Failed, attempt, conflicts, 0, false);
                        return Err(CommandError::Store(e));
                    }
                }
            }
            let events = match decided {
                Ok(events) => events,
                Err(e) => {
                    report(CommandOutcome::Rejected, attempt, conflicts, 0, false);
                    return Err(CommandError::Refused(e));
                }
            };
            if events.is_empty() {
                report(CommandOutcome::Accepted, attempt, conflicts, 0, false);
                return Ok(Committed {
                    version: loaded.version,
                    position: None,
                    events: 0,
                    attempts: attempt,
                    duplicate: false,
                });
            }
            let new = match encode(&events, &metadata, |i| match context.command_id {
                Some(c) => event_id(c, &stream, i),
                None => Uuid::now_v7(),
            }) {
                Ok(n) => n,
                Err(e) => {
                    report(CommandOutcome::Failed, attempt, conflicts, 0, false);
                    return Err(CommandError::Store(e));
                }
            };
            let count = new.len();
            let store = inner.repository.store();
            match store
                .append(&stream, expected_version(loaded.version), new)
                .await
            {
                Ok(appended) => {
                    let written = if appended.written { count } else { 0 };
                    report(
                        CommandOutcome::Accepted,
                        attempt,
                        conflicts,
                        written,
                        !appended.written,
                    );
                    let snapshot = inner.snapshots.wants(loaded.version, appended.version);
                    if appended.written && (snapshot || inner.cache.is_some()) {
                        let mut state = loaded.state;
                        for e in events {
                            state.apply(e);
                        }
                        if snapshot {
                            self.snapshot(stream.clone(), &state, appended.version)
                                .await;
                        }
                        if let Some(cache) = &inner.cache {
                            cache.put(stream, state, appended.version);
                        }
                    }
                    return Ok(Committed {
                        version: appended.version,
                        position: Some(appended.position),
                        events: written,
                        attempts: attempt,
                        duplicate: !appended.written,
                    });
                }
                Err(e) if e.is_conflict() => {
                    conflicts += 1;
                    if let Some(cache) = &inner.cache {
                        cache.remove(&stream);
                    }
                    if attempt < inner.max_attempts {
                        inner.sleeper.sleep(inner.backoff.delay(attempt)).await;
                    }
                }
                Err(StoreError::DuplicateEventId { .. }) if watch.is_some() => {
                    // Applied before, behind the snapshot the load started from.
                    let found = find(&**store, &stream, watch, None).await;
                    return match found {
                        Ok(Some((version, position))) => {
                            report(CommandOutcome::Accepted, attempt, conflicts, 0, true);
                            Ok(Committed {
                                version,
                                position: Some(position),
                                events: 0,
                                attempts: attempt,
                                duplicate: true,
                            })
                        }
                        Ok(None) => {
                            report(CommandOutcome::Failed, attempt, conflicts, 0, false);
                            Err(CommandError::Store(StoreError::DuplicateEventId {
                                id: watch.unwrap_or_default(),
                            }))
                        }
                        Err(e) => {
                            report(CommandOutcome::Failed, attempt, conflicts, 0, false);
                            Err(CommandError::Store(e))
                        }
                    };
                }
                Err(e) => {
                    report(CommandOutcome::Failed, attempt, conflicts, 0, false);
                    return Err(CommandError::Store(e));
                }
            }
        }
        report(
            CommandOutcome::Conflict,
            inner.max_attempts,
            conflicts,
            0,
            false,
        );
        Err(CommandError::Conflict {
            stream,
            attempts: inner.max_attempts,
        })
    }

    async fn snapshot(&self, stream: StreamName, state: &A, version: u64) {
        let inner = &*self.inner;
        match inner
            .repository
            .snapshot_stream(stream.clone(), state, version)
            .await
        {
            Ok(()) => inner
                .listeners
                .emit_with(|| Event::SnapshotSaved { stream, version }),
            Err(e) => inner.listeners.emit_with(|| Event::SnapshotFailed {
                stream,
                error: e.to_string(),
            }),
        }
    }
}

/// The version and position of the event with id `watch` in `stream`, read
/// from its start (up to version `through`, if given).
async fn find(
    store: &dyn EventStore,
    stream: &StreamName,
    watch: Option<Uuid>,
    through: Option<u64>,
) -> Result<Option<(u64, Position)>, StoreError> {
    let read = match through {
        Some(n) => ReadStream::forward().limit(n),
        None => ReadStream::forward(),
    };
    let mut events = store.read_stream(stream, read).await?;
    while let Some(e) = events.try_next().await? {
        if Some(e.id) == watch {
            return Ok(Some((e.version, e.position)));
        }
    }
    Ok(None)
}
