use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::runtime::Runtime;

use super::builder::OtlpBuilder;
use super::error::{Error, Signal};

/// The installed OTLP export: holds the tracer and meter providers that
/// [`init`](super::init) made global, and the runtime their exporters send
/// on. Keep it alive for as long as the service runs.
///
/// Dropping it flushes what is pending (spans queued in the batch processor,
/// the instruments' current values) and shuts both providers down, blocking
/// the thread until the last exports are answered, at most the SDK's 5 s
/// shutdown limit per signal; errors are not reported there, call
/// [`shutdown`](Otlp::shutdown) to see them. After that the global providers
/// are shut down: spans and measurements made later are dropped.
#[derive(Debug)]
#[must_use = "dropping the guard shuts the export down at once"]
pub struct Otlp {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    /// `None` once dropped; shut down in the background, so that dropping the
    /// guard inside an async context does not panic.
    runtime: Option<Runtime>,
    shut_down: bool,
}

impl Otlp {
    /// A builder for overrides of the standard variables.
    pub fn builder() -> OtlpBuilder {
        OtlpBuilder::default()
    }

    pub(crate) fn new(
        tracer_provider: SdkTracerProvider,
        meter_provider: SdkMeterProvider,
        runtime: Runtime,
    ) -> Self {
        Otlp {
            tracer_provider,
            meter_provider,
            runtime: Some(runtime),
            shut_down: false,
        }
    }

    /// Exports now, and waits for it: the spans that ended and the
    /// instruments' values. Both signals are flushed even if the first fails;
    /// the first error is returned.
    pub fn force_flush(&self) -> Result<(), Error> {
        let traces = self
            .tracer_provider
            .force_flush()
            .map_err(|source| export_error(Signal::Traces, "flush", source));
        let metrics = self
            .meter_provider
            .force_flush()
            .map_err(|source| export_error(Signal::Metrics, "flush", source));
        traces.and(metrics)
    }

    /// Flushes and shuts both providers down, as dropping the guard does, and
    /// says whether it worked (both are shut down even if the first fails;
    /// the first error is returned).
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.shutdown_providers()
    }

    fn shutdown_providers(&mut self) -> Result<(), Error> {
        self.shut_down = true;
        let traces = self
            .tracer_provider
            .shutdown()
            .map_err(|source| export_error(Signal::Traces, "shutdown", source));
        let metrics = self
            .meter_provider
            .shutdown()
            .map_err(|source| export_error(Signal::Metrics, "shutdown", source));
        traces.and(metrics)
    }
}

impl Drop for Otlp {
    fn drop(&mut self) {
        if !self.shut_down {
            // Reported by `shutdown()`; a drop has no one to tell.
            let _ = self.shutdown_providers();
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn export_error(
    signal: Signal,
    operation: &'static str,
    source: opentelemetry_sdk::error::OTelSdkError,
) -> Error {
    Error::Export {
        signal,
        operation,
        source: Box::new(source),
    }
}
