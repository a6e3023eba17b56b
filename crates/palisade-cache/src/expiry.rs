//! Per-entry expiry chosen by the user when a value is written.

use std::time::Duration;

/// Chooses how long each entry lives, at insert and at update.
///
/// Returning `None` means "no expiry of its own": the cache-wide time to live
/// and time to idle still apply. An entry expires at the earliest of its
/// deadlines. The callbacks run on the writing thread while it holds the
/// cache's maintenance lock: they may read the cache, but must not write to it.
///
/// ```
/// use palisade_cache::{Cache, Expiry};
/// use std::time::Duration;
///
/// /// Sessions of guests live a minute, sessions of members an hour.
/// struct BySession;
///
/// impl Expiry<String, bool> for BySession {
///     fn expire_after_create(&self, _key: &String, is_member: &bool) -> Option<Duration> {
///         Some(Duration::from_secs(if *is_member { 3_600 } else { 60 }))
///     }
/// }
///
/// let cache = Cache::builder().max_capacity(1_000).expiry(BySession).build().unwrap();
/// cache.insert("alice".to_string(), true);
/// assert_eq!(cache.get("alice"), Some(true));
/// ```
pub trait Expiry<K, V>: Send + Sync + 'static {
    /// The lifetime of a new entry.
    fn expire_after_create(&self, key: &K, value: &V) -> Option<Duration>;

    /// The lifetime of an entry whose value was replaced; `remaining` is what
    /// was left of its previous lifetime. Default: as if it were new.
    fn expire_after_update(
        &self,
        key: &K,
        value: &V,
        remaining: Option<Duration>,
    ) -> Option<Duration> {
        let _ = remaining;
        self.expire_after_create(key, value)
    }
}
