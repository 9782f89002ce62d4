//! One audio call leg, end to end, as a sans-IO state machine: PCM in, datagrams out;
//! datagrams in, PCM out on the playout clock.
//!
//! Sender side, per 20 ms frame given to [`Session::send_frame`]:
//! Opus encode (bitrate, in-band FEC and its loss hint set by the controllers below)
//! → RTP (RFC 3550 §5.1; PT 111 by default, RFC 7587) with two RFC 8285 one-byte
//! header extensions: the RFC 6464 audio level and abs-send-time (for the peer's
//! delay-based estimator) → Reed-Solomon FEC over the plaintext packets with the
//! `(k, m, stride)` that [`choose_protection`] picks, repair packets carried as RTP
//! with their own payload type and SSRC → SRTP (RFC 3711, chorus-crypto) → datagrams
//! out of [`Session::poll_transmit`].
//!
//! Receiver side, per datagram given to [`Session::handle_input`]: RTP and RTCP are
//! told apart by the second byte (RFC 5761 §4) → SRTP/SRTCP unprotect (a packet
//! that does not authenticate is rejected, nothing changes) → RTP: receive
//! statistics (RFC 3550 §A.1-§A.8) and the delay-based estimator
//! ([`crate::congestion`]), then the FEC decoder; media and rebuilt packets go to
//! the jitter buffer → at each playout tick ([`Session::poll_timeout`]), Opus decode,
//! in-band FEC or PLC for a missing frame, time stretching ([`crate::timestretch`])
//! towards the jitter buffer's target delay → frames of PCM out of
//! [`Session::poll_pcm`].
//!
//! Control loop (RTCP, RFC 3550 §6):
//! - A compound report (SR when we sent media since the last one, else RR, with one
//!   report block about the peer; SDES CNAME; an XR Loss RLE block, RFC 3611 §4.1,
//!   with the fate of each of the peer's last 250 packets; REMB with our delay-based
//!   estimate) goes out every `rtcp_interval` (default 1 s) times a random factor in
//!   [0.5, 1.5] (RFC 3550 §6.3.1's spreading), the first after half an interval
//!   (§6.2). *Simplification*: the interval does not scale with the RTCP bandwidth
//!   share; a two-party call at ≥ 12 kbit/s with ~150-byte reports stays under 5 %
//!   of its bandwidth at 1 s (RFC 4585 §3.4 lets a profile lower the 5 s minimum).
//! - Early feedback (RFC 4585 §3.5): the first loss after a regular report (a packet
//!   still missing when the two after it arrived: jitter reorders, loss does not
//!   heal) sends the next report at once (a quarter interval after the last one at
//!   the earliest) and restarts the schedule, so FEC comes on within a few packets
//!   of the first loss; at most one early report per regular one.
//! - A drop of our delay-based estimate by 3 % or more is sent at once as a
//!   reduced-size RTCP packet holding only the REMB (RFC 5506).
//! - A report block about our stream gives the round-trip time (§6.4.1, LSR/DLSR),
//!   its loss fraction and the peer's jitter. Loss feeds the loss-based
//!   [`RateController`]; RTT feeds the delay controller's additive increase; RTT
//!   and jitter set the FEC delay budget (200 ms mouth-to-ear, below which ITU-T
//!   G.107's E-model charges little delay impairment, minus half the RTT and
//!   twice the jitter, within 20 ms..`protection.max_delay`).
//! - FEC: the peer's Loss RLE blocks give our stream's loss record (each packet's
//!   fate, history halved every 150 packets), hence its loss rate and mean burst
//!   length, from which [`choose_protection_for_budget`] picks the Reed-Solomon
//!   group that should sound best at the send rate (codec bits against residual
//!   loss), for bursty loss too; a peer without XR leaves the smoothed
//!   report-block loss, taken as independent losses. Repairs of groups with
//!   `m <= k` ride on the next media packets (RFC 2198, [`crate::red`]).
//! - The send rate, in RTP payload bits (Opus plus FEC repair, as
//!   [`RateController`] counts), is the minimum of the loss-based rate and the
//!   peer's REMB less our packet headers (REMB measures the wire); its media share
//!   `rate / (1 + FEC overhead)` is the Opus bitrate (6 kbit/s at least).
//!
//! Run loop (the contract of every Chorus core):
//! 1. Feed [`Session::send_frame`] (every frame duration), [`Session::handle_input`]
//!    (every datagram) and [`Session::handle_timeout`] (at [`Session::poll_timeout`]).
//! 2. After each, drain [`Session::poll_transmit`], [`Session::poll_pcm`] and
//!    [`Session::poll_event`] until `None`.
//! 3. `now` never goes backwards; an early `handle_timeout` is a harmless no-op.
//!
//! Behind a socket or a [`chorus_framing::Mux`], the session is a
//! [`chorus_framing::DatagramCore`] once [`Session::set_peer`] names the peer: it
//! accepts RTP and RTCP from that address only, and its transmits go there.
//!
//! Bounds: the outgoing datagram queue holds at most `max_queued` datagrams and the
//! PCM output queue at most `max_queued` frames (the oldest are dropped and counted);
//! the FEC decoder and jitter buffer are bounded by their own configurations.
//!
//! Two legs wired by hand, one way, on a virtual clock:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use chorus_crypto::srtp::{Policy, SrtpSession, Suite};
//! use chorus_crypto::SystemEntropy;
//! use chorus_media::session::{Session, SessionConfig};
//!
//! let srtp = |k: u8| {
//!     let s = Suite::AeadAes128Gcm;
//!     SrtpSession::new(Policy::new(s, &vec![k; s.key_len()], &vec![k; s.salt_len()])?)
//! };
//! let t0 = Instant::now();
//! let mut config = SessionConfig::default();
//! config.ssrc = 10;
//! let mut alice = Session::new(config.clone(), srtp(1)?, srtp(2)?, Box::new(SystemEntropy::new()), t0)?;
//! config.ssrc = 20;
//! let mut bob = Session::new(config, srtp(2)?, srtp(1)?, Box::new(SystemEntropy::new()), t0)?;
//!
//! let tone: Vec<i16> = (0..alice.frame_samples())
//!     .map(|i| ((i as f64 * 0.05).sin() * 8000.0) as i16)
//!     .collect();
//! let mut heard = 0;
//! for i in 0..50u32 {
//!     let now = t0 + Duration::from_millis(20) * i;
//!     alice.send_frame(now, &tone)?;
//!     // The "network": 20 ms later at Bob's.
//!     let later = now + Duration::from_millis(20);
//!     while let Some(datagram) = alice.poll_transmit() {
//!         bob.handle_input(later, &datagram)?;
//!     }
//!     alice.handle_timeout(now);
//!     bob.handle_timeout(later);
//!     while let Some(pcm) = bob.poll_pcm() {
//!         assert_eq!(pcm.len(), 960);
//!         heard += 1;
//!     }
//! }
//! assert!(heard > 40);
//! assert_eq!(bob.stats().media_received, 50);
//! assert_eq!(bob.stats().rejected, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`choose_protection`]: crate::adapt::choose_protection
//! [`choose_protection_for_budget`]: crate::adapt::choose_protection_for_budget
//! [`RateController`]: crate::adapt::RateController
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

mod control;
mod receiver;
mod sender;

use core::time::Duration;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use chorus_crypto::srtp::SrtpSession;
use chorus_framing::{DatagramCore, Entropy, PacketKind, Transmit};

use self::control::{Early, Rtcp};
use self::receiver::Receiver;
use self::sender::Sender;
use crate::adapt::{Protection, ProtectionGoal, RateConfig};
use crate::error::{Error, UsageError};
use crate::jitter::JitterConfig;
use crate::rtcp::xr::XrBlock;
use crate::rtcp::{self, ReportBlock};

/// The RTP clock of Opus (RFC 7587 §4.1): always 48 kHz.
const OPUS_CLOCK: u32 = 48_000;
/// UDP over IPv4 headers, counted in the wire rate.
const UDP_IP_OVERHEAD: usize = 28;
/// The frame duration: 20 ms, 50 packets per second.
const FRAME: Duration = Duration::from_millis(20);

/// Call-leg parameters. Both ends must agree on the payload types, the header
/// extension ids and the SRTP keys; everything else is local.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Our media SSRC. Default 1.
    pub ssrc: u32,
    /// Our FEC repair SSRC. Default 2.
    pub fec_ssrc: u32,
    /// PCM sample rate in and out (8, 12, 16, 24 or 48 kHz). Default 48,000.
    pub sample_rate: u32,
    /// Opus payload type. Default 111.
    pub payload_type: u8,
    /// Opus encoder complexity, 0 (fastest) to 10. Default 9 (libopus's own
    /// default is 10; 5 roughly halves the encoder's cost for a small loss in
    /// quality).
    pub complexity: u8,
    /// Payload type of FEC repair packets. Default 112.
    pub fec_payload_type: u8,
    /// Payload type of RFC 2198 packets ([`crate::red`]): media packets that carry
    /// repair payloads of earlier groups as redundant blocks, when
    /// `protection.piggyback` is on. Both ends must agree. Default 63.
    pub red_payload_type: u8,
    /// RFC 8285 id of the audio level extension. Default 1.
    pub audio_level_id: u8,
    /// RFC 8285 id of the abs-send-time extension. Default 3.
    pub abs_send_time_id: u8,
    /// SDES CNAME (RFC 3550 §6.5.1), at most 255 bytes. Default `chorus`.
    pub cname: Vec<u8>,
    /// Send-rate bounds (bit/s, UDP/IP headers included).
    pub rate: RateConfig,
    /// FEC goal; its `max_delay` caps the RTT- and jitter-derived delay budget.
    /// Default: [`ProtectionGoal::default`] with `piggyback` on (repairs ride on
    /// media packets, RFC 2198) and a first-tier `max_delay` of 100 ms, the delay
    /// a piggybacked (3, 2) or (4, 2) group needs: at the same send rate these
    /// leave the codec about half again the bits of repairs in packets of their own
    /// (`docs/media.md`, "Quality per byte").
    pub protection: ProtectionGoal,
    /// The lowest Opus rate FEC may push the codec to: the repair overhead is
    /// capped so that the media share of the send rate stays at least this.
    /// Default 16,000 bit/s (wideband speech; below it the codec, not the loss,
    /// limits quality).
    pub min_codec_bps: u32,
    /// Jitter buffer settings (`clock_rate` and `frame` are overridden: 48 kHz,
    /// 20 ms).
    pub jitter: JitterConfig,
    /// Mean RTCP report interval. Default 1 s; at least 100 ms.
    pub rtcp_interval: Duration,
    /// Early feedback (RFC 4585 §3.5): the first loss seen after a regular report
    /// sends the next report at once (at least a quarter interval after the last
    /// one), so that the peer's FEC comes on within a few packets of the first loss
    /// instead of up to 1.5 intervals later. At most one early report per regular
    /// one, and the regular schedule restarts from it. Default on.
    pub early_feedback: bool,
    /// Bound of the datagram and PCM output queues. Default 64.
    pub max_queued: usize,
    /// Whether playout may time-stretch frames to follow the jitter buffer's target
    /// delay. Default on.
    pub time_stretch: bool,
    /// Protection to use whatever the reports say (benchmarks, fixed-FEC links);
    /// `None` (the default) adapts it from RTCP.
    pub force_protection: Option<Protection>,
    /// Protection from the first frame until the first report about our stream
    /// (skipped when its repairs would leave the codec less than `min_codec_bps`
    /// of the starting rate). Default: a Reed-Solomon (4, 2) group, its repairs
    /// riding on media packets: the peer's playout delay takes the group's wait
    /// before speech starts, instead of moving (an audible and, for PESQ-WB,
    /// costly stretch) when FEC would come on with the first lossy report; the
    /// first report keeps, changes or drops it. Measured on the speech of
    /// `docs/media.md` ("Quality per byte"). Opus in-band FEC as the start cost a
    /// clean call more (up to 0.4 PESQ-WB on a seed) than it saved a lossy one.
    pub initial_protection: Protection,
    /// Whether our reports carry an RTCP XR Loss RLE block (RFC 3611 §4.1) with the
    /// fate of each of the peer's last 250 packets, from which the peer's sender
    /// estimates the loss burst length and chooses FEC groups for bursty loss (a
    /// report block's loss fraction cannot tell 10 % in bursts of three from 10 %
    /// spread evenly). About 40 bytes per report on a lossy path. Default on; a
    /// peer that does not know XR ignores it (RFC 3550 §6.1).
    pub loss_rle_feedback: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            ssrc: 1,
            fec_ssrc: 2,
            sample_rate: 48_000,
            payload_type: 111,
            complexity: 9,
            fec_payload_type: 112,
            red_payload_type: 63,
            audio_level_id: 1,
            abs_send_time_id: 3,
            cname: b"chorus".to_vec(),
            rate: RateConfig::default(),
            protection: ProtectionGoal {
                piggyback: true,
                max_delay: Duration::from_millis(100),
                ..ProtectionGoal::default()
            },
            min_codec_bps: 16_000,
            jitter: JitterConfig::default(),
            rtcp_interval: Duration::from_secs(1),
            early_feedback: true,
            max_queued: 64,
            time_stretch: true,
            force_protection: None,
            initial_protection: Protection {
                rs: Some((4, 2)),
                stride: 1,
                opus_fec: false,
                opus_expected_loss: 0,
            },
            loss_rle_feedback: true,
        }
    }
}

/// Something the application should know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The peer sent an RTCP BYE: the call leg is over.
    RemoteBye,
}

/// Counters and estimates of a [`Session`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Media frames encoded and sent.
    pub frames_sent: u64,
    /// FEC repairs sent, in packets of their own or riding on media packets.
    pub repair_sent: u64,
    /// Bytes those repairs added to the wire: whole datagrams (UDP/IPv4 headers
    /// included) for repairs in packets of their own, the RFC 2198 block (and its
    /// headers) for those riding on media packets.
    pub repair_bytes_sent: u64,
    /// Datagrams sent (media, repair and RTCP) and their bytes.
    pub datagrams_sent: u64,
    /// Bytes of those datagrams.
    pub bytes_sent: u64,
    /// RTCP compound or feedback packets sent.
    pub rtcp_sent: u64,
    /// Datagrams accepted (authenticated and parsed).
    pub datagrams_received: u64,
    /// Datagrams rejected (SRTP authentication or replay, malformed packets).
    pub rejected: u64,
    /// Media packets received from the network (before FEC).
    pub media_received: u64,
    /// Media packets rebuilt by the Reed-Solomon FEC decoder.
    pub recovered_by_fec: u64,
    /// Missing frames rebuilt from Opus in-band FEC (LBRR).
    pub recovered_inband: u64,
    /// Missing frames concealed by Opus PLC.
    pub concealed: u64,
    /// Frames decoded from received packets.
    pub decoded: u64,
    /// Frames shortened by time stretching (accelerate).
    pub accelerated: u64,
    /// Frames lengthened by time stretching (preemptive expand).
    pub expanded: u64,
    /// Playout ticks after audio started that found no audio due, played as Opus PLC
    /// (the silence before audio starts and after the peer's BYE is not counted).
    pub underruns: u64,
    /// Datagrams or PCM frames dropped because a queue was full.
    pub queue_drops: u64,
    /// Latest round-trip time from RTCP.
    pub rtt: Option<Duration>,
    /// The peer's latest loss fraction of our stream (0-1).
    pub remote_loss: f64,
    /// Mean loss burst of our stream (packets) from the peer's XR Loss RLE reports,
    /// the estimate FEC is chosen with; 1 before any such report.
    pub remote_mean_burst: f64,
    /// The peer's latest interarrival jitter of our stream.
    pub remote_jitter: Duration,
    /// Our interarrival jitter of the peer's stream.
    pub local_jitter: Duration,
    /// Our cumulative loss of the peer's stream (packets, before FEC).
    pub local_lost: i64,
    /// The loss-based rate, bit/s.
    pub loss_based_bps: u32,
    /// The peer's latest REMB, bit/s.
    pub remote_estimate_bps: Option<u64>,
    /// Our delay-based estimate of the peer's stream, bit/s.
    pub local_estimate_bps: u32,
    /// The send rate in force (payload bits: the minimum of the loss-based rate and
    /// the REMB less headers), bit/s.
    pub target_bps: u32,
    /// The Opus bitrate in force, bit/s.
    pub codec_bps: u32,
    /// The FEC in force.
    pub protection: Option<Protection>,
    /// Changes of the Reed-Solomon group `(k, m, stride)` so far.
    pub protection_changes: u64,
    /// The jitter buffer's target delay.
    pub jitter_target: Duration,
    /// Audio buffered for playout: the jitter buffer's packets plus decoded samples.
    pub buffered: Duration,
    /// Whole frames the jitter buffer itself dropped to catch up (its own
    /// accelerate, which time stretching should make rare).
    pub jitter_dropped: u64,
}

/// The outgoing datagram queue, bounded by `max_queued` (the oldest is dropped).
struct Outbox {
    datagrams: VecDeque<Bytes>,
    max: usize,
}

impl Outbox {
    const fn new(max: usize) -> Self {
        Self {
            datagrams: VecDeque::new(),
            max,
        }
    }

    /// Queues a datagram, counting it (and a drop) in `stats`.
    fn push(&mut self, datagram: Bytes, stats: &mut SessionStats) {
        if self.datagrams.len() >= self.max {
            self.datagrams.pop_front();
            stats.queue_drops += 1;
        }
        stats.datagrams_sent += 1;
        stats.bytes_sent += datagram.len() as u64;
        self.datagrams.push_back(datagram);
    }

    fn pop(&mut self) -> Option<Bytes> {
        self.datagrams.pop_front()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.datagrams.len()
    }
}

/// An SRTP session keyed with `k` repeated, for the subsystems' unit tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
fn test_srtp(k: u8) -> SrtpSession {
    use chorus_crypto::srtp::{Policy, Suite};
    let s = Suite::AeadAes128Gcm;
    SrtpSession::new(Policy::new(s, &vec![k; s.key_len()], &vec![k; s.salt_len()]).unwrap())
        .unwrap()
}

/// One audio call leg. See the module docs for the pipeline and the run loop.
///
/// A hub: a sender encodes and protects our stream, a receiver checks, repairs
/// and plays the peer's, and the RTCP part schedules the reports that tie them
/// together; the session owns the configuration, the clock origin, the entropy
/// source and the output queues, and routes inputs between them.
pub struct Session {
    config: SessionConfig,
    epoch: Instant,
    entropy: Box<dyn Entropy>,
    tx: Sender,
    rx: Receiver,
    rtcp: Rtcp,
    /// Where the peer's datagrams come from and ours go, for [`DatagramCore`].
    peer: Option<SocketAddr>,
    transmits: Outbox,
    events: VecDeque<Event>,
    stats: SessionStats,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("ssrc", &self.config.ssrc)
            .field("remote_ssrc", &self.rx.remote_ssrc())
            .field("has_peer", &self.peer.is_some())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A call leg starting at `now`. `outbound` protects what we send, `inbound`
    /// checks what we receive (keys from the call's key exchange). `entropy` draws
    /// the initial sequence number and timestamp (RFC 3550 §5.1) and the RTCP
    /// interval spreading.
    pub fn new(
        config: SessionConfig,
        outbound: SrtpSession,
        inbound: SrtpSession,
        mut entropy: Box<dyn Entropy>,
        now: Instant,
    ) -> Result<Self, Error> {
        if config.ssrc == config.fec_ssrc
            || config.payload_type == config.fec_payload_type
            || config.red_payload_type == config.payload_type
            || config.red_payload_type == config.fec_payload_type
            || config.payload_type > 127
            || config.fec_payload_type > 127
            || config.red_payload_type > 127
            || !(1..=14).contains(&config.audio_level_id)
            || !(1..=14).contains(&config.abs_send_time_id)
            || config.audio_level_id == config.abs_send_time_id
            || config.cname.len() > 255
            || config.rtcp_interval < Duration::from_millis(100)
            || config.max_queued == 0
        {
            return Err(UsageError::InvalidConfig(
                "distinct SSRCs, payload types (< 128) and extension ids (1-14), CNAME <= 255 \
                 bytes, rtcp_interval >= 100 ms, max_queued > 0",
            )
            .into());
        }
        let first_rtcp = config
            .rtcp_interval
            .mul_f64(0.5 * (control::random_unit(&mut *entropy) + 0.5));
        let seq = entropy.u32().map_or(0, |v| v as u16);
        let timestamp = entropy.u32().unwrap_or(0);
        let tx = Sender::new(&config, outbound, seq, timestamp)?;
        let rx = Receiver::new(&config, inbound, tx.protection())?;
        Ok(Self {
            epoch: now,
            entropy,
            tx,
            rx,
            rtcp: Rtcp::new(now + first_rtcp),
            peer: None,
            transmits: Outbox::new(config.max_queued),
            events: VecDeque::new(),
            stats: SessionStats::default(),
            config,
        })
    }

    /// Samples in one 20 ms frame at the configured rate.
    #[must_use]
    pub const fn frame_samples(&self) -> usize {
        self.config.sample_rate as usize / 50
    }

    /// Sets the peer's transport address: [`DatagramCore::accepts`] takes RTP and
    /// RTCP from it only, and [`DatagramCore::poll_transmit`] addresses datagrams to
    /// it. Until it is set the session accepts nothing through the trait (a media
    /// port must not take SRTP from whoever guesses it first) and its datagrams wait
    /// in the queue (at most `max_queued`). Calling it again moves the call leg to a
    /// new address (an ICE restart picked another pair). The inherent
    /// [`Session::handle_input`] and [`Session::poll_transmit`] ignore it: their
    /// caller's transport knows the peer.
    pub fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = Some(peer);
    }

    /// The peer's address given to [`Session::set_peer`], if any.
    #[must_use]
    pub const fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Counters and estimates so far.
    #[must_use]
    pub fn stats(&self) -> SessionStats {
        let mut s = self.stats;
        self.tx.fill_stats(&mut s, &self.config);
        self.rx.fill_stats(&mut s, &self.config);
        s
    }

    /// Encodes one frame of mono PCM (`frame_samples()` of them) captured at `now`
    /// and queues its datagrams (media, then any repair packets it completes).
    pub fn send_frame(&mut self, now: Instant, pcm: &[i16]) -> Result<(), Error> {
        if pcm.len() != self.frame_samples() {
            return Err(UsageError::InvalidConfig("pcm must hold exactly one 20 ms frame").into());
        }
        self.tx.send_frame(
            now,
            self.epoch,
            pcm,
            &self.config,
            &mut self.transmits,
            &mut self.stats,
        )
    }

    /// One datagram from the peer at `now`. `Err` means rejected, state unchanged
    /// (it is also counted in [`SessionStats::rejected`]).
    pub fn handle_input(&mut self, now: Instant, datagram: &[u8]) -> Result<(), Error> {
        let r = match datagram.get(1) {
            // RFC 5761 §4: RTCP packet types 192-223 sit where RTP has M + PT.
            Some(b) if (192..=223).contains(b) => self.handle_rtcp(now, datagram),
            Some(_) => self.handle_rtp(now, datagram),
            None => Err(crate::DecodeError::Truncated {
                offset: 0,
                needed: 2,
            }
            .into()),
        };
        match r {
            Ok(()) => self.stats.datagrams_received += 1,
            Err(_) => self.stats.rejected += 1,
        }
        r
    }

    fn handle_rtp(&mut self, now: Instant, datagram: &[u8]) -> Result<(), Error> {
        let lost = self
            .rx
            .handle_rtp(now, datagram, &self.config, &mut self.stats)?;
        if lost {
            self.early_report(now);
        }
        Ok(())
    }

    fn handle_rtcp(&mut self, now: Instant, datagram: &[u8]) -> Result<(), Error> {
        let plain = self.rx.unprotect_rtcp(datagram)?;
        let packets = rtcp::decode_compound(&plain, &rtcp::Limits::default())?;
        let arrival = rtcp::ntp_middle(control::ntp(self.epoch, now));
        let mut rate_changed = false;
        let mut loss_news = false;
        for p in &packets {
            match p {
                rtcp::Packet::Remb { bitrate, .. } => {
                    self.tx.handle_remb(bitrate.bps());
                    rate_changed = true;
                }
                rtcp::Packet::SenderReport {
                    ssrc,
                    info,
                    reports,
                } => {
                    if self.rx.remote_ssrc().is_none_or(|r| r == *ssrc) {
                        self.rtcp.handle_sender_report(info.ntp, now);
                    }
                    rate_changed |= self.handle_blocks(now, arrival, reports);
                }
                rtcp::Packet::ReceiverReport { reports, .. } => {
                    rate_changed |= self.handle_blocks(now, arrival, reports);
                }
                rtcp::Packet::Xr { blocks, .. } => {
                    for b in blocks {
                        if let XrBlock::LossRle(rle) = b
                            && rle.ssrc == self.config.ssrc
                        {
                            self.tx.record_fates(rle);
                            loss_news = true;
                        }
                    }
                }
                rtcp::Packet::Bye { sources, .. } => {
                    if self.rx.remote_ssrc().is_none_or(|r| sources.contains(&r)) {
                        self.rx.handle_bye();
                    }
                    self.events.push_back(Event::RemoteBye);
                }
                _ => {}
            }
        }
        // A REMB alone moves the budget; the protection is re-chosen with it once
        // a report told us the loss.
        if loss_news || (rate_changed && self.tx.loss_known()) {
            self.tx.update_protection(&self.config, &mut self.stats);
        }
        if rate_changed {
            self.tx.apply_rate(&self.config)?;
        }
        Ok(())
    }

    /// Report blocks about our stream: RTT (to the stats and the receiver's delay
    /// controller), the peer's loss and jitter (to the stats and the sender).
    fn handle_blocks(&mut self, now: Instant, arrival: u32, reports: &[ReportBlock]) -> bool {
        let mut changed = false;
        let ours = self.config.ssrc;
        for b in reports.iter().filter(|b| b.ssrc == ours) {
            if let Some(rtt) = rtcp::round_trip_time(arrival, b) {
                self.stats.rtt = Some(rtt);
                self.rx.handle_rtt(rtt);
            }
            self.stats.remote_loss = f64::from(b.fraction_lost) / 256.0;
            self.stats.remote_jitter =
                Duration::from_nanos(u64::from(b.jitter) * 1_000_000_000 / u64::from(OPUS_CLOCK));
            self.tx
                .handle_loss_report(now, b.fraction_lost, &self.config);
            changed = true;
        }
        changed
    }

    /// Timers: RTCP reports, REMB feedback and playout ticks due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.rtcp.next_report() {
            self.send_report(now);
            self.rtcp
                .regular_sent(now, &self.config, &mut *self.entropy);
        } else if let Some(rate) = self.rx.poll_remb(now)
            && let Some(out) = control::remb_only(&self.config, rate, self.rx.remote_ssrc())
        {
            self.send_rtcp(out);
        }
        self.rx.expire_fec(now, &self.config);
        self.rx.handle_playout(now, &self.config, &mut self.stats);
    }

    /// A loss in the peer's media: an early report now, or the next one sooner.
    fn early_report(&mut self, now: Instant) {
        if self.rtcp.early(now, &self.config) == Early::Now {
            self.send_report(now);
            self.rtcp.schedule(now, &self.config, &mut *self.entropy);
        }
    }

    fn send_report(&mut self, now: Instant) {
        let ntp = control::ntp(self.epoch, now);
        if let Some(out) = self
            .rtcp
            .report(now, ntp, &self.config, &mut self.tx, &mut self.rx)
        {
            self.send_rtcp(out);
        }
    }

    fn send_rtcp(&mut self, out: BytesMut) {
        let mut protected = out.to_vec();
        if self.tx.protect_rtcp(&mut protected).is_ok() {
            self.transmits.push(Bytes::from(protected), &mut self.stats);
            self.stats.rtcp_sent += 1;
        }
    }

    /// Ends the call leg: queues an RTCP BYE (RFC 3550 §6.6).
    pub fn close(&mut self) {
        if let Some(out) = control::bye(&self.config) {
            self.send_rtcp(out);
        }
    }

    /// The next datagram to send to the peer (the caller's transport knows where;
    /// [`DatagramCore::poll_transmit`] addresses it to [`Session::peer`]).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop()
    }

    /// The next frame of decoded PCM (`frame_samples()` mono samples), one per
    /// playout tick once the first packet arrived; silence before audio starts.
    #[must_use]
    pub fn poll_pcm(&mut self) -> Option<Vec<i16>> {
        self.rx.poll_pcm()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] should next be called: the next RTCP report,
    /// REMB or playout tick.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            Some(self.rtcp.next_report()),
            self.rx.next_playout(),
            self.rx.remb_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// A call leg behind a socket (or a [`chorus_framing::Mux`]): it takes RTP and RTCP
/// (RFC 7983's 128..=191, [`chorus_framing::classify`]) from the peer set with
/// [`Session::set_peer`] only, and sends there. Decoded audio stays on
/// [`Session::poll_pcm`], which the owner drains with the rest.
impl DatagramCore for Session {
    type Event = Event;
    type Error = Error;

    fn accepts(&self, _local: SocketAddr, from: SocketAddr, bytes: &[u8]) -> bool {
        self.peer == Some(from)
            && matches!(
                chorus_framing::classify(bytes),
                PacketKind::Rtp | PacketKind::Rtcp
            )
    }

    /// # Errors
    /// [`UsageError::NotFromPeer`] for a datagram from another address (or before
    /// [`Session::set_peer`]), counted in [`SessionStats::rejected`]; otherwise as
    /// [`Session::handle_input`].
    fn handle_datagram(
        &mut self,
        now: Instant,
        _local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        if self.peer != Some(from) {
            self.stats.rejected += 1;
            return Err(UsageError::NotFromPeer.into());
        }
        self.handle_input(now, bytes)
    }

    /// The next datagram, to the peer; `None` while no peer is set (the datagrams
    /// wait, bounded by `max_queued`).
    fn poll_transmit(&mut self) -> Option<Transmit> {
        let peer = self.peer?;
        Self::poll_transmit(self).map(|payload| Transmit::new(peer, payload))
    }

    fn poll_event(&mut self) -> Option<Event> {
        Self::poll_event(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Self::poll_timeout(self)
    }

    fn handle_timeout(&mut self, now: Instant) {
        Self::handle_timeout(self, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_crypto::SystemEntropy;

    fn session(config: SessionConfig, now: Instant) -> Session {
        Session::new(
            config,
            test_srtp(1),
            test_srtp(2),
            Box::new(SystemEntropy::new()),
            now,
        )
        .unwrap()
    }

    #[test]
    fn rejects_a_configuration_with_one_ssrc_for_media_and_repair() {
        let config = SessionConfig {
            fec_ssrc: 1,
            ..SessionConfig::default()
        };
        let r = Session::new(
            config,
            test_srtp(1),
            test_srtp(2),
            Box::new(SystemEntropy::new()),
            Instant::now(),
        );
        assert!(r.is_err());
    }

    #[test]
    fn counts_a_truncated_datagram_as_rejected() {
        let mut s = session(SessionConfig::default(), Instant::now());
        assert!(s.handle_input(Instant::now(), &[0x80]).is_err());
        assert_eq!(s.stats().rejected, 1);
        assert_eq!(s.stats().datagrams_received, 0);
    }

    #[test]
    fn rejects_pcm_that_is_not_one_frame() {
        let mut s = session(SessionConfig::default(), Instant::now());
        assert!(s.send_frame(Instant::now(), &[0; 100]).is_err());
        assert_eq!(s.poll_transmit(), None);
        assert!(s.send_frame(Instant::now(), &[0; 960]).is_ok());
        assert!(s.poll_transmit().is_some());
        assert_eq!(s.stats().frames_sent, 1);
    }

    #[test]
    fn first_report_is_due_within_half_to_one_and_a_half_half_intervals() {
        let t0 = Instant::now();
        let s = session(SessionConfig::default(), t0);
        let due = s.poll_timeout().unwrap();
        assert!(due >= t0 + Duration::from_millis(250));
        assert!(due <= t0 + Duration::from_millis(750));
    }

    #[test]
    fn close_queues_one_rtcp_packet() {
        let mut s = session(SessionConfig::default(), Instant::now());
        s.close();
        assert!(s.poll_transmit().is_some());
        assert_eq!(s.poll_transmit(), None);
        assert_eq!(s.stats().rtcp_sent, 1);
    }

    #[test]
    fn the_outbox_drops_the_oldest_when_full() {
        let mut out = Outbox::new(2);
        let mut stats = SessionStats::default();
        for b in 0..3u8 {
            out.push(Bytes::from(vec![b]), &mut stats);
        }
        assert_eq!(stats.queue_drops, 1);
        assert_eq!(stats.datagrams_sent, 3);
        assert_eq!(out.pop(), Some(Bytes::from(vec![1])));
        assert_eq!(out.len(), 1);
    }
}
