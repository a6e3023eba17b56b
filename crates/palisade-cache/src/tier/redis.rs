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
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use palisade_core::{Backoff, ConfigError, Jitter, SharedSleeper, TokioSleeper};

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
    /// `prefix` (`"myapp:users:"`); values as JSON. The builder's defaults
    /// for everything else.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, TierError> {
        Self::builder(prefix).url(url).connect().await
    }

    /// A builder for a tier keeping keys under `prefix` (`"myapp:users:"`).
    pub fn builder(prefix: impl Into<String>) -> RedisTierBuilder<K, V, JsonCodec> {
        RedisTierBuilder {
            prefix: prefix.into(),
            url: None,
            client: None,
            connection: None,
            codec: JsonCodec,
            ping_interval: Duration::from_secs(1),
            ping_timeout: Duration::from_secs(1),
            sleeper: None,
            _kv: PhantomData,
        }
    }
}

/// Builds a [`RedisTier`]: where Redis is (a URL, or a `redis::Client`
/// and optionally a `ConnectionManager` the application already has), the
/// codec, and how a dead subscription is detected.
#[must_use]
pub struct RedisTierBuilder<K, V, C> {
    prefix: String,
    url: Option<String>,
    client: Option<redis::Client>,
    connection: Option<ConnectionManager>,
    codec: C,
    ping_interval: Duration,
    ping_timeout: Duration,
    sleeper: Option<SharedSleeper>,
    _kv: PhantomData<fn() -> (K, V)>,
}

impl<K, V, C> fmt::Debug for RedisTierBuilder<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTierBuilder")
            .field("prefix", &self.prefix)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .finish_non_exhaustive()
    }
}

impl<K, V, C> RedisTierBuilder<K, V, C>
where
    K: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    C: Codec<V>,
{
    /// Where Redis is: `redis://host:port/db`, or `rediss://…` for TLS (with
    /// the `redis` crate's TLS features). One of `url` and `client` is required.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// An existing client (for its connection settings, TLS included); the
    /// subscription opens its own connection from it.
    pub fn client(mut self, client: redis::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// An existing connection manager for the commands (default: one made
    /// from the client or URL, with a 1 s connect timeout and 2 retries).
    pub fn connection_manager(mut self, connection: ConnectionManager) -> Self {
        self.connection = Some(connection);
        self
    }

    /// Encodes values with `codec` (default JSON).
    pub fn codec<C2: Codec<V>>(self, codec: C2) -> RedisTierBuilder<K, V, C2> {
        RedisTierBuilder {
            prefix: self.prefix,
            url: self.url,
            client: self.client,
            connection: self.connection,
            codec,
            ping_interval: self.ping_interval,
            ping_timeout: self.ping_timeout,
            sleeper: self.sleeper,
            _kv: PhantomData,
        }
    }

    /// How often the subscription connection is pinged when it is quiet
    /// (default 1 s). With [`ping_timeout`](Self::ping_timeout), this bounds
    /// how long a dead subscription (a frozen server, a silent network cut,
    /// where the TCP connection stays open) goes unnoticed: at most
    /// `ping_interval + ping_timeout` after it died, every local cache is
    /// told to resynchronise.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// How long a ping, or an attempt to subscribe again, may take before the
    /// connection counts as dead (default 1 s).
    pub fn ping_timeout(mut self, timeout: Duration) -> Self {
        self.ping_timeout = timeout;
        self
    }

    /// What the pings, their timeouts and the resubscription back-off wait on
    /// (default: tokio's timer).
    pub fn sleeper(mut self, sleeper: SharedSleeper) -> Self {
        self.sleeper = Some(sleeper);
        self
    }

    /// Checks the settings, connects and subscribes to the invalidations.
    ///
    /// # Errors
    /// [`TierError::Config`] naming `url` when neither a URL nor a client was
    /// given (or the URL does not parse), or `ping_interval`/`ping_timeout`
    /// below 1 ms; [`TierError::Backend`] if Redis cannot be reached now.
    /// Once connected, lost connections are re-established by themselves.
    pub async fn connect(self) -> Result<RedisTier<K, V, C>, TierError> {
        for (field, d) in [
            ("ping_interval", self.ping_interval),
            ("ping_timeout", self.ping_timeout),
        ] {
            if d < Duration::from_millis(1) {
                return Err(TierError::Config(ConfigError::new(
                    field,
                    format!("must be at least 1 ms, got {d:?}"),
                )));
            }
        }
        let client = match (self.client, &self.url) {
            (Some(client), _) => client,
            (None, Some(url)) => redis::Client::open(url.as_str()).map_err(|e| {
                TierError::Config(ConfigError::new("url", format!("not a Redis URL: {e}")))
            })?,
            (None, None) => {
                return Err(TierError::Config(ConfigError::new(
                    "url",
                    "neither a URL nor a client was given",
                )));
            }
        };
        let connection = if let Some(connection) = self.connection {
            connection
        } else {
            // Few retries per reconnection: a caller waits at most its remote
            // timeout anyway, and an unreachable Redis at startup should fail
            // `connect` in about a second rather than after redis' default seven.
            // A failed reconnection is tried again by the next command.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(2));
            client
                .get_connection_manager_with_config(config)
                .await
                .map_err(backend)?
        };
        let sleeper = self.sleeper.unwrap_or_else(TokioSleeper::shared);
        let channel = format!("{}invalidations", self.prefix);
        // Subscribed before `connect` returns, so no invalidation published
        // after it can be missed.
        let pubsub =
            palisade_core::timeout(&*sleeper, self.ping_timeout, subscribe(&client, &channel))
                .await
                .map_err(|e| TierError::Backend(Box::new(e)))??;
        let (invalidations, _) = broadcast::channel(1024);
        let listener = tokio::spawn(listen(
            Subscriber {
                client,
                channel: channel.clone(),
                out: invalidations.clone(),
                sleeper,
                ping_interval: self.ping_interval,
                ping_timeout: self.ping_timeout,
            },
            pubsub,
        ));
        Ok(RedisTier {
            connection,
            prefix: self.prefix,
            channel,
            codec: self.codec,
            me: fastrand::u64(..u64::MAX),
            invalidations,
            _listener: Arc::new(Listener(listener)),
            _values: PhantomData,
        })
    }
}

impl<K, V, C> RedisTier<K, V, C>
where
    K: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
    C: Codec<V>,
{
    /// As [`connect`](RedisTier::connect), with values encoded by `codec`.
    pub async fn connect_with_codec(url: &str, prefix: &str, codec: C) -> Result<Self, TierError>
    where
        V: Serialize + DeserializeOwned,
    {
        RedisTier::<K, V, JsonCodec>::builder(prefix)
            .url(url)
            .codec(codec)
            .connect()
            .await
    }

    /// The value's key, `{prefix}{key as JSON}`, and the version's,
    /// `{prefix}#{key as JSON}` (no JSON starts with `#`).
    fn keys(&self, key: &K) -> Result<(String, String), TierError> {
        let json = serde_json::to_string(key).map_err(|e| TierError::Codec(Box::new(e)))?;
        Ok((
            format!("{}{json}", self.prefix),
            format!("{}#{json}", self.prefix),
        ))
    }

    /// `{prefix}#*`: the tier's generation, moved on by `remove_all` (no JSON starts with `*`).
    fn generation_key(&self) -> String {
        format!("{}#*", self.prefix)
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

/// What the subscription task needs.
struct Subscriber<K> {
    client: redis::Client,
    channel: String,
    out: broadcast::Sender<(u64, Invalidation<K>)>,
    sleeper: SharedSleeper,
    ping_interval: Duration,
    ping_timeout: Duration,
}

/// Forwards invalidations from Redis until the tier is dropped. A quiet
/// connection is pinged every `ping_interval`; when it closes, or a ping
/// gets no answer within `ping_timeout` (a frozen server or a silent network
/// cut keep the TCP connection open), every local cache is told to
/// resynchronise at once, the task subscribes again with backoff (each
/// attempt bounded by `ping_timeout`), and tells them again once it is back,
/// since messages published meanwhile are lost (Redis pub/sub keeps nothing).
async fn listen<K: DeserializeOwned>(sub: Subscriber<K>, pubsub: PubSub) {
    let mut pubsub = Some(pubsub);
    loop {
        if let Some(connected) = pubsub.take() {
            forward_until_dead(&sub, connected).await;
        }
        let _ = sub.out.send((u64::MAX, Invalidation::Resync));
        let backoff = resubscribe_backoff();
        let mut attempt = 1;
        pubsub = loop {
            sub.sleeper.sleep(backoff.delay(attempt)).await;
            let again = subscribe(&sub.client, &sub.channel);
            if let Ok(Ok(pubsub)) =
                palisade_core::timeout(&*sub.sleeper, sub.ping_timeout, again).await
            {
                break Some(pubsub);
            }
            attempt = attempt.saturating_add(1);
        };
        let _ = sub.out.send((u64::MAX, Invalidation::Resync));
    }
}

/// Forwards messages until the connection closes or stops answering pings.
async fn forward_until_dead<K: DeserializeOwned>(sub: &Subscriber<K>, pubsub: PubSub) {
    let (mut sink, mut stream) = pubsub.split();
    loop {
        let quiet = sub.sleeper.sleep(sub.ping_interval);
        match futures_util::future::select(stream.next(), quiet).await {
            futures_util::future::Either::Left((Some(message), _)) => {
                if let Some(parsed) = parse(message.get_payload_bytes()) {
                    let _ = sub.out.send(parsed);
                }
            }
            futures_util::future::Either::Left((None, _)) => return,
            futures_util::future::Either::Right(((), _)) => {
                // Any answer will do: in a subscribed RESP2 connection it is ["pong", ""].
                let ping = sink.ping::<redis::Value>();
                match palisade_core::timeout(&*sub.sleeper, sub.ping_timeout, ping).await {
                    Ok(Ok(_)) => {}
                    _ => return,
                }
            }
        }
    }
}

/// `{sender:016x}{key as JSON}` → `(sender, Key(key))`, `{sender:016x}!resync`
/// → `(sender, Resync)`; anything else is ignored.
fn parse<K: DeserializeOwned>(payload: &[u8]) -> Option<(u64, Invalidation<K>)> {
    let sender = std::str::from_utf8(payload.get(..16)?).ok()?;
    let sender = u64::from_str_radix(sender, 16).ok()?;
    if &payload[16..] == RESYNC.as_bytes() {
        return Some((sender, Invalidation::Resync));
    }
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

    async fn get_versioned(&self, key: &K) -> Result<(Option<V>, u64), TierError> {
        let (value_key, version_key) = self.keys(key)?;
        let mut connection = self.connection.clone();
        let (bytes, version, generation): (Option<Vec<u8>>, Option<u64>, Option<u64>) =
            redis::cmd("MGET")
                .arg(value_key)
                .arg(version_key)
                .arg(self.generation_key())
                .query_async(&mut connection)
                .await
                .map_err(backend)?;
        let value = bytes.map(|b| self.codec.decode(&b)).transpose()?;
        Ok((
            value,
            join_version(generation.unwrap_or(0), version.unwrap_or(0)),
        ))
    }

    async fn set(&self, key: &K, value: &V, ttl: Option<Duration>) -> Result<(), TierError> {
        let (value_key, version_key) = self.keys(key)?;
        let mut connection = self.connection.clone();
        SET_AND_MOVE_VERSION
            .key(value_key)
            .key(version_key)
            .arg(self.codec.encode(value)?)
            .arg(ttl_millis(ttl))
            .arg(VERSION_TTL_MILLIS)
            .invoke_async::<()>(&mut connection)
            .await
            .map_err(backend)
    }

    async fn set_if_absent(
        &self,
        key: &K,
        value: &V,
        ttl: Option<Duration>,
        version: u64,
    ) -> Result<bool, TierError> {
        let (value_key, version_key) = self.keys(key)?;
        let mut connection = self.connection.clone();
        let (generation, key_version) = split_version(version);
        let stored: i64 = SET_IF_ABSENT_AT_VERSION
            .key(value_key)
            .key(version_key)
            .key(self.generation_key())
            .arg(self.codec.encode(value)?)
            .arg(ttl_millis(ttl))
            .arg(key_version)
            .arg(generation)
            .invoke_async(&mut connection)
            .await
            .map_err(backend)?;
        Ok(stored == 1)
    }

    async fn remove(&self, key: &K) -> Result<(), TierError> {
        let (value_key, version_key) = self.keys(key)?;
        let mut connection = self.connection.clone();
        REMOVE_AND_MOVE_VERSION
            .key(value_key)
            .key(version_key)
            .arg(VERSION_TTL_MILLIS)
            .invoke_async::<()>(&mut connection)
            .await
            .map_err(backend)
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

    async fn remove_all(&self) -> Result<(), TierError> {
        // SCAN, not KEYS: the server goes on serving while the keys are found.
        // Not atomic: a value written meanwhile under the prefix may stay.
        let mut connection = self.connection.clone();
        // First, so that no load under way writes back once the sweep starts,
        // whether or not its key had a value to remove.
        connection
            .incr::<_, _, ()>(self.generation_key(), 1)
            .await
            .map_err(backend)?;
        let pattern = format!("{}*", glob_escape(&self.prefix));
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1_000)
                .query_async(&mut connection)
                .await
                .map_err(backend)?;
            let version_mark = format!("{}#", self.prefix);
            for value_key in keys
                .into_iter()
                .filter(|k| *k != self.channel && !k.starts_with(&version_mark))
            {
                // Moves the version on as `remove` does, so that a load under
                // way cannot write back what this removed.
                let version_key = format!("{version_mark}{}", &value_key[self.prefix.len()..]);
                REMOVE_AND_MOVE_VERSION
                    .key(value_key)
                    .key(version_key)
                    .arg(VERSION_TTL_MILLIS)
                    .invoke_async::<()>(&mut connection)
                    .await
                    .map_err(backend)?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn publish_resync(&self) -> Result<(), TierError> {
        let payload = format!("{:016x}{RESYNC}", self.me);
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

/// How long a key's version outlives its last change: a load that runs
/// longer than this and finds the version gone may write back a value that
/// was removed meanwhile (one day).
const VERSION_TTL_MILLIS: u64 = 24 * 3_600 * 1_000;

/// `KEYS[1]` value, `KEYS[2]` version; `ARGV` value, ttl ms (0: none), version ttl ms.
static SET_AND_MOVE_VERSION: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
",
    )
});

/// `KEYS[1]` value, `KEYS[2]` version, `KEYS[3]` the tier's generation;
/// `ARGV` value, ttl ms (0: none), the key's version (mod 2^32) and the
/// generation the load saw. Stores only if there is no value and neither has
/// moved since.
static SET_IF_ABSENT_AT_VERSION: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local version = tonumber(redis.call('GET', KEYS[2]) or '0') % 4294967296
if version ~= tonumber(ARGV[3]) then return 0 end
if (redis.call('GET', KEYS[3]) or '0') ~= ARGV[4] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
",
    )
});

/// `KEYS[1]` value, `KEYS[2]` version; `ARGV` version ttl ms.
static REMOVE_AND_MOVE_VERSION: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
",
    )
});

/// The version a load carries: the tier's generation in the high 32 bits,
/// the key's own version (mod 2^32) in the low ones.
fn join_version(generation: u64, key_version: u64) -> u64 {
    (generation << 32) | (key_version & 0xffff_ffff)
}

fn split_version(version: u64) -> (u64, u64) {
    (version >> 32, version & 0xffff_ffff)
}

/// A time to live in whole milliseconds for `PX`, at least 1; 0 for none.
fn ttl_millis(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |t| {
        u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
    })
}

/// The payload after the sender that asks for a resync: no key's JSON starts with `!`.
const RESYNC: &str = "!resync";

/// `prefix` with Redis glob characters escaped, for `SCAN MATCH`.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
