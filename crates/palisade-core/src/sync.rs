//! The atomics and the lock of the patterns' lock-free paths, swapped for
//! loom's under `--cfg palisade_loom`, so a loom model checks the real code.
//!
//! Not a public API: the pattern crates use it for the state their loom
//! models cover. (A cfg of our own: `--cfg loom` would also switch tokio,
//! which then needs loom itself.)

#[cfg(palisade_loom)]
pub use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, fence};
#[cfg(not(palisade_loom))]
pub use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, fence};

/// In a retry loop that waits for another thread: a spin hint, or in a loom
/// model a yield, so the model lets the other thread run.
#[inline]
pub fn spin_loop() {
    #[cfg(palisade_loom)]
    loom::thread::yield_now();
    #[cfg(not(palisade_loom))]
    std::hint::spin_loop();
}

/// A mutex: parking_lot's, or loom's in a model.
pub struct Mutex<T> {
    #[cfg(not(palisade_loom))]
    inner: parking_lot::Mutex<T>,
    #[cfg(palisade_loom)]
    inner: loom::sync::Mutex<T>,
}

/// The guard of a [`Mutex`].
#[cfg(not(palisade_loom))]
pub type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
/// The guard of a [`Mutex`].
#[cfg(palisade_loom)]
pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    /// A mutex holding `value`.
    pub fn new(value: T) -> Self {
        Self {
            #[cfg(not(palisade_loom))]
            inner: parking_lot::Mutex::new(value),
            #[cfg(palisade_loom)]
            inner: loom::sync::Mutex::new(value),
        }
    }

    /// Waits for the lock.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(palisade_loom))]
        {
            self.inner.lock()
        }
        #[cfg(palisade_loom)]
        {
            self.inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }

    /// The lock if it is free now.
    #[inline]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        #[cfg(not(palisade_loom))]
        {
            self.inner.try_lock()
        }
        #[cfg(palisade_loom)]
        {
            match self.inner.try_lock() {
                Ok(guard) => Some(guard),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            }
        }
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> std::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mutex")
    }
}
