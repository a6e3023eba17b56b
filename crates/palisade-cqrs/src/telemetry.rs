//! Feature `otel`: `palisade.cqrs.commands` and `palisade.cqrs.projection.lag`,
//! and the trace context copied into event metadata.

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
