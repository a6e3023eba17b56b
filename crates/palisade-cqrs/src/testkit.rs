//! Given/when/then for aggregates and given-events-then-view for projections:
//! in memory, with no runtime to set up (the futures are driven on the test's
//! own thread).
//!
//! ```
//! # use palisade_cqrs::{Aggregate, DomainEvent};
//! # #[derive(Default, serde::Serialize, serde::Deserialize)] struct Light { on: bool }
//! # #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)] enum Switched { On, Off }
//! # impl DomainEvent for Switched { fn event_type(&self) -> &'static str { "Switched" } }
//! # #[derive(Debug, PartialEq, thiserror::Error)] #[error("already on")] struct AlreadyOn;
//! # impl Aggregate for Light {
//! #     const TYPE: &'static str = "light";
//! #     type Command = bool; type Event = Switched; type Error = AlreadyOn; type Services = ();
//! #     async fn handle(&self, on: &bool, _: &()) -> Result<Vec<Switched>, AlreadyOn> {
//! #         match (self.on, *on) { (true, true) => Err(AlreadyOn), (_, true) => Ok(vec![Switched::On]), (_, false) => Ok(vec![Switched::Off]) }
//! #     }
//! #     fn apply(&mut self, e: Switched) { self.on = e == Switched::On; }
//! # }
//! use palisade_cqrs::testkit::given;
//!
//! given::<Light>([]).when(true).then_events([Switched::On]);
//! given::<Light>([Switched::On]).when(true).then_error(&AlreadyOn);
//! given::<Light>([Switched::On]).when(false).then_state(|light| assert!(!light.on));
//! ```

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::SystemTime;

use palisade_event_store::{Codec, JsonCodec, Metadata, Position, RecordedEvent, StreamName};

use crate::aggregate::{Aggregate, DomainEvent};
use crate::projection::{BoxError, Projection, ProjectionContext};

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on this thread (parking it while the future waits).
///
/// Enough for handlers and projections that wait on nothing tied to a
/// runtime; one that needs tokio's timer or I/O must be tested under tokio.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// An aggregate test: past events, then a command.
#[must_use]
pub struct AggregateTest<A: Aggregate> {
    services: A::Services,
    state: A,
}

impl<A: Aggregate> std::fmt::Debug for AggregateTest<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateTest")
            .field("aggregate", &A::TYPE)
            .finish_non_exhaustive()
    }
}

/// The aggregate after `events`, with default services.
pub fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> AggregateTest<A>
where
    A::Services: Default,
{
    AggregateTest::with_services(A::Services::default()).given(events)
}

impl<A: Aggregate> AggregateTest<A> {
    /// A fresh aggregate whose handler gets `services`.
    pub fn with_services(services: A::Services) -> Self {
        Self {
            services,
            state: A::default(),
        }
    }

    /// Applies `events` (after any given before).
    pub fn given(mut self, events: impl IntoIterator<Item = A::Event>) -> Self {
        for e in events {
            self.state.apply(e);
        }
        self
    }

    /// Handles `command` on the state so far.
    #[allow(clippy::needless_pass_by_value)] // taken by value so a test writes `when(Cmd::X)`
    pub fn when(self, command: A::Command) -> Then<A> {
        let result = block_on(self.state.handle(&command, &self.services));
        Then {
            state: self.state,
            result,
        }
    }
}

/// What a command did in an [`AggregateTest`]: check it with one of the `then_` methods.
#[must_use = "a test checks the outcome with a then_ method"]
pub struct Then<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> std::fmt::Debug for Then<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Then")
            .field("aggregate", &A::TYPE)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> Then<A> {
    /// Asserts that the command caused exactly `expected`, in order.
    ///
    /// # Panics
    /// When it caused other events or was refused.
    #[track_caller]
    pub fn then_events(self, expected: impl IntoIterator<Item = A::Event>)
    where
        A::Event: PartialEq + std::fmt::Debug,
        A::Error: std::fmt::Debug,
    {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        match self.result {
            Ok(events) => assert_eq!(events, expected, "the command caused other events"),
            Err(e) => panic!("expected events {expected:?}, but the command was refused: {e:?}"),
        }
    }

    /// Asserts that the command was refused with `expected`.
    ///
    /// # Panics
    /// When it was accepted or refused otherwise.
    #[track_caller]
    pub fn then_error(self, expected: &A::Error)
    where
        A::Event: std::fmt::Debug,
        A::Error: PartialEq + std::fmt::Debug,
    {
        match self.result {
            Ok(events) => {
                panic!("expected the error {expected:?}, but the command caused {events:?}")
            }
            Err(e) => assert_eq!(&e, expected, "the command was refused otherwise"),
        }
    }

    /// Asserts that the command was refused with an error `check` accepts.
    ///
    /// # Panics
    /// When it was accepted, or `check` returns `false`.
    #[track_caller]
    pub fn then_error_matches(self, check: impl FnOnce(&A::Error) -> bool)
    where
        A::Event: std::fmt::Debug,
        A::Error: std::fmt::Debug,
    {
        match self.result {
            Ok(events) => panic!("expected an error, but the command caused {events:?}"),
            Err(e) => assert!(
                check(&e),
                "the command was refused with {e:?}, which the check rejects"
            ),
        }
    }

    /// Applies the command's events and hands the state to `check`.
    ///
    /// # Panics
    /// When the command was refused (or as `check` does).
    #[track_caller]
    pub fn then_state(self, check: impl FnOnce(&A))
    where
        A::Error: std::fmt::Debug,
    {
        let mut state = self.state;
        match self.result {
            Ok(events) => {
                for e in events {
                    state.apply(e);
                }
                check(&state);
            }
            Err(e) => panic!("expected a new state, but the command was refused: {e:?}"),
        }
    }

    /// The events, or the error.
    pub fn result(self) -> Result<Vec<A::Event>, A::Error> {
        self.result
    }
}

/// Builds recorded events as the store would hand them to a projection:
/// versions per stream from 1, positions one apart in the order given.
#[derive(Debug, Default)]
pub struct Recorder {
    versions: std::collections::HashMap<StreamName, u64>,
    sequence: u64,
}

impl Recorder {
    /// Nothing recorded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `event` as the next event of `stream`.
    ///
    /// # Panics
    /// When `stream` is not a valid stream name or the event does not encode (a test's mistake).
    #[track_caller]
    pub fn record<E: DomainEvent>(&mut self, stream: &str, event: &E) -> RecordedEvent {
        let stream = StreamName::new(stream).expect("a valid stream name");
        let version = self.versions.entry(stream.clone()).or_default();
        *version += 1;
        self.sequence += 1;
        RecordedEvent {
            id: uuid::Uuid::now_v7(),
            stream,
            version: *version,
            position: Position {
                commit: self.sequence,
                sequence: self.sequence,
            },
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            payload: JsonCodec.encode(event).expect("the event encodes"),
            metadata: Metadata::default(),
            recorded_at: SystemTime::now(),
        }
    }
}

/// A projection test: events in, then a look at the view.
///
/// ```
/// use palisade_cqrs::testkit::ProjectionTest;
/// use palisade_cqrs::{BoxError, DomainEvent, Projection, ProjectionContext, RecordedEvent};
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Deposited(u64);
/// impl DomainEvent for Deposited { fn event_type(&self) -> &'static str { "Deposited" } }
///
/// #[derive(Default)]
/// struct Total(AtomicU64);
/// #[async_trait::async_trait]
/// impl Projection for Total {
///     async fn handle(&self, e: &RecordedEvent, _: ProjectionContext) -> Result<(), BoxError> {
///         self.0.fetch_add(e.decode::<Deposited>()?.0, Ordering::SeqCst);
///         Ok(())
///     }
/// }
///
/// ProjectionTest::new(Total::default())
///     .given("account-1", [Deposited(5), Deposited(7)])
///     .given("account-2", [Deposited(1)])
///     .then_view(|total| assert_eq!(total.0.load(Ordering::SeqCst), 13));
/// ```
#[must_use]
pub struct ProjectionTest<P> {
    projection: P,
    recorder: Recorder,
}

impl<P> std::fmt::Debug for ProjectionTest<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionTest")
            .field("recorder", &self.recorder)
            .finish_non_exhaustive()
    }
}

impl<P: Projection> ProjectionTest<P> {
    /// A test of `projection`.
    pub fn new(projection: P) -> Self {
        Self {
            projection,
            recorder: Recorder::new(),
        }
    }

    /// Feeds `events` of `stream` to the projection, in order.
    ///
    /// # Panics
    /// When the projection fails on one of them (see [`try_given`](Self::try_given)).
    #[track_caller]
    pub fn given<E: DomainEvent>(self, stream: &str, events: impl IntoIterator<Item = E>) -> Self {
        match self.try_given(stream, events) {
            Ok(s) => s,
            Err(e) => panic!("the projection failed: {e}"),
        }
    }

    /// Feeds `events` of `stream` to the projection, returning its first error.
    ///
    /// # Errors
    /// What the projection returned.
    #[track_caller]
    pub fn try_given<E: DomainEvent>(
        mut self,
        stream: &str,
        events: impl IntoIterator<Item = E>,
    ) -> Result<Self, BoxError> {
        for e in events {
            let recorded = self.recorder.record(stream, &e);
            block_on(self.projection.handle(&recorded, ProjectionContext::live()))?;
        }
        Ok(self)
    }

    /// Hands the projection (its view) to `check`.
    pub fn then_view(self, check: impl FnOnce(&P)) {
        check(&self.projection);
    }
}
