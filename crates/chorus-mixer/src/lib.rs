//! Conferences for Chorus (SYSTEM.md, "Conferences").
//!
//! - `audio`: the initiator's mixer: every participant sends one stream in and gets
//!   one mix-minus stream back, 2(N-1) streams in all.
//! - `sfu`: video forwarding at a relay, with per-receiver layer selection and
//!   cascading between relays.
//! - `control`: the conference membership messages (join, leave, mute, speaker
//!   changes) over chorus-framing.
//!
//! Everything here is sans-IO: the mixing clock, arrival times and packets are passed
//! in; nothing inside reads a clock, a socket or a random source.
//!
//! ```
//! assert_eq!(chorus_mixer::streams_for(4), 6);
//! ```
#![doc(test(attr(deny(warnings))))]

pub mod control;
mod error;
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod sfu;

pub use error::Error;

/// The number of streams a star conference of `participants` members uses at its
/// initiator: one in and one out per other member, 2(N-1).
#[must_use]
pub fn streams_for(participants: usize) -> usize {
    2 * participants.saturating_sub(1)
}
