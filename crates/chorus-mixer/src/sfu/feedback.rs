//! Feedback from receivers towards senders: keyframe requests (PLI, FIR),
//! aggregated per layer, and NACKs, answered from a leg's history or translated
//! upstream; REMB goes to selection.

use std::time::{Duration, Instant};

use chorus_media::rtcp;

use super::leg::Resend;
use super::slab::Key;
use super::{Kind, Output, Peer, Sfu, Stream, media_err};
use crate::Error;

impl Sfu {
    /// One RTCP compound packet from `from`, unprotected: REMB sets a receiver's
    /// estimate; PLI and FIR ask for a keyframe of what the receiver gets (or, from a
    /// link, of the named layer); NACKs are answered from the leg's history, the rest
    /// translated and sent towards the sender; a sender report goes to the layer's
    /// receivers, rewritten. Other packets are ignored: the relay terminates RTCP.
    pub(super) fn handle_rtcp(
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

    /// Asks the origin of layer `li` of stream `sk` for a keyframe, at most once per
    /// interval (RFC 4585 §6.3.1 PLI; RFC 5104 §4.3.1 FIR).
    pub(super) fn request_keyframe(&mut self, now: Instant, sk: Key, li: u8, out: &mut Output) {
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

    /// The stream and layer of the SSRC feedback names; feedback about no known
    /// layer is counted as ignored.
    fn feedback_layer(&mut self, ssrc: u32) -> Option<(Key, u8)> {
        let found = self
            .by_ssrc
            .get(&ssrc)
            .copied()
            .filter(|&(sk, _)| self.streams.get(sk).is_some());
        if found.is_none() {
            self.stats.ignored_feedback += 1;
        }
        found
    }

    /// A PLI or FIR: from an endpoint, `ssrc` is the rewritten SSRC it receives; from
    /// a link, a layer's own SSRC.
    fn feedback_keyframe(&mut self, now: Instant, from: Peer, ssrc: u32, out: &mut Output) {
        let Some((sk, li)) = self.feedback_layer(ssrc) else {
            return;
        };
        let Some(s) = self.streams.get(sk) else {
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
        let Some((sk, li)) = self.feedback_layer(ssrc) else {
            return;
        };
        let Some(s) = self.streams.get(sk) else {
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

impl Stream {
    /// When a keyframe request of this stream is next due: the end of the earliest
    /// aggregation interval with a request pending or a switch waiting, and a
    /// temporal up-switch waiting for a sync frame an interval after it began (then
    /// as layer switches do, an interval after the last request).
    pub(super) fn keyframe_deadline(&self, interval: Duration) -> Option<Instant> {
        let waiting = self
            .forwards
            .iter()
            .filter(|f| f.target != f.current)
            .fold(0u8, |m, f| m | f.target.map_or(0, |t| 1 << t));
        let requests = self.layers.iter().enumerate().filter_map(move |(i, l)| {
            (l.pending || waiting & (1 << i) != 0)
                .then(|| l.last_request.map(|t| t + interval))
                .flatten()
        });
        let temporal = self.forwards.iter().filter_map(move |f| {
            let since = f.temporal_since?;
            let layer = self.layers.get(usize::from(f.current?))?;
            let after_request = layer.last_request.map_or(since, |r| r.max(since));
            Some(after_request + interval)
        });
        requests.chain(temporal).min()
    }
}

impl Sfu {
    /// Sends the keyframe requests whose aggregation interval has ended: those
    /// asked for within it, and again those of switches still waiting.
    pub(super) fn send_due_keyframe_requests(&mut self, now: Instant, out: &mut Output) {
        let interval = self.config.keyframe_interval;
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::sfu;
    use super::*;

    #[test]
    fn keyframe_requests_are_aggregated_per_interval() {
        let (mut s, mut out, now) = sfu();
        let interval = s.config.keyframe_interval;
        let sk = s.stream_key(1).unwrap();
        let before = s.stats();
        // Publication already asked for the layer receiver 2 switches to, at `now`:
        // a second request within the interval waits for its end.
        let layer = s.selection(2, 1).unwrap().target.unwrap();
        s.request_keyframe(now, sk, layer, &mut out);
        assert!(out.is_empty());
        let after = s.stats();
        assert_eq!(
            after.keyframe_requests_aggregated,
            before.keyframe_requests_aggregated + 1
        );
        assert_eq!(
            s.streams.get(sk).unwrap().keyframe_deadline(interval),
            Some(now + interval)
        );
        assert_eq!(s.poll_timeout(), Some(now + interval));
        // At the end of the interval, exactly one PLI goes to the sender.
        s.send_due_keyframe_requests(now + interval, &mut out);
        let sent: Vec<_> = out.iter().map(|t| (t.to, t.kind)).collect();
        assert_eq!(sent, [(Peer::Endpoint(1), Kind::Rtcp)]);
        assert_eq!(s.stats().keyframe_requests, after.keyframe_requests + 1);
        // Receiver 2's switch still waits for the keyframe: asked again an interval
        // after this request.
        assert_eq!(
            s.streams.get(sk).unwrap().keyframe_deadline(interval),
            Some(now + 2 * interval)
        );
    }

    #[test]
    fn feedback_for_an_unknown_ssrc_is_counted_and_ignored() {
        let (mut s, mut out, now) = sfu();
        s.feedback_keyframe(now, Peer::Endpoint(2), 0xdead, &mut out);
        s.feedback_nack(Peer::Endpoint(2), 0xdead, &[], &mut out);
        assert!(out.is_empty());
        assert_eq!(s.stats().ignored_feedback, 2);
    }
}
