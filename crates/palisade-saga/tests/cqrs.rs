//! Steps that send `palisade-cqrs` commands: the step invocation's key is the
//! command id, so a retried step, a retried compensation and a recovered saga
//! append each command's events exactly once.
#![cfg(feature = "cqrs")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{Yielding, crash_after};
use palisade_cqrs::{Aggregate, CommandHandler, DomainEvent};
use palisade_event_store::{
    AppendResult, Error as StoreError, EventStore, EventStream, ExpectedVersion, NewEvent,
    Position, ReadAll, ReadStream, Result as StoreResult, Snapshot, StreamName, StreamState,
};
use palisade_saga::{
    Backoff, InMemoryEventStore, ManualClock, Outcome, Retry, Saga, Step, TokioSleeper,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

type E = std::io::Error;
const LEASE: Duration = Duration::from_secs(10);

/// An item's stock: the events it saw, in order.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stock(Vec<String>);

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Moved {
    Reserved,
    Released,
}

impl DomainEvent for Moved {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Reserved => "Reserved",
            Self::Released => "Released",
        }
    }
}

enum Cmd {
    Reserve,
    Release,
}

impl Aggregate for Stock {
    const TYPE: &'static str = "stock";
    type Command = Cmd;
    type Event = Moved;
    type Error = E;
    type Services = ();

    async fn handle(&self, command: &Cmd, (): &()) -> Result<Vec<Moved>, E> {
        Ok(vec![match command {
            Cmd::Reserve => Moved::Reserved,
            Cmd::Release => Moved::Released,
        }])
    }

    fn apply(&mut self, event: Moved) {
        self.0.push(event.event_type().to_owned());
    }
}

/// A store that, once for each event type in `lose`, appends and then
/// reports a backend error: the write happened, its acknowledgement was lost.
struct LostAck {
    inner: InMemoryEventStore,
    lose: Mutex<Vec<&'static str>>,
}

#[async_trait]
impl EventStore for LostAck {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> StoreResult<AppendResult> {
        let first = events.first().map(|e| e.event_type.clone());
        let r = self.inner.append(stream, expected, events).await?;
        let mut lose = self.lose.lock();
        if let Some(i) = lose.iter().position(|t| Some(*t) == first.as_deref()) {
            lose.remove(i);
            return Err(StoreError::backend(E::other("connection reset")));
        }
        Ok(r)
    }
    async fn read_stream(
        &self,
        stream: &StreamName,
        options: ReadStream,
    ) -> StoreResult<EventStream> {
        self.inner.read_stream(stream, options).await
    }
    async fn read_all(&self, options: ReadAll) -> StoreResult<EventStream> {
        self.inner.read_all(options).await
    }
    async fn stream_state(&self, stream: &StreamName) -> StoreResult<StreamState> {
        self.inner.stream_state(stream).await
    }
    async fn delete_stream(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
    ) -> StoreResult<()> {
        self.inner.delete_stream(stream, expected).await
    }
    async fn save_snapshot(&self, snapshot: Snapshot) -> StoreResult<()> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn load_snapshot(&self, stream: &StreamName) -> StoreResult<Option<Snapshot>> {
        self.inner.load_snapshot(stream).await
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes()
    }
    async fn head(&self) -> StoreResult<Position> {
        self.inner.head().await
    }
    fn system_name(&self) -> &'static str {
        self.inner.system_name()
    }
}

fn reserve(stock: &CommandHandler<Stock>) -> Step<String> {
    Step::command("reserve", stock.clone(), |item: &String| {
        (item.clone(), Cmd::Reserve)
    })
    .compensate_command(stock.clone(), |item: &String| (item.clone(), Cmd::Release))
}

fn declined() -> Step<String> {
    Step::new("charge", |_s: String, _ctx| async move {
        Err::<String, _>(E::other("declined"))
    })
    .pivot()
}

async fn events_of(stock: &CommandHandler<Stock>, item: &str) -> (Vec<String>, u64) {
    let loaded = stock.load(item).await.unwrap();
    (loaded.state.0, loaded.version)
}

#[tokio::test(start_paused = true)]
async fn a_retried_step_and_a_retried_compensation_append_their_commands_once() {
    let store = Arc::new(LostAck {
        inner: InMemoryEventStore::new(),
        lose: Mutex::new(vec!["Reserved", "Released"]),
    });
    let stock = CommandHandler::<Stock>::builder(store.clone(), ())
        .build()
        .unwrap();
    let retry = Retry::builder()
        .max_attempts(2)
        .backoff(Backoff::fixed(Duration::from_millis(10)))
        .no_budget()
        .build()
        .unwrap();
    let saga = Saga::<String>::builder("order", Arc::new(InMemoryEventStore::new()))
        .recovery_backoff(Backoff::fixed(Duration::from_millis(10)))
        .step(reserve(&stock).retry(retry))
        .step(declined())
        .build()
        .unwrap();

    let outcome = saga.start("o-1", "apple".to_owned()).await.unwrap();
    assert_eq!(
        outcome,
        Outcome::Compensated {
            state: "apple".to_owned(),
            error: "declined".to_owned()
        }
    );
    // Both lost acknowledgements were spent, each made one more attempt...
    assert!(store.lose.lock().is_empty());
    let log: Vec<_> = saga
        .log("o-1")
        .await
        .unwrap()
        .iter()
        .map(palisade_saga::Record::event_type)
        .collect();
    assert_eq!(
        log,
        [
            "SagaStarted",
            "Claimed",
            "StepStarted",
            "StepAttemptFailed",
            "StepStarted",
            "StepCompleted",
            "StepStarted",
            "StepAttemptFailed",
            "StepFailed",
            "CompensationStarted",
            "CompensationFailed",
            "CompensationStarted",
            "CompensationCompleted",
            "SagaCompensated",
        ]
    );
    // ...and the second attempts appended nothing.
    assert_eq!(
        events_of(&stock, "apple").await,
        (vec!["Reserved".to_owned(), "Released".to_owned()], 2)
    );
}

#[tokio::test]
async fn a_saga_recovered_after_a_crash_anywhere_appends_each_command_once() {
    // The saga's log and the stock share one store, which yields around each
    // append: a crash lands before or after the command's write as well as the log's.
    let store = Arc::new(Yielding(InMemoryEventStore::new()));
    let stock = CommandHandler::<Stock>::builder(store.clone(), ())
        .build()
        .unwrap();
    let clock = ManualClock::new();
    let saga = |owner: &str| {
        Saga::<String>::builder("order", Arc::clone(&store))
            .owner(owner.to_owned())
            .clock(clock.shared())
            .sleeper(TokioSleeper::shared())
            .lease(LEASE)
            .recovery_backoff(Backoff::fixed(Duration::from_millis(1)))
            .step(reserve(&stock))
            .step(declined())
            .build()
            .unwrap()
    };
    let (mut after_reserve, mut after_release) = (0, 0);
    for polls in 0..80 {
        let (id, item) = (format!("o{polls}"), format!("item{polls}"));
        let first = crash_after(polls, saga("dead").start(&id, item.clone())).await;
        let outcome = if let Some(outcome) = first {
            outcome.unwrap()
        } else {
            match events_of(&stock, &item).await.1 {
                0 => {}
                1 => after_reserve += 1,
                _ => after_release += 1,
            }
            clock.advance(LEASE);
            let runner = saga("alive");
            match runner.recover().await.unwrap().pop() {
                Some(resumed) => {
                    assert_eq!(resumed.id, id);
                    resumed.result.unwrap()
                }
                // The crash came before the saga's first record: its caller starts it again.
                None => runner.start(&id, item.clone()).await.unwrap(),
            }
        };
        assert_eq!(
            outcome,
            Outcome::Compensated {
                state: item.clone(),
                error: "declined".to_owned()
            },
            "crash after {polls} polls"
        );
        assert_eq!(
            events_of(&stock, &item).await,
            (vec!["Reserved".to_owned(), "Released".to_owned()], 2),
            "crash after {polls} polls"
        );
    }
    // Crashes did land between a command's write and the log's record of it.
    assert!(after_reserve > 0, "{after_reserve}");
    assert!(after_release > 0, "{after_release}");
}
