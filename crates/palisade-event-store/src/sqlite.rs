//! The SQLite backend (feature `sqlite`): one file in WAL mode, the embedded
//! durable default. It survives restarts and crashes with whole batches only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::idempotency::check_retry;
use crate::limits::Limits;
use crate::paging::paged;
use crate::store::{EventStore, EventStream};
use crate::subscription::CheckpointStore;
use crate::types::{
    AppendResult, Direction, ExpectedVersion, Metadata, NewEvent, Position, ReadAll, ReadStream,
    RecordedEvent, Snapshot, StreamName, StreamState,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS streams (
    name           TEXT    PRIMARY KEY,
    version        INTEGER NOT NULL,
    deleted        INTEGER NOT NULL DEFAULT 0,
    hidden_through INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    sequence       INTEGER PRIMARY KEY,
    commit_id      INTEGER NOT NULL,
    id             BLOB    NOT NULL UNIQUE,
    stream         TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        BLOB    NOT NULL,
    metadata       BLOB    NOT NULL,
    recorded_at_ns INTEGER NOT NULL,
    UNIQUE (stream, version)
);
CREATE TABLE IF NOT EXISTS snapshots (
    stream         TEXT    PRIMARY KEY,
    version        INTEGER NOT NULL,
    schema_version INTEGER NOT NULL,
    payload        BLOB    NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    name      TEXT    PRIMARY KEY,
    commit_id INTEGER NOT NULL,
    sequence  INTEGER NOT NULL
) WITHOUT ROWID;
";

const EVENT_COLUMNS: &str = "id, stream, version, commit_id, sequence, event_type, schema_version, payload, metadata, recorded_at_ns";
const BY_ID: &str = "SELECT id, stream, version, commit_id, sequence, event_type, schema_version, payload, metadata, recorded_at_ns \
     FROM events WHERE id = ?1";

/// An event store in one SQLite file.
///
/// Writes are serialised (SQLite has one writer); each append is one
/// transaction, so a crash leaves whole batches only. The global order is the
/// commit order, so subscribers need no horizon.
#[derive(Debug, Clone)]
pub struct SqliteEventStore {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    limits: Limits,
    changes: Arc<watch::Sender<u64>>,
}

fn db(e: rusqlite::Error) -> Error {
    Error::backend(e)
}

impl SqliteEventStore {
    /// Opens (or creates) the store in the file at `path`, with the default [`Limits`].
    ///
    /// # Errors
    /// [`Error::Backend`] if the file cannot be opened or is not a store.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_limits(path, Limits::default()).await
    }

    /// Opens (or creates) the store at `path` with these limits.
    ///
    /// # Errors
    /// As [`SqliteEventStore::open`].
    pub async fn open_with_limits(path: impl AsRef<Path>, limits: Limits) -> Result<Self> {
        limits.validate()?;
        let path = path.as_ref().to_path_buf();
        let opened = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection> {
            let conn = Connection::open(&opened).map_err(db)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(db)?;
            // FULL: a committed append survives power loss, not only a crash of this process.
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(db)?;
            conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
            conn.execute_batch(SCHEMA).map_err(db)?;
            Ok(conn)
        })
        .await
        .map_err(Error::backend)??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
            limits,
            changes: Arc::new(watch::Sender::new(0)),
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the connection, on tokio's blocking pool.
    async fn with<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || work(&mut conn.lock()))
            .await
            .map_err(Error::backend)?
    }
}

fn event_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawEvent> {
    Ok(RawEvent {
        id: row.get(0)?,
        stream: row.get(1)?,
        version: row.get(2)?,
        commit: row.get(3)?,
        sequence: row.get(4)?,
        event_type: row.get(5)?,
        schema_version: row.get(6)?,
        payload: row.get(7)?,
        metadata: row.get(8)?,
        recorded_at_ns: row.get(9)?,
    })
}

/// A row as SQLite hands it over, before validation.
struct RawEvent {
    id: [u8; 16],
    stream: String,
    version: i64,
    commit: i64,
    sequence: i64,
    event_type: String,
    schema_version: i64,
    payload: Vec<u8>,
    metadata: Vec<u8>,
    recorded_at_ns: i64,
}

impl RawEvent {
    fn into_event(self) -> Result<RecordedEvent> {
        let metadata: Metadata =
            serde_json::from_slice(&self.metadata).map_err(|e| Error::Codec(Box::new(e)))?;
        Ok(RecordedEvent {
            id: uuid::Uuid::from_bytes(self.id),
            stream: StreamName::new(self.stream)?,
            version: self.version as u64,
            position: Position {
                commit: self.commit as u64,
                sequence: self.sequence as u64,
            },
            event_type: self.event_type,
            schema_version: self.schema_version as u32,
            payload: self.payload,
            metadata,
            recorded_at: UNIX_EPOCH + Duration::from_nanos(self.recorded_at_ns as u64),
        })
    }
}

/// A number as SQLite stores it: above `i64::MAX` no row can hold it, so it
/// saturates (a bound past every row stays past every row).
fn stored_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The position after which `read_all` starts, as a sequence number with the
/// same meaning as everywhere else: events whose `(commit, sequence)` is
/// greater. Commit order is sequence order here, so a position the store
/// handed out already is one (its event is at its sequence with its commit);
/// any other (made up, or past the end) is mapped to the last event at or
/// before it, with one scan.
fn sequence_after(conn: &Connection, after: Position) -> Result<Position> {
    let (commit, sequence) = (stored_int(after.commit), stored_int(after.sequence));
    if after == Position::START {
        return Ok(after);
    }
    let at: Option<i64> = conn
        .query_row(
            "SELECT commit_id FROM events WHERE sequence = ?1",
            params![sequence],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?;
    if at == Some(commit) {
        return Ok(after);
    }
    let last: Option<i64> = conn
        .query_row(
            "SELECT MAX(sequence) FROM events WHERE commit_id < ?1 OR (commit_id = ?1 AND sequence <= ?2)",
            params![commit, sequence],
            |r| r.get(0),
        )
        .map_err(db)?;
    Ok(Position {
        commit: after.commit,
        sequence: last.map_or(0, |s| s as u64),
    })
}

fn query_events(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<RecordedEvent>> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    let rows = stmt.query_map(params, event_from_row).map_err(db)?;
    rows.map(|r| r.map_err(db).and_then(RawEvent::into_event))
        .collect()
}

fn stream_row(conn: &Connection, stream: &str) -> Result<Option<(i64, bool, i64)>> {
    conn.prepare_cached("SELECT version, deleted, hidden_through FROM streams WHERE name = ?1")
        .map_err(db)?
        .query_row([stream], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .map_err(db)
}

fn state_of(row: Option<(i64, bool, i64)>) -> StreamState {
    match row {
        None | Some((0, false, _)) => StreamState::NoStream,
        Some((v, true, _)) => StreamState::Deleted { version: v as u64 },
        Some((v, false, _)) => StreamState::Active { version: v as u64 },
    }
}

fn append_blocking(
    conn: &mut Connection,
    stream: &StreamName,
    expected: ExpectedVersion,
    events: &[NewEvent],
    metadata: &[Vec<u8>],
) -> Result<AppendResult> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)?;
    let mut existing = Vec::with_capacity(events.len());
    let mut any = false;
    for e in events {
        let found = query_events(&tx, BY_ID, [e.id.as_bytes()])?.pop();
        any |= found.is_some();
        existing.push(found);
    }
    if any {
        let refs: Vec<_> = existing.iter().map(Option::as_ref).collect();
        return match check_retry(stream, expected, events, &refs)? {
            Some(done) => Ok(done),
            None => Err(Error::DuplicateEventId { id: events[0].id }),
        };
    }
    let row = stream_row(&tx, stream.as_str())?;
    let state = state_of(row);
    state.check(stream, expected)?;
    let last_commit: i64 = tx
        .query_row(
            "SELECT commit_id FROM events ORDER BY sequence DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)?
        .unwrap_or(0);
    let commit = last_commit + 1;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let mut version = state.version() as i64;
    let mut sequence = 0;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO events (commit_id, id, stream, version, event_type, schema_version, payload, metadata, recorded_at_ns) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(db)?;
        for (e, meta) in events.iter().zip(metadata) {
            version += 1;
            insert
                .execute(params![
                    commit,
                    e.id.as_bytes(),
                    stream.as_str(),
                    version,
                    e.event_type,
                    e.schema_version,
                    e.payload,
                    meta,
                    now
                ])
                .map_err(db)?;
            sequence = tx.last_insert_rowid();
        }
    }
    // Recreating a deleted stream hides its earlier life from stream reads.
    let hidden = match row {
        Some((version, true, _)) => version,
        Some((_, false, hidden)) => hidden,
        None => 0,
    };
    tx.execute(
        "INSERT INTO streams (name, version, deleted, hidden_through) VALUES (?1, ?2, 0, ?3) \
         ON CONFLICT (name) DO UPDATE SET version = ?2, deleted = 0, hidden_through = ?3",
        params![stream.as_str(), version, hidden],
    )
    .map_err(db)?;
    tx.commit().map_err(db)?;
    Ok(AppendResult {
        version: version as u64,
        position: Position {
            commit: commit as u64,
            sequence: sequence as u64,
        },
        written: true,
    })
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let metadata = self.limits.check(&events)?;
        let stream = stream.clone();
        let result = self
            .with(move |conn| append_blocking(conn, &stream, expected, &events, &metadata))
            .await?;
        if result.written {
            self.changes.send_modify(|n| *n += 1);
        }
        Ok(result)
    }

    async fn read_stream(&self, stream: &StreamName, options: ReadStream) -> Result<EventStream> {
        let name = stream.as_str().to_owned();
        let row = self.with(move |conn| stream_row(conn, &name)).await?;
        let Some((version, deleted, hidden)) = row else {
            return Ok(Box::pin(futures_util::stream::empty()));
        };
        if deleted {
            return Err(Error::StreamDeleted {
                stream: stream.clone(),
            });
        }
        let forward = options.direction == Direction::Forward;
        let start = options.first_version(version as u64) as i64;
        let limit = options.bounded_limit(version as u64, hidden as u64);
        let (store, name) = (self.clone(), stream.as_str().to_owned());
        Ok(paged(start, Some(limit), move |from: i64, n| {
            let (store, name) = (store.clone(), name.clone());
            async move {
                let events = store
                    .with(move |conn| {
                        let sql = if forward {
                            format!("SELECT {EVENT_COLUMNS} FROM events WHERE stream = ?1 AND version > ?2 AND version >= ?3 ORDER BY version LIMIT ?4")
                        } else {
                            format!("SELECT {EVENT_COLUMNS} FROM events WHERE stream = ?1 AND version > ?2 AND version <= ?3 ORDER BY version DESC LIMIT ?4")
                        };
                        query_events(conn, &sql, params![name, hidden, from, n as i64])
                    })
                    .await?;
                let next = crate::paging::next_version(&events, from, forward);
                Ok((events, next))
            }
        }))
    }

    async fn read_all(&self, options: ReadAll) -> Result<EventStream> {
        let store = self.clone();
        let filter = options.filter;
        let after = options.after;
        let after = self.with(move |conn| sequence_after(conn, after)).await?;
        Ok(paged(after, options.limit, move |after: Position, n| {
            let (store, filter) = (store.clone(), filter.clone());
            async move {
                let events = store
                    .with(move |conn| {
                        // Commit order is sequence order here, so the sequence alone is the cursor.
                        let sql = format!(
                            "SELECT {EVENT_COLUMNS} FROM events WHERE sequence > ?1 \
                             AND (?2 IS NULL OR (CASE WHEN ?3 THEN stream = ?2 ELSE substr(stream, 1, length(?2)) = ?2 END)) \
                             AND (?4 IS NULL OR event_type IN (SELECT value FROM json_each(?4))) \
                             ORDER BY sequence LIMIT ?5"
                        );
                        let types = if filter.event_types.is_empty() {
                            None
                        } else {
                            Some(serde_json::to_string(&filter.event_types).map_err(|e| Error::Codec(Box::new(e)))?)
                        };
                        query_events(
                            conn,
                            &sql,
                            params![stored_int(after.sequence), filter.stream_prefix, filter.exact_stream, types, stored_int(n)],
                        )
                    })
                    .await?;
                let next = events.last().map_or(after, |e| e.position);
                Ok((events, next))
            }
        }))
    }

    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState> {
        let name = stream.as_str().to_owned();
        Ok(state_of(
            self.with(move |conn| stream_row(conn, &name)).await?,
        ))
    }

    async fn delete_stream(&self, stream: &StreamName, expected: ExpectedVersion) -> Result<()> {
        let stream = stream.clone();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db)?;
            let row = stream_row(&tx, stream.as_str())?;
            state_of(row).check(&stream, expected)?;
            tx.execute(
                "INSERT INTO streams (name, version, deleted) VALUES (?1, 0, 1) \
                 ON CONFLICT (name) DO UPDATE SET deleted = 1",
                [stream.as_str()],
            )
            .map_err(db)?;
            tx.commit().map_err(db)
        })
        .await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        crate::limits::check_snapshot(&snapshot)?;
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO snapshots (stream, version, schema_version, payload) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (stream) DO UPDATE SET version = ?2, schema_version = ?3, payload = ?4",
                params![snapshot.stream.as_str(), snapshot.version as i64, snapshot.schema_version, snapshot.payload],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn load_snapshot(&self, stream: &StreamName) -> Result<Option<Snapshot>> {
        let owned = stream.clone();
        self.with(move |conn| {
            conn.query_row(
                "SELECT version, schema_version, payload FROM snapshots WHERE stream = ?1",
                [owned.as_str()],
                |r| {
                    Ok(Snapshot {
                        stream: owned.clone(),
                        version: r.get::<_, i64>(0)? as u64,
                        schema_version: r.get(1)?,
                        payload: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn head(&self) -> Result<Position> {
        self.with(|conn| {
            conn.query_row(
                "SELECT commit_id, sequence FROM events ORDER BY sequence DESC LIMIT 1",
                [],
                |r| {
                    Ok(Position {
                        commit: r.get::<_, i64>(0)? as u64,
                        sequence: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(db)
        })
        .await
    }

    fn system_name(&self) -> &'static str {
        "sqlite"
    }

    fn poll_interval(&self) -> Duration {
        // Another process may write the same file; this process's own writes wake subscribers at once.
        Duration::from_millis(250)
    }
}

#[async_trait]
impl CheckpointStore for SqliteEventStore {
    async fn load(&self, subscription: &str) -> Result<Option<Position>> {
        let name = subscription.to_owned();
        self.with(move |conn| {
            conn.query_row(
                "SELECT commit_id, sequence FROM checkpoints WHERE name = ?1",
                [name],
                |r| {
                    Ok(Position {
                        commit: r.get::<_, i64>(0)? as u64,
                        sequence: r.get::<_, i64>(1)? as u64,
                    })
                },
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn save(&self, subscription: &str, position: Position) -> Result<()> {
        let name = subscription.to_owned();
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO checkpoints (name, commit_id, sequence) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET commit_id = ?2, sequence = ?3",
                params![name, position.commit as i64, position.sequence as i64],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }
}
