//! Units of a bulkhead, held while a call runs: [`Permit`] borrows its
//! bulkhead, [`OwnedPermit`] owns a handle to it (for `'static` tasks). Both
//! give their units back when dropped.

use std::borrow::Borrow;

use crate::Event;
use crate::bulkhead::Bulkhead;

/// What both permits are: units given back on drop.
#[derive(Debug)]
struct Guard<B: Borrow<Bulkhead>> {
    bulkhead: B,
    weight: u32,
}

impl<B: Borrow<Bulkhead>> Drop for Guard<B> {
    #[inline]
    fn drop(&mut self) {
        let shared = &self.bulkhead.borrow().shared;
        shared.give_back(self.weight);
        let weight = self.weight;
        shared.listeners.emit_with(|| Event::Released { weight });
    }
}

/// Units of a bulkhead, borrowing it; from [`Bulkhead::try_acquire`] or
/// [`Bulkhead::acquire`]. Hold it while the call runs: dropping it gives the
/// units back (and lets the next waiter in).
///
/// ```
/// use palisade_bulkhead::Bulkhead;
///
/// let bulkhead = Bulkhead::builder().max_concurrent_calls(1).build()?;
/// let permit = bulkhead.try_acquire()?;
/// assert!(bulkhead.try_acquire().is_err(), "the one unit is held");
/// drop(permit);
/// assert!(bulkhead.try_acquire().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "a permit gives its units back as soon as it is dropped"]
pub struct Permit<'a>(Guard<&'a Bulkhead>);

/// Units of a bulkhead that own a handle to it, so they can move into a
/// `'static` task; from [`Bulkhead::try_acquire_owned`] or
/// [`Bulkhead::acquire_owned`]. Otherwise the same as [`Permit`].
///
/// ```
/// use palisade_bulkhead::Bulkhead;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bulkhead = Bulkhead::builder().max_concurrent_calls(4).build()?;
/// let permit = bulkhead.try_acquire_many_owned(3)?;
/// assert_eq!(bulkhead.snapshot().in_flight, 3);
/// tokio::spawn(async move {
///     let _held = permit; // the task's work, holding three units
/// })
/// .await?;
/// assert_eq!(bulkhead.snapshot().in_flight, 0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a permit gives its units back as soon as it is dropped"]
pub struct OwnedPermit(Guard<Bulkhead>);

impl<'a> Permit<'a> {
    #[inline]
    pub(crate) fn new(bulkhead: &'a Bulkhead, weight: u32) -> Self {
        Self(Guard { bulkhead, weight })
    }

    /// The units this permit holds.
    pub fn weight(&self) -> u32 {
        self.0.weight
    }

    /// The bulkhead it came from.
    pub fn bulkhead(&self) -> &Bulkhead {
        self.0.bulkhead
    }
}

impl OwnedPermit {
    #[inline]
    pub(crate) fn new(bulkhead: Bulkhead, weight: u32) -> Self {
        Self(Guard { bulkhead, weight })
    }

    /// The units this permit holds.
    pub fn weight(&self) -> u32 {
        self.0.weight
    }

    /// The bulkhead it came from.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.0.bulkhead
    }
}
