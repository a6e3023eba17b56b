//! What can go wrong when running a saga.

use palisade_core::ConfigError;

/// The error a step's action or compensation returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An error of the saga runner (not of a step: a step's failure is an
/// [`Outcome`](crate::Outcome) of the saga).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The event store failed; the saga stopped where its log says and can be
    /// resumed (by [`Saga::recover`](crate::Saga::recover) or another start with its id).
    #[error("saga log: {0}")]
    Store(#[from] palisade_event_store::Error),
    /// Another runner wrote to the saga's log (it claimed the saga after this
    /// runner's lease ran out); this runner stopped without running anything more.
    #[error("saga `{id}` was claimed by another runner")]
    LostClaim {
        /// The saga id.
        id: String,
    },
    /// The saga exists and another runner holds its claim until its lease ends.
    #[error("saga `{id}` is being run by `{owner}`")]
    Claimed {
        /// The saga id.
        id: String,
        /// The runner that holds it.
        owner: String,
    },
    /// A saga id that cannot be part of a stream name.
    #[error("invalid saga id {id:?}: {reason}")]
    InvalidId {
        /// The id given.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A correlation (of [`Saga::deliver`](crate::Saga::deliver) or a wait
    /// step) that cannot be part of a stream name.
    #[error("invalid correlation {correlation:?}: {reason}")]
    InvalidCorrelation {
        /// The correlation given.
        correlation: String,
        /// What is wrong.
        reason: String,
    },
    /// The saga's state could not be encoded, or its log could not be decoded
    /// (written by another definition, or a state type that changed).
    #[error("saga `{id}`: {reason}")]
    Codec {
        /// The saga id.
        id: String,
        /// What failed.
        reason: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The log names a step this definition does not have (the definition
    /// changed while the saga was unfinished).
    #[error("saga `{id}`: its log names step {step}, which this definition does not have")]
    UnknownStep {
        /// The saga id.
        id: String,
        /// The step index in the log.
        step: usize,
    },
    /// A setting given to a builder is out of its bounds.
    #[error(transparent)]
    Config(#[from] ConfigError),
}
