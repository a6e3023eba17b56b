//! The OpenTelemetry instruments and span events, read back from the SDK's in-memory exporters.
#![cfg(feature = "otel")]

use std::io;
use std::time::Duration;

use opentelemetry::context::FutureExt;
use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use palisade_retry::telemetry::{ATTEMPT_EVENT, ATTEMPTS, BUDGET_EXHAUSTED, CALLS};
use palisade_retry::{Backoff, Retry, RetryBudget, TokioClock, TokioSleeper};

type Attrs = Vec<(String, String)>;

fn attrs<'a>(kvs: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> Attrs {
    let mut v: Attrs = kvs
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect();
    v.sort();
    v
}

#[tokio::test(start_paused = true)]
async fn calls_attempts_and_exhausted_budgets_are_counted() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let budget = RetryBudget::builder()
        .percent(0.0)
        .min_per_second(1)
        .window(Duration::from_secs(2))
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    let retry = Retry::builder()
        .name("search")
        .max_attempts(3)
        .backoff(Backoff::fixed(Duration::from_millis(5)))
        .clock(TokioClock::shared())
        .sleeper(TokioSleeper::shared())
        .budget(budget)
        .meter(provider.meter("test"))
        .build()
        .unwrap();
    // At once: 1 attempt. Fails once: 2 attempts. Always fails: the budget's
    // last retry (3rd attempt refused after 1 retry), then nothing left.
    retry
        .call(|_| async { Ok::<_, io::Error>(()) })
        .await
        .unwrap();
    retry
        .call(|a| async move {
            if a.number() == 1 {
                Err(io::Error::other("x"))
            } else {
                Ok(())
            }
        })
        .await
        .unwrap();
    let _ = retry
        .call(|_| async { Err::<(), _>(io::Error::other("x")) })
        .await;
    let _ = retry
        .call(|_| async { Err::<(), _>(io::Error::other("x")) })
        .await;
    provider.force_flush().unwrap();

    let mut calls = Vec::new();
    let mut attempts = 0;
    let mut exhausted = 0;
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics() {
                let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() else {
                    panic!("{} is not a u64 sum", m.name());
                };
                match m.name() {
                    CALLS => {
                        assert_eq!(m.unit(), "{call}");
                        for p in sum.data_points() {
                            calls.push((attrs(p.attributes()), p.value()));
                        }
                    }
                    ATTEMPTS => {
                        attempts = sum
                            .data_points()
                            .map(opentelemetry_sdk::metrics::data::SumDataPoint::value)
                            .sum();
                    }
                    BUDGET_EXHAUSTED => {
                        exhausted = sum
                            .data_points()
                            .map(opentelemetry_sdk::metrics::data::SumDataPoint::value)
                            .sum();
                    }
                    other => panic!("unexpected instrument {other}"),
                }
            }
        }
    }
    calls.sort();
    let kv = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(
        calls,
        [
            (
                vec![
                    kv("palisade.instance", "search"),
                    kv("palisade.outcome", "failure"),
                    kv("palisade.retry.retried", "false"),
                    kv("palisade.retry.stop", "budget_exhausted"),
                ],
                1
            ),
            (
                vec![
                    kv("palisade.instance", "search"),
                    kv("palisade.outcome", "failure"),
                    kv("palisade.retry.retried", "true"),
                    kv("palisade.retry.stop", "budget_exhausted"),
                ],
                1
            ),
            (
                vec![
                    kv("palisade.instance", "search"),
                    kv("palisade.outcome", "success"),
                    kv("palisade.retry.retried", "false"),
                ],
                1
            ),
            (
                vec![
                    kv("palisade.instance", "search"),
                    kv("palisade.outcome", "success"),
                    kv("palisade.retry.retried", "true"),
                ],
                1
            ),
        ]
    );
    assert_eq!(attempts, 1 + 2 + 2 + 1);
    assert_eq!(exhausted, 2);
}

#[tokio::test(start_paused = true)]
async fn each_retry_is_a_span_event_with_its_resend_count() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let tracer = provider.tracer("test");
    let meter_provider = SdkMeterProvider::builder().build();
    let retry = Retry::builder()
        .max_attempts(3)
        .backoff(Backoff::fixed(Duration::from_millis(250)))
        .clock(TokioClock::shared())
        .sleeper(TokioSleeper::shared())
        .meter(meter_provider.meter("test"))
        .build()
        .unwrap();
    let span = tracer.start("GET /search");
    let cx = opentelemetry::Context::current_with_span(span);
    // The events are added where the retry is scheduled: in the caller's span.
    let call = retry.call(|_| async { Err::<(), _>(io::Error::other("down")) });
    let _ = FutureExt::with_context(call, cx.clone()).await;
    cx.span().end();
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(spans.len(), 1);
    let events: Vec<_> = spans[0]
        .events
        .iter()
        .map(|e| (e.name.to_string(), attrs(e.attributes.iter())))
        .collect();
    let kv = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    assert_eq!(
        events,
        [
            (
                ATTEMPT_EVENT.to_owned(),
                vec![
                    kv("http.request.resend_count", "1"),
                    kv("palisade.instance", "default"),
                    kv("palisade.retry.delay", "0.25"),
                ]
            ),
            (
                ATTEMPT_EVENT.to_owned(),
                vec![
                    kv("http.request.resend_count", "2"),
                    kv("palisade.instance", "default"),
                    kv("palisade.retry.delay", "0.25"),
                ]
            ),
        ]
    );
}
