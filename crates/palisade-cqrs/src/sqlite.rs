//! Feature `sqlite`: read models in a SQLite file, where a projection's
//! writes, its checkpoint and its dead letters commit in one transaction.
//!
//! Each batch of events is applied in a `BEGIN IMMEDIATE` transaction that
//! first reads the projection's checkpoint and skips the events at or before
//! it, then runs the projection on the others, then moves the checkpoint,
//! then commits. A crash at any point leaves either all of it or none; a second
//! runner (one restarted while the old one's last write still ran) waits for
//! the write lock and then sees the new checkpoint. Each event takes effect
//! exactly once.
//!
//! When a batch fails, it rolls back and is applied again in one new
//! transaction, each event in a savepoint: the events before the first that
//! fails commit with their checkpoint, and that one goes to the runner's
//! failure policy alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use palisade_event_store::{Error, Metadata, Position, RecordedEvent, StreamName};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::projection::{BoxError, DeadLetter, ProjectionContext, Projector, Target};

/// A projection into a SQLite read model, exactly once.
pub trait SqliteProjection: Send + Sync + 'static {
    /// Creates the projection's tables if they are missing; runs when the runner starts.
    ///
    /// # Errors
    /// A SQLite error, which fails the runner's start.
    fn setup(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        let _ = tx;
        Ok(())
    }

    /// Applies one event inside the transaction that also saves the checkpoint.
    /// An error rolls all of it back and is retried by the projection's
    /// [`FailurePolicy`](crate::FailurePolicy).
    fn apply(
        &self,
        tx: &Transaction<'_>,
        event: &RecordedEvent,
        ctx: ProjectionContext,
    ) -> Result<(), BoxError>;
}

/// A shared projection is a projection.
impl<P: SqliteProjection + ?Sized> SqliteProjection for Arc<P> {
    fn setup(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        (**self).setup(tx)
    }

    fn apply(
        &self,
        tx: &Transaction<'_>,
        event: &RecordedEvent,
        ctx: ProjectionContext,
    ) -> Result<(), BoxError> {
        (**self).apply(tx, event, ctx)
    }
}

/// A SQLite database holding read models, their checkpoints and their dead letters.
#[derive(Clone)]
pub struct SqliteReadModel {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteReadModel")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS palisade_checkpoints (
    projection TEXT PRIMARY KEY,
    commit_no INTEGER NOT NULL,
    sequence INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS palisade_dead_letters (
    projection TEXT NOT NULL,
    commit_no INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    id TEXT NOT NULL,
    stream TEXT NOT NULL,
    version INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    payload BLOB NOT NULL,
    metadata TEXT NOT NULL,
    recorded_at_ns INTEGER NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    PRIMARY KEY (projection, commit_no, sequence)
);";

fn db(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::backend(e)
}

fn int(v: u64) -> rusqlite::Result<i64> {
    i64::try_from(v).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

impl SqliteReadModel {
    /// Opens (or creates) the database at `path` in WAL mode, with the
    /// checkpoint and dead-letter tables.
    ///
    /// # Errors
    /// A backend error when the file cannot be opened or set up.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_owned();
        let opened = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, Error> {
            let conn = Connection::open(&opened).map_err(db)?;
            conn.busy_timeout(Duration::from_secs(30)).map_err(db)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(db)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(db)?;
            conn.execute_batch(SCHEMA).map_err(db)?;
            Ok(conn)
        })
        .await
        .map_err(db)??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection (for queries over the read models), on a blocking thread.
    ///
    /// # Errors
    /// A backend error with what `f` returned.
    pub async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || f(&conn.lock()).map_err(db))
            .await
            .map_err(db)?
    }

    /// The checkpoint saved for `projection`.
    ///
    /// # Errors
    /// A backend error.
    pub async fn checkpoint(&self, projection: &str) -> Result<Option<Position>, Error> {
        let name = projection.to_owned();
        self.read(move |c| load_checkpoint(c, &name)).await
    }

    /// `projection` as a [`Projector`] for a [`ProjectionRunner`](crate::ProjectionRunner),
    /// named `name` (its checkpoint's key).
    pub fn projector(
        &self,
        name: impl Into<Arc<str>>,
        projection: impl SqliteProjection,
    ) -> Projector {
        let name = name.into();
        Projector::from_target(
            Arc::clone(&name),
            Arc::new(Exactly {
                conn: Arc::clone(&self.conn),
                name: name.to_string(),
                projection: Arc::new(projection),
            }),
        )
    }
}

fn load_checkpoint(c: &Connection, name: &str) -> rusqlite::Result<Option<Position>> {
    c.query_row(
        "SELECT commit_no, sequence FROM palisade_checkpoints WHERE projection = ?1",
        [name],
        |r| {
            Ok(Position {
                commit: r.get::<_, i64>(0)? as u64,
                sequence: r.get::<_, i64>(1)? as u64,
            })
        },
    )
    .optional()
}

fn save_checkpoint(tx: &Transaction<'_>, name: &str, p: Position) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO palisade_checkpoints (projection, commit_no, sequence) VALUES (?1, ?2, ?3)
         ON CONFLICT (projection) DO UPDATE SET commit_no = excluded.commit_no, sequence = excluded.sequence",
        params![name, int(p.commit)?, int(p.sequence)?],
    )?;
    Ok(())
}

/// Applies the events after the checkpoint and moves it. Without
/// `savepoints`, an event's error is the transaction's (it rolls back); with
/// them, each event runs in a savepoint, and the first that fails is rolled
/// back alone and returned (its index in `events`, its error) with the events
/// before it kept.
fn apply_events<P: SqliteProjection>(
    tx: &Transaction<'_>,
    name: &str,
    p: &P,
    events: &[(RecordedEvent, ProjectionContext)],
    savepoints: bool,
) -> Result<Option<(usize, BoxError)>, BoxError> {
    let checkpoint = load_checkpoint(tx, name)?;
    let skipped = events.partition_point(|(e, _)| checkpoint.is_some_and(|c| c >= e.position));
    let mut last = None;
    let mut failed = None;
    for (i, (event, ctx)) in events.iter().enumerate().skip(skipped) {
        // With `otel`, each event in the trace that caused it.
        #[cfg(feature = "otel")]
        let _trace = crate::telemetry::parent_context(event.metadata.traceparent.as_deref())
            .map(opentelemetry::Context::attach);
        if savepoints {
            tx.execute_batch("SAVEPOINT palisade_event")?;
        }
        match p.apply(tx, event, *ctx) {
            Ok(()) => {
                if savepoints {
                    tx.execute_batch("RELEASE palisade_event")?;
                }
                last = Some(event.position);
            }
            Err(e) if savepoints => {
                tx.execute_batch("ROLLBACK TO palisade_event; RELEASE palisade_event")?;
                failed = Some((i, e));
                break;
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(last) = last {
        save_checkpoint(tx, name, last)?;
    }
    Ok(failed)
}

struct Exactly<P> {
    conn: Arc<Mutex<Connection>>,
    name: String,
    projection: Arc<P>,
}

impl<P: SqliteProjection> Exactly<P> {
    /// Runs `f` in an immediate transaction on a blocking thread; commits if it returns `Ok`.
    async fn in_tx<T, F>(&self, f: F) -> Result<T, BoxError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &str, &P) -> Result<T, BoxError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let name = self.name.clone();
        let projection = Arc::clone(&self.projection);
        // The blocking thread runs in the caller's trace too.
        #[cfg(feature = "otel")]
        let cx = opentelemetry::Context::current();
        tokio::task::spawn_blocking(move || {
            #[cfg(feature = "otel")]
            let _trace = cx.attach();
            let mut conn = conn.lock();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx, &name, &projection)?;
            tx.commit()?;
            Ok(out)
        })
        .await?
    }
}

#[async_trait]
impl<P: SqliteProjection> Target for Exactly<P> {
    async fn checkpoint(&self) -> Result<Option<Position>, BoxError> {
        self.in_tx(|tx, name, p| {
            p.setup(tx)?;
            Ok(load_checkpoint(tx, name)?)
        })
        .await
    }

    async fn apply(
        &self,
        events: &[(RecordedEvent, ProjectionContext)],
    ) -> Result<(), (usize, BoxError)> {
        let batch = events.to_vec();
        let error = match self
            .in_tx(move |tx, name, p| apply_events(tx, name, p, &batch, false))
            .await
        {
            Ok(_) => return Ok(()),
            Err(error) if events.len() == 1 => return Err((0, error)),
            Err(error) => error,
        };
        // The batch rolled back: again, each event in a savepoint, keeping
        // those before the first that fails.
        let batch = events.to_vec();
        match self
            .in_tx(move |tx, name, p| apply_events(tx, name, p, &batch, true))
            .await
        {
            Ok(None) => Ok(()),
            Ok(Some(failed)) => Err(failed),
            Err(_) => Err((0, error)),
        }
    }

    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), BoxError> {
        self.in_tx(move |tx, name, _| {
            let e = &letter.event;
            if load_checkpoint(tx, name)?.is_some_and(|c| c >= e.position) {
                return Ok(());
            }
            let at = e
                .recorded_at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            tx.execute(
                "INSERT OR REPLACE INTO palisade_dead_letters
                 (projection, commit_no, sequence, id, stream, version, event_type, schema_version,
                  payload, metadata, recorded_at_ns, error, attempts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    name,
                    int(e.position.commit)?,
                    int(e.position.sequence)?,
                    e.id.to_string(),
                    e.stream.as_str(),
                    int(e.version)?,
                    e.event_type,
                    e.schema_version,
                    e.payload,
                    serde_json::to_string(&e.metadata)?,
                    i64::try_from(at)?,
                    letter.error,
                    letter.attempts,
                ],
            )?;
            Ok(save_checkpoint(tx, name, e.position)?)
        })
        .await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BoxError> {
        self.in_tx(|tx, name, _| {
            let mut stmt = tx.prepare(
                "SELECT commit_no, sequence, id, stream, version, event_type, schema_version,
                        payload, metadata, recorded_at_ns, error, attempts
                 FROM palisade_dead_letters WHERE projection = ?1 ORDER BY commit_no, sequence",
            )?;
            let rows = stmt.query_map([name], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, u32>(6)?,
                    r.get::<_, Vec<u8>>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, i64>(9)?,
                    r.get::<_, String>(10)?,
                    r.get::<_, u32>(11)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (
                    commit,
                    sequence,
                    id,
                    stream,
                    version,
                    event_type,
                    schema_version,
                    payload,
                    metadata,
                    at,
                    error,
                    attempts,
                ) = row?;
                let metadata: Metadata = serde_json::from_str(&metadata)?;
                out.push(DeadLetter {
                    projection: name.to_owned(),
                    event: RecordedEvent {
                        id: id.parse()?,
                        stream: StreamName::new(stream)?,
                        version: version as u64,
                        position: Position {
                            commit: commit as u64,
                            sequence: sequence as u64,
                        },
                        event_type,
                        schema_version,
                        payload,
                        metadata,
                        recorded_at: UNIX_EPOCH + Duration::from_nanos(at as u64),
                    },
                    error,
                    attempts,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn replay(&self, letter: &DeadLetter) -> Result<bool, BoxError> {
        let event = letter.event.clone();
        self.in_tx(move |tx, name, p| {
            let removed = tx.execute(
                "DELETE FROM palisade_dead_letters WHERE projection = ?1 AND commit_no = ?2 AND sequence = ?3",
                params![name, int(event.position.commit)?, int(event.position.sequence)?],
            )?;
            // Already replayed (by another caller): nothing to apply.
            if removed == 1 {
                p.apply(tx, &event, ProjectionContext::live())?;
            }
            Ok(removed == 1)
        })
        .await
    }
}
