//! Attribute names shared by every pattern's telemetry (see `docs/telemetry.md`).

/// The name given to a pattern instance (`"payments"`).
pub const INSTANCE: &str = "palisade.instance";
/// What happened to a call, per instrument.
pub const OUTCOME: &str = "palisade.outcome";
/// OpenTelemetry's attribute for the kind of error, when an outcome is a failure.
pub const ERROR_TYPE: &str = "error.type";
