//! The relay as a [`DatagramCore`]: peers' transport addresses, and the queues that
//! turn an [`Output`] into addressed [`Transmit`]s and control [`Event`]s.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use chorus_framing::{DatagramCore, PacketKind, Transmit};

use super::{Kind, Output, Peer, Sfu, SfuError};
use crate::Error;

/// Most transmits, and most events, the [`DatagramCore`] path keeps undrained; past
/// it the oldest are dropped (counted in [`super::SfuStats::queue_dropped`]).
pub const MAX_QUEUED: usize = 4096;

/// What the relay, driven as a [`DatagramCore`], asks its owner to do besides
/// sending datagrams.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Send this control message ([`crate::control`]) over `to`'s authenticated
    /// control channel (an announcement, a subscription upstream).
    Control {
        /// The peer it is for.
        to: Peer,
        /// The encoded message.
        message: Bytes,
    },
}

/// The trait path's state, kept apart from forwarding.
#[derive(Debug, Default)]
pub(super) struct Wire {
    by_addr: HashMap<SocketAddr, Peer>,
    addr_of: HashMap<Peer, SocketAddr>,
    /// Reused for every input on the trait path.
    out: Output,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    pub(super) unaddressed: u64,
    pub(super) queue_dropped: u64,
}

impl Wire {
    /// A removed peer's address is free again.
    pub(super) fn forget(&mut self, peer: Peer) {
        if let Some(a) = self.addr_of.remove(&peer) {
            self.by_addr.remove(&a);
        }
    }

    /// Queues what `out` holds: one copy of its arena, each packet a slice of it.
    fn queue(&mut self, out: &Output) {
        if out.is_empty() {
            return;
        }
        let arena = Bytes::copy_from_slice(&out.buf);
        for item in &out.items {
            let Some(bytes) = arena.get(item.start..item.end) else {
                continue;
            };
            let bytes = arena.slice_ref(bytes);
            if item.kind == Kind::Control {
                push_bounded(
                    &mut self.events,
                    Event::Control {
                        to: item.to,
                        message: bytes,
                    },
                    &mut self.queue_dropped,
                );
            } else if let Some(&addr) = self.addr_of.get(&item.to) {
                push_bounded(
                    &mut self.transmits,
                    Transmit::new(addr, bytes),
                    &mut self.queue_dropped,
                );
            } else {
                self.unaddressed += 1;
            }
        }
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, dropped: &mut u64) {
    if queue.len() >= MAX_QUEUED {
        queue.pop_front();
        *dropped += 1;
    }
    queue.push_back(item);
}

impl Sfu {
    /// Sets `peer`'s transport address for the [`DatagramCore`] path: SRTP and SRTCP
    /// from it are `peer`'s, and what the relay sends `peer` goes there. A second
    /// call moves the peer; removing the peer frees its address.
    ///
    /// # Errors
    /// [`SfuError::UnknownPeer`] for a peer never added,
    /// [`SfuError::DuplicateAddress`] for an address another peer has.
    pub fn set_address(&mut self, peer: Peer, addr: SocketAddr) -> Result<(), Error> {
        if !self.is_known(peer) {
            return Err(SfuError::UnknownPeer(peer).into());
        }
        match self.wire.by_addr.get(&addr) {
            Some(&other) if other != peer => {
                return Err(SfuError::DuplicateAddress(other).into());
            }
            _ => {}
        }
        self.wire.forget(peer);
        self.wire.by_addr.insert(addr, peer);
        self.wire.addr_of.insert(peer, addr);
        Ok(())
    }

    /// The address given to `peer` with [`Sfu::set_address`].
    #[must_use]
    pub fn address(&self, peer: Peer) -> Option<SocketAddr> {
        self.wire.addr_of.get(&peer).copied()
    }

    /// Runs `input` with the trait path's reused [`Output`], then queues its
    /// transmits and events.
    fn on_wire<R>(&mut self, input: impl FnOnce(&mut Self, &mut Output) -> R) -> R {
        let mut out = core::mem::take(&mut self.wire.out);
        out.clear();
        let r = input(self, &mut out);
        self.wire.queue(&out);
        self.wire.out = out;
        r
    }
}

/// The relay behind a socket: SRTP and SRTCP (RFC 7983's 128..=191) from a peer's
/// address ([`Sfu::set_address`]); control messages never arrive as datagrams here
/// (they need the peer's authenticated channel: [`Sfu::handle_control`]) and leave
/// as [`Event::Control`]. Transmits and events are bounded by [`MAX_QUEUED`].
impl DatagramCore for Sfu {
    type Event = Event;
    type Error = Error;

    fn accepts(&self, _local: SocketAddr, from: SocketAddr, bytes: &[u8]) -> bool {
        matches!(
            chorus_framing::classify(bytes),
            PacketKind::Rtp | PacketKind::Rtcp
        ) && self.wire.by_addr.contains_key(&from)
    }

    /// # Errors
    /// [`SfuError::NotRoutable`] for what `accepts` refuses; otherwise as
    /// [`Sfu::handle_input`].
    fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        if !self.accepts(local, from, bytes) {
            return Err(SfuError::NotRoutable.into());
        }
        let peer = *self.wire.by_addr.get(&from).ok_or(SfuError::NotRoutable)?;
        self.on_wire(|sfu, out| sfu.handle_input(now, peer, bytes, out))
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.wire.transmits.pop_front()
    }

    fn poll_event(&mut self) -> Option<Event> {
        self.wire.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Self::poll_timeout(self)
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.on_wire(|sfu, out| Self::handle_timeout(sfu, now, out));
    }
}
