//! The PostgreSQL backend (feature `postgres`): a pooled, batched store whose
//! global order is safe for subscribers, woken by LISTEN/NOTIFY.

mod conn;
mod listen;
mod rows;
mod tls;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use palisade_core::config::check_nonzero;
use palisade_core::{Backoff, ConfigError, Jitter, SharedSleeper, TokioSleeper};
use tokio::sync::watch;
use tokio_postgres::error::SqlState;

use crate::error::{Error, Result};
use crate::idempotency::check_retry;
use crate::limits::Limits;
use crate::paging::{PAGE, paged};
use crate::store::{EventStore, EventStream};
use crate::subscription::CheckpointStore;
use crate::types::{
    AppendResult, Direction, ExpectedVersion, NewEvent, Position, ReadAll, ReadStream, Snapshot,
    StreamName, StreamState,
};

use conn::{Conn, Sent};
use rows::{EVENT_COLUMNS, event_from_row, has_event, state_from, stream_columns};

const SCHEMA_SQL: &str = include_str!("schema.sql");

/// Builds a [`PostgresEventStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct PostgresEventStoreBuilder {
    url: String,
    schema: String,
    pool_size: usize,
    limits: Limits,
    poll_interval: Duration,
    connect_timeout: Duration,
    statement_timeout: Option<Duration>,
    pool_wait_timeout: Duration,
    sleeper: Option<SharedSleeper>,
    resolve_attempts: u32,
    resolve_backoff: Backoff,
    connector: tls::Connector,
}

impl PostgresEventStoreBuilder {
    /// The schema holding the store's tables (default `palisade`): lower-case
    /// letters, digits and `_`, starting with a letter, at most 40 bytes.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Connections in the pool (default 16, at least 1).
    pub fn pool_size(mut self, connections: usize) -> Self {
        self.pool_size = connections;
        self
    }

    /// Limits on appends (default [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How often subscriptions read the log when no notification arrives, as
    /// a fallback for a lost notification (default 500 ms, at least 1 ms).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The longest a new connection may take to open, for the pool and the
    /// notification listener (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest the server runs one statement (an append waiting for a
    /// lock included) before it cancels it; the call then fails with
    /// [`Error::Backend`] saying so, and nothing of an append is written
    /// (default 30 s; PostgreSQL's `statement_timeout`, set on each connection).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = Some(timeout);
        self
    }

    /// No statement timeout: a statement runs as long as the server lets it.
    pub fn no_statement_timeout(mut self) -> Self {
        self.statement_timeout = None;
        self
    }

    /// The longest a call waits for a free connection when all
    /// [`pool_size`](Self::pool_size) are busy (default 5 s).
    pub fn pool_wait_timeout(mut self, timeout: Duration) -> Self {
        self.pool_wait_timeout = timeout;
        self
    }

    /// How an append whose outcome is unknown is resolved. When the
    /// connection dies after an append was sent (the server crashed, a network
    /// cut) it may have committed or not; the store sends it again with the
    /// same event ids, which the idempotent append makes safe, up to
    /// `attempts` more times, waiting `backoff.delay(n)` before attempt `n`
    /// through the [`sleeper`](Self::sleeper). It then returns the answer,
    /// or [`Error::OutcomeUnknown`] if the server never answered.
    /// Default: 5 attempts, 100 ms doubling to 2 s with equal jitter.
    /// `attempts` 0 returns `OutcomeUnknown` at once.
    pub fn resolve_unknown_outcomes(mut self, attempts: u32, backoff: Backoff) -> Self {
        self.resolve_attempts = attempts;
        self.resolve_backoff = backoff;
        self
    }

    /// Connects with TLS by rustls, verifying the server with `config`
    /// (its roots: a CA's certificate, or the platform's; feature
    /// `postgres-tls`). The URL's `sslmode` still decides: `require` refuses
    /// a server without TLS, `prefer` (the default) falls back to plain,
    /// `disable` never tries. Default: plain connections only.
    #[cfg(feature = "postgres-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres-tls")))]
    pub fn tls(mut self, config: rustls::ClientConfig) -> Self {
        self.connector =
            tls::Connector::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(config));
        self
    }

    /// What the notification listener waits on between reconnection
    /// attempts. Default: tokio's timer (`TokioSleeper`, which follows
    /// `tokio::time::pause`).
    pub fn sleeper(mut self, sleeper: SharedSleeper) -> Self {
        self.sleeper = Some(sleeper);
        self
    }

    /// Checks every setting, naming the builder method of the first one out
    /// of bounds.
    fn validate(&self) -> Result<tokio_postgres::Config, ConfigError> {
        let valid = !self.schema.is_empty()
            && self.schema.len() <= 40
            && self.schema.starts_with(|c: char| c.is_ascii_lowercase())
            && self
                .schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(ConfigError::new(
                "schema",
                format!(
                    "must be 1 to 40 lower-case letters, digits or `_`, starting with a letter, got {:?}",
                    self.schema
                ),
            ));
        }
        check_nonzero("pool_size", self.pool_size as u64)?;
        if self.poll_interval < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "poll_interval",
                format!(
                    "must be at least 1 ms, got {:?}: an idle subscription reads the log once per interval",
                    self.poll_interval
                ),
            ));
        }
        self.limits.validate()?;
        self.resolve_backoff.validate("resolve_unknown_outcomes")?;
        for (field, value) in [
            ("connect_timeout", Some(self.connect_timeout)),
            ("statement_timeout", self.statement_timeout),
            ("pool_wait_timeout", Some(self.pool_wait_timeout)),
        ] {
            if let Some(d) = value
                && d < Duration::from_millis(1)
            {
                return Err(ConfigError::new(
                    field,
                    format!("must be at least 1 ms, got {d:?}"),
                ));
            }
        }
        let mut config = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| ConfigError::new("builder", format!("the URL is not valid: {e}")))?;
        config.connect_timeout(self.connect_timeout);
        if let Some(timeout) = self.statement_timeout {
            let ours = format!("-c statement_timeout={}", timeout.as_millis());
            let options = match config.get_options() {
                Some(theirs) if !theirs.is_empty() => format!("{theirs} {ours}"),
                _ => ours,
            };
            config.options(&options);
        }
        Ok(config)
    }

    /// Connects, creates or updates the schema, and starts listening for new events.
    ///
    /// # Errors
    /// [`Error::Config`] naming the builder method of a setting out of bounds
    /// (`builder` for a URL that does not parse); [`Error::Backend`] if the
    /// server cannot be reached or refuses.
    pub async fn connect(self) -> Result<PostgresEventStore> {
        let config = self.validate()?;
        let connector = self.connector.clone();
        let manager = connector.manager(
            config.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.pool_wait_timeout))
            .create_timeout(Some(self.connect_timeout))
            .build()
            .map_err(Error::backend)?;
        let sql = Arc::new(Sql::new(&self.schema));
        {
            let mut client = pool.get().await.map_err(Error::backend)?;
            let tx = client.transaction().await.map_err(Error::backend)?;
            // Two stores starting at once must not both run CREATE FUNCTION.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                &[&self.schema],
            )
            .await
            .map_err(Error::backend)?;
            let sql = SCHEMA_SQL
                .replace("__SCHEMA__", &self.schema)
                .replace("__LOCKKEY__", &lock_key(&self.schema).to_string());
            tx.batch_execute(&sql).await.map_err(Error::backend)?;
            tx.commit().await.map_err(Error::backend)?;
        }
        let changes = Arc::new(watch::Sender::new(0));
        let sleeper = self.sleeper.unwrap_or_else(TokioSleeper::shared);
        let listener = listen::spawn(
            config,
            connector,
            format!("{}_events", self.schema),
            Arc::downgrade(&changes),
            Arc::clone(&sleeper),
        );
        Ok(PostgresEventStore {
            pool,
            sql,
            limits: self.limits,
            poll_interval: self.poll_interval,
            changes,
            listener,
            sleeper,
            resolve: Resolve {
                attempts: self.resolve_attempts,
                backoff: self.resolve_backoff,
            },
        })
    }
}

/// The second key of the advisory lock that marks appenders of one schema
/// (the first is `'pali'` as an integer): a 31-bit FNV-1a hash of the schema name.
fn lock_key(schema: &str) -> u32 {
    let hash = schema.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash & 0x7fff_ffff
}

/// The statements, with the schema name filled in once.
#[derive(Debug)]
struct Sql {
    append: String,
    notify: String,
    events_by_ids: String,
    stream_row: String,
    stream_row_for_update: String,
    ensure_stream: String,
    delete: String,
    read_forward: String,
    read_forward_first: String,
    read_backward: String,
    read_all: String,
    save_snapshot: String,
    load_snapshot: String,
    load_checkpoint: String,
    head: String,
    save_checkpoint: String,
}

impl Sql {
    fn new(s: &str) -> Self {
        let events = format!("SELECT {EVENT_COLUMNS} FROM {s}.events");
        Self {
            append: format!(
                "SELECT new_version, commit_id, last_sequence FROM {s}.append($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            notify: format!("SELECT pg_notify('{s}_events', '')"),
            events_by_ids: format!("{events} WHERE id = ANY($1)"),
            stream_row: format!(
                "SELECT version, deleted, hidden_through FROM {s}.streams WHERE name = $1"
            ),
            stream_row_for_update: format!(
                "SELECT version, deleted, hidden_through FROM {s}.streams WHERE name = $1 FOR UPDATE"
            ),
            ensure_stream: format!(
                "INSERT INTO {s}.streams (name, version) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING"
            ),
            delete: format!("UPDATE {s}.streams SET deleted = true WHERE name = $1"),
            read_forward: format!(
                "{events} WHERE stream = $1 AND version > $2 AND version >= $3 ORDER BY version LIMIT $4"
            ),
            read_forward_first: format!(
                "SELECT e.*, s.version, s.deleted, s.hidden_through FROM {s}.streams s \
                 LEFT JOIN LATERAL ({events} WHERE stream = s.name AND version > s.hidden_through \
                 AND version >= $2 AND NOT s.deleted ORDER BY version LIMIT $3) e ON true \
                 WHERE s.name = $1"
            ),
            read_backward: format!(
                "{events} WHERE stream = $1 AND version > $2 AND version <= $3 ORDER BY version DESC LIMIT $4"
            ),
            read_all: format!("SELECT {EVENT_COLUMNS} FROM {s}.read_all($1, $2, $3, $4, $5, $6)"),
            save_snapshot: format!(
                "INSERT INTO {s}.snapshots (stream, version, schema_version, payload) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (stream) DO UPDATE SET version = $2, schema_version = $3, payload = $4"
            ),
            load_snapshot: format!(
                "SELECT version, schema_version, payload FROM {s}.snapshots WHERE stream = $1"
            ),
            head: format!(
                "SELECT transaction_id::text::bigint, sequence FROM {s}.events \
                 WHERE transaction_id < {s}.read_horizon() ORDER BY transaction_id DESC, sequence DESC LIMIT 1"
            ),
            load_checkpoint: format!(
                "SELECT commit_id, sequence FROM {s}.checkpoints WHERE name = $1"
            ),
            save_checkpoint: format!(
                "INSERT INTO {s}.checkpoints (name, commit_id, sequence) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET commit_id = $2, sequence = $3"
            ),
        }
    }
}

/// An event store on PostgreSQL.
///
/// Appends are one round trip per batch (a stored function that locks the
/// stream row, checks the expected version and inserts every event). A
/// forward stream read is one round trip for up to 1,000 events (the stream's
/// row and the first page in one statement), one more per further page. Readers
/// of the global log only read transactions older than the oldest one still
/// open, ordered by transaction id then sequence, so a subscriber never skips
/// an event that commits late. New events are signalled with LISTEN/NOTIFY;
/// subscriptions poll as a fallback.
#[derive(Debug)]
pub struct PostgresEventStore {
    pool: Pool,
    sql: Arc<Sql>,
    limits: Limits,
    poll_interval: Duration,
    changes: Arc<watch::Sender<u64>>,
    listener: tokio::task::AbortHandle,
    sleeper: SharedSleeper,
    resolve: Resolve,
}

/// How an append whose outcome is unknown is resolved: sent again, with the
/// same event ids, up to `attempts` more times, waiting `backoff` between.
#[derive(Debug, Clone, Copy)]
struct Resolve {
    attempts: u32,
    backoff: Backoff,
}

impl Drop for PostgresEventStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresEventStore {
    /// A builder for the server at `url` (`postgres://user@host:5432/db`).
    pub fn builder(url: impl Into<String>) -> PostgresEventStoreBuilder {
        PostgresEventStoreBuilder {
            url: url.into(),
            schema: "palisade".into(),
            pool_size: 16,
            limits: Limits::default(),
            poll_interval: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(30)),
            pool_wait_timeout: Duration::from_secs(5),
            sleeper: None,
            connector: tls::Connector::Plain,
            resolve_attempts: 5,
            resolve_backoff: Backoff::exponential(Duration::from_millis(100))
                .max(Duration::from_secs(2))
                .jitter(Jitter::Equal),
        }
    }

    async fn conn(&self) -> Result<Conn> {
        Conn::get(&self.pool).await
    }

    /// Looks up the events already stored under `events`' ids and decides
    /// between "a retry, already done" and "those ids belong to other events".
    async fn resolve_retry(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Option<AppendResult>> {
        let conn = self.conn().await?;
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
        let rows = conn.query(&self.sql.events_by_ids, &[&ids]).await?;
        let found = rows
            .iter()
            .map(event_from_row)
            .collect::<Result<Vec<_>>>()?;
        let existing: Vec<_> = events
            .iter()
            .map(|e| found.iter().find(|f| f.id == e.id))
            .collect();
        check_retry(stream, expected, events, &existing)
    }
}

/// What the PostgreSQL server said, if a server error is anywhere in `e`'s
/// chain: `ERROR 57014: canceling statement due to statement timeout`, with
/// its detail and hint when it gave them.
pub(crate) fn server_said(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(e) = next {
        let db = e
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::as_db_error)
            .or_else(|| e.downcast_ref::<tokio_postgres::error::DbError>());
        if let Some(db) = db {
            let mut said = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                said.push_str("; detail: ");
                said.push_str(detail);
            }
            if let Some(hint) = db.hint() {
                said.push_str("; hint: ");
                said.push_str(hint);
            }
            return Some(said);
        }
        next = e.source();
    }
    None
}

/// How one attempt at an append ended.
enum Attempt {
    /// The server answered: the append was written, or it was refused.
    Answered(Result<AppendResult>),
    /// The append was never sent (no connection, the statement could not be
    /// prepared): nothing of it was written.
    NotSent(Error),
    /// The connection died after the append was sent: it may have committed.
    Unknown(Error),
}

impl PostgresEventStore {
    async fn append_once(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: &[NewEvent],
        metadata: &[Vec<u8>],
    ) -> Attempt {
        let (kind, version) = expected_parts(expected);
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let schemas: Vec<i32> = events
            .iter()
            // Checked by `Limits::check`: at most `MAX_SCHEMA_VERSION` = i32::MAX.
            .map(|e| e.schema_version as i32)
            .collect();
        let payloads: Vec<&[u8]> = events.iter().map(|e| e.payload.as_slice()).collect();
        let metadata: Vec<&[u8]> = metadata.iter().map(Vec::as_slice).collect();
        let conn = match self.conn().await {
            Ok(conn) => conn,
            Err(e) => return Attempt::NotSent(e),
        };
        let outcome = conn
            .query_one_then(
                &self.sql.append,
                &[
                    &stream.as_str(),
                    &kind,
                    &version,
                    &ids,
                    &types,
                    &schemas,
                    &payloads,
                    &metadata,
                ],
                &self.sql.notify,
            )
            .await;
        drop(conn);
        let row = match outcome {
            Ok(row) => row,
            Err(Sent::No(e)) => return Attempt::NotSent(Error::backend(e)),
            Err(Sent::Yes(e)) => match classify(e) {
                AppendFailure::Broken(e) => return Attempt::Unknown(Error::backend(e)),
                AppendFailure::Other(e) => return Attempt::Answered(Err(Error::backend(e))),
                failure => {
                    // A conflict or a used id may be a retry of an append that already succeeded.
                    return Attempt::Answered(
                        match self.resolve_retry(stream, expected, events).await {
                            Ok(Some(done)) => Ok(done),
                            Ok(None) => Err(match failure {
                                AppendFailure::Conflict(actual) => Error::Conflict {
                                    stream: stream.clone(),
                                    expected,
                                    actual,
                                },
                                AppendFailure::Deleted => Error::StreamDeleted {
                                    stream: stream.clone(),
                                },
                                _ => Error::DuplicateEventId { id: events[0].id },
                            }),
                            // The answer was a refusal, but looking at why
                            // failed. On a first attempt the append itself was
                            // not written; after an unknown one, `append` looks again.
                            Err(e) => Err(e),
                        },
                    );
                }
            },
        };
        self.changes.send_modify(|n| *n += 1);
        Attempt::Answered(Ok(AppendResult {
            version: row.get::<_, i64>(0) as u64,
            position: Position {
                commit: row.get::<_, i64>(1) as u64,
                sequence: row.get::<_, i64>(2) as u64,
            },
            written: true,
        }))
    }
}

fn expected_parts(expected: ExpectedVersion) -> (i32, i64) {
    match expected {
        ExpectedVersion::Any => (0, 0),
        ExpectedVersion::NoStream => (1, 0),
        ExpectedVersion::StreamExists => (2, 0),
        ExpectedVersion::Exact(v) => (3, i64::try_from(v).unwrap_or(i64::MAX)),
        ExpectedVersion::Recreate => (4, 0),
    }
}

/// What a failed append statement meant.
enum AppendFailure {
    Conflict(StreamState),
    Deleted,
    DuplicateId,
    /// The connection died: whether the append committed is unknown.
    Broken(tokio_postgres::Error),
    /// Any other refusal by the server: the append's transaction rolled back.
    Other(tokio_postgres::Error),
}

fn classify(e: tokio_postgres::Error) -> AppendFailure {
    // The server's own refusal is definite (the statement's transaction rolled
    // back), unless it is the session ending; anything else (the connection
    // closed, an I/O error) came before the answer.
    if conn::is_broken(&e) || e.as_db_error().is_none() {
        return AppendFailure::Broken(e);
    }
    let Some(db) = e.as_db_error() else {
        return AppendFailure::Other(e);
    };
    let state_in_detail = || {
        let detail = db.detail().unwrap_or_default();
        let mut parts = detail.split(' ').map(|p| p.parse::<i64>().unwrap_or(0));
        let (state, version) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        state_from(version, state == 2)
    };
    match db.code().code() {
        "PS409" => AppendFailure::Conflict(state_in_detail()),
        "PS410" => AppendFailure::Deleted,
        _ if *db.code() == SqlState::UNIQUE_VIOLATION
            && db.constraint().is_some_and(|c| c.ends_with("_id_key")) =>
        {
            AppendFailure::DuplicateId
        }
        _ => AppendFailure::Other(e),
    }
}

impl PostgresEventStore {
    /// A forward read: the stream's row and the first page in one statement
    /// (one round trip, one snapshot), then further pages as they are pulled.
    async fn read_forward(&self, stream: &StreamName, options: ReadStream) -> Result<EventStream> {
        let from = options.first_version(0) as i64;
        let want = options.limit.unwrap_or(PAGE).min(PAGE);
        let rows = self
            .conn()
            .await?
            .query(
                &self.sql.read_forward_first,
                &[&stream.as_str(), &from, &(want as i64)],
            )
            .await?;
        let Some(first) = rows.first() else {
            return Ok(Box::pin(futures_util::stream::empty()));
        };
        let (version, deleted, hidden) = stream_columns(first);
        if deleted {
            return Err(Error::StreamDeleted {
                stream: stream.clone(),
            });
        }
        let limit = options.bounded_limit(version as u64, hidden as u64);
        let mut events = Vec::with_capacity(rows.len());
        for row in rows.iter().filter(|r| has_event(r)) {
            events.push(event_from_row(row)?);
        }
        // A lateral join's order is the plan's, not the statement's.
        events.sort_by_key(|e| e.version);
        events.truncate(limit.min(want) as usize);
        let got = events.len() as u64;
        let next = crate::paging::next_version(&events, from, true);
        let page = futures_util::stream::iter(events.into_iter().map(Ok));
        if got < want || got >= limit {
            return Ok(Box::pin(page));
        }
        let rest = self.pages(stream, true, hidden, next, limit - got);
        Ok(Box::pin(page.chain(rest)))
    }

    /// A backward read: the stream's row (where to start), then pages as they are pulled.
    async fn read_backward(&self, stream: &StreamName, options: ReadStream) -> Result<EventStream> {
        let row = self
            .conn()
            .await?
            .query_opt(&self.sql.stream_row, &[&stream.as_str()])
            .await?;
        let Some(row) = row else {
            return Ok(Box::pin(futures_util::stream::empty()));
        };
        if row.get::<_, bool>(1) {
            return Err(Error::StreamDeleted {
                stream: stream.clone(),
            });
        }
        let version = row.get::<_, i64>(0);
        let hidden = row.get::<_, i64>(2);
        let start = options.first_version(version as u64) as i64;
        let limit = options.bounded_limit(version as u64, hidden as u64);
        Ok(self.pages(stream, false, hidden, start, limit))
    }

    /// Up to `limit` events of `stream` from version `start` on, in the
    /// direction of reading, a page per round trip as they are pulled.
    fn pages(
        &self,
        stream: &StreamName,
        forward: bool,
        hidden: i64,
        start: i64,
        limit: u64,
    ) -> EventStream {
        let (pool, sql, name) = (
            self.pool.clone(),
            Arc::clone(&self.sql),
            stream.as_str().to_owned(),
        );
        paged(start, Some(limit), move |from: i64, n| {
            let (pool, sql, name) = (pool.clone(), Arc::clone(&sql), name.clone());
            async move {
                let text = if forward {
                    &sql.read_forward
                } else {
                    &sql.read_backward
                };
                let rows = Conn::get(&pool)
                    .await?
                    .query(text, &[&name, &hidden, &from, &(n as i64)])
                    .await?;
                let events = rows
                    .iter()
                    .map(event_from_row)
                    .collect::<Result<Vec<_>>>()?;
                let next = crate::paging::next_version(&events, from, forward);
                Ok((events, next))
            }
        })
    }
}

#[async_trait]
impl EventStore for PostgresEventStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let metadata = self.limits.check(&events)?;
        // The first failure after which the append may have committed.
        let mut unknown: Option<Error> = None;
        for attempt in 0..=self.resolve.attempts {
            if attempt > 0 {
                self.sleeper
                    .sleep(self.resolve.backoff.delay(attempt))
                    .await;
            }
            match self.append_once(stream, expected, &events, &metadata).await {
                Attempt::Answered(Err(refusal)) if unknown.is_some() => {
                    // Refused after an attempt that may have committed (a
                    // timeout on a hot stream, a failover, or the first
                    // attempt's own write seen as a conflict): the ids decide.
                    return match self.resolve_retry(stream, expected, &events).await {
                        Ok(Some(done)) => Ok(done),
                        Ok(None) => Err(refusal),
                        Err(Error::Backend(e)) => Err(Error::OutcomeUnknown {
                            stream: stream.clone(),
                            source: Box::new(Error::Backend(e)),
                        }),
                        Err(other) => Err(other),
                    };
                }
                Attempt::Answered(result) => return result,
                Attempt::NotSent(error) if unknown.is_none() => return Err(error),
                // Still unknown: the server has not answered yet.
                Attempt::NotSent(_) => {}
                Attempt::Unknown(error) => {
                    unknown.get_or_insert(error);
                }
            }
        }
        Err(Error::OutcomeUnknown {
            stream: stream.clone(),
            source: Box::new(
                unknown.unwrap_or_else(|| {
                    Error::backend(std::io::Error::other("no attempt was made"))
                }),
            ),
        })
    }

    async fn read_stream(&self, stream: &StreamName, options: ReadStream) -> Result<EventStream> {
        match options.direction {
            Direction::Forward => self.read_forward(stream, options).await,
            Direction::Backward => self.read_backward(stream, options).await,
        }
    }

    async fn read_all(&self, options: ReadAll) -> Result<EventStream> {
        let (pool, sql) = (self.pool.clone(), Arc::clone(&self.sql));
        let filter = options.filter;
        Ok(paged(
            options.after,
            options.limit,
            move |after: Position, n| {
                let (pool, sql, filter) = (pool.clone(), Arc::clone(&sql), filter.clone());
                async move {
                    let rows = Conn::get(&pool)
                        .await?
                        .query(
                            &sql.read_all,
                            &[
                                &after.commit.to_string(),
                                // No row holds a sequence above i64::MAX: a bound past them stays past them.
                                &i64::try_from(after.sequence).unwrap_or(i64::MAX),
                                &filter.stream_prefix,
                                &filter.exact_stream,
                                &filter.event_types,
                                &(n as i64),
                            ],
                        )
                        .await?;
                    let events = rows
                        .iter()
                        .map(event_from_row)
                        .collect::<Result<Vec<_>>>()?;
                    let next = events.last().map_or(after, |e| e.position);
                    Ok((events, next))
                }
            },
        ))
    }

    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState> {
        let row = self
            .conn()
            .await?
            .query_opt(&self.sql.stream_row, &[&stream.as_str()])
            .await?;
        Ok(row.map_or(StreamState::NoStream, |r| state_from(r.get(0), r.get(1))))
    }

    async fn delete_stream(&self, stream: &StreamName, expected: ExpectedVersion) -> Result<()> {
        let mut conn = self.conn().await?;
        let name = stream.as_str();
        let sql = &self.sql;
        let result = async {
            let tx = conn.client_mut().transaction().await?;
            tx.execute(&sql.ensure_stream, &[&name]).await?;
            let row = tx.query_one(&sql.stream_row_for_update, &[&name]).await?;
            if let Err(e) = state_from(row.get(0), row.get(1)).check(stream, expected) {
                return Ok(Err(e));
            }
            tx.execute(&sql.delete, &[&name]).await?;
            tx.commit().await?;
            Ok(Ok(()))
        }
        .await;
        conn.check(result).map_err(Error::backend)?
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        crate::limits::check_snapshot(&snapshot)?;
        self.conn()
            .await?
            .execute(
                &self.sql.save_snapshot,
                &[
                    &snapshot.stream.as_str(),
                    &(snapshot.version as i64),
                    &(snapshot.schema_version as i32),
                    &snapshot.payload,
                ],
            )
            .await?;
        Ok(())
    }

    async fn load_snapshot(&self, stream: &StreamName) -> Result<Option<Snapshot>> {
        let row = self
            .conn()
            .await?
            .query_opt(&self.sql.load_snapshot, &[&stream.as_str()])
            .await?;
        Ok(row.map(|r| Snapshot {
            stream: stream.clone(),
            version: r.get::<_, i64>(0) as u64,
            schema_version: r.get::<_, i32>(1) as u32,
            payload: r.get(2),
        }))
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    async fn head(&self) -> Result<Position> {
        let row = self.conn().await?.query_opt(&self.sql.head, &[]).await?;
        Ok(row.map_or(Position::START, |r| Position {
            commit: r.get::<_, i64>(0) as u64,
            sequence: r.get::<_, i64>(1) as u64,
        }))
    }

    fn system_name(&self) -> &'static str {
        "postgresql"
    }

    fn poll_interval(&self) -> Duration {
        self.poll_interval
    }
}

#[async_trait]
impl CheckpointStore for PostgresEventStore {
    async fn load(&self, subscription: &str) -> Result<Option<Position>> {
        let row = self
            .conn()
            .await?
            .query_opt(&self.sql.load_checkpoint, &[&subscription])
            .await?;
        Ok(row.map(|r| Position {
            commit: r.get::<_, i64>(0) as u64,
            sequence: r.get::<_, i64>(1) as u64,
        }))
    }

    async fn save(&self, subscription: &str, position: Position) -> Result<()> {
        self.conn()
            .await?
            .execute(
                &self.sql.save_checkpoint,
                &[
                    &subscription,
                    &(position.commit as i64),
                    &(position.sequence as i64),
                ],
            )
            .await?;
        Ok(())
    }
}
