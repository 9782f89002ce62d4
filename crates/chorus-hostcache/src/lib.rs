//! What a Chorus client remembers between runs, and how it finds the network.
//!
//! WORK IN PROGRESS
#![doc(test(attr(deny(warnings))))]

pub mod bootstrap;
pub mod buddy;
#[cfg(feature = "tokio")]
pub mod driver;
mod error;
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod hostcache;
pub mod nat;
pub mod store;
pub mod xml;

pub use error::{
    DecodeError, Error, FileError, FileErrorKind, Limit, Position, UsageError, Violation,
};
