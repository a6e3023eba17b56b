//! The three-way outcome of a call and the classifier that decides it.

/// What a finished call means to a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call worked; it counts towards health.
    Success,
    /// The call failed; it counts against health.
    Failure,
    /// The call does not count either way (a cancellation, a client error you chose to ignore).
    Ignored,
}

/// Decides the [`Outcome`] of a `Result<T, E>`.
///
/// Closures `Fn(&Result<T, E>) -> Outcome` are classifiers, so a 404 can be a
/// success and a timeout a failure:
///
/// ```
/// use palisade_core::{Classifier, Outcome};
///
/// let classify = |r: &Result<u16, String>| match r {
///     Ok(status) if *status >= 500 => Outcome::Failure,
///     Ok(_) => Outcome::Success,
///     Err(e) if e == "canceled" => Outcome::Ignored,
///     Err(_) => Outcome::Failure,
/// };
/// assert_eq!(classify.classify(&Ok(503)), Outcome::Failure);
/// assert_eq!(classify.classify(&Ok(404)), Outcome::Success);
/// ```
pub trait Classifier<T, E>: Send + Sync {
    /// The outcome of `result`.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

/// The default classifier: `Ok` is a success, `Err` a failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultClassifier;

impl<T, E> Classifier<T, E> for DefaultClassifier {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

impl<T, E, F> Classifier<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome + Send + Sync,
{
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_classifier_maps_err_to_failure() {
        assert_eq!(
            DefaultClassifier.classify(&Ok::<u8, u8>(1)),
            Outcome::Success
        );
        assert_eq!(
            DefaultClassifier.classify(&Err::<u8, u8>(1)),
            Outcome::Failure
        );
    }
}
