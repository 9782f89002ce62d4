//! The TURN client against a scripted server: responses are built by hand with
//! `crate::stun::Message`, time is a virtual `Instant`.
#![allow(clippy::field_reassign_with_default)] // as callers outside the crate must

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chorus_framing::SeededEntropy;
use proptest::prelude::*;

use super::*;
use crate::stun::{Key, Limits, PasswordAlgorithm};

pub(super) const SERVER: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)), 3478);
pub(super) const RELAYED: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)), 50_000);
pub(super) const MAPPED: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 5)), 40_000);
pub(super) const PEER: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7)), 9);

pub(super) fn config(transport: Transport) -> Config {
    Config::new(SERVER, transport, "alice", "secret")
}

pub(super) fn client(cfg: Config) -> Client {
    Client::new(cfg, Box::new(SeededEntropy::new(3))).unwrap()
}

pub(super) fn md5_key() -> Key {
    Key::long_term("alice", "example.org", "secret", PasswordAlgorithm::Md5)
}

pub(super) fn take(c: &mut Client) -> Bytes {
    c.poll_transmit().expect("a datagram").payload
}

pub(super) fn decode(bytes: &[u8]) -> Message<'_> {
    Message::decode(bytes, &Limits::default()).unwrap()
}

pub(super) fn has(msg: &Message<'_>, t: u16) -> bool {
    msg.attributes.iter().any(|a| a.attr_type() == t)
}

/// A response to `request` with `attrs`, integrity-protected when `key` is given.
pub(super) fn reply(
    request: &[u8],
    class: Class,
    attrs: &[Attribute<'_>],
    key: Option<&Key>,
) -> Vec<u8> {
    let req = decode(request);
    let mut m = Message::new(class, req.method, req.transaction_id);
    m.attributes.extend_from_slice(attrs);
    m.message_integrity = key.is_some();
    let mut out = BytesMut::new();
    m.encode(key, &mut out).unwrap();
    out.to_vec()
}

pub(super) fn error(request: &[u8], code: u16, extra: &[Attribute<'_>]) -> Vec<u8> {
    let mut attrs = vec![Attribute::ErrorCode { code, reason: "no" }];
    attrs.extend_from_slice(extra);
    reply(request, Class::Error, &attrs, None)
}

pub(super) fn challenge(request: &[u8], nonce: &str) -> Vec<u8> {
    error(
        request,
        401,
        &[Attribute::Realm("example.org"), Attribute::Nonce(nonce)],
    )
}

pub(super) fn events(c: &mut Client) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

pub(super) fn ok(c: &mut Client, now: Instant, request: &[u8], attrs: &[Attribute<'_>]) {
    let r = reply(request, Class::Success, attrs, Some(&md5_key()));
    c.handle_input(now, SERVER, &r).unwrap();
}

/// Runs the 401 dance and a successful Allocate; returns the client and the time.
pub(super) fn allocated(cfg: Config) -> (Client, Instant) {
    let t0 = Instant::now();
    let lifetime = cfg.lifetime.as_secs() as u32;
    let mut c = client(cfg);
    c.allocate(t0).unwrap();
    let first = take(&mut c);
    c.handle_input(t0, SERVER, &challenge(&first, "n1"))
        .unwrap();
    let second = take(&mut c);
    ok(
        &mut c,
        t0,
        &second,
        &[
            Attribute::XorRelayedAddress(RELAYED),
            Attribute::XorMappedAddress(MAPPED),
            Attribute::Lifetime(lifetime),
        ],
    );
    assert!(c.is_allocated());
    let _ = events(&mut c);
    (c, t0)
}

/// Creates and confirms a permission for PEER's IP.
pub(super) fn permitted(c: &mut Client, now: Instant) {
    c.create_permission(now, PEER.ip()).unwrap();
    let req = take(c);
    ok(c, now, &req, &[]);
    assert_eq!(events(c), [Event::PermissionCreated { ip: PEER.ip() }]);
}

#[test]
fn refreshes_at_three_quarters_of_the_lifetime_and_is_lost_when_a_refresh_fails() {
    let (mut c, t0) = allocated(config(Transport::Udp));
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(450)));
    // Early: nothing.
    c.handle_timeout(t0 + Duration::from_secs(449));
    assert!(c.poll_transmit().is_none());
    let t1 = t0 + Duration::from_secs(450);
    c.handle_timeout(t1);
    let req = take(&mut c);
    let m = decode(&req);
    assert_eq!(m.method, Method::REFRESH);
    assert!(m.attributes.contains(&Attribute::Lifetime(600)));
    Message::verify(&req, &md5_key()).unwrap();
    ok(&mut c, t1, &req, &[Attribute::Lifetime(300)]);
    assert_eq!(
        events(&mut c),
        [Event::Refreshed {
            lifetime: Duration::from_secs(300)
        }]
    );
    let t2 = t1 + Duration::from_secs(225);
    assert_eq!(c.poll_timeout(), Some(t2));
    c.handle_timeout(t2);
    // A hostile grant of u32::MAX seconds is believed only up to a day.
    let req = take(&mut c);
    ok(&mut c, t2, &req, &[Attribute::Lifetime(u32::MAX)]);
    assert_eq!(
        events(&mut c),
        [Event::Refreshed {
            lifetime: Duration::from_secs(86_400)
        }]
    );
    let t2 = t2 + Duration::from_secs(64_800);
    assert_eq!(c.poll_timeout(), Some(t2));
    c.handle_timeout(t2);
    let req = take(&mut c);
    c.handle_input(t2, SERVER, &error(&req, 437, &[])).unwrap();
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::Lost {
            code: Some(437),
            ..
        }]
    ));
    assert!(!c.is_allocated());
    assert_eq!(c.poll_timeout(), None);
    assert!(matches!(
        c.send(PEER, b"x"),
        Err(Error::Usage(UsageError::NotAllocated))
    ));
}

#[test]
fn an_unanswered_refresh_loses_the_allocation_before_it_expires() {
    let (mut c, t0) = allocated(config(Transport::Udp));
    let mut now = t0;
    let mut refreshes = 0;
    while let Some(t) = c.poll_timeout() {
        now = t;
        c.handle_timeout(now);
        while c.poll_transmit().is_some() {
            refreshes += 1;
        }
        assert!(now <= t0 + Duration::from_secs(600));
    }
    assert_eq!(refreshes, 7, "one Refresh and its six retransmissions");
    assert_eq!(now, t0 + Duration::from_millis(450_000 + 39_500));
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::Lost { code: None, .. }]
    ));
}

#[test]
fn send_needs_a_permission_and_uses_channel_data_only_once_confirmed() {
    for transport in [Transport::Udp, Transport::Tcp] {
        let (mut c, t0) = allocated(config(transport));
        assert!(matches!(
            c.send(PEER, b"hello"),
            Err(Error::Usage(UsageError::NoPermission))
        ));
        permitted(&mut c, t0);
        c.send(PEER, b"hello").unwrap();
        let ind = take(&mut c);
        let m = decode(&ind);
        assert_eq!((m.class, m.method), (Class::Indication, Method::SEND));
        assert!(m.attributes.contains(&Attribute::XorPeerAddress(PEER)));
        assert!(m.attributes.contains(&Attribute::Data(b"hello")));
        c.send(PEER, b"again").unwrap();
        assert_ne!(
            decode(&take(&mut c)).transaction_id,
            m.transaction_id,
            "fresh ids"
        );

        c.bind_channel(t0, PEER).unwrap();
        let bind = take(&mut c);
        c.send(PEER, b"hello").unwrap();
        assert_eq!(
            decode(&take(&mut c)).method,
            Method::SEND,
            "unconfirmed channel"
        );
        ok(&mut c, t0, &bind, &[]);
        c.send(PEER, b"hello").unwrap();
        let expected: &[u8] = match transport {
            Transport::Udp => b"\x40\x00\x00\x05hello",
            Transport::Tcp => b"\x40\x00\x00\x05hello\0\0\0",
        };
        assert_eq!(&take(&mut c)[..], expected);
    }
}

#[test]
fn the_transmit_and_event_queues_are_bounded() {
    let mut cfg = config(Transport::Udp);
    cfg.max_queued = 2;
    let (mut c, t0) = allocated(cfg);
    permitted(&mut c, t0);
    c.send(PEER, b"1").unwrap();
    c.send(PEER, b"2").unwrap();
    assert!(matches!(
        c.send(PEER, b"3"),
        Err(Error::Limit(Limit::Queue(2)))
    ));
    while c.poll_transmit().is_some() {}
    c.send(PEER, b"3").unwrap();
    let ind = data_indication(PEER, b"x");
    c.handle_input(t0, SERVER, &ind).unwrap();
    c.handle_input(t0, SERVER, &ind).unwrap();
    assert!(matches!(
        c.handle_input(t0, SERVER, &ind),
        Err(Error::Limit(Limit::Queue(2)))
    ));
    assert_eq!(events(&mut c).len(), 2);
}

pub(super) fn data_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut m = Message::new(Class::Indication, Method::DATA, TransactionId::new([5; 12]));
    m.attributes.push(Attribute::XorPeerAddress(peer));
    m.attributes.push(Attribute::Data(data));
    let mut out = BytesMut::new();
    m.encode(None, &mut out).unwrap();
    out.to_vec()
}

#[test]
fn receives_data_indications_and_channel_data_only_from_the_server() {
    let (mut c, t0) = allocated(config(Transport::Udp));
    let ind = data_indication(PEER, b"pong");
    // No permission for the peer yet: RFC 8656 §10.4 says discard.
    assert_eq!(
        c.handle_input(t0, SERVER, &ind),
        Err(Error::Protocol(Violation::UnexpectedPeer))
    );
    permitted(&mut c, t0);
    assert_eq!(
        c.handle_input(t0, PEER, &ind),
        Err(Error::Protocol(Violation::UnexpectedPeer))
    );
    c.handle_input(t0, SERVER, &ind).unwrap();
    assert_eq!(
        events(&mut c),
        [Event::Data {
            peer: PEER,
            data: Bytes::from_static(b"pong")
        }]
    );
    // A Data indication without DATA.
    let mut m = Message::new(Class::Indication, Method::DATA, TransactionId::new([5; 12]));
    m.attributes.push(Attribute::XorPeerAddress(PEER));
    let mut out = BytesMut::new();
    m.encode(None, &mut out).unwrap();
    assert_eq!(
        c.handle_input(t0, SERVER, &out),
        Err(Error::Protocol(Violation::MissingAttribute(types::DATA)))
    );

    assert_eq!(
        c.handle_input(t0, SERVER, b"\x40\x00\x00\x02hi"),
        Err(Error::Protocol(Violation::UnknownChannel(0x4000)))
    );
    c.bind_channel(t0, PEER).unwrap();
    let bind = take(&mut c);
    // RFC 8656 §12.6: ChannelData may arrive before the ChannelBind success.
    c.handle_input(t0, SERVER, b"\x40\x00\x00\x02hi\0\0")
        .unwrap();
    ok(&mut c, t0, &bind, &[]);
    c.handle_input(t0, SERVER, b"\x40\x00\x00\x03hey").unwrap();
    let got: Vec<Event> = events(&mut c)
        .into_iter()
        .filter(|e| matches!(e, Event::Data { .. }))
        .collect();
    assert_eq!(
        got,
        [
            Event::Data {
                peer: PEER,
                data: Bytes::from_static(b"hi")
            },
            Event::Data {
                peer: PEER,
                data: Bytes::from_static(b"hey")
            }
        ]
    );
    assert!(c.handle_input(t0, SERVER, b"\x40\x00\x00\x09hey").is_err());
    // Requests and unknown responses are rejected; nothing changes.
    let mut req = Message::new(
        Class::Request,
        Method::ALLOCATE,
        TransactionId::new([6; 12]),
    );
    req.attributes.push(Attribute::Lifetime(1));
    let mut out = BytesMut::new();
    req.encode(None, &mut out).unwrap();
    assert_eq!(
        c.handle_input(t0, SERVER, &out),
        Err(Error::Protocol(Violation::UnexpectedClass))
    );
    let stray = reply(&out, Class::Success, &[Attribute::Lifetime(0)], None);
    assert_eq!(
        c.handle_input(t0, SERVER, &stray),
        Err(Error::Protocol(Violation::UnknownTransaction))
    );
    assert!(c.is_allocated());
    assert_eq!(events(&mut c), []);
}

#[test]
fn close_sends_a_zero_lifetime_refresh_and_reports_closed() {
    let (mut c, t0) = allocated(config(Transport::Udp));
    permitted(&mut c, t0);
    c.close(t0).unwrap();
    let req = take(&mut c);
    let m = decode(&req);
    assert_eq!(m.method, Method::REFRESH);
    assert!(m.attributes.contains(&Attribute::Lifetime(0)));
    assert!(!c.has_permission(PEER.ip()));
    // A stale nonce is retried for the close too.
    c.handle_input(t0, SERVER, &error(&req, 438, &[Attribute::Nonce("n9")]))
        .unwrap();
    let retry = take(&mut c);
    ok(&mut c, t0, &retry, &[Attribute::Lifetime(0)]);
    assert_eq!(events(&mut c), [Event::Closed]);
    assert_eq!(c.poll_timeout(), None);
    c.close(t0).unwrap();
    assert_eq!(events(&mut c), [], "closed once");

    // 437 to the close: the allocation was already gone, which is closed too.
    let (mut c, t0) = allocated(config(Transport::Udp));
    c.close(t0).unwrap();
    let req = take(&mut c);
    c.handle_input(t0, SERVER, &error(&req, 437, &[])).unwrap();
    assert_eq!(events(&mut c), [Event::Closed]);

    // Closing before allocating reports at once.
    let mut c = client(config(Transport::Udp));
    c.close(t0).unwrap();
    assert_eq!(events(&mut c), [Event::Closed]);
}

#[test]
fn invalid_configurations_are_refused_and_the_password_never_prints() {
    let bad = |f: fn(&mut Config)| {
        let mut cfg = config(Transport::Udp);
        f(&mut cfg);
        Client::new(cfg, Box::new(SeededEntropy::new(0))).is_err()
    };
    assert!(bad(|c| c.lifetime = Duration::ZERO));
    assert!(bad(|c| c.max_permissions = 0));
    assert!(bad(|c| c.max_channels = 4097));
    assert!(bad(|c| c.max_queued = 0));
    assert!(bad(|c| c.max_auth_attempts = 1));
    assert!(bad(|c| c.permission_refresh = Duration::from_secs(300)));
    assert!(bad(|c| c.channel_refresh = Duration::from_secs(600)));
    assert!(bad(|c| c.username = "u".repeat(513)));
    assert!(bad(|c| c.stun.max_transactions = 0));
    assert!(!bad(|_| {}));
    let text = format!("{:?}", config(Transport::Udp));
    assert!(!text.contains("secret"), "{text}");
    let (c, _) = allocated(config(Transport::Udp));
    assert!(!format!("{c:?}").contains("secret"));
}

/// Cuts `stream` into chunks at `cuts` and runs them through a [`Deframer`].
pub(super) fn deframe(stream: &[u8], cuts: &[usize]) -> Result<Vec<Bytes>, crate::DecodeError> {
    let mut d = Deframer::new(&Limits::default());
    let mut out = Vec::new();
    let mut start = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.push(stream.len());
    points.sort_unstable();
    for end in points {
        let mut chunk = &stream[start.min(end)..end];
        start = end.max(start);
        while !chunk.is_empty() {
            let n = d.push(chunk);
            chunk = &chunk[n..];
            while let Some(m) = d.next_message()? {
                out.push(m);
            }
        }
    }
    assert_eq!(d.buffered(), 0);
    Ok(out)
}

#[test]
fn the_deframer_rejects_corrupt_streams_and_oversized_stun() {
    let mut d = Deframer::new(&Limits::default());
    d.push(b"\x80\x00\x00\x00");
    assert_eq!(d.next_message(), Err(crate::DecodeError::NotStun));
    d.clear();
    assert_eq!(d.buffered(), 0);
    d.push(b"\x01\x01\xff\xf0\x21\x12\xa4\x42");
    assert!(matches!(
        d.next_message(),
        Err(crate::DecodeError::TooLong { .. })
    ));
    // A 64 KiB ChannelData message fits in the buffer.
    let mut d = Deframer::new(&Limits::default());
    let big = vec![7u8; 65_535];
    let mut wire = BytesMut::new();
    ChannelData {
        channel: 0x4000,
        data: &big,
    }
    .encode(Transport::Tcp, &mut wire)
    .unwrap();
    wire.extend_from_slice(b"\x40\x01\x00\x00");
    assert_eq!(d.push(&wire), 65_540, "exactly one message fits");
    assert_eq!(d.next_message().unwrap().unwrap().len(), 65_540);
    assert_eq!(d.push(&wire[65_540..]), 4);
    assert_eq!(&d.next_message().unwrap().unwrap()[..], b"\x40\x01\x00\x00");
}

proptest! {
    #[test]
    fn random_chunking_of_a_tcp_stream_yields_the_same_messages(
        datas in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8),
        stun_every in 1usize..4,
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (i, data) in datas.iter().enumerate() {
            let mut out = BytesMut::new();
            if i % stun_every == 0 {
                let mut m = Message::new(Class::Indication, Method::DATA, TransactionId::new([i as u8; 12]));
                m.attributes.push(Attribute::XorPeerAddress(PEER));
                m.attributes.push(Attribute::Data(data));
                m.encode(None, &mut out).unwrap();
            } else {
                ChannelData { channel: 0x4000 + i as u16, data }.encode(Transport::Tcp, &mut out).unwrap();
            }
            stream.extend_from_slice(&out);
            expected.push(out.to_vec());
        }
        let got: Vec<Vec<u8>> = deframe(&stream, &cuts).unwrap().iter().map(|b| b.to_vec()).collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn arbitrary_server_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        super::fuzz::turn_client_input(&data);
    }

    #[test]
    fn arbitrary_bytes_into_an_allocated_client_never_change_its_allocation(
        data in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let (mut c, t0) = allocated(config(Transport::Udp));
        let _ = c.handle_input(t0, SERVER, &data);
        let _ = events(&mut c);
        prop_assert!(c.is_allocated());
        prop_assert_eq!(c.relayed(), [RELAYED]);
    }
}
