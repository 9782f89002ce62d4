//! The RTCP part of a call leg (RFC 3550 §6): when reports go out (the spread
//! regular schedule, early feedback, RFC 4585 §3.5), what they hold (SR or RR with
//! a report block, SDES CNAME, XR Loss RLE, REMB), BYE, and the peer's last SR for
//! the round-trip time.

use core::time::Duration;
use std::time::Instant;

use bytes::BytesMut;
use chorus_framing::Entropy;

use super::SessionConfig;
use super::receiver::Receiver;
use super::sender::Sender;
use crate::rtcp;
use crate::rtcp::xr::XrBlock;

/// A uniform draw in [0, 1) from `entropy`.
pub(super) fn random_unit(entropy: &mut dyn Entropy) -> f64 {
    // A failed source spreads nothing: the interval's middle.
    entropy
        .u64()
        .map_or(0.5, |v| (v >> 11) as f64 / (1u64 << 53) as f64)
}

/// Our NTP-format clock (RFC 3550 §4): time since the session began (`epoch`),
/// offset by one second so that no timestamp is 0 (an LSR of 0 means "no SR yet").
pub(super) fn ntp(epoch: Instant, now: Instant) -> u64 {
    let d = now.saturating_duration_since(epoch) + Duration::from_secs(1);
    (d.as_secs() << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

/// What a loss in the peer's media does to the report schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Early {
    /// Nothing: early feedback is off or was used this interval.
    None,
    /// The next regular report was brought forward.
    Pulled,
    /// A report goes out now (then [`Rtcp::schedule`]).
    Now,
}

/// The report schedule and what the peer's reports told us about timing.
pub(super) struct Rtcp {
    next_rtcp: Instant,
    /// When the last report went out, and whether it was an early one.
    last_report: Option<Instant>,
    early_sent: bool,
    /// The next regular report was brought forward for a loss (it counts as the
    /// early report of its interval).
    early_pulled: bool,
    /// The middle 32 bits of the peer's last SR's NTP timestamp, and when it came.
    last_sr: Option<(u32, Instant)>,
}

impl Rtcp {
    /// A schedule whose first report is due at `first`.
    pub(super) const fn new(first: Instant) -> Self {
        Self {
            next_rtcp: first,
            last_report: None,
            early_sent: false,
            early_pulled: false,
            last_sr: None,
        }
    }

    /// When the next regular report is due.
    pub(super) const fn next_report(&self) -> Instant {
        self.next_rtcp
    }

    /// The peer's SR, with the NTP timestamp `ntp`, came at `now`.
    pub(super) const fn handle_sender_report(&mut self, ntp: u64, now: Instant) {
        self.last_sr = Some((rtcp::ntp_middle(ntp), now));
    }

    /// A regular report went out at `now`: an early report pulled into its place
    /// counts as this interval's early one; the next is scheduled.
    pub(super) fn regular_sent(
        &mut self,
        now: Instant,
        config: &SessionConfig,
        entropy: &mut dyn Entropy,
    ) {
        self.early_sent = core::mem::take(&mut self.early_pulled);
        self.schedule(now, config, entropy);
    }

    /// The next regular report, an interval (spread, RFC 3550 §6.3.1) after `now`.
    pub(super) fn schedule(
        &mut self,
        now: Instant,
        config: &SessionConfig,
        entropy: &mut dyn Entropy,
    ) {
        let spread = random_unit(entropy) + 0.5;
        self.next_rtcp = now + config.rtcp_interval.mul_f64(spread);
    }

    /// A loss in the peer's media: report it now if early feedback allows (RFC 4585
    /// §3.5.2: no early report since the last regular one; here also a quarter
    /// interval since the last report, which bounds the RTCP rate at two reports per
    /// interval and a quarter). Too soon after the last report, the next regular
    /// one is brought forward to the quarter-interval mark instead: a loss right
    /// after a report would otherwise wait up to 1.5 intervals to be heard.
    pub(super) fn early(&mut self, now: Instant, config: &SessionConfig) -> Early {
        if !config.early_feedback || self.early_sent {
            return Early::None;
        }
        self.early_sent = true;
        let spacing = config.rtcp_interval / 4;
        match self.last_report.map(|t| t + spacing) {
            Some(earliest) if earliest > now => {
                // That report then counts as this interval's early one.
                self.next_rtcp = self.next_rtcp.min(earliest);
                self.early_pulled = true;
                Early::Pulled
            }
            _ => Early::Now,
        }
    }

    /// A compound report at `now` (`ntp`: our NTP clock then): SR when we sent
    /// media since the last one, else RR, with one report block about the peer;
    /// SDES CNAME; XR Loss RLE; REMB with our delay-based estimate. `None` only if
    /// it does not encode.
    pub(super) fn report(
        &mut self,
        now: Instant,
        ntp: u64,
        config: &SessionConfig,
        tx: &mut Sender,
        rx: &mut Receiver,
    ) -> Option<BytesMut> {
        self.last_report = Some(now);
        let (lsr, dlsr) = rtcp::last_sr_fields(self.last_sr, now);
        let reports: Vec<_> = rx.report_block(lsr, dlsr).into_iter().collect();
        let first = match tx.take_sender_info(now, ntp) {
            Some(info) => rtcp::Packet::SenderReport {
                ssrc: config.ssrc,
                info,
                reports,
            },
            None => rtcp::Packet::ReceiverReport {
                ssrc: config.ssrc,
                reports,
            },
        };
        let sdes = rtcp::Packet::Sdes(vec![rtcp::SdesChunk {
            ssrc: config.ssrc,
            items: vec![(rtcp::SDES_CNAME, &config.cname)],
        }]);
        let remb = rx
            .poll_remb(now)
            .or(rx.remote_ssrc().map(|_| u64::from(rx.estimate())));
        let rle = if config.loss_rle_feedback {
            rx.loss_rle()
        } else {
            None
        };
        let mut packets = vec![first, sdes];
        packets.extend(rle.map(|rle| rtcp::Packet::Xr {
            ssrc: config.ssrc,
            blocks: vec![XrBlock::LossRle(rle)],
        }));
        packets.extend(remb.map(|r| remb_packet(config, r, rx.remote_ssrc())));
        let mut out = BytesMut::new();
        rtcp::encode_compound(&packets, &mut out).ok()?;
        Some(out)
    }
}

/// Our estimate of the peer's stream as REMB (draft-alvestrand-rmcat-remb §2.2).
pub(super) fn remb_packet(
    config: &SessionConfig,
    rate: u64,
    remote_ssrc: Option<u32>,
) -> rtcp::Packet<'static> {
    rtcp::Packet::Remb {
        sender_ssrc: config.ssrc,
        bitrate: rtcp::RembBitrate::from_bps(rate),
        ssrcs: remote_ssrc.into_iter().collect(),
    }
}

/// A reduced-size RTCP packet (RFC 5506) holding only a REMB.
pub(super) fn remb_only(
    config: &SessionConfig,
    rate: u64,
    remote_ssrc: Option<u32>,
) -> Option<BytesMut> {
    let mut out = BytesMut::new();
    remb_packet(config, rate, remote_ssrc)
        .encode(&mut out)
        .ok()?;
    Some(out)
}

/// An empty RR and a BYE for both our SSRCs (RFC 3550 §6.6).
pub(super) fn bye(config: &SessionConfig) -> Option<BytesMut> {
    let bye = rtcp::Packet::Bye {
        sources: vec![config.ssrc, config.fec_ssrc],
        reason: None,
    };
    let rr = rtcp::Packet::ReceiverReport {
        ssrc: config.ssrc,
        reports: Vec::new(),
    };
    let mut out = BytesMut::new();
    rtcp::encode_compound(&[rr, bye], &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u64);
    impl Entropy for Fixed {
        fn fill(&mut self, dest: &mut [u8]) -> Result<(), chorus_framing::EntropyError> {
            for (i, b) in dest.iter_mut().enumerate() {
                *b = self.0.to_le_bytes()[i % 8];
            }
            Ok(())
        }
    }

    #[test]
    fn ntp_starts_one_second_after_the_epoch() {
        let t0 = Instant::now();
        assert_eq!(ntp(t0, t0), 1 << 32);
        assert_eq!(
            ntp(t0, t0 + Duration::from_millis(500)),
            (1 << 32) | (1 << 31)
        );
        // Before the epoch: as at the epoch.
        assert_eq!(ntp(t0 + Duration::from_secs(1), t0), 1 << 32);
    }

    #[test]
    fn spreads_the_interval_between_half_and_one_and_a_half() {
        let config = SessionConfig::default();
        let t0 = Instant::now();
        let mut rtcp = Rtcp::new(t0);
        rtcp.schedule(t0, &config, &mut Fixed(0));
        assert_eq!(rtcp.next_report(), t0 + Duration::from_millis(500));
        rtcp.schedule(t0, &config, &mut Fixed(u64::MAX));
        assert!(rtcp.next_report() > t0 + Duration::from_millis(1499));
        assert!(rtcp.next_report() <= t0 + Duration::from_millis(1500));
    }

    #[test]
    fn one_early_report_per_regular_one() {
        let config = SessionConfig::default();
        let t0 = Instant::now();
        let mut rtcp = Rtcp::new(t0 + Duration::from_secs(1));
        // No report yet: at once.
        assert_eq!(rtcp.early(t0, &config), Early::Now);
        assert_eq!(rtcp.early(t0, &config), Early::None);
        rtcp.regular_sent(t0, &config, &mut Fixed(0));
        assert_eq!(rtcp.early(t0, &config), Early::Now);
    }

    #[test]
    fn a_loss_soon_after_a_report_pulls_the_next_one_forward() {
        let config = SessionConfig::default();
        let t0 = Instant::now();
        let mut rtcp = Rtcp::new(t0 + Duration::from_secs(1));
        rtcp.last_report = Some(t0);
        assert_eq!(
            rtcp.early(t0 + Duration::from_millis(100), &config),
            Early::Pulled
        );
        assert_eq!(rtcp.next_report(), t0 + Duration::from_millis(250));
        // The pulled report counts as the interval's early one.
        rtcp.regular_sent(t0 + Duration::from_millis(250), &config, &mut Fixed(0));
        assert_eq!(
            rtcp.early(t0 + Duration::from_millis(900), &config),
            Early::None
        );
    }

    #[test]
    fn early_feedback_can_be_turned_off() {
        let config = SessionConfig {
            early_feedback: false,
            ..SessionConfig::default()
        };
        let t0 = Instant::now();
        let mut rtcp = Rtcp::new(t0);
        assert_eq!(rtcp.early(t0, &config), Early::None);
    }

    #[test]
    fn bye_names_both_our_sources() {
        let config = SessionConfig::default();
        let out = bye(&config).unwrap();
        let packets = rtcp::decode_compound(&out, &rtcp::Limits::default()).unwrap();
        assert!(packets.iter().any(|p| matches!(
            p,
            rtcp::Packet::Bye { sources, .. } if sources == &[config.ssrc, config.fec_ssrc]
        )));
    }
}
