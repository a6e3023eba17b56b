//! `palisade::otlp` against a real OTLP receiver on a local port: the
//! instruments of a circuit breaker and the spans of the event store, named
//! in docs/telemetry.md, arrive with their attributes over gRPC and over
//! HTTP/protobuf; dropping the guard flushes what was pending; the standard
//! variables are read; bad configuration is an error.
#![cfg(all(feature = "otlp", feature = "circuit-breaker", feature = "event-store"))]

mod receiver;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use palisade::circuit_breaker::CircuitBreaker;
use palisade::event_store::{
    EventStore, ExpectedVersion, InMemoryEventStore, Instrumented, NewEvent, StreamName,
};
use palisade::otlp::{Error, Otlp, Protocol};
use receiver::{Received, Receiver, Transport};

/// `init` installs the global providers: the tests that call it take turns.
static GLOBAL_PROVIDERS: Mutex<()> = Mutex::new(());

/// Bounds every wait for the receiver; never reached when things work.
const PATIENCE: Duration = Duration::from_secs(20);

/// A metric interval that never fires during a test: only flushes export.
const NEVER: Duration = Duration::from_secs(3600);

fn value(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value(kv.value.as_ref())))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The last export of metric `name`: its transport, resource attributes,
/// scope name and the metric.
fn last_metric(
    received: &Received,
    name: &str,
) -> Option<(Transport, BTreeMap<String, String>, String, Metric)> {
    received
        .metrics
        .iter()
        .rev()
        .find_map(|(transport, request)| {
            request.resource_metrics.iter().find_map(|resource| {
                resource.scope_metrics.iter().find_map(|scope| {
                    scope.metrics.iter().find(|m| m.name == name).map(|m| {
                        (
                            *transport,
                            attributes(&resource.resource.as_ref().unwrap().attributes),
                            scope.scope.as_ref().unwrap().name.clone(),
                            m.clone(),
                        )
                    })
                })
            })
        })
}

/// A counter's points: attributes → value.
fn sum_points(metric: &Metric) -> BTreeMap<BTreeMap<String, String>, i64> {
    let Some(metric::Data::Sum(sum)) = &metric.data else {
        panic!("{} is not a sum: {:?}", metric.name, metric.data);
    };
    sum.data_points
        .iter()
        .map(|point| {
            let Some(number_data_point::Value::AsInt(n)) = point.value else {
                panic!("{} has a non-integer point: {point:?}", metric.name);
            };
            (attributes(&point.attributes), n)
        })
        .collect()
}

/// Every exported span named `name`: its transport, resource attributes,
/// scope name and the span.
fn spans(
    received: &Received,
    name: &str,
) -> Vec<(Transport, BTreeMap<String, String>, String, Span)> {
    let mut found = Vec::new();
    for (transport, request) in &received.traces {
        for resource in &request.resource_spans {
            let resource_attributes = attributes(&resource.resource.as_ref().unwrap().attributes);
            for scope in &resource.scope_spans {
                for span in scope.spans.iter().filter(|span| span.name == name) {
                    found.push((
                        *transport,
                        resource_attributes.clone(),
                        scope.scope.as_ref().unwrap().name.clone(),
                        span.clone(),
                    ));
                }
            }
        }
    }
    found
}

/// What the tests do with the patterns once the export is installed:
/// a breaker named "payments" with three successes and one failure, and one
/// append of one event to stream "order-1" of an event store named "orders".
fn use_the_patterns(runtime: &tokio::runtime::Runtime) {
    let breaker = CircuitBreaker::builder()
        .name("payments")
        .otel()
        .build()
        .unwrap();
    for _ in 0..3 {
        breaker.try_acquire().unwrap().success();
    }
    breaker.try_acquire().unwrap().failure();

    let store = Instrumented::builder(InMemoryEventStore::new())
        .name("orders")
        .otel()
        .build()
        .unwrap();
    let stream = StreamName::new("order-1").unwrap();
    runtime
        .block_on(store.append(
            &stream,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("OrderPlaced", b"{}".to_vec())],
        ))
        .unwrap();
}

fn has_breaker_calls_and_append(received: &Received) -> bool {
    last_metric(received, "palisade.circuit_breaker.calls").is_some()
        && !spans(received, "event_store.append").is_empty()
}

/// Asserts the breaker's calls and the append's span, exact, and that they
/// came by `transport` with service name `service`.
fn assert_breaker_calls_and_append(received: &Received, transport: Transport, service: &str) {
    let (came_by, resource, scope, calls) =
        last_metric(received, "palisade.circuit_breaker.calls").unwrap();
    assert_eq!(came_by, transport);
    assert_eq!(resource["service.name"], service);
    assert_eq!(scope, "palisade-circuit-breaker");
    assert_eq!(calls.unit, "{call}");
    assert_eq!(
        sum_points(&calls),
        BTreeMap::from([
            (
                map(&[
                    ("palisade.instance", "payments"),
                    ("palisade.outcome", "success")
                ]),
                3
            ),
            (
                map(&[
                    ("palisade.instance", "payments"),
                    ("palisade.outcome", "failure")
                ]),
                1
            ),
        ])
    );

    let appends = spans(received, "event_store.append");
    assert_eq!(appends.len(), 1, "{appends:#?}");
    let (came_by, resource, scope, span) = &appends[0];
    assert_eq!(*came_by, transport);
    assert_eq!(resource["service.name"], service);
    assert_eq!(scope, "palisade-event-store");
    assert_eq!(span.kind, SpanKind::Client as i32);
    assert_eq!(
        attributes(&span.attributes),
        map(&[
            ("db.system.name", "palisade.memory"),
            ("db.operation.name", "append"),
            ("db.collection.name", "order-1"),
        ])
    );
}

fn exports_over(protocol: Protocol, transport: Transport, service: &str) {
    let _turn = GLOBAL_PROVIDERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let receiver = Receiver::start();
    // No runtime around `init`: the exporters bring their own.
    let otlp = Otlp::builder()
        .protocol(protocol)
        .endpoint(receiver.url())
        .service_name(service)
        .metric_export_interval(NEVER)
        .init()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    use_the_patterns(&runtime);
    otlp.force_flush().unwrap();
    let received = receiver.wait_until(PATIENCE, has_breaker_calls_and_append);
    assert_breaker_calls_and_append(&received, transport, service);
    drop(received);
    otlp.shutdown().unwrap();
}

#[test]
fn over_grpc_the_breakers_instruments_and_the_event_stores_spans_arrive() {
    exports_over(Protocol::Grpc, Transport::Grpc, "otlp-test-grpc");
}

#[test]
fn over_http_protobuf_the_breakers_instruments_and_the_event_stores_spans_arrive() {
    exports_over(Protocol::HttpProtobuf, Transport::Http, "otlp-test-http");
}

/// In an async context on a single-threaded runtime, where blocking its
/// thread would stall an exporter that ran on it.
#[test]
fn dropping_the_guard_flushes_what_was_pending() {
    let _turn = GLOBAL_PROVIDERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(drop_flushes());
}

async fn drop_flushes() {
    for (protocol, transport) in [
        (Protocol::Grpc, Transport::Grpc),
        (Protocol::HttpProtobuf, Transport::Http),
    ] {
        let receiver = Receiver::start();
        let otlp = Otlp::builder()
            .protocol(protocol)
            .endpoint(receiver.url())
            .service_name("otlp-test-drop")
            .metric_export_interval(NEVER)
            .init()
            .unwrap();
        let breaker = CircuitBreaker::builder()
            .name("payments")
            .otel()
            .build()
            .unwrap();
        for _ in 0..3 {
            breaker.try_acquire().unwrap().success();
        }
        breaker.try_acquire().unwrap().failure();
        let store = Instrumented::builder(InMemoryEventStore::new())
            .name("orders")
            .otel()
            .build()
            .unwrap();
        store
            .append(
                &StreamName::new("order-1").unwrap(),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("OrderPlaced", b"{}".to_vec())],
            )
            .await
            .unwrap();
        {
            let received = receiver.received();
            assert!(received.traces.is_empty(), "{received:#?}");
            assert!(received.metrics.is_empty(), "{received:#?}");
        }
        // The drop returns once the exports were answered.
        drop(otlp);
        assert_breaker_calls_and_append(&receiver.received(), transport, "otlp-test-drop");
    }
}

/// Set by the parent test for the child process it starts.
const CHILD: &str = "PALISADE_OTLP_TEST_CHILD";

/// Runs this test binary again with `vars` set, to run only
/// `child_process_body`; returns its output.
fn run_child(vars: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child_process_body", "--ignored", "--nocapture"])
        .env(CHILD, "1");
    for var in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
    ] {
        command.env_remove(var);
    }
    command.envs(vars.iter().copied());
    command.output().unwrap()
}

/// Not a test of its own: the body of the child processes that
/// `the_standard_variables_are_read` starts with the variables set (the
/// environment of this process cannot be changed safely). Without
/// `PALISADE_OTLP_TEST_CHILD` it does nothing. It prints the outcome of
/// `init()` and, when that worked, uses the patterns and drops the guard.
#[test]
#[ignore = "run by the_standard_variables_are_read in a child process"]
fn child_process_body() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    match palisade::otlp::init() {
        Err(error) => println!("CHILD init error: {error}"),
        Ok(otlp) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            use_the_patterns(&runtime);
            drop(otlp);
            println!("CHILD exported");
        }
    }
}

fn child_said(output: &std::process::Output) -> String {
    assert!(output.status.success(), "child failed: {output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("CHILD "))
        .unwrap_or_else(|| panic!("the child said nothing: {stdout}"))
        .to_owned()
}

#[test]
fn the_standard_variables_are_read() {
    let receiver = Receiver::start();
    let url = receiver.url();

    // gRPC, the endpoint and the resource from the variables alone.
    let output = run_child(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &url),
        ("OTEL_SERVICE_NAME", "checkout"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=ci"),
    ]);
    assert_eq!(child_said(&output), "exported");
    let received = receiver.wait_until(PATIENCE, has_breaker_calls_and_append);
    assert_breaker_calls_and_append(&received, Transport::Grpc, "checkout");
    let (_, resource, _, _) = last_metric(&received, "palisade.circuit_breaker.calls").unwrap();
    assert_eq!(resource["deployment.environment.name"], "ci");
    drop(received);

    // HTTP/protobuf by default, to the per-signal endpoints, used as they are.
    let output = run_child(&[
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            &format!("{url}/v1/traces"),
        ),
        (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            &format!("{url}/v1/metrics"),
        ),
        ("OTEL_SERVICE_NAME", "checkout-http"),
    ]);
    assert_eq!(child_said(&output), "exported");
    let received = receiver.wait_until(PATIENCE, |received| {
        received
            .metrics
            .iter()
            .any(|(transport, _)| *transport == Transport::Http)
            && received
                .traces
                .iter()
                .any(|(transport, _)| *transport == Transport::Http)
    });
    let (transport, resource, _, _) =
        last_metric(&received, "palisade.circuit_breaker.calls").unwrap();
    assert_eq!(transport, Transport::Http);
    assert_eq!(resource["service.name"], "checkout-http");
    drop(received);

    // An unknown protocol is an error of the call, naming the variable.
    let output = run_child(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")]);
    assert_eq!(
        child_said(&output),
        "init error: invalid OTLP configuration in OTEL_EXPORTER_OTLP_PROTOCOL: \
         unknown protocol \"carrier-pigeon\"; expected `grpc` or `http/protobuf`"
    );
    // A compression that is not built in (the exporter would send
    // uncompressed with a warning).
    let output = run_child(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]);
    assert_eq!(
        child_said(&output),
        "init error: invalid OTLP configuration in OTEL_EXPORTER_OTLP_COMPRESSION: \
         \"gzip\" compression is not built in; use `none`"
    );
    // An endpoint that is not a URI, from the exporter's own check.
    let output = run_child(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://exa mple:4317"),
    ]);
    let said = child_said(&output);
    assert!(
        said.starts_with("init error: the OTLP traces exporter could not be built: ")
            && said.contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{said}"
    );
}

#[test]
fn bad_configuration_in_the_builder_is_an_error_that_names_the_method() {
    // Errors come before anything is installed: no turn needed.
    let error = Otlp::builder()
        .endpoint("https://collector.example:4317")
        .init()
        .unwrap_err();
    let Error::InvalidConfig { setting, reason } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(setting, "OtlpBuilder::endpoint");
    assert!(reason.contains("needs TLS"), "{reason}");

    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let error = Otlp::builder()
            .protocol(protocol)
            .endpoint("http://exa mple:4317")
            .init()
            .unwrap_err();
        let Error::Exporter { signal, .. } = &error else {
            panic!("{protocol:?}: {error:?}");
        };
        assert_eq!(*signal, palisade::otlp::Signal::Traces, "{error}");
        assert!(error.to_string().contains("exa mple"), "{error}");
    }

    let error = Otlp::builder()
        .metric_export_interval(Duration::ZERO)
        .init()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid OTLP configuration in OtlpBuilder::metric_export_interval: \
         the interval must be more than zero"
    );
    let error = Otlp::builder().service_name("").init().unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid OTLP configuration in OtlpBuilder::service_name: \
         the service name must not be empty"
    );
}

/// Inside an async context an error after the runtime was made must not
/// panic while dropping it.
#[tokio::test(flavor = "current_thread")]
async fn an_error_inside_an_async_context_does_not_panic() {
    let error = Otlp::builder()
        .protocol(Protocol::Grpc)
        .endpoint("http://exa mple:4317")
        .init()
        .unwrap_err();
    assert!(matches!(error, Error::Exporter { .. }), "{error:?}");
}

/// A collector that is down is not an error of `init`; the flush says so.
#[test]
fn a_collector_that_is_down_shows_in_the_flush_not_in_init() {
    let _turn = GLOBAL_PROVIDERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A port that was free a moment ago and that nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let otlp = Otlp::builder()
            .protocol(protocol)
            .endpoint(format!("http://127.0.0.1:{port}"))
            .timeout(Duration::from_millis(500))
            .metric_export_interval(NEVER)
            .init()
            .unwrap();
        let breaker = CircuitBreaker::builder()
            .name("payments")
            .otel()
            .build()
            .unwrap();
        breaker.try_acquire().unwrap().success();
        let error = otlp.force_flush().unwrap_err();
        assert!(
            matches!(
                error,
                Error::Export {
                    operation: "flush",
                    ..
                }
            ),
            "{protocol:?}: {error:?}"
        );
        drop(otlp);
    }
}
