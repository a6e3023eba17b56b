//! LISTEN/NOTIFY: a dedicated connection that wakes subscriptions when events commit.

use std::sync::Weak;
use std::time::Duration;

use palisade_core::{Backoff, Jitter, SharedSleeper};
use tokio::sync::watch;

use super::tls::Connector;

/// The waits between reconnection attempts: from 100 ms, doubling up to
/// 5 s, each drawn in its upper half (equal jitter), so that the stores a
/// server restart disconnected together do not all reconnect at once.
fn reconnect_backoff() -> Backoff {
    Backoff::exponential(Duration::from_millis(100))
        .max(Duration::from_secs(5))
        .jitter(Jitter::Equal)
}

/// Listens on `channel` until the store (the owner of `changes`) is gone,
/// reconnecting after a failure. Every notification, and every reconnection
/// (notifications may have been missed), moves the change counter.
pub(super) fn spawn(
    config: tokio_postgres::Config,
    connector: Connector,
    channel: String,
    changes: Weak<watch::Sender<u64>>,
    sleeper: SharedSleeper,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let backoff = reconnect_backoff();
        // Failed attempts since the last connection that listened.
        let mut failures = 0;
        loop {
            let limit = config
                .get_connect_timeout()
                .copied()
                .unwrap_or(Duration::from_secs(5));
            let notify = changes.clone();
            let on_notification = move || match notify.upgrade() {
                Some(changes) => {
                    changes.send_modify(|n| *n += 1);
                    true
                }
                None => false,
            };
            if let Some((client, driver)) = connector
                .connect(&config, limit, &sleeper, on_notification)
                .await
            {
                if client
                    .batch_execute(&format!("LISTEN {channel}"))
                    .await
                    .is_ok()
                {
                    bump(&changes);
                    failures = 0;
                    let _ = driver.await;
                } else {
                    driver.abort();
                }
            }
            if !bump(&changes) {
                return;
            }
            failures += 1;
            sleeper.sleep(backoff.delay(failures)).await;
        }
    })
    .abort_handle()
}

/// Moves the counter; `false` once the store is gone.
fn bump(changes: &Weak<watch::Sender<u64>>) -> bool {
    changes.upgrade().is_some_and(|c| {
        c.send_modify(|n| *n += 1);
        true
    })
}
