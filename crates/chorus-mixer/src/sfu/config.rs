//! The SFU's configuration, its refusals and its counters.

use std::time::Duration;

use super::Peer;

/// SFU settings; validated by [`Sfu::new`](super::Sfu::new).
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
    /// Accept [`LegSecurity::Plaintext`](super::LegSecurity::Plaintext) legs, which carry media in clear. Default
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
    /// An address already given to another peer ([`Sfu::set_address`](super::Sfu::set_address); caller's
    /// mistake).
    DuplicateAddress(Peer),
    /// A datagram through [`chorus_framing::DatagramCore::handle_datagram`] from an
    /// address no peer has, or that is not SRTP/SRTCP (control messages come only
    /// over a peer's authenticated control channel): its `accepts` says no to it.
    NotRoutable,
    /// An invalid configuration (the string says which rule).
    InvalidConfig(&'static str),
    /// A [`LegSecurity::Plaintext`](super::LegSecurity::Plaintext) leg without [`SfuConfig::allow_plaintext`]
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
            Self::InvalidConfig(why) => write!(f, "invalid SFU configuration: {why}"),
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
    /// without an address ([`Sfu::set_address`](super::Sfu::set_address)): not sent.
    pub unaddressed: u64,
    /// Transmits and events of the [`chorus_framing::DatagramCore`] path dropped
    /// because the owner left more than [`MAX_QUEUED`](super::MAX_QUEUED) undrained.
    pub queue_dropped: u64,
}

/// Largest [`SfuConfig::retransmit_history`].
pub(super) const MAX_RETRANSMIT_HISTORY: usize = 4096;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::Sfu;
    use super::*;
    use crate::Error;

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
                Err(Error::Sfu(SfuError::InvalidConfig(w))) if w == why
            ));
        }
    }
}
