//! Telling a retried append from a conflicting one, the same way on every backend.

use crate::error::{Error, Result};
use crate::types::{AppendResult, ExpectedVersion, NewEvent, RecordedEvent, StreamName};

/// Given the events already stored under the batch's ids (in batch order):
/// `Ok(Some(_))` when the whole batch is stored, in order, at the place
/// `expected` names — a retry, nothing to write; `Ok(None)` when no id is
/// stored yet. An id stored anywhere else, or with other content, is an error.
pub(crate) fn check_retry(
    stream: &StreamName,
    expected: ExpectedVersion,
    events: &[NewEvent],
    existing: &[Option<&RecordedEvent>],
) -> Result<Option<AppendResult>> {
    let Some(first_found) = existing.iter().position(Option::is_some) else {
        return Ok(None);
    };
    let conflict = || Error::DuplicateEventId {
        id: events[first_found].id,
    };
    let Some(first) = existing[0] else {
        return Err(conflict());
    };
    let starts_right = match expected {
        ExpectedVersion::Exact(v) => v.checked_add(1) == Some(first.version),
        ExpectedVersion::NoStream => first.version == 1,
        _ => true,
    };
    if !starts_right {
        return Err(conflict());
    }
    let mut last = first;
    for (i, (new, found)) in events.iter().zip(existing).enumerate() {
        match found {
            Some(f)
                if f.stream == *stream
                    && f.version == first.version + i as u64
                    && f.same_content_as(new) =>
            {
                last = f;
            }
            _ => return Err(conflict()),
        }
    }
    Ok(Some(AppendResult {
        version: last.version,
        position: last.position,
        written: false,
    }))
}
