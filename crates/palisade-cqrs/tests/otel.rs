//! `palisade.cqrs.commands`, `palisade.cqrs.projection.lag`, and the trace
//! context in event metadata, read back from the SDK's in-memory exporters.
#![cfg(feature = "otel")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Account, Command};
use opentelemetry::context::FutureExt as _;
use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use palisade_cqrs::telemetry::{COMMANDS, PROJECTION_LAG};
use palisade_cqrs::{
    BoxError, CommandHandler, EventStore, InMemoryCheckpointStore, InMemoryEventStore, Projection,
    ProjectionContext, ProjectionRunner, Projector, RecordedEvent, StreamName,
};
use palisade_event_store::{ReadStream, TryStreamExt};

fn attrs<'a>(kvs: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> Vec<(String, String)> {
    let mut v: Vec<_> = kvs
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn commands_are_counted_by_outcome_and_aggregate() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let accounts = CommandHandler::<Account>::builder(store, ())
        .name("bank")
        .meter(provider.meter("test"))
        .build()
        .unwrap();
    accounts.execute("a", &Command::Open).await.unwrap();
    accounts.execute("a", &Command::Deposit(1)).await.unwrap();
    accounts
        .execute("a", &Command::Withdraw(5))
        .await
        .unwrap_err();
    provider.force_flush().unwrap();
    let metrics = exporter.get_finished_metrics().unwrap();
    let metric = metrics
        .iter()
        .flat_map(opentelemetry_sdk::metrics::data::ResourceMetrics::scope_metrics)
        .flat_map(opentelemetry_sdk::metrics::data::ScopeMetrics::metrics)
        .find(|m| m.name() == COMMANDS)
        .expect("the commands counter");
    let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() else {
        panic!("a u64 sum")
    };
    let mut points: Vec<_> = sum
        .data_points()
        .map(|p| (attrs(p.attributes()), p.value()))
        .collect();
    points.sort();
    let row = |outcome: &str| {
        vec![
            ("palisade.cqrs.aggregate".to_owned(), "account".to_owned()),
            ("palisade.instance".to_owned(), "bank".to_owned()),
            ("palisade.outcome".to_owned(), outcome.to_owned()),
        ]
    };
    assert_eq!(points, [(row("accepted"), 2), (row("rejected"), 1)]);
}

struct Nothing;

#[async_trait::async_trait]
impl Projection for Nothing {
    async fn handle(&self, _: &RecordedEvent, _: ProjectionContext) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn projection_lag_is_a_gauge_per_projection() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let accounts = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .build()
        .unwrap();
    accounts.execute("a", &Command::Open).await.unwrap();
    accounts.execute("a", &Command::Deposit(1)).await.unwrap();
    let runner = ProjectionRunner::builder(Arc::clone(&store))
        .name("views")
        .meter(provider.meter("test"))
        .projection(Projector::new(
            "nothing",
            Nothing,
            Arc::new(InMemoryCheckpointStore::new()),
        ))
        .start()
        .await
        .unwrap();
    runner
        .wait_caught_up(Duration::from_millis(1))
        .await
        .unwrap();
    provider.force_flush().unwrap();
    let metrics = exporter.get_finished_metrics().unwrap();
    let metric = metrics
        .iter()
        .flat_map(opentelemetry_sdk::metrics::data::ResourceMetrics::scope_metrics)
        .flat_map(opentelemetry_sdk::metrics::data::ScopeMetrics::metrics)
        .find(|m| m.name() == PROJECTION_LAG)
        .expect("the lag gauge");
    let AggregatedMetrics::U64(MetricData::Gauge(gauge)) = metric.data() else {
        panic!("a u64 gauge")
    };
    let points: Vec<_> = gauge
        .data_points()
        .map(|p| (attrs(p.attributes()), p.value()))
        .collect();
    assert_eq!(
        points,
        [(
            vec![
                ("palisade.cqrs.projection".to_owned(), "nothing".to_owned()),
                ("palisade.instance".to_owned(), "views".to_owned())
            ],
            0
        )]
    );
}

#[tokio::test]
async fn events_carry_the_trace_context_of_the_current_span() {
    let provider = SdkTracerProvider::builder().build();
    let tracer = provider.tracer("test");
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let accounts = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .build()
        .unwrap();
    let span = tracer.start("request");
    let cx = opentelemetry::Context::current_with_span(span);
    let trace_id = cx.span().span_context().trace_id();
    let span_id = cx.span().span_context().span_id();
    accounts
        .execute("a", &Command::Open)
        .with_context(cx)
        .await
        .unwrap();
    let stream = StreamName::new("account-a").unwrap();
    let events: Vec<_> = store
        .read_stream(&stream, ReadStream::forward())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        events[0].metadata.traceparent,
        Some(format!("00-{trace_id}-{span_id}-01"))
    );
    // Outside any span: none.
    accounts.execute("a", &Command::Deposit(1)).await.unwrap();
    let events: Vec<_> = store
        .read_stream(&stream, ReadStream::forward())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events[1].metadata.traceparent, None);
}

/// Records the trace id current while it handles each event.
#[derive(Default)]
struct TraceIds(parking_lot::Mutex<Vec<opentelemetry::trace::TraceId>>);

fn current_trace_id() -> opentelemetry::trace::TraceId {
    opentelemetry::Context::current()
        .span()
        .span_context()
        .trace_id()
}

#[async_trait::async_trait]
impl Projection for TraceIds {
    async fn handle(&self, _: &RecordedEvent, _: ProjectionContext) -> Result<(), BoxError> {
        self.0.lock().push(current_trace_id());
        Ok(())
    }
}

#[cfg(feature = "sqlite")]
impl palisade_cqrs::SqliteProjection for TraceIds {
    fn apply(
        &self,
        _: &palisade_cqrs::rusqlite::Transaction<'_>,
        _: &RecordedEvent,
        _: ProjectionContext,
    ) -> Result<(), BoxError> {
        self.0.lock().push(current_trace_id());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_continue_the_trace_recorded_in_the_event() {
    let provider = SdkTracerProvider::builder().build();
    let tracer = provider.tracer("test");
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let accounts = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .build()
        .unwrap();
    let cx = opentelemetry::Context::current_with_span(tracer.start("request"));
    let trace_id = cx.span().span_context().trace_id();
    accounts
        .execute("a", &Command::Open)
        .with_context(cx)
        .await
        .unwrap();
    accounts.execute("a", &Command::Deposit(1)).await.unwrap(); // outside any trace

    let view = Arc::new(TraceIds::default());
    #[allow(unused_mut)]
    let mut builder = ProjectionRunner::builder(Arc::clone(&store)).projection(Projector::new(
        "ids",
        Arc::clone(&view),
        Arc::new(InMemoryCheckpointStore::new()),
    ));
    #[cfg(feature = "sqlite")]
    let (sqlite_view, _model, path) = {
        let path = std::env::temp_dir().join(format!(
            "palisade-cqrs-otel-{}.db",
            uuid::Uuid::new_v4().simple()
        ));
        let model = palisade_cqrs::SqliteReadModel::open(&path).await.unwrap();
        let sqlite_view = Arc::new(TraceIds::default());
        builder = builder.projection(model.projector("sqlite_ids", Arc::clone(&sqlite_view)));
        (sqlite_view, model, path)
    };
    let runner = builder.start().await.unwrap();
    runner
        .wait_caught_up(Duration::from_millis(2))
        .await
        .unwrap();
    let none = opentelemetry::trace::TraceId::INVALID;
    assert_eq!(*view.0.lock(), [trace_id, none]);
    #[cfg(feature = "sqlite")]
    {
        assert_eq!(*sqlite_view.0.lock(), [trace_id, none]);
        drop(runner);
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", path.display()));
        }
    }
}

#[tokio::test]
async fn with_a_tracer_each_command_is_a_child_span_of_the_caller_and_its_events_carry_it() {
    use opentelemetry::trace::{SpanKind, Status};
    use opentelemetry_sdk::trace::InMemorySpanExporter;

    let spans = InMemorySpanExporter::default();
    let tracers = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let accounts = CommandHandler::<Account>::builder(Arc::clone(&store), ())
        .name("bank")
        .tracer(opentelemetry::global::BoxedTracer::new(Box::new(
            tracers.tracer("test"),
        )))
        .build()
        .unwrap();
    let request = tracers.tracer("test").start("request");
    let cx = opentelemetry::Context::current_with_span(request);
    let request_id = cx.span().span_context().span_id();
    async {
        accounts.execute("a", &Command::Open).await.unwrap();
        accounts
            .execute("a", &Command::Withdraw(5))
            .await
            .unwrap_err();
    }
    .with_context(cx.clone())
    .await;
    cx.span().end();

    let finished = spans.get_finished_spans().unwrap();
    let commands: Vec<_> = finished
        .iter()
        .filter(|s| s.name == "cqrs.command account")
        .collect();
    assert_eq!(commands.len(), 2);
    for span in &commands {
        assert_eq!(span.span_kind, SpanKind::Internal);
        assert_eq!(span.parent_span_id, request_id);
    }
    let attributes = |i: usize| attrs(commands[i].attributes.iter());
    let expect = |outcome: &str, attempts: &str| {
        vec![
            ("palisade.cqrs.aggregate".to_owned(), "account".to_owned()),
            ("palisade.cqrs.aggregate.id".to_owned(), "a".to_owned()),
            ("palisade.cqrs.attempts".to_owned(), attempts.to_owned()),
            ("palisade.instance".to_owned(), "bank".to_owned()),
            ("palisade.outcome".to_owned(), outcome.to_owned()),
        ]
    };
    assert_eq!(attributes(0), expect("accepted", "1"));
    assert_eq!(commands[0].status, Status::Unset);
    assert_eq!(attributes(1), expect("rejected", "0"));
    assert_eq!(
        commands[1].status,
        Status::Unset,
        "a refusal is an answer, not an error"
    );

    // The event the first command appended carries the command's span.
    let events: Vec<_> = store
        .read_stream(
            &StreamName::new("account-a").unwrap(),
            ReadStream::forward(),
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let sc = &commands[0].span_context;
    assert_eq!(
        events[0].metadata.traceparent,
        Some(format!("00-{}-{}-01", sc.trace_id(), sc.span_id()))
    );
}
