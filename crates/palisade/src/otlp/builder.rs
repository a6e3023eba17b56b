use std::time::Duration;

use opentelemetry::global;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::runtime::Handle;

use super::error::{Error, Signal};
use super::guard::Otlp;
use super::http_client::RuntimeHttpClient;
use super::settings::{Overrides, Protocol, SignalSettings, invalid};

/// Overrides for [`init`](super::init): each setting given here wins over
/// its environment variables, for both signals. Made by [`Otlp::builder`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct OtlpBuilder {
    overrides: Overrides,
    service_name: Option<String>,
    metric_export_interval: Option<Duration>,
}

impl OtlpBuilder {
    /// The collector's base URL, `http://` only (`http://127.0.0.1:4317` for
    /// gRPC, `http://127.0.0.1:4318` for HTTP, where `/v1/traces` and
    /// `/v1/metrics` are appended). Instead of `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// and the per-signal `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`.
    pub fn endpoint(mut self, base_url: impl Into<String>) -> Self {
        self.overrides.endpoint = Some(base_url.into());
        self
    }

    /// The transport, instead of `OTEL_EXPORTER_OTLP_PROTOCOL` and the
    /// per-signal `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_PROTOCOL`.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.overrides.protocol = Some(protocol);
        self
    }

    /// How long one export may take, instead of `OTEL_EXPORTER_OTLP_TIMEOUT`
    /// and the per-signal `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_TIMEOUT`
    /// (default 10 s). More than zero.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.overrides.timeout = Some(timeout);
        self
    }

    /// The resource's `service.name`, instead of `OTEL_SERVICE_NAME` (and of
    /// a `service.name` in `OTEL_RESOURCE_ATTRIBUTES`). Not empty.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// How often the instruments are exported, instead of
    /// `OTEL_METRIC_EXPORT_INTERVAL` (default 60 s). More than zero.
    pub fn metric_export_interval(mut self, interval: Duration) -> Self {
        self.metric_export_interval = Some(interval);
        self
    }

    /// Builds both exporters, installs the global tracer and meter providers
    /// and the W3C trace-context propagator, and returns the guard that
    /// flushes and shuts them down on drop. Works with or without a tokio
    /// runtime around it (the exporters run on one thread of their own).
    ///
    /// Nothing is sent here: a collector that is down shows in the exports
    /// (and in [`Otlp::force_flush`]), not as an error of this call.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the variable or builder method for an
    /// unknown protocol, an `https://` or non-URL endpoint, a timeout that is
    /// not a whole number of milliseconds or is zero, an empty service name
    /// or a zero interval; [`Error::Exporter`] when an exporter refuses its
    /// configuration (an endpoint that does not parse, an unsupported
    /// compression); [`Error::Runtime`] when the exporters' thread cannot
    /// start. Nothing is installed then.
    pub fn init(self) -> Result<Otlp, Error> {
        let env = |name: &str| std::env::var(name).ok();
        let traces = SignalSettings::resolve(Signal::Traces, &self.overrides, &env)?;
        let metrics = SignalSettings::resolve(Signal::Metrics, &self.overrides, &env)?;
        if self.service_name.as_deref().is_some_and(str::is_empty) {
            return Err(invalid(
                "OtlpBuilder::service_name",
                "the service name must not be empty",
            ));
        }
        if self.metric_export_interval.is_some_and(|d| d.is_zero()) {
            return Err(invalid(
                "OtlpBuilder::metric_export_interval",
                "the interval must be more than zero",
            ));
        }

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("palisade-otlp")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        let exporters = span_exporter(&traces, runtime.handle())
            .and_then(|spans| Ok((spans, metric_exporter(&metrics, runtime.handle())?)));
        let (span_exporter, metric_exporter) = match exporters {
            Ok(exporters) => exporters,
            Err(error) => {
                // Dropping a runtime inside an async context would panic.
                runtime.shutdown_background();
                return Err(error);
            }
        };

        // Reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
        let mut resource = Resource::builder();
        if let Some(name) = self.service_name {
            resource = resource.with_service_name(name);
        }
        let resource = resource.build();

        let tracer_provider = SdkTracerProvider::builder()
            .with_resource(resource.clone())
            .with_batch_exporter(span_exporter)
            .build();
        let mut reader = PeriodicReader::builder(metric_exporter);
        if let Some(interval) = self.metric_export_interval {
            reader = reader.with_interval(interval);
        }
        let meter_provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(reader.build())
            .build();

        global::set_text_map_propagator(TraceContextPropagator::new());
        global::set_tracer_provider(tracer_provider.clone());
        global::set_meter_provider(meter_provider.clone());
        Ok(Otlp::new(tracer_provider, meter_provider, runtime))
    }
}

/// The two exporter builders share no trait for their transports, so one
/// macro sets both up the same way.
macro_rules! build_exporter {
    ($exporter:ty, $signal:expr, $settings:expr, $runtime:expr) => {{
        let settings: &SignalSettings = $settings;
        let runtime: &Handle = $runtime;
        let exporter_error = |source: opentelemetry_otlp::ExporterBuildError| Error::Exporter {
            signal: $signal,
            source: Box::new(source),
        };
        match settings.protocol {
            Protocol::Grpc => {
                // tonic's lazy channel spawns its worker on the current runtime.
                let _entered = runtime.enter();
                let mut builder = <$exporter>::builder()
                    .with_tonic()
                    .with_protocol(opentelemetry_otlp::Protocol::Grpc)
                    .with_timeout(settings.timeout);
                if let Some(endpoint) = &settings.endpoint {
                    builder = builder.with_endpoint(endpoint.clone());
                }
                builder.build().map_err(exporter_error)
            }
            Protocol::HttpProtobuf => {
                let mut builder = <$exporter>::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_http_client(RuntimeHttpClient::new(runtime.clone(), settings.timeout))
                    .with_timeout(settings.timeout);
                if let Some(endpoint) = &settings.endpoint {
                    builder = builder.with_endpoint(endpoint.clone());
                }
                builder.build().map_err(exporter_error)
            }
        }
    }};
}

fn span_exporter(settings: &SignalSettings, runtime: &Handle) -> Result<SpanExporter, Error> {
    build_exporter!(SpanExporter, Signal::Traces, settings, runtime)
}

fn metric_exporter(settings: &SignalSettings, runtime: &Handle) -> Result<MetricExporter, Error> {
    build_exporter!(MetricExporter, Signal::Metrics, settings, runtime)
}
