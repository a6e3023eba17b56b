//! The examples' shared code: the orders service (`--bin orders`), which
//! uses every Palisade crate at once. The other examples are single files
//! in `src/bin/`.

pub mod orders;

/// The guide to the orders service, `docs/orders.md`: its code blocks are
/// this crate's doctests.
#[doc = include_str!("../../docs/orders.md")]
pub mod guide {}
