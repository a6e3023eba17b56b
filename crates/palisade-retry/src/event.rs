//! What a retry instance reports to its listeners.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::{Listener, Listeners};

use crate::StopReason;

/// An event of a [`Retry`](crate::Retry) or [`Hedge`](crate::Hedge) instance.
///
/// A call that succeeds at once reports one event, [`Finished`](Self::Finished);
/// with no listener it reports nothing and costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An attempt failed and another will start after `delay`.
    RetryScheduled {
        /// The attempt that will start (2 for the first retry).
        attempt: u32,
        /// The wait before it.
        delay: Duration,
        /// `true` if the delay came from the result (`Retry-After`), not the backoff.
        from_result: bool,
    },
    /// An attempt failed, and the budget could not cover another one.
    BudgetExhausted {
        /// The attempts made.
        attempts: u32,
    },
    /// An attempt ran out of time and was dropped.
    AttemptTimedOut {
        /// The attempt.
        attempt: u32,
        /// The time it was given.
        limit: Duration,
    },
    /// A hedged call started another attempt while the earlier ones still run.
    HedgeStarted {
        /// The attempt started (2 for the first hedge).
        attempt: u32,
        /// How long the call had waited for an answer.
        after: Duration,
    },
    /// The call ended.
    Finished {
        /// The attempts made.
        attempts: u32,
        /// Why it ended.
        stop: StopReason,
    },
}

/// Who a builder was asked to report to: the user's listeners and the
/// adapters (`tracing`, `otel`), shared by the retry's and the hedge's builders.
pub(crate) struct Listening {
    listeners: Listeners<Event>,
    #[cfg(feature = "tracing")]
    pub(crate) tracing: bool,
    #[cfg(feature = "otel")]
    pub(crate) otel: Option<palisade_core::telemetry::MeterSource>,
}

impl Listening {
    pub(crate) fn new() -> Self {
        Self {
            listeners: Listeners::new(),
            #[cfg(feature = "tracing")]
            tracing: false,
            #[cfg(feature = "otel")]
            otel: None,
        }
    }

    pub(crate) fn push(&mut self, listener: impl Listener<Event>) {
        self.listeners.push(Arc::new(listener));
    }

    /// The listeners, with the adapters asked for, made for the instance `name`.
    #[cfg_attr(
        not(any(feature = "tracing", feature = "otel")),
        allow(unused_variables)
    )]
    pub(crate) fn build(self, name: &Arc<str>) -> Listeners<Event> {
        #[allow(unused_mut)]
        let mut listeners = self.listeners;
        #[cfg(feature = "tracing")]
        if self.tracing {
            listeners.push(Arc::new(crate::tracing_listener::TracingListener {
                name: name.clone(),
            }));
        }
        #[cfg(feature = "otel")]
        if let Some(source) = self.otel {
            listeners.push(Arc::new(crate::telemetry::OtelListener::new(source, name)));
        }
        listeners
    }
}
