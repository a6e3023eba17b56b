//! Feature `postgres`: read models in a PostgreSQL schema, where a
//! projection's writes, its checkpoint and its dead letters commit in one
//! transaction.
//!
//! Each batch of events is applied in a transaction that locks the
//! projection's checkpoint row (`SELECT … FOR UPDATE`; the row is made when
//! the runner starts), hands the events to [`PostgresProjection::apply_batch`]
//! and moves the checkpoint, then commits if the checkpoint it locked was
//! before the batch. The three go out together on the one connection
//! (pipelined: the server runs them in the order they arrive, so the lock is
//! taken before the batch runs, and the runner does not wait for one before
//! sending the next). If the locked checkpoint was not before the batch
//! (another runner applied some of it), the transaction rolls back and the
//! batch goes again, after the lock, without the events at or before it. A crash at any point leaves all of it or none (the server rolls
//! back a transaction whose connection died); a second runner waits on the
//! row lock and then sees the new checkpoint. Each event takes effect exactly
//! once.
//!
//! Round trips per batch: `BEGIN`, the lock with the batch and the checkpoint
//! (as many as `apply_batch` awaits one after another: one for a single
//! set-based statement, two if it is not prepared), `COMMIT`. The
//! checkpoint statements are prepared once per read model.
//!
//! When a batch fails, it is rolled back and its events are applied again in
//! one new transaction, one at a time, each inside a savepoint: the events
//! before the first that fails commit with the checkpoint just before it, and
//! the failing event goes to the runner's failure policy (retries, then stop
//! or dead letter) on its own. Good events take effect once; only the bad
//! one is retried and dead-lettered.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use palisade_core::ConfigError;
use palisade_event_store::{Error, Metadata, Position, RecordedEvent, StreamName};
use tokio::sync::{Mutex, OnceCell};
use tokio_postgres::{Client, NoTls, Statement, Transaction};

use crate::projection::{BoxError, DeadLetter, ProjectionContext, Projector, Target};

/// A projection into a PostgreSQL read model, exactly once.
#[async_trait]
pub trait PostgresProjection: Send + Sync + 'static {
    /// Creates the projection's tables if they are missing (in the read
    /// model's schema, which is the `search_path`); runs when the runner starts.
    ///
    /// # Errors
    /// A PostgreSQL error, which fails the runner's start.
    async fn setup(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        let _ = tx;
        Ok(())
    }

    /// Applies one event inside the transaction that also saves the checkpoint.
    /// An error rolls all of it back and is retried by the projection's
    /// [`FailurePolicy`](crate::FailurePolicy).
    async fn apply(
        &self,
        tx: &Transaction<'_>,
        event: &RecordedEvent,
        ctx: ProjectionContext,
    ) -> Result<(), BoxError>;

    /// Applies a batch of events (in global order, after the checkpoint this
    /// runner read) inside the transaction that also saves the checkpoint.
    /// When another runner of the same projection committed some of them
    /// first, the runner finds out from the checkpoint row it locks with the
    /// batch, rolls the transaction back and calls this again with the rest:
    /// the batch's writes in `tx` take effect once, but anything an override
    /// does outside `tx` (a call to another service) can happen twice then. The default
    /// calls [`apply`](Self::apply) for each, one after another, each in the
    /// trace its event's metadata names (feature `otel`).
    ///
    /// Override it to send the batch's writes at once (one statement over
    /// `unnest` arrays, say), so a batch of 100 costs one round trip instead
    /// of 100. It must have the effect of applying the events one by one: a
    /// batch can hold a single event (the last of a read, `batch_size(1)`,
    /// and every retry of a failing event come as a one-event slice), and when
    /// a batch fails its events are applied again one at a time through
    /// `apply`, each in a savepoint. An override runs in the caller's trace,
    /// not in the events'.
    ///
    /// An error rolls the batch back; its events are then applied again one
    /// at a time through `apply`, each in a savepoint, so the events before
    /// the failing one still commit and only that one is retried by the
    /// [`FailurePolicy`](crate::FailurePolicy).
    async fn apply_batch(
        &self,
        tx: &Transaction<'_>,
        events: &[(RecordedEvent, ProjectionContext)],
    ) -> Result<(), BoxError> {
        for (event, ctx) in events {
            crate::projection::in_trace(event, self.apply(tx, event, *ctx)).await?;
        }
        Ok(())
    }
}

/// A shared projection is a projection.
#[async_trait]
impl<P: PostgresProjection + ?Sized> PostgresProjection for Arc<P> {
    async fn setup(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        (**self).setup(tx).await
    }

    async fn apply(
        &self,
        tx: &Transaction<'_>,
        event: &RecordedEvent,
        ctx: ProjectionContext,
    ) -> Result<(), BoxError> {
        (**self).apply(tx, event, ctx).await
    }

    async fn apply_batch(
        &self,
        tx: &Transaction<'_>,
        events: &[(RecordedEvent, ProjectionContext)],
    ) -> Result<(), BoxError> {
        (**self).apply_batch(tx, events).await
    }
}

/// A PostgreSQL schema holding read models, their checkpoints and their dead
/// letters, over one connection (its `search_path` is the schema).
#[derive(Clone)]
pub struct PostgresReadModel {
    client: Arc<Mutex<Client>>,
    schema: Arc<str>,
    /// The checkpoint statements, prepared once on the connection.
    statements: Arc<OnceCell<Statements>>,
}

/// The runner's own statements, prepared on the read model's connection.
struct Statements {
    lock: Statement,
    save: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            lock: client
                .prepare(
                    "SELECT commit_no, sequence FROM palisade_checkpoints WHERE projection = $1 FOR UPDATE",
                )
                .await?,
            save: client
                .prepare(
                    "UPDATE palisade_checkpoints SET commit_no = $2, sequence = $3 WHERE projection = $1",
                )
                .await?,
        })
    }
}

impl std::fmt::Debug for PostgresReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReadModel")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

fn db(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::backend(e)
}

fn int(v: u64) -> Result<i64, BoxError> {
    Ok(i64::try_from(v)?)
}

impl PostgresReadModel {
    /// Connects to `url` (without TLS), creates `schema` and the checkpoint
    /// and dead-letter tables in it if they are missing, and sets the
    /// connection's `search_path` to it.
    ///
    /// # Errors
    /// [`Error::Config`] naming `connect` when `schema` is not a plain
    /// identifier (1 to 63 of `a-z 0-9 _`, not starting with a digit); a
    /// backend error when the server cannot be reached or set up.
    pub async fn connect(url: &str, schema: &str) -> Result<Self, Error> {
        let plain = !schema.is_empty()
            && schema.len() <= 63
            && !schema.starts_with(|c: char| c.is_ascii_digit())
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain {
            return Err(Error::Config(ConfigError::new(
                "connect",
                format!(
                    "the schema must be 1 to 63 of a-z 0-9 _ not starting with a digit, got {schema:?}"
                ),
            )));
        }
        let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(db)?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "SET client_min_messages = warning;
                 CREATE SCHEMA IF NOT EXISTS {schema};
                 SET search_path TO {schema};
                 CREATE TABLE IF NOT EXISTS palisade_checkpoints (
                     projection TEXT PRIMARY KEY,
                     commit_no BIGINT NOT NULL,
                     sequence BIGINT NOT NULL);
                 CREATE TABLE IF NOT EXISTS palisade_dead_letters (
                     projection TEXT NOT NULL,
                     commit_no BIGINT NOT NULL,
                     sequence BIGINT NOT NULL,
                     id UUID NOT NULL,
                     stream TEXT NOT NULL,
                     version BIGINT NOT NULL,
                     event_type TEXT NOT NULL,
                     schema_version BIGINT NOT NULL,
                     payload BYTEA NOT NULL,
                     metadata TEXT NOT NULL,
                     recorded_at_ns BIGINT NOT NULL,
                     error TEXT NOT NULL,
                     attempts BIGINT NOT NULL,
                     PRIMARY KEY (projection, commit_no, sequence));"
            ))
            .await
            .map_err(db)?;
        Ok(Self {
            client: Arc::new(Mutex::new(client)),
            schema: schema.into(),
            statements: Arc::new(OnceCell::new()),
        })
    }

    /// The schema.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The connection, for queries over the read models (held until the guard is dropped).
    pub async fn client(&self) -> tokio::sync::MutexGuard<'_, Client> {
        self.client.lock().await
    }

    /// The checkpoint saved for `projection` (none before its first event).
    ///
    /// # Errors
    /// A backend error.
    pub async fn checkpoint(&self, projection: &str) -> Result<Option<Position>, Error> {
        let client = self.client.lock().await;
        let row = client
            .query_opt(
                "SELECT commit_no, sequence FROM palisade_checkpoints WHERE projection = $1",
                &[&projection],
            )
            .await
            .map_err(db)?;
        Ok(row
            .map(|r| position(r.get(0), r.get(1)))
            .filter(|p| *p != Position::START))
    }

    /// `projection` as a [`Projector`] for a [`ProjectionRunner`](crate::ProjectionRunner),
    /// named `name` (its checkpoint's key).
    pub fn projector(
        &self,
        name: impl Into<Arc<str>>,
        projection: impl PostgresProjection,
    ) -> Projector {
        let name = name.into();
        Projector::from_target(
            Arc::clone(&name),
            Arc::new(Exactly {
                client: Arc::clone(&self.client),
                name: name.to_string(),
                projection,
                statements: Arc::clone(&self.statements),
            }),
        )
    }
}

fn position(commit: i64, sequence: i64) -> Position {
    Position {
        commit: commit as u64,
        sequence: sequence as u64,
    }
}

struct Exactly<P> {
    client: Arc<Mutex<Client>>,
    name: String,
    projection: P,
    statements: Arc<OnceCell<Statements>>,
}

/// Locks the checkpoint row and returns it.
async fn lock_checkpoint(
    tx: &Transaction<'_>,
    statements: &Statements,
    name: &str,
) -> Result<Position, BoxError> {
    let row = tx.query_one(&statements.lock, &[&name]).await?;
    Ok(position(row.get(0), row.get(1)))
}

async fn save_checkpoint(
    tx: &Transaction<'_>,
    statements: &Statements,
    name: &str,
    p: Position,
) -> Result<(), BoxError> {
    tx.execute(
        &statements.save,
        &[&name, &int(p.commit)?, &int(p.sequence)?],
    )
    .await?;
    Ok(())
}

/// How many of `events` (in order) are at or before `checkpoint`: applied already.
fn already_applied(events: &[(RecordedEvent, ProjectionContext)], checkpoint: Position) -> usize {
    events.partition_point(|(e, _)| e.position <= checkpoint)
}

impl<P: PostgresProjection> Exactly<P> {
    async fn statements(&self, client: &Client) -> Result<&Statements, BoxError> {
        Ok(self
            .statements
            .get_or_try_init(|| Statements::prepare(client))
            .await?)
    }

    /// The events in one transaction under the checkpoint row's lock: all of
    /// them through `apply_batch`, or, when that fails, those before the
    /// first that fails on its own (`Err.0` counts them, with the events
    /// applied before).
    ///
    /// The lock, the batch and the checkpoint go out together, in that
    /// order, on the guess that none of the events is applied yet (this
    /// runner moved the checkpoint last); the server takes the lock before
    /// it runs the batch. If the locked checkpoint says otherwise (another
    /// runner got there first), all of it rolls back and the batch is
    /// applied again without the events at or before the checkpoint.
    async fn apply_all(
        &self,
        events: &[(RecordedEvent, ProjectionContext)],
    ) -> Result<(), (usize, BoxError)> {
        let (Some((first, _)), Some((last, _))) = (events.first(), events.last()) else {
            return Ok(());
        };
        let mut client = self.client.lock().await;
        let statements = self.statements(&client).await.map_err(|e| (0, e))?;
        let tx = client.transaction().await.map_err(|e| (0, e.into()))?;
        let (checkpoint, applied, saved) = futures_util::future::join3(
            lock_checkpoint(&tx, statements, &self.name),
            self.projection.apply_batch(&tx, events),
            save_checkpoint(&tx, statements, &self.name, last.position),
        )
        .await;
        let checkpoint = checkpoint.map_err(|e| (0, e))?;
        if checkpoint >= first.position {
            tx.rollback().await.map_err(|e| (0, e.into()))?;
            drop(client);
            return self.apply_after_checkpoint(events).await;
        }
        let error = match (applied, saved) {
            (Ok(()), Ok(())) => return tx.commit().await.map_err(|e| (0, e.into())),
            (Ok(()), Err(e)) => return Err((0, e)),
            (Err(e), _) => e,
        };
        tx.rollback().await.map_err(|e| (0, e.into()))?;
        if events.len() == 1 {
            return Err((0, error));
        }
        drop(client);
        self.apply_until_failure(events).await
    }

    /// [`apply_all`](Self::apply_all) when some events may be applied
    /// already: the lock first, then the batch of the others.
    async fn apply_after_checkpoint(
        &self,
        events: &[(RecordedEvent, ProjectionContext)],
    ) -> Result<(), (usize, BoxError)> {
        let mut client = self.client.lock().await;
        let statements = self.statements(&client).await.map_err(|e| (0, e))?;
        let tx = client.transaction().await.map_err(|e| (0, e.into()))?;
        let checkpoint = lock_checkpoint(&tx, statements, &self.name)
            .await
            .map_err(|e| (0, e))?;
        let skipped = already_applied(events, checkpoint);
        let fresh = &events[skipped..];
        let Some((last, _)) = fresh.last() else {
            return Ok(()); // nothing new: the transaction rolls back
        };
        let (applied, saved) = futures_util::future::join(
            self.projection.apply_batch(&tx, fresh),
            save_checkpoint(&tx, statements, &self.name, last.position),
        )
        .await;
        let error = match (applied, saved) {
            (Ok(()), Ok(())) => return tx.commit().await.map_err(|e| (0, e.into())),
            (Ok(()), Err(e)) => return Err((0, e)),
            (Err(e), _) => e,
        };
        tx.rollback().await.map_err(|e| (0, e.into()))?;
        if fresh.len() == 1 {
            return Err((skipped, error));
        }
        drop(client);
        self.apply_until_failure(events).await
    }

    /// The events in one transaction, one at a time, each in a savepoint:
    /// commits those before the first that fails with their checkpoint.
    async fn apply_until_failure(
        &self,
        events: &[(RecordedEvent, ProjectionContext)],
    ) -> Result<(), (usize, BoxError)> {
        let mut client = self.client.lock().await;
        let statements = self.statements(&client).await.map_err(|e| (0, e))?;
        let mut tx = client.transaction().await.map_err(|e| (0, e.into()))?;
        let checkpoint = lock_checkpoint(&tx, statements, &self.name)
            .await
            .map_err(|e| (0, e))?;
        let skipped = already_applied(events, checkpoint);
        let mut good = 0;
        let mut failure = None;
        for (event, ctx) in &events[skipped..] {
            let savepoint = tx
                .savepoint("palisade_event")
                .await
                .map_err(|e| (0, e.into()))?;
            match crate::projection::in_trace(event, self.projection.apply(&savepoint, event, *ctx))
                .await
            {
                Ok(()) => {
                    savepoint.commit().await.map_err(|e| (0, e.into()))?;
                    good += 1;
                }
                Err(e) => {
                    savepoint.rollback().await.map_err(|e| (0, e.into()))?;
                    failure = Some(e);
                    break;
                }
            }
        }
        if good > 0 {
            let last = events[skipped + good - 1].0.position;
            save_checkpoint(&tx, statements, &self.name, last)
                .await
                .map_err(|e| (0, e))?;
            tx.commit().await.map_err(|e| (0, e.into()))?;
        }
        match failure {
            None => Ok(()),
            Some(e) => Err((skipped + good, e)),
        }
    }
}

#[async_trait]
impl<P: PostgresProjection> Target for Exactly<P> {
    async fn checkpoint(&self) -> Result<Option<Position>, BoxError> {
        let mut client = self.client.lock().await;
        let statements = self.statements(&client).await?;
        let tx = client.transaction().await?;
        self.projection.setup(&tx).await?;
        tx.execute(
            "INSERT INTO palisade_checkpoints VALUES ($1, 0, 0) ON CONFLICT (projection) DO NOTHING",
            &[&self.name],
        )
        .await?;
        let at = lock_checkpoint(&tx, statements, &self.name).await?;
        tx.commit().await?;
        Ok(Some(at).filter(|p| *p != Position::START))
    }

    async fn apply(
        &self,
        events: &[(RecordedEvent, ProjectionContext)],
    ) -> Result<(), (usize, BoxError)> {
        self.apply_all(events).await
    }

    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), BoxError> {
        let mut client = self.client.lock().await;
        let statements = self.statements(&client).await?;
        let tx = client.transaction().await?;
        let e = &letter.event;
        if lock_checkpoint(&tx, statements, &self.name).await? >= e.position {
            return Ok(());
        }
        let at = i64::try_from(
            e.recorded_at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        )?;
        tx.execute(
            "INSERT INTO palisade_dead_letters VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (projection, commit_no, sequence) DO UPDATE SET error = excluded.error, attempts = excluded.attempts",
            &[
                &self.name,
                &int(e.position.commit)?,
                &int(e.position.sequence)?,
                &e.id,
                &e.stream.as_str(),
                &int(e.version)?,
                &e.event_type,
                &i64::from(e.schema_version),
                &e.payload,
                &serde_json::to_string(&e.metadata)?,
                &at,
                &letter.error,
                &i64::from(letter.attempts),
            ],
        )
        .await?;
        save_checkpoint(&tx, statements, &self.name, e.position).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BoxError> {
        let client = self.client.lock().await;
        let rows = client
            .query(
                "SELECT commit_no, sequence, id, stream, version, event_type, schema_version, payload,
                        metadata, recorded_at_ns, error, attempts
                 FROM palisade_dead_letters WHERE projection = $1 ORDER BY commit_no, sequence",
                &[&self.name],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let metadata: Metadata = serde_json::from_str(r.get::<_, &str>(8))?;
            out.push(DeadLetter {
                projection: self.name.clone(),
                event: RecordedEvent {
                    id: r.get(2),
                    stream: StreamName::new(r.get::<_, String>(3))?,
                    version: r.get::<_, i64>(4) as u64,
                    position: position(r.get(0), r.get(1)),
                    event_type: r.get(5),
                    schema_version: u32::try_from(r.get::<_, i64>(6))?,
                    payload: r.get(7),
                    metadata,
                    recorded_at: UNIX_EPOCH + Duration::from_nanos(r.get::<_, i64>(9) as u64),
                },
                error: r.get(10),
                attempts: u32::try_from(r.get::<_, i64>(11))?,
            });
        }
        Ok(out)
    }

    async fn replay(&self, letter: &DeadLetter) -> Result<bool, BoxError> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await?;
        let p = letter.event.position;
        let removed = tx
            .execute(
                "DELETE FROM palisade_dead_letters WHERE projection = $1 AND commit_no = $2 AND sequence = $3",
                &[&self.name, &int(p.commit)?, &int(p.sequence)?],
            )
            .await?;
        // Already replayed (by another caller): nothing to apply.
        if removed == 1 {
            self.projection
                .apply(&tx, &letter.event, ProjectionContext::live())
                .await?;
        }
        tx.commit().await?;
        Ok(removed == 1)
    }
}
