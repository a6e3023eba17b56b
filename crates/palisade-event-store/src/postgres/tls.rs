//! How the store's connections are made: plain, or TLS by rustls (feature
//! `postgres-tls`). One value serves the pool and the notification listener.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig};
use palisade_core::SharedSleeper;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, NoTls, Socket};

/// The connector of every connection of one store.
#[derive(Clone)]
pub(crate) enum Connector {
    Plain,
    #[cfg(feature = "postgres-tls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain => "Plain",
            #[cfg(feature = "postgres-tls")]
            Self::Rustls(_) => "Rustls",
        })
    }
}

impl Connector {
    /// The pool's manager, making connections with this connector.
    pub(crate) fn manager(&self, config: Config, manager: ManagerConfig) -> Manager {
        match self {
            Self::Plain => Manager::from_config(config, NoTls, manager),
            #[cfg(feature = "postgres-tls")]
            Self::Rustls(tls) => Manager::from_config(config, tls.clone(), manager),
        }
    }

    /// Opens one connection within `limit` (the driver's own timeout covers
    /// only the socket), with its driver running in a task of its own, which
    /// hands every notification to `on_notification` until the connection
    /// ends; returns the client and that task.
    pub(crate) async fn connect(
        &self,
        config: &Config,
        limit: Duration,
        sleeper: &SharedSleeper,
        on_notification: impl FnMut() -> bool + Send + 'static,
    ) -> Option<(Client, tokio::task::JoinHandle<()>)> {
        match self {
            Self::Plain => open(config, NoTls, limit, sleeper, on_notification).await,
            #[cfg(feature = "postgres-tls")]
            Self::Rustls(tls) => open(config, tls.clone(), limit, sleeper, on_notification).await,
        }
    }
}

async fn open<T>(
    config: &Config,
    tls: T,
    limit: Duration,
    sleeper: &SharedSleeper,
    mut on_notification: impl FnMut() -> bool + Send + 'static,
) -> Option<(Client, tokio::task::JoinHandle<()>)>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as tokio_postgres::tls::TlsConnect<Socket>>::Future: Send,
{
    use futures_util::StreamExt;
    let Ok(Ok((client, mut connection))) =
        palisade_core::timeout(&**sleeper, limit, config.connect(tls)).await
    else {
        return None;
    };
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(_) = message
                && !on_notification()
            {
                return;
            }
        }
    });
    Some((client, driver))
}
