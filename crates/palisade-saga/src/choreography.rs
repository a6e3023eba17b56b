//! A process manager: sagas started by the events other services append,
//! read from an event-store subscription.

use std::sync::Arc;

use palisade_event_store::{RecordedEvent, Subscription};

use crate::error::Error;
use crate::saga::{Outcome, Saga, SagaState};

/// What a [`ProcessManager`] did with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction<S> {
    /// The event starts no saga.
    Ignored,
    /// The saga the event names ran to this end (or had already: a
    /// redelivered event starts nothing twice).
    Finished {
        /// The saga id.
        id: String,
        /// How it ended.
        outcome: Outcome<S>,
    },
    /// The event was delivered to the waits on this correlation
    /// ([`ProcessManager::advance`]).
    Delivered {
        /// The correlation.
        correlation: String,
        /// Whether it had been delivered before (a redelivery: kept once, advances nothing).
        duplicate: bool,
    },
    /// The saga is held by another runner, which finishes it.
    RunningElsewhere {
        /// The saga id.
        id: String,
        /// The runner that holds it.
        owner: String,
    },
}

type Advance = Arc<dyn Fn(&RecordedEvent) -> Option<String> + Send + Sync>;
type React<S> = Arc<dyn Fn(&RecordedEvent) -> Option<(String, S)> + Send + Sync>;

/// Starts a saga for each event that `react` maps to a saga id and an
/// initial state, in the subscription's order, and checkpoints the
/// subscription after each event is handled.
///
/// Delivery is at least once (a crash between a saga's end and the
/// checkpoint delivers the event again); since a start with an existing id
/// returns that saga, each saga still runs once. Derive the id from the
/// event (its stream, its id) so a redelivery names the same saga.
pub struct ProcessManager<S> {
    saga: Saga<S>,
    subscription: Subscription,
    react: React<S>,
    advance: Option<Advance>,
}

impl<S> std::fmt::Debug for ProcessManager<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessManager")
            .field("saga", &self.saga)
            .field("subscription", &self.subscription)
            .finish_non_exhaustive()
    }
}

impl<S: SagaState> ProcessManager<S> {
    /// A process manager running `saga` for the events of `subscription` that `react` maps.
    pub fn new<F>(saga: Saga<S>, subscription: Subscription, react: F) -> Self
    where
        F: Fn(&RecordedEvent) -> Option<(String, S)> + Send + Sync + 'static,
    {
        Self {
            saga,
            subscription,
            react: Arc::new(react),
            advance: None,
        }
    }

    /// Also advances running sagas: an event that starts no saga and that
    /// `advance` maps to a correlation is [delivered](Saga::deliver) to the
    /// waits on it (steps made by [`Step::await_event`](crate::Step::await_event)),
    /// whether the saga waits already, later, or is resumed after a crash.
    /// The runs that wait advance themselves; this only keeps the event,
    /// once, so a redelivery advances nothing twice.
    ///
    /// A saga started by [`handle_next`](Self::handle_next) runs to its end
    /// before the next event is read: give sagas that wait for this
    /// subscription's events to another runner (a task of their own, or a
    /// second process manager), or their wait ends only at its timeout.
    #[must_use]
    pub fn advance<F>(mut self, advance: F) -> Self
    where
        F: Fn(&RecordedEvent) -> Option<String> + Send + Sync + 'static,
    {
        self.advance = Some(Arc::new(advance));
        self
    }

    /// Waits for the next event, runs the saga it starts (if any) to its end
    /// or delivers it to the waits on its correlation (with
    /// [`advance`](Self::advance)), then saves the subscription's checkpoint.
    ///
    /// # Errors
    /// A store error from the subscription or the checkpoint, or the saga's
    /// run ([`Error::Claimed`] is not one: it is [`Reaction::RunningElsewhere`]).
    /// The event is then not checkpointed, and is delivered again to a
    /// process manager started from the saved checkpoint.
    pub async fn handle_next(&mut self) -> Result<Reaction<S>, Error> {
        let event = self.subscription.next().await?;
        let reaction = match (self.react)(&event) {
            None => match self.advance.as_ref().and_then(|a| a(&event)) {
                None => Reaction::Ignored,
                Some(correlation) => {
                    let delivered = self.saga.deliver(&correlation, &event).await?;
                    Reaction::Delivered {
                        correlation,
                        duplicate: !delivered,
                    }
                }
            },
            Some((id, state)) => match self.saga.start(&id, state).await {
                Ok(outcome) => Reaction::Finished { id, outcome },
                Err(Error::Claimed { id, owner }) => Reaction::RunningElsewhere { id, owner },
                Err(e) => return Err(e),
            },
        };
        self.subscription.checkpoint().await?;
        Ok(reaction)
    }

    /// The saga it starts.
    pub fn saga(&self) -> &Saga<S> {
        &self.saga
    }
}
