//! Reading a large result page by page, as the consumer pulls, for the SQL backends.

use std::future::Future;

use futures_util::{TryStreamExt, stream};

use crate::error::Result;
use crate::store::EventStream;
use crate::types::RecordedEvent;

/// Rows per round trip.
pub(crate) const PAGE: u64 = 1000;

/// Calls `fetch(cursor, n)` for pages of at most `n` events until a short page
/// or `limit` events; `fetch` returns the page and the cursor after it.
pub(crate) fn paged<C, F, Fut>(start: C, limit: Option<u64>, mut fetch: F) -> EventStream
where
    C: Send + 'static,
    F: FnMut(C, u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(Vec<RecordedEvent>, C)>> + Send + 'static,
{
    let remaining = limit.unwrap_or(u64::MAX);
    let pages = stream::try_unfold((Some(start), remaining), move |(cursor, remaining)| {
        let next = match cursor {
            Some(cursor) if remaining > 0 => {
                let want = remaining.min(PAGE);
                Some((fetch(cursor, want), want))
            }
            _ => None,
        };
        async move {
            let Some((page, want)) = next else {
                return Ok::<_, crate::error::Error>(None);
            };
            let (events, cursor) = page.await?;
            let got = events.len() as u64;
            let cursor = (got == want).then_some(cursor);
            Ok(Some((events, (cursor, remaining - got))))
        }
    });
    Box::pin(
        pages
            .map_ok(|events| stream::iter(events.into_iter().map(Ok)))
            .try_flatten(),
    )
}

/// Where a stream read goes on after `page`: past its last event, in the
/// direction of reading (or `from` again, for an empty page).
pub(crate) fn next_version(page: &[RecordedEvent], from: i64, forward: bool) -> i64 {
    page.last().map_or(from, |e| {
        if forward {
            e.version as i64 + 1
        } else {
            e.version as i64 - 1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Metadata, Position, StreamName};
    use std::sync::{Arc, Mutex};

    fn event(n: u64) -> RecordedEvent {
        RecordedEvent {
            id: uuid::Uuid::from_u128(u128::from(n)),
            stream: StreamName::new("s").unwrap(),
            version: n,
            position: Position {
                commit: n,
                sequence: n,
            },
            event_type: "E".into(),
            schema_version: 1,
            payload: vec![],
            metadata: Metadata::default(),
            recorded_at: std::time::SystemTime::UNIX_EPOCH,
        }
    }

    #[tokio::test]
    async fn pages_until_a_short_page_or_the_limit() {
        for (total, limit, expect_events, expect_calls) in [
            (2500u64, None, 2500u64, 3usize),
            (2000, None, 2000, 3),
            (2500, Some(1500), 1500, 2),
            (10, Some(0), 0, 0),
        ] {
            let calls = Arc::new(Mutex::new(0));
            let counter = Arc::clone(&calls);
            let events: Vec<_> = paged(0u64, limit, move |from, n| {
                *counter.lock().unwrap() += 1;
                async move {
                    let page: Vec<_> = (from + 1..=(from + n).min(total)).map(event).collect();
                    let next = page.last().map_or(from, |e| e.version);
                    Ok((page, next))
                }
            })
            .try_collect()
            .await
            .unwrap();
            assert_eq!(events.len() as u64, expect_events);
            assert!(
                events
                    .iter()
                    .enumerate()
                    .all(|(i, e)| e.version == i as u64 + 1)
            );
            assert_eq!(*calls.lock().unwrap(), expect_calls, "{total} {limit:?}");
        }
    }
}
