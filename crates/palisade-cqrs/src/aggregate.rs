//! What an event-sourced aggregate is: state that decides on commands and evolves by events.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// An event of an aggregate: a serde type that names its event type.
///
/// The payload stored is the JSON of the whole value; the event type is
/// stored beside it, for filters and upcasters.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The stored event type (`"Deposited"`).
    fn event_type(&self) -> &'static str;

    /// The schema version its payload is written with (starts at 1).
    fn schema_version(&self) -> u32 {
        1
    }
}

/// An event-sourced aggregate, in the spirit of cqrs-es: [`handle`](Self::handle)
/// decides what a command means given the current state (events, or the
/// domain's error), [`apply`](Self::apply) evolves the state by one event.
///
/// `handle` must be a function of the state, the command and the services
/// only: on a version conflict the handler reloads the state and calls it
/// again.
///
/// The state is serde so that it can be snapshotted.
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The aggregate type: the category of its streams (`account` gives
    /// `account-<id>`). ASCII letters, digits and `_.:@$/`, no `-`.
    const TYPE: &'static str;

    /// The schema version of the serialized state, stored with snapshots: a
    /// snapshot written with another version is ignored (the state is
    /// replayed from the events). Bump it when the state's shape changes.
    const SNAPSHOT_VERSION: u32 = 1;

    /// What a caller asks for.
    type Command: Send + Sync;
    /// What happened.
    type Event: DomainEvent;
    /// Why a command is refused.
    type Error: std::error::Error + Send + Sync + 'static;
    /// What `handle` may use besides the state (a clock, a lookup, another service).
    type Services: Send + Sync + 'static;

    /// Decides: the events that `command` causes, or why it is refused.
    fn handle(
        &self,
        command: &Self::Command,
        services: &Self::Services,
    ) -> impl Future<Output = Result<Vec<Self::Event>, Self::Error>> + Send;

    /// Evolves the state by one event. Never fails: an event is a fact.
    fn apply(&mut self, event: Self::Event);
}
