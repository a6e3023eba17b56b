//! The query side: typed queries answered from the read models, optionally
//! cached (feature `cache`) and invalidated by the projections that change
//! the views.
//!
//! ```text
//! ask(q) ─▶ cache hit ─▶ the view
//!             │ miss: one load per query (palisade-cache's try_get_with)
//!             ▼
//!           handler.handle(q, version) ─▶ read model ─▶ stored, unless invalidated meanwhile
//!
//! projection commits event e ─▶ drop keys(e) ─▶ loads under way of those keys are not stored
//! switch_version(v2)         ─▶ drop everything ─▶ loads under way are not stored
//! ```
//!
//! Why a reader never caches a value from before a commit: the runner drops
//! a query's answer only after the projection's transaction has committed,
//! through [`Cache::invalidate`](palisade_cache::Cache::invalidate), which
//! also marks the load of that query under way, if any, as superseded, so
//! its value is handed to its callers but not stored. A load that read the
//! old value either finished before the drop (its entry is dropped) or was
//! under way (it is not stored); a load that starts after the drop reads
//! after the commit. The version a load reads is taken inside the load, so
//! [`Queries::switch_version`], which sets the version and then drops
//! everything, supersedes every load of the old version the same way.

use std::future::Future;
use std::hash::Hash;
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

    /// Keeps answers in `cache` (feature `cache`), one load per query at a
    /// time, each dropped when a projection applies an event that changes it
    /// (see [`Queries::invalidation`]). The cache's own settings (capacity,
    /// time to live, negative caching) hold. Default: no cache, every query
    /// reads the read model.
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    pub fn cache(mut self, cache: palisade_cache::Cache<H::Query, H::View>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Checks the settings and builds.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `version` when it is empty.
    pub fn build(self) -> Result<Queries<H>, ConfigError> {
        check_version("version", self.version.as_deref())?;
        Ok(Queries {
            inner: Arc::new(Inner {
                handler: self.handler,
                version: RwLock::new(self.version),
                #[cfg(feature = "cache")]
                cache: self.cache,
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

struct Inner<H: QueryHandler> {
    handler: H,
    version: RwLock<Option<Arc<str>>>,
    #[cfg(feature = "cache")]
    cache: Option<palisade_cache::Cache<H::Query, H::View>>,
}

/// Typed queries over a read model through a [`QueryHandler`], optionally
/// cached. Cloning is cheap; clones share the handler, the cache and the version.
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
        if let Some(cache) = &self.inner.cache {
            let load = async {
                // Inside the load: a version switch during it supersedes it.
                let ctx = self.context();
                self.inner.handler.handle(&query, &ctx).await
            };
            return cache.try_get_with(query.clone(), load).await;
        }
        let ctx = self.context();
        self.inner
            .handler
            .handle(&query, &ctx)
            .await
            .map_err(Arc::new)
    }

    /// Drops the cached answer to `query`, if any; a load of it under way is
    /// not stored.
    pub fn invalidate(&self, query: &H::Query) {
        #[cfg(feature = "cache")]
        if let Some(cache) = &self.inner.cache {
            cache.invalidate(query);
        }
        let _ = query;
    }

    /// Drops every cached answer; no load under way is stored.
    pub fn invalidate_all(&self) {
        #[cfg(feature = "cache")]
        if let Some(cache) = &self.inner.cache {
            cache.invalidate_all();
        }
    }

    /// Serves reads from `projection`'s tables from now on (after a rebuild
    /// has caught up: see [`ProjectionRunner::promote`](crate::ProjectionRunner::promote)),
    /// and drops every cached answer, so none read from the old version is
    /// kept, nor stored by a load under way.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `switch_version` when `projection` is empty.
    pub fn switch_version(&self, projection: impl Into<Arc<str>>) -> Result<(), ConfigError> {
        let projection = projection.into();
        check_version("switch_version", Some(&projection))?;
        *self.inner.version.write() = Some(projection);
        self.invalidate_all();
        Ok(())
    }

    /// What a projection does to these queries' cache after each event it
    /// applies, for [`Projector::invalidates`](crate::Projector::invalidates):
    /// drops the answers to the queries `stale` names for the event, after
    /// the event's transaction committed. When the queries are versioned,
    /// only the events of the projection named by the version drop answers.
    ///
    /// The cache is in this process: a projection running in another process
    /// does not reach it (give the cache a time to live there).
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
                return; // a version that does not serve reads
            }
            for query in stale(event) {
                queries.invalidate(&query);
            }
        }))
    }
}

/// Drops cached answers that a projection's events make stale; made by
/// [`Queries::invalidation`], attached by [`Projector::invalidates`](crate::Projector::invalidates).
#[derive(Clone)]
pub struct Invalidation(Arc<DropStale>);

/// Called with the projection's name and the event it committed.
type DropStale = dyn Fn(&str, &RecordedEvent) + Send + Sync;

impl std::fmt::Debug for Invalidation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invalidation").finish_non_exhaustive()
    }
}

impl Invalidation {
    /// `projection` has committed `event`.
    pub(crate) fn applied(&self, projection: &str, event: &RecordedEvent) {
        (self.0)(projection, event);
    }
}
