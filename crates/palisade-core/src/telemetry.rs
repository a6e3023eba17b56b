//! What every pattern's telemetry shares: attribute names (see
//! `docs/telemetry.md`) and, with feature `otel`, how an instance finds its
//! meter.
//!
//! Each pattern crate emits typed events to core's [`Listeners`](crate::Listeners);
//! its `otel` and `tracing` features are adapters over those events, added
//! only when the instance's builder asks (`.otel()`, `.meter(m)`, `.tracing()`).

/// The name given to a pattern instance (`"payments"`).
pub const INSTANCE: &str = "palisade.instance";
/// What happened to a call, per instrument.
pub const OUTCOME: &str = "palisade.outcome";
/// OpenTelemetry's attribute for the kind of error, when an outcome is a failure.
pub const ERROR_TYPE: &str = "error.type";

#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub use otel::{MeterSource, global_tracer, scope};

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::InstrumentationScope;
    use opentelemetry::global::BoxedTracer;
    use opentelemetry::metrics::Meter;

    /// The instrumentation scope of a crate: its name and version. Pattern
    /// crates pass `env!("CARGO_PKG_NAME")` and `env!("CARGO_PKG_VERSION")`.
    pub fn scope(name: &'static str, version: &'static str) -> InstrumentationScope {
        InstrumentationScope::builder(name)
            .with_version(version)
            .build()
    }

    /// A tracer of the global provider as it is now, for the crate `name` at `version`.
    pub fn global_tracer(name: &'static str, version: &'static str) -> BoxedTracer {
        opentelemetry::global::tracer_with_scope(scope(name, version))
    }

    /// Where an instance records its instruments: set by a builder's `.otel()`
    /// (the global provider, as it is when `build()` runs) or `.meter(m)`.
    ///
    /// The global provider is read in `build()`, never earlier and never in a
    /// `static`, so an instance built after the application installs its
    /// provider reports to it.
    #[derive(Debug, Clone)]
    #[non_exhaustive]
    pub enum MeterSource {
        /// `opentelemetry::global::meter_provider()` when the instance is built.
        Global,
        /// This meter (tests inject an SDK provider's meter).
        Meter(Meter),
    }

    impl MeterSource {
        /// The meter to make instruments on, for the crate `name` at `version`.
        pub fn meter(self, name: &'static str, version: &'static str) -> Meter {
            match self {
                Self::Global => opentelemetry::global::meter_with_scope(scope(name, version)),
                Self::Meter(meter) => meter,
            }
        }
    }
}
