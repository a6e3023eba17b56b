//! The examples' shared code: the orders service (`--bin orders`), which
//! uses every Palisade crate at once. The other examples are single files
//! in `src/bin/`.

pub mod orders;
