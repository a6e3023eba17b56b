//! The query side: typed queries answered from the read models, optionally
//! cached (feature `cache`) in this process or in a tiered cache shared by
//! every instance, and invalidated by the projections that change the views.
//!
//! ```text
//! ask(q) ─▶ local hit ─▶ the view
//!             │ miss: one load per query at a time (try_get_with)
//!             ▼
//!           tiered only: the remote tier's value, kept locally
//!             │ miss
//!             ▼
//!           handler.handle(q, version) ─▶ read model ─▶ stored (tiered: and
//!                                          written back), unless invalidated meanwhile
//!
//! projection commits event e ─▶ drop keys(e) ─▶ the runner reports e handled
//!     local:  from the cache
//!     tiered: from the remote tier, then the local cache, then tell every other instance
//! switch_version(v2) ─▶ drop everything (tiered: here, in the tier, and resync the others)
//! ```
//!
//! Why no reader caches a value from before a commit.
//!
//! **A local cache.** The runner drops a query's answer only after the
//! projection's transaction has committed, through
//! [`Cache::invalidate`](palisade_cache::Cache::invalidate), which also marks
//! the load of that query under way, if any, as superseded, so its value is
//! handed to its callers but not stored. A load that read the old value
//! either finished before the drop (its entry is dropped) or was under way
//! (it is not stored); a load that starts after the drop reads after the
//! commit. The version a load reads is taken inside the load, so
//! [`Queries::switch_version`], which sets the version and then drops
//! everything, supersedes every load of the old version the same way.
//!
//! **A tiered cache, on the instance whose runner committed.**
//! [`TieredCache::invalidate`](palisade_cache::tier::TieredCache::invalidate)
//! removes the remote copy (moving the key's version on), then drops the
//! local one (superseding a load under way here), then publishes the
//! invalidation, and [`Invalidation::applied`] awaits it before the runner
//! reports the event handled. A load on any instance that read the key's
//! version before the removal cannot write its value back (the version
//! moved; a write-back that got in first is removed by it); a load here that
//! read the old value from the tier before the removal is superseded by the
//! local drop after it (the order matters: dropping locally first would let
//! a load that starts in between read the old value back from the tier and
//! keep it, and this instance hears no invalidation of its own); a load that
//! starts after the local drop finds nothing in the tier and reads the read
//! model after the commit.
//!
//! **The other instances.** Each drops its local copy and supersedes its
//! load under way when the published invalidation reaches its listener,
//! after the runner reported the event: until then it may answer the old
//! value, and keep one loaded meanwhile until then. A load it starts after
//! the removal finds nothing in the tier. What failures of the tier do to
//! this is on [`Queries`].

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;

use palisade_core::ConfigError;
use palisade_event_store::RecordedEvent;
use parking_lot::RwLock;

/// Answers one kind of query from a read model.
///
/// The query is the cache's key (with a cache), so it is small, hashable and
/// cloneable; the view is what a caller gets (an `Arc` makes a large one
/// cheap to clone).
pub trait QueryHandler: Send + Sync + 'static {
    /// What a caller asks (`BalanceOf("alice")`).
    type Query: Hash + Eq + Clone + Send + Sync + 'static;
    /// The answer.
    type View: Clone + Send + Sync + 'static;
    /// Why a query could not be answered.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Reads the answer from the read model of the version `ctx` names.
    fn handle(
        &self,
        query: &Self::Query,
        ctx: &QueryContext,
    ) -> impl Future<Output = Result<Self::View, Self::Error>> + Send;
}

/// What a query handler knows besides the query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct QueryContext {
    version: Option<Arc<str>>,
}

impl QueryContext {
    /// The version of the view that serves reads: the name of the projection
    /// whose tables to read, when the queries are versioned
    /// ([`QueriesBuilder::version`], [`Queries::switch_version`]); `None` otherwise.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
}

/// Builds [`Queries`]: `Queries::builder(handler)….build()`.
#[must_use]
pub struct QueriesBuilder<H: QueryHandler> {
    handler: H,
    version: Option<Arc<str>>,
    #[cfg(feature = "cache")]
    cache: Option<palisade_cache::Cache<H::Query, H::View>>,
    #[cfg(feature = "cache")]
    tiered_cache: Option<palisade_cache::tier::TieredCache<H::Query, H::View>>,
}

impl<H: QueryHandler> std::fmt::Debug for QueriesBuilder<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueriesBuilder")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl<H: QueryHandler> QueriesBuilder<H> {
    /// The version of the view that serves reads at first: the name of the
    /// projection (as given to its projector) whose tables the handler reads,
    /// handed to it in [`QueryContext::version`]. A versioned view is dropped
    /// from the cache only by the events of the projection of that name, and
    /// wholly by [`Queries::switch_version`]. Default: not versioned (every
    /// projection it is attached to drops answers); not empty.
    pub fn version(mut self, projection: impl Into<Arc<str>>) -> Self {
        self.version = Some(projection.into());
        self
    }

    /// Keeps answers in `cache`, in this process (feature `cache`), one load
    /// per query at a time, each dropped when a projection applies an event
    /// that changes it (see [`Queries::invalidation`]). The cache's own
    /// settings (capacity, time to live, negative caching) hold. Give this or
    /// [`tiered_cache`](Self::tiered_cache), not both. Default: no cache,
    /// every query reads the read model.
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    pub fn cache(mut self, cache: palisade_cache::Cache<H::Query, H::View>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Keeps answers in `cache`, a local cache in front of a remote tier
    /// (Redis, or an `InMemoryTier`) that every instance of the service
    /// shares (feature `cache`). `ask` reads the local cache, then the tier,
    /// then the handler (one load per query per instance at a time) and
    /// writes a loaded answer to the tier; a projection's event drops the
    /// answer in the tier and here and tells every other instance before
    /// the runner reports the event handled. What each instance can see
    /// meanwhile, and after a failed remote call, is on
    /// [`Queries`](Queries#what-a-reader-can-see-after-a-commit). The
    /// tiered cache's own settings (`remote_timeout`, `remote_ttl`, the local
    /// cache's) hold. Give this or [`cache`](Self::cache), not both.
    /// Default: no cache.
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    pub fn tiered_cache(
        mut self,
        cache: palisade_cache::tier::TieredCache<H::Query, H::View>,
    ) -> Self {
        self.tiered_cache = Some(cache);
        self
    }

    /// Checks the settings and builds.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `version` when it is empty, or
    /// `tiered_cache` when [`cache`](Self::cache) was given too.
    pub fn build(self) -> Result<Queries<H>, ConfigError> {
        check_version("version", self.version.as_deref())?;
        #[cfg(feature = "cache")]
        let cache = match (self.cache, self.tiered_cache) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "tiered_cache",
                    "a cache was given by `cache` too: give `cache` (this process) or `tiered_cache` (every instance), not both",
                ));
            }
            (Some(local), None) => Some(Store::Local(local)),
            (None, Some(tiered)) => Some(Store::Tiered(tiered)),
            (None, None) => None,
        };
        Ok(Queries {
            inner: Arc::new(Inner {
                handler: self.handler,
                version: RwLock::new(self.version),
                #[cfg(feature = "cache")]
                cache,
            }),
        })
    }
}

fn check_version(method: &'static str, version: Option<&str>) -> Result<(), ConfigError> {
    if version == Some("") {
        return Err(ConfigError::new(
            method,
            "the version must name a projection, got \"\"",
        ));
    }
    Ok(())
}

/// Where the answers are kept.
#[cfg(feature = "cache")]
enum Store<K, V> {
    /// In this process.
    Local(palisade_cache::Cache<K, V>),
    /// Here and in a remote tier every instance shares.
    Tiered(palisade_cache::tier::TieredCache<K, V>),
}

struct Inner<H: QueryHandler> {
    handler: H,
    version: RwLock<Option<Arc<str>>>,
    #[cfg(feature = "cache")]
    cache: Option<Store<H::Query, H::View>>,
}

/// Typed queries over a read model through a [`QueryHandler`], optionally
/// cached. Cloning is cheap; clones share the handler, the cache and the version.
///
/// # What a reader can see after a commit
///
/// A projection's event drops the answers it makes stale after its
/// transaction commits and before the runner reports the event handled
/// ([`Event::ProjectionHandled`](crate::Event::ProjectionHandled),
/// [`ProjectionRunner::status`](crate::ProjectionRunner::status),
/// [`wait_caught_up`](crate::ProjectionRunner::wait_caught_up)).
///
/// - **A local cache** ([`QueriesBuilder::cache`]): once the event is
///   reported handled, this process holds no answer from before the commit,
///   and no load that read the old value stores it (its callers get it: they
///   asked before the commit was done). A projection running in another
///   process does not reach this cache.
/// - **A tiered cache** ([`QueriesBuilder::tiered_cache`]), on the instance
///   whose runner applied the event: the same, for this instance's local
///   cache and for the remote tier; and every other instance has been sent
///   the invalidation.
/// - **The other instances** of a tiered cache: each drops its copy, and
///   keeps nothing from a load under way, when the invalidation reaches it
///   (Redis pub/sub latency after the event was reported handled). Until
///   then a reader there may get the old answer; after, none. There is no
///   ordering across instances beyond this.
/// - **When the remote tier fails.** Each remote call is bounded by the
///   tier's `remote_timeout`; one that fails or times out is counted in
///   [`TierStats::remote_errors`](palisade_cache::tier::TierStats::remote_errors),
///   is not retried, and the runner goes on. A failed removal leaves the old
///   answer in the tier until its `remote_ttl` ends, and any instance (this
///   one too) may read it back on a local miss and keep it for its local
///   `time_to_live`; a failed publish leaves the other instances' copies
///   until their local `time_to_live` (an instance whose subscription broke
///   empties its local cache when it is back). So when `remote_errors`
///   rises, answers may be stale for up to `remote_ttl` plus the local
///   `time_to_live`, and for ever without them: give the tier a
///   `remote_ttl` (minutes: the longest a view may stay stale after a Redis
///   fault), the local cache a shorter `time_to_live`, and alert on
///   `remote_errors`. While Redis does not answer, each event costs the
///   projection up to two remote timeouts per query it drops (100 ms with
///   the default 50 ms).
/// - **Versions** with a tiered cache are per instance: see
///   [`switch_version`](Self::switch_version).
pub struct Queries<H: QueryHandler> {
    inner: Arc<Inner<H>>,
}

impl<H: QueryHandler> Clone for Queries<H> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<H: QueryHandler> std::fmt::Debug for Queries<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queries")
            .field("version", &*self.inner.version.read())
            .finish_non_exhaustive()
    }
}

impl<H: QueryHandler> Queries<H> {
    /// A builder over `handler`.
    pub fn builder(handler: H) -> QueriesBuilder<H> {
        QueriesBuilder {
            handler,
            version: None,
            #[cfg(feature = "cache")]
            cache: None,
            #[cfg(feature = "cache")]
            tiered_cache: None,
        }
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.inner.handler
    }

    /// The version that serves reads (`None` when not versioned).
    pub fn version(&self) -> Option<Arc<str>> {
        self.inner.version.read().clone()
    }

    fn context(&self) -> QueryContext {
        QueryContext {
            version: self.version(),
        }
    }

    /// Answers `query`: from the cache when it holds the answer, otherwise
    /// from the handler (one load per query at a time: callers asking the
    /// same query meanwhile get the same answer), keeping the answer unless a
    /// projection changed it during the load.
    ///
    /// # Errors
    /// The handler's error, shared by every caller waiting on that load (not
    /// cached, unless the cache keeps errors: `negative_ttl`).
    pub async fn ask(&self, query: H::Query) -> Result<H::View, Arc<H::Error>> {
        #[cfg(feature = "cache")]
        if let Some(store) = &self.inner.cache {
            let load = async {
                // Inside the load: a version switch during it supersedes it.
                let ctx = self.context();
                self.inner.handler.handle(&query, &ctx).await
            };
            return match store {
                Store::Local(cache) => cache.try_get_with(query.clone(), load).await,
                Store::Tiered(cache) => cache.try_get_with(query.clone(), load).await,
            };
        }
        let ctx = self.context();
        self.inner
            .handler
            .handle(&query, &ctx)
            .await
            .map_err(Arc::new)
    }

    /// Drops the cached answer to `query`, if any; a load of it under way is
    /// not stored. With a tiered cache, from the remote tier too, and every
    /// other instance is told (see [`Queries`](Queries#what-a-reader-can-see-after-a-commit));
    /// with a local one, it finishes on its first poll.
    #[cfg_attr(not(feature = "cache"), allow(clippy::unused_async))]
    pub async fn invalidate(&self, query: &H::Query) {
        #[cfg(feature = "cache")]
        match &self.inner.cache {
            Some(Store::Local(cache)) => cache.invalidate(query),
            Some(Store::Tiered(cache)) => cache.invalidate(query).await,
            None => {}
        }
        let _ = query;
    }

    /// Drops every cached answer; no load under way is stored. With a
    /// tiered cache, every answer in the remote tier too (for Redis, every
    /// key under the tier's prefix), and every other instance empties its
    /// local cache; with a local one, it finishes on its first poll.
    #[cfg_attr(not(feature = "cache"), allow(clippy::unused_async))]
    pub async fn invalidate_all(&self) {
        #[cfg(feature = "cache")]
        match &self.inner.cache {
            Some(Store::Local(cache)) => cache.invalidate_all(),
            Some(Store::Tiered(cache)) => cache.invalidate_all().await,
            None => {}
        }
    }

    /// Serves reads from `projection`'s tables from now on (after a rebuild
    /// has caught up: see [`ProjectionRunner::promote`](crate::ProjectionRunner::promote)),
    /// and drops every cached answer ([`invalidate_all`](Self::invalidate_all)),
    /// so none read from the old version is kept, nor stored by a load under way.
    ///
    /// With a tiered cache the version is this instance's: the others go on
    /// reading the version they serve until each switches too, and until
    /// then their loads may write answers of the old version to the remote
    /// tier, where this instance can read them. Switch every instance, then
    /// call [`invalidate_all`](Self::invalidate_all) once more on one of them.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `switch_version` when `projection` is empty.
    pub async fn switch_version(&self, projection: impl Into<Arc<str>>) -> Result<(), ConfigError> {
        let projection = projection.into();
        check_version("switch_version", Some(&projection))?;
        *self.inner.version.write() = Some(projection);
        self.invalidate_all().await;
        Ok(())
    }

    /// What a projection does to these queries' cache after each event it
    /// applies, for [`Projector::invalidates`](crate::Projector::invalidates):
    /// drops the answers to the queries `stale` names for the event, after
    /// the event's transaction committed, and before the runner reports the
    /// event handled. When the queries are versioned, only the events of the
    /// projection named by the version drop answers.
    ///
    /// A local cache ([`QueriesBuilder::cache`]) is in this process: a
    /// projection running in another process does not reach it (give the
    /// cache a time to live there). A tiered cache
    /// ([`QueriesBuilder::tiered_cache`]) is reached on every instance; the
    /// runner waits for the tier's calls, one query after another. What
    /// holds where is on [`Queries`](Queries#what-a-reader-can-see-after-a-commit).
    pub fn invalidation<I, F>(&self, stale: F) -> Invalidation
    where
        F: Fn(&RecordedEvent) -> I + Send + Sync + 'static,
        I: IntoIterator<Item = H::Query>,
    {
        let queries = self.clone();
        Invalidation(Arc::new(move |projection: &str, event: &RecordedEvent| {
            if queries
                .inner
                .version
                .read()
                .as_deref()
                .is_some_and(|serving| serving != projection)
            {
                return None; // a version that does not serve reads
            }
            queries.drop_stale(stale(event))
        }))
    }

    /// Drops the answers to `stale`: from a local cache at once (nothing is
    /// left to wait for, and nothing allocated), from a tiered cache by the
    /// returned future.
    #[cfg_attr(
        not(feature = "cache"),
        allow(clippy::unused_self, clippy::needless_pass_by_value)
    )]
    fn drop_stale(&self, stale: impl IntoIterator<Item = H::Query>) -> Option<Pending> {
        #[cfg(feature = "cache")]
        if let Some(store) = &self.inner.cache {
            return match store {
                Store::Local(cache) => {
                    for query in stale {
                        cache.invalidate(&query);
                    }
                    None
                }
                Store::Tiered(cache) => {
                    let cache = cache.clone();
                    let stale: Vec<H::Query> = stale.into_iter().collect();
                    Some(Box::pin(async move {
                        for query in &stale {
                            cache.invalidate(query).await;
                        }
                    }))
                }
            };
        }
        let _ = stale;
        None
    }
}

/// Drops cached answers that a projection's events make stale; made by
/// [`Queries::invalidation`], attached by [`Projector::invalidates`](crate::Projector::invalidates).
#[derive(Clone)]
pub struct Invalidation(Arc<DropStale>);

/// Called with the projection's name and the event it committed; drops what
/// it can at once and returns what is left to wait for (a tiered cache's
/// remote calls), if anything.
type DropStale = dyn Fn(&str, &RecordedEvent) -> Option<Pending> + Send + Sync;

/// The rest of an invalidation: remote calls to wait for.
type Pending = Pin<Box<dyn Future<Output = ()> + Send>>;

impl std::fmt::Debug for Invalidation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invalidation").finish_non_exhaustive()
    }
}

impl Invalidation {
    /// `projection` has committed `event`: drops what it made stale,
    /// everywhere the cache reaches, before returning.
    pub(crate) async fn applied(&self, projection: &str, event: &RecordedEvent) {
        if let Some(pending) = (self.0)(projection, event) {
            pending.await;
        }
    }
}
