//! The checks every backend runs on a batch before writing anything.

use palisade_core::ConfigError;

use crate::error::{Error, Result};
use crate::types::NewEvent;

/// Bounds on what an append may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest event, payload plus encoded metadata, in bytes (default 1 MiB).
    pub max_event_bytes: usize,
    /// The most events in one append (default 10,000).
    pub max_batch: usize,
}

/// The longest event type name, in bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 255;

/// The largest schema version of an event or a snapshot: 2^31 − 1, what
/// every backend stores exactly (PostgreSQL's `integer`). A larger one is
/// refused, never stored clamped.
pub const MAX_SCHEMA_VERSION: u32 = i32::MAX as u32;

/// The largest stream version a snapshot may say it was taken at: what
/// every backend stores exactly (a signed 64-bit integer).
pub const MAX_SNAPSHOT_VERSION: u64 = i64::MAX as u64;

/// Checks the numbers of a snapshot that a backend narrows when it stores them.
///
/// # Errors
/// [`Error::InvalidSnapshot`] naming what is out of range.
pub fn check_snapshot(snapshot: &crate::types::Snapshot) -> Result<()> {
    if snapshot.schema_version > MAX_SCHEMA_VERSION {
        return Err(Error::InvalidSnapshot {
            stream: snapshot.stream.clone(),
            reason: format!(
                "schema version {} is above the largest, {MAX_SCHEMA_VERSION}",
                snapshot.schema_version
            ),
        });
    }
    if snapshot.version > MAX_SNAPSHOT_VERSION {
        return Err(Error::InvalidSnapshot {
            stream: snapshot.stream.clone(),
            reason: format!(
                "version {} is above the largest, {MAX_SNAPSHOT_VERSION}",
                snapshot.version
            ),
        });
    }
    Ok(())
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: 1024 * 1024,
            max_batch: 10_000,
        }
    }
}

impl Limits {
    /// Checks the limits themselves: each must be at least 1, or every append would fail.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `limits`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_event_bytes == 0 || self.max_batch == 0 {
            return Err(ConfigError::new(
                "limits",
                format!(
                    "max_event_bytes and max_batch must be at least 1, got {} and {}",
                    self.max_event_bytes, self.max_batch
                ),
            ));
        }
        Ok(())
    }

    /// Checks a batch; returns each event's metadata encoded as JSON, which the
    /// backends store as it is.
    ///
    /// # Errors
    /// [`Error::EmptyBatch`], [`Error::BatchTooLarge`], [`Error::EventTooLarge`], [`Error::InvalidEventType`],
    /// [`Error::InvalidSchemaVersion`], [`Error::DuplicateEventId`] for an id used twice in the batch.
    pub fn check(&self, events: &[NewEvent]) -> Result<Vec<Vec<u8>>> {
        if events.is_empty() {
            return Err(Error::EmptyBatch);
        }
        if events.len() > self.max_batch {
            return Err(Error::BatchTooLarge {
                len: events.len(),
                max: self.max_batch,
            });
        }
        let mut metadata = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            if e.event_type.is_empty() || e.event_type.len() > MAX_EVENT_TYPE_BYTES {
                return Err(Error::InvalidEventType {
                    id: e.id,
                    reason: format!(
                        "must be 1 to {MAX_EVENT_TYPE_BYTES} bytes, is {}",
                        e.event_type.len()
                    ),
                });
            }
            if e.schema_version > MAX_SCHEMA_VERSION {
                return Err(Error::InvalidSchemaVersion {
                    id: e.id,
                    schema_version: e.schema_version,
                });
            }
            if events[..i].iter().any(|earlier| earlier.id == e.id) {
                return Err(Error::DuplicateEventId { id: e.id });
            }
            let meta =
                serde_json::to_vec(&e.metadata).map_err(|err| Error::Codec(Box::new(err)))?;
            let size = e.payload.len() + meta.len();
            if size > self.max_event_bytes {
                return Err(Error::EventTooLarge {
                    id: e.id,
                    size,
                    max: self.max_event_bytes,
                });
            }
            metadata.push(meta);
        }
        Ok(metadata)
    }
}
