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
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use core::time::Duration;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use chorus_crypto::srtp::SrtpSession;
use chorus_framing::{DatagramCore, Entropy, PacketKind, Transmit};

use crate::adapt::{
    FrameBudget, LossEstimator, Protection, ProtectionGoal, RateConfig, RateController,
    budget_score, choose_protection, choose_protection_for_budget,
};
use crate::congestion::{self, DelayController};
use crate::error::{Error, UsageError};
use crate::fec;
use crate::jitter::{JitterBuffer, JitterConfig, Playout};
use crate::opus::{self, Channels};
use crate::red;
use crate::rtcp::xr::{LossRle, XrBlock};
use crate::rtcp::{self, ReportBlock, SenderInfo};
use crate::rtp::{self, AudioLevel, Element, Extension};
use crate::stats::{ArrivalRecord, ReceiveStats};
use crate::timestretch::TimeStretcher;

/// The RTP clock of Opus (RFC 7587 §4.1): always 48 kHz.
const OPUS_CLOCK: u32 = 48_000;
/// UDP over IPv4 headers, counted in the wire rate.
const UDP_IP_OVERHEAD: usize = 28;
/// Header bits per second added to the payload rate bounds for the delay-based
/// estimator, which measures the wire: 50 packets/s of 80 bytes.
const WIRE_ALLOWANCE: u32 = 32_000;
/// Sequence numbers an XR Loss RLE report covers: the last 5 s of 20 ms frames, so
/// that one lost report costs the sender nothing.
const RLE_WINDOW: usize = 250;
/// The newest sequence numbers a Loss RLE report leaves out: a packet missing there
/// may only be late (30 ms of jitter reorders about one 20 ms frame in 18). A loss
/// is reported once `RLE_LAG` later packets arrived (early feedback, RFC 4585).
const RLE_LAG: usize = 2;
/// The sender's loss record halves its weight every this many packets (3 s), as the
/// hand-wired pipeline's `ProtectionController` does.
const LOSS_HALF_LIFE: u64 = 150;
/// The mouth-to-ear delay FEC may fill up to, with half the RTT and twice the
/// jitter: ITU-T G.107's E-model charges little delay impairment below about
/// 177 ms, and a piggybacked (3, 2) group, the best per byte at 10 % loss, needs
/// 80 ms of it (ITU-T G.114's 150 ms would leave 50 ms on a 100 ms RTT).
const MOUTH_TO_EAR_BUDGET: Duration = Duration::from_millis(200);
/// Repair payloads waiting for a media packet to ride on, at most (a change of group
/// can leave a few; more would be stale).
const MAX_PENDING_REPAIRS: usize = 32;
/// Redundant blocks accepted in one RFC 2198 packet.
const MAX_RED_BLOCKS: usize = 4;

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

/// One audio call leg. See the module docs for the pipeline and the run loop.
pub struct Session {
    config: SessionConfig,
    frame: Duration,
    frame_samples: usize,
    epoch: Instant,
    entropy: Box<dyn Entropy>,
    // Sender.
    encoder: opus::Encoder,
    outbound: SrtpSession,
    seq: u16,
    timestamp: u32,
    fec_seq: u16,
    fec_tx: Option<fec::Encoder>,
    /// Piggybacked repair payloads not yet sent, with the RTP timestamp of the frame
    /// that completed their group.
    pending_repairs: VecDeque<(Vec<u8>, u32)>,
    /// RTP header and extension bytes of our last media packet (a repair shard holds
    /// a whole source packet).
    rtp_header_bytes: usize,
    protection: Protection,
    loss_rate: RateController,
    smoothed_loss: f64,
    reports_seen: u64,
    /// When the last report block about our stream arrived.
    last_loss_report: Option<Instant>,
    /// Our stream's packet fates from the peer's Loss RLE reports.
    loss_record: LossEstimator,
    /// The sequence number after the last fate recorded.
    loss_record_next: Option<u16>,
    loss_record_since_decay: u64,
    remote_estimate: Option<u64>,
    header_bytes: usize,
    sent_packets: u32,
    sent_octets: u32,
    sent_since_report: bool,
    last_rtp_timestamp: u32,
    last_send: Option<Instant>,
    // Receiver.
    inbound: SrtpSession,
    remote_ssrc: Option<u32>,
    recv_stats: ReceiveStats,
    arrivals: ArrivalRecord,
    delay: DelayController,
    fec_rx: fec::Decoder,
    /// The last repair's group `(k, m, stride, piggybacked)`.
    fec_shape: Option<(u8, u8, u8, bool)>,
    last_repair: Option<Instant>,
    /// When the last media packet carrying Opus in-band FEC (LBRR) came.
    last_inband: Option<Instant>,
    /// Silent frames in a row just played: a pause, not the gap between two words.
    silent_run: u32,
    jitter: JitterBuffer<Vec<u8>>,
    decoder: opus::Decoder,
    stretcher: TimeStretcher,
    sync: VecDeque<i16>,
    excess_ms: f64,
    /// Delay the playout still owes the jitter buffer's target after it rose (see
    /// `play_one`), paid back by expanded frames.
    debt: Duration,
    last_target: Duration,
    /// The FEC group delay the jitter buffer waits for, and what it should become:
    /// decreases are applied as accelerated frames remove audio.
    extra_applied: Duration,
    extra_wanted: Duration,
    started: bool,
    /// The peer sent BYE: no packet follows those buffered.
    remote_ended: bool,
    next_playout: Option<Instant>,
    last_sr: Option<(u32, Instant)>,
    // RTCP.
    next_rtcp: Instant,
    /// When the last report went out, and whether it was an early one.
    last_report: Option<Instant>,
    early_sent: bool,
    /// The next regular report was brought forward for a loss (it counts as the
    /// early report of its interval).
    early_pulled: bool,
    /// Where the peer's datagrams come from and ours go, for [`DatagramCore`].
    peer: Option<SocketAddr>,
    // Outputs.
    transmits: VecDeque<Bytes>,
    pcm: VecDeque<Vec<i16>>,
    events: VecDeque<Event>,
    stats: SessionStats,
    // Scratch.
    scratch_payload: Vec<u8>,
    scratch_pcm: Vec<i16>,
    scratch_stretch: Vec<i16>,
    scratch_ext: Vec<u8>,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("ssrc", &self.config.ssrc)
            .field("remote_ssrc", &self.remote_ssrc)
            .field("has_peer", &self.peer.is_some())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Hysteresis for the Reed-Solomon group: each change of `(k, m, stride)` moves the
/// receiver's playout delay, so the group in force stays while it fits the delay
/// budget and the new choice would not sound clearly better (0.05 of
/// [`budget_score`]); FEC goes off only below half the goal's minimum loss.
fn keep_group(
    current: Protection,
    new: Protection,
    loss: f64,
    burst: f64,
    goal: &ProtectionGoal,
    budget: &FrameBudget,
) -> Protection {
    let keep = match (current.rs, new.rs) {
        (Some(_), Some(_)) => {
            current.delay_for(goal) <= goal.max_delay.max(goal.heavy_max_delay)
                && budget_score(&current, loss, burst, goal, budget)
                    >= budget_score(&new, loss, burst, goal, budget) - 0.05
        }
        (Some(_), None) => loss >= goal.min_loss / 2.0,
        (None, _) => false,
    };
    if keep { current } else { new }
}

/// Packets of the peer's loss record below which (unless two report blocks came)
/// a path without loss is not yet taken as clean: 1 s of 20 ms frames, none lost
/// one time in 200 at 10 % loss.
const CLEAN_RECORD: u64 = 50;

/// Silent frames in a row after which playout is in a pause between sentences
/// (where a frame can be skipped unheard), not between two words.
const PAUSE_FRAMES: u32 = 4;

/// Whether a frame is a pause: RMS below about -44 dBFS.
fn is_silent(pcm: &[i16]) -> bool {
    const SILENCE_RMS: f64 = 200.0;
    let energy: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    !pcm.is_empty() && energy / (pcm.len() as f64) < SILENCE_RMS * SILENCE_RMS
}

fn random_unit(entropy: &mut dyn Entropy) -> f64 {
    // A failed source spreads nothing: the interval's middle.
    entropy
        .u64()
        .map_or(0.5, |v| (v >> 11) as f64 / (1u64 << 53) as f64)
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
            return Err(UsageError::BadConfig(
                "distinct SSRCs, payload types (< 128) and extension ids (1-14), CNAME <= 255 \
                 bytes, rtcp_interval >= 100 ms, max_queued > 0",
            )
            .into());
        }
        let frame = Duration::from_millis(20);
        let encoder = opus::Encoder::new(opus::EncoderConfig {
            sample_rate: config.sample_rate,
            frame,
            complexity: config.complexity,
            inband_fec: false,
            expected_loss_percent: 0,
            ..opus::EncoderConfig::default()
        })?;
        let decoder = opus::Decoder::new(config.sample_rate, Channels::Mono)?;
        let mut jb_config = config.jitter;
        jb_config.clock_rate = OPUS_CLOCK;
        jb_config.frame = frame;
        let jitter = JitterBuffer::new(jb_config)?;
        let fec_rx = fec::Decoder::new(fec::DecoderConfig::default())?;
        let stretcher = TimeStretcher::new(config.sample_rate)?;
        let loss_rate = RateController::new(config.rate);
        // The delay controller measures the wire: its bounds get a header allowance
        // (50 packets/s of ~80 bytes of RTP, extensions, SRTP and UDP/IP headers).
        let mut wire = config.rate;
        wire.min_bps = wire.min_bps.saturating_add(WIRE_ALLOWANCE / 2);
        wire.start_bps = wire.start_bps.saturating_add(WIRE_ALLOWANCE);
        wire.max_bps = wire.max_bps.saturating_add(WIRE_ALLOWANCE);
        let delay = DelayController::new(wire);
        let first_rtcp = config
            .rtcp_interval
            .mul_f64(0.5 * (random_unit(&mut *entropy) + 0.5));
        let seq = entropy.u32().map_or(0, |v| v as u16);
        let timestamp = entropy.u32().unwrap_or(0);
        let frame_samples = config.sample_rate as usize / 50;
        let mut session = Self {
            frame,
            frame_samples,
            epoch: now,
            entropy,
            encoder,
            outbound,
            seq,
            timestamp,
            fec_seq: 0,
            fec_tx: None,
            pending_repairs: VecDeque::new(),
            rtp_header_bytes: 20,
            protection: choose_protection(0.0, 1.0, &config.protection),
            loss_rate,
            smoothed_loss: 0.0,
            reports_seen: 0,
            last_loss_report: None,
            loss_record: LossEstimator::new(),
            loss_record_next: None,
            loss_record_since_decay: 0,
            remote_estimate: None,
            header_bytes: 68,
            sent_packets: 0,
            sent_octets: 0,
            sent_since_report: false,
            last_rtp_timestamp: timestamp,
            last_send: None,
            inbound,
            remote_ssrc: None,
            recv_stats: ReceiveStats::new(OPUS_CLOCK),
            arrivals: ArrivalRecord::new(RLE_WINDOW, RLE_LAG),
            delay,
            fec_rx,
            fec_shape: None,
            last_repair: None,
            last_inband: None,
            silent_run: 0,
            jitter,
            decoder,
            stretcher,
            sync: VecDeque::new(),
            excess_ms: 0.0,
            debt: Duration::ZERO,
            last_target: Duration::ZERO,
            extra_applied: Duration::ZERO,
            extra_wanted: Duration::ZERO,
            started: false,
            remote_ended: false,
            next_playout: None,
            last_sr: None,
            next_rtcp: now + first_rtcp,
            last_report: None,
            early_sent: false,
            early_pulled: false,
            peer: None,
            transmits: VecDeque::new(),
            pcm: VecDeque::new(),
            events: VecDeque::new(),
            stats: SessionStats::default(),
            scratch_payload: Vec::new(),
            scratch_pcm: Vec::new(),
            scratch_stretch: Vec::new(),
            scratch_ext: Vec::new(),
            config,
        };
        let first = session.config.force_protection.unwrap_or_else(|| {
            let p = session.config.initial_protection;
            let budget = session.frame_budget();
            if p.rs.is_some()
                && budget.media_bytes(&p, &session.config.protection) < budget.min_media_bytes
            {
                choose_protection(0.0, 1.0, &session.config.protection)
            } else {
                p
            }
        });
        session.set_protection(first);
        // The peer starts as we do (both ends share the configuration, as they do
        // the payload types): its group's wait is in our playout delay from the
        // first packet, so the playout does not move when its first repairs come.
        // Dropped like any group's after 2 s without a repair.
        if let Some((k, m)) = first.rs {
            let piggybacked = session.config.protection.piggyback && first.can_piggyback();
            session.fec_shape = Some((k, m, first.stride, piggybacked));
            session.set_extra_delay(first.delay_for(&session.config.protection));
        }
        session.apply_rate()?;
        Ok(session)
    }

    /// Samples in one 20 ms frame at the configured rate.
    #[must_use]
    pub const fn frame_samples(&self) -> usize {
        self.frame_samples
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
        s.loss_based_bps = self.loss_rate.rate();
        s.remote_estimate_bps = self.remote_estimate;
        s.remote_mean_burst = self.loss_record.mean_burst();
        s.local_estimate_bps = self.delay.estimate();
        s.target_bps = self.target_bps();
        s.codec_bps = self.encoder.config().bitrate;
        s.protection = Some(self.protection);
        s.jitter_target = self.jitter.target_delay();
        s.local_jitter = self.recv_stats.jitter_duration();
        s.local_lost = self.recv_stats.cumulative_lost();
        s.buffered = self.buffered();
        s.jitter_dropped = self.jitter.stats().accelerated;
        s
    }

    fn buffered(&self) -> Duration {
        let sync =
            Duration::from_secs_f64(self.sync.len() as f64 / f64::from(self.config.sample_rate));
        self.frame * u32::try_from(self.jitter.len()).unwrap_or(u32::MAX) + sync
    }

    /// Packet headers per second (RTP, extensions, SRTP tag, UDP/IP) at 50 packets/s.
    fn header_bps(&self) -> u64 {
        (self.header_bytes * 8 * 50) as u64
    }

    /// The send rate in RTP payload bits (media plus FEC repair): the loss-based rate,
    /// capped by the peer's REMB less the packet headers (REMB counts the wire).
    fn target_bps(&self) -> u32 {
        let remb = self.remote_estimate.map_or(u32::MAX, |r| {
            u32::try_from(r.saturating_sub(self.header_bps())).unwrap_or(u32::MAX)
        });
        self.loss_rate
            .rate()
            .min(remb)
            .max(self.config.rate.min_bps)
    }

    /// Bytes a repair adds besides the media bytes it codes: the source packet's
    /// RTP header, the FEC header and length, and a packet header of its own or an
    /// RFC 2198 block header (plus the primary's 1-byte header).
    fn repair_cost(&self, piggyback: bool) -> f64 {
        (self.rtp_header_bytes + fec::HEADER_LEN + 2) as f64
            + if piggyback {
                red::BLOCK_HEADER_LEN as f64 + 1.0
            } else {
                self.header_bytes as f64
            }
    }

    /// What a frame's bytes can buy at the current send rate.
    fn frame_budget(&self) -> FrameBudget {
        let secs = self.frame.as_secs_f64();
        FrameBudget {
            frame_bytes: f64::from(self.target_bps()) / 8.0 * secs,
            repair_cost: self.repair_cost(false),
            repair_cost_piggybacked: self.repair_cost(true),
            min_media_bytes: f64::from(self.config.min_codec_bps) / 8.0 * secs,
        }
    }

    /// Whether the repairs of the group in force ride on media packets.
    fn piggybacked(&self) -> bool {
        self.config.protection.piggyback && self.protection.can_piggyback()
    }

    /// Sets the Opus bitrate from the target, which pays for every byte of repair:
    /// per frame, `o` repairs (`o` = repairs per source) each as long as a source
    /// packet (header included) plus the FEC header and length, and either a packet
    /// header of its own or an RFC 2198 block header; the Opus payload gets the rest.
    fn apply_rate(&mut self) -> Result<(), Error> {
        let o = self.protection.overhead();
        let per_repair = self.repair_cost(self.piggybacked());
        let frame_bytes = f64::from(self.target_bps()) / 8.0 * self.frame.as_secs_f64();
        let media_bytes = (frame_bytes - o * per_repair) / (1.0 + o);
        let media = media_bytes * 8.0 / self.frame.as_secs_f64();
        let codec = media.clamp(6_000.0, 510_000.0) as u32;
        if codec.abs_diff(self.encoder.config().bitrate) >= 500 {
            self.encoder.set_bitrate(codec)?;
        }
        Ok(())
    }

    fn queue(&mut self, datagram: Bytes) {
        if self.transmits.len() >= self.config.max_queued {
            self.transmits.pop_front();
            self.stats.queue_drops += 1;
        }
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += datagram.len() as u64;
        self.transmits.push_back(datagram);
    }

    fn abs_send_time(&self, now: Instant) -> [u8; 3] {
        congestion::abs_send_time(now.saturating_duration_since(self.epoch))
    }

    /// Encodes one frame of mono PCM (`frame_samples()` of them) captured at `now`
    /// and queues its datagrams (media, then any repair packets it completes).
    pub fn send_frame(&mut self, now: Instant, pcm: &[i16]) -> Result<(), Error> {
        if pcm.len() != self.frame_samples {
            return Err(UsageError::BadConfig("pcm must hold exactly one 20 ms frame").into());
        }
        let mut payload = core::mem::take(&mut self.scratch_payload);
        self.encoder.encode(pcm, &mut payload)?;
        let level = [AudioLevel::from_samples(pcm, true).to_byte()];
        let abs = self.abs_send_time(now);
        let mut ext = core::mem::take(&mut self.scratch_ext);
        let profile = rtp::write_elements(
            &[
                Element {
                    id: self.config.audio_level_id,
                    data: &level,
                },
                Element {
                    id: self.config.abs_send_time_id,
                    data: &abs,
                },
            ],
            &mut ext,
        )?;
        let packet = rtp::Packet {
            marker: self.stats.frames_sent == 0,
            payload_type: self.config.payload_type,
            sequence: self.seq,
            timestamp: self.timestamp,
            ssrc: self.config.ssrc,
            csrcs: Vec::new(),
            extension: Some(Extension {
                profile,
                data: &ext,
            }),
            payload: &payload,
            padding: 0,
        };
        let mut wire = BytesMut::with_capacity(packet.encoded_len() + 16);
        packet.encode(&mut wire)?;
        self.rtp_header_bytes = wire.len() - payload.len();
        if let Some(fec_tx) = self.fec_tx.as_mut() {
            fec_tx.push(self.seq, &wire)?;
        }
        let mut protected = match self.pending_repairs.pop_front() {
            // An earlier group's repair rides on this packet (RFC 2198): the packet
            // FEC protects is the plain one above, which the receiver rebuilds.
            Some((repair, completed)) => {
                let mut red_payload = Vec::with_capacity(payload.len() + repair.len() + 5);
                red::Payload {
                    redundant: vec![red::Block {
                        payload_type: self.config.fec_payload_type,
                        timestamp_offset: u16::try_from(self.timestamp.wrapping_sub(completed))
                            .unwrap_or(red::MAX_OFFSET)
                            .min(red::MAX_OFFSET),
                        data: &repair,
                    }],
                    primary_type: self.config.payload_type,
                    primary: &payload,
                }
                .encode(&mut red_payload)?;
                self.stats.repair_bytes_sent += (red_payload.len() - payload.len()) as u64;
                self.stats.repair_sent += 1;
                let red_packet = rtp::Packet {
                    payload_type: self.config.red_payload_type,
                    payload: &red_payload,
                    ..packet.clone()
                };
                let mut w = BytesMut::with_capacity(red_packet.encoded_len() + 16);
                red_packet.encode(&mut w)?;
                w.to_vec()
            }
            None => wire.to_vec(),
        };
        let plain_len = protected.len();
        self.outbound.protect_rtp(&mut protected)?;
        // RTP header and extensions, SRTP tag (and MKI), UDP/IP.
        self.header_bytes = self.rtp_header_bytes + (protected.len() - plain_len) + UDP_IP_OVERHEAD;
        self.queue(Bytes::from(protected));
        self.stats.frames_sent += 1;
        self.sent_packets = self.sent_packets.wrapping_add(1);
        self.sent_octets = self.sent_octets.wrapping_add(payload.len() as u32);
        self.sent_since_report = true;
        self.last_rtp_timestamp = self.timestamp;
        self.last_send = Some(now);
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(OPUS_CLOCK / 50);
        // Repairs of the groups this frame completed: onto the next media packets, or
        // in packets of their own.
        let piggyback = self.piggybacked();
        while let Some(repair) = self.fec_tx.as_mut().and_then(fec::Encoder::poll_repair) {
            if piggyback {
                if self.pending_repairs.len() >= MAX_PENDING_REPAIRS {
                    self.pending_repairs.pop_front();
                }
                self.pending_repairs.push_back((repair, packet.timestamp));
                continue;
            }
            let p = rtp::Packet {
                marker: false,
                payload_type: self.config.fec_payload_type,
                sequence: self.fec_seq,
                timestamp: packet.timestamp,
                ssrc: self.config.fec_ssrc,
                csrcs: Vec::new(),
                extension: Some(Extension {
                    profile,
                    data: &ext,
                }),
                payload: &repair,
                padding: 0,
            };
            self.fec_seq = self.fec_seq.wrapping_add(1);
            let mut w = BytesMut::with_capacity(p.encoded_len() + 16);
            p.encode(&mut w)?;
            let mut protected = w.to_vec();
            self.outbound.protect_rtp(&mut protected)?;
            self.stats.repair_bytes_sent += (protected.len() + UDP_IP_OVERHEAD) as u64;
            self.queue(Bytes::from(protected));
            self.stats.repair_sent += 1;
        }
        self.scratch_payload = payload;
        self.scratch_ext = ext;
        Ok(())
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
        // Check the header before spending a decryption on it.
        rtp::Packet::decode(datagram)?;
        let mut plain = datagram.to_vec();
        self.inbound.unprotect_rtp(&mut plain)?;
        let p = rtp::Packet::decode(&plain)?;
        let abs = p.extension_elements().and_then(|mut els| {
            els.find_map(|e| {
                e.ok()
                    .filter(|e| e.id == self.config.abs_send_time_id)
                    .and_then(|e| congestion::decode_abs_send_time(e.data).ok())
            })
        });
        if let Some(abs) = abs {
            self.delay
                .handle_packet(now, abs, datagram.len() + UDP_IP_OVERHEAD);
        }
        if p.payload_type == self.config.fec_payload_type {
            self.handle_repair(now, p.payload, false)?;
        } else if p.payload_type == self.config.payload_type {
            self.handle_media(now, &p, &plain);
        } else if p.payload_type == self.config.red_payload_type {
            // RFC 2198: the primary is our media; repair blocks feed the FEC decoder,
            // other blocks are skipped (§3).
            let red = red::Payload::decode(p.payload, MAX_RED_BLOCKS)?;
            if red.primary_type != self.config.payload_type {
                return Err(crate::DecodeError::BadRtcpType(red.primary_type).into());
            }
            for b in &red.redundant {
                if b.payload_type == self.config.fec_payload_type {
                    self.handle_repair(now, b.data, true)?;
                }
            }
            // The FEC source is the packet as it would have been without the blocks.
            let source = rtp::Packet {
                payload_type: self.config.payload_type,
                payload: red.primary,
                ..p.clone()
            };
            let mut bytes = BytesMut::with_capacity(source.encoded_len());
            source.encode(&mut bytes)?;
            self.handle_media(now, &source, &bytes);
        } else {
            return Err(crate::DecodeError::BadRtcpType(p.payload_type).into());
        }
        while let Some(r) = self.fec_rx.poll_recovered() {
            if let Ok(p) = rtp::Packet::decode(&r.packet)
                && p.payload_type == self.config.payload_type
            {
                self.stats.recovered_by_fec += 1;
                self.buffer(now, p.sequence, p.timestamp, p.payload, true);
            }
        }
        Ok(())
    }

    /// A repair payload, from a packet of its own or riding on a media packet
    /// (`piggybacked`): to the FEC decoder; a new group shape moves the jitter
    /// buffer's extra delay to what that group needs.
    fn handle_repair(
        &mut self,
        now: Instant,
        payload: &[u8],
        piggybacked: bool,
    ) -> Result<(), Error> {
        let header = fec::RepairPacket::decode(payload)?;
        self.fec_rx.handle_repair(payload)?;
        self.last_repair = Some(now);
        let shape = (header.k, header.m, header.stride, piggybacked);
        if self.fec_shape != Some(shape) {
            self.fec_shape = Some(shape);
            self.set_extra_delay(self.fec_wait());
        }
        Ok(())
    }

    /// The wait the peer's protection needs on top of the jitter: the last repair's
    /// group (a whole block, and its repairs when they ride on the next media
    /// packets), at least a frame while its packets carry Opus in-band FEC (the
    /// next packet holds a lost frame's copy).
    fn fec_wait(&self) -> Duration {
        let group = self
            .fec_shape
            .map_or(Duration::ZERO, |(k, m, stride, piggybacked)| {
                let group = Protection {
                    rs: Some((k, m)),
                    stride,
                    opus_fec: false,
                    opus_expected_loss: 0,
                };
                if piggybacked {
                    group.delay_piggybacked(self.frame)
                } else {
                    group.delay(self.frame)
                }
            });
        let inband = if self.last_inband.is_some() {
            self.frame
        } else {
            Duration::ZERO
        };
        group.max(inband)
    }

    /// A media packet (`plain`: its bytes as FEC protects them).
    fn handle_media(&mut self, now: Instant, p: &rtp::Packet<'_>, plain: &[u8]) {
        self.remote_ssrc = Some(p.ssrc);
        self.recv_stats.handle_packet(now, p.sequence, p.timestamp);
        self.stats.media_received += 1;
        if self.fec_shape.is_some() && self.last_repair.is_none() {
            // The group assumed from the start: its 2 s without repairs start now.
            self.last_repair = Some(now);
        }
        if opus::has_inband_fec(p.payload) == Some(true) {
            let first = self.last_inband.is_none();
            self.last_inband = Some(now);
            if first {
                self.set_extra_delay(self.fec_wait());
            }
        }
        // A packet still missing RLE_LAG packets after it: lost, not reordered.
        if self.arrivals.record(p.sequence) {
            self.early_report(now);
        }
        self.fec_rx.handle_source(p.sequence, plain);
        self.buffer(now, p.sequence, p.timestamp, p.payload, false);
    }

    /// Into the jitter buffer. A packet FEC `recovered` waited for its group's repair
    /// packets: its arrival is no sample of the path's delay (the FEC wait is the
    /// jitter buffer's extra delay instead).
    fn buffer(&mut self, now: Instant, seq: u16, timestamp: u32, payload: &[u8], recovered: bool) {
        let payload = payload.to_vec();
        let accepted = if recovered {
            self.jitter.handle_recovered(now, seq, timestamp, payload)
        } else {
            self.jitter.handle_packet(now, seq, timestamp, payload)
        };
        if accepted.is_ok() && self.next_playout.is_none() {
            // The playout clock starts with the first packet.
            self.next_playout = Some(now);
        }
    }

    fn handle_rtcp(&mut self, now: Instant, datagram: &[u8]) -> Result<(), Error> {
        let mut plain = datagram.to_vec();
        self.inbound.unprotect_rtcp(&mut plain)?;
        let packets = rtcp::decode_compound(&plain, &rtcp::Limits::default())?;
        let arrival = rtcp::ntp_middle(self.ntp(now));
        let mut rate_changed = false;
        let mut loss_news = false;
        for p in &packets {
            match p {
                rtcp::Packet::Remb { bitrate, .. } => {
                    self.remote_estimate = Some(bitrate.bps());
                    rate_changed = true;
                }
                rtcp::Packet::SenderReport {
                    ssrc,
                    info,
                    reports,
                } => {
                    if self.remote_ssrc.is_none_or(|r| r == *ssrc) {
                        self.last_sr = Some((rtcp::ntp_middle(info.ntp), now));
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
                            self.record_fates(rle);
                            loss_news = true;
                        }
                    }
                }
                rtcp::Packet::Bye { sources, .. } => {
                    if self.remote_ssrc.is_none_or(|r| sources.contains(&r)) {
                        // The stream ended: once its last packets played, the
                        // silence that follows is no loss to conceal.
                        self.remote_ended = true;
                    }
                    self.events.push_back(Event::RemoteBye);
                }
                _ => {}
            }
        }
        // A REMB alone moves the budget; the protection is re-chosen with it once
        // a report told us the loss.
        let loss_known = self.reports_seen > 0 || self.loss_record.packets() > 0;
        if loss_news || (rate_changed && loss_known) {
            self.update_protection();
        }
        if rate_changed {
            self.apply_rate()?;
        }
        Ok(())
    }

    /// The fates of our packets a Loss RLE block reports, each recorded once (the
    /// blocks overlap: each covers the peer's last 250 packets), and only for
    /// sequence numbers we sent.
    fn record_fates(&mut self, rle: &LossRle) {
        for (seq, received) in rle.fates() {
            let sent = self.seq.wrapping_sub(seq).wrapping_sub(1) < 0x8000;
            let new = self
                .loss_record_next
                .is_none_or(|next| seq.wrapping_sub(next) < 0x8000);
            if !(sent && new) {
                continue;
            }
            self.loss_record.record(!received);
            self.loss_record_next = Some(seq.wrapping_add(1));
            self.loss_record_since_decay += 1;
            if self.loss_record_since_decay >= LOSS_HALF_LIFE {
                self.loss_record.decay();
                self.loss_record_since_decay = 0;
            }
        }
    }

    fn handle_blocks(&mut self, now: Instant, arrival: u32, reports: &[ReportBlock]) -> bool {
        let mut changed = false;
        let ours = self.config.ssrc;
        for b in reports.iter().filter(|b| b.ssrc == ours) {
            if let Some(rtt) = rtcp::round_trip_time(arrival, b) {
                self.stats.rtt = Some(rtt);
                self.delay.handle_rtt(rtt);
            }
            let loss = f64::from(b.fraction_lost) / 256.0;
            self.stats.remote_loss = loss;
            self.stats.remote_jitter =
                Duration::from_nanos(u64::from(b.jitter) * 1_000_000_000 / u64::from(OPUS_CLOCK));
            let interval = self
                .last_loss_report
                .map_or(self.config.rtcp_interval, |t| {
                    now.saturating_duration_since(t)
                });
            self.last_loss_report = Some(now);
            self.loss_rate.handle_report_over(b.fraction_lost, interval);
            // The first report sets the estimate; later ones are smoothed (a single
            // bad second should not switch FEC on and off).
            self.smoothed_loss = if self.reports_seen == 0 {
                loss
            } else {
                0.7 * self.smoothed_loss + 0.3 * loss
            };
            self.reports_seen += 1;
            changed = true;
        }
        changed
    }

    /// FEC from the loss pattern the peer's Loss RLE reports gave (else the smoothed
    /// report-block loss, as independent losses), within a delay budget set by RTT
    /// and jitter.
    fn update_protection(&mut self) {
        let one_way = self.stats.rtt.unwrap_or(Duration::ZERO) / 2;
        let budget = MOUTH_TO_EAR_BUDGET
            .saturating_sub(one_way)
            .saturating_sub(self.stats.remote_jitter * 2)
            .clamp(
                Duration::from_millis(20),
                self.config
                    .protection
                    .max_delay
                    .max(Duration::from_millis(20)),
            );
        let mut goal = self.config.protection;
        goal.max_delay = budget;
        let budget = self.frame_budget();
        let (loss, burst) = if self.loss_record.packets() > 0 {
            (self.loss_record.loss_rate(), self.loss_record.mean_burst())
        } else {
            (self.smoothed_loss, 1.0)
        };
        // Too short a record to call the path clean: the first report of a call
        // covers 12-37 packets, none lost one time in 20 at 10 % loss, and dropping
        // the initial group then moved the playout twice.
        let short = self.loss_record.packets() < CLEAN_RECORD && self.reports_seen < 2;
        let p = self.config.force_protection.unwrap_or_else(|| {
            let p = choose_protection_for_budget(loss, burst, &goal, &budget);
            if short && p.rs.is_none() && self.protection.rs.is_some() {
                return self.protection;
            }
            keep_group(self.protection, p, loss, burst, &goal, &budget)
        });
        if p.rs != self.protection.rs || p.stride != self.protection.stride {
            self.stats.protection_changes += 1;
        }
        self.set_protection(p);
    }

    fn set_protection(&mut self, p: Protection) {
        if p == self.protection && (p.rs.is_none() || self.fec_tx.is_some()) {
            return;
        }
        self.protection = p;
        self.fec_tx = p.rs.and_then(|(k, m)| {
            let mut c = fec::EncoderConfig::default();
            (c.k, c.m, c.stride) = (k, m, p.stride);
            match self.fec_tx.take() {
                Some(mut tx) => tx.set_config(c).ok().map(|()| tx),
                None => fec::Encoder::new(c).ok(),
            }
        });
        // Fails only for a loss hint above 100 %, which `Protection` never holds.
        let _ = self
            .encoder
            .set_inband_fec(p.opus_fec, p.opus_expected_loss);
    }

    /// Our NTP-format clock (RFC 3550 §4): time since the session began, offset by
    /// one second so that no timestamp is 0 (an LSR of 0 means "no SR yet").
    fn ntp(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.epoch) + Duration::from_secs(1);
        (d.as_secs() << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
    }

    /// Timers: RTCP reports, REMB feedback and playout ticks due by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_rtcp {
            self.send_report(now);
            self.early_sent = core::mem::take(&mut self.early_pulled);
            self.schedule_report(now);
        } else if let Some(rate) = self.delay.poll_remb(now) {
            self.send_remb_only(rate);
        }
        if self
            .last_repair
            .is_some_and(|t| now.saturating_duration_since(t) > Duration::from_secs(2))
        {
            // The sender stopped FEC: no need to wait for repair packets.
            self.last_repair = None;
            self.fec_shape = None;
            self.set_extra_delay(self.fec_wait());
        }
        if self
            .last_inband
            .is_some_and(|t| now.saturating_duration_since(t) > Duration::from_secs(2))
        {
            // Nor for the next packet's in-band copy.
            self.last_inband = None;
            self.set_extra_delay(self.fec_wait());
        }
        while let Some(t) = self.next_playout {
            if t > now {
                break;
            }
            // A caller that fell far behind resumes from now rather than bursting.
            self.next_playout = Some(if now.saturating_duration_since(t) > self.frame * 10 {
                now + self.frame
            } else {
                t + self.frame
            });
            self.play_one(t);
            self.align_playout(t);
        }
    }

    /// Before audio starts, moves the playout grid onto the jitter buffer's: it
    /// phases its first tick on the first packet's due time, and a grid off by `φ`
    /// would play every frame up to a frame later than due (`φ` of latency the
    /// buffer never sees). Only silence has played, so the shift is inaudible; the
    /// next tick stays within one frame (silence keeps coming every tick).
    fn align_playout(&mut self, t: Instant) {
        if self.started {
            return;
        }
        let (Some(next), Some(tick)) = (self.next_playout, self.jitter.poll_timeout()) else {
            return;
        };
        if tick <= t || next > t + self.frame {
            return;
        }
        let frame = self.frame.as_nanos();
        let ahead = tick.saturating_duration_since(t).as_nanos() % frame;
        let ahead = if ahead == 0 { frame } else { ahead };
        self.next_playout = Some(t + Duration::from_nanos(u64::try_from(ahead).unwrap_or(0)));
    }

    /// A new FEC group delay for the jitter buffer: an increase at once (playout
    /// expands to follow it), a decrease as accelerated frames make room.
    fn set_extra_delay(&mut self, delay: Duration) {
        self.extra_wanted = delay;
        if delay > self.extra_applied || !self.config.time_stretch {
            self.extra_applied = delay;
            self.jitter.set_extra_delay(delay);
        }
    }

    /// Our estimate of the peer's stream as REMB (draft-alvestrand-rmcat-remb §2.2).
    fn remb(&self, rate: u64) -> rtcp::Packet<'static> {
        rtcp::Packet::Remb {
            sender_ssrc: self.config.ssrc,
            bitrate: rtcp::RembBitrate::from_bps(rate),
            ssrcs: self.remote_ssrc.into_iter().collect(),
        }
    }

    fn send_remb_only(&mut self, rate: u64) {
        let mut out = BytesMut::new();
        if self.remb(rate).encode(&mut out).is_ok() {
            self.send_rtcp(out);
        }
    }

    fn send_rtcp(&mut self, out: BytesMut) {
        let mut protected = out.to_vec();
        if self.outbound.protect_rtcp(&mut protected).is_ok() {
            self.queue(Bytes::from(protected));
            self.stats.rtcp_sent += 1;
        }
    }

    fn send_report(&mut self, now: Instant) {
        self.last_report = Some(now);
        let mut reports = Vec::new();
        if let Some(remote) = self.remote_ssrc {
            let (lsr, dlsr) = rtcp::last_sr_fields(self.last_sr, now);
            reports.push(self.recv_stats.report_block(remote, lsr, dlsr));
        }
        let first = if self.sent_since_report {
            // RFC 3550 §6.4.1: the RTP timestamp of the same instant as the NTP one,
            // the last one sent plus the time since.
            let since = self
                .last_send
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            let ticks = u32::try_from(since.as_micros() * u128::from(OPUS_CLOCK) / 1_000_000)
                .unwrap_or(u32::MAX);
            rtcp::Packet::SenderReport {
                ssrc: self.config.ssrc,
                info: SenderInfo {
                    ntp: self.ntp(now),
                    rtp_timestamp: self.last_rtp_timestamp.wrapping_add(ticks),
                    packet_count: self.sent_packets,
                    octet_count: self.sent_octets,
                },
                reports,
            }
        } else {
            rtcp::Packet::ReceiverReport {
                ssrc: self.config.ssrc,
                reports,
            }
        };
        self.sent_since_report = false;
        let cname = self.config.cname.clone();
        let sdes = rtcp::Packet::Sdes(vec![rtcp::SdesChunk {
            ssrc: self.config.ssrc,
            items: vec![(rtcp::SDES_CNAME, &cname)],
        }]);
        let remb = self
            .delay
            .poll_remb(now)
            .or(self.remote_ssrc.map(|_| u64::from(self.delay.estimate())));
        let rle = self
            .remote_ssrc
            .filter(|_| self.config.loss_rle_feedback)
            .and_then(|remote| self.arrivals.loss_rle(remote).ok().flatten());
        let mut packets = vec![first, sdes];
        packets.extend(rle.map(|rle| rtcp::Packet::Xr {
            ssrc: self.config.ssrc,
            blocks: vec![XrBlock::LossRle(rle)],
        }));
        packets.extend(remb.map(|r| self.remb(r)));
        let mut out = BytesMut::new();
        if rtcp::encode_compound(&packets, &mut out).is_ok() {
            self.send_rtcp(out);
        }
    }

    /// The next regular report, an interval (spread, RFC 3550 §6.3.1) after `now`.
    fn schedule_report(&mut self, now: Instant) {
        let spread = random_unit(&mut *self.entropy) + 0.5;
        self.next_rtcp = now + self.config.rtcp_interval.mul_f64(spread);
    }

    /// A loss in the peer's media: report it now if early feedback allows (RFC 4585
    /// §3.5.2: no early report since the last regular one; here also a quarter
    /// interval since the last report, which bounds the RTCP rate at two reports per
    /// interval and a quarter). Too soon after the last report, the next regular
    /// one is brought forward to the quarter-interval mark instead: a loss right
    /// after a report would otherwise wait up to 1.5 intervals to be heard.
    fn early_report(&mut self, now: Instant) {
        if !self.config.early_feedback || self.early_sent {
            return;
        }
        let spacing = self.config.rtcp_interval / 4;
        match self.last_report.map(|t| t + spacing) {
            Some(earliest) if earliest > now => {
                // That report then counts as this interval's early one.
                self.next_rtcp = self.next_rtcp.min(earliest);
                self.early_pulled = true;
            }
            _ => {
                self.send_report(now);
                self.schedule_report(now);
            }
        }
        self.early_sent = true;
    }

    /// Ends the call leg: queues an RTCP BYE (RFC 3550 §6.6).
    pub fn close(&mut self) {
        let bye = rtcp::Packet::Bye {
            sources: vec![self.config.ssrc, self.config.fec_ssrc],
            reason: None,
        };
        let rr = rtcp::Packet::ReceiverReport {
            ssrc: self.config.ssrc,
            reports: Vec::new(),
        };
        let mut out = BytesMut::new();
        if rtcp::encode_compound(&[rr, bye], &mut out).is_ok() {
            self.send_rtcp(out);
        }
    }

    /// One playout tick at `t`: fills the sync buffer from the jitter buffer, then
    /// emits exactly one frame.
    fn play_one(&mut self, t: Instant) {
        let n = self.frame_samples;
        let mut dry = false;
        // A higher target (more jitter, a longer FEC group) moves the jitter
        // buffer's due times later: the rise becomes a debt that expanded frames
        // repay, so that the sync buffer holds audio when the next packet comes due
        // later. The jitter buffer itself is always polled at its own tick (never a
        // shifted time): it conceals a frame with nothing buffered once it is due and
        // drops frames when far behind, so a shifted clock would make it conceal
        // packets still on their way and drop frames the playout needs. Bounded at
        // 9 frames. Before audio starts nothing is owed: the playout clock phases on
        // the first packet's due time, which the target already delays (a debt
        // counted from zero there made the first words play twice as long, then
        // rush).
        let target = self.jitter.target_delay();
        if self.config.time_stretch && self.started {
            if target > self.last_target {
                self.debt = (self.debt + (target - self.last_target)).min(self.frame * 9);
            } else {
                self.debt = self.debt.saturating_sub(self.last_target - target);
            }
        }
        self.last_target = target;
        let mut ended = false;
        for _ in 0..4 {
            if self.sync.len() >= n {
                break;
            }
            if self.remote_ended && self.jitter.is_empty() {
                // After BYE and its last packets: silence, neither loss nor underrun.
                ended = true;
                break;
            }
            let Some(tick) = self.jitter.poll_timeout() else {
                break;
            };
            // Pulling up to one frame early plays the buffer out faster: while
            // accelerating, or when the sync buffer holds less than half a frame
            // (the jitter buffer's clock slewed past this tick: the alternative is
            // a frame of PLC with packets waiting). Only with packets waiting, so
            // that the early poll cannot conceal a frame still on its way.
            let early = tick > t;
            let short = self.sync.len() < n / 2 && self.started;
            if early
                && (tick > t + self.frame
                    || self.jitter.len() < 2
                    || (self.excess_ms <= 0.0 && !short))
            {
                break;
            }
            let at = if t.saturating_duration_since(tick) > self.frame * 10 {
                t
            } else {
                tick
            };
            let Some(frame) = self.jitter.poll_frame(at) else {
                break;
            };
            match frame {
                Playout::Packet { payload, .. } => {
                    let mut pcm = core::mem::take(&mut self.scratch_pcm);
                    match self.decoder.decode(&payload, &mut pcm) {
                        Ok(_) => {
                            self.stats.decoded += 1;
                            self.started = true;
                            self.push_stretched(&pcm);
                        }
                        Err(_) => self.conceal(true),
                    }
                    self.scratch_pcm = pcm;
                }
                Playout::Missing { .. } => {
                    let mut pcm = core::mem::take(&mut self.scratch_pcm);
                    let inband = self
                        .jitter
                        .peek()
                        .filter(|next| opus::has_inband_fec(next) == Some(true))
                        .map(|next| self.decoder.decode_fec(next, n, &mut pcm));
                    match inband {
                        Some(Ok(_)) => {
                            self.stats.recovered_inband += 1;
                            self.sync.extend(pcm.iter().copied());
                        }
                        _ => self.conceal(true),
                    }
                    self.scratch_pcm = pcm;
                }
                Playout::Empty if self.started && !early => {
                    self.conceal(false);
                    dry = true;
                }
                Playout::Empty => break,
            }
        }
        let mut out = vec![0i16; n];
        if self.sync.len() < n && self.started && self.sync.len() >= n / 2 {
            // A short buffer: stretch what is left rather than play a gap.
            let rest: Vec<i16> = self.sync.drain(..).collect();
            if self
                .stretcher
                .stretch_to(&rest, n, &mut self.scratch_stretch)
                .is_ok()
            {
                self.sync.extend(self.scratch_stretch.iter().copied());
                self.stats.expanded += 1;
            }
        }
        if self.sync.len() < n && self.started && !dry && !ended {
            // Still short (nothing due, nothing to stretch): PLC rather than a gap of
            // zeros in the middle of speech.
            self.conceal(false);
        }
        for (o, s) in out
            .iter_mut()
            .zip(self.sync.drain(..n.min(self.sync.len())))
        {
            *o = s;
        }
        if self.pcm.len() >= self.config.max_queued {
            self.pcm.pop_front();
            self.stats.queue_drops += 1;
        }
        self.pcm.push_back(out);
    }

    /// Opus PLC for one frame: a `missing` packet, or a buffer that ran dry.
    fn conceal(&mut self, missing: bool) {
        let mut pcm = core::mem::take(&mut self.scratch_pcm);
        if self.decoder.conceal(self.frame_samples, &mut pcm).is_ok() {
            self.sync.extend(pcm.iter().copied());
        }
        if missing {
            self.stats.concealed += 1;
        } else {
            self.stats.underruns += 1;
        }
        self.scratch_pcm = pcm;
    }

    /// Appends a decoded frame, stretched: expanded while the playout owes delay to
    /// a risen target (`debt`), accelerated while more than a frame more than the
    /// target is buffered (smoothed over ~10 frames) and packets are waiting.
    fn push_stretched(&mut self, pcm: &[i16]) {
        let frame_ms = self.frame.as_secs_f64() * 1000.0;
        let target = self.jitter.target_delay().as_secs_f64();
        let excess = (self.buffered().as_secs_f64() - target) * 1000.0;
        self.excess_ms = 0.9 * self.excess_ms + 0.1 * excess;
        // An FEC group delay waiting to come down (the sender stopped FEC or chose a
        // shorter group) is still in the target, so it never shows as excess: it is
        // paid here, by skipping frames of a pause only (inaudible, where stretching
        // speech is heard and scored as warped), a frame at a time while at least a
        // frame of it is left and buffered. A pause, not a quiet frame between two
        // words: skipping one of those clips the words around it.
        self.silent_run = if is_silent(pcm) {
            self.silent_run.saturating_add(1)
        } else {
            0
        };
        let pending = self.extra_applied.saturating_sub(self.extra_wanted);
        if self.config.time_stretch
            && pending >= self.frame
            && self.silent_run > PAUSE_FRAMES
            && self.jitter.len() >= 3
            && excess + pending.as_secs_f64() * 1000.0 >= frame_ms
        {
            self.stats.accelerated += 1;
            self.pay_extra_delay(self.frame);
            return;
        }
        let range = if !self.config.time_stretch {
            None
        } else if self.debt > Duration::from_millis(2) {
            Some((1.1, 1.5))
        } else if self.excess_ms > frame_ms && self.jitter.len() >= 2 {
            Some((0.5, 0.9))
        } else {
            None
        };
        let Some((lo, hi)) = range else {
            self.sync.extend(pcm.iter().copied());
            return;
        };
        // In a pause, whole frames: a silent frame played twice or skipped moves the
        // delay by a frame at once and inaudibly, where stretching speech is heard
        // (and scored) as warped; a 100 ms rise for an FEC group is paid within one
        // pause between sentences instead of over seconds of speech.
        if is_silent(pcm) {
            let frame = self.frame;
            if lo > 1.0 && self.debt >= frame {
                self.sync.extend(pcm.iter().copied());
                self.sync.extend(pcm.iter().copied());
                self.stats.expanded += 1;
                self.debt = self.debt.saturating_sub(frame);
                return;
            }
            if hi < 1.0 && self.excess_ms >= 3.0 * frame_ms && self.jitter.len() >= 3 {
                self.stats.accelerated += 1;
                self.excess_ms -= frame_ms;
                self.pay_extra_delay(frame);
                return;
            }
        }
        let Ok(len) = self
            .stretcher
            .stretch(pcm, lo, hi, &mut self.scratch_stretch)
        else {
            self.sync.extend(pcm.iter().copied());
            return;
        };
        self.sync.extend(self.scratch_stretch.iter().copied());
        let rate = f64::from(self.config.sample_rate);
        let change = Duration::from_secs_f64(len.abs_diff(pcm.len()) as f64 / rate);
        if len > pcm.len() {
            self.stats.expanded += 1;
            self.debt = self.debt.saturating_sub(change);
        } else {
            self.stats.accelerated += 1;
            self.pay_extra_delay(change);
        }
    }

    /// Audio removed by accelerating (`change`) lowers an FEC group delay that is
    /// waiting to come down.
    fn pay_extra_delay(&mut self, change: Duration) {
        if self.extra_applied > self.extra_wanted {
            let extra = self
                .extra_applied
                .saturating_sub(change)
                .max(self.extra_wanted);
            self.extra_applied = extra;
            self.jitter.set_extra_delay(extra);
            // This drop of the target was paid for already.
            self.last_target = self.jitter.target_delay();
        }
    }

    /// The next datagram to send to the peer (the caller's transport knows where;
    /// [`DatagramCore::poll_transmit`] addresses it to [`Session::peer`]).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop_front()
    }

    /// The next frame of decoded PCM (`frame_samples()` mono samples), one per
    /// playout tick once the first packet arrived; silence before audio starts.
    #[must_use]
    pub fn poll_pcm(&mut self) -> Option<Vec<i16>> {
        self.pcm.pop_front()
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
            Some(self.next_rtcp),
            self.next_playout,
            self.delay.poll_timeout(),
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
