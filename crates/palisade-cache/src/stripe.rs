//! A small number per thread, for picking a stripe of a striped structure.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};

thread_local! {
    static HINT: Cell<u32> = const { Cell::new(u32::MAX) };
}

/// This thread's number, handed out round-robin on first use.
#[inline]
pub(crate) fn thread_hint() -> usize {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    HINT.with(|hint| {
        let mut h = hint.get();
        if h == u32::MAX {
            h = NEXT.fetch_add(1, Ordering::Relaxed) & 0x7FFF_FFFF;
            hint.set(h);
        }
        h as usize
    })
}

/// Stripes for `per_core` stripes per core, a power of two at most 64.
pub(crate) fn stripe_count(per_core: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(4, std::num::NonZero::get)
        .saturating_mul(per_core)
        .next_power_of_two()
        .min(64)
}
