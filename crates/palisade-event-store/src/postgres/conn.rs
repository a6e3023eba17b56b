//! A pooled connection that leaves the pool when it breaks.

use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::{Object, Pool};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::error::{Error, Result};

/// A connection from the pool. If a statement fails because the connection
/// died (killed by an administrator, a network cut), the connection is dropped
/// instead of going back to the pool, so the next call gets a healthy one.
pub(super) struct Conn {
    client: Option<Object>,
    broken: AtomicBool,
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

impl Conn {
    pub(super) async fn get(pool: &Pool) -> Result<Self> {
        let client = pool.get().await.map_err(Error::backend)?;
        Ok(Self {
            client: Some(client),
            broken: AtomicBool::new(false),
        })
    }

    fn client(&self) -> &Object {
        self.client.as_ref().expect("present until drop")
    }

    /// The client, for a transaction; mark the connection broken with [`Conn::check`].
    pub(super) fn client_mut(&mut self) -> &mut Object {
        self.client.as_mut().expect("present until drop")
    }

    /// Passes `result` through, remembering whether its error broke the connection.
    pub(super) fn check<T>(
        &self,
        result: Result<T, tokio_postgres::Error>,
    ) -> Result<T, tokio_postgres::Error> {
        if let Err(e) = &result
            && is_broken(e)
        {
            self.broken.store(true, Ordering::Relaxed);
        }
        result
    }

    pub(super) async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>> {
        let stmt = self
            .check(self.client().prepare_cached(sql).await)
            .map_err(Error::backend)?;
        self.check(self.client().query(&stmt, params).await)
            .map_err(Error::backend)
    }

    /// Runs `sql` and then `after` (a statement of its own, in its own
    /// transaction), pipelined in one round trip: both are sent before either
    /// answer arrives, and the server runs them in that order.
    ///
    /// An error says whether `sql` was sent: one from preparing the
    /// statements means it was not.
    pub(super) async fn query_one_then(
        &self,
        sql: &str,
        params: Params<'_>,
        after: &str,
    ) -> Result<Row, Sent> {
        // Prepare first, so the two executions go out in order with nothing between them.
        let stmt = self
            .check(self.client().prepare_cached(sql).await)
            .map_err(Sent::No)?;
        let then = self
            .check(self.client().prepare_cached(after).await)
            .map_err(Sent::No)?;
        let (row, followed) = futures_util::future::join(
            self.client().query_one(&stmt, params),
            self.client().execute(&then, &[]),
        )
        .await;
        // The follow-up's own failure does not undo or hide what `sql` did.
        let _ = self.check(followed);
        self.check(row).map_err(Sent::Yes)
    }

    pub(super) async fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>> {
        let stmt = self
            .check(self.client().prepare_cached(sql).await)
            .map_err(Error::backend)?;
        self.check(self.client().query_opt(&stmt, params).await)
            .map_err(Error::backend)
    }

    pub(super) async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64> {
        let stmt = self
            .check(self.client().prepare_cached(sql).await)
            .map_err(Error::backend)?;
        self.check(self.client().execute(&stmt, params).await)
            .map_err(Error::backend)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.broken.load(Ordering::Relaxed)
            && let Some(client) = self.client.take()
        {
            drop(Object::take(client));
        }
    }
}

/// A failed statement, and whether it had been sent to the server.
pub(super) enum Sent {
    /// It failed before it was sent: the server never saw it.
    No(tokio_postgres::Error),
    /// It was sent; the server answered with this error, or the connection died.
    Yes(tokio_postgres::Error),
}

/// A closed connection, or the server ending the session: class 08
/// (connection exception) and the class 57 codes that end it
/// (`pg_terminate_backend`, a shutdown, a crash). Not 57014, a cancelled
/// statement (a statement timeout): the session goes on, and the statement's
/// transaction was rolled back.
pub(super) fn is_broken(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || e.as_db_error().is_some_and(|db| {
            let code = db.code().code();
            code.starts_with("08") || (code.starts_with("57") && code != "57014")
        })
}
