//! Conferences for Chorus (SYSTEM.md, "Conferences").
//!
//! - `audio`: the initiator's mixer: every participant sends one stream in and gets
//!   one mix-minus stream back, 2(N-1) streams in all.
//! - `sfu`: video forwarding at a relay, with per-receiver layer selection and
//!   cascading between relays; every endpoint and link is an SRTP leg with its own
//!   keys (the relay decrypts and re-encrypts: `docs/conference.md`, "Trust
//!   model").
//! - `control`: the conference membership messages (join, leave, mute, speaker
//!   changes) over chorus-framing.
//!
//! Everything here is sans-IO: the mixing clock, arrival times and packets are passed
//! in; nothing inside reads a clock, a socket or a random source.
//!
//! Three remote participants and the initiator's own microphone; one participant
//! talks, and after one tick of the mixing clock everyone hears the talker except the
//! talker, who hears everyone else (mix-minus):
//!
//! ```
//! # #[cfg(feature = "opus")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Instant;
//! use bytes::BytesMut;
//! use chorus_mixer::audio::{Mixer, MixerConfig, PcmConfig, RemoteConfig};
//! use chorus_media::opus::{Encoder, EncoderConfig};
//! use chorus_media::rtp::{self, AudioLevel, Element, Extension};
//!
//! let mut mixer = Mixer::new(MixerConfig::default())?; // 48 kHz mono, 20 ms, K = 3
//! let remote: Vec<_> = (0..3)
//!     .map(|_| mixer.add_remote(RemoteConfig::default()))
//!     .collect::<Result<_, _>>()?;
//! let initiator = mixer.add_pcm(PcmConfig::default())?; // microphone and speaker
//!
//! // Participant 0 says something: an Opus packet with its RFC 6464 level.
//! let voice: Vec<i16> = (0..960).map(|i| ((i % 48) as i16 - 24) * 400).collect();
//! let mut opus = Vec::new();
//! Encoder::new(EncoderConfig::default())?.encode(&voice, &mut opus)?;
//! let level = [AudioLevel::from_samples(&voice, true).to_byte()];
//! let mut ext = Vec::new();
//! let profile = rtp::write_elements(&[Element { id: 1, data: &level }], &mut ext)?;
//! let packet = rtp::Packet {
//!     marker: true, payload_type: 111, sequence: 1, timestamp: 0, ssrc: 7, csrcs: vec![],
//!     extension: Some(Extension { profile, data: &ext }), payload: &opus, padding: 0,
//! };
//! let mut wire = BytesMut::new();
//! packet.encode(&mut wire)?;
//! let now = Instant::now();
//! mixer.handle_packet(now, remote[0], wire.freeze())?;
//! // The initiator's microphone is silent.
//! mixer.handle_pcm(initiator, 0, &[0; 960])?;
//!
//! // Jitter buffers hold a packet for at least one tick; then it is mixed.
//! mixer.tick(now);
//! mixer.tick(now + std::time::Duration::from_millis(20));
//! assert!(mixer.is_speaker(remote[0]));
//! let loud = |pcm: &[i16]| pcm.iter().any(|&s| s.abs() > 1000);
//! assert!(!loud(mixer.heard_by(remote[0]).unwrap()), "nobody hears themselves");
//! assert!(loud(mixer.heard_by(remote[1]).unwrap()));
//! assert!(loud(mixer.heard_by(initiator).unwrap()), "the initiator's speaker");
//!
//! // One RTP packet back to each remote participant: 3 in + 3 out = 2(N-1), N = 4.
//! assert_eq!(mixer.transmits().count(), 3);
//! let counts = mixer.counts();
//! assert_eq!(counts.streams_in + counts.streams_out, chorus_mixer::streams_for(4));
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "opus"))]
//! # fn main() {}
//! ```
#![doc(test(attr(deny(warnings))))]
// docs.rs (`--cfg docsrs`, nightly) labels feature-gated items with their feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "opus")]
pub mod audio;
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
