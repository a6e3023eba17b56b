//! The service's own spans, on the global tracer provider: one server span
//! per HTTP request (the root of an order's trace) and one span per event
//! the projection applies, joined to the trace that appended the event.
//!
//! With no provider installed (no `otlp`, no endpoint) they are OpenTelemetry's
//! no-op spans.

use std::collections::HashMap;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::context::FutureExt as _;
use opentelemetry::global::{self, BoxedSpan};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use palisade::cqrs::RecordedEvent;

/// The instrumentation scope of the service's spans.
pub const SCOPE: &str = "palisade-examples.orders";

/// The context a W3C `traceparent` names, through the global propagator.
fn remote_parent(traceparent: Option<&str>) -> Context {
    let Some(traceparent) = traceparent else {
        return Context::new();
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    global::get_text_map_propagator(|p| p.extract(&carrier))
}

/// A span for work done on `event`, a child of the span that appended it
/// (its `traceparent`); ended when dropped.
pub fn event_span(name: &'static str, event: &RecordedEvent) -> BoxedSpan {
    let tracer = global::tracer(SCOPE);
    tracer
        .span_builder(name)
        .with_kind(SpanKind::Consumer)
        .with_attributes([
            KeyValue::new("db.collection.name", event.stream.as_str().to_owned()),
            KeyValue::new("palisade.event.type", event.event_type.clone()),
            KeyValue::new("palisade.event.sequence", event.position.sequence as i64),
        ])
        .start_with_context(
            &tracer,
            &remote_parent(event.metadata.traceparent.as_deref()),
        )
}

/// axum middleware: each request runs in a server span named after its
/// route (`POST /orders`), continuing the caller's trace if it sent a
/// `traceparent`.
pub async fn trace_request(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let method = request.method().as_str().to_owned();
    let parent = remote_parent(
        request
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    let tracer = global::tracer(SCOPE);
    let span = tracer
        .span_builder(format!("{method} {route}"))
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.route", route),
        ])
        .start_with_context(&tracer, &parent);
    let cx = parent.with_span(span);
    let response = next.run(request).with_context(cx.clone()).await;
    let span = cx.span();
    let status = response.status().as_u16();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        span.set_status(Status::error(format!("HTTP {status}")));
    }
    span.end();
    response
}
