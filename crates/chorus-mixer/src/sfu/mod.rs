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

// This file is the hub: the state (streams, endpoints and links in slabs, by
// stable key), membership, and the routing of each input to its subsystem, each an
// `impl Sfu` over its part of the state.
mod cascade; // Links to other relays and each relayed stream's upstream subscription.
mod config; // Configuration, refusals, counters.
mod datagram; // The `DatagramCore` path: addresses and queues.
mod feedback; // Keyframe requests (PLI, FIR) and NACKs.
mod keyframe; // Where a packet starts a keyframe, and its temporal layer.
mod leg; // Each peer's SRTP contexts and send history.
mod output; // The `Output` arena and the send path through the legs.
mod reports; // Sender reports forwarded, receiver reports generated.
mod rewrite; // Per-receiver sequence number and timestamp rewriting.
mod selection; // Layer and temporal-layer choice per receiver; silent layers.
mod slab; // Generation-checked keys: nothing moves when something is removed.
mod timer; // The timer table and `poll_timeout` / `handle_timeout`.

use std::time::Instant;

use chorus_crypto::AuthError;
use chorus_framing::{PacketKind, U32Map};
use chorus_media::rtp;
use chorus_media::stats::ReceiveStats;

pub use config::{SfuConfig, SfuError, SfuStats};
pub use datagram::{Event, MAX_QUEUED};
pub use keyframe::{KeyframeRule, Temporal};
pub use leg::LegSecurity;
pub use output::{Kind, Output, Transmit};
pub use selection::Selection;

use config::MAX_RETRANSMIT_HISTORY;
use leg::{Leg, Media};
use output::{Legs, rewritten};
use selection::Forward;
use slab::{Key, Registry, Slab};
use timer::{Timer, TimerTable};

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
    /// Local endpoints, by participant id.
    endpoints: Registry<Endpoint>,
    /// Links to other relays: their ids, by link id.
    links: Registry<u32>,
    /// Streams, local and relayed, and their keys by stream id.
    streams: Slab<Stream>,
    stream_keys: U32Map<Key>,
    /// Layer SSRC -> (stream, layer index).
    by_ssrc: U32Map<(Key, u8)>,
    speaker: Option<u32>,
    stats: SfuStats,
    /// Relay-wide timers (receiver reports).
    timers: TimerTable,
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
    /// [`SfuError::InvalidConfig`] for an invalid configuration.
    pub fn new(config: SfuConfig) -> Result<Self, Error> {
        if config.keyframe_interval.is_zero() {
            return Err(SfuError::InvalidConfig("keyframe_interval must be non-zero").into());
        }
        if config.layer_timeout.is_zero() {
            return Err(SfuError::InvalidConfig("layer_timeout must be non-zero").into());
        }
        if config
            .abs_send_time_id
            .is_some_and(|id| !(1..=14).contains(&id))
        {
            return Err(SfuError::InvalidConfig("abs_send_time_id must be 1-14").into());
        }
        if config.report_interval.is_zero() {
            return Err(SfuError::InvalidConfig("report_interval must be non-zero").into());
        }
        if !(1..=control::MAX_LAYERS).contains(&config.max_layers) {
            return Err(SfuError::InvalidConfig("max_layers must be 1-8").into());
        }
        if config.max_packet_len < rtp::FIXED_HEADER_LEN {
            return Err(SfuError::InvalidConfig("max_packet_len below an RTP header").into());
        }
        if config.retransmit_history > MAX_RETRANSMIT_HISTORY {
            return Err(SfuError::InvalidConfig("retransmit_history must be at most 4096").into());
        }
        Ok(Self {
            config,
            endpoints: Registry::default(),
            links: Registry::default(),
            streams: Slab::default(),
            stream_keys: U32Map::default(),
            by_ssrc: U32Map::default(),
            speaker: None,
            stats: SfuStats::default(),
            timers: TimerTable::default(),
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
        self.endpoints
            .get_mut(id)
            .ok_or_else(|| SfuError::UnknownPeer(Peer::Endpoint(id)).into())
    }

    /// Whether `peer` was added (and not removed).
    fn is_known(&self, peer: Peer) -> bool {
        match peer {
            Peer::Endpoint(e) => self.endpoints.contains(e),
            Peer::Link(l) => self.links.contains(l),
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
        if self.endpoints.contains(id) {
            return Err(SfuError::DuplicatePeer(Peer::Endpoint(id)).into());
        }
        if self.endpoints.len() >= self.config.max_endpoints {
            return Err(SfuError::Limit("max_endpoints").into());
        }
        let leg = self.leg(Peer::Endpoint(id), security)?;
        self.legs.endpoints.insert(id, leg);
        self.endpoints.insert(
            id,
            Endpoint {
                id,
                estimate_bps: self.config.initial_bandwidth_bps,
            },
        );
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
        self.endpoints
            .remove(id)
            .ok_or(SfuError::UnknownPeer(Peer::Endpoint(id)))?;
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
                self.timers
                    .start(Timer::Report, now + self.config.report_interval);
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

#[cfg(test)]
mod tests {
    //! Refusals and limits of the hub, and the fixtures the subsystems' tests share.

    use super::*;
    use crate::control::{Codec, Layer};

    pub(super) fn info(p: u32, ssrcs: &[u32]) -> StreamInfo {
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
    pub(super) fn plaintext_config() -> SfuConfig {
        SfuConfig {
            allow_plaintext: true,
            ..SfuConfig::default()
        }
    }

    pub(super) fn sfu() -> (Sfu, Output, Instant) {
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
}
