//! The server's data path (RFC 8656 §10, §12): Send and Data indications and
//! ChannelData between clients and peers, through the allocation that permits it.
//! It runs once per relayed datagram, so it parses and encodes in place, without
//! building a [`Message`](crate::stun::Message).

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BufMut;
use chorus_framing::{Reader, Transmit};

use super::{FiveTuple, Server};
use crate::client::Transport;
use crate::error::{DecodeError, Error, UnknownAttributes, UsageError, Violation};
use crate::stun::{Attribute, HEADER_LEN, Header, MAGIC_COOKIE, TransactionId, types};
use crate::turn::channel_data::{ChannelData, is_valid_channel};

/// RFC 8489 §5 message type of a Data indication (method 0x007, class 0b01).
const DATA_INDICATION: u16 = 0x0017;

/// The padding that brings `len` to a multiple of four (RFC 8489 §14).
const fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

impl Server {
    /// RFC 8656 §10.3 and §12.5: peer data to the client, if permitted.
    pub(super) fn peer_data(
        &mut self,
        now: Instant,
        slot: usize,
        relayed: SocketAddr,
        peer: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        self.queue_full()?;
        let Some(Some(a)) = self.allocs.get(slot) else {
            return Err(Violation::NoAllocation.into());
        };
        if !a.is_live(now) || a.relay_for(peer.ip()) != Some(relayed) {
            return Err(Violation::NoAllocation.into());
        }
        if !a.permitted(now, peer.ip()) {
            return Err(Violation::NoPermission.into());
        }
        let (client, server, transport) = a.tuple();
        let channel = a.channel_for(now, peer);
        let buf = &mut self.buf;
        if let Some(channel) = channel {
            // RFC 8656 §12.4 layout; padded over TCP (§12.5). Encoded here rather than
            // with `ChannelData` so that RFC 5766 channel numbers work too.
            let len =
                u16::try_from(bytes.len()).map_err(|_| UsageError::ValueTooLong(types::DATA))?;
            let padding = if transport == Transport::Tcp {
                pad4(bytes.len())
            } else {
                0
            };
            buf.reserve(4 + bytes.len() + padding);
            buf.put_u16(channel);
            buf.put_u16(len);
            buf.put_slice(bytes);
            buf.put_bytes(0, padding);
        } else {
            // RFC 8656 §10.3: XOR-PEER-ADDRESS and DATA; no integrity, no FINGERPRINT.
            let peer_attr = Attribute::XorPeerAddress(peer);
            let plen = peer_attr.value_len();
            let body = 4 + plen + 4 + bytes.len() + pad4(bytes.len());
            let len = u16::try_from(body).map_err(|_| UsageError::ValueTooLong(types::DATA))?;
            self.tid_counter = self.tid_counter.wrapping_add(1);
            let mut id = [0u8; 12];
            let (p, c) = id.split_at_mut(4);
            p.copy_from_slice(&self.tid_prefix);
            c.copy_from_slice(&self.tid_counter.to_be_bytes());
            let tid = TransactionId::new(id);
            buf.reserve(HEADER_LEN + body);
            buf.put_u16(DATA_INDICATION);
            buf.put_u16(len);
            buf.put_u32(MAGIC_COOKIE);
            buf.put_slice(&tid.0);
            buf.put_u16(types::XOR_PEER_ADDRESS);
            buf.put_u16(plen as u16);
            peer_attr.write_value(&tid, buf);
            buf.put_u16(types::DATA);
            buf.put_u16(bytes.len() as u16);
            buf.put_slice(bytes);
            buf.put_bytes(0, pad4(bytes.len()));
        }
        let payload = self.buf.split().freeze();
        self.push(transport, Transmit::new(client, payload).with_src(server))?;
        self.stats.to_clients += 1;
        Ok(())
    }

    /// RFC 8656 §12.6: ChannelData from the client goes to the channel's peer.
    pub(super) fn client_channel_data(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let cd = self.decode_channel_data(bytes, tuple.2)?;
        let a = self
            .alloc_by_tuple(&tuple)
            .filter(|a| a.is_live(now))
            .ok_or(Violation::NoAllocation)?;
        let peer = a
            .channel_peer(now, cd.channel)
            .ok_or(Violation::UnboundChannel)?;
        if !a.permitted(now, peer.ip()) {
            return Err(Violation::NoPermission.into());
        }
        let relayed = a.relay_for(peer.ip()).ok_or(Violation::NoAllocation)?;
        self.relay_to_peer(relayed, peer, cd.data)
    }

    pub(super) fn channel_ok(&self, n: u16) -> bool {
        if self.config.rfc5766_channels {
            (0x4000..=0x7fff).contains(&n)
        } else {
            is_valid_channel(n)
        }
    }

    /// RFC 8656 §12.4-§12.5: header, data, and over TCP the padding (the driver cut
    /// the frame with it). Trailing bytes of a UDP datagram are ignored.
    fn decode_channel_data<'b>(
        &self,
        bytes: &'b [u8],
        transport: Transport,
    ) -> Result<ChannelData<'b>, DecodeError> {
        let mut r = Reader::new(bytes);
        let channel = r.u16()?;
        let len = usize::from(r.u16()?);
        let data = r.take(len)?;
        if transport == Transport::Tcp {
            r.skip(pad4(len))?;
        }
        if !self.channel_ok(channel) {
            return Err(DecodeError::NotStun);
        }
        Ok(ChannelData { channel, data })
    }

    fn relay_to_peer(
        &mut self,
        relayed: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
    ) -> Result<(), Error> {
        self.buf.extend_from_slice(data);
        let payload = self.buf.split().freeze();
        self.push(
            Transport::Udp,
            Transmit::new(peer, payload).with_src(relayed),
        )?;
        self.stats.to_peers += 1;
        Ok(())
    }

    /// RFC 8656 §10.2: a Send indication's DATA goes to its XOR-PEER-ADDRESS, if
    /// permitted. Parsed without allocating: it is the per-packet path.
    pub(super) fn send_indication(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        header: &Header,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let tid = header.transaction_id;
        let mut r = Reader::new(bytes);
        r.skip(HEADER_LEN).map_err(DecodeError::from)?;
        let (mut peer, mut data) = (None, None);
        while !r.is_empty() {
            let t = r.u16().map_err(DecodeError::from)?;
            let len = usize::from(r.u16().map_err(DecodeError::from)?);
            let value = r.take(len).map_err(DecodeError::from)?;
            r.skip(pad4(len)).map_err(DecodeError::from)?;
            if matches!(
                t,
                types::MESSAGE_INTEGRITY | types::MESSAGE_INTEGRITY_SHA256 | types::FINGERPRINT
            ) {
                break;
            }
            match Attribute::decode(t, value, &tid)? {
                Some(Attribute::XorPeerAddress(a)) => peer = peer.or(Some(a)),
                Some(Attribute::Data(d)) => data = data.or(Some(d)),
                Some(_) => {}
                // RFC 8489 §6.3.2: an indication with an unknown comprehension-required
                // attribute is discarded.
                None => {
                    let mut unknown = UnknownAttributes::new();
                    unknown.push(t);
                    return Err(DecodeError::UnknownRequiredAttributes(unknown).into());
                }
            }
        }
        let (Some(peer), Some(data)) = (peer, data) else {
            return Err(Violation::MissingAttribute(types::XOR_PEER_ADDRESS).into());
        };
        let a = self
            .alloc_by_tuple(&tuple)
            .filter(|a| a.is_live(now))
            .ok_or(Violation::NoAllocation)?;
        if !a.permitted(now, peer.ip()) {
            return Err(Violation::NoPermission.into());
        }
        let relayed = a.relay_for(peer.ip()).ok_or(Violation::NoAllocation)?;
        self.relay_to_peer(relayed, peer, data)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::*;
    use super::pad4;

    #[test]
    fn padding_rounds_up_to_four_bytes() {
        let padded: Vec<usize> = (0..9).map(|n| n + pad4(n)).collect();
        assert_eq!(padded, [0, 4, 4, 4, 4, 8, 8, 8, 8]);
    }

    #[test]
    fn send_indication_reaches_the_peer_from_the_relayed_address_only_with_permission() {
        let mut h = H::new(config());
        let relay = h.relayed();
        let w = send_indication(peer(), b"hello");
        assert_eq!(h.send(&w), Err(Violation::NoPermission.into()));
        assert!(h.out().is_empty());
        h.permit(peer());
        h.send(&w).unwrap();
        let out = h.out();
        assert_eq!(out.len(), 1);
        let (transport, t) = &out[0];
        assert_eq!(*transport, Transport::Udp);
        assert_eq!(
            (t.src, t.dst, &t.payload[..]),
            (Some(relay), peer(), &b"hello"[..])
        );
        // A Send without DATA, or from a 5-tuple without allocation, is dropped.
        let mut m = Message::new(Class::Indication, Method::SEND, TransactionId::new([1; 12]));
        m.attributes.push(Attribute::XorPeerAddress(peer()));
        let mut bare = BytesMut::new();
        m.encode(None, &mut bare).unwrap();
        assert!(h.send(&bare).is_err());
        h.from = "203.0.113.9:1".parse().unwrap();
        assert_eq!(h.send(&w), Err(Violation::NoAllocation.into()));
        assert_eq!(h.s.stats().to_peers, 1);
    }

    #[test]
    fn peer_data_comes_back_as_a_data_indication() {
        let mut h = H::new(config());
        let relay = h.relayed();
        h.permit(peer());
        h.s.handle_peer_input(h.now, relay, peer(), b"pong!")
            .unwrap();
        let out = h.out();
        let (_, t) = &out[0];
        assert_eq!((t.src, t.dst), (Some(listen()), client()));
        let m = Message::decode(&t.payload, &Limits::default()).unwrap();
        assert_eq!((m.class, m.method), (Class::Indication, Method::DATA));
        assert_eq!(
            m.attributes,
            vec![Attribute::XorPeerAddress(peer()), Attribute::Data(b"pong!")]
        );
        // From a peer without permission, or to an unknown relay: dropped.
        let stranger: SocketAddr = "198.51.100.200:1".parse().unwrap();
        assert!(h.s.handle_peer_input(h.now, relay, stranger, b"x").is_err());
        assert!(
            h.s.handle_peer_input(h.now, "192.0.2.1:1".parse().unwrap(), peer(), b"x")
                .is_err()
        );
        assert!(h.out().is_empty());
    }

    #[test]
    fn channel_data_flows_both_ways_once_bound_and_is_padded_over_tcp() {
        for transport in [Transport::Udp, Transport::Tcp] {
            let mut h = H::new(config());
            h.transport = transport;
            let relay = h.relayed();
            let r = h.request(
                Method::CHANNEL_BIND,
                vec![
                    Attribute::ChannelNumber(0x4001),
                    Attribute::XorPeerAddress(peer()),
                ],
            );
            assert_eq!(code(&r), None);
            // The bind installed a permission: peer data arrives as ChannelData.
            h.s.handle_input(h.now, relay, peer(), Transport::Udp, b"abcde")
                .unwrap();
            let out = h.out();
            let (t_transport, t) = &out[0];
            assert_eq!(*t_transport, transport);
            let expected: &[u8] = match transport {
                Transport::Udp => b"\x40\x01\x00\x05abcde",
                Transport::Tcp => b"\x40\x01\x00\x05abcde\0\0\0",
            };
            assert_eq!(&t.payload[..], expected);
            // ChannelData from the client goes to the peer.
            h.send(expected).unwrap();
            let out = h.out();
            assert_eq!(out[0].1.dst, peer());
            assert_eq!(&out[0].1.payload[..], b"abcde");
            // An unbound channel is dropped.
            assert_eq!(
                h.send(b"\x40\x02\x00\x01z\0\0\0"),
                Err(Violation::UnboundChannel.into())
            );
        }
    }

    #[test]
    fn rfc5766_channel_numbers_work_only_when_enabled() {
        for wide in [false, true] {
            let mut cfg = config();
            cfg.rfc5766_channels = wide;
            let mut h = H::new(cfg);
            let relay = h.relayed();
            let r = h.request(
                Method::CHANNEL_BIND,
                vec![
                    Attribute::ChannelNumber(0x7623),
                    Attribute::XorPeerAddress(peer()),
                ],
            );
            assert_eq!(code(&r), if wide { None } else { Some(400) });
            if wide {
                h.s.handle_input(h.now, relay, peer(), Transport::Udp, b"ab")
                    .unwrap();
                assert_eq!(&h.out()[0].1.payload[..], b"\x76\x23\x00\x02ab");
                h.send(b"\x76\x23\x00\x02ab").unwrap();
                assert_eq!(&h.out()[0].1.payload[..], b"ab");
            } else {
                assert_eq!(
                    h.send(b"\x76\x23\x00\x02ab"),
                    Err(DecodeError::NotStun.into())
                );
            }
        }
    }
}
