//! Wire framing for Chorus: the bytes every other crate stands on.
//!
//! - [`frame`]: stream frames for TCP control channels, as a sans-IO [`FrameCodec`]
//!   that is also a `tokio_util` codec (feature `tokio`, on by default).
//! - [`datagram`]: one UDP port for STUN, TURN ChannelData, SRTP/SRTCP and Chorus
//!   datagrams: [`classify`] (RFC 7983) and the Chorus datagram header.
//! - [`tlv`]: type-length-value attribute lists for control messages.
//! - [`sansio`]: the contract every sans-IO datagram core keeps, [`DatagramCore`],
//!   with the run loop a driver follows.
//! - [`mux`]: [`Mux`], one port for several cores (STUN, TURN, the Global Index,
//!   media), routed by RFC 7983 first-byte ranges and each core's `accepts`.
//! - The vocabulary the crates above share: [`Transmit`], [`Entropy`] and the
//!   bounds-checked [`Reader`].
//!
//! Every decoder treats its input as hostile: it returns a [`DecodeError`] naming what
//! is wrong, never panics, and never allocates more than a configured bound. The byte
//! layouts are tabled in `docs/wire-format.md`.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use chorus_framing::tlv::{Attributes, TlvLimits, TlvWriter};
//! use chorus_framing::{
//!     classify, Datagram, DatagramHeader, DatagramType, Frame, FrameCodec, FrameConfig,
//!     PacketKind,
//! };
//!
//! // A control message body: attribute 1 holds a username.
//! let mut body = TlvWriter::new(TlvLimits::default());
//! body.put(0x0001, &"alice")?;
//! let body = body.finish();
//!
//! // Over TCP: a frame on channel 3, split across two reads.
//! let mut codec = FrameCodec::new(FrameConfig::default())?;
//! let mut wire = BytesMut::new();
//! codec.encode_frame(&Frame::data(3, body.clone()), &mut wire)?;
//! let mut rx = wire.split_to(10);
//! assert!(codec.decode_frame(&mut rx)?.is_none());
//! rx.unsplit(wire);
//! let frame = codec.decode_frame(&mut rx)?.expect("complete");
//! let attrs = Attributes::decode(&frame.payload, &[0x0001], &TlvLimits::default())?;
//! assert_eq!(attrs.require::<&str>(0x0001)?, "alice");
//!
//! // Over UDP: the same body in a Chorus datagram, told apart from RTP on one port.
//! let header = DatagramHeader::new(DatagramType::Control, 0x2a, 1);
//! let packet: Bytes = Datagram::new(header, body).to_bytes()?;
//! assert_eq!(classify(&packet), PacketKind::Chorus);
//! assert_eq!(classify(&[0x80, 111, 0, 1]), PacketKind::Rtp);
//! assert_eq!(Datagram::decode(&packet)?.header.connection_id, 0x2a);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![doc(test(attr(deny(warnings))))]
// docs.rs (`--cfg docsrs`, nightly) labels feature-gated items with their feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod datagram;
mod entropy;
mod error;
pub mod frame;
mod hash;
pub mod mux;
mod reader;
mod redact;
#[cfg(feature = "runtime")]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub mod runtime;
pub mod sansio;
pub mod tlv;
mod transmit;

#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub mod fuzz;

pub use datagram::{Datagram, DatagramHeader, DatagramType, PacketKind, classify};
#[cfg(any(test, feature = "sim"))]
pub use entropy::SeededEntropy;
pub use entropy::{Entropy, EntropyError, SplitMix64};
pub use error::{DecodeError, Error, UsageError};
#[cfg(feature = "tokio")]
pub use frame::CodecError;
pub use frame::{Flags, Frame, FrameCodec, FrameConfig, FrameHeader, FrameType};
pub use hash::{U32Hasher, U32Map};
pub use mux::{CoreHandle, CoreId, Mux, MuxError, MuxStats};
pub use reader::Reader;
pub use redact::{LOG_SENSITIVE, Redacted};
pub use sansio::DatagramCore;
pub use transmit::{Transmit, Transport};
