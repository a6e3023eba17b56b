//! A point-in-time view of a bulkhead.

/// What a bulkhead holds, read at one moment.
///
/// `in_flight` and `limit` are read from one atomic word, so they agree with
/// each other; `waiting` is read next to them and may be one change apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Units held by permits now (a call of weight 3 holds 3). May exceed
    /// `limit` for a while after [`set_limit`](crate::Bulkhead::set_limit) lowered it.
    pub in_flight: u32,
    /// Callers queued for a permit.
    pub waiting: usize,
    /// The limit in use: the most units permits may hold at once.
    pub limit: u32,
}

impl Snapshot {
    /// Units free now: `limit - in_flight`, or 0 while over a lowered limit.
    pub fn available(&self) -> u32 {
        self.limit.saturating_sub(self.in_flight)
    }
}
