//! Typed events from a pattern to whoever listens: telemetry adapters, logs, tests.

use std::fmt;
use std::sync::Arc;

/// Receives the events of one pattern instance.
///
/// Called synchronously on the thread that caused the event, so keep it
/// short: count, record, or hand off. Closures `Fn(&E)` are listeners.
pub trait Listener<E>: Send + Sync + 'static {
    /// Called once for each event.
    fn on_event(&self, event: &E);
}

impl<E, F> Listener<E> for F
where
    F: Fn(&E) + Send + Sync + 'static,
{
    fn on_event(&self, event: &E) {
        self(event);
    }
}

/// The listeners of one pattern instance. With none, emitting costs one branch.
pub struct Listeners<E> {
    list: Vec<Arc<dyn Listener<E>>>,
}

impl<E: 'static> Listeners<E> {
    /// No listeners.
    pub fn new() -> Self {
        Self { list: Vec::new() }
    }

    /// Adds a listener.
    pub fn push(&mut self, listener: Arc<dyn Listener<E>>) {
        self.list.push(listener);
    }

    /// `true` when nobody listens, so the caller can skip building an event.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Sends the event built by `make` to every listener; `make` runs only if there is one.
    #[inline]
    pub fn emit_with(&self, make: impl FnOnce() -> E) {
        if !self.list.is_empty() {
            let event = make();
            for listener in &self.list {
                listener.on_event(&event);
            }
        }
    }
}

impl<E: 'static> Default for Listeners<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Clone for Listeners<E> {
    fn clone(&self) -> Self {
        Self {
            list: self.list.clone(),
        }
    }
}

impl<E> fmt::Debug for Listeners<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listeners")
            .field("len", &self.list.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn events_reach_every_listener_and_are_built_only_when_heard() {
        let built = AtomicUsize::new(0);
        let mut listeners: Listeners<u32> = Listeners::new();
        listeners.emit_with(|| {
            built.fetch_add(1, Ordering::SeqCst);
            7
        });
        assert_eq!(built.load(Ordering::SeqCst), 0);

        let seen = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let seen = Arc::clone(&seen);
            listeners.push(Arc::new(move |e: &u32| {
                seen.fetch_add(*e as usize, Ordering::SeqCst);
            }));
        }
        listeners.emit_with(|| {
            built.fetch_add(1, Ordering::SeqCst);
            7
        });
        assert_eq!(built.load(Ordering::SeqCst), 1);
        assert_eq!(seen.load(Ordering::SeqCst), 14);
    }
}
