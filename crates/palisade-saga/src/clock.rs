//! The clock a saga's durable deadlines and claims are read on.
//!
//! Core's [`SystemClock`](palisade_core::SystemClock) counts from the moment it
//! was made, so its readings mean nothing to the next process. A deadline or a
//! claim written to the saga's log must be understood after a restart and by
//! other processes, so a saga reads [`WallClock`] by default: nanoseconds since
//! the Unix epoch. (Written here rather than in core: only the saga stores
//! times.)

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use palisade_core::{Clock, SharedClock};

/// Nanoseconds since the Unix epoch, from the system's wall clock.
///
/// Unlike core's clocks it is not monotonic: a wall clock stepped back moves
/// deadlines and claims later by as much (never earlier). Processes that share
/// a store should keep their clocks in sync (NTP); a claim's lease should be
/// much longer than their skew.
#[derive(Debug, Clone, Copy, Default)]
pub struct WallClock;

impl WallClock {
    /// The wall clock as a [`SharedClock`].
    pub fn shared() -> SharedClock {
        Arc::new(Self)
    }
}

impl Clock for WallClock {
    fn now_nanos(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}
