//! One cached value and the times that decide when it expires.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// "Never" as a deadline in nanoseconds.
pub(crate) const NEVER: u64 = u64::MAX;

/// A key, its value and its bookkeeping. Shared (`Arc`) by the map, which
/// readers search, and the policy, which orders and evicts.
///
/// Everything but the access time and the refresh flag is fixed at insert: an
/// update makes a new `Entry` that takes over the old one's policy slot.
#[derive(Debug)]
pub(crate) struct Entry<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
    pub(crate) hash: u64,
    /// The policy's arena slot of this key.
    pub(crate) slot: u32,
    pub(crate) weight: u32,
    /// When the value was written, ns (refresh-ahead measures age from
    /// here); 0 in a cache with no expiry or refresh, which never reads the clock.
    pub(crate) written_at: u64,
    /// The write-based deadline (time to live, per-entry expiry), ns, or [`NEVER`].
    pub(crate) expires_at: u64,
    /// The last read or write, ns; only kept up to date with a time to idle.
    pub(crate) accessed_at: AtomicU64,
    /// Set while a refresh of this value is under way.
    pub(crate) refreshing: AtomicBool,
    /// The policy's mark of this entry's last move to the back of the
    /// protected segment (0: never); a hit may skip the read buffer while
    /// it is recent (see [`Policy::recent_after`](crate::policy::Policy::recent_after)).
    pub(crate) mark: AtomicU64,
}

impl<K, V> Entry<K, V> {
    /// The deadline of this entry with `tti` ns of time to idle (0: none).
    #[inline]
    pub(crate) fn deadline(&self, tti: u64) -> u64 {
        if tti == 0 {
            self.expires_at
        } else {
            self.expires_at
                .min(self.accessed_at.load(Ordering::Relaxed).saturating_add(tti))
        }
    }

    /// Claims the right to refresh this value; `false` if a refresh is already running.
    pub(crate) fn start_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// Gives the refresh claim back (after a failed refresh).
    pub(crate) fn end_refresh(&self) {
        self.refreshing.store(false, Ordering::Release);
    }
}
