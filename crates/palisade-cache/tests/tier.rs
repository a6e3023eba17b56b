//! The remote tier: a conformance suite every [`RemoteTier`] passes (run
//! against [`InMemoryTier`] and, with feature `redis`, `RedisTier`), two
//! [`TieredCache`] instances over one shared tier, and how the cache copes
//! with a remote tier that stalls, loses its connections or is not there.
//!
//! Redis tests use `PALISADE_REDIS_URL`, by default the local server, and
//! say plainly that they were skipped when it cannot be reached (under
//! `PALISADE_REQUIRE_SERVICES=1` they fail instead). Each uses a key prefix
//! of its own, so they run in parallel, and deletes its keys when it ends,
//! passed or failed; the one that kills connections does it in a database of
//! its own.
#![cfg(feature = "tokio")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use palisade_cache::tier::{
    InMemoryTier, Invalidation, Invalidations, RemoteTier, TierError, TierStats, TieredCache,
};
use palisade_cache::{Cache, ManualClock};
use tokio::sync::{Notify, broadcast};
use tokio::time::{Instant, timeout};

// ---------------------------------------------------------------- helpers

/// A shared remote tier the suite runs against, and what only it can check.
trait Backend {
    type Tier: RemoteTier<String, String>;

    /// Another member of the one shared tier (another connection, for Redis).
    async fn member(&self) -> Self::Tier;

    /// Asserts that `keys`, just set through `member` with `ttl`, live
    /// exactly that long (`None`: for ever).
    async fn assert_ttl(&self, member: &Self::Tier, keys: &[&str], ttl: Option<Duration>);
}

/// `InMemoryTier` on a manual clock.
struct Memory {
    root: InMemoryTier<String, String>,
    clock: ManualClock,
}

impl Memory {
    #[expect(
        clippy::unused_async,
        reason = "the same signature as the Redis backend's"
    )]
    async fn new(_test: &str) -> Option<Self> {
        let clock = ManualClock::new();
        Some(Self {
            root: InMemoryTier::with_clock(clock.shared()),
            clock,
        })
    }
}

impl Backend for Memory {
    type Tier = InMemoryTier<String, String>;

    async fn member(&self) -> Self::Tier {
        self.root.connect()
    }

    async fn assert_ttl(&self, member: &Self::Tier, keys: &[&str], ttl: Option<Duration>) {
        let values = get_all(member, keys).await;
        assert!(values.iter().all(Option::is_some), "{keys:?} were not set");
        let Some(ttl) = ttl else {
            self.clock
                .advance(Duration::from_secs(10 * 365 * 24 * 3600));
            assert_eq!(get_all(member, keys).await, values, "no ttl, yet expired");
            return;
        };
        let almost = ttl
            .checked_sub(Duration::from_millis(1))
            .expect("ttl ≥ 1 ms");
        self.clock.advance(almost);
        assert_eq!(get_all(member, keys).await, values, "expired early");
        self.clock.advance(Duration::from_millis(1));
        assert_eq!(get_all(member, keys).await, vec![None; keys.len()]);
    }
}

async fn get_all(member: &impl RemoteTier<String, String>, keys: &[&str]) -> Vec<Option<String>> {
    let mut values = Vec::new();
    for key in keys {
        values.push(member.get(&(*key).to_owned()).await.unwrap());
    }
    values
}

fn s(text: &str) -> String {
    text.to_owned()
}

/// A loader that counts its runs (a cache drops the loaders it does not
/// need unpolled, so they do not count).
#[expect(clippy::unused_async, reason = "it counts when polled, not when made")]
async fn load(runs: &AtomicUsize, value: &str) -> String {
    runs.fetch_add(1, Ordering::SeqCst);
    value.to_owned()
}

fn local() -> Cache<String, String> {
    Cache::builder().max_capacity(100).build().unwrap()
}

/// A tiered cache over `tier` whose remote calls get `remote_timeout`.
fn tiered_over(
    tier: impl RemoteTier<String, String>,
    remote_timeout: Duration,
) -> TieredCache<String, String> {
    TieredCache::builder(local(), tier)
        .remote_timeout(remote_timeout)
        .build()
        .unwrap()
}

/// A tiered cache over a new member of `backend`, patient enough that a
/// loaded test machine never times a remote call out.
async fn tiered<B: Backend>(backend: &B) -> TieredCache<String, String> {
    tiered_over(backend.member().await, Duration::from_secs(2))
}

/// `(remote_hits, remote_misses, remote_errors, invalidations_received, resyncs)`
fn counts(stats: TierStats) -> (u64, u64, u64, u64, u64) {
    (
        stats.remote_hits,
        stats.remote_misses,
        stats.remote_errors,
        stats.invalidations_received,
        stats.resyncs,
    )
}

/// Polls `done` until it holds; fails after `limit`. For propagation only,
/// never to measure time.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The next invalidation on `stream`, which must come within 5 s.
async fn next(stream: &mut Invalidations<String>) -> Invalidation<String> {
    timeout(Duration::from_secs(5), stream.recv())
        .await
        .expect("an invalidation within 5 s")
        .expect("the tier is still there")
}

/// Asserts that nothing arrives on `stream` for 200 ms (a negative check).
async fn assert_silent(stream: &mut Invalidations<String>) {
    let got = timeout(Duration::from_millis(200), stream.recv()).await;
    assert!(got.is_err(), "unexpected {got:?}");
}

/// Runs each named check against the backend `$backend(test).await` (an
/// `Option<impl Backend>`; `None`: skipped, and the backend has said so).
macro_rules! for_backend {
    ($backend:path; $($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let test = concat!(module_path!(), "::", stringify!($check));
            if let Some(backend) = $backend(test).await {
                super::$check(&backend).await;
            }
        }
    )*};
}

macro_rules! suite {
    ($backend:path) => {
        for_backend!($backend;
            values_round_trip,
            a_missing_key_is_none,
            remove_removes_for_every_member,
            the_ttl_is_passed_on,
            an_invalidation_reaches_every_other_member_but_not_the_publisher,
            a_load_on_one_instance_is_read_remotely_by_the_other,
            an_insert_on_one_instance_drops_the_others_local_copy,
            an_invalidate_on_one_instance_drops_the_others_local_copy,
            invalidate_all_empties_this_instance_the_remote_tier_and_the_others,
            a_write_back_at_a_version_that_moved_is_refused,
            a_load_under_way_cannot_bring_back_what_another_instance_invalidated,
            the_remote_ttl_is_passed_to_the_tier,
        );
    };
}

// ------------------------------------------------ conformance: RemoteTier

async fn values_round_trip<B: Backend>(backend: &B) {
    let writer = backend.member().await;
    let reader = backend.member().await;
    let pairs = [
        ("plain", "value"),
        ("empty", ""),
        ("unicode", "ünïcødé ✓"),
        ("with \"quotes\" and spaces", "line\n\"two\"\t"),
    ];
    for (key, value) in pairs {
        writer.set(&s(key), &s(value), None).await.unwrap();
    }
    for (key, value) in pairs {
        assert_eq!(writer.get(&s(key)).await.unwrap().as_deref(), Some(value));
        assert_eq!(reader.get(&s(key)).await.unwrap().as_deref(), Some(value));
    }
    reader.set(&s("plain"), &s("replaced"), None).await.unwrap();
    assert_eq!(
        writer.get(&s("plain")).await.unwrap().as_deref(),
        Some("replaced")
    );
}

async fn a_missing_key_is_none<B: Backend>(backend: &B) {
    let member = backend.member().await;
    assert_eq!(member.get(&s("never set")).await.unwrap(), None);
    member.set(&s("set"), &s("v"), None).await.unwrap();
    assert_eq!(member.get(&s("never set")).await.unwrap(), None);
}

async fn remove_removes_for_every_member<B: Backend>(backend: &B) {
    let a = backend.member().await;
    let b = backend.member().await;
    a.set(&s("gone"), &s("v"), None).await.unwrap();
    a.set(&s("kept"), &s("w"), None).await.unwrap();
    b.remove(&s("gone")).await.unwrap();
    assert_eq!(a.get(&s("gone")).await.unwrap(), None);
    assert_eq!(b.get(&s("gone")).await.unwrap(), None);
    assert_eq!(a.get(&s("kept")).await.unwrap().as_deref(), Some("w"));
    // Removing what is not there is not an error.
    b.remove(&s("gone")).await.unwrap();
    b.remove(&s("never set")).await.unwrap();
}

async fn the_ttl_is_passed_on<B: Backend>(backend: &B) {
    let member = backend.member().await;
    let ttl = Duration::from_millis(1500);
    member.set(&s("short"), &s("a"), Some(ttl)).await.unwrap();
    member
        .set(&s("also short"), &s("b"), Some(ttl))
        .await
        .unwrap();
    member.set(&s("for ever"), &s("c"), None).await.unwrap();
    backend
        .assert_ttl(&member, &["short", "also short"], Some(ttl))
        .await;
    backend.assert_ttl(&member, &["for ever"], None).await;
}

async fn an_invalidation_reaches_every_other_member_but_not_the_publisher<B: Backend>(backend: &B) {
    let (a, b, c) = (
        backend.member().await,
        backend.member().await,
        backend.member().await,
    );
    let (mut from_a, mut from_b, mut from_c) = (a.subscribe(), b.subscribe(), c.subscribe());

    a.publish_invalidation(&s("k1")).await.unwrap();
    a.publish_invalidation(&s("k2")).await.unwrap();
    for stream in [&mut from_b, &mut from_c] {
        assert_eq!(next(stream).await, Invalidation::Key(s("k1")));
        assert_eq!(next(stream).await, Invalidation::Key(s("k2")));
    }
    assert_silent(&mut from_a).await;

    b.publish_invalidation(&s("k3")).await.unwrap();
    assert_eq!(next(&mut from_a).await, Invalidation::Key(s("k3")));
    assert_eq!(next(&mut from_c).await, Invalidation::Key(s("k3")));
    assert_silent(&mut from_b).await;
}

// ---------------------------------- two TieredCache instances, one tier

async fn a_load_on_one_instance_is_read_remotely_by_the_other<B: Backend>(backend: &B) {
    let (a, b) = (tiered(backend).await, tiered(backend).await);
    let (runs_a, runs_b) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let key = s("user:7");

    assert_eq!(a.get_with(key.clone(), load(&runs_a, "ada")).await, "ada");
    assert_eq!(
        b.get_with(key.clone(), load(&runs_b, "not ada")).await,
        "ada"
    );
    assert_eq!(runs_a.load(Ordering::SeqCst), 1);
    assert_eq!(runs_b.load(Ordering::SeqCst), 0);
    assert_eq!(counts(a.tier_stats()), (0, 1, 0, 0, 0));
    assert_eq!(counts(b.tier_stats()), (1, 0, 0, 0, 0));

    // Both now hold it locally: no remote call, no load.
    assert_eq!(b.local().get(&key).as_deref(), Some("ada"));
    assert_eq!(a.get_with(key.clone(), load(&runs_a, "x")).await, "ada");
    assert_eq!(b.get_with(key.clone(), load(&runs_b, "x")).await, "ada");
    assert_eq!(b.get(&key).await.as_deref(), Some("ada"));
    assert_eq!(
        runs_a.load(Ordering::SeqCst) + runs_b.load(Ordering::SeqCst),
        1
    );
    assert_eq!(counts(a.tier_stats()), (0, 1, 0, 0, 0));
    assert_eq!(counts(b.tier_stats()), (1, 0, 0, 0, 0));
}

/// A holds `key = old` after loading it, and B after reading it remotely.
async fn seed(a: &TieredCache<String, String>, b: &TieredCache<String, String>, key: &str) {
    let runs = AtomicUsize::new(0);
    assert_eq!(a.get_with(s(key), load(&runs, "old")).await, "old");
    assert_eq!(b.get_with(s(key), load(&runs, "not old")).await, "old");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(b.local().get(key).as_deref(), Some("old"));
}

async fn an_insert_on_one_instance_drops_the_others_local_copy<B: Backend>(backend: &B) {
    let (a, b) = (tiered(backend).await, tiered(backend).await);
    let key = s("price:42");
    seed(&a, &b, &key).await;

    a.insert(key.clone(), s("new")).await;
    wait_until("B drops its copy", Duration::from_secs(5), || {
        b.local().get(&key).is_none() && b.tier_stats().invalidations_received == 1
    })
    .await;
    assert_eq!(b.get(&key).await.as_deref(), Some("new"));
    assert_eq!(b.local().get(&key).as_deref(), Some("new"));
    assert_eq!(a.local().get(&key).as_deref(), Some("new"));
    assert_eq!(counts(a.tier_stats()), (0, 1, 0, 0, 0));
    assert_eq!(counts(b.tier_stats()), (2, 0, 0, 1, 0));
}

async fn an_invalidate_on_one_instance_drops_the_others_local_copy<B: Backend>(backend: &B) {
    let (a, b) = (tiered(backend).await, tiered(backend).await);
    let key = s("price:43");
    seed(&a, &b, &key).await;

    a.invalidate(&key).await;
    assert_eq!(a.local().get(&key), None);
    wait_until("B drops its copy", Duration::from_secs(5), || {
        b.local().get(&key).is_none() && b.tier_stats().invalidations_received == 1
    })
    .await;
    assert_eq!(b.get(&key).await, None, "removed from the remote tier too");
    let runs = AtomicUsize::new(0);
    assert_eq!(
        b.get_with(key.clone(), load(&runs, "reloaded")).await,
        "reloaded"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(counts(b.tier_stats()), (1, 2, 0, 1, 0));
    // B's load went to the remote tier, where A finds it.
    assert_eq!(a.get(&key).await.as_deref(), Some("reloaded"));
    assert_eq!(counts(a.tier_stats()), (1, 1, 0, 0, 0));
}

async fn invalidate_all_empties_this_instance_the_remote_tier_and_the_others<B: Backend>(
    backend: &B,
) {
    let (a, b) = (tiered(backend).await, tiered(backend).await);
    let keys = [s("price:1"), s("price:2")];
    for key in &keys {
        seed(&a, &b, key).await;
    }
    let other_tier = backend.member().await;
    a.invalidate_all().await;
    for key in &keys {
        assert_eq!(a.local().get(key), None);
    }
    wait_until("B resyncs", Duration::from_secs(5), || {
        b.tier_stats().resyncs == 1 && keys.iter().all(|k| b.local().get(k).is_none())
    })
    .await;
    assert_eq!(
        get_all(&other_tier, &["price:1", "price:2"]).await,
        [None, None],
        "removed from the remote tier"
    );
    let (sa, sb) = (a.tier_stats(), b.tier_stats());
    assert_eq!(
        (sa.invalidate_alls, sa.resyncs, sa.remote_errors),
        (1, 0, 0)
    );
    assert_eq!((sb.invalidate_alls, sb.resyncs), (0, 1));
}

/// The tier's part of the staleness bound, step by step: a write-back
/// carries the version its load saw, and a removal or a write on another
/// member moves the version on, so the write-back is refused.
async fn a_write_back_at_a_version_that_moved_is_refused<B: Backend>(backend: &B) {
    let (loader, writer) = (backend.member().await, backend.member().await);
    let key = s("price:7");
    let (value, seen) = loader.get_versioned(&key).await.unwrap();
    assert_eq!(value, None);
    // Another member removes the key while the load runs (nothing to remove: still a change).
    writer.remove(&key).await.unwrap();
    assert!(
        !loader
            .set_if_absent(&key, &s("old"), None, seen)
            .await
            .unwrap()
    );
    assert_eq!(
        writer.get(&key).await.unwrap(),
        None,
        "nothing brought back"
    );

    // At the version it now has, a write-back goes in; a write moves it on again.
    let (_, now) = loader.get_versioned(&key).await.unwrap();
    assert!(now > seen);
    assert!(
        loader
            .set_if_absent(&key, &s("loaded"), None, now)
            .await
            .unwrap()
    );
    writer.remove(&key).await.unwrap();
    writer.set(&key, &s("new"), None).await.unwrap();
    assert!(
        !loader
            .set_if_absent(&key, &s("stale"), None, now)
            .await
            .unwrap()
    );
    assert_eq!(writer.get(&key).await.unwrap().as_deref(), Some("new"));

    // `remove_all` refuses the write-back of a load for a key that never had
    // a value: it moves the whole tier on.
    let never = s("price:never");
    let (value, seen) = loader.get_versioned(&never).await.unwrap();
    assert_eq!(value, None);
    writer.remove_all().await.unwrap();
    assert!(
        !loader
            .set_if_absent(&never, &s("old"), None, seen)
            .await
            .unwrap()
    );
    assert_eq!(writer.get(&never).await.unwrap(), None);
    let (_, fresh) = loader.get_versioned(&never).await.unwrap();
    assert!(
        loader
            .set_if_absent(&never, &s("loaded"), None, fresh)
            .await
            .unwrap()
    );
}

/// Two instances and no fault: B's load read the source before A changed it
/// and invalidated the key; B's caller gets what it loaded, but the value is
/// not written back, so no instance reads it from the tier afterwards.
async fn a_load_under_way_cannot_bring_back_what_another_instance_invalidated<B: Backend>(
    backend: &B,
) {
    let (a, b) = (tiered(backend).await, tiered(backend).await);
    let key = s("price:9");
    let (read_source, go_on) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let loading = {
        let (b, key) = (b.clone(), key.clone());
        let (read_source, go_on) = (Arc::clone(&read_source), Arc::clone(&go_on));
        tokio::spawn(async move {
            b.get_with(key, async move {
                read_source.notify_one(); // the source read: the old value
                go_on.notified().await;
                s("old")
            })
            .await
        })
    };
    read_source.notified().await;
    a.invalidate(&key).await; // the source changed; A says so
    go_on.notify_one();
    assert_eq!(loading.await.unwrap(), "old");
    let third = tiered(backend).await;
    let runs = AtomicUsize::new(0);
    assert_eq!(
        third.get_with(key.clone(), load(&runs, "fresh")).await,
        "fresh",
        "the tier held nothing for the key"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    wait_until("B drops its local copy", Duration::from_secs(5), || {
        b.local().get(&key).is_none()
    })
    .await;
}

async fn the_remote_ttl_is_passed_to_the_tier<B: Backend>(backend: &B) {
    let ttl = Duration::from_millis(1500);
    let cache = TieredCache::builder(local(), backend.member().await)
        .remote_timeout(Duration::from_secs(2))
        .remote_ttl(ttl)
        .build()
        .unwrap();
    cache.insert(s("inserted"), s("a")).await;
    let runs = AtomicUsize::new(0);
    assert_eq!(cache.get_with(s("loaded"), load(&runs, "b")).await, "b");
    let member = backend.member().await;
    backend
        .assert_ttl(&member, &["inserted", "loaded"], Some(ttl))
        .await;
    assert_eq!(cache.tier_stats().remote_errors, 0);
}

mod in_memory {
    use super::*;

    suite!(Memory::new);
}

// ------------------------------------------- in-memory and fake tiers only

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_all_empties_every_members_local_cache() {
    let root = InMemoryTier::new();
    let (a, b) = (
        tiered_over(root.connect(), Duration::from_secs(2)),
        tiered_over(root.connect(), Duration::from_secs(2)),
    );
    seed(&a, &b, "k").await;
    b.local().insert(s("only local"), s("v"));

    root.resync_all();
    wait_until("both resynchronise", Duration::from_secs(5), || {
        a.tier_stats().resyncs == 1 && b.tier_stats().resyncs == 1
    })
    .await;
    for cache in [&a, &b] {
        assert_eq!(cache.local().get("k"), None);
        assert_eq!(cache.local().get("only local"), None);
    }
    // The remote tier still has what was written to it.
    assert_eq!(b.get(&s("k")).await.as_deref(), Some("old"));
    assert_eq!(counts(b.tier_stats()), (2, 0, 0, 0, 1));
}

/// Stops `GatedTier`'s next `get` (or `remove`, `remove_all`), once armed, until released.
#[derive(Default)]
struct Gate {
    armed: AtomicBool,
    entered: Notify,
    release: Notify,
}

/// An `InMemoryTier` member whose `get` can be held at a [`Gate`], and its
/// removals at another.
struct GatedTier {
    inner: InMemoryTier<String, String>,
    gate: Arc<Gate>,
    removes: Arc<Gate>,
}

impl GatedTier {
    /// Holds here, before removing anything, when `removes` is armed.
    async fn before_removing(&self) {
        if self.removes.armed.swap(false, Ordering::SeqCst) {
            self.removes.entered.notify_one();
            self.removes.release.notified().await;
        }
    }
}

#[async_trait]
impl RemoteTier<String, String> for GatedTier {
    async fn get(&self, key: &String) -> Result<Option<String>, TierError> {
        Ok(self.get_versioned(key).await?.0)
    }

    async fn get_versioned(&self, key: &String) -> Result<(Option<String>, u64), TierError> {
        // Read first: the value the caller gets is from before the gate.
        let value = self.inner.get_versioned(key).await;
        if self.gate.armed.swap(false, Ordering::SeqCst) {
            self.gate.entered.notify_one();
            self.gate.release.notified().await;
        }
        value
    }

    async fn set(
        &self,
        key: &String,
        value: &String,
        ttl: Option<Duration>,
    ) -> Result<(), TierError> {
        self.inner.set(key, value, ttl).await
    }

    async fn set_if_absent(
        &self,
        key: &String,
        value: &String,
        ttl: Option<Duration>,
        version: u64,
    ) -> Result<bool, TierError> {
        self.inner.set_if_absent(key, value, ttl, version).await
    }

    async fn remove(&self, key: &String) -> Result<(), TierError> {
        self.before_removing().await;
        self.inner.remove(key).await
    }

    async fn publish_invalidation(&self, key: &String) -> Result<(), TierError> {
        self.inner.publish_invalidation(key).await
    }

    async fn remove_all(&self) -> Result<(), TierError> {
        self.before_removing().await;
        self.inner.remove_all().await
    }

    async fn publish_resync(&self) -> Result<(), TierError> {
        self.inner.publish_resync().await
    }

    fn subscribe(&self) -> Invalidations<String> {
        self.inner.subscribe()
    }
}

/// What happens to `k` while B's remote read of it is held.
#[derive(Debug, Clone, Copy)]
enum Meanwhile {
    /// A writes `new`, and B applies A's invalidation.
    AInserts,
    /// `new` is written and its invalidation lost; then the tier asks for a
    /// resync, as after a reconnection, and B applies it.
    ALostWriteThenAResync,
}

/// B's remote read of `k` returns `old` but is held until `meanwhile` has
/// happened; returns B and what B's read returned.
async fn race_bs_remote_read<F, T>(
    meanwhile: Meanwhile,
    read: impl FnOnce(TieredCache<String, String>) -> F,
) -> (TieredCache<String, String>, T)
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let root = InMemoryTier::new();
    let gate = Arc::new(Gate::default());
    let a = tiered_over(root.connect(), Duration::from_secs(60));
    let b = tiered_over(
        GatedTier {
            inner: root.connect(),
            gate: Arc::clone(&gate),
            removes: Arc::default(),
        },
        Duration::from_secs(60),
    );
    let runs = AtomicUsize::new(0);
    assert_eq!(a.get_with(s("k"), load(&runs, "old")).await, "old");

    gate.armed.store(true, Ordering::SeqCst);
    let reader = tokio::spawn(read(b.clone()));
    gate.entered.notified().await;
    match meanwhile {
        Meanwhile::AInserts => a.insert(s("k"), s("new")).await,
        Meanwhile::ALostWriteThenAResync => {
            root.connect().set(&s("k"), &s("new"), None).await.unwrap();
            root.resync_all();
        }
    }
    wait_until("B applies it", Duration::from_secs(5), || {
        let stats = b.tier_stats();
        stats.invalidations_received + stats.resyncs == 1
    })
    .await;
    gate.release.notify_one();
    let read = timeout(Duration::from_secs(5), reader)
        .await
        .expect("B's read finishes")
        .unwrap();
    // The read began before the write, so "old" is a fair answer to it, but
    // B must not keep it: nothing would ever tell B to drop it again.
    assert_eq!(
        b.local().get("k"),
        None,
        "B kept a value invalidated meanwhile"
    );
    assert_eq!(b.get(&s("k")).await.as_deref(), Some("new"));
    (b, read)
}

async fn race_get_with(meanwhile: Meanwhile) {
    let (_, read) = race_bs_remote_read(meanwhile, |b| async move {
        b.get_with(s("k"), async { unreachable!("the remote tier has it") })
            .await
    })
    .await;
    assert_eq!(read, "old");
}

async fn race_get(meanwhile: Meanwhile) {
    let (_, read) = race_bs_remote_read(meanwhile, |b| async move { b.get(&s("k")).await }).await;
    assert_eq!(read.as_deref(), Some("old"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_during_get_withs_remote_read_keeps_the_read_value_out() {
    race_get_with(Meanwhile::AInserts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_during_get_withs_remote_read_keeps_the_read_value_out() {
    race_get_with(Meanwhile::ALostWriteThenAResync).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_during_gets_remote_read_keeps_the_read_value_out() {
    race_get(Meanwhile::AInserts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_during_gets_remote_read_keeps_the_read_value_out() {
    race_get(Meanwhile::ALostWriteThenAResync).await;
}

/// This instance's own `invalidate` (and `invalidate_all`) is held while
/// the remote tier removes the key. A read meanwhile may answer the old value
/// (the invalidation has not returned), but must not keep it: had the local
/// copy gone first, the read would find the old value still in the tier and
/// keep it locally, where nothing would ever drop it (an instance hears no
/// invalidation of its own).
#[tokio::test]
async fn a_read_while_this_instances_invalidation_waits_on_the_tier_does_not_keep_the_old_value() {
    for all in [false, true] {
        let removes = Arc::new(Gate::default());
        let cache = tiered_over(
            GatedTier {
                inner: InMemoryTier::new(),
                gate: Arc::default(),
                removes: Arc::clone(&removes),
            },
            Duration::from_secs(60),
        );
        let runs = AtomicUsize::new(0);
        assert_eq!(cache.get_with(s("k"), load(&runs, "old")).await, "old");

        removes.armed.store(true, Ordering::SeqCst);
        let invalidating = {
            let cache = cache.clone();
            tokio::spawn(async move {
                if all {
                    cache.invalidate_all().await;
                } else {
                    cache.invalidate(&s("k")).await;
                }
            })
        };
        removes.entered.notified().await;
        assert_eq!(cache.get_with(s("k"), load(&runs, "new")).await, "old");
        removes.release.notify_one();
        invalidating.await.unwrap();

        assert_eq!(cache.local().get("k"), None, "all: {all}");
        assert_eq!(cache.get_with(s("k"), load(&runs, "new")).await, "new");
        assert_eq!(runs.load(Ordering::SeqCst), 2, "all: {all}");
    }
}

/// A remote tier whose every call takes an hour.
struct StalledTier {
    invalidations: broadcast::Sender<(u64, Invalidation<String>)>,
}

impl StalledTier {
    fn new() -> Self {
        Self {
            invalidations: broadcast::channel(16).0,
        }
    }
}

const AN_HOUR: Duration = Duration::from_secs(3600);

#[async_trait]
impl RemoteTier<String, String> for StalledTier {
    async fn get(&self, _: &String) -> Result<Option<String>, TierError> {
        tokio::time::sleep(AN_HOUR).await;
        Ok(Some(s("from an hour later")))
    }

    async fn get_versioned(&self, _: &String) -> Result<(Option<String>, u64), TierError> {
        tokio::time::sleep(AN_HOUR).await;
        Ok((Some(s("from an hour later")), 0))
    }

    async fn set(&self, _: &String, _: &String, _: Option<Duration>) -> Result<(), TierError> {
        tokio::time::sleep(AN_HOUR).await;
        Ok(())
    }

    async fn set_if_absent(
        &self,
        _: &String,
        _: &String,
        _: Option<Duration>,
        _: u64,
    ) -> Result<bool, TierError> {
        tokio::time::sleep(AN_HOUR).await;
        Ok(true)
    }

    async fn remove(&self, _: &String) -> Result<(), TierError> {
        tokio::time::sleep(AN_HOUR).await;
        Ok(())
    }

    async fn publish_invalidation(&self, _: &String) -> Result<(), TierError> {
        tokio::time::sleep(AN_HOUR).await;
        Ok(())
    }

    async fn remove_all(&self) -> Result<(), TierError> {
        tokio::time::sleep(AN_HOUR).await;
        Ok(())
    }

    async fn publish_resync(&self) -> Result<(), TierError> {
        tokio::time::sleep(AN_HOUR).await;
        Ok(())
    }

    fn subscribe(&self) -> Invalidations<String> {
        Invalidations::new(self.invalidations.subscribe(), 0)
    }
}

#[tokio::test(start_paused = true)]
async fn a_stalled_tier_costs_each_remote_call_exactly_the_remote_timeout() {
    let cache = tiered_over(StalledTier::new(), Duration::from_millis(50));
    let runs = AtomicUsize::new(0);

    // A miss: remote get (50 ms), the loader, and no write-back: without
    // the key's version from the read, it could bring back a removed value.
    let start = Instant::now();
    assert_eq!(
        cache.get_with(s("k"), load(&runs, "loaded")).await,
        "loaded"
    );
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(counts(cache.tier_stats()), (0, 0, 1, 0, 0)); // a timeout is an error, not a miss

    // A local hit makes no remote call.
    let start = Instant::now();
    assert_eq!(cache.get_with(s("k"), load(&runs, "x")).await, "loaded");
    assert_eq!(cache.get(&s("k")).await.as_deref(), Some("loaded"));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // A failed load: remote get only; nothing to write.
    let start = Instant::now();
    let failed = cache
        .try_get_with(s("e"), async { Err::<String, _>("down") })
        .await;
    assert_eq!(failed.unwrap_err().as_ref(), &"down");
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(counts(cache.tier_stats()), (0, 0, 2, 0, 0));

    // insert and invalidate: a write and a publish each.
    let start = Instant::now();
    cache.insert(s("k"), s("inserted")).await;
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(cache.local().get("k").as_deref(), Some("inserted"));
    let start = Instant::now();
    cache.invalidate(&s("k")).await;
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(cache.local().get("k"), None);

    // get on a local miss: one remote get, then nothing.
    let start = Instant::now();
    assert_eq!(cache.get(&s("k")).await, None);
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(counts(cache.tier_stats()), (0, 0, 7, 0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_load_overtaken_by_a_write_of_this_instance_is_not_written_back() {
    for write in ["invalidate", "insert"] {
        let tier = InMemoryTier::<String, String>::new();
        let remote = tier.connect();
        let cache = tiered_over(tier, Duration::from_millis(50));
        let loading = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_with(s("k"), async {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        s("read before the write")
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        if write == "insert" {
            cache.insert(s("k"), s("new")).await;
        } else {
            cache.invalidate(&s("k")).await;
        }
        assert_eq!(loading.await.unwrap(), "read before the write");
        let expected = (write == "insert").then(|| s("new"));
        assert_eq!(
            remote.get(&s("k")).await.unwrap(),
            expected,
            "after {write}"
        );
        assert_eq!(cache.local().get("k"), expected, "after {write}");
    }
}

#[tokio::test]
async fn a_loaded_value_does_not_overwrite_a_value_another_instance_wrote() {
    let tier = InMemoryTier::<String, String>::new();
    let other = tier.connect();
    assert!(
        other
            .set_if_absent(&s("k"), &s("first"), None, 0)
            .await
            .unwrap()
    );
    assert!(
        !other
            .set_if_absent(&s("k"), &s("second"), None, 0)
            .await
            .unwrap()
    );
    assert_eq!(other.get(&s("k")).await.unwrap().as_deref(), Some("first"));
}

// ------------------------------------------------------------------ Redis

#[cfg(feature = "redis")]
mod redis_tier {
    use super::*;
    use palisade_cache::tier::RedisTier;
    use palisade_test_support::{redis_url, test_name};
    use redis::aio::MultiplexedConnection;

    /// The database of `url` (`redis://host:port/db?query`; 0 without a path).
    fn database(url: &str) -> (String, u64, Option<String>) {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, Some(query.to_owned())),
            None => (url, None),
        };
        let host_at = base.find("://").map_or(0, |i| i + 3);
        match base[host_at..].find('/') {
            Some(slash) => {
                let (server, path) = base.split_at(host_at + slash);
                let db = path[1..].parse().unwrap_or(0);
                (server.to_owned(), db, query)
            }
            None => (base.to_owned(), 0, query),
        }
    }

    /// `url` with a database of its own for the test that kills connections:
    /// 9, or 10 if the other tests already use 9.
    fn isolated_database_url(url: &str) -> (String, u64) {
        let (server, db, query) = database(url);
        let isolated = if db == 9 { 10 } else { 9 };
        let query = query.map_or_else(String::new, |query| format!("?{query}"));
        (format!("{server}/{isolated}{query}"), isolated)
    }

    #[test]
    fn the_isolated_database_url_replaces_or_adds_the_path() {
        assert_eq!(
            isolated_database_url("redis://127.0.0.1:6379"),
            (s("redis://127.0.0.1:6379/9"), 9)
        );
        assert_eq!(
            isolated_database_url("redis://127.0.0.1:6379/"),
            (s("redis://127.0.0.1:6379/9"), 9)
        );
        assert_eq!(
            isolated_database_url("redis://:pw@host:1/3?protocol=resp3"),
            (s("redis://:pw@host:1/9?protocol=resp3"), 9)
        );
        assert_eq!(
            isolated_database_url("redis://host/9"),
            (s("redis://host/10"), 10)
        );
    }

    /// One test's share of a Redis server: a URL, a key prefix of its own,
    /// and an admin connection. Deletes its keys when dropped.
    struct RedisBackend {
        url: String,
        prefix: String,
        admin: MultiplexedConnection,
    }

    impl RedisBackend {
        async fn on(url: String) -> Self {
            let prefix = format!("{}:", palisade_test_support::unique_name("palisade_test"));
            let admin = redis::Client::open(url.as_str())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .expect("connect to Redis");
            Self { url, prefix, admin }
        }

        /// A share of the server of `PALISADE_REDIS_URL` (by default the
        /// local one), or `None` when that cannot be reached: `test` is then
        /// skipped, and the output says so (under
        /// `PALISADE_REQUIRE_SERVICES=1` it fails instead).
        async fn new(test: &str) -> Option<Self> {
            Some(Self::on(redis_url(test)?).await)
        }

        /// The Redis key of `key`: `{prefix}{key as JSON}`.
        fn redis_key(&self, key: &str) -> String {
            format!("{}\"{key}\"", self.prefix)
        }

        async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
            cmd.query_async(&mut self.admin.clone()).await.unwrap()
        }
    }

    impl Drop for RedisBackend {
        fn drop(&mut self) {
            // Best effort, and blocking: the runtime may be going away.
            let Ok(mut connection) =
                redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection())
            else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.prefix))
                .query(&mut connection)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut connection);
            }
        }
    }

    impl Backend for RedisBackend {
        type Tier = RedisTier<String, String>;

        async fn member(&self) -> Self::Tier {
            RedisTier::connect(&self.url, &self.prefix)
                .await
                .expect("connect to Redis")
        }

        async fn assert_ttl(&self, member: &Self::Tier, keys: &[&str], ttl: Option<Duration>) {
            let values = get_all(member, keys).await;
            assert!(values.iter().all(Option::is_some), "{keys:?} were not set");
            for key in keys {
                let pttl: i64 = self
                    .query(redis::cmd("PTTL").arg(self.redis_key(key)))
                    .await;
                match ttl {
                    Some(ttl) => assert!(
                        0 < pttl && pttl <= ttl.as_millis() as i64,
                        "PTTL of {key:?} is {pttl} ms, set with {ttl:?}"
                    ),
                    None => assert_eq!(pttl, -1, "{key:?} should not expire"),
                }
            }
        }
    }

    suite!(RedisBackend::new);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn values_are_json_under_the_prefixed_key_and_payloads_from_elsewhere_are_read() {
        let Some(backend) = RedisBackend::new(test_name!()).await else {
            return;
        };
        let member = backend.member().await;
        let mut stream = member.subscribe();

        member.set(&s("user:7"), &s("ada"), None).await.unwrap();
        let raw: Option<String> = backend
            .query(redis::cmd("GET").arg(backend.redis_key("user:7")))
            .await;
        assert_eq!(raw.as_deref(), Some("\"ada\""));

        let _: () = backend
            .query(
                redis::cmd("SET")
                    .arg(backend.redis_key("by hand"))
                    .arg("\"from redis-cli\""),
            )
            .await;
        assert_eq!(
            member.get(&s("by hand")).await.unwrap().as_deref(),
            Some("from redis-cli")
        );
        let _: () = backend
            .query(
                redis::cmd("SET")
                    .arg(backend.redis_key("bad"))
                    .arg("not json"),
            )
            .await;
        assert!(matches!(
            member.get(&s("bad")).await,
            Err(TierError::Codec(_))
        ));

        // Garbage on the channel is skipped; another sender's key arrives.
        let channel = format!("{}invalidations", backend.prefix);
        for payload in ["garbage", &format!("{:016x}\"user:7\"", 0xABC)] {
            let _: i64 = backend
                .query(redis::cmd("PUBLISH").arg(&channel).arg(payload))
                .await;
        }
        assert_eq!(next(&mut stream).await, Invalidation::Key(s("user:7")));
        assert_silent(&mut stream).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tier_on_a_port_where_nothing_listens_cannot_be_connected() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started = std::time::Instant::now();
        // RedisTier asks for 2 retries (redis' default is 6, about 7 s):
        // 100 ms then 200 ms of backoff, with up to 100 % jitter, well
        // under 5 s. This bound is not a timing rule, only a guard against
        // hanging; it fails if the retry count goes back to the default.
        let connected = timeout(
            Duration::from_secs(5),
            RedisTier::<String, String>::connect(
                &format!("redis://127.0.0.1:{port}"),
                "palisade_test_unreachable:",
            ),
        )
        .await
        .expect("connect gives up within 5 s");
        eprintln!(
            "connect to a closed port failed after {:?}",
            started.elapsed()
        );
        assert!(
            matches!(connected, Err(TierError::Backend(_))),
            "{connected:?}"
        );
    }

    /// A client in `CLIENT LIST`: its id, database and subscription count.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Client {
        id: u64,
        db: u64,
        subscriptions: u64,
    }

    async fn clients(backend: &RedisBackend) -> Vec<Client> {
        let list: String = backend.query(redis::cmd("CLIENT").arg("LIST")).await;
        list.lines()
            .map(|line| {
                let field = |name: &str| {
                    line.split_whitespace()
                        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                        .and_then(|value| value.parse().ok())
                        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                };
                Client {
                    id: field("id"),
                    db: field("db"),
                    subscriptions: field("sub"),
                }
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cache_keeps_serving_while_its_connections_are_killed_and_then_recovers() {
        let Some(url) = redis_url(test_name!()) else {
            return;
        };
        let (url, db) = isolated_database_url(&url);
        let backend = RedisBackend::on(url).await;
        let admin_id: u64 = backend.query(redis::cmd("CLIENT").arg("ID")).await;
        let before: Vec<u64> = clients(&backend).await.iter().map(|c| c.id).collect();

        let (a, b) = (
            tiered_over(backend.member().await, Duration::from_secs(1)),
            tiered_over(backend.member().await, Duration::from_secs(1)),
        );
        seed(&a, &b, "warm").await;

        // The tiers' connections: a command connection and a subscriber each.
        let ours: Vec<Client> = clients(&backend)
            .await
            .into_iter()
            .filter(|c| c.db == db && c.id != admin_id && !before.contains(&c.id))
            .collect();
        eprintln!("killing {ours:?}");
        assert_eq!(ours.len(), 4, "{ours:?}");
        assert_eq!(ours.iter().filter(|c| c.subscriptions == 1).count(), 2);
        assert_eq!(ours.iter().filter(|c| c.subscriptions == 0).count(), 2);
        for client in &ours {
            let killed: i64 = backend
                .query(redis::cmd("CLIENT").arg("KILL").arg("ID").arg(client.id))
                .await;
            assert_eq!(killed, 1);
        }

        // Serving goes on: the loader's value, never an error, never a hang.
        let runs = AtomicUsize::new(0);
        for (cache, key) in [(&a, "after kill on A"), (&b, "after kill on B")] {
            let loaded = timeout(
                Duration::from_secs(5),
                cache.try_get_with(s(key), async { Ok::<_, ()>(load(&runs, key).await) }),
            )
            .await
            .expect("no hang");
            assert_eq!(loaded.unwrap(), key);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        eprintln!(
            "right after the kill: A {:?}, B {:?}",
            a.tier_stats(),
            b.tier_stats()
        );

        let deadline = Instant::now() + Duration::from_secs(10);
        let mut round = 0;

        // Values written by A are found remotely by B again.
        loop {
            round += 1;
            let key = format!("shared {round}");
            let hits = b.tier_stats().remote_hits;
            let value = a.get_with(key.clone(), load(&runs, "shared")).await;
            if b.get(&key).await.as_deref() == Some(value.as_str()) {
                assert_eq!(b.tier_stats().remote_hits, hits + 1);
                break;
            }
            assert!(Instant::now() < deadline, "B never read A's values again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Both subscribers found their subscription dead and asked for a
        // resynchronisation. (At least one each: on a busy machine one tier may
        // already be back, with its second, before the other has its first;
        // the exact count is checked once both have recovered, below.)
        wait_until("both resubscribe", deadline - Instant::now(), || {
            a.tier_stats().resyncs >= 1 && b.tier_stats().resyncs >= 1
        })
        .await;

        // A's invalidations reach B again.
        loop {
            round += 1;
            let key = format!("invalidated {round}");
            let _ = a.get_with(key.clone(), load(&runs, "old")).await;
            if b.get(&key).await.as_deref() == Some("old") {
                let received = b.tier_stats().invalidations_received;
                a.insert(key.clone(), s("new")).await;
                let reached = timeout(Duration::from_secs(1), async {
                    while b.local().get(&key).is_some()
                        || b.tier_stats().invalidations_received != received + 1
                    {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
                .await;
                if reached.is_ok() {
                    assert_eq!(b.get(&key).await.as_deref(), Some("new"));
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "A's invalidations never reached B again"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!(
            "recovered after {round} rounds: A {:?}, B {:?}",
            a.tier_stats(),
            b.tier_stats()
        );
        // Once when the subscription was found dead, once when it was back.
        assert_eq!(a.tier_stats().resyncs, 2);
        assert_eq!(b.tier_stats().resyncs, 2);
    }

    /// A frozen Redis (`SIGSTOP`: the connections stay open, nothing
    /// answers) is found out by the subscription's ping: within
    /// `ping_interval + ping_timeout` every local cache is told to
    /// resynchronise, and told again when the server is back. The pings run
    /// on a manual clock, so the bound is checked without waiting for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_redis_is_detected_by_ping_and_the_caches_resync() {
        let Some(server) =
            palisade_test_support::OwnRedis::start(palisade_test_support::test_name!())
        else {
            return;
        };
        let clock = ManualClock::new();
        let tier: RedisTier<String, String> = RedisTier::builder("frozen:")
            .url(server.url())
            .sleeper(clock.sleeper())
            .ping_interval(Duration::from_secs(1))
            .ping_timeout(Duration::from_secs(1))
            .connect()
            .await
            .unwrap();
        let mut heard = tier.subscribe();
        // The listener waits out a quiet second, pings, and is answered.
        clock.advance(Duration::from_secs(1));
        assert_silent(&mut heard).await;

        server.freeze();
        clock.advance(Duration::from_secs(1)); // the next ping goes out, unanswered
        assert_silent(&mut heard).await;
        clock.advance(Duration::from_secs(1)); // and times out: 2 s after the freeze at most
        assert_eq!(next(&mut heard).await, Invalidation::Resync);

        server.thaw();
        // Resubscribing backs off from 20 ms; the clock moves it along.
        let back = async {
            loop {
                clock.advance(Duration::from_millis(100));
                if let Ok(Some(i)) = timeout(Duration::from_millis(50), heard.recv()).await {
                    return i;
                }
            }
        };
        assert_eq!(
            timeout(Duration::from_secs(10), back)
                .await
                .expect("resubscribed"),
            Invalidation::Resync
        );
    }

    #[tokio::test]
    async fn bad_redis_tier_settings_name_the_builder_method() {
        let field = |r: Result<RedisTier<String, String>, TierError>| match r {
            Err(TierError::Config(e)) => e.field(),
            other => panic!("not a configuration error: {other:?}"),
        };
        assert_eq!(field(RedisTier::builder("p:").connect().await), "url");
        assert_eq!(
            field(RedisTier::builder("p:").url("not a url").connect().await),
            "url"
        );
        assert_eq!(
            field(
                RedisTier::builder("p:")
                    .url("redis://127.0.0.1:1")
                    .ping_timeout(Duration::ZERO)
                    .connect()
                    .await
            ),
            "ping_timeout"
        );
    }
}

/// TLS to Redis (feature `redis-tls`), against a server of the test's own
/// that listens with TLS only, with certificates made for it.
#[cfg(feature = "redis-tls")]
mod redis_tls {
    use super::*;
    use palisade_cache::tier::RedisTier;

    fn client(url: &str, ca: &std::path::Path) -> redis::Client {
        redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(ca).expect("the CA's certificate")),
            },
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tier_over_tls_verifies_the_server_and_works() {
        let dir =
            std::env::temp_dir().join(palisade_test_support::unique_name("palisade_redis_tls"));
        std::fs::create_dir_all(&dir).unwrap();
        let Some((server, certs)) =
            palisade_test_support::OwnRedis::start_tls(palisade_test_support::test_name!(), &dir)
        else {
            return;
        };
        let (a, b): (RedisTier<String, String>, RedisTier<String, String>) = (
            RedisTier::builder("tls:")
                .client(client(&server.url(), &certs.ca))
                .connect()
                .await
                .expect("a TLS connection to a server the tier trusts"),
            RedisTier::builder("tls:")
                .client(client(&server.url(), &certs.ca))
                .connect()
                .await
                .unwrap(),
        );
        let mut heard = b.subscribe();
        a.set(&s("k"), &s("v"), None).await.unwrap();
        assert_eq!(b.get(&s("k")).await.unwrap().as_deref(), Some("v"));
        a.publish_invalidation(&s("k")).await.unwrap();
        assert_eq!(next(&mut heard).await, Invalidation::Key(s("k")));

        // Signed by another authority: refused.
        let other = dir.join("other");
        std::fs::create_dir_all(&other).unwrap();
        let stranger = palisade_test_support::TestCerts::make(&other);
        let refused = RedisTier::<String, String>::builder("tls:")
            .client(client(&server.url(), &stranger.ca))
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(refused, TierError::Backend(_)), "{refused}");
        assert!(
            refused.to_string().contains("invalid peer certificate"),
            "{refused}"
        );
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
