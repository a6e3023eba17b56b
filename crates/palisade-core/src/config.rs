//! The configuration error every builder returns, and the checks they share.

use std::time::Duration;

/// A configuration value was out of its bounds; names the field and the bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration `{field}`: {reason}")]
pub struct ConfigError {
    field: &'static str,
    reason: String,
}

impl ConfigError {
    /// An error about `field`, with `reason` saying what is wrong.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    /// The builder field that was rejected, as its method is named.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What was wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// `value` must be a ratio in `(0, 1]` (so NaN is rejected).
pub fn check_ratio(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if value > 0.0 && value <= 1.0 {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("must be in (0, 1], got {value}"),
        ))
    }
}

/// `value` must be at least 1.
pub fn check_nonzero(field: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::new(field, "must be at least 1, got 0"))
    } else {
        Ok(())
    }
}

/// `value` must be longer than zero.
pub fn check_positive_duration(field: &'static str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        Err(ConfigError::new(field, "must be longer than zero"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_bounds() {
        assert!(check_ratio("r", 1.0).is_ok());
        assert!(check_ratio("r", 0.01).is_ok());
        for bad in [0.0, -0.5, 1.5, f64::NAN, f64::INFINITY] {
            let err = check_ratio("failure_rate_threshold", bad).unwrap_err();
            assert_eq!(err.field(), "failure_rate_threshold");
        }
        assert_eq!(
            check_ratio("x", 2.0).unwrap_err().to_string(),
            "invalid configuration `x`: must be in (0, 1], got 2"
        );
    }

    #[test]
    fn nonzero_and_duration() {
        assert_eq!(check_nonzero("n", 0).unwrap_err().field(), "n");
        assert!(check_nonzero("n", 1).is_ok());
        assert_eq!(
            check_positive_duration("d", Duration::ZERO)
                .unwrap_err()
                .field(),
            "d"
        );
    }
}
