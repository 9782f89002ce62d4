//! The subcommands: `demo`, `test` and `ci`.

pub(crate) mod ci;
pub(crate) mod demo;
pub(crate) mod fuzz;
pub(crate) mod test;
