//! The receiving half of a call leg: SRTP/SRTCP unprotect, receive statistics and
//! the delay-based estimator, FEC recovery (repairs in packets of their own or in
//! RFC 2198 blocks), the jitter buffer and its FEC wait, and playout: Opus decode,
//! in-band FEC or PLC, time stretching towards the jitter buffer's target.

use core::time::Duration;
use std::collections::VecDeque;
use std::time::Instant;

use bytes::BytesMut;
use chorus_crypto::srtp::SrtpSession;

use super::{FRAME, OPUS_CLOCK, SessionConfig, SessionStats, UDP_IP_OVERHEAD};
use crate::adapt::Protection;
use crate::congestion::{self, DelayController};
use crate::error::Error;
use crate::fec;
use crate::jitter::{JitterBuffer, Playout};
use crate::opus::{self, Channels};
use crate::red;
use crate::rtcp::ReportBlock;
use crate::rtcp::xr::LossRle;
use crate::rtp;
use crate::stats::{ArrivalRecord, ReceiveStats};
use crate::timestretch::TimeStretcher;

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
/// Redundant blocks accepted in one RFC 2198 packet.
const MAX_RED_BLOCKS: usize = 4;
/// Silent frames in a row after which playout is in a pause between sentences
/// (where a frame can be skipped unheard), not between two words.
const PAUSE_FRAMES: u32 = 4;
/// How long without a repair (or an in-band FEC packet) before the playout stops
/// waiting for them.
const FEC_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a frame is a pause: RMS below about -44 dBFS.
fn is_silent(pcm: &[i16]) -> bool {
    const SILENCE_RMS: f64 = 200.0;
    let energy: f64 = pcm.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    !pcm.is_empty() && energy / (pcm.len() as f64) < SILENCE_RMS * SILENCE_RMS
}

/// The peer's media stream: what the session receives and plays.
pub(super) struct Receiver {
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
    frame_samples: usize,
    pcm: VecDeque<Vec<i16>>,
    scratch_pcm: Vec<i16>,
    scratch_stretch: Vec<i16>,
}

impl Receiver {
    /// A receiver checking the peer's packets with `inbound`. When the session starts
    /// with FEC (`first`), the peer is assumed to start with the same group (both
    /// ends share the configuration, as they do the payload types): its wait is in
    /// our playout delay from the first packet, so the playout does not move when
    /// its first repairs come. Dropped like any group's after 2 s without a repair.
    pub(super) fn new(
        config: &SessionConfig,
        inbound: SrtpSession,
        first: Protection,
    ) -> Result<Self, Error> {
        let decoder = opus::Decoder::new(config.sample_rate, Channels::Mono)?;
        let mut jb_config = config.jitter;
        jb_config.clock_rate = OPUS_CLOCK;
        jb_config.frame = FRAME;
        let jitter = JitterBuffer::new(jb_config)?;
        let fec_rx = fec::Decoder::new(fec::DecoderConfig::default())?;
        let stretcher = TimeStretcher::new(config.sample_rate)?;
        // The delay controller measures the wire: its bounds get a header allowance
        // (50 packets/s of ~80 bytes of RTP, extensions, SRTP and UDP/IP headers).
        let mut wire = config.rate;
        wire.min_bps = wire.min_bps.saturating_add(WIRE_ALLOWANCE / 2);
        wire.start_bps = wire.start_bps.saturating_add(WIRE_ALLOWANCE);
        wire.max_bps = wire.max_bps.saturating_add(WIRE_ALLOWANCE);
        let mut rx = Self {
            inbound,
            remote_ssrc: None,
            recv_stats: ReceiveStats::new(OPUS_CLOCK),
            arrivals: ArrivalRecord::new(RLE_WINDOW, RLE_LAG),
            delay: DelayController::new(wire),
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
            frame_samples: config.sample_rate as usize / 50,
            pcm: VecDeque::new(),
            scratch_pcm: Vec::new(),
            scratch_stretch: Vec::new(),
        };
        if let Some((k, m)) = first.rs {
            let piggybacked = config.protection.piggyback && first.can_piggyback();
            rx.fec_shape = Some((k, m, first.stride, piggybacked));
            rx.set_extra_delay(first.delay_for(&config.protection), config);
        }
        Ok(rx)
    }

    /// The peer's media SSRC, once a media packet came.
    pub(super) const fn remote_ssrc(&self) -> Option<u32> {
        self.remote_ssrc
    }

    /// The receiver's share of [`SessionStats`]: estimates, jitter and buffering.
    pub(super) fn fill_stats(&self, s: &mut SessionStats, config: &SessionConfig) {
        s.local_estimate_bps = self.delay.estimate();
        s.jitter_target = self.jitter.target_delay();
        s.local_jitter = self.recv_stats.jitter_duration();
        s.local_lost = self.recv_stats.cumulative_lost();
        s.buffered = self.buffered(config);
        s.jitter_dropped = self.jitter.stats().accelerated;
    }

    fn buffered(&self, config: &SessionConfig) -> Duration {
        let sync = Duration::from_secs_f64(self.sync.len() as f64 / f64::from(config.sample_rate));
        FRAME * u32::try_from(self.jitter.len()).unwrap_or(u32::MAX) + sync
    }

    /// One SRTP-protected RTP datagram. `Ok(true)` when it showed a loss in the
    /// peer's stream (a packet still missing `RLE_LAG` packets after it), which
    /// early feedback reports.
    pub(super) fn handle_rtp(
        &mut self,
        now: Instant,
        datagram: &[u8],
        config: &SessionConfig,
        stats: &mut SessionStats,
    ) -> Result<bool, Error> {
        // Check the header before spending a decryption on it.
        rtp::Packet::decode(datagram)?;
        let mut plain = datagram.to_vec();
        self.inbound.unprotect_rtp(&mut plain)?;
        let p = rtp::Packet::decode(&plain)?;
        let abs = p.extension_elements().and_then(|mut els| {
            els.find_map(|e| {
                e.ok()
                    .filter(|e| e.id == config.abs_send_time_id)
                    .and_then(|e| congestion::decode_abs_send_time(e.data).ok())
            })
        });
        if let Some(abs) = abs {
            self.delay
                .handle_packet(now, abs, datagram.len() + UDP_IP_OVERHEAD);
        }
        let lost = if p.payload_type == config.fec_payload_type {
            self.handle_repair(now, p.payload, false, config)?;
            false
        } else if p.payload_type == config.payload_type {
            self.handle_media(now, &p, &plain, config, stats)
        } else if p.payload_type == config.red_payload_type {
            // RFC 2198: the primary is our media; repair blocks feed the FEC decoder,
            // other blocks are skipped (§3).
            let red = red::Payload::decode(p.payload, MAX_RED_BLOCKS)?;
            if red.primary_type != config.payload_type {
                return Err(crate::DecodeError::BadRtcpType(red.primary_type).into());
            }
            for b in &red.redundant {
                if b.payload_type == config.fec_payload_type {
                    self.handle_repair(now, b.data, true, config)?;
                }
            }
            // The FEC source is the packet as it would have been without the blocks.
            let source = rtp::Packet {
                payload_type: config.payload_type,
                payload: red.primary,
                ..p.clone()
            };
            let mut bytes = BytesMut::with_capacity(source.encoded_len());
            source.encode(&mut bytes)?;
            self.handle_media(now, &source, &bytes, config, stats)
        } else {
            return Err(crate::DecodeError::BadRtcpType(p.payload_type).into());
        };
        while let Some(r) = self.fec_rx.poll_recovered() {
            if let Ok(p) = rtp::Packet::decode(&r.packet)
                && p.payload_type == config.payload_type
            {
                stats.recovered_by_fec += 1;
                self.buffer(now, p.sequence, p.timestamp, p.payload, true);
            }
        }
        Ok(lost)
    }

    /// Removes SRTCP protection from a datagram of the peer's.
    pub(super) fn unprotect_rtcp(&mut self, datagram: &[u8]) -> Result<Vec<u8>, Error> {
        let mut plain = datagram.to_vec();
        self.inbound.unprotect_rtcp(&mut plain)?;
        Ok(plain)
    }

    /// A repair payload, from a packet of its own or riding on a media packet
    /// (`piggybacked`): to the FEC decoder; a new group shape moves the jitter
    /// buffer's extra delay to what that group needs.
    fn handle_repair(
        &mut self,
        now: Instant,
        payload: &[u8],
        piggybacked: bool,
        config: &SessionConfig,
    ) -> Result<(), Error> {
        let header = fec::RepairPacket::decode(payload)?;
        self.fec_rx.handle_repair(payload)?;
        self.last_repair = Some(now);
        let shape = (header.k, header.m, header.stride, piggybacked);
        if self.fec_shape != Some(shape) {
            self.fec_shape = Some(shape);
            self.set_extra_delay(self.fec_wait(), config);
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
                    group.delay_piggybacked(FRAME)
                } else {
                    group.delay(FRAME)
                }
            });
        let inband = if self.last_inband.is_some() {
            FRAME
        } else {
            Duration::ZERO
        };
        group.max(inband)
    }

    /// A media packet (`plain`: its bytes as FEC protects them). `true` when it
    /// showed a loss.
    fn handle_media(
        &mut self,
        now: Instant,
        p: &rtp::Packet<'_>,
        plain: &[u8],
        config: &SessionConfig,
        stats: &mut SessionStats,
    ) -> bool {
        self.remote_ssrc = Some(p.ssrc);
        self.recv_stats.handle_packet(now, p.sequence, p.timestamp);
        stats.media_received += 1;
        if self.fec_shape.is_some() && self.last_repair.is_none() {
            // The group assumed from the start: its 2 s without repairs start now.
            self.last_repair = Some(now);
        }
        if opus::has_inband_fec(p.payload) == Some(true) {
            let first = self.last_inband.is_none();
            self.last_inband = Some(now);
            if first {
                self.set_extra_delay(self.fec_wait(), config);
            }
        }
        // A packet still missing RLE_LAG packets after it: lost, not reordered.
        let lost = self.arrivals.record(p.sequence);
        self.fec_rx.handle_source(p.sequence, plain);
        self.buffer(now, p.sequence, p.timestamp, p.payload, false);
        lost
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

    /// The peer's BYE named its stream (or came before any media): once its last
    /// packets played, the silence that follows is no loss to conceal.
    pub(super) const fn handle_bye(&mut self) {
        self.remote_ended = true;
    }

    /// A round-trip time from a report block, for the delay controller.
    pub(super) fn handle_rtt(&mut self, rtt: Duration) {
        self.delay.handle_rtt(rtt);
    }

    /// A REMB of the delay-based estimate due at `now`, if any.
    pub(super) fn poll_remb(&mut self, now: Instant) -> Option<u64> {
        self.delay.poll_remb(now)
    }

    /// When the delay controller's next REMB is due.
    pub(super) fn remb_timeout(&self) -> Option<Instant> {
        self.delay.poll_timeout()
    }

    /// The current delay-based estimate of the peer's stream, bit/s of wire.
    pub(super) fn estimate(&self) -> u32 {
        self.delay.estimate()
    }

    /// A report block about the peer's stream (RFC 3550 §6.4.1) with the given
    /// LSR and DLSR, once its SSRC is known.
    pub(super) fn report_block(&mut self, lsr: u32, dlsr: u32) -> Option<ReportBlock> {
        let remote = self.remote_ssrc?;
        Some(self.recv_stats.report_block(remote, lsr, dlsr))
    }

    /// An XR Loss RLE block (RFC 3611 §4.1) of the peer's last packets, once its
    /// SSRC is known and a loss or arrival is in the window.
    pub(super) fn loss_rle(&self) -> Option<LossRle> {
        let remote = self.remote_ssrc?;
        self.arrivals.loss_rle(remote).ok().flatten()
    }

    /// Stops waiting for repairs (or in-band copies) 2 s after the last one came:
    /// the sender stopped FEC.
    pub(super) fn expire_fec(&mut self, now: Instant, config: &SessionConfig) {
        if self
            .last_repair
            .is_some_and(|t| now.saturating_duration_since(t) > FEC_TIMEOUT)
        {
            // The sender stopped FEC: no need to wait for repair packets.
            self.last_repair = None;
            self.fec_shape = None;
            self.set_extra_delay(self.fec_wait(), config);
        }
        if self
            .last_inband
            .is_some_and(|t| now.saturating_duration_since(t) > FEC_TIMEOUT)
        {
            // Nor for the next packet's in-band copy.
            self.last_inband = None;
            self.set_extra_delay(self.fec_wait(), config);
        }
    }

    /// The next playout tick, once the first packet came.
    pub(super) const fn next_playout(&self) -> Option<Instant> {
        self.next_playout
    }

    /// Plays every tick due by `now`, a frame of PCM each.
    pub(super) fn handle_playout(
        &mut self,
        now: Instant,
        config: &SessionConfig,
        stats: &mut SessionStats,
    ) {
        while let Some(t) = self.next_playout {
            if t > now {
                break;
            }
            // A caller that fell far behind resumes from now rather than bursting.
            self.next_playout = Some(if now.saturating_duration_since(t) > FRAME * 10 {
                now + FRAME
            } else {
                t + FRAME
            });
            self.play_one(t, config, stats);
            self.align_playout(t);
        }
    }

    /// The next frame of decoded PCM.
    pub(super) fn poll_pcm(&mut self) -> Option<Vec<i16>> {
        self.pcm.pop_front()
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
        if tick <= t || next > t + FRAME {
            return;
        }
        let frame = FRAME.as_nanos();
        let ahead = tick.saturating_duration_since(t).as_nanos() % frame;
        let ahead = if ahead == 0 { frame } else { ahead };
        self.next_playout = Some(t + Duration::from_nanos(u64::try_from(ahead).unwrap_or(0)));
    }

    /// A new FEC group delay for the jitter buffer: an increase at once (playout
    /// expands to follow it), a decrease as accelerated frames make room.
    fn set_extra_delay(&mut self, delay: Duration, config: &SessionConfig) {
        self.extra_wanted = delay;
        if delay > self.extra_applied || !config.time_stretch {
            self.extra_applied = delay;
            self.jitter.set_extra_delay(delay);
        }
    }

    /// One playout tick at `t`: fills the sync buffer from the jitter buffer, then
    /// emits exactly one frame.
    fn play_one(&mut self, t: Instant, config: &SessionConfig, stats: &mut SessionStats) {
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
        if config.time_stretch && self.started {
            if target > self.last_target {
                self.debt = (self.debt + (target - self.last_target)).min(FRAME * 9);
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
                && (tick > t + FRAME || self.jitter.len() < 2 || (self.excess_ms <= 0.0 && !short))
            {
                break;
            }
            let at = if t.saturating_duration_since(tick) > FRAME * 10 {
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
                            stats.decoded += 1;
                            self.started = true;
                            self.push_stretched(&pcm, config, stats);
                        }
                        Err(_) => self.conceal(true, stats),
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
                            stats.recovered_inband += 1;
                            self.sync.extend(pcm.iter().copied());
                        }
                        _ => self.conceal(true, stats),
                    }
                    self.scratch_pcm = pcm;
                }
                Playout::Empty if self.started && !early => {
                    self.conceal(false, stats);
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
                stats.expanded += 1;
            }
        }
        if self.sync.len() < n && self.started && !dry && !ended {
            // Still short (nothing due, nothing to stretch): PLC rather than a gap of
            // zeros in the middle of speech.
            self.conceal(false, stats);
        }
        for (o, s) in out
            .iter_mut()
            .zip(self.sync.drain(..n.min(self.sync.len())))
        {
            *o = s;
        }
        if self.pcm.len() >= config.max_queued {
            self.pcm.pop_front();
            stats.queue_drops += 1;
        }
        self.pcm.push_back(out);
    }

    /// Opus PLC for one frame: a `missing` packet, or a buffer that ran dry.
    fn conceal(&mut self, missing: bool, stats: &mut SessionStats) {
        let mut pcm = core::mem::take(&mut self.scratch_pcm);
        if self.decoder.conceal(self.frame_samples, &mut pcm).is_ok() {
            self.sync.extend(pcm.iter().copied());
        }
        if missing {
            stats.concealed += 1;
        } else {
            stats.underruns += 1;
        }
        self.scratch_pcm = pcm;
    }

    /// Appends a decoded frame, stretched: expanded while the playout owes delay to
    /// a risen target (`debt`), accelerated while more than a frame more than the
    /// target is buffered (smoothed over ~10 frames) and packets are waiting.
    fn push_stretched(&mut self, pcm: &[i16], config: &SessionConfig, stats: &mut SessionStats) {
        let frame_ms = FRAME.as_secs_f64() * 1000.0;
        let target = self.jitter.target_delay().as_secs_f64();
        let excess = (self.buffered(config).as_secs_f64() - target) * 1000.0;
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
        if config.time_stretch
            && pending >= FRAME
            && self.silent_run > PAUSE_FRAMES
            && self.jitter.len() >= 3
            && excess + pending.as_secs_f64() * 1000.0 >= frame_ms
        {
            stats.accelerated += 1;
            self.pay_extra_delay(FRAME);
            return;
        }
        let range = if !config.time_stretch {
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
            let frame = FRAME;
            if lo > 1.0 && self.debt >= frame {
                self.sync.extend(pcm.iter().copied());
                self.sync.extend(pcm.iter().copied());
                stats.expanded += 1;
                self.debt = self.debt.saturating_sub(frame);
                return;
            }
            if hi < 1.0 && self.excess_ms >= 3.0 * frame_ms && self.jitter.len() >= 3 {
                stats.accelerated += 1;
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
        let rate = f64::from(config.sample_rate);
        let change = Duration::from_secs_f64(len.abs_diff(pcm.len()) as f64 / rate);
        if len > pcm.len() {
            stats.expanded += 1;
            self.debt = self.debt.saturating_sub(change);
        } else {
            stats.accelerated += 1;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::test_srtp as srtp;

    fn no_fec() -> Protection {
        Protection {
            rs: None,
            stride: 1,
            opus_fec: false,
            opus_expected_loss: 0,
        }
    }

    #[test]
    fn silence_is_quiet_frames_only() {
        assert!(is_silent(&[0; 960]));
        assert!(is_silent(&[150; 960]));
        assert!(!is_silent(&[250; 960]));
        assert!(!is_silent(&[]));
    }

    #[test]
    fn assumes_the_initial_group_of_the_peer() {
        let config = SessionConfig::default();
        let first = config.initial_protection;
        let rx = Receiver::new(&config, srtp(1), first).unwrap();
        assert_eq!(rx.fec_shape, Some((4, 2, 1, true)));
        assert_eq!(rx.extra_applied, first.delay_for(&config.protection));
        assert!(rx.fec_wait() > Duration::ZERO);
        let rx = Receiver::new(&config, srtp(1), no_fec()).unwrap();
        assert_eq!(rx.fec_shape, None);
        assert_eq!(rx.fec_wait(), Duration::ZERO);
    }

    #[test]
    fn stops_waiting_for_repairs_two_seconds_after_the_last() {
        let config = SessionConfig::default();
        let mut rx = Receiver::new(&config, srtp(1), config.initial_protection).unwrap();
        let t0 = Instant::now();
        rx.last_repair = Some(t0);
        rx.expire_fec(t0 + FEC_TIMEOUT, &config);
        assert!(rx.fec_shape.is_some());
        rx.expire_fec(t0 + FEC_TIMEOUT + Duration::from_millis(1), &config);
        assert_eq!(rx.fec_shape, None);
        assert_eq!(rx.extra_wanted, Duration::ZERO);
        // A decrease waits for accelerated frames.
        assert!(rx.extra_applied > Duration::ZERO);
        rx.pay_extra_delay(rx.extra_applied);
        assert_eq!(rx.extra_applied, Duration::ZERO);
    }

    #[test]
    fn without_time_stretch_a_smaller_wait_applies_at_once() {
        let config = SessionConfig {
            time_stretch: false,
            ..SessionConfig::default()
        };
        let mut rx = Receiver::new(&config, srtp(1), config.initial_protection).unwrap();
        rx.set_extra_delay(Duration::ZERO, &config);
        assert_eq!(rx.extra_applied, Duration::ZERO);
    }

    #[test]
    fn rejects_packets_that_do_not_authenticate() {
        let config = SessionConfig::default();
        let mut rx = Receiver::new(&config, srtp(1), no_fec()).unwrap();
        let mut stats = SessionStats::default();
        let packet = rtp::Packet {
            marker: false,
            payload_type: config.payload_type,
            sequence: 1,
            timestamp: 0,
            ssrc: 9,
            csrcs: Vec::new(),
            extension: None,
            payload: &[0xf8, 0xff, 0xfe],
            padding: 0,
        };
        let mut wire = BytesMut::new();
        packet.encode(&mut wire).unwrap();
        let mut forged = wire.to_vec();
        srtp(2).protect_rtp(&mut forged).unwrap();
        assert!(
            rx.handle_rtp(Instant::now(), &forged, &config, &mut stats)
                .is_err()
        );
        assert_eq!(rx.remote_ssrc(), None);
        assert_eq!(rx.next_playout(), None);
        let mut good = wire.to_vec();
        srtp(1).protect_rtp(&mut good).unwrap();
        assert!(
            !rx.handle_rtp(Instant::now(), &good, &config, &mut stats)
                .unwrap()
        );
        assert_eq!(rx.remote_ssrc(), Some(9));
        assert_eq!(stats.media_received, 1);
        assert!(rx.next_playout().is_some());
    }

    #[test]
    fn plays_one_frame_per_tick_once_a_packet_came() {
        let config = SessionConfig::default();
        let mut rx = Receiver::new(&config, srtp(1), no_fec()).unwrap();
        let mut stats = SessionStats::default();
        let t0 = Instant::now();
        rx.handle_playout(t0, &config, &mut stats);
        assert_eq!(rx.poll_pcm(), None);
        rx.buffer(t0, 1, 0, &[0xf8, 0xff, 0xfe], false);
        rx.handle_playout(t0 + FRAME * 3, &config, &mut stats);
        let mut frames = 0;
        while let Some(pcm) = rx.poll_pcm() {
            assert_eq!(pcm.len(), 960);
            frames += 1;
        }
        assert!((3..=5).contains(&frames), "{frames} frames");
    }

    #[test]
    fn a_bye_ends_the_stream() {
        let config = SessionConfig::default();
        let mut rx = Receiver::new(&config, srtp(1), no_fec()).unwrap();
        rx.handle_bye();
        assert!(rx.remote_ended);
    }
}
