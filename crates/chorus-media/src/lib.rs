//! Media transport for Chorus: the packets that carry speech and video, and what keeps
//! them useful on a bad network.
//!
//! - `session` (feature `opus`): one audio call leg end to end, sans-IO: PCM in,
//!   Opus + RTP + adaptive FEC + SRTP datagrams out; datagrams in, jitter buffer,
//!   decode/FEC/PLC and time-stretched playout out; RTCP reports, RTT, loss- and
//!   delay-based rate control.
//! - `driver` (feature `tokio`): the thin tokio driver of a session over one UDP
//!   socket, PCM over channels.
//! - [`adapt`]: loss and burst estimation, the choice of Reed-Solomon `(k, m)`,
//!   interleaving and Opus in-band FEC from the exact residual loss on a Gilbert
//!   path, the sender's protection controller, and loss-based send-rate control.
//! - [`congestion`]: delay-based rate control (Google Congestion Control's trendline
//!   estimator, over-use detector and AIMD), REMB feedback and abs-send-time.
//! - [`timestretch`]: WSOLA time stretching that keeps pitch, so playout delay can
//!   follow the jitter buffer's target without dropping or inserting whole frames.
//! - `opus` (feature `opus`, on by default): Opus encoding and decoding through
//!   libopus 1.6.1: 8-48 kHz, mono and stereo, 10-60 ms frames, 6-510 kbit/s,
//!   complexity, DTX, in-band FEC with an expected-loss hint, packet loss
//!   concealment (with the `dnn` feature: libopus's neural deep PLC and OSCE).
//! - [`opus_packet`]: Opus packet framing (RFC 6716 §3) without libopus: the first
//!   frame and the in-band FEC (LBRR) flag.
//! - [`rtp`]: RTP packets (RFC 3550 §5.1) with CSRCs, padding and header extensions,
//!   the RFC 8285 one-byte and two-byte element forms, the RFC 6464 audio level, and
//!   sequence-number / timestamp unwrapping to 64-bit counters.
//! - [`rtcp`]: SR, RR, SDES, BYE (RFC 3550 §6.4-§6.6), generic NACK and PLI feedback
//!   (RFC 4585), FIR (RFC 5104), REMB bandwidth estimates
//!   (draft-alvestrand-rmcat-remb), compound packets, round-trip time from LSR/DLSR.
//! - [`feedback`]: receiver-side NACK scheduling with retries and keyframe (PLI)
//!   requests for video.
//! - [`stats`]: per-source receive statistics: RFC 3550 §A.1 sequence validation, §A.3
//!   loss accounting and §A.8 interarrival jitter, producing report blocks.
//! - [`fec`]: Reed-Solomon packet FEC: groups of k sources plus m repair packets,
//!   any m losses per group rebuilt bit-exact, optional interleaving
//!   (wire format in `docs/media.md`).
//! - [`jitter`]: an adaptive jitter buffer: reordering, duplicates, late packets,
//!   target delay from observed jitter plus the FEC group delay, clock drift,
//!   concealment signalling, statistics.
//! - [`netsim`]: a seeded, deterministic network impairment simulator (random and
//!   Gilbert-Elliott loss, loss traces, delay, jitter, reordering, duplication,
//!   bandwidth cap).
//! - [`video`]: RTP payload formats for VP8 (RFC 7741) and H.264 (RFC 6184, single
//!   NAL unit, STAP-A, FU-A) with bounded frame reassembly and keyframe detection.
//! - [`wav`]: 16-bit PCM WAV read/write for tests and examples, and windowed-sinc
//!   resampling (to 48 kHz).
//!
//! Everything here is sans-IO: no sockets, clocks or randomness inside; arrival times
//! are passed in. Every decoder treats its input as hostile: it borrows from the
//! input, returns a [`DecodeError`] naming what is wrong, never panics, and bounds
//! what it allocates.
//!
//! A packet from sender to receiver, with the receiver's report going back:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::BytesMut;
//! use chorus_media::rtp::{self, AudioLevel, Element, Extension};
//! use chorus_media::rtcp;
//! use chorus_media::stats::ReceiveStats;
//!
//! // The sender: an Opus packet (RFC 7587: PT dynamic, 48 kHz clock) with its level.
//! let level = [AudioLevel { voice: true, level: 30 }.to_byte()];
//! let mut ext = Vec::new();
//! let profile = rtp::write_elements(&[Element { id: 1, data: &level }], &mut ext)?;
//! let packet = rtp::Packet {
//!     marker: true, payload_type: 111, sequence: 65_535, timestamp: 960, ssrc: 0x1234,
//!     csrcs: vec![], extension: Some(Extension { profile, data: &ext }),
//!     payload: b"opus frame", padding: 0,
//! };
//! let mut wire = BytesMut::new();
//! packet.encode(&mut wire)?;
//!
//! // The receiver: decode, read the level, account for the packet.
//! let got = rtp::Packet::decode(&wire)?;
//! let element = got.extension_elements().expect("RFC 8285").next().expect("one")?;
//! assert_eq!(AudioLevel::decode(element.data)?.level, 30);
//! let mut stats = ReceiveStats::new(48_000);
//! stats.handle_packet(Instant::now(), got.sequence, got.timestamp);
//!
//! // ... and its receiver report.
//! let rr = rtcp::Packet::ReceiverReport { ssrc: 0x5678, reports: vec![stats.report_block(0x1234, 0, 0)] };
//! let mut report = BytesMut::new();
//! rr.encode(&mut report)?;
//! assert_eq!(rtcp::decode_compound(&report, &rtcp::Limits::default())?, vec![rr]);
//! # let _ = Duration::ZERO;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![doc(test(attr(deny(warnings))))]
// docs.rs (`--cfg docsrs`, nightly) labels feature-gated items with their feature.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod adapt;
pub mod congestion;
#[cfg(feature = "tokio")]
pub mod driver;
mod error;
pub mod fec;
pub mod feedback;
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod jitter;
pub mod netsim;
#[cfg(feature = "opus")]
pub mod opus;
pub mod opus_packet;
pub mod quality;
pub mod red;
pub mod resample;
pub mod rtcp;
pub mod rtp;
#[cfg(feature = "opus")]
pub mod session;
pub mod stats;
pub mod timestretch;
pub mod video;
pub mod wav;

pub use error::{DecodeError, Error, Limit, UsageError};
