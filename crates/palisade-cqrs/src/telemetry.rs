//! Feature `otel`: `palisade.cqrs.commands` and `palisade.cqrs.projection.lag`,
//! the `cqrs.command {aggregate}` span, and the trace context copied into
//! event metadata.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge};
use opentelemetry::trace::TraceContextExt;
use palisade_core::telemetry::{INSTANCE, MeterSource, OUTCOME};

use crate::event::{CommandOutcome, Event};

/// Commands executed: counter, attributes `palisade.instance`,
/// `palisade.outcome` (`accepted`, `rejected`, `conflict`, `failed`) and
/// [`AGGREGATE`].
pub const COMMANDS: &str = "palisade.cqrs.commands";
/// Events in the log after a projection's checkpoint: gauge `{event}`,
/// attributes `palisade.instance` and [`PROJECTION`].
pub const PROJECTION_LAG: &str = "palisade.cqrs.projection.lag";
/// The aggregate type attribute.
pub const AGGREGATE: &str = "palisade.cqrs.aggregate";
/// The projection name attribute.
pub const PROJECTION: &str = "palisade.cqrs.projection";
/// The aggregate id attribute of a `cqrs.command` span.
pub const AGGREGATE_ID: &str = "palisade.cqrs.aggregate.id";
/// The attempts attribute of a `cqrs.command` span (0 when the aggregate
/// refused or the store failed before an append).
pub const ATTEMPTS: &str = "palisade.cqrs.attempts";

const NAME: &str = env!("CARGO_PKG_NAME");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where a handler's spans go.
pub(crate) enum TracerSource {
    Global,
    Tracer(opentelemetry::global::BoxedTracer),
}

impl TracerSource {
    pub(crate) fn tracer(self) -> opentelemetry::global::BoxedTracer {
        match self {
            Self::Global => palisade_core::telemetry::global_tracer(NAME, VERSION),
            Self::Tracer(tracer) => tracer,
        }
    }
}

/// Runs `work` (a command) in a `cqrs.command {aggregate}` span, a child of
/// the current context, and records its outcome and attempts at the end;
/// the span's status is an error only when the store failed or every
/// attempt conflicted (a refusal is the aggregate's answer).
pub(crate) async fn in_command_span<T, F>(
    tracer: &opentelemetry::global::BoxedTracer,
    instance: &str,
    aggregate: &'static str,
    id: &str,
    summary: impl FnOnce(&T) -> (CommandOutcome, u32),
    work: F,
) -> T
where
    F: std::future::Future<Output = T>,
{
    use opentelemetry::context::FutureExt as _;
    use opentelemetry::trace::{SpanKind, Status, Tracer as _};
    let span = tracer
        .span_builder(format!("cqrs.command {aggregate}"))
        .with_kind(SpanKind::Internal)
        .with_attributes([
            KeyValue::new(INSTANCE, instance.to_owned()),
            KeyValue::new(AGGREGATE, aggregate),
            KeyValue::new(AGGREGATE_ID, id.to_owned()),
        ])
        .start_with_context(tracer, &opentelemetry::Context::current());
    let cx = opentelemetry::Context::current_with_span(span);
    let result = work.with_context(cx.clone()).await;
    let (outcome, attempts) = summary(&result);
    let span = cx.span();
    span.set_attribute(KeyValue::new(OUTCOME, outcome.as_str()));
    span.set_attribute(KeyValue::new(ATTEMPTS, i64::from(attempts)));
    if matches!(outcome, CommandOutcome::Conflict | CommandOutcome::Failed) {
        span.set_status(Status::error(outcome.as_str()));
    }
    span.end();
    result
}

fn meter(source: MeterSource) -> opentelemetry::metrics::Meter {
    source.meter(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
}

pub(crate) struct CommandMetrics {
    commands: Counter<u64>,
    instance: KeyValue,
}

impl CommandMetrics {
    pub(crate) fn new(source: MeterSource, name: &str) -> Self {
        Self {
            commands: meter(source)
                .u64_counter(COMMANDS)
                .with_description("Commands executed, by outcome")
                .build(),
            instance: KeyValue::new(INSTANCE, name.to_owned()),
        }
    }
}

impl palisade_core::Listener<Event> for CommandMetrics {
    fn on_event(&self, event: &Event) {
        if let Event::CommandExecuted {
            aggregate, outcome, ..
        } = event
        {
            let outcome: CommandOutcome = *outcome;
            self.commands.add(
                1,
                &[
                    self.instance.clone(),
                    KeyValue::new(OUTCOME, outcome.as_str()),
                    KeyValue::new(AGGREGATE, *aggregate),
                ],
            );
        }
    }
}

pub(crate) struct LagMetrics {
    lag: Gauge<u64>,
    instance: KeyValue,
}

impl LagMetrics {
    pub(crate) fn new(source: MeterSource, name: &str) -> Self {
        Self {
            lag: meter(source)
                .u64_gauge(PROJECTION_LAG)
                .with_unit("{event}")
                .with_description("Events in the log after the projection's checkpoint")
                .build(),
            instance: KeyValue::new(INSTANCE, name.to_owned()),
        }
    }
}

impl palisade_core::Listener<Event> for LagMetrics {
    fn on_event(&self, event: &Event) {
        if let Event::ProjectionHandled {
            projection,
            lag: Some(lag),
            ..
        } = event
        {
            self.lag.record(
                *lag,
                &[
                    self.instance.clone(),
                    KeyValue::new(PROJECTION, projection.to_string()),
                ],
            );
        }
    }
}

/// The OpenTelemetry context whose (remote) parent is the span a W3C
/// `traceparent` names; `None` for a malformed or missing one.
pub(crate) fn parent_context(traceparent: Option<&str>) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let mut parts = traceparent?.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00"
        || parts.next().is_some()
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?);
    let remote = SpanContext::new(trace, span, flags, true, TraceState::default());
    remote
        .is_valid()
        .then(|| opentelemetry::Context::new().with_remote_span_context(remote))
}

/// The W3C `traceparent` of the current OpenTelemetry span, if there is a valid one.
pub(crate) fn current_traceparent() -> Option<String> {
    let cx = opentelemetry::Context::current();
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
