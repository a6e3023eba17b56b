use std::fmt;

/// Why [`init`](super::init) or [`OtlpBuilder::init`](super::OtlpBuilder::init)
/// failed, or a flush or shutdown of the [`Otlp`](super::Otlp) guard did.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting has a value that cannot work. `setting` names where it came
    /// from: an environment variable (`OTEL_EXPORTER_OTLP_PROTOCOL`) or a
    /// builder method (`OtlpBuilder::endpoint`).
    #[error("invalid OTLP configuration in {setting}: {reason}")]
    InvalidConfig {
        /// The environment variable or builder method that holds the value.
        setting: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The exporter of one signal refused its configuration (for example an
    /// endpoint that is not a URI, or a compression that is not built in).
    /// The message names the setting.
    #[error("the OTLP {signal} exporter could not be built: {source}")]
    Exporter {
        /// The signal whose exporter failed.
        signal: Signal,
        /// The exporter's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The exporters' runtime thread could not start.
    #[error("the OTLP exporters' runtime could not start: {0}")]
    Runtime(#[source] std::io::Error),
    /// A flush or shutdown of a provider failed (a collector that did not
    /// answer in time, a provider already shut down).
    #[error("OTLP {signal} {operation} failed: {source}")]
    Export {
        /// The signal whose provider failed.
        signal: Signal,
        /// `"flush"` or `"shutdown"`.
        operation: &'static str,
        /// The provider's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// One of the exported signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Instruments.
    Metrics,
}

impl Signal {
    /// The signal's word in the `OTEL_EXPORTER_OTLP_{SIGNAL}_*` variables.
    pub(crate) fn env_word(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
        }
    }

    /// The path the HTTP transport appends to a base endpoint.
    pub(crate) fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
        })
    }
}
