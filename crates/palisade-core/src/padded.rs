//! Keeping a hot value off its neighbours' cache lines.

/// Keeps a value on cache lines of its own, so that writes to it do not slow
/// down readers of its neighbours (128 bytes: two lines, for adjacent-line prefetch).
///
/// Used for the words every call touches: a breaker's state, a cache's read
/// buffer stripes.
///
/// ```
/// use palisade_core::CachePadded;
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// let hits = CachePadded(AtomicU64::new(0));
/// hits.fetch_add(1, Ordering::Relaxed);
/// assert_eq!(hits.load(Ordering::Relaxed), 1);
/// assert_eq!(std::mem::align_of_val(&hits), 128);
/// ```
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CachePadded<T>(pub T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}
