//! RTCP reports: sender reports forwarded to receivers with their timestamps
//! rewritten, and the receiver reports the relay sends each local sender.

use std::time::Instant;

use chorus_media::rtcp;

use super::timer::Timer;
use super::{Output, Peer, Sfu};

impl Sfu {
    /// A sender report of a layer (RFC 3550 §6.4.1) from its origin: verbatim to the
    /// links subscribed to the layer, and to each receiver on the layer with the
    /// receiver's SSRC and its RTP timestamp mapping, so that receivers keep the
    /// NTP-to-RTP mapping lip sync needs. Report blocks (about what the sender
    /// receives) are not forwarded.
    pub(super) fn forward_sender_report(
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

    /// One RR per locally published stream, to its sender, with a report block per
    /// layer heard from (RFC 3550 §6.4.2); the next round an interval later, or when
    /// a local sender's next packet arrives if none is left.
    pub(super) fn send_receiver_reports(&mut self, now: Instant, out: &mut Output) {
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
        if any {
            self.timers
                .set(Timer::Report, now + self.config.report_interval);
        } else {
            self.timers.stop(Timer::Report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Kind;
    use super::super::tests::sfu;
    use super::*;

    fn receiver_reports(out: &Output, to: Peer) -> usize {
        out.iter()
            .filter(|t| t.to == to && t.kind == Kind::Rtcp)
            .filter_map(|t| rtcp::decode_compound(t.bytes, &rtcp::Limits::default()).ok())
            .flatten()
            .filter(|p| matches!(p, rtcp::Packet::ReceiverReport { .. }))
            .count()
    }

    #[test]
    fn the_report_timer_runs_while_a_local_sender_is_heard() {
        let (mut s, mut out, now) = sfu();
        assert_eq!(s.timers.get(Timer::Report), None);
        // A VP8 keyframe packet of layer SSRC 10, in clear (plaintext legs).
        let packet = [0x80, 96, 0, 7, 0, 0, 0, 9, 0, 0, 0, 10, 0x10, 0x00, 0x9d];
        s.handle_input(now, Peer::Endpoint(1), &packet, &mut out)
            .unwrap();
        let due = now + s.config.report_interval;
        assert_eq!(s.timers.get(Timer::Report), Some(due));
        out.clear();
        s.handle_timeout(due, &mut out);
        assert_eq!(receiver_reports(&out, Peer::Endpoint(1)), 1);
        assert_eq!(
            s.timers.get(Timer::Report),
            Some(due + s.config.report_interval)
        );
    }

    #[test]
    fn no_report_timer_without_a_local_sender() {
        let (mut s, mut out, now) = sfu();
        s.send_receiver_reports(now, &mut out);
        assert_eq!(receiver_reports(&out, Peer::Endpoint(1)), 0);
        assert_eq!(s.timers.get(Timer::Report), None);
    }
}
