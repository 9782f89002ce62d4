//! The send path: the [`Output`] arena every call appends to, and each peer's leg,
//! which protects what goes out (SRTP/SRTCP) and keeps the history NACKs are
//! answered from.

use bytes::BytesMut;
use chorus_framing::U32Map;
use chorus_media::rtcp;

use super::Peer;
use super::leg::{Leg, Media, Sealed};
use crate::control::Message;

/// What a transmit carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An RTP packet.
    Rtp,
    /// An RTCP packet (feedback).
    Rtcp,
    /// A control message ([`crate::control`]), for the peer's control channel.
    Control,
}

/// One packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// The destination.
    pub to: Peer,
    /// What the bytes are.
    pub kind: Kind,
    /// The packet.
    pub bytes: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Item {
    pub(super) to: Peer,
    pub(super) kind: Kind,
    pub(super) start: usize,
    pub(super) end: usize,
}

/// The packets an [`Sfu`](super::Sfu) asks the caller to send, in one reused arena. Calls append;
/// [`Output::clear`] empties it and keeps its capacity.
#[derive(Debug, Default)]
pub struct Output {
    pub(super) buf: BytesMut,
    pub(super) items: Vec<Item>,
}

impl Output {
    /// An empty output.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every transmit, keeping the memory for the next ones.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }

    /// Number of transmits.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there is nothing to send.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The transmits in the order they were produced.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Transmit<'_>> + '_ {
        self.items.iter().map(|i| Transmit {
            to: i.to,
            kind: i.kind,
            bytes: self.buf.get(i.start..i.end).unwrap_or_default(),
        })
    }

    fn push_with(&mut self, to: Peer, kind: Kind, write: impl FnOnce(&mut BytesMut) -> bool) {
        let start = self.buf.len();
        if write(&mut self.buf) {
            self.items.push(Item {
                to,
                kind,
                start,
                end: self.buf.len(),
            });
        } else {
            self.buf.truncate(start);
        }
    }

    /// Bytes already protected for `to` (a resend from its leg's history).
    pub(super) fn push(&mut self, to: Peer, kind: Kind, bytes: &[u8]) {
        self.push_with(to, kind, |b| {
            b.extend_from_slice(bytes);
            true
        });
    }

    /// A packet `write` puts in plaintext, then sealed under `leg` for `to`.
    pub(super) fn push_sealed(
        &mut self,
        to: Peer,
        leg: &mut Leg,
        media: Media,
        write: impl FnOnce(&mut BytesMut) -> bool,
    ) -> Option<Sealed> {
        let kind = match media {
            Media::Rtp => Kind::Rtp,
            Media::Rtcp => Kind::Rtcp,
        };
        let mut sealed = None;
        self.push_with(to, kind, |b| {
            let start = b.len();
            if !write(b) {
                return false;
            }
            let s = leg.seal(media, b, start);
            sealed = Some(s);
            s == Sealed::Ready
        });
        sealed
    }

    pub(super) fn push_control(&mut self, to: Peer, msg: &Message<'_>) {
        self.push_with(to, Kind::Control, |b| msg.encode(b).is_ok());
    }
}

/// `bytes` (a decoded RTP packet) with sequence number, timestamp and SSRC replaced
/// (RFC 3550 §5.1: bytes 2-11).
pub(super) fn rewritten(
    bytes: &[u8],
    seq: u16,
    ts: u32,
    ssrc: u32,
) -> impl FnOnce(&mut BytesMut) -> bool {
    move |b| {
        let start = b.len();
        b.extend_from_slice(bytes);
        let Some(h) = b.get_mut(start + 2..start + 12) else {
            return false;
        };
        h[..2].copy_from_slice(&seq.to_be_bytes());
        h[2..6].copy_from_slice(&ts.to_be_bytes());
        h[6..].copy_from_slice(&ssrc.to_be_bytes());
        true
    }
}

/// The peers' legs: their SRTP contexts and send histories.
#[derive(Debug, Default)]
pub(super) struct Legs {
    pub(super) endpoints: U32Map<Leg>,
    pub(super) links: U32Map<Leg>,
    /// Sealing outcomes, merged into [`SfuStats`](super::SfuStats).
    pub(super) late_dropped: u64,
    pub(super) send_refused: u64,
}

impl Legs {
    pub(super) fn get_mut(&mut self, peer: Peer) -> Option<&mut Leg> {
        match peer {
            Peer::Endpoint(id) => self.endpoints.get_mut(&id),
            Peer::Link(id) => self.links.get_mut(&id),
        }
    }

    /// Sends what `write` puts in plaintext to `to`, protected under its leg; whether
    /// it went out.
    pub(super) fn send(
        &mut self,
        out: &mut Output,
        to: Peer,
        media: Media,
        write: impl FnOnce(&mut BytesMut) -> bool,
    ) -> bool {
        let Some(leg) = self.get_mut(to) else {
            return false;
        };
        match out.push_sealed(to, leg, media, write) {
            Some(Sealed::Ready) => true,
            Some(Sealed::Late) => {
                self.late_dropped += 1;
                false
            }
            Some(Sealed::Refused) => {
                self.send_refused += 1;
                false
            }
            None => false,
        }
    }

    /// An RTCP packet the relay generates or rewrites, SRTCP-protected for `to`.
    pub(super) fn send_rtcp(&mut self, out: &mut Output, to: Peer, packet: &rtcp::Packet<'_>) {
        self.send(out, to, Media::Rtcp, |b| packet.encode(b).is_ok());
    }
}
