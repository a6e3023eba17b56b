//! Feature `tracing`: the handler's and runner's events as `tracing` events, target `palisade_cqrs`.

use crate::event::Event;

pub(crate) struct TracingListener;

impl palisade_core::Listener<Event> for TracingListener {
    fn on_event(&self, event: &Event) {
        match event {
            Event::CommandExecuted {
                handler,
                aggregate,
                outcome,
                attempts,
                conflicts,
                events,
                duplicate,
            } => tracing::debug!(
                target: "palisade_cqrs",
                handler = &**handler,
                aggregate,
                outcome = outcome.as_str(),
                attempts,
                conflicts,
                events,
                duplicate,
                "command executed"
            ),
            Event::SnapshotSaved { stream, version } => tracing::debug!(
                target: "palisade_cqrs", stream = stream.as_str(), version, "snapshot saved"
            ),
            Event::SnapshotFailed { stream, error } => tracing::warn!(
                target: "palisade_cqrs", stream = stream.as_str(), error = error.as_str(), "snapshot failed"
            ),
            Event::ProjectionHandled {
                projection,
                position,
                lag,
            } => tracing::trace!(
                target: "palisade_cqrs", projection = &**projection, position = %position, lag, "projection handled"
            ),
            Event::ProjectionFailed {
                projection,
                position,
                attempt,
                error,
                retry_in,
            } => tracing::warn!(
                target: "palisade_cqrs", projection = &**projection, position = %position, attempt,
                error = error.as_str(), retry_in = ?retry_in, "projection failed"
            ),
            Event::DeadLettered {
                projection,
                position,
                error,
            } => tracing::error!(
                target: "palisade_cqrs", projection = &**projection, position = %position,
                error = error.as_str(), "event moved to the dead letters"
            ),
            Event::ProjectionStopped {
                projection,
                position,
                error,
            } => tracing::error!(
                target: "palisade_cqrs", projection = &**projection, position = %position,
                error = error.as_str(), "projection stopped"
            ),
        }
    }
}
