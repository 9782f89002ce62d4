//! The sending half of a call leg: Opus encoding, RTP packetization with the audio
//! level and abs-send-time extensions, Reed-Solomon FEC groups (repairs in packets
//! of their own or riding on media packets, RFC 2198), SRTP protection, and the
//! send-rate and FEC choice the peer's reports drive.

use core::time::Duration;
use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use chorus_crypto::srtp::SrtpSession;

use super::{FRAME, OPUS_CLOCK, Outbox, SessionConfig, SessionStats, UDP_IP_OVERHEAD};
use crate::adapt::{
    FrameBudget, LossEstimator, Protection, ProtectionGoal, RateController, budget_score,
    choose_protection, choose_protection_for_budget,
};
use crate::congestion;
use crate::error::Error;
use crate::fec;
use crate::opus;
use crate::red;
use crate::rtcp::SenderInfo;
use crate::rtcp::xr::LossRle;
use crate::rtp::{self, AudioLevel, Element, Extension};

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
/// Packets of the peer's loss record below which (unless two report blocks came)
/// a path without loss is not yet taken as clean: 1 s of 20 ms frames, none lost
/// one time in 200 at 10 % loss.
const CLEAN_RECORD: u64 = 50;

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

/// Our media stream: what the session sends, and how much of it is FEC.
pub(super) struct Sender {
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
    scratch_payload: Vec<u8>,
    scratch_ext: Vec<u8>,
}

impl Sender {
    /// A stream starting at sequence number `seq` and RTP timestamp `timestamp`
    /// (random, RFC 3550 §5.1), with its first protection and codec rate set.
    pub(super) fn new(
        config: &SessionConfig,
        outbound: SrtpSession,
        seq: u16,
        timestamp: u32,
    ) -> Result<Self, Error> {
        let encoder = opus::Encoder::new(opus::EncoderConfig {
            sample_rate: config.sample_rate,
            frame: FRAME,
            complexity: config.complexity,
            inband_fec: false,
            expected_loss_percent: 0,
            ..opus::EncoderConfig::default()
        })?;
        let mut tx = Self {
            encoder,
            outbound,
            seq,
            timestamp,
            fec_seq: 0,
            fec_tx: None,
            pending_repairs: VecDeque::new(),
            rtp_header_bytes: 20,
            protection: choose_protection(0.0, 1.0, &config.protection),
            loss_rate: RateController::new(config.rate),
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
            scratch_payload: Vec::new(),
            scratch_ext: Vec::new(),
        };
        let first = config.force_protection.unwrap_or_else(|| {
            let p = config.initial_protection;
            let budget = tx.frame_budget(config);
            if p.rs.is_some() && budget.media_bytes(&p, &config.protection) < budget.min_media_bytes
            {
                choose_protection(0.0, 1.0, &config.protection)
            } else {
                p
            }
        });
        tx.set_protection(first);
        tx.apply_rate(config)?;
        Ok(tx)
    }

    /// The FEC in force.
    pub(super) const fn protection(&self) -> Protection {
        self.protection
    }

    /// The sender's share of [`SessionStats`]: rates and the FEC in force.
    pub(super) fn fill_stats(&self, s: &mut SessionStats, config: &SessionConfig) {
        s.loss_based_bps = self.loss_rate.rate();
        s.remote_estimate_bps = self.remote_estimate;
        s.remote_mean_burst = self.loss_record.mean_burst();
        s.target_bps = self.target_bps(config);
        s.codec_bps = self.encoder.config().bitrate;
        s.protection = Some(self.protection);
    }

    /// Packet headers per second (RTP, extensions, SRTP tag, UDP/IP) at 50 packets/s.
    fn header_bps(&self) -> u64 {
        (self.header_bytes * 8 * 50) as u64
    }

    /// The send rate in RTP payload bits (media plus FEC repair): the loss-based rate,
    /// capped by the peer's REMB less the packet headers (REMB counts the wire).
    fn target_bps(&self, config: &SessionConfig) -> u32 {
        let remb = self.remote_estimate.map_or(u32::MAX, |r| {
            u32::try_from(r.saturating_sub(self.header_bps())).unwrap_or(u32::MAX)
        });
        self.loss_rate.rate().min(remb).max(config.rate.min_bps)
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
    fn frame_budget(&self, config: &SessionConfig) -> FrameBudget {
        let secs = FRAME.as_secs_f64();
        FrameBudget {
            frame_bytes: f64::from(self.target_bps(config)) / 8.0 * secs,
            repair_cost: self.repair_cost(false),
            repair_cost_piggybacked: self.repair_cost(true),
            min_media_bytes: f64::from(config.min_codec_bps) / 8.0 * secs,
        }
    }

    /// Whether the repairs of the group in force ride on media packets.
    fn piggybacked(&self, config: &SessionConfig) -> bool {
        config.protection.piggyback && self.protection.can_piggyback()
    }

    /// Sets the Opus bitrate from the target, which pays for every byte of repair:
    /// per frame, `o` repairs (`o` = repairs per source) each as long as a source
    /// packet (header included) plus the FEC header and length, and either a packet
    /// header of its own or an RFC 2198 block header; the Opus payload gets the rest.
    pub(super) fn apply_rate(&mut self, config: &SessionConfig) -> Result<(), Error> {
        let o = self.protection.overhead();
        let per_repair = self.repair_cost(self.piggybacked(config));
        let frame_bytes = f64::from(self.target_bps(config)) / 8.0 * FRAME.as_secs_f64();
        let media_bytes = (frame_bytes - o * per_repair) / (1.0 + o);
        let media = media_bytes * 8.0 / FRAME.as_secs_f64();
        let codec = media.clamp(6_000.0, 510_000.0) as u32;
        if codec.abs_diff(self.encoder.config().bitrate) >= 500 {
            self.encoder.set_bitrate(codec)?;
        }
        Ok(())
    }

    /// Encodes one frame of mono PCM captured at `now` (`epoch`: the session's
    /// start, for abs-send-time) and queues its datagrams (media, then any repair
    /// packets it completes).
    pub(super) fn send_frame(
        &mut self,
        now: Instant,
        epoch: Instant,
        pcm: &[i16],
        config: &SessionConfig,
        out: &mut Outbox,
        stats: &mut SessionStats,
    ) -> Result<(), Error> {
        let mut payload = core::mem::take(&mut self.scratch_payload);
        self.encoder.encode(pcm, &mut payload)?;
        let level = [AudioLevel::from_samples(pcm, true).to_byte()];
        let abs = congestion::abs_send_time(now.saturating_duration_since(epoch));
        let mut ext = core::mem::take(&mut self.scratch_ext);
        let profile = rtp::write_elements(
            &[
                Element {
                    id: config.audio_level_id,
                    data: &level,
                },
                Element {
                    id: config.abs_send_time_id,
                    data: &abs,
                },
            ],
            &mut ext,
        )?;
        let packet = rtp::Packet {
            marker: stats.frames_sent == 0,
            payload_type: config.payload_type,
            sequence: self.seq,
            timestamp: self.timestamp,
            ssrc: config.ssrc,
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
                        payload_type: config.fec_payload_type,
                        timestamp_offset: u16::try_from(self.timestamp.wrapping_sub(completed))
                            .unwrap_or(red::MAX_OFFSET)
                            .min(red::MAX_OFFSET),
                        data: &repair,
                    }],
                    primary_type: config.payload_type,
                    primary: &payload,
                }
                .encode(&mut red_payload)?;
                stats.repair_bytes_sent += (red_payload.len() - payload.len()) as u64;
                stats.repair_sent += 1;
                let red_packet = rtp::Packet {
                    payload_type: config.red_payload_type,
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
        out.push(Bytes::from(protected), stats);
        stats.frames_sent += 1;
        self.sent_packets = self.sent_packets.wrapping_add(1);
        self.sent_octets = self.sent_octets.wrapping_add(payload.len() as u32);
        self.sent_since_report = true;
        self.last_rtp_timestamp = self.timestamp;
        self.last_send = Some(now);
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(OPUS_CLOCK / 50);
        // Repairs of the groups this frame completed: onto the next media packets, or
        // in packets of their own.
        let piggyback = self.piggybacked(config);
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
                payload_type: config.fec_payload_type,
                sequence: self.fec_seq,
                timestamp: packet.timestamp,
                ssrc: config.fec_ssrc,
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
            stats.repair_bytes_sent += (protected.len() + UDP_IP_OVERHEAD) as u64;
            out.push(Bytes::from(protected), stats);
            stats.repair_sent += 1;
        }
        self.scratch_payload = payload;
        self.scratch_ext = ext;
        Ok(())
    }

    /// SRTCP-protects a compound RTCP packet with our outbound keys.
    pub(super) fn protect_rtcp(&mut self, packet: &mut Vec<u8>) -> Result<(), Error> {
        self.outbound.protect_rtcp(packet)?;
        Ok(())
    }

    /// The sender info of an SR (RFC 3550 §6.4.1) at `now` (`ntp`: our NTP clock
    /// then), or `None` (an RR) when no media went out since the last report; either
    /// way the next report starts a new "sent since" period.
    pub(super) fn take_sender_info(&mut self, now: Instant, ntp: u64) -> Option<SenderInfo> {
        let info = self.sent_since_report.then(|| {
            // RFC 3550 §6.4.1: the RTP timestamp of the same instant as the NTP one,
            // the last one sent plus the time since.
            let since = self
                .last_send
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            let ticks = u32::try_from(since.as_micros() * u128::from(OPUS_CLOCK) / 1_000_000)
                .unwrap_or(u32::MAX);
            SenderInfo {
                ntp,
                rtp_timestamp: self.last_rtp_timestamp.wrapping_add(ticks),
                packet_count: self.sent_packets,
                octet_count: self.sent_octets,
            }
        });
        self.sent_since_report = false;
        info
    }

    /// The peer's REMB (draft-alvestrand-rmcat-remb), bit/s of wire.
    pub(super) const fn handle_remb(&mut self, bps: u64) {
        self.remote_estimate = Some(bps);
    }

    /// Whether a report told us our stream's loss yet.
    pub(super) fn loss_known(&self) -> bool {
        self.reports_seen > 0 || self.loss_record.packets() > 0
    }

    /// The fates of our packets a Loss RLE block reports, each recorded once (the
    /// blocks overlap: each covers the peer's last 250 packets), and only for
    /// sequence numbers we sent.
    pub(super) fn record_fates(&mut self, rle: &LossRle) {
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

    /// A report block's loss fraction of our stream (RFC 3550 §6.4.1), at `now`:
    /// to the loss-based rate controller and the smoothed loss.
    pub(super) fn handle_loss_report(
        &mut self,
        now: Instant,
        fraction_lost: u8,
        config: &SessionConfig,
    ) {
        let loss = f64::from(fraction_lost) / 256.0;
        let interval = self
            .last_loss_report
            .map_or(config.rtcp_interval, |t| now.saturating_duration_since(t));
        self.last_loss_report = Some(now);
        self.loss_rate.handle_report_over(fraction_lost, interval);
        // The first report sets the estimate; later ones are smoothed (a single
        // bad second should not switch FEC on and off).
        self.smoothed_loss = if self.reports_seen == 0 {
            loss
        } else {
            0.7 * self.smoothed_loss + 0.3 * loss
        };
        self.reports_seen += 1;
    }

    /// FEC from the loss pattern the peer's Loss RLE reports gave (else the smoothed
    /// report-block loss, as independent losses), within a delay budget set by RTT
    /// and jitter (`stats.rtt`, `stats.remote_jitter`).
    pub(super) fn update_protection(&mut self, config: &SessionConfig, stats: &mut SessionStats) {
        let one_way = stats.rtt.unwrap_or(Duration::ZERO) / 2;
        let budget = MOUTH_TO_EAR_BUDGET
            .saturating_sub(one_way)
            .saturating_sub(stats.remote_jitter * 2)
            .clamp(
                Duration::from_millis(20),
                config.protection.max_delay.max(Duration::from_millis(20)),
            );
        let mut goal = config.protection;
        goal.max_delay = budget;
        let budget = self.frame_budget(config);
        let (loss, burst) = if self.loss_record.packets() > 0 {
            (self.loss_record.loss_rate(), self.loss_record.mean_burst())
        } else {
            (self.smoothed_loss, 1.0)
        };
        // Too short a record to call the path clean: the first report of a call
        // covers 12-37 packets, none lost one time in 20 at 10 % loss, and dropping
        // the initial group then moved the playout twice.
        let short = self.loss_record.packets() < CLEAN_RECORD && self.reports_seen < 2;
        let p = config.force_protection.unwrap_or_else(|| {
            let p = choose_protection_for_budget(loss, burst, &goal, &budget);
            if short && p.rs.is_none() && self.protection.rs.is_some() {
                return self.protection;
            }
            keep_group(self.protection, p, loss, burst, &goal, &budget)
        });
        if p.rs != self.protection.rs || p.stride != self.protection.stride {
            stats.protection_changes += 1;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::test_srtp as srtp;

    fn tone() -> Vec<i16> {
        (0..960)
            .map(|i| ((f64::from(i) * 0.05).sin() * 8000.0) as i16)
            .collect()
    }

    fn send(tx: &mut Sender, config: &SessionConfig, frames: u32) -> (Outbox, SessionStats) {
        let t0 = Instant::now();
        let mut out = Outbox::new(64);
        let mut stats = SessionStats::default();
        for i in 0..frames {
            tx.send_frame(t0 + FRAME * i, t0, &tone(), config, &mut out, &mut stats)
                .unwrap();
        }
        (out, stats)
    }

    #[test]
    fn starts_with_the_initial_group_riding_on_media() {
        let config = SessionConfig::default();
        let tx = Sender::new(&config, srtp(1), 100, 5000).unwrap();
        assert_eq!(tx.protection(), config.initial_protection);
        assert!(tx.piggybacked(&config));
    }

    #[test]
    fn forced_protection_overrides_the_initial_group() {
        let mut config = SessionConfig::default();
        let none = choose_protection(0.0, 1.0, &config.protection);
        config.force_protection = Some(none);
        let tx = Sender::new(&config, srtp(1), 0, 0).unwrap();
        assert_eq!(tx.protection(), none);
    }

    #[test]
    fn piggybacked_repairs_add_no_datagrams() {
        let config = SessionConfig::default();
        let mut tx = Sender::new(&config, srtp(1), 0xfffe, 0).unwrap();
        let (out, stats) = send(&mut tx, &config, 8);
        // One datagram per frame: the (4, 2) group's repairs ride on media packets.
        assert_eq!(out.len(), 8);
        assert_eq!(stats.frames_sent, 8);
        assert_eq!(stats.datagrams_sent, 8);
        assert!(stats.repair_sent > 0);
        // The sequence number wraps.
        assert_eq!(tx.seq, 6);
        assert_eq!(tx.timestamp, 8 * 960);
    }

    #[test]
    fn repairs_go_in_packets_of_their_own_without_piggybacking() {
        let mut config = SessionConfig::default();
        config.protection.piggyback = false;
        let mut tx = Sender::new(&config, srtp(1), 0, 0).unwrap();
        let (out, stats) = send(&mut tx, &config, 4);
        // A (4, 2) group: four media packets, then its two repairs.
        assert_eq!(stats.repair_sent, 2);
        assert_eq!(out.len(), 6);
        assert_eq!(tx.fec_seq, 2);
    }

    #[test]
    fn sender_info_only_after_media_and_once() {
        let config = SessionConfig::default();
        let mut tx = Sender::new(&config, srtp(1), 0, 7).unwrap();
        let t0 = Instant::now();
        assert_eq!(tx.take_sender_info(t0, 1), None);
        let _ = send(&mut tx, &config, 2);
        let info = tx.take_sender_info(tx.last_send.unwrap(), 99).unwrap();
        assert_eq!(info.packet_count, 2);
        assert_eq!(info.rtp_timestamp, 7 + 960);
        assert_eq!(info.ntp, 99);
        assert_eq!(tx.take_sender_info(t0, 1), None);
    }

    #[test]
    fn records_each_fate_once_and_only_for_packets_sent() {
        let config = SessionConfig::default();
        let mut tx = Sender::new(&config, srtp(1), 0, 0).unwrap();
        let _ = send(&mut tx, &config, 10);
        assert!(!tx.loss_known());
        let fates: Vec<bool> = (0..20).map(|i| i % 5 != 0).collect();
        let rle = LossRle::from_fates(config.ssrc, 0, &fates).unwrap();
        tx.record_fates(&rle);
        // Sequence numbers 10..20 were never sent.
        assert_eq!(tx.loss_record.packets(), 10);
        tx.record_fates(&rle);
        assert_eq!(tx.loss_record.packets(), 10);
        assert!(tx.loss_known());
    }

    #[test]
    fn first_loss_report_sets_the_estimate_later_ones_smooth_it() {
        let config = SessionConfig::default();
        let mut tx = Sender::new(&config, srtp(1), 0, 0).unwrap();
        let t0 = Instant::now();
        tx.handle_loss_report(t0, 64, &config);
        assert!((tx.smoothed_loss - 0.25).abs() < 1e-12);
        tx.handle_loss_report(t0 + Duration::from_secs(1), 0, &config);
        assert!((tx.smoothed_loss - 0.7 * 0.25).abs() < 1e-12);
    }

    #[test]
    fn keeps_the_group_in_force_unless_clearly_worse() {
        let goal = SessionConfig::default().protection;
        let budget = FrameBudget {
            frame_bytes: 80.0,
            repair_cost: 100.0,
            repair_cost_piggybacked: 40.0,
            min_media_bytes: 40.0,
        };
        let current = SessionConfig::default().initial_protection;
        let none = choose_protection(0.0, 1.0, &goal);
        // Loss well above half the minimum: FEC stays on.
        assert_eq!(keep_group(current, none, 0.1, 1.0, &goal, &budget), current);
        // No loss: FEC goes off.
        assert_eq!(keep_group(current, none, 0.0, 1.0, &goal, &budget), none);
        // Nothing in force: the new choice.
        assert_eq!(keep_group(none, current, 0.1, 1.0, &goal, &budget), current);
    }
}
