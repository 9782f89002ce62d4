//! The transport security of each leg (an endpoint or a link): SRTP and SRTCP
//! (RFC 3711) with the leg's own keys in each direction, and the leg's history of
//! packets sent, from which its NACKs are answered with the very bytes sent before.
//!
//! Index rule: on a leg, an RTP packet is protected only at a sequence number after
//! the highest the leg's send context has protected for that SSRC. A packet whose
//! rewritten number is not (a duplicate, or one reordered or retransmitted upstream
//! after a newer one went out) is dropped and counted, never protected a second time:
//! two different plaintexts under one SRTP index share keystream (RFC 3711 §9.1),
//! and the relay restamps abs-send-time, so a second copy would differ. A NACKed
//! packet is resent from the history byte for byte, without protecting it again.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use bytes::BytesMut;
use chorus_crypto::srtp::SrtpSession;

/// How the media on one leg is protected, given when the endpoint or link is added
/// ([`super::Sfu::add_endpoint`], [`super::Sfu::add_link`]). The keys come from the
/// node layer's handshake with that peer; every leg has its own.
#[derive(Debug)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // one per leg, built once: boxing buys nothing
pub enum LegSecurity {
    /// SRTP and SRTCP (RFC 3711, RTP and RTCP multiplexed as in RFC 5761).
    Srtp {
        /// Unprotects what the peer sends the relay (the peer's send keys).
        receive: SrtpSession,
        /// Protects what the relay sends the peer. Its
        /// [`Policy::max_ssrcs`](chorus_crypto::srtp::Policy::max_ssrcs) must cover
        /// every SSRC the relay sends on the leg: one per stream an endpoint
        /// receives (one per subscribed layer on a link) plus
        /// [`super::SfuConfig::rtcp_ssrc`]; a packet beyond it is dropped and
        /// counted in [`super::SfuStats::send_refused`].
        send: SrtpSession,
    },
    /// **Insecure: media crosses the socket in clear**, readable and forgeable by
    /// anyone on the path. For tests and benchmarks that measure the relay without
    /// cryptography; [`super::Sfu`] refuses it unless
    /// [`super::SfuConfig::allow_plaintext`] is set.
    Plaintext,
}

impl LegSecurity {
    /// SRTP with `receive` for what the peer sends and `send` for what the relay
    /// sends it.
    #[must_use]
    pub const fn srtp(receive: SrtpSession, send: SrtpSession) -> Self {
        Self::Srtp { receive, send }
    }

    /// Whether the leg carries media in clear.
    #[must_use]
    pub const fn is_plaintext(&self) -> bool {
        matches!(self, Self::Plaintext)
    }
}

/// RTP or RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Media {
    Rtp,
    Rtcp,
}

/// The outcome of sealing a packet for a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sealed {
    /// Protected (or, on a plaintext leg, left as it was): send it.
    Ready,
    /// Its index is not after the highest the leg has sent: never protected twice.
    Late,
    /// The send context refused it (a bound such as `max_ssrcs`, or an index rule).
    Refused,
}

/// Times one packet in the history is resent at most: a receiver's NACK retries
/// (chorus-media's default is 3) and a little slack, so that a peer repeating a NACK
/// cannot make the relay send a packet without end.
pub(crate) const MAX_RESENDS: u8 = 4;

/// One packet as sent on a leg.
#[derive(Debug)]
struct Sent {
    ssrc: u32,
    seq: u16,
    resent: u8,
    bytes: Vec<u8>,
}

/// What the history holds for a NACKed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend<'a> {
    /// The packet as first sent: send it again.
    Bytes(&'a [u8]),
    /// Held, but resent [`MAX_RESENDS`] times already.
    Exhausted,
    /// Not held (never sent on this leg, or overwritten).
    Unknown,
}

/// The last packets sent on a leg, oldest overwritten first.
#[derive(Debug)]
struct History {
    slots: Vec<Sent>,
    next: usize,
    capacity: usize,
}

impl History {
    fn record(&mut self, ssrc: u32, seq: u16, bytes: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        if self.slots.len() < self.capacity {
            self.slots.push(Sent {
                ssrc,
                seq,
                resent: 0,
                bytes: bytes.to_vec(),
            });
        } else if let Some(slot) = self.slots.get_mut(self.next) {
            slot.ssrc = ssrc;
            slot.seq = seq;
            slot.resent = 0;
            slot.bytes.clear();
            slot.bytes.extend_from_slice(bytes);
        }
        self.next = (self.next + 1) % self.capacity;
    }

    fn resend(&mut self, ssrc: u32, seq: u16) -> Resend<'_> {
        match self
            .slots
            .iter_mut()
            .find(|s| s.ssrc == ssrc && s.seq == seq)
        {
            None => Resend::Unknown,
            Some(s) if s.resent >= MAX_RESENDS => Resend::Exhausted,
            Some(s) => {
                s.resent += 1;
                Resend::Bytes(&s.bytes)
            }
        }
    }
}

/// One peer's leg: its security and its send history.
#[derive(Debug)]
pub(crate) struct Leg {
    security: LegSecurity,
    history: History,
}

/// Reads the sequence number and SSRC of an RTP header (RFC 3550 §5.1).
fn rtp_ids(packet: &[u8]) -> Option<(u16, u32)> {
    let seq = packet.get(2..4)?;
    let ssrc = packet.get(8..12)?;
    Some((
        u16::from_be_bytes([seq.first().copied()?, seq.get(1).copied()?]),
        u32::from_be_bytes(ssrc.try_into().ok()?),
    ))
}

impl Leg {
    pub(crate) fn new(security: LegSecurity, history: usize) -> Self {
        Self {
            security,
            history: History {
                slots: Vec::new(),
                next: 0,
                capacity: history,
            },
        }
    }

    /// Unprotects a packet the peer sent, in place (RFC 3711 §3.3, §3.4).
    pub(crate) fn open(
        &mut self,
        media: Media,
        packet: &mut Vec<u8>,
    ) -> Result<(), chorus_crypto::Error> {
        match (&mut self.security, media) {
            (LegSecurity::Plaintext, _) => Ok(()),
            (LegSecurity::Srtp { receive, .. }, Media::Rtp) => receive.unprotect_rtp(packet),
            (LegSecurity::Srtp { receive, .. }, Media::Rtcp) => receive.unprotect_rtcp(packet),
        }
    }

    /// Protects the plaintext packet at `buf[start..]` in place for the peer, and
    /// records an RTP packet in the history.
    pub(crate) fn seal(&mut self, media: Media, buf: &mut BytesMut, start: usize) -> Sealed {
        let len = buf.len().saturating_sub(start);
        let ids = match media {
            Media::Rtp => rtp_ids(buf.get(start..).unwrap_or_default()),
            Media::Rtcp => None,
        };
        match &mut self.security {
            LegSecurity::Plaintext => {}
            LegSecurity::Srtp { send, .. } => {
                // RFC 3711 §3.3.1: the index follows the highest sent; one at or below
                // it may have been used already.
                if let Some((seq, ssrc)) = ids
                    && send
                        .sent_index(ssrc)
                        .is_some_and(|hi| seq.wrapping_sub(hi as u16).wrapping_sub(1) >= 0x7fff)
                {
                    return Sealed::Late;
                }
                let overhead = match media {
                    Media::Rtp => send.suite().rtp_tag_len(),
                    Media::Rtcp => send.suite().rtcp_overhead(),
                };
                buf.resize(start + len + overhead, 0);
                let Some(room) = buf.get_mut(start..) else {
                    return Sealed::Refused;
                };
                let sealed = match media {
                    Media::Rtp => send.protect_rtp_in_place(room, len),
                    Media::Rtcp => send.protect_rtcp_in_place(room, len),
                };
                match sealed {
                    Ok(n) => buf.truncate(start + n),
                    Err(_) => return Sealed::Refused,
                }
            }
        }
        if let Some((seq, ssrc)) = ids {
            self.history
                .record(ssrc, seq, buf.get(start..).unwrap_or_default());
        }
        Sealed::Ready
    }

    /// The sequence number of the newest RTP packet of `ssrc` protected on this leg.
    pub(crate) fn sent_seq(&self, ssrc: u32) -> Option<u16> {
        match &self.security {
            LegSecurity::Srtp { send, .. } => send.sent_index(ssrc).map(|i| i as u16),
            LegSecurity::Plaintext => None,
        }
    }

    /// The packet sent with `ssrc` and `seq`, as it went out, to send again, if
    /// still remembered and not resent too often.
    pub(crate) fn resend(&mut self, ssrc: u32, seq: u16) -> Resend<'_> {
        self.history.resend(ssrc, seq)
    }
}

#[cfg(test)]
mod tests {
    use chorus_crypto::srtp::{Policy, Suite};

    use super::*;

    fn session(k: u8) -> SrtpSession {
        let s = Suite::AeadAes128Gcm;
        SrtpSession::new(Policy::new(s, &vec![k; s.key_len()], &vec![k; s.salt_len()]).unwrap())
            .unwrap()
    }

    fn rtp(seq: u16, payload: u8) -> BytesMut {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[0x80, 96]);
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9, payload]);
        b
    }

    #[test]
    fn an_index_is_never_protected_twice_and_resends_are_identical() {
        let mut leg = Leg::new(LegSecurity::srtp(session(1), session(2)), 4);
        let mut peer = session(2);
        let mut first = rtp(10, 0xaa);
        assert_eq!(leg.seal(Media::Rtp, &mut first, 0), Sealed::Ready);
        let mut next = rtp(11, 0xbb);
        assert_eq!(leg.seal(Media::Rtp, &mut next, 0), Sealed::Ready);
        // The same index again with other bytes (a restamped retransmission), or an
        // older one: not protected.
        for seq in [10, 11, 9, 11u16.wrapping_sub(0x7fff)] {
            let mut again = rtp(seq, 0xcc);
            assert_eq!(leg.seal(Media::Rtp, &mut again, 0), Sealed::Late, "{seq}");
        }
        // Newer by up to half the sequence space is new.
        let mut far = rtp(11u16.wrapping_add(0x7fff), 0xdd);
        assert_eq!(leg.seal(Media::Rtp, &mut far, 0), Sealed::Ready);
        // The history gives back the bytes that went out, which the peer opens.
        assert_eq!(leg.resend(9, 10), Resend::Bytes(&first[..]));
        let mut got = first.to_vec();
        peer.unprotect_rtp(&mut got).unwrap();
        assert_eq!(got, rtp(10, 0xaa).to_vec());
        assert_eq!(leg.resend(9, 12), Resend::Unknown);
        // A NACK repeated without end gets a bounded number of resends.
        for _ in 1..MAX_RESENDS {
            assert_eq!(leg.resend(9, 10), Resend::Bytes(&first[..]));
        }
        assert_eq!(leg.resend(9, 10), Resend::Exhausted);
    }

    #[test]
    fn the_history_keeps_the_newest_packets() {
        let mut leg = Leg::new(LegSecurity::Plaintext, 2);
        for seq in 0..5u16 {
            let mut p = rtp(seq, seq as u8);
            assert_eq!(leg.seal(Media::Rtp, &mut p, 0), Sealed::Ready);
        }
        assert_eq!(leg.resend(9, 2), Resend::Unknown);
        assert_eq!(leg.resend(9, 3), Resend::Bytes(&rtp(3, 3)[..]));
        assert_eq!(leg.resend(9, 4), Resend::Bytes(&rtp(4, 4)[..]));
        let mut none = Leg::new(LegSecurity::Plaintext, 0);
        let mut p = rtp(0, 0);
        assert_eq!(none.seal(Media::Rtp, &mut p, 0), Sealed::Ready);
        assert_eq!(none.resend(9, 0), Resend::Unknown);
    }
}
