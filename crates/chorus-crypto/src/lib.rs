//! Security for Chorus: who is who, and keys nobody else has.
//!
//! (crate overview being written)
#![doc(test(attr(deny(warnings))))]

pub mod cert;
mod error;
pub mod identity;
pub mod obfuscation;
pub mod password;
mod random;
mod secret;
pub mod srtp;

pub use error::{AuthError, DecodeError, Error, KeyError, Limit, UsageError};
pub use obfuscation::Obfuscator;
pub use password::{PasswordConfig, PasswordHash, PasswordHasher, Verified};
pub use random::SystemEntropy;
pub use secret::{Secret, SecretVec, ct_eq};
