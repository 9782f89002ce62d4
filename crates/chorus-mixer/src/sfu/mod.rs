//! Video forwarding at a relay: a selective forwarding unit (SFU) that relays each
//! participant's streams to the others, choosing per receiver among a sender's
//! simulcast layers and the temporal layers inside them (SVC), and that cascades with
//! other relays (`docs/conference.md`, "Video forwarding").
//!
//! # Model
//! - A relay has local **endpoints** (participants attached to it, by participant
//!   id) and **links** to other relays. Both are [`Peer`]s.
//! - A **stream** ([`StreamInfo`]) is published by one participant with 1-8
//!   simulcast layers, each its own SSRC and bitrate, lowest first. Its **origin** at
//!   this relay is the endpoint that publishes it, or the link it was announced on.
//! - Every local endpoint receives every stream but its own (N-1 streams), one layer
//!   at a time, rewritten to a single SSRC (the stream's first layer SSRC) with
//!   continuous sequence numbers and timestamps (see `rewrite`), and the relay's
//!   own send time in the abs-send-time extension ([`SfuConfig::abs_send_time_id`]),
//!   so that its REMB estimates the relay's downlink to it.
//! - **Selection.** Each receiver has a bandwidth estimate (REMB from the receiver,
//!   or [`Sfu::set_bandwidth`]). It is shared among its streams: the active speaker's
//!   first, then in publication order, each gets its lowest layer if it fits (a stream
//!   that does not fit even that is paused), then each is raised to the highest layer
//!   the rest of the budget allows. A receiver can narrow the layers it accepts per
//!   stream ([`Message::Subscribe`] from the endpoint: thumbnails).
//! - **Temporal layers.** A stream that announces temporal scalability
//!   ([`StreamInfo::temporal`]) is priced per (layer, temporal layer): the lowest
//!   choice is a layer's base temporal layer (its lowest frame rate), and raising
//!   goes to the highest layer, then the highest temporal layer in it, that fits.
//!   Packets of frames above a receiver's temporal layer are not sent to it, and the
//!   packets after them are renumbered so that it sees no gap. Its temporal layer
//!   goes down at the next frame start, and up one temporal layer at a time at a
//!   frame of that layer that is a layer-sync point (VP8 Y bit, frame marking B bit)
//!   or at once at a keyframe, so every frame it gets has its references. An
//!   up-switch that finds no sync frame for [`SfuConfig::keyframe_interval`] asks
//!   the sender for a keyframe.
//! - **Switching.** A receiver moves to its target layer only at a packet that starts
//!   a keyframe of that layer ([`KeyframeRule`]); until then the current layer keeps
//!   flowing. A keyframe request goes to the sender at once when the target changes.
//!   A pause (no layer fits) takes effect immediately.
//! - **Keyframe requests** (PLI, or FIR per [`SfuConfig::fir`]) from receivers and
//!   from switches are aggregated per layer: at most one per
//!   [`SfuConfig::keyframe_interval`] reaches the sender; one asked for within the
//!   interval is sent when it ends. A switch still waiting a full interval later asks
//!   again (the request or the keyframe may have been lost).
//! - **Silent layers.** A layer that should be arriving (a local sender sends all its
//!   layers; a relayed one arrives while subscribed) and is silent for
//!   [`SfuConfig::layer_timeout`] leaves selection, so its receivers move to another
//!   layer instead of freezing; its next packet brings it back. A relayed layer,
//!   unsubscribed once nobody is on it, is tried again after four timeouts.
//! - **Sender reports** of a layer reach its receivers with their SSRC and RTP
//!   timestamp rewritten like the packets (lip sync), and subscribed links verbatim.
//! - **NACKs** from a receiver are answered from its leg's history of packets sent
//!   (the same bytes again); those no longer held are translated to the layer's own
//!   sequence numbers and sent to the stream's origin.
//! - **Receiver reports.** The relay keeps RFC 3550 receive statistics of every
//!   layer a local endpoint sends it, and every [`SfuConfig::report_interval`] sends
//!   that endpoint an RR with a report block per layer (loss, jitter, and LSR/DLSR
//!   from the endpoint's last sender report): a sender learns its uplink's loss and
//!   round-trip time to the relay, which its FEC and rate control need, although
//!   the relay terminates RTCP.
//! - **Cascading.** Relays announce streams to each other over links
//!   ([`Message::Publish`], [`Message::Unpublish`]). A relay that learns a stream
//!   from a second link ignores the second announcement, so every stream has one
//!   upstream direction per relay and announcements cannot loop, in a tree or a
//!   mesh. A relay subscribes on the upstream link to exactly the union of the layers
//!   its local receivers and its downstream links need ([`Message::Subscribe`]), and
//!   forwards each packet once per subscribed link, unchanged: a stream crosses each
//!   link at most once, whatever the number of receivers behind it. Keyframe
//!   requests and NACKs go upstream hop by hop and are aggregated at every relay.
//!
//! # Security
//! Every peer's leg has its own SRTP contexts ([`LegSecurity`]), given when the
//! endpoint or link is added: SRTP and SRTCP from a peer are unprotected with its
//! receive context before anything reads them, and a packet that does not
//! authenticate is dropped and counted ([`SfuStats::unauthenticated`]); everything the
//! relay sends, RTP it forwards and RTCP it forwards or generates (receiver reports,
//! PLI, FIR, NACK), is protected with the receiving peer's send context after
//! rewriting. The relay therefore reads and re-encrypts all media: it is trusted
//! with the plaintext (`docs/conference.md`, "Trust model"). On each leg an SRTP
//! index is used once: a packet whose rewritten sequence number is not after the
//! highest sent on that leg is dropped ([`SfuStats::late_dropped`]), and a NACK is
//! answered with the exact bytes sent before, kept in the leg's history
//! ([`SfuConfig::retransmit_history`]). Plaintext legs exist for tests and
//! benchmarks only, behind [`SfuConfig::allow_plaintext`].
//!
//! # Sans-IO contract
//! Inputs are [`Sfu::handle_input`] (an SRTP packet, an SRTCP compound packet or a
//! control message from a peer, with its arrival time) and the membership commands;
//! every call appends what must be sent to an [`Output`], which the caller drains
//! and [`Output::clear`]s. The forwarding path allocates nothing once the output's
//! buffers have grown: each transmit is a slice of one reused arena. After any call,
//! read [`Sfu::poll_timeout`] and call [`Sfu::handle_timeout`] then; an early call is
//! a harmless no-op; `now` never goes backwards.
//!
//! The relay is also a [`chorus_framing::DatagramCore`], for a driver or a
//! [`chorus_framing::Mux`] that owns its socket: give each peer its transport
//! address ([`Sfu::set_address`]); SRTP and SRTCP from those addresses go in
//! through the trait, transmits come out addressed, and control messages for the
//! peers' control channels come out as [`Event::Control`]. The `&mut Output` calls
//! stay the fast path (no copy); the trait path copies each input's output once.
//!
//! # Example
//!
//! ```
//! use std::time::Instant;
//! use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
//! use chorus_mixer::control::{Codec, Layer, StreamInfo};
//! use chorus_mixer::sfu::{Kind, LegSecurity, Output, Peer, Sfu, SfuConfig};
//!
//! // Each leg's keys come from the handshake with that participant; one key per
//! // direction (here: participant `p` sends under key 2p, receives under 2p + 1).
//! let session = |k: u8| {
//!     let s = Suite::AeadAes128Gcm;
//!     SrtpSession::new(Policy::new(s, &vec![k; s.key_len()], &vec![k; s.salt_len()])?)
//! };
//! let leg = |p: u8| -> Result<_, chorus_crypto::Error> {
//!     Ok(LegSecurity::srtp(session(2 * p)?, session(2 * p + 1)?))
//! };
//!
//! let now = Instant::now();
//! let mut sfu = Sfu::new(SfuConfig::default())?;
//! let mut out = Output::new();
//! sfu.add_endpoint(now, 1, leg(1)?, &mut out)?;
//! sfu.add_endpoint(now, 2, leg(2)?, &mut out)?;
//! // Participant 1 publishes VP8 in two layers; participant 2 can take 1 Mbit/s.
//! let layers = vec![
//!     Layer { ssrc: 0x100, bitrate_bps: 150_000 },
//!     Layer { ssrc: 0x101, bitrate_bps: 800_000 },
//! ];
//! sfu.publish(now, 1, StreamInfo::video(1, 1, Codec::Vp8, layers), &mut out)?;
//! // The relay asked participant 1 for a keyframe of the layer participant 2 gets.
//! assert_eq!(out.iter().next().map(|t| (t.to, t.kind)), Some((Peer::Endpoint(1), Kind::Rtcp)));
//! out.clear();
//!
//! // A keyframe packet of layer 1 (VP8: S bit, partition 0, P bit clear), which
//! // participant 1 protects with its send key.
//! let packet = [0x80, 96, 0, 7, 0, 0, 0, 9, 0, 0, 1, 1, 0x10, 0x00, 0x9d];
//! let mut srtp = packet.to_vec();
//! session(2)?.protect_rtp(&mut srtp)?;
//! sfu.handle_input(now, Peer::Endpoint(1), &srtp, &mut out)?;
//! let sent: Vec<_> = out.iter().collect();
//! assert_eq!(sent.len(), 1);
//! assert_eq!(sent[0].to, Peer::Endpoint(2));
//! // SRTP under participant 2's receive key, rewritten to the stream's SSRC (its
//! // first layer's).
//! let mut got = sent[0].bytes.to_vec();
//! session(5)?.unprotect_rtp(&mut got)?;
//! assert_eq!(&got[8..12], &[0, 0, 1, 0]);
//! assert_eq!(&got[12..], &packet[12..]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Choices
//! - The bandwidth estimate comes from REMB (draft-alvestrand-rmcat-remb), which
//!   browsers and most SFUs' receivers send; it is the receiver's own estimate of
//!   its downlink for all the streams it gets, which is exactly what selection needs.
//!   Receiver reports carry loss, not capacity, and are not used.
//! - Timestamps across a switch advance by the time elapsed since the last forwarded
//!   packet arrived, at the stream's clock rate: layers of one sender share capture
//!   times, so this keeps playout smooth without sender-report mapping.
//! - Simulcast layers are separate SSRCs. Temporal layers inside one SSRC are
//!   selected per receiver when the stream announces them and its temporal ids can
//!   be read (VP8 or frame marking); spatial layers inside one SSRC (VP9/AV1 SVC)
//!   are forwarded as one layer.

mod datagram;
mod keyframe;
mod leg;
mod rewrite;
mod slab;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus_crypto::AuthError;
use chorus_framing::{PacketKind, U32Map};
use chorus_media::stats::ReceiveStats;
use chorus_media::{rtcp, rtp};

pub use datagram::{Event, MAX_QUEUED};
pub use keyframe::{KeyframeRule, Temporal};
pub use leg::LegSecurity;
use leg::{Leg, Media, Resend, Sealed};
use rewrite::Rewriter;
use slab::{Key, Slab};

use crate::Error;
use crate::control::{self, Message, StreamInfo};

/// Where a packet comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// A local participant, by participant id.
    Endpoint(u32),
    /// A link to another relay, by link id.
    Link(u32),
}

/// What a transmit carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An RTP packet.
    Rtp,
    /// An RTCP packet (feedback).
    Rtcp,
    /// A control message ([`crate::control`]), for the peer's control channel.
    Control,
}

/// One packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// The destination.
    pub to: Peer,
    /// What the bytes are.
    pub kind: Kind,
    /// The packet.
    pub bytes: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
struct Item {
    to: Peer,
    kind: Kind,
    start: usize,
    end: usize,
}

/// The packets an [`Sfu`] asks the caller to send, in one reused arena. Calls append;
/// [`Output::clear`] empties it and keeps its capacity.
#[derive(Debug, Default)]
pub struct Output {
    buf: BytesMut,
    items: Vec<Item>,
}

impl Output {
    /// An empty output.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every transmit, keeping the memory for the next ones.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }

    /// Number of transmits.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there is nothing to send.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The transmits in the order they were produced.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Transmit<'_>> + '_ {
        self.items.iter().map(|i| Transmit {
            to: i.to,
            kind: i.kind,
            bytes: self.buf.get(i.start..i.end).unwrap_or_default(),
        })
    }

    fn push_with(&mut self, to: Peer, kind: Kind, write: impl FnOnce(&mut BytesMut) -> bool) {
        let start = self.buf.len();
        if write(&mut self.buf) {
            self.items.push(Item {
                to,
                kind,
                start,
                end: self.buf.len(),
            });
        } else {
            self.buf.truncate(start);
        }
    }

    /// Bytes already protected for `to` (a resend from its leg's history).
    fn push(&mut self, to: Peer, kind: Kind, bytes: &[u8]) {
        self.push_with(to, kind, |b| {
            b.extend_from_slice(bytes);
            true
        });
    }

    /// A packet `write` puts in plaintext, then sealed under `leg` for `to`.
    fn push_sealed(
        &mut self,
        to: Peer,
        leg: &mut Leg,
        media: Media,
        write: impl FnOnce(&mut BytesMut) -> bool,
    ) -> Option<Sealed> {
        let kind = match media {
            Media::Rtp => Kind::Rtp,
            Media::Rtcp => Kind::Rtcp,
        };
        let mut sealed = None;
        self.push_with(to, kind, |b| {
            let start = b.len();
            if !write(b) {
                return false;
            }
            let s = leg.seal(media, b, start);
            sealed = Some(s);
            s == Sealed::Ready
        });
        sealed
    }

    fn push_control(&mut self, to: Peer, msg: &Message<'_>) {
        self.push_with(to, Kind::Control, |b| msg.encode(b).is_ok());
    }
}

/// `bytes` (a decoded RTP packet) with sequence number, timestamp and SSRC replaced
/// (RFC 3550 §5.1: bytes 2-11).
fn rewritten(bytes: &[u8], seq: u16, ts: u32, ssrc: u32) -> impl FnOnce(&mut BytesMut) -> bool {
    move |b| {
        let start = b.len();
        b.extend_from_slice(bytes);
        let Some(h) = b.get_mut(start + 2..start + 12) else {
            return false;
        };
        h[..2].copy_from_slice(&seq.to_be_bytes());
        h[2..6].copy_from_slice(&ts.to_be_bytes());
        h[6..].copy_from_slice(&ssrc.to_be_bytes());
        true
    }
}

/// The peers' legs: their SRTP contexts and send histories.
#[derive(Debug, Default)]
struct Legs {
    endpoints: U32Map<Leg>,
    links: U32Map<Leg>,
    /// Sealing outcomes, merged into [`SfuStats`].
    late_dropped: u64,
    send_refused: u64,
}

impl Legs {
    fn get_mut(&mut self, peer: Peer) -> Option<&mut Leg> {
        match peer {
            Peer::Endpoint(id) => self.endpoints.get_mut(&id),
            Peer::Link(id) => self.links.get_mut(&id),
        }
    }

    /// Sends what `write` puts in plaintext to `to`, protected under its leg; whether
    /// it went out.
    fn send(
        &mut self,
        out: &mut Output,
        to: Peer,
        media: Media,
        write: impl FnOnce(&mut BytesMut) -> bool,
    ) -> bool {
        let Some(leg) = self.get_mut(to) else {
            return false;
        };
        match out.push_sealed(to, leg, media, write) {
            Some(Sealed::Ready) => true,
            Some(Sealed::Late) => {
                self.late_dropped += 1;
                false
            }
            Some(Sealed::Refused) => {
                self.send_refused += 1;
                false
            }
            None => false,
        }
    }

    /// An RTCP packet the relay generates or rewrites, SRTCP-protected for `to`.
    fn send_rtcp(&mut self, out: &mut Output, to: Peer, packet: &rtcp::Packet<'_>) {
        self.send(out, to, Media::Rtcp, |b| packet.encode(b).is_ok());
    }
}

/// SFU settings; validated by [`Sfu::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SfuConfig {
    /// The SSRC this relay sends its feedback (PLI, FIR, NACK) as. Default
    /// 0x5346_5530.
    pub rtcp_ssrc: u32,
    /// At most one keyframe request per layer per interval reaches a sender.
    /// Default 500 ms; must be non-zero.
    pub keyframe_interval: Duration,
    /// An expected layer silent this long is taken out of selection (a simulcast
    /// sender drops its upper layers under congestion) until a packet of it arrives;
    /// a relayed layer is tried again after four times this. Default 2 s; non-zero.
    pub layer_timeout: Duration,
    /// Ask local senders with FIR (RFC 5104) instead of PLI (RFC 4585). Links always
    /// carry PLI. Default false.
    pub fir: bool,
    /// A receiver's bandwidth before its first estimate, bit/s. Default 1,000,000.
    pub initial_bandwidth_bps: u64,
    /// Local endpoints at most. Default 256.
    pub max_endpoints: usize,
    /// Links at most. Default 32.
    pub max_links: usize,
    /// Streams at most (local and relayed). Default 512.
    pub max_streams: usize,
    /// Streams one local endpoint may publish at most (camera, screen, audio ...), so
    /// that one participant cannot take the relay's whole `max_streams`. Default 4.
    pub max_streams_per_endpoint: usize,
    /// Layers per stream at most, 1-8. Default 4.
    pub max_layers: usize,
    /// Longest SRTP or SRTCP packet accepted, bytes as received (SRTP tag and SRTCP
    /// trailer included). Default 1,500.
    pub max_packet_len: usize,
    /// How often each local sender gets a receiver report about its layers. Default
    /// 1 s; non-zero.
    pub report_interval: Duration,
    /// The RFC 8285 one-byte id of the abs-send-time header extension in the
    /// conference (the one chorus-media sessions use, 3, by default); `None` leaves
    /// it alone. Packets sent to endpoints carry the relay's send time in it, so a
    /// receiver's delay-based estimate (and its REMB, which drives layer selection)
    /// measures the relay-to-receiver path, not the sender's uplink as well.
    pub abs_send_time_id: Option<u8>,
    /// Accept [`LegSecurity::Plaintext`] legs, which carry media in clear. Default
    /// false: every leg must be SRTP, and a plaintext one is refused with
    /// [`SfuError::PlaintextRefused`]. Only tests and benchmarks set it.
    pub allow_plaintext: bool,
    /// RTP packets each leg remembers as sent (protected), to answer its NACKs with
    /// the same bytes (RFC 4585 §6.2.1) instead of asking the sender. Memory: up to
    /// this many times [`SfuConfig::max_packet_len`] plus the SRTP tag per leg.
    /// Default 256 (about 250 ms of 10 streams at 1 Mbit/s); 0 turns resending off;
    /// at most 4096.
    pub retransmit_history: usize,
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            rtcp_ssrc: 0x5346_5530,
            keyframe_interval: Duration::from_millis(500),
            layer_timeout: Duration::from_secs(2),
            fir: false,
            initial_bandwidth_bps: 1_000_000,
            max_endpoints: 256,
            max_links: 32,
            max_streams: 512,
            max_streams_per_endpoint: 4,
            max_layers: 4,
            max_packet_len: 1500,
            report_interval: Duration::from_secs(1),
            abs_send_time_id: Some(3),
            allow_plaintext: false,
            retransmit_history: 256,
        }
    }
}

/// What the SFU refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SfuError {
    /// A packet for an SSRC no known stream has (peer's fault).
    UnknownSsrc(u32),
    /// Media for a stream from a peer that is not the stream's origin (peer's fault).
    WrongOrigin(u32),
    /// A packet longer than [`SfuConfig::max_packet_len`].
    PacketTooLong {
        /// The length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A stream whose codec has no keyframe rule and no frame marking.
    UnsupportedCodec(u32),
    /// A stream that announces temporal layers whose packets carry no temporal id
    /// the relay can read (neither VP8 nor frame marking).
    TemporalUnreadable(u32),
    /// A stream id already in use.
    DuplicateStream(u32),
    /// An SSRC already used by another stream's layer.
    DuplicateSsrc(u32),
    /// A stream published by an endpoint in another participant's name.
    NotPublisher(u32),
    /// An endpoint or link id not known (caller's mistake).
    UnknownPeer(Peer),
    /// An endpoint or link id already present (caller's mistake).
    DuplicatePeer(Peer),
    /// A configured maximum was reached; the string names it.
    Limit(&'static str),
    /// An address already given to another peer ([`Sfu::set_address`]; caller's
    /// mistake).
    DuplicateAddress(Peer),
    /// A datagram through [`chorus_framing::DatagramCore::handle_datagram`] from an
    /// address no peer has, or that is not SRTP/SRTCP (control messages come only
    /// over a peer's authenticated control channel): its `accepts` says no to it.
    NotRoutable,
    /// An invalid configuration (the string says which rule).
    BadConfig(&'static str),
    /// A [`LegSecurity::Plaintext`] leg without [`SfuConfig::allow_plaintext`]
    /// (caller's mistake).
    PlaintextRefused(Peer),
}

impl core::fmt::Display for SfuError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::UnknownSsrc(s) => write!(f, "no stream has SSRC {s:#010x}"),
            Self::WrongOrigin(s) => write!(f, "SSRC {s:#010x} sent by a peer not its origin"),
            Self::PacketTooLong { len, max } => write!(f, "packet of {len} bytes exceeds {max}"),
            Self::UnsupportedCodec(s) => write!(f, "stream {s}: no keyframe rule for its codec"),
            Self::TemporalUnreadable(s) => {
                write!(
                    f,
                    "stream {s}: temporal layers announced but no temporal ids readable"
                )
            }
            Self::DuplicateStream(s) => write!(f, "stream {s} already exists"),
            Self::DuplicateSsrc(s) => write!(f, "SSRC {s:#010x} already in use"),
            Self::NotPublisher(s) => write!(f, "stream {s} published for another participant"),
            Self::UnknownPeer(p) => write!(f, "unknown peer {p:?}"),
            Self::DuplicatePeer(p) => write!(f, "peer {p:?} already present"),
            Self::Limit(what) => write!(f, "limit reached: {what}"),
            Self::DuplicateAddress(p) => write!(f, "address already used by {p:?}"),
            Self::NotRoutable => f.write_str("datagram from no peer's address, or not media"),
            Self::BadConfig(why) => write!(f, "invalid SFU configuration: {why}"),
            Self::PlaintextRefused(p) => write!(f, "plaintext leg for {p:?} not allowed"),
        }
    }
}

impl std::error::Error for SfuError {}

/// Counters since creation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SfuStats {
    /// RTP packets received from origins.
    pub received: u64,
    /// RTP packets sent to endpoints (rewritten) and links (verbatim).
    pub forwarded: u64,
    /// Keyframe requests sent (after aggregation).
    pub keyframe_requests: u64,
    /// Keyframe requests absorbed by aggregation.
    pub keyframe_requests_aggregated: u64,
    /// Layer switches completed by receivers.
    pub switches: u64,
    /// RTP packets of a receiver's layer not sent to it because their temporal layer
    /// is above the one selected for it.
    pub temporal_dropped: u64,
    /// Feedback ignored (unknown SSRC, no such receiver).
    pub ignored_feedback: u64,
    /// SRTP or SRTCP packets from a leg that failed to unprotect (bad tag, not SRTP,
    /// no room for another SSRC context): dropped, never read or forwarded.
    pub unauthenticated: u64,
    /// SRTP or SRTCP packets from a leg that authenticated but were already received
    /// (RFC 3711 §3.3.2 replay window): dropped.
    pub replayed: u64,
    /// RTP packets not sent on a leg because their sequence number is not after the
    /// highest already sent there for their SSRC (reordered or retransmitted
    /// upstream): an SRTP index is never protected twice.
    pub late_dropped: u64,
    /// Packets a leg's SRTP send context refused (its `max_ssrcs`, an exhausted
    /// counter): not sent.
    pub send_refused: u64,
    /// NACKed RTP packets resent from a leg's history, byte for byte as first sent.
    pub retransmitted: u64,
    /// Packets produced on the [`chorus_framing::DatagramCore`] path for a peer
    /// without an address ([`Sfu::set_address`]): not sent.
    pub unaddressed: u64,
    /// Transmits and events of the [`chorus_framing::DatagramCore`] path dropped
    /// because the owner left more than [`MAX_QUEUED`] undrained.
    pub queue_dropped: u64,
}

/// A receiver's view of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// The layer being forwarded, if any.
    pub current: Option<u8>,
    /// The layer selection wants; differs from `current` until its keyframe.
    pub target: Option<u8>,
    /// The highest temporal layer forwarded (0 for a stream without temporal layers).
    pub temporal: u8,
    /// The temporal layer selection wants; differs from `temporal` until the next
    /// frame start (down) or layer-sync frame (up).
    pub temporal_target: u8,
}

/// Largest [`SfuConfig::retransmit_history`].
const MAX_RETRANSMIT_HISTORY: usize = 4096;

/// What selection gives a receiver of a stream: (layer, highest temporal layer).
type Choice = (u8, u8);

#[derive(Debug)]
struct LayerState {
    ssrc: u32,
    /// When a packet last arrived, or when the layer started being expected.
    heard: Option<Instant>,
    /// Set when an expected layer went silent for `layer_timeout`: not selected.
    stalled_at: Option<Instant>,
    last_request: Option<Instant>,
    pending: bool,
    fir_seq: u8,
    /// Receive statistics (a local sender's layers only: the relay reports on them).
    stats: ReceiveStats,
    /// The sender's last SR for this layer: its NTP middle bits and when it came.
    last_sr: Option<(u32, Instant)>,
}

#[derive(Debug)]
struct Forward {
    endpoint: u32,
    current: Option<u8>,
    target: Option<u8>,
    /// The highest temporal layer forwarded, and the one wanted.
    tid: u8,
    tid_target: u8,
    /// Since when `tid` has been below `tid_target`: a sender that marks no sync
    /// frames is asked for a keyframe after `keyframe_interval`.
    temporal_since: Option<Instant>,
    /// Layers the receiver accepts (bit i = layer i).
    accept: u8,
    rewriter: Rewriter,
}

#[derive(Debug)]
struct Stream {
    info: StreamInfo,
    origin: Peer,
    rule: KeyframeRule,
    layers: Vec<LayerState>,
    forwards: Vec<Forward>,
    /// Downstream links and the layers each subscribed to.
    links: Vec<(u32, u8)>,
    /// The layers subscribed on the origin link.
    upstream: u8,
}

impl Stream {
    /// The layers that should be arriving (bit i = layer i): a local sender sends
    /// every layer; a relayed layer arrives while subscribed.
    fn sending(&self) -> u8 {
        match self.origin {
            Peer::Endpoint(_) => 0xff,
            Peer::Link(_) => self.upstream,
        }
    }

    /// The layers out of selection because they went silent.
    fn stalled(&self) -> u8 {
        self.layers
            .iter()
            .enumerate()
            .fold(0, |m, (i, l)| m | u8::from(l.stalled_at.is_some()) << i)
    }

    fn needed(&self) -> u8 {
        let bit = |l: Option<u8>| l.map_or(0, |l| 1u8 << l);
        self.forwards
            .iter()
            .fold(0, |m, f| m | bit(f.current) | bit(f.target))
            | self.links.iter().fold(0, |m, (_, l)| m | l)
    }
}

#[derive(Debug)]
struct Endpoint {
    id: u32,
    estimate_bps: u64,
}

/// The selective forwarding unit of one relay. See the module docs for the model and
/// the sans-IO contract.
#[derive(Debug)]
pub struct Sfu {
    config: SfuConfig,
    /// Local endpoints, and their keys by participant id.
    endpoints: Slab<Endpoint>,
    endpoint_keys: U32Map<Key>,
    /// Links (by link id), and their keys by link id.
    links: Slab<u32>,
    link_keys: U32Map<Key>,
    /// Streams, local and relayed, and their keys by stream id.
    streams: Slab<Stream>,
    stream_keys: U32Map<Key>,
    /// Layer SSRC -> (stream, layer index).
    by_ssrc: U32Map<(Key, u8)>,
    speaker: Option<u32>,
    stats: SfuStats,
    /// When the next receiver reports go out.
    next_report: Option<Instant>,
    /// The relay's abs-send-time clock starts at the first packet.
    epoch: Option<Instant>,
    /// A packet with the relay's abs-send-time, copied once for all its receivers.
    stamped: Vec<u8>,
    /// Each peer's SRTP contexts and send history.
    legs: Legs,
    /// The packet being unprotected.
    plain: Vec<u8>,
    /// Addresses and queues of the [`chorus_framing::DatagramCore`] path.
    wire: datagram::Wire,
}

fn media_err(e: chorus_media::DecodeError) -> Error {
    Error::Media(chorus_media::Error::Decode(e))
}

impl Sfu {
    /// An SFU with no endpoints, links or streams.
    ///
    /// # Errors
    /// [`SfuError::BadConfig`] for an invalid configuration.
    pub fn new(config: SfuConfig) -> Result<Self, Error> {
        if config.keyframe_interval.is_zero() {
            return Err(SfuError::BadConfig("keyframe_interval must be non-zero").into());
        }
        if config.layer_timeout.is_zero() {
            return Err(SfuError::BadConfig("layer_timeout must be non-zero").into());
        }
        if config
            .abs_send_time_id
            .is_some_and(|id| !(1..=14).contains(&id))
        {
            return Err(SfuError::BadConfig("abs_send_time_id must be 1-14").into());
        }
        if config.report_interval.is_zero() {
            return Err(SfuError::BadConfig("report_interval must be non-zero").into());
        }
        if !(1..=control::MAX_LAYERS).contains(&config.max_layers) {
            return Err(SfuError::BadConfig("max_layers must be 1-8").into());
        }
        if config.max_packet_len < rtp::FIXED_HEADER_LEN {
            return Err(SfuError::BadConfig("max_packet_len below an RTP header").into());
        }
        if config.retransmit_history > MAX_RETRANSMIT_HISTORY {
            return Err(SfuError::BadConfig("retransmit_history must be at most 4096").into());
        }
        Ok(Self {
            config,
            endpoints: Slab::default(),
            endpoint_keys: U32Map::default(),
            links: Slab::default(),
            link_keys: U32Map::default(),
            streams: Slab::default(),
            stream_keys: U32Map::default(),
            by_ssrc: U32Map::default(),
            speaker: None,
            stats: SfuStats::default(),
            next_report: None,
            epoch: None,
            stamped: Vec::new(),
            legs: Legs::default(),
            plain: Vec::new(),
            wire: datagram::Wire::default(),
        })
    }

    /// Counters since creation.
    #[must_use]
    pub const fn stats(&self) -> SfuStats {
        SfuStats {
            late_dropped: self.legs.late_dropped,
            send_refused: self.legs.send_refused,
            unaddressed: self.wire.unaddressed,
            queue_dropped: self.wire.queue_dropped,
            ..self.stats
        }
    }

    /// A new leg for `peer`, refused if it is plaintext and plaintext is not allowed.
    fn leg(&self, peer: Peer, security: LegSecurity) -> Result<Leg, Error> {
        if security.is_plaintext() && !self.config.allow_plaintext {
            return Err(SfuError::PlaintextRefused(peer).into());
        }
        Ok(Leg::new(security, self.config.retransmit_history))
    }

    /// The streams known here, local and relayed.
    pub fn streams(&self) -> impl Iterator<Item = &StreamInfo> + '_ {
        self.streams.values().map(|s| &s.info)
    }

    /// Where `stream` comes from at this relay.
    #[must_use]
    pub fn origin(&self, stream: u32) -> Option<Peer> {
        self.stream(stream).map(|s| s.origin)
    }

    /// What `endpoint` receives of `stream`.
    #[must_use]
    pub fn selection(&self, endpoint: u32, stream: u32) -> Option<Selection> {
        self.stream(stream)?
            .forwards
            .iter()
            .find(|f| f.endpoint == endpoint)
            .map(|f| Selection {
                current: f.current,
                target: f.target,
                temporal: f.tid,
                temporal_target: f.tid_target,
            })
    }

    /// The layers of `stream` forwarded to `link` (bit i = layer i).
    #[must_use]
    pub fn link_layers(&self, link: u32, stream: u32) -> u8 {
        self.stream(stream).map_or(0, |s| {
            s.links
                .iter()
                .find(|(l, _)| *l == link)
                .map_or(0, |(_, m)| *m)
        })
    }

    /// The key of stream id `stream`.
    fn stream_key(&self, stream: u32) -> Option<Key> {
        self.stream_keys.get(&stream).copied()
    }

    fn stream(&self, stream: u32) -> Option<&Stream> {
        self.streams.get(self.stream_key(stream)?)
    }

    fn endpoint_mut(&mut self, id: u32) -> Result<&mut Endpoint, Error> {
        self.endpoint_keys
            .get(&id)
            .and_then(|&k| self.endpoints.get_mut(k))
            .ok_or_else(|| SfuError::UnknownPeer(Peer::Endpoint(id)).into())
    }

    /// Whether `peer` was added (and not removed).
    fn is_known(&self, peer: Peer) -> bool {
        match peer {
            Peer::Endpoint(e) => self.endpoint_keys.contains_key(&e),
            Peer::Link(l) => self.link_keys.contains_key(&l),
        }
    }

    /// The first stream whose origin is `origin`.
    fn first_stream_from(&self, origin: Peer) -> Option<Key> {
        self.streams
            .iter()
            .find(|(_, s)| s.origin == origin)
            .map(|(k, _)| k)
    }

    /// Attaches a local participant, whose media is protected with `security` (its
    /// own SRTP keys in each direction): it starts receiving every stream but its
    /// own.
    ///
    /// # Errors
    /// [`SfuError::DuplicatePeer`], [`SfuError::Limit`],
    /// [`SfuError::PlaintextRefused`].
    pub fn add_endpoint(
        &mut self,
        now: Instant,
        id: u32,
        security: LegSecurity,
        out: &mut Output,
    ) -> Result<(), Error> {
        if self.endpoint_keys.contains_key(&id) {
            return Err(SfuError::DuplicatePeer(Peer::Endpoint(id)).into());
        }
        if self.endpoints.len() >= self.config.max_endpoints {
            return Err(SfuError::Limit("max_endpoints").into());
        }
        let leg = self.leg(Peer::Endpoint(id), security)?;
        self.legs.endpoints.insert(id, leg);
        let key = self.endpoints.insert(Endpoint {
            id,
            estimate_bps: self.config.initial_bandwidth_bps,
        });
        self.endpoint_keys.insert(id, key);
        self.streams.for_each_mut(|s| {
            if s.info.participant != id {
                s.forwards.push(Forward::new(id));
            }
        });
        self.reallocate(now, id, out);
        Ok(())
    }

    /// Detaches a local participant: its streams are unpublished and it receives
    /// nothing more.
    ///
    /// # Errors
    /// [`SfuError::UnknownPeer`].
    pub fn remove_endpoint(
        &mut self,
        now: Instant,
        id: u32,
        out: &mut Output,
    ) -> Result<(), Error> {
        let key = self
            .endpoint_keys
            .remove(&id)
            .ok_or(SfuError::UnknownPeer(Peer::Endpoint(id)))?;
        self.endpoints.remove(key);
        self.legs.endpoints.remove(&id);
        self.wire.forget(Peer::Endpoint(id));
        while let Some(sk) = self.first_stream_from(Peer::Endpoint(id)) {
            self.remove_stream(now, sk, out);
        }
        for sk in self.streams.keys() {
            if let Some(s) = self.streams.get_mut(sk) {
                s.forwards.retain(|f| f.endpoint != id);
            }
            self.update_upstream(now, sk, out);
        }
        Ok(())
    }

    /// Adds a link to another relay, whose media is protected with `security` (the
    /// link's own SRTP keys in each direction), and announces every stream not
    /// learned from it.
    ///
    /// # Errors
    /// [`SfuError::DuplicatePeer`], [`SfuError::Limit`],
    /// [`SfuError::PlaintextRefused`].
    pub fn add_link(
        &mut self,
        id: u32,
        security: LegSecurity,
        out: &mut Output,
    ) -> Result<(), Error> {
        if self.link_keys.contains_key(&id) {
            return Err(SfuError::DuplicatePeer(Peer::Link(id)).into());
        }
        if self.links.len() >= self.config.max_links {
            return Err(SfuError::Limit("max_links").into());
        }
        let leg = self.leg(Peer::Link(id), security)?;
        self.legs.links.insert(id, leg);
        let key = self.links.insert(id);
        self.link_keys.insert(id, key);
        for s in self.streams.values() {
            if s.origin != Peer::Link(id) {
                out.push_control(Peer::Link(id), &Message::Publish(s.info.clone()));
            }
        }
        Ok(())
    }

    /// Removes a link: streams learned from it are unpublished (and the other links
    /// told), and nothing more is forwarded to it.
    ///
    /// # Errors
    /// [`SfuError::UnknownPeer`].
    pub fn remove_link(&mut self, now: Instant, id: u32, out: &mut Output) -> Result<(), Error> {
        let key = self
            .link_keys
            .remove(&id)
            .ok_or(SfuError::UnknownPeer(Peer::Link(id)))?;
        self.links.remove(key);
        self.legs.links.remove(&id);
        self.wire.forget(Peer::Link(id));
        while let Some(sk) = self.first_stream_from(Peer::Link(id)) {
            self.remove_stream(now, sk, out);
        }
        for sk in self.streams.keys() {
            if let Some(s) = self.streams.get_mut(sk) {
                s.links.retain(|(l, _)| *l != id);
            }
            self.update_upstream(now, sk, out);
        }
        Ok(())
    }

    /// A local endpoint publishes a stream (the same as its [`Message::Publish`]).
    ///
    /// # Errors
    /// [`SfuError::UnknownPeer`], [`SfuError::NotPublisher`], and as a stream
    /// announcement: [`SfuError::UnsupportedCodec`], [`SfuError::DuplicateStream`],
    /// [`SfuError::DuplicateSsrc`], [`SfuError::Limit`].
    pub fn publish(
        &mut self,
        now: Instant,
        endpoint: u32,
        info: StreamInfo,
        out: &mut Output,
    ) -> Result<(), Error> {
        self.endpoint_mut(endpoint)?;
        if info.participant != endpoint {
            return Err(SfuError::NotPublisher(info.stream).into());
        }
        let own = Peer::Endpoint(endpoint);
        if self.streams.values().filter(|s| s.origin == own).count()
            >= self.config.max_streams_per_endpoint
        {
            return Err(SfuError::Limit("max_streams_per_endpoint").into());
        }
        self.add_stream(now, Peer::Endpoint(endpoint), info, out)
    }

    /// Sets a receiver's bandwidth estimate (bit/s) and re-selects its layers. A REMB
    /// from the endpoint does the same.
    ///
    /// # Errors
    /// [`SfuError::UnknownPeer`].
    pub fn set_bandwidth(
        &mut self,
        now: Instant,
        endpoint: u32,
        bps: u64,
        out: &mut Output,
    ) -> Result<(), Error> {
        self.endpoint_mut(endpoint)?.estimate_bps = bps;
        self.reallocate(now, endpoint, out);
        Ok(())
    }

    /// The active speaker changed: their streams are served first when bandwidth is
    /// shared.
    pub fn set_speaker(&mut self, now: Instant, participant: Option<u32>, out: &mut Output) {
        if self.speaker == participant {
            return;
        }
        self.speaker = participant;
        let ids: Vec<u32> = self.endpoints.values().map(|e| e.id).collect();
        for id in ids {
            self.reallocate(now, id, out);
        }
    }

    /// One packet from a peer. SRTP or SRTCP (RFC 5761 §4: told apart by the second
    /// byte, chorus-framing's `classify`) is unprotected with the peer's leg before
    /// anything reads it (RFC 3711 §3.3, §3.4); anything else is a control message
    /// ([`crate::control`]), which the caller must only pass on from the peer's
    /// authenticated control channel.
    ///
    /// # Errors
    /// The packet is rejected and nothing is forwarded: [`Error::Srtp`] for a packet
    /// that does not authenticate or is a replay (counted in
    /// [`SfuStats::unauthenticated`] and [`SfuStats::replayed`]), [`Error::Media`] for
    /// bytes that are not RTP/RTCP, [`Error::Control`] for an invalid control
    /// message, [`Error::Sfu`] for a packet the relay has no place for (from an
    /// unknown peer: [`SfuError::UnknownPeer`]).
    pub fn handle_input(
        &mut self,
        now: Instant,
        from: Peer,
        bytes: &[u8],
        out: &mut Output,
    ) -> Result<(), Error> {
        let media = match chorus_framing::classify(bytes) {
            PacketKind::Rtp => Media::Rtp,
            PacketKind::Rtcp => Media::Rtcp,
            _ => {
                let msg = Message::decode(bytes).map_err(Error::Control)?;
                return self.handle_control(now, from, &msg, out);
            }
        };
        if bytes.len() > self.config.max_packet_len {
            return Err(SfuError::PacketTooLong {
                len: bytes.len(),
                max: self.config.max_packet_len,
            }
            .into());
        }
        let leg = self.legs.get_mut(from).ok_or(SfuError::UnknownPeer(from))?;
        let mut plain = core::mem::take(&mut self.plain);
        plain.clear();
        plain.extend_from_slice(bytes);
        let result = match leg.open(media, &mut plain) {
            Err(e) => {
                if e == chorus_crypto::Error::Auth(AuthError::Replay) {
                    self.stats.replayed += 1;
                } else {
                    self.stats.unauthenticated += 1;
                }
                Err(Error::Srtp(e))
            }
            Ok(()) => match media {
                Media::Rtp => self.handle_rtp(now, from, &plain, out),
                Media::Rtcp => self.handle_rtcp(now, from, &plain, out),
            },
        };
        self.plain = plain;
        result
    }

    /// One RTP packet from `from`, unprotected: forwarded to the links subscribed to
    /// its layer and, rewritten, to the local receivers whose layer it is.
    fn handle_rtp(
        &mut self,
        now: Instant,
        from: Peer,
        bytes: &[u8],
        out: &mut Output,
    ) -> Result<(), Error> {
        let packet = rtp::Packet::decode(bytes).map_err(media_err)?;
        let &(sk, layer) = self
            .by_ssrc
            .get(&packet.ssrc)
            .ok_or(SfuError::UnknownSsrc(packet.ssrc))?;
        let Some(stream) = self.streams.get_mut(sk) else {
            return Err(SfuError::UnknownSsrc(packet.ssrc).into());
        };
        if stream.origin != from {
            return Err(SfuError::WrongOrigin(packet.ssrc).into());
        }
        self.stats.received += 1;
        let mut resumed = false;
        if let Some(l) = stream.layers.get_mut(usize::from(layer)) {
            l.heard = Some(now);
            resumed = l.stalled_at.take().is_some();
            if let Peer::Endpoint(_) = from {
                l.stats
                    .handle_packet(now, packet.sequence, packet.timestamp);
                self.next_report
                    .get_or_insert(now + self.config.report_interval);
            }
        }
        let bit = 1u8 << layer;
        for &(link, mask) in &stream.links {
            if mask & bit != 0
                && self.legs.send(out, Peer::Link(link), Media::Rtp, |b| {
                    b.extend_from_slice(bytes);
                    true
                })
            {
                self.stats.forwarded += 1;
            }
        }
        let out_ssrc = stream.layers.first().map_or(packet.ssrc, |l| l.ssrc);
        let clock_rate = stream.info.clock_rate;
        // Endpoints get the packet with the relay's send time (links: as sent).
        let epoch = *self.epoch.get_or_insert(now);
        let mut stamped = core::mem::take(&mut self.stamped);
        stamped.clear();
        if let Some(at) = self
            .config
            .abs_send_time_id
            .and_then(|id| abs_send_time_offset(&packet, bytes, id))
        {
            stamped.extend_from_slice(bytes);
            let time =
                chorus_media::congestion::abs_send_time(now.saturating_duration_since(epoch));
            if let Some(field) = stamped.get_mut(at..at + 3) {
                field.copy_from_slice(&time);
            }
        }
        let source: &[u8] = if stamped.is_empty() { bytes } else { &stamped };
        // Read only for streams that announced temporal layers: the others forward
        // every packet of the layer without looking into it.
        let temporal = (!stream.info.temporal.is_empty()).then(|| stream.rule.temporal(&packet));
        let mut keyframe = None;
        let mut switched = false;
        for f in &mut stream.forwards {
            let mapped = if f.current == Some(layer) {
                if temporal.is_some_and(|t| !f.admits(t, now)) {
                    f.rewriter.skip(packet.sequence);
                    self.stats.temporal_dropped += 1;
                    None
                } else {
                    f.rewriter.map(packet.sequence, packet.timestamp, now)
                }
            } else if f.target == Some(layer)
                && *keyframe.get_or_insert_with(|| stream.rule.starts_keyframe(&packet))
            {
                f.current = Some(layer);
                // A keyframe references nothing: every temporal layer can start here.
                f.tid = f.tid_target;
                f.temporal_since = None;
                switched = true;
                self.stats.switches += 1;
                Some({
                    // A receiver's first packet of this SSRC on a leg that
                    // carried it before (the stream was published again):
                    // numbering continues after what the leg sent, since an
                    // SRTP index is never used twice.
                    if f.rewriter.is_fresh()
                        && let Some(leg) = self.legs.endpoints.get(&f.endpoint)
                        && let Some(last) = leg.sent_seq(out_ssrc)
                    {
                        f.rewriter.resume_after(last);
                    }
                    f.rewriter
                        .switch(packet.sequence, packet.timestamp, now, clock_rate)
                })
            } else {
                None
            };
            if let Some((seq, ts)) = mapped
                && self.legs.send(
                    out,
                    Peer::Endpoint(f.endpoint),
                    Media::Rtp,
                    rewritten(source, seq, ts, out_ssrc),
                )
            {
                self.stats.forwarded += 1;
            }
        }
        self.stamped = stamped;
        if switched {
            self.update_upstream(now, sk, out);
        }
        if resumed {
            self.reselect_receivers_of(now, sk, out);
        }
        Ok(())
    }

    /// One RTCP compound packet from `from`, unprotected: REMB sets a receiver's
    /// estimate; PLI and FIR ask for a keyframe of what the receiver gets (or, from a
    /// link, of the named layer); NACKs are answered from the leg's history, the rest
    /// translated and sent towards the sender; a sender report goes to the layer's
    /// receivers, rewritten. Other packets are ignored: the relay terminates RTCP.
    fn handle_rtcp(
        &mut self,
        now: Instant,
        from: Peer,
        bytes: &[u8],
        out: &mut Output,
    ) -> Result<(), Error> {
        let packets = rtcp::decode_compound(bytes, &rtcp::Limits::default()).map_err(media_err)?;
        for p in packets {
            match p {
                rtcp::Packet::Remb { bitrate, .. } => {
                    if let Peer::Endpoint(e) = from {
                        self.set_bandwidth(now, e, bitrate.bps(), out)?;
                    }
                }
                rtcp::Packet::Pli { media_ssrc, .. } => {
                    self.feedback_keyframe(now, from, media_ssrc, out);
                }
                rtcp::Packet::Fir { entries, .. } => {
                    for e in entries {
                        self.feedback_keyframe(now, from, e.ssrc, out);
                    }
                }
                rtcp::Packet::Nack {
                    media_ssrc,
                    entries,
                    ..
                } => self.feedback_nack(from, media_ssrc, &entries, out),
                rtcp::Packet::SenderReport { ssrc, info, .. } => {
                    self.forward_sender_report(now, from, ssrc, info, out);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A sender report of a layer (RFC 3550 §6.4.1) from its origin: verbatim to the
    /// links subscribed to the layer, and to each receiver on the layer with the
    /// receiver's SSRC and its RTP timestamp mapping, so that receivers keep the
    /// NTP-to-RTP mapping lip sync needs. Report blocks (about what the sender
    /// receives) are not forwarded.
    fn forward_sender_report(
        &mut self,
        now: Instant,
        from: Peer,
        ssrc: u32,
        info: rtcp::SenderInfo,
        out: &mut Output,
    ) {
        let Some(&(sk, li)) = self.by_ssrc.get(&ssrc) else {
            self.stats.ignored_feedback += 1;
            return;
        };
        let Some(s) = self.streams.get_mut(sk).filter(|s| s.origin == from) else {
            self.stats.ignored_feedback += 1;
            return;
        };
        if let (Peer::Endpoint(_), Some(l)) = (from, s.layers.get_mut(usize::from(li))) {
            l.last_sr = Some((rtcp::ntp_middle(info.ntp), now));
        }
        let s = &*s;
        let sr = |ssrc, rtp_timestamp| rtcp::Packet::SenderReport {
            ssrc,
            info: rtcp::SenderInfo {
                rtp_timestamp,
                ..info
            },
            reports: Vec::new(),
        };
        for &(link, mask) in &s.links {
            if mask & (1 << li) != 0 {
                self.legs
                    .send_rtcp(out, Peer::Link(link), &sr(ssrc, info.rtp_timestamp));
            }
        }
        let out_ssrc = s.layers.first().map_or(ssrc, |l| l.ssrc);
        for f in &s.forwards {
            if f.current == Some(li)
                && let Some(ts) = f.rewriter.rewrite_timestamp(info.rtp_timestamp)
            {
                self.legs
                    .send_rtcp(out, Peer::Endpoint(f.endpoint), &sr(out_ssrc, ts));
            }
        }
    }

    /// A control message from a peer. Publish, Unpublish and Subscribe drive
    /// forwarding (from an endpoint for its own streams and its receive preferences,
    /// from a link for relayed streams); Speaker reorders bandwidth sharing. Join,
    /// Leave and Mute are the conference layer's business and are accepted unchanged.
    ///
    /// # Errors
    /// As [`Sfu::publish`] for a Publish; [`SfuError::UnknownPeer`] from a peer that
    /// was never added.
    pub fn handle_control(
        &mut self,
        now: Instant,
        from: Peer,
        msg: &Message<'_>,
        out: &mut Output,
    ) -> Result<(), Error> {
        if !self.is_known(from) {
            return Err(SfuError::UnknownPeer(from).into());
        }
        match (from, msg) {
            (Peer::Endpoint(e), Message::Publish(info)) => {
                self.publish(now, e, info.clone(), out)?;
            }
            // Learned already by another path (a mesh): keep the first origin.
            (Peer::Link(_), Message::Publish(info)) if self.stream_key(info.stream).is_none() => {
                self.add_stream(now, from, info.clone(), out)?;
            }
            (_, Message::Unpublish { stream }) => {
                if let Some(sk) = self.stream_key(*stream)
                    && self.streams.get(sk).is_some_and(|s| s.origin == from)
                {
                    self.remove_stream(now, sk, out);
                }
            }
            (Peer::Link(l), Message::Subscribe { stream, layers }) => {
                if let Some(sk) = self.stream_key(*stream)
                    && let Some(s) = self.streams.get_mut(sk).filter(|s| s.origin != from)
                {
                    s.links.retain(|(x, _)| *x != l);
                    if *layers != 0 {
                        s.links.push((l, *layers));
                    }
                    self.update_upstream(now, sk, out);
                }
            }
            (Peer::Endpoint(e), Message::Subscribe { stream, layers }) => {
                if let Some(f) = self
                    .stream_key(*stream)
                    .and_then(|sk| self.streams.get_mut(sk))
                    .and_then(|s| s.forwards.iter_mut().find(|f| f.endpoint == e))
                {
                    f.accept = *layers;
                    self.reallocate(now, e, out);
                }
            }
            (_, Message::Speaker { participant }) => self.set_speaker(now, *participant, out),
            _ => {}
        }
        Ok(())
    }

    /// Sends the keyframe requests whose aggregation interval has ended, repeats
    /// those for switches still waiting, and takes silent layers out of selection.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Output) {
        if self.next_report.is_some_and(|t| now >= t) {
            self.send_receiver_reports(now, out);
        }
        let interval = self.config.keyframe_interval;
        let timeout = self.config.layer_timeout;
        for sk in self.streams.keys() {
            let mut changed = false;
            let Some(s) = self.streams.get_mut(sk) else {
                continue;
            };
            let sending = s.sending();
            for (li, l) in s.layers.iter_mut().enumerate() {
                let watched = sending & (1 << li) != 0;
                match l.stalled_at {
                    None if watched
                        && l.heard
                            .is_some_and(|h| now.saturating_duration_since(h) >= timeout) =>
                    {
                        l.stalled_at = Some(now);
                        changed = true;
                    }
                    Some(t) if !watched && now.saturating_duration_since(t) >= 4 * timeout => {
                        l.stalled_at = None;
                        l.heard = None;
                        changed = true;
                    }
                    _ => {}
                }
            }
            if changed {
                self.reselect_receivers_of(now, sk, out);
            }
        }
        for sk in self.streams.keys() {
            let Some(s) = self.streams.get(sk) else {
                continue;
            };
            let waiting = s
                .forwards
                .iter()
                .filter(|f| f.target.is_some() && f.target != f.current)
                .fold(0u8, |m, f| m | f.target.map_or(0, |t| 1 << t))
                | s.forwards
                    .iter()
                    .filter_map(|f| f.temporal_stuck(now, interval))
                    .fold(0u8, |m, l| m | 1 << l);
            for li in 0..s.layers.len() {
                let Some(l) = self.streams.get(sk).and_then(|s| s.layers.get(li)) else {
                    continue;
                };
                let due = l
                    .last_request
                    .is_none_or(|t| now.saturating_duration_since(t) >= interval);
                if due && (l.pending || waiting & (1 << li) != 0) {
                    self.request_keyframe(now, sk, li as u8, out);
                }
            }
        }
    }

    /// When [`Sfu::handle_timeout`] has work: the end of the earliest aggregation
    /// interval with a request pending or a switch waiting, or the time an expected
    /// layer would count as silent.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let interval = self.config.keyframe_interval;
        let timeout = self.config.layer_timeout;
        let silence = self.streams.values().flat_map(|s| {
            let sending = s.sending();
            s.layers
                .iter()
                .enumerate()
                .filter_map(move |(li, l)| match l.stalled_at {
                    None if sending & (1 << li) != 0 => l.heard.map(|h| h + timeout),
                    Some(t) if sending & (1 << li) == 0 => Some(t + 4 * timeout),
                    _ => None,
                })
        });
        let requests = self.streams.values().flat_map(|s| {
            let waiting = s
                .forwards
                .iter()
                .filter(|f| f.target != f.current)
                .fold(0u8, |m, f| m | f.target.map_or(0, |t| 1 << t));
            s.layers.iter().enumerate().filter_map(move |(i, l)| {
                (l.pending || waiting & (1 << i) != 0)
                    .then(|| l.last_request.map(|t| t + interval))
                    .flatten()
            })
        });
        // A temporal up-switch waiting for a sync frame asks for a keyframe an
        // interval after it began (then as layer switches do, an interval after the
        // last request).
        let temporal = self.streams.values().flat_map(|s| {
            s.forwards.iter().filter_map(move |f| {
                let since = f.temporal_since?;
                let layer = s.layers.get(usize::from(f.current?))?;
                let after_request = layer.last_request.map_or(since, |r| r.max(since));
                Some(after_request + interval)
            })
        });
        silence
            .chain(requests)
            .chain(temporal)
            .chain(self.next_report)
            .min()
    }

    /// One RR per locally published stream, to its sender, with a report block per
    /// layer heard from (RFC 3550 §6.4.2); the next round an interval later, or when
    /// a local sender's next packet arrives if none is left.
    fn send_receiver_reports(&mut self, now: Instant, out: &mut Output) {
        let sender_ssrc = self.config.rtcp_ssrc;
        let mut any = false;
        for sk in self.streams.keys() {
            let Some(s) = self.streams.get_mut(sk) else {
                continue;
            };
            if !matches!(s.origin, Peer::Endpoint(_)) {
                continue;
            }
            let reports: Vec<_> = s
                .layers
                .iter_mut()
                .filter(|l| l.stats.received() > 0)
                .map(|l| {
                    let (lsr, dlsr) = rtcp::last_sr_fields(l.last_sr, now);
                    l.stats.report_block(l.ssrc, lsr, dlsr)
                })
                .collect();
            if reports.is_empty() {
                continue;
            }
            any = true;
            let rr = rtcp::Packet::ReceiverReport {
                ssrc: sender_ssrc,
                reports,
            };
            self.legs.send_rtcp(out, s.origin, &rr);
        }
        self.next_report = any.then(|| now + self.config.report_interval);
    }

    fn reselect_receivers_of(&mut self, now: Instant, sk: Key, out: &mut Output) {
        let ids: Vec<u32> = self
            .streams
            .get(sk)
            .map(|s| s.forwards.iter().map(|f| f.endpoint).collect())
            .unwrap_or_default();
        for id in ids {
            self.reallocate(now, id, out);
        }
    }

    fn add_stream(
        &mut self,
        now: Instant,
        origin: Peer,
        info: StreamInfo,
        out: &mut Output,
    ) -> Result<(), Error> {
        let rule =
            KeyframeRule::for_stream(&info).ok_or(SfuError::UnsupportedCodec(info.stream))?;
        if !info.temporal.is_empty() && !rule.reads_temporal_ids() {
            return Err(SfuError::TemporalUnreadable(info.stream).into());
        }
        if self.stream_key(info.stream).is_some() {
            return Err(SfuError::DuplicateStream(info.stream).into());
        }
        if self.streams.len() >= self.config.max_streams {
            return Err(SfuError::Limit("max_streams").into());
        }
        if info.layers.len() > self.config.max_layers {
            return Err(SfuError::Limit("max_layers").into());
        }
        if let Some(l) = info
            .layers
            .iter()
            .find(|l| self.by_ssrc.contains_key(&l.ssrc))
        {
            return Err(SfuError::DuplicateSsrc(l.ssrc).into());
        }
        // Announcements from local endpoints were not decoded: check them as a peer
        // would.
        Message::Publish(info.clone())
            .validate()
            .map_err(Error::Control)?;
        let publisher = info.participant;
        let sk = self.streams.insert(Stream {
            layers: info
                .layers
                .iter()
                .map(|l| LayerState {
                    ssrc: l.ssrc,
                    last_request: None,
                    heard: matches!(origin, Peer::Endpoint(_)).then_some(now),
                    stalled_at: None,
                    pending: false,
                    fir_seq: 0,
                    stats: ReceiveStats::new(info.clock_rate),
                    last_sr: None,
                })
                .collect(),
            forwards: self
                .endpoints
                .values()
                .filter(|e| e.id != publisher)
                .map(|e| Forward::new(e.id))
                .collect(),
            info,
            origin,
            rule,
            links: Vec::new(),
            upstream: 0,
        });
        let Some(s) = self.streams.get(sk) else {
            return Ok(());
        };
        self.stream_keys.insert(s.info.stream, sk);
        for (li, l) in s.layers.iter().enumerate() {
            self.by_ssrc.insert(l.ssrc, (sk, li as u8));
        }
        let msg = Message::Publish(s.info.clone());
        for &l in self.links.values() {
            if Peer::Link(l) != origin {
                out.push_control(Peer::Link(l), &msg);
            }
        }
        let ids: Vec<u32> = self
            .endpoints
            .values()
            .map(|e| e.id)
            .filter(|&id| id != publisher)
            .collect();
        for id in ids {
            self.reallocate(now, id, out);
        }
        Ok(())
    }

    fn remove_stream(&mut self, now: Instant, sk: Key, out: &mut Output) {
        let Some(s) = self.streams.remove(sk) else {
            return;
        };
        // No other stream moved: only this one's entries go.
        self.stream_keys.remove(&s.info.stream);
        for l in &s.layers {
            self.by_ssrc.remove(&l.ssrc);
        }
        let msg = Message::Unpublish {
            stream: s.info.stream,
        };
        for &l in self.links.values() {
            if Peer::Link(l) != s.origin {
                out.push_control(Peer::Link(l), &msg);
            }
        }
        // Its receivers' bandwidth goes to their other streams.
        for f in &s.forwards {
            self.reallocate(now, f.endpoint, out);
        }
    }

    /// Shares `endpoint`'s estimate among its streams (module docs, "Selection") and
    /// starts the switches that changes.
    fn reallocate(&mut self, now: Instant, endpoint: u32, out: &mut Output) {
        let Some(mut budget) = self
            .endpoint_keys
            .get(&endpoint)
            .and_then(|&k| self.endpoints.get(k))
            .map(|e| e.estimate_bps)
        else {
            return;
        };
        // (stream, forward, choice of (layer, temporal layer)), speaker first, then
        // publication order.
        let mut plan: Vec<(Key, usize, Option<Choice>)> = Vec::new();
        for (sk, s) in self.streams.iter() {
            if let Some(fi) = s.forwards.iter().position(|f| f.endpoint == endpoint) {
                plan.push((sk, fi, None));
            }
        }
        let speaker = self.speaker;
        plan.sort_by_key(|&(sk, _, _)| {
            self.streams
                .get(sk)
                .map(|s| Some(s.info.participant) != speaker)
                .zip(self.streams.position(sk))
        });
        let allowed = |s: &Stream, f: usize| {
            let usable = s.forwards[f].accept & !s.stalled();
            (0..s.layers.len() as u8).filter(move |l| usable & (1 << l) != 0)
        };
        let cost = |s: &Stream, (l, t): Choice| s.info.bitrate(usize::from(l), t);
        for (sk, fi, choice) in &mut plan {
            let Some(s) = self.streams.get(*sk) else {
                continue;
            };
            if let Some(low) = allowed(s, *fi).next()
                && cost(s, (low, 0)) <= budget
            {
                budget -= cost(s, (low, 0));
                *choice = Some((low, 0));
            }
        }
        for (sk, fi, choice) in &mut plan {
            let Some(s) = self.streams.get(*sk) else {
                continue;
            };
            let Some(c) = *choice else { continue };
            let have = cost(s, c);
            let top = s.info.temporal_layers() - 1;
            // The highest layer, then the highest temporal layer in it, that fits.
            if let Some(up) = allowed(s, *fi)
                .rev()
                .filter(|&l| l >= c.0)
                .flat_map(|l| (0..=top).rev().map(move |t| (l, t)))
                .find(|&o| cost(s, o).saturating_sub(have) <= budget)
            {
                budget -= cost(s, up).saturating_sub(have);
                *choice = Some(up);
            }
        }
        for (sk, fi, choice) in plan {
            let Some(f) = self
                .streams
                .get_mut(sk)
                .and_then(|s| s.forwards.get_mut(fi))
            else {
                continue;
            };
            f.tid_target = choice.map_or(0, |c| c.1);
            let choice = choice.map(|c| c.0);
            if f.target == choice {
                continue;
            }
            f.target = choice;
            match choice {
                None => f.current = None,
                Some(t) if f.current != Some(t) => {
                    // The new layer must be subscribed upstream before it is asked for.
                    self.update_upstream(now, sk, out);
                    self.request_keyframe(now, sk, t, out);
                }
                Some(_) => {}
            }
            self.update_upstream(now, sk, out);
        }
    }

    /// Subscribes on the origin link to exactly the layers needed here.
    fn update_upstream(&mut self, now: Instant, sk: Key, out: &mut Output) {
        let Some(s) = self.streams.get_mut(sk) else {
            return;
        };
        let Peer::Link(link) = s.origin else { return };
        let needed = s.needed();
        if needed != s.upstream {
            // Newly subscribed layers are expected from now on.
            for (li, l) in s.layers.iter_mut().enumerate() {
                if needed & !s.upstream & (1 << li) != 0 {
                    l.heard = Some(now);
                }
            }
            s.upstream = needed;
            out.push_control(
                Peer::Link(link),
                &Message::Subscribe {
                    stream: s.info.stream,
                    layers: needed,
                },
            );
        }
    }

    /// Asks the origin of layer `li` of stream `sk` for a keyframe, at most once per
    /// interval (RFC 4585 §6.3.1 PLI; RFC 5104 §4.3.1 FIR).
    fn request_keyframe(&mut self, now: Instant, sk: Key, li: u8, out: &mut Output) {
        let interval = self.config.keyframe_interval;
        let Some(s) = self.streams.get_mut(sk) else {
            return;
        };
        let Some(l) = s.layers.get_mut(usize::from(li)) else {
            return;
        };
        if l.last_request
            .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            l.pending = true;
            self.stats.keyframe_requests_aggregated += 1;
            return;
        }
        l.last_request = Some(now);
        l.pending = false;
        self.stats.keyframe_requests += 1;
        let sender_ssrc = self.config.rtcp_ssrc;
        if self.config.fir && matches!(s.origin, Peer::Endpoint(_)) {
            l.fir_seq = l.fir_seq.wrapping_add(1);
            let fir = rtcp::Packet::Fir {
                sender_ssrc,
                entries: vec![rtcp::FirEntry {
                    ssrc: l.ssrc,
                    seq: l.fir_seq,
                }],
            };
            self.legs.send_rtcp(out, s.origin, &fir);
        } else {
            let pli = rtcp::Packet::Pli {
                sender_ssrc,
                media_ssrc: l.ssrc,
            };
            self.legs.send_rtcp(out, s.origin, &pli);
        }
    }

    /// A PLI or FIR: from an endpoint, `ssrc` is the rewritten SSRC it receives; from
    /// a link, a layer's own SSRC.
    fn feedback_keyframe(&mut self, now: Instant, from: Peer, ssrc: u32, out: &mut Output) {
        let Some(&(sk, li)) = self.by_ssrc.get(&ssrc) else {
            self.stats.ignored_feedback += 1;
            return;
        };
        let Some(s) = self.streams.get(sk) else {
            self.stats.ignored_feedback += 1;
            return;
        };
        let layer = match from {
            Peer::Endpoint(e) => s
                .forwards
                .iter()
                .find(|f| f.endpoint == e)
                .and_then(|f| f.target.or(f.current)),
            Peer::Link(_) => (s.origin != from).then_some(li),
        };
        match layer {
            Some(l) => self.request_keyframe(now, sk, l, out),
            None => self.stats.ignored_feedback += 1,
        }
    }

    /// A generic NACK (RFC 4585 §6.2.1). Packets the leg's history still holds are
    /// resent from it, byte for byte as they first went out (the same SRTP index
    /// with the same bytes: nothing is protected twice). The rest are asked of the
    /// origin: from an endpoint, its sequence numbers are mapped back to the current
    /// layer's.
    fn feedback_nack(
        &mut self,
        from: Peer,
        ssrc: u32,
        entries: &[rtcp::NackEntry],
        out: &mut Output,
    ) {
        let Some(&(sk, li)) = self.by_ssrc.get(&ssrc) else {
            self.stats.ignored_feedback += 1;
            return;
        };
        let Some(s) = self.streams.get(sk) else {
            self.stats.ignored_feedback += 1;
            return;
        };
        if matches!(from, Peer::Link(_)) && s.origin == from {
            return;
        }
        let mut missing: Vec<u16> = Vec::new();
        if let Some(leg) = self.legs.get_mut(from) {
            for seq in entries.iter().flat_map(|n| n.lost()) {
                match leg.resend(ssrc, seq) {
                    Resend::Bytes(bytes) => {
                        out.push(from, Kind::Rtp, bytes);
                        self.stats.retransmitted += 1;
                    }
                    Resend::Exhausted => self.stats.ignored_feedback += 1,
                    Resend::Unknown => missing.push(seq),
                }
            }
        }
        let (media_ssrc, lost): (u32, Vec<u16>) = match from {
            Peer::Endpoint(e) => {
                let Some(f) = s.forwards.iter().find(|f| f.endpoint == e) else {
                    self.stats.ignored_feedback += 1;
                    return;
                };
                let Some(cur) = f.current.and_then(|c| s.layers.get(usize::from(c))) else {
                    self.stats.ignored_feedback += 1;
                    return;
                };
                let lost = missing
                    .into_iter()
                    .filter_map(|seq| f.rewriter.unmap(seq))
                    .collect();
                (cur.ssrc, lost)
            }
            Peer::Link(_) => (
                s.layers.get(usize::from(li)).map_or(ssrc, |l| l.ssrc),
                missing,
            ),
        };
        if lost.is_empty() {
            return;
        }
        let nack = rtcp::Packet::Nack {
            sender_ssrc: self.config.rtcp_ssrc,
            media_ssrc,
            entries: rtcp::NackEntry::from_lost(&lost),
        };
        let origin = s.origin;
        self.legs.send_rtcp(out, origin, &nack);
    }
}

/// Where in `bytes` (the packet `packet` was decoded from) the 3-byte value of the
/// abs-send-time element `id` starts, if the packet carries it.
fn abs_send_time_offset(packet: &rtp::Packet<'_>, bytes: &[u8], id: u8) -> Option<usize> {
    let data = packet
        .extension_elements()?
        .find_map(|e| e.ok().filter(|e| e.id == id && e.data.len() == 3))?
        .data;
    // The element borrows from `bytes`: its address gives its position.
    let at = data.as_ptr().addr().checked_sub(bytes.as_ptr().addr())?;
    (at + 3 <= bytes.len()).then_some(at)
}

impl Forward {
    fn new(endpoint: u32) -> Self {
        Self {
            endpoint,
            current: None,
            target: None,
            tid: 0,
            tid_target: 0,
            temporal_since: None,
            accept: 0xff,
            rewriter: Rewriter::default(),
        }
    }

    /// Whether a packet of the current layer goes to this receiver, moving its
    /// temporal layer towards the target where that cannot cut a frame or leave one
    /// without its references: down at any frame start, up at a layer-sync frame of
    /// the next temporal layer up (one step at a time, so that a frame of a layer in
    /// between never arrives without the earlier frames of its layer it may use).
    /// A keyframe starts every temporal layer at once. While below its target, the
    /// receiver remembers since when (see `temporal_since`).
    fn admits(&mut self, t: Temporal, now: Instant) -> bool {
        if t.frame_start {
            if self.tid_target < self.tid || t.keyframe {
                self.tid = self.tid_target;
            } else if t.sync && t.tid == self.tid + 1 && t.tid <= self.tid_target {
                self.tid = t.tid;
            }
        }
        if self.tid < self.tid_target {
            self.temporal_since.get_or_insert(now);
        } else {
            self.temporal_since = None;
        }
        t.tid <= self.tid
    }

    /// The layer whose keyframe would end a temporal up-switch that has waited
    /// `interval` without a sync frame.
    fn temporal_stuck(&self, now: Instant, interval: Duration) -> Option<u8> {
        self.temporal_since
            .filter(|&t| now.saturating_duration_since(t) >= interval)
            .and(self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{Codec, Layer};

    fn info(p: u32, ssrcs: &[u32]) -> StreamInfo {
        let layers = ssrcs
            .iter()
            .enumerate()
            .map(|(i, &ssrc)| Layer {
                ssrc,
                bitrate_bps: 100_000 * (i as u32 + 1),
            })
            .collect();
        StreamInfo::video(p, p, Codec::Vp8, layers)
    }

    /// These tests look at selection and refusals, with packets in clear; the SRTP
    /// path is tested in `tests/`.
    fn plaintext_config() -> SfuConfig {
        SfuConfig {
            allow_plaintext: true,
            ..SfuConfig::default()
        }
    }

    fn sfu() -> (Sfu, Output, Instant) {
        let now = Instant::now();
        let mut out = Output::new();
        let mut s = Sfu::new(plaintext_config()).unwrap();
        s.add_endpoint(now, 1, LegSecurity::Plaintext, &mut out)
            .unwrap();
        s.add_endpoint(now, 2, LegSecurity::Plaintext, &mut out)
            .unwrap();
        s.add_link(7, LegSecurity::Plaintext, &mut out).unwrap();
        s.publish(now, 1, info(1, &[10, 11]), &mut out).unwrap();
        out.clear();
        (s, out, now)
    }

    #[test]
    fn refusals_are_named() {
        let (mut s, mut out, now) = sfu();
        let sfu_err = |r: Result<(), Error>| match r {
            Err(Error::Sfu(e)) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            sfu_err(s.add_endpoint(now, 1, LegSecurity::Plaintext, &mut out)),
            SfuError::DuplicatePeer(Peer::Endpoint(1))
        );
        // Media in clear only when the configuration says so.
        let mut strict = Sfu::new(SfuConfig::default()).unwrap();
        assert_eq!(
            sfu_err(strict.add_endpoint(now, 1, LegSecurity::Plaintext, &mut out)),
            SfuError::PlaintextRefused(Peer::Endpoint(1))
        );
        assert_eq!(
            sfu_err(strict.add_link(1, LegSecurity::Plaintext, &mut out)),
            SfuError::PlaintextRefused(Peer::Link(1))
        );
        assert_eq!(
            sfu_err(s.publish(now, 2, info(1, &[20]), &mut out)),
            SfuError::NotPublisher(1)
        );
        assert_eq!(
            sfu_err(s.publish(now, 2, info(2, &[11]), &mut out)),
            SfuError::DuplicateSsrc(11)
        );
        let mut vp9 = info(2, &[20]);
        vp9.codec = Codec::Vp9;
        assert_eq!(
            sfu_err(s.publish(now, 2, vp9.clone(), &mut out)),
            SfuError::UnsupportedCodec(2)
        );
        // With frame marking any codec can be forwarded.
        vp9.frame_marking = Some(4);
        s.publish(now, 2, vp9, &mut out).unwrap();
        out.clear();
        let rtp = [0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 10, 0x10, 0];
        assert_eq!(
            sfu_err(s.handle_input(now, Peer::Endpoint(2), &rtp, &mut out)),
            SfuError::WrongOrigin(10)
        );
        let mut unknown = rtp;
        unknown[11] = 99;
        assert_eq!(
            sfu_err(s.handle_input(now, Peer::Endpoint(1), &unknown, &mut out)),
            SfuError::UnknownSsrc(99)
        );
        let long = [&rtp[..], &[0; 1500]].concat();
        assert!(matches!(
            sfu_err(s.handle_input(now, Peer::Endpoint(1), &long, &mut out)),
            SfuError::PacketTooLong { .. }
        ));
        let sub = Message::Subscribe {
            stream: 1,
            layers: 1,
        };
        assert_eq!(
            sfu_err(s.handle_control(now, Peer::Link(8), &sub, &mut out)),
            SfuError::UnknownPeer(Peer::Link(8))
        );
        assert!(matches!(
            s.handle_input(now, Peer::Link(7), &[1, 99], &mut out),
            Err(Error::Control(control::DecodeError::UnknownType(99)))
        ));
        assert!(matches!(
            s.handle_input(now, Peer::Link(7), &[0x80, 96, 0], &mut out),
            Err(Error::Media(_))
        ));
        assert!(out.is_empty(), "nothing sent for refused input");
    }

    #[test]
    fn configuration_is_validated() {
        for (config, why) in [
            (
                SfuConfig {
                    keyframe_interval: Duration::ZERO,
                    ..SfuConfig::default()
                },
                "keyframe_interval must be non-zero",
            ),
            (
                SfuConfig {
                    max_layers: 9,
                    ..SfuConfig::default()
                },
                "max_layers must be 1-8",
            ),
            (
                SfuConfig {
                    retransmit_history: 4097,
                    ..SfuConfig::default()
                },
                "retransmit_history must be at most 4096",
            ),
        ] {
            assert!(matches!(
                Sfu::new(config),
                Err(Error::Sfu(SfuError::BadConfig(w))) if w == why
            ));
        }
    }

    #[test]
    fn limits_hold() {
        let now = Instant::now();
        let mut out = Output::new();
        let mut s = Sfu::new(SfuConfig {
            max_endpoints: 1,
            max_links: 1,
            max_streams: 1,
            ..plaintext_config()
        })
        .unwrap();
        s.add_endpoint(now, 1, LegSecurity::Plaintext, &mut out)
            .unwrap();
        assert!(matches!(
            s.add_endpoint(now, 2, LegSecurity::Plaintext, &mut out),
            Err(Error::Sfu(SfuError::Limit("max_endpoints")))
        ));
        let mut one = Sfu::new(SfuConfig {
            max_streams_per_endpoint: 1,
            ..plaintext_config()
        })
        .unwrap();
        one.add_endpoint(now, 1, LegSecurity::Plaintext, &mut out)
            .unwrap();
        one.publish(now, 1, info(1, &[10]), &mut out).unwrap();
        let mut second = info(1, &[11]);
        second.stream = 2;
        assert!(matches!(
            one.publish(now, 1, second, &mut out),
            Err(Error::Sfu(SfuError::Limit("max_streams_per_endpoint")))
        ));
        s.add_link(1, LegSecurity::Plaintext, &mut out).unwrap();
        assert!(matches!(
            s.add_link(2, LegSecurity::Plaintext, &mut out),
            Err(Error::Sfu(SfuError::Limit("max_links")))
        ));
        s.publish(now, 1, info(1, &[10]), &mut out).unwrap();
        // A relayed announcement past the limit is refused, not stored.
        let more = Message::Publish(info(5, &[50]));
        assert!(matches!(
            s.handle_control(now, Peer::Link(1), &more, &mut out),
            Err(Error::Sfu(SfuError::Limit("max_streams")))
        ));
        assert_eq!(s.streams().count(), 1);
    }

    #[test]
    fn a_link_publish_of_a_known_stream_is_ignored() {
        let (mut s, mut out, now) = sfu();
        s.add_link(8, LegSecurity::Plaintext, &mut out).unwrap();
        out.clear();
        // Stream 1 is local; another relay announcing it (a loop) changes nothing.
        s.handle_control(
            now,
            Peer::Link(8),
            &Message::Publish(info(1, &[10, 11])),
            &mut out,
        )
        .unwrap();
        assert_eq!(s.origin(1), Some(Peer::Endpoint(1)));
        // An unpublish from a peer that is not the origin is ignored too.
        s.handle_control(
            now,
            Peer::Link(8),
            &Message::Unpublish { stream: 1 },
            &mut out,
        )
        .unwrap();
        assert_eq!(s.origin(1), Some(Peer::Endpoint(1)));
        assert!(out.is_empty());
    }
}
