//! Rows to events.

use tokio_postgres::Row;

use crate::error::{Error, Result};
use crate::types::{Metadata, Position, RecordedEvent, StreamName, StreamState};

/// The columns `event_from_row` reads, in order.
pub(super) const EVENT_COLUMNS: &str = "id, stream, version, transaction_id::text::bigint, sequence, \
     event_type, schema_version, payload, metadata, recorded_at";

pub(super) fn event_from_row(row: &Row) -> Result<RecordedEvent> {
    let metadata: Vec<u8> = row.get(8);
    let metadata: Metadata =
        serde_json::from_slice(&metadata).map_err(|e| Error::Codec(Box::new(e)))?;
    Ok(RecordedEvent {
        id: row.get(0),
        stream: StreamName::new(row.get::<_, String>(1))?,
        version: row.get::<_, i64>(2) as u64,
        position: Position {
            commit: row.get::<_, i64>(3) as u64,
            sequence: row.get::<_, i64>(4) as u64,
        },
        event_type: row.get(5),
        schema_version: row.get::<_, i32>(6) as u32,
        payload: row.get(7),
        metadata,
        recorded_at: row.get(9),
    })
}

/// Whether a row of the first-page read carries an event (the stream's
/// columns come alone when no event is in range).
pub(super) fn has_event(row: &Row) -> bool {
    row.get::<_, Option<uuid::Uuid>>(0).is_some()
}

/// The stream's columns after the event's in a row of the first-page read:
/// its version, whether it is deleted, and the versions it hides.
pub(super) fn stream_columns(row: &Row) -> (i64, bool, i64) {
    (row.get(10), row.get(11), row.get(12))
}

pub(super) fn state_from(version: i64, deleted: bool) -> StreamState {
    let version = version as u64;
    if deleted {
        StreamState::Deleted { version }
    } else if version == 0 {
        StreamState::NoStream
    } else {
        StreamState::Active { version }
    }
}
