//! What can go wrong executing a command.

use palisade_event_store::StreamName;

/// The error of [`CommandHandler::execute`](crate::CommandHandler::execute).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E: std::error::Error + Send + Sync + 'static> {
    /// The aggregate refused the command (its own error).
    #[error("the command was refused: {0}")]
    Refused(#[source] E),
    /// The stream still moved between load and append after every attempt
    /// the handler is allowed ([`max_attempts`](crate::CommandHandlerBuilder::max_attempts)).
    #[error("stream `{stream}` still conflicted after {attempts} attempts")]
    Conflict {
        /// The aggregate's stream.
        stream: StreamName,
        /// Attempts made.
        attempts: u32,
    },
    /// The aggregate id does not make a valid stream name.
    #[error("invalid aggregate id: {0}")]
    InvalidId(#[source] palisade_event_store::Error),
    /// The store failed (a backend, codec, upcasting or limit error); nothing
    /// was appended unless the store's error says the outcome is unknown.
    #[error("event store: {0}")]
    Store(#[source] palisade_event_store::Error),
}

impl<E: std::error::Error + Send + Sync + 'static> CommandError<E> {
    /// The aggregate's own error, if it refused the command.
    pub fn refused(&self) -> Option<&E> {
        match self {
            Self::Refused(e) => Some(e),
            _ => None,
        }
    }

    /// Whether every attempt conflicted.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}
