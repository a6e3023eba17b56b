//! OpenTelemetry instruments and span events for a retry or hedge (feature
//! `otel`): an adapter over the instance's [`Event`]s, added when the builder
//! asks with [`otel`](RetryBuilder::otel) or [`meter`](RetryBuilder::meter).
//!
//! Names follow `docs/telemetry.md`. Instruments and attribute sets are made
//! once, when the instance is built, so recording allocates nothing but the
//! span event's attributes. Everything the `otel` feature adds to the crate is
//! in this module.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};
use opentelemetry::trace::get_active_span;
use palisade_core::Listener;
use palisade_core::telemetry::{INSTANCE, MeterSource, OUTCOME};

use crate::{Event, HedgeBuilder, RetryBuilder, StopReason};

/// `palisade.retry.calls`: calls, by outcome (success, failure) and whether they were retried.
pub const CALLS: &str = "palisade.retry.calls";
/// `palisade.retry.attempts`: every attempt made, the first ones included.
pub const ATTEMPTS: &str = "palisade.retry.attempts";
/// `palisade.retry.budget.exhausted`: failed attempts the budget could not retry.
pub const BUDGET_EXHAUSTED: &str = "palisade.retry.budget.exhausted";
/// The span event added to the caller's current span when a retry or hedge is scheduled.
pub const ATTEMPT_EVENT: &str = "palisade.retry.attempt";
/// Attribute: `true` when a call made more than one attempt.
pub const RETRIED: &str = "palisade.retry.retried";
/// Attribute of the span event: attempts made before this one, as `http.request.resend_count`.
pub const RESEND_COUNT: &str = "http.request.resend_count";
/// Attribute of the span event: the delay before the attempt, in seconds.
pub const DELAY: &str = "palisade.retry.delay";
/// Attribute of `calls` for a failure: why no further attempt was made.
pub const STOP: &str = "palisade.retry.stop";

impl RetryBuilder {
    /// Records the instruments of `docs/telemetry.md` on the global meter
    /// provider as it is when `build()` runs.
    pub fn otel(mut self) -> Self {
        self.listening.otel = Some(MeterSource::Global);
        self
    }

    /// Records the instruments of `docs/telemetry.md` on `meter`.
    pub fn meter(mut self, meter: Meter) -> Self {
        self.listening.otel = Some(MeterSource::Meter(meter));
        self
    }
}

impl HedgeBuilder {
    /// Records the instruments of `docs/telemetry.md` on the global meter
    /// provider as it is when `build()` runs.
    pub fn otel(mut self) -> Self {
        self.listening.otel = Some(MeterSource::Global);
        self
    }

    /// Records the instruments of `docs/telemetry.md` on `meter`.
    pub fn meter(mut self, meter: Meter) -> Self {
        self.listening.otel = Some(MeterSource::Meter(meter));
        self
    }
}

const STOPS: [StopReason; 5] = [
    StopReason::Succeeded,
    StopReason::NotRetryable,
    StopReason::MaxAttempts,
    StopReason::BudgetExhausted,
    StopReason::Deadline,
];

pub(crate) struct OtelListener {
    calls: Counter<u64>,
    attempts: Counter<u64>,
    exhausted: Counter<u64>,
    instance: KeyValue,
    instance_only: [KeyValue; 1],
    /// By stop reason (as in `STOPS`), then retried (false, true).
    by_stop: Vec<[Vec<KeyValue>; 2]>,
}

impl OtelListener {
    pub(crate) fn new(source: MeterSource, name: &str) -> Self {
        let meter = source.meter(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
        let instance = KeyValue::new(INSTANCE, name.to_owned());
        let by_stop = STOPS
            .iter()
            .map(|stop| {
                [false, true].map(|retried| {
                    let mut attrs = vec![
                        instance.clone(),
                        KeyValue::new(
                            OUTCOME,
                            if *stop == StopReason::Succeeded {
                                "success"
                            } else {
                                "failure"
                            },
                        ),
                        KeyValue::new(RETRIED, retried),
                    ];
                    if *stop != StopReason::Succeeded {
                        attrs.push(KeyValue::new(STOP, stop.as_str()));
                    }
                    attrs
                })
            })
            .collect();
        Self {
            calls: meter
                .u64_counter(CALLS)
                .with_unit("{call}")
                .with_description(
                    "Calls through the retry, by outcome and whether they were retried",
                )
                .build(),
            attempts: meter
                .u64_counter(ATTEMPTS)
                .with_unit("{attempt}")
                .with_description("Attempts made, first attempts included")
                .build(),
            exhausted: meter
                .u64_counter(BUDGET_EXHAUSTED)
                .with_unit("{call}")
                .with_description("Failed attempts the retry budget could not retry")
                .build(),
            instance_only: [instance.clone()],
            instance,
            by_stop,
        }
    }
}

impl Listener<Event> for OtelListener {
    fn on_event(&self, event: &Event) {
        match *event {
            Event::Finished { attempts, stop } => {
                let index = STOPS.iter().position(|s| *s == stop).unwrap_or(2);
                let attrs = &self.by_stop[index][usize::from(attempts > 1)];
                self.calls.add(1, attrs);
                self.attempts.add(u64::from(attempts), &self.instance_only);
            }
            Event::BudgetExhausted { .. } => self.exhausted.add(1, &self.instance_only),
            Event::RetryScheduled { attempt, delay, .. }
            | Event::HedgeStarted {
                attempt,
                after: delay,
            } => {
                get_active_span(|span| {
                    if span.is_recording() {
                        span.add_event(
                            ATTEMPT_EVENT,
                            vec![
                                self.instance.clone(),
                                KeyValue::new(RESEND_COUNT, i64::from(attempt - 1)),
                                KeyValue::new(DELAY, delay.as_secs_f64()),
                            ],
                        );
                    }
                });
            }
            Event::AttemptTimedOut { .. } => {}
        }
    }
}
