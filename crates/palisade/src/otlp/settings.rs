//! What each signal's exporter is given: the protocol, the endpoint and the
//! timeout, from the builder first and the standard variables after. The
//! variables the exporter crate reads leniently (an unknown protocol, a
//! timeout that is not a number or a compression it cannot use is skipped
//! there, with a warning) are read here, strictly.

use std::time::Duration;

use super::error::{Error, Signal};

/// The transport of an exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (`grpc`), by tonic; the collector's port 4317.
    Grpc,
    /// OTLP over HTTP with protobuf bodies (`http/protobuf`), by hyper; the
    /// collector's port 4318. The default, as the specification says.
    HttpProtobuf,
}

impl Protocol {
    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL` that names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }

    fn parse(setting: &str, value: &str) -> Result<Self, Error> {
        match value.trim().to_ascii_lowercase().as_str() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Err(invalid(
                setting,
                "`http/json` is not built in; use `grpc` or `http/protobuf`",
            )),
            _ => Err(invalid(
                setting,
                format!("unknown protocol {value:?}; expected `grpc` or `http/protobuf`"),
            )),
        }
    }
}

/// What the builder was told; `None` where the variables decide.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    pub(crate) endpoint: Option<String>,
    pub(crate) protocol: Option<Protocol>,
    pub(crate) timeout: Option<Duration>,
}

/// One signal's resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignalSettings {
    pub(crate) protocol: Protocol,
    /// The full endpoint to give the exporter, or `None` to let it read
    /// `OTEL_EXPORTER_OTLP_{SIGNAL}_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub(crate) endpoint: Option<String>,
    pub(crate) timeout: Duration,
}

/// The specification's default export timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) const ENDPOINT_METHOD: &str = "OtlpBuilder::endpoint";
pub(crate) const TIMEOUT_METHOD: &str = "OtlpBuilder::timeout";

impl SignalSettings {
    /// `env` looks a variable up (`std::env::var` outside the tests); an
    /// empty value counts as unset, as the specification says.
    pub(crate) fn resolve(
        signal: Signal,
        overrides: &Overrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let lookup = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let specific = |suffix: &str| format!("OTEL_EXPORTER_OTLP_{}_{suffix}", signal.env_word());
        let general = |suffix: &str| format!("OTEL_EXPORTER_OTLP_{suffix}");
        // The signal's own variable first, then the general one.
        let first_set = |suffix: &str| {
            [specific(suffix), general(suffix)]
                .into_iter()
                .find_map(|name| lookup(&name).map(|value| (name, value)))
        };

        let protocol = match overrides.protocol {
            Some(protocol) => protocol,
            None => match first_set("PROTOCOL") {
                Some((name, value)) => Protocol::parse(&name, &value)?,
                None => Protocol::HttpProtobuf,
            },
        };

        let endpoint = if let Some(base) = &overrides.endpoint {
            check_scheme(ENDPOINT_METHOD, base)?;
            Some(match protocol {
                Protocol::Grpc => base.clone(),
                Protocol::HttpProtobuf => {
                    format!("{}{}", base.trim_end_matches('/'), signal.http_path())
                }
            })
        } else {
            if let Some((name, value)) = first_set("ENDPOINT") {
                check_scheme(&name, &value)?;
            }
            None
        };

        // The exporter skips a compression it cannot use, with a warning,
        // and sends uncompressed: none is built in, so only `none` passes.
        if let Some((name, value)) = first_set("COMPRESSION") {
            match value.trim().to_ascii_lowercase().as_str() {
                "none" => {}
                "gzip" | "zstd" => {
                    return Err(invalid(
                        &name,
                        format!("{value:?} compression is not built in; use `none`"),
                    ));
                }
                _ => {
                    return Err(invalid(
                        &name,
                        format!("unknown compression {value:?}; expected `none`"),
                    ));
                }
            }
        }

        let timeout = match overrides.timeout {
            Some(timeout) if timeout.is_zero() => {
                return Err(invalid(
                    TIMEOUT_METHOD,
                    "the timeout must be more than zero",
                ));
            }
            Some(timeout) => timeout,
            None => match first_set("TIMEOUT") {
                Some((name, value)) => match value.trim().parse::<u64>() {
                    Ok(0) => return Err(invalid(&name, "the timeout must be more than zero")),
                    Ok(millis) => Duration::from_millis(millis),
                    Err(_) => {
                        return Err(invalid(
                            &name,
                            format!("{value:?} is not a whole number of milliseconds"),
                        ));
                    }
                },
                None => DEFAULT_TIMEOUT,
            },
        };

        Ok(SignalSettings {
            protocol,
            endpoint,
            timeout,
        })
    }
}

/// The exporters are built without TLS: an `https` endpoint would fail at
/// every export, so it fails here instead. Anything else but `http` is not
/// an OTLP endpoint at all.
fn check_scheme(setting: &str, endpoint: &str) -> Result<(), Error> {
    let scheme = endpoint
        .split_once("://")
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("http") => Ok(()),
        Some("https") => Err(invalid(
            setting,
            format!(
                "{endpoint:?} needs TLS, which palisade's `otlp` feature does not build in; \
                 send to a local collector or agent over `http://`"
            ),
        )),
        _ => Err(invalid(
            setting,
            format!("{endpoint:?} is not an `http://` URL"),
        )),
    }
}

pub(crate) fn invalid(setting: &str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        setting: setting.to_owned(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(
        signal: Signal,
        overrides: &Overrides,
        vars: &[(&str, &str)],
    ) -> Result<SignalSettings, Error> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        SignalSettings::resolve(signal, overrides, &|name| vars.get(name).cloned())
    }

    fn config_error(result: Result<SignalSettings, Error>) -> (String, String) {
        match result {
            Err(Error::InvalidConfig { setting, reason }) => (setting, reason),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn nothing_set_is_http_protobuf_with_the_exporter_reading_its_endpoint_and_ten_seconds() {
        let settings = resolve(Signal::Traces, &Overrides::default(), &[]).unwrap();
        assert_eq!(
            settings,
            SignalSettings {
                protocol: Protocol::HttpProtobuf,
                endpoint: None,
                timeout: Duration::from_secs(10),
            }
        );
    }

    #[test]
    fn the_signals_own_variable_wins_over_the_general_one() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "500"),
        ];
        let metrics = resolve(Signal::Metrics, &Overrides::default(), &vars).unwrap();
        assert_eq!(metrics.protocol, Protocol::Grpc);
        assert_eq!(metrics.timeout, Duration::from_secs(2));
        let traces = resolve(Signal::Traces, &Overrides::default(), &vars).unwrap();
        assert_eq!(traces.protocol, Protocol::HttpProtobuf);
        assert_eq!(traces.timeout, Duration::from_millis(500));
    }

    #[test]
    fn an_empty_variable_counts_as_unset() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", " "),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "GRPC"),
        ];
        let traces = resolve(Signal::Traces, &Overrides::default(), &vars).unwrap();
        assert_eq!(traces.protocol, Protocol::Grpc);
    }

    #[test]
    fn the_builder_wins_over_the_variables() {
        let overrides = Overrides {
            endpoint: Some("http://127.0.0.1:4318/".into()),
            protocol: Some(Protocol::HttpProtobuf),
            timeout: Some(Duration::from_secs(3)),
        };
        let vars = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
        ];
        let metrics = resolve(Signal::Metrics, &overrides, &vars).unwrap();
        assert_eq!(
            metrics,
            SignalSettings {
                protocol: Protocol::HttpProtobuf,
                endpoint: Some("http://127.0.0.1:4318/v1/metrics".into()),
                timeout: Duration::from_secs(3),
            }
        );
    }

    #[test]
    fn a_builder_endpoint_is_used_as_it_is_over_grpc_and_gets_the_signal_path_over_http() {
        let grpc = Overrides {
            endpoint: Some("http://127.0.0.1:4317".into()),
            protocol: Some(Protocol::Grpc),
            timeout: None,
        };
        let traces = resolve(Signal::Traces, &grpc, &[]).unwrap();
        assert_eq!(traces.endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        let http = Overrides {
            protocol: None,
            ..grpc
        };
        let traces = resolve(Signal::Traces, &http, &[]).unwrap();
        assert_eq!(
            traces.endpoint.as_deref(),
            Some("http://127.0.0.1:4317/v1/traces")
        );
    }

    #[test]
    fn an_unknown_protocol_names_its_variable() {
        let (setting, reason) = config_error(resolve(
            Signal::Traces,
            &Overrides::default(),
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")],
        ));
        assert_eq!(setting, "OTEL_EXPORTER_OTLP_PROTOCOL");
        assert_eq!(
            reason,
            "unknown protocol \"carrier-pigeon\"; expected `grpc` or `http/protobuf`"
        );
        let (setting, reason) = config_error(resolve(
            Signal::Metrics,
            &Overrides::default(),
            &[("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json")],
        ));
        assert_eq!(setting, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL");
        assert_eq!(
            reason,
            "`http/json` is not built in; use `grpc` or `http/protobuf`"
        );
    }

    #[test]
    fn an_https_or_schemeless_endpoint_is_refused_with_its_setting() {
        let (setting, reason) = config_error(resolve(
            Signal::Traces,
            &Overrides::default(),
            &[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://collector:4318/v1/traces",
            )],
        ));
        assert_eq!(setting, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        assert!(reason.contains("needs TLS"), "{reason}");
        let overrides = Overrides {
            endpoint: Some("collector:4317".into()),
            ..Overrides::default()
        };
        let (setting, reason) = config_error(resolve(Signal::Traces, &overrides, &[]));
        assert_eq!(setting, "OtlpBuilder::endpoint");
        assert_eq!(reason, "\"collector:4317\" is not an `http://` URL");
    }

    #[test]
    fn only_no_compression_is_accepted() {
        let vars = [("OTEL_EXPORTER_OTLP_COMPRESSION", "None")];
        assert!(resolve(Signal::Traces, &Overrides::default(), &vars).is_ok());
        let (setting, reason) = config_error(resolve(
            Signal::Traces,
            &Overrides::default(),
            &[("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")],
        ));
        assert_eq!(setting, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION");
        assert_eq!(reason, "\"gzip\" compression is not built in; use `none`");
        let (setting, reason) = config_error(resolve(
            Signal::Metrics,
            &Overrides::default(),
            &[("OTEL_EXPORTER_OTLP_COMPRESSION", "lz4")],
        ));
        assert_eq!(setting, "OTEL_EXPORTER_OTLP_COMPRESSION");
        assert_eq!(reason, "unknown compression \"lz4\"; expected `none`");
    }

    #[test]
    fn a_timeout_that_is_not_milliseconds_or_is_zero_is_refused() {
        let (setting, reason) = config_error(resolve(
            Signal::Metrics,
            &Overrides::default(),
            &[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")],
        ));
        assert_eq!(setting, "OTEL_EXPORTER_OTLP_TIMEOUT");
        assert_eq!(reason, "\"10s\" is not a whole number of milliseconds");
        let overrides = Overrides {
            timeout: Some(Duration::ZERO),
            ..Overrides::default()
        };
        let (setting, _) = config_error(resolve(Signal::Metrics, &overrides, &[]));
        assert_eq!(setting, "OtlpBuilder::timeout");
    }
}
