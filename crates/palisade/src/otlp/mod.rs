//! OTLP export in one call: traces and metrics to an OpenTelemetry collector
//! over gRPC or HTTP/protobuf, configured by the standard `OTEL_*`
//! variables, with the global providers installed.
//!
//! ```no_run
//! # fn main() -> Result<(), palisade::otlp::Error> {
//! // OTEL_SERVICE_NAME=checkout OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
//! // OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 ./checkout
//! let otlp = palisade::otlp::init()?;
//! // … build breakers, stores and sagas with `.otel()`: they read the
//! // global providers now installed …
//! drop(otlp); // flushes what is pending, then shuts the export down
//! # Ok(())
//! # }
//! ```
//!
//! [`Otlp::builder`] overrides the variables in code:
//!
//! ```no_run
//! use palisade::otlp::{Otlp, Protocol};
//! use std::time::Duration;
//! # fn main() -> Result<(), palisade::otlp::Error> {
//! let otlp = Otlp::builder()
//!     .protocol(Protocol::HttpProtobuf)
//!     .endpoint("http://127.0.0.1:4318")
//!     .service_name("checkout")
//!     .metric_export_interval(Duration::from_secs(10))
//!     .init()?;
//! # drop(otlp);
//! # Ok(())
//! # }
//! ```
//!
//! This module is the only place where the OpenTelemetry SDK and the OTLP
//! exporters are used; the pattern crates depend on the `opentelemetry` API
//! alone. `docs/telemetry.md` lists every variable that applies.

mod builder;
mod error;
mod guard;
mod http_client;
mod settings;

pub use builder::OtlpBuilder;
pub use error::{Error, Signal};
pub use guard::Otlp;
pub use settings::Protocol;

/// Sets up OTLP export of traces and metrics from the standard variables
/// alone, and installs the global providers: `Otlp::builder().init()`. See
/// [`OtlpBuilder::init`] for what it does and its errors.
pub fn init() -> Result<Otlp, Error> {
    Otlp::builder().init()
}
