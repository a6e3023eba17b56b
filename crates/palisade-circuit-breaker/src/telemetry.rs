//! OpenTelemetry instruments and span events for a breaker (feature `otel`):
//! an adapter over the breaker's [`Event`]s, added when the builder asks with
//! [`otel`](CircuitBreakerBuilder::otel) or [`meter`](CircuitBreakerBuilder::meter).
//!
//! Names follow `docs/telemetry.md`. Instruments are made once, when the
//! breaker is built; attribute sets are made then too, so recording a call
//! allocates nothing. Everything the `otel` feature adds to the crate is in
//! this module.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};
use opentelemetry::trace::get_active_span;
use palisade_core::telemetry::{INSTANCE, MeterSource, OUTCOME};
use palisade_core::{Listener, Outcome};

use crate::{CircuitBreakerBuilder, Event, State};

/// `palisade.circuit_breaker.calls`: calls by outcome (success, failure, ignored, rejected).
pub const CALLS: &str = "palisade.circuit_breaker.calls";
/// `palisade.circuit_breaker.call.duration`: call durations in seconds, by outcome.
pub const CALL_DURATION: &str = "palisade.circuit_breaker.call.duration";
/// `palisade.circuit_breaker.transitions`: state transitions, by from and to state.
pub const TRANSITIONS: &str = "palisade.circuit_breaker.transitions";
/// `palisade.circuit_breaker.state`: 0 closed, 1 open, 2 half-open, 3+ manual.
pub const STATE: &str = "palisade.circuit_breaker.state";
/// The span event added to the caller's current span on a transition.
pub const STATE_CHANGE_EVENT: &str = "palisade.circuit_breaker.state_change";
/// Attribute: the state a transition left.
pub const STATE_FROM: &str = "palisade.state.from";
/// Attribute: the state a transition entered.
pub const STATE_TO: &str = "palisade.state.to";

const STATES: [State; 6] = State::ALL;

impl CircuitBreakerBuilder {
    /// Records the instruments of `docs/telemetry.md` on the global meter
    /// provider as it is when `build()` runs.
    pub fn otel(mut self) -> Self {
        self.otel = Some(MeterSource::Global);
        self
    }

    /// Records the instruments of `docs/telemetry.md` on `meter`.
    pub fn meter(mut self, meter: Meter) -> Self {
        self.otel = Some(MeterSource::Meter(meter));
        self
    }
}

pub(crate) struct OtelListener {
    calls: Counter<u64>,
    duration: Histogram<f64>,
    transitions: Counter<u64>,
    state: Gauge<u64>,
    instance: [KeyValue; 1],
    /// Per outcome: success, failure, ignored, rejected.
    by_outcome: [[KeyValue; 2]; 4],
    /// Indexed by `from * 6 + to`.
    by_transition: Vec<[KeyValue; 3]>,
}

impl OtelListener {
    pub(crate) fn new(source: MeterSource, name: &str) -> Self {
        let meter = source.meter(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
        let instance = KeyValue::new(INSTANCE, name.to_owned());
        let outcome = |o: &'static str| [instance.clone(), KeyValue::new(OUTCOME, o)];
        let by_transition = STATES
            .iter()
            .flat_map(|from| {
                STATES.iter().map(|to| {
                    [
                        instance.clone(),
                        KeyValue::new(STATE_FROM, from.as_str()),
                        KeyValue::new(STATE_TO, to.as_str()),
                    ]
                })
            })
            .collect();
        Self {
            calls: meter
                .u64_counter(CALLS)
                .with_unit("{call}")
                .with_description("Calls through the circuit breaker, by outcome")
                .build(),
            duration: meter
                .f64_histogram(CALL_DURATION)
                .with_unit("s")
                .with_description("Duration of permitted calls, by outcome")
                .build(),
            transitions: meter
                .u64_counter(TRANSITIONS)
                .with_unit("{transition}")
                .with_description("State transitions of the circuit breaker")
                .build(),
            state: meter
                .u64_gauge(STATE)
                .with_description("State: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled, 5 metrics only")
                .build(),
            by_outcome: [
                outcome("success"),
                outcome("failure"),
                outcome("ignored"),
                outcome("rejected"),
            ],
            instance: [instance],
            by_transition,
        }
    }

    pub(crate) fn record_initial_state(&self, state: State) {
        self.state.record(state.gauge_value(), &self.instance);
    }
}

impl Listener<Event> for OtelListener {
    fn on_event(&self, event: &Event) {
        match *event {
            Event::CallFinished {
                outcome, duration, ..
            } => {
                let attrs = &self.by_outcome[match outcome {
                    Outcome::Success => 0,
                    Outcome::Failure => 1,
                    Outcome::Ignored => 2,
                }];
                self.calls.add(1, attrs);
                if let Some(d) = duration {
                    self.duration.record(d.as_secs_f64(), attrs);
                }
            }
            Event::CallRejected { .. } => self.calls.add(1, &self.by_outcome[3]),
            Event::StateTransition { from, to } => {
                let attrs = &self.by_transition[from as usize * STATES.len() + to as usize];
                self.transitions.add(1, attrs);
                self.state.record(to.gauge_value(), &self.instance);
                get_active_span(|span| {
                    if span.is_recording() {
                        span.add_event(STATE_CHANGE_EVENT, attrs.to_vec());
                    }
                });
            }
        }
    }
}
