//! The atomics and the lock of the engine, swapped for loom's under
//! `--cfg palisade_loom` so the model checks the real code.

#[cfg(palisade_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize};
#[cfg(not(palisade_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize};

/// A mutex: parking_lot's, or loom's in the model.
pub(crate) struct Mutex<T> {
    #[cfg(not(palisade_loom))]
    inner: parking_lot::Mutex<T>,
    #[cfg(palisade_loom)]
    inner: loom::sync::Mutex<T>,
}

#[cfg(not(palisade_loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
#[cfg(palisade_loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(not(palisade_loom))]
            inner: parking_lot::Mutex::new(value),
            #[cfg(palisade_loom)]
            inner: loom::sync::Mutex::new(value),
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
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
}

impl<T> std::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mutex")
    }
}
