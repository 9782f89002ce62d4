//! The mixer as a [`DatagramCore`]: RTP in from participants' addresses, its own
//! mixing clock as the timer, each tick's packets out as addressed transmits.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use chorus_framing::{DatagramCore, PacketKind, Transmit};

use super::{Kind, Mixer, Usage};
use crate::Error;

impl Mixer {
    /// Queues the last tick's packets as transmits to their participants'
    /// addresses, in place of what is left of the previous tick's: one copy of the
    /// tick's output buffer, each packet a slice of it.
    fn queue_transmits(&mut self) {
        self.stats.transmits_dropped += self.queue.len() as u64;
        self.queue.clear();
        let out = Bytes::copy_from_slice(&self.out);
        for &(to, start, end) in &self.transmits {
            let addr = self
                .slots
                .get(to.slot as usize)
                .and_then(Option::as_ref)
                .and_then(|p| match &p.kind {
                    Kind::Remote(r) => r.addr,
                    Kind::Pcm(_) => None,
                });
            if let (Some(addr), Some(packet)) = (addr, out.get(start..end)) {
                self.queue
                    .push_back(Transmit::new(addr, out.slice_ref(packet)));
            }
        }
    }
}

/// The mixer behind a socket: RTP (RFC 7983's 128..=191, payload types outside
/// RTCP's) from the address of a participant added with [`RemoteConfig::addr`](super::RemoteConfig::addr); its
/// own mixing clock. See the module docs' run loop. The mixer speaks RTP: SRTP, when
/// the legs use it, is a layer in front of it.
impl DatagramCore for Mixer {
    type Event = core::convert::Infallible;
    type Error = Error;

    fn accepts(&self, _local: SocketAddr, from: SocketAddr, bytes: &[u8]) -> bool {
        chorus_framing::classify(bytes) == PacketKind::Rtp && self.by_addr.contains_key(&from)
    }

    /// # Errors
    /// [`Usage::UnknownAddress`] from an address no participant has; otherwise as
    /// [`Mixer::handle_packet`].
    fn handle_datagram(
        &mut self,
        now: Instant,
        _local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let id = *self
            .by_addr
            .get(&from)
            .ok_or(Error::AudioUsage(Usage::UnknownAddress))?;
        self.handle_packet(now, id, Bytes::copy_from_slice(bytes))
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.queue.pop_front()
    }

    fn poll_event(&mut self) -> Option<core::convert::Infallible> {
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_tick
    }

    fn handle_timeout(&mut self, now: Instant) {
        let Some(due) = self.next_tick.filter(|&t| t <= now) else {
            return;
        };
        self.tick(now);
        self.queue_transmits();
        let tick = self.config.tick;
        let mut next = due + tick;
        if next <= now {
            // More than a tick late: the missed ticks are gone, the clock restarts.
            let behind = now.duration_since(next).as_nanos() / tick.as_nanos() + 1;
            self.stats.ticks_skipped += u64::try_from(behind).unwrap_or(u64::MAX);
            next = now + tick;
        }
        self.next_tick = Some(next);
    }
}
