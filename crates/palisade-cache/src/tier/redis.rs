//! The remote tier over Redis (feature `redis`).
//!
//! Values live under `{prefix}{key as JSON}` with `PX` for their time to
//! live. Invalidations are published on the channel `{prefix}invalidations`
//! as `{sender as 16 hex digits}{key as JSON}`. Commands go through redis'
//! `ConnectionManager`, which reconnects by itself; the subscription runs in
//! a task that resubscribes with backoff after losing its connection and then
//! asks every local cache to resynchronise, since messages published
//! meanwhile are lost (Redis pub/sub keeps nothing).

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use palisade_core::{Backoff, Jitter, SharedSleeper, TokioSleeper};

use super::codec::{Codec, JsonCodec};
use super::{Invalidation, Invalidations, RemoteTier, TierError};

/// The waits between attempts to resubscribe: from 20 ms, doubling up to
/// 2 s, each drawn in its upper half (equal jitter) so that the instances a
/// Redis restart disconnected together do not all come back at once.
fn resubscribe_backoff() -> Backoff {
    Backoff::exponential(Duration::from_millis(20))
        .max(Duration::from_secs(2))
        .jitter(Jitter::Equal)
}

fn backend(e: redis::RedisError) -> TierError {
    TierError::Backend(Box::new(e))
}

/// Aborts the subscription task when the last handle to the tier goes.
struct Listener(JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A [`RemoteTier`] in Redis. Keys and the invalidation payloads are JSON;
/// values go through the [`Codec`] `C` (JSON by default).
pub struct RedisTier<K, V, C = JsonCodec> {
    connection: ConnectionManager,
    prefix: String,
    channel: String,
    codec: C,
    me: u64,
    invalidations: broadcast::Sender<(u64, Invalidation<K>)>,
    _listener: Arc<Listener>,
    _values: PhantomData<fn() -> V>,
}

impl<K, V, C> fmt::Debug for RedisTier<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTier")
            .field("prefix", &self.prefix)
            .field("member", &format_args!("{:016x}", self.me))
            .finish_non_exhaustive()
    }
}

impl<K, V> RedisTier<K, V, JsonCodec>
where
    K: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Connects to `url` (`redis://127.0.0.1:6379`), keeping keys under
    /// `prefix` (`"myapp:users:"`); values as JSON.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, TierError> {
        Self::connect_with_codec(url, prefix, JsonCodec).await
    }
}

impl<K, V, C> RedisTier<K, V, C>
where
    K: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    C: Codec<V>,
{
    /// As [`connect`](RedisTier::connect), with values encoded by `codec`.
    ///
    /// Fails if Redis cannot be reached now; once connected, lost
    /// connections are re-established by themselves.
    pub async fn connect_with_codec(url: &str, prefix: &str, codec: C) -> Result<Self, TierError> {
        let client = redis::Client::open(url).map_err(backend)?;
        // Few retries per reconnection: a caller waits at most its remote
        // timeout anyway, and an unreachable Redis at startup should fail
        // `connect` in about a second rather than after redis' default seven.
        // A failed reconnection is tried again by the next command.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let connection = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(backend)?;
        let channel = format!("{prefix}invalidations");
        // Subscribed before `connect` returns, so no invalidation published
        // after it can be missed.
        let pubsub = subscribe(&client, &channel).await?;
        let (invalidations, _) = broadcast::channel(1024);
        let listener = tokio::spawn(listen(
            client,
            channel.clone(),
            pubsub,
            invalidations.clone(),
            TokioSleeper::shared(),
        ));
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            channel,
            codec,
            me: fastrand::u64(..u64::MAX),
            invalidations,
            _listener: Arc::new(Listener(listener)),
            _values: PhantomData,
        })
    }

    /// `SET key value [PX ttl]`.
    fn set_command(
        &self,
        key: &K,
        value: &V,
        ttl: Option<Duration>,
    ) -> Result<redis::Cmd, TierError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.redis_key(key)?).arg(self.codec.encode(value)?);
        if let Some(ttl) = ttl {
            // Capped at MAX_REMOTE_TTL by the builder; at least 1 ms.
            cmd.arg("PX")
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        Ok(cmd)
    }

    fn redis_key(&self, key: &K) -> Result<String, TierError> {
        let json = serde_json::to_string(key).map_err(|e| TierError::Codec(Box::new(e)))?;
        Ok(format!("{}{json}", self.prefix))
    }
}

async fn subscribe(client: &redis::Client, channel: &str) -> Result<PubSub, TierError> {
    let mut pubsub = client.get_async_pubsub().await.map_err(backend)?;
    pubsub.subscribe(channel).await.map_err(backend)?;
    Ok(pubsub)
}

/// Forwards invalidations from Redis until the tier is dropped, resubscribing
/// (and asking for a resync) whenever the connection is lost.
async fn listen<K: DeserializeOwned>(
    client: redis::Client,
    channel: String,
    mut pubsub: PubSub,
    out: broadcast::Sender<(u64, Invalidation<K>)>,
    sleeper: SharedSleeper,
) {
    loop {
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            if let Some(parsed) = parse(message.get_payload_bytes()) {
                let _ = out.send(parsed);
            }
        }
        drop(messages);
        let backoff = resubscribe_backoff();
        let mut attempt = 1;
        pubsub = loop {
            sleeper.sleep(backoff.delay(attempt)).await;
            if let Ok(pubsub) = subscribe(&client, &channel).await {
                break pubsub;
            }
            attempt = attempt.saturating_add(1);
        };
        let _ = out.send((u64::MAX, Invalidation::Resync));
    }
}

/// `{sender:016x}{key as JSON}` → `(sender, Key(key))`; anything else is ignored.
fn parse<K: DeserializeOwned>(payload: &[u8]) -> Option<(u64, Invalidation<K>)> {
    let sender = std::str::from_utf8(payload.get(..16)?).ok()?;
    let sender = u64::from_str_radix(sender, 16).ok()?;
    let key = serde_json::from_slice(&payload[16..]).ok()?;
    Some((sender, Invalidation::Key(key)))
}

#[async_trait]
impl<K, V, C> RemoteTier<K, V> for RedisTier<K, V, C>
where
    K: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    C: Codec<V>,
{
    async fn get(&self, key: &K) -> Result<Option<V>, TierError> {
        let redis_key = self.redis_key(key)?;
        let mut connection = self.connection.clone();
        let bytes: Option<Vec<u8>> = connection.get(redis_key).await.map_err(backend)?;
        bytes.map(|b| self.codec.decode(&b)).transpose()
    }

    async fn set(&self, key: &K, value: &V, ttl: Option<Duration>) -> Result<(), TierError> {
        let cmd = self.set_command(key, value, ttl)?;
        let mut connection = self.connection.clone();
        cmd.query_async::<()>(&mut connection)
            .await
            .map_err(backend)
    }

    async fn set_if_absent(
        &self,
        key: &K,
        value: &V,
        ttl: Option<Duration>,
    ) -> Result<bool, TierError> {
        let mut cmd = self.set_command(key, value, ttl)?;
        cmd.arg("NX");
        let mut connection = self.connection.clone();
        let reply: Option<String> = cmd.query_async(&mut connection).await.map_err(backend)?;
        Ok(reply.is_some())
    }

    async fn remove(&self, key: &K) -> Result<(), TierError> {
        let redis_key = self.redis_key(key)?;
        let mut connection = self.connection.clone();
        connection.del::<_, ()>(redis_key).await.map_err(backend)
    }

    async fn publish_invalidation(&self, key: &K) -> Result<(), TierError> {
        let json = serde_json::to_string(key).map_err(|e| TierError::Codec(Box::new(e)))?;
        let payload = format!("{:016x}{json}", self.me);
        let mut connection = self.connection.clone();
        connection
            .publish::<_, _, ()>(&self.channel, payload)
            .await
            .map_err(backend)
    }

    fn subscribe(&self) -> Invalidations<K> {
        Invalidations::new(self.invalidations.subscribe(), self.me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_garbage_is_ignored() {
        let payload = format!(
            "{:016x}{}",
            0xABCu64,
            serde_json::to_string("user:7").unwrap()
        );
        assert_eq!(
            parse::<String>(payload.as_bytes()),
            Some((0xABC, Invalidation::Key("user:7".to_string())))
        );
        assert_eq!(parse::<String>(b"short"), None);
        assert_eq!(parse::<String>(b"zzzzzzzzzzzzzzzz\"k\""), None);
        assert_eq!(parse::<u64>(b"0000000000000001\"not a number\""), None);
    }
}
