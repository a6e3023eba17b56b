//! OpenTelemetry instruments and spans for a saga runner (feature `otel`):
//! an adapter over the runner's [`Event`]s, added when the builder asks with
//! [`otel`](SagaBuilder::otel), [`meter`](SagaBuilder::meter) or
//! [`tracer`](SagaBuilder::tracer).
//!
//! Names follow `docs/telemetry.md`. Instruments are made once, in `build()`,
//! with their attribute sets. Spans: `saga {name}` (internal) for each run of
//! a saga, a child of the context current when the run began, and a child
//! `step {step}` per step round and compensation attempt, given their
//! measured start and end. Everything the `otel` feature adds is here.

use std::collections::HashMap;
use std::time::SystemTime;

use opentelemetry::global::BoxedTracer;
use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
};
use opentelemetry::{Context, KeyValue};
use palisade_core::Listener;
use palisade_core::telemetry::{INSTANCE, MeterSource, OUTCOME, global_tracer};
use parking_lot::Mutex;

use crate::config::SagaBuilder;
use crate::event::{Event, ExecutionOutcome};
use crate::saga::SagaState;

/// `palisade.saga.executions`: sagas that ended, by outcome (completed, compensated, failed).
pub const EXECUTIONS: &str = "palisade.saga.executions";
/// `palisade.saga.step.duration`: step rounds and compensation attempts in seconds, by step and outcome.
pub const STEP_DURATION: &str = "palisade.saga.step.duration";
/// Attribute: the step's name.
pub const STEP: &str = "palisade.saga.step";
/// Attribute: the saga id (on spans only: unbounded).
pub const SAGA_ID: &str = "palisade.saga.id";

const NAME: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The W3C `traceparent` of the current span, if there is a valid one.
pub(crate) fn current_traceparent() -> Option<String> {
    let cx = Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The context a `traceparent` names (a remote parent), if it parses.
fn parent_from(traceparent: &str) -> Option<Context> {
    let mut parts = traceparent.split('-');
    let (Some("00"), Some(trace), Some(span), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let sc = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
        true,
        TraceState::default(),
    );
    sc.is_valid()
        .then(|| Context::new().with_remote_span_context(sc))
}

/// Where the spans go.
#[derive(Debug)]
pub(crate) enum TracerSource {
    Global,
    Tracer(BoxedTracer),
}

/// What the builder asked for.
#[derive(Debug, Default)]
pub(crate) struct OtelConfig {
    pub(crate) meter: Option<MeterSource>,
    pub(crate) tracer: Option<TracerSource>,
}

impl<S: SagaState> SagaBuilder<S> {
    /// Instruments on the global meter provider and spans on the global
    /// tracer provider, as they are when `build()` runs.
    #[must_use]
    pub fn otel(mut self) -> Self {
        self.otel.meter = Some(MeterSource::Global);
        self.otel.tracer = Some(TracerSource::Global);
        self
    }

    /// Instruments on `meter`.
    #[must_use]
    pub fn meter(mut self, meter: opentelemetry::metrics::Meter) -> Self {
        self.otel.meter = Some(MeterSource::Meter(meter));
        self
    }

    /// Spans on `tracer`.
    #[must_use]
    pub fn tracer(mut self, tracer: BoxedTracer) -> Self {
        self.otel.tracer = Some(TracerSource::Tracer(tracer));
        self
    }
}

struct Metrics {
    executions: Counter<u64>,
    step_duration: Histogram<f64>,
    /// completed, compensated, failed.
    by_outcome: [[KeyValue; 2]; 3],
    instance: KeyValue,
}

pub(crate) struct OtelListener {
    metrics: Option<Metrics>,
    tracer: Option<BoxedTracer>,
    /// The open `saga {name}` span of each run, by saga id.
    runs: Mutex<HashMap<String, Context>>,
}

impl OtelListener {
    pub(crate) fn new(config: OtelConfig, name: &str) -> Self {
        let metrics = config.meter.map(|source| {
            let meter = source.meter(NAME, VERSION);
            let instance = KeyValue::new(INSTANCE, name.to_owned());
            let outcome =
                |o: ExecutionOutcome| [instance.clone(), KeyValue::new(OUTCOME, o.as_str())];
            Metrics {
                executions: meter
                    .u64_counter(EXECUTIONS)
                    .with_description("Sagas that ended, by outcome")
                    .build(),
                step_duration: meter
                    .f64_histogram(STEP_DURATION)
                    .with_unit("s")
                    .with_description(
                        "Saga step rounds and compensation attempts, by step and outcome",
                    )
                    .build(),
                by_outcome: [
                    outcome(ExecutionOutcome::Completed),
                    outcome(ExecutionOutcome::Compensated),
                    outcome(ExecutionOutcome::Failed),
                ],
                instance,
            }
        });
        let tracer = config.tracer.map(|source| match source {
            TracerSource::Global => global_tracer(NAME, VERSION),
            TracerSource::Tracer(tracer) => tracer,
        });
        Self {
            metrics,
            tracer,
            runs: Mutex::new(HashMap::new()),
        }
    }
}

impl Listener<Event> for OtelListener {
    fn on_event(&self, event: &Event) {
        match event {
            Event::Started {
                saga,
                id,
                resumed,
                traceparent,
            } => {
                if let Some(tracer) = &self.tracer {
                    // A resumed run continues the trace its saga started in.
                    let parent = traceparent
                        .as_deref()
                        .filter(|_| *resumed)
                        .and_then(parent_from)
                        .unwrap_or_else(Context::current);
                    let span = tracer
                        .span_builder(format!("saga {saga}"))
                        .with_kind(SpanKind::Internal)
                        .with_attributes([
                            KeyValue::new(INSTANCE, saga.to_string()),
                            KeyValue::new(SAGA_ID, id.to_string()),
                            KeyValue::new("palisade.saga.resumed", *resumed),
                        ])
                        .start_with_context(tracer, &parent);
                    self.runs
                        .lock()
                        .insert(id.to_string(), Context::current_with_span(span));
                }
            }
            Event::Step {
                id,
                step,
                outcome,
                attempt,
                duration,
                ..
            } => {
                if let Some(m) = &self.metrics {
                    m.step_duration.record(
                        duration.as_secs_f64(),
                        &[
                            m.instance.clone(),
                            KeyValue::new(STEP, step.to_string()),
                            KeyValue::new(OUTCOME, outcome.as_str()),
                        ],
                    );
                }
                if let Some(tracer) = &self.tracer {
                    let parent = self.runs.lock().get(id.as_ref()).cloned();
                    if let Some(parent) = parent {
                        let end = SystemTime::now();
                        let span = tracer
                            .span_builder(format!("step {step}"))
                            .with_kind(SpanKind::Internal)
                            .with_start_time(end.checked_sub(*duration).unwrap_or(end))
                            .with_attributes([
                                KeyValue::new(STEP, step.to_string()),
                                KeyValue::new(OUTCOME, outcome.as_str()),
                                KeyValue::new("palisade.saga.attempt", i64::from(*attempt)),
                            ])
                            .start_with_context(tracer, &parent);
                        let cx = parent.with_span(span);
                        cx.span().end_with_timestamp(end);
                    }
                }
            }
            Event::Finished { id, outcome, .. } => {
                if let Some(m) = &self.metrics {
                    let i = match outcome {
                        ExecutionOutcome::Completed => 0,
                        ExecutionOutcome::Compensated => 1,
                        ExecutionOutcome::Failed => 2,
                    };
                    m.executions.add(1, &m.by_outcome[i]);
                }
                if let Some(cx) = self.runs.lock().remove(id.as_ref()) {
                    let span = cx.span();
                    span.set_attribute(KeyValue::new(OUTCOME, outcome.as_str()));
                    if *outcome == ExecutionOutcome::Failed {
                        span.set_status(Status::error("a compensation could not finish"));
                    }
                    span.end();
                }
            }
        }
    }
}
