//! The TURN client against a scripted server: responses are built by hand with
//! `crate::stun::Message`, time is a virtual `Instant`.
#![allow(clippy::field_reassign_with_default)] // as callers outside the crate must

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chorus_framing::SeededEntropy;
use proptest::prelude::*;

use super::*;
use crate::stun::{AddressFamily, AlgorithmEntry, AlgorithmList, Key, Limits, PasswordAlgorithm};

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)), 3478);
const RELAYED: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)), 50_000);
const MAPPED: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 5)), 40_000);
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7)), 9);

fn config(transport: Transport) -> Config {
    Config::new(SERVER, transport, "alice", "secret")
}

fn client(cfg: Config) -> Client {
    Client::new(cfg, Box::new(SeededEntropy::new(3))).unwrap()
}

fn md5_key() -> Key {
    Key::long_term("alice", "example.org", "secret", PasswordAlgorithm::Md5)
}

fn take(c: &mut Client) -> Bytes {
    c.poll_transmit().expect("a datagram").payload
}

fn decode(bytes: &[u8]) -> Message<'_> {
    Message::decode(bytes, &Limits::default()).unwrap()
}

fn has(msg: &Message<'_>, t: u16) -> bool {
    msg.attributes.iter().any(|a| a.attr_type() == t)
}

/// A response to `request` with `attrs`, integrity-protected when `key` is given.
fn reply(request: &[u8], class: Class, attrs: &[Attribute<'_>], key: Option<&Key>) -> Vec<u8> {
    let req = decode(request);
    let mut m = Message::new(class, req.method, req.transaction_id);
    m.attributes.extend_from_slice(attrs);
    m.message_integrity = key.is_some();
    let mut out = BytesMut::new();
    m.encode(key, &mut out).unwrap();
    out.to_vec()
}

fn error(request: &[u8], code: u16, extra: &[Attribute<'_>]) -> Vec<u8> {
    let mut attrs = vec![Attribute::ErrorCode { code, reason: "no" }];
    attrs.extend_from_slice(extra);
    reply(request, Class::Error, &attrs, None)
}

fn challenge(request: &[u8], nonce: &str) -> Vec<u8> {
    error(
        request,
        401,
        &[Attribute::Realm("example.org"), Attribute::Nonce(nonce)],
    )
}

fn events(c: &mut Client) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn ok(c: &mut Client, now: Instant, request: &[u8], attrs: &[Attribute<'_>]) {
    let r = reply(request, Class::Success, attrs, Some(&md5_key()));
    c.handle_input(now, SERVER, &r).unwrap();
}

/// Runs the 401 dance and a successful Allocate; returns the client and the time.
fn allocated(cfg: Config) -> (Client, Instant) {
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
fn permitted(c: &mut Client, now: Instant) {
    c.create_permission(now, PEER.ip()).unwrap();
    let req = take(c);
    ok(c, now, &req, &[]);
    assert_eq!(events(c), [Event::PermissionCreated { ip: PEER.ip() }]);
}

#[test]
fn allocate_retries_with_credentials_after_401_and_reports_the_relayed_address() {
    let t0 = Instant::now();
    let mut c = client(config(Transport::Udp));
    c.allocate(t0).unwrap();
    let first = take(&mut c);
    let m = decode(&first);
    // RFC 8656 §7.1 / RFC 8489 §9.2.3: UDP transport, our lifetime, no credentials yet.
    assert_eq!(m.method, Method::ALLOCATE);
    assert!(m.attributes.contains(&Attribute::RequestedTransport(17)));
    assert!(m.attributes.contains(&Attribute::Lifetime(600)));
    assert!(!has(&m, types::USERNAME) && !m.message_integrity);

    assert_eq!(c.pending_requests(), 1);
    c.handle_input(t0, SERVER, &challenge(&first, "n1"))
        .unwrap();
    assert_eq!(events(&mut c), []);
    assert_eq!(c.pending_requests(), 1, "the retry replaced the request");
    let second = take(&mut c);
    let m = decode(&second);
    assert_ne!(m.transaction_id, decode(&first).transaction_id);
    assert!(m.attributes.contains(&Attribute::Username("alice")));
    assert!(m.attributes.contains(&Attribute::Realm("example.org")));
    assert!(m.attributes.contains(&Attribute::Nonce("n1")));
    assert!(m.message_integrity && !m.message_integrity_sha256);
    Message::verify(&second, &md5_key()).unwrap();

    // A success without valid integrity is not accepted (RFC 8489 §9.2.5).
    let forged = reply(
        &second,
        Class::Success,
        &[
            Attribute::XorRelayedAddress(RELAYED),
            Attribute::Lifetime(600),
        ],
        None,
    );
    assert!(c.handle_input(t0, SERVER, &forged).is_err());
    assert!(!c.is_allocated());

    ok(
        &mut c,
        t0,
        &second,
        &[
            Attribute::XorRelayedAddress(RELAYED),
            Attribute::XorMappedAddress(MAPPED),
            Attribute::Lifetime(600),
        ],
    );
    assert_eq!(
        events(&mut c),
        [Event::Allocated {
            relayed: vec![RELAYED],
            mapped: Some(MAPPED),
            lifetime: Duration::from_secs(600),
            reservation_token: None,
        }]
    );
    assert_eq!(c.relayed(), [RELAYED]);
    assert_eq!(c.mapped(), Some(MAPPED));
    assert_eq!(c.pending_requests(), 0);
    assert!(c.allocate(t0).is_err(), "only once");
}

#[test]
fn a_second_401_with_the_same_nonce_means_wrong_credentials() {
    let t0 = Instant::now();
    let mut c = client(config(Transport::Udp));
    c.allocate(t0).unwrap();
    let first = take(&mut c);
    c.handle_input(t0, SERVER, &challenge(&first, "n1"))
        .unwrap();
    let second = take(&mut c);
    c.handle_input(t0, SERVER, &challenge(&second, "n1"))
        .unwrap();
    assert!(c.poll_transmit().is_none(), "no third attempt");
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::AllocationFailed {
            code: Some(401),
            ..
        }]
    ));
    assert!(c.create_permission(t0, PEER.ip()).is_err());
}

#[test]
fn stale_nonce_is_retried_with_the_new_nonce_within_the_attempt_bound() {
    let (mut c, t0) = allocated(config(Transport::Udp));
    c.create_permission(t0, PEER.ip()).unwrap();
    let req = take(&mut c);
    let m = decode(&req);
    assert_eq!(m.method, Method::CREATE_PERMISSION);
    assert!(
        m.attributes
            .contains(&Attribute::XorPeerAddress(SocketAddr::new(PEER.ip(), 0)))
    );
    c.handle_input(t0, SERVER, &error(&req, 438, &[Attribute::Nonce("n2")]))
        .unwrap();
    let retry = take(&mut c);
    let m = decode(&retry);
    assert!(m.attributes.contains(&Attribute::Nonce("n2")));
    assert!(m.attributes.contains(&Attribute::Realm("example.org")));
    Message::verify(&retry, &md5_key()).unwrap();
    c.handle_input(t0, SERVER, &error(&retry, 438, &[Attribute::Nonce("n3")]))
        .unwrap();
    let third = take(&mut c);
    // The third attempt is the last one (max_auth_attempts = 3).
    c.handle_input(t0, SERVER, &error(&third, 438, &[Attribute::Nonce("n4")]))
        .unwrap();
    assert!(c.poll_transmit().is_none());
    assert_eq!(
        events(&mut c),
        [Event::PermissionFailed {
            ip: PEER.ip(),
            code: Some(438)
        }]
    );
    assert!(!c.has_permission(PEER.ip()));
    // The new nonce stays in use.
    c.create_permission(t0, PEER.ip()).unwrap();
    assert!(
        decode(&take(&mut c))
            .attributes
            .contains(&Attribute::Nonce("n4"))
    );
}

#[test]
fn sha256_credentials_and_integrity_are_used_when_the_server_offers_them() {
    let t0 = Instant::now();
    let mut c = client(config(Transport::Udp));
    c.allocate(t0).unwrap();
    let first = take(&mut c);
    let mut list = Vec::new();
    AlgorithmList::write(
        &[
            AlgorithmEntry {
                algorithm: 0x0002,
                parameters: &[],
            },
            AlgorithmEntry {
                algorithm: 0x0001,
                parameters: &[],
            },
        ],
        &mut list,
    );
    let offered = AlgorithmList::from_wire(&list).unwrap();
    let challenge = error(
        &first,
        401,
        &[
            Attribute::Realm("example.org"),
            Attribute::Nonce("obMatJos2AAACn1"),
            Attribute::PasswordAlgorithms(offered),
        ],
    );
    c.handle_input(t0, SERVER, &challenge).unwrap();
    let second = take(&mut c);
    let m = decode(&second);
    // RFC 8489 §9.2.4: the list echoed, the first supported algorithm chosen.
    assert!(
        m.attributes
            .contains(&Attribute::PasswordAlgorithms(offered))
    );
    assert!(
        m.attributes
            .contains(&Attribute::PasswordAlgorithm(AlgorithmEntry {
                algorithm: 0x0002,
                parameters: &[]
            }))
    );
    assert!(m.message_integrity_sha256 && !m.message_integrity);
    let sha = Key::long_term("alice", "example.org", "secret", PasswordAlgorithm::Sha256);
    Message::verify(&second, &sha).unwrap();
    assert!(Message::verify(&second, &md5_key()).is_err());

    // A list with no algorithm we know cannot be answered.
    let mut c = client(config(Transport::Udp));
    c.allocate(t0).unwrap();
    let first = take(&mut c);
    let mut list = Vec::new();
    AlgorithmList::write(
        &[AlgorithmEntry {
            algorithm: 0x0077,
            parameters: &[],
        }],
        &mut list,
    );
    let challenge = error(
        &first,
        401,
        &[
            Attribute::Realm("example.org"),
            Attribute::Nonce("n"),
            Attribute::PasswordAlgorithms(AlgorithmList::from_wire(&list).unwrap()),
        ],
    );
    c.handle_input(t0, SERVER, &challenge).unwrap();
    assert!(c.poll_transmit().is_none());
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::AllocationFailed {
            code: Some(401),
            ..
        }]
    ));
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
fn permissions_and_channels_are_refreshed_before_they_expire() {
    // A long allocation, so that its own refresh stays out of the way.
    let mut cfg = config(Transport::Udp);
    cfg.lifetime = Duration::from_secs(3600);
    let (mut c, t0) = allocated(cfg);
    permitted(&mut c, t0);
    let t1 = t0 + Duration::from_secs(240);
    assert_eq!(c.poll_timeout(), Some(t1));
    c.handle_timeout(t1);
    let req = take(&mut c);
    assert_eq!(decode(&req).method, Method::CREATE_PERMISSION);
    ok(&mut c, t1, &req, &[]);
    assert_eq!(events(&mut c), [], "a refresh is silent");

    let channel = c.bind_channel(t1, PEER).unwrap();
    assert_eq!(channel, 0x4000);
    assert_eq!(c.bind_channel(t1, PEER).unwrap(), channel, "idempotent");
    let req = take(&mut c);
    let m = decode(&req);
    assert_eq!(m.method, Method::CHANNEL_BIND);
    assert!(m.attributes.contains(&Attribute::ChannelNumber(0x4000)));
    assert!(m.attributes.contains(&Attribute::XorPeerAddress(PEER)));
    assert!(c.poll_transmit().is_none(), "one request");
    ok(&mut c, t1, &req, &[]);
    assert_eq!(
        events(&mut c),
        [Event::ChannelBound {
            peer: PEER,
            channel: 0x4000
        }]
    );
    assert_eq!(c.channel(PEER), Some((0x4000, true)));

    // Permission refresh at t1 + 240 s; channel refresh at t1 + 480 s.
    let t2 = t1 + Duration::from_secs(240);
    c.handle_timeout(t2);
    let req = take(&mut c);
    assert_eq!(decode(&req).method, Method::CREATE_PERMISSION);
    ok(&mut c, t2, &req, &[]);
    let t3 = t1 + Duration::from_secs(480);
    c.handle_timeout(t3);
    // The permission is due again at the same moment: both go out.
    let mut due: Vec<Bytes> = std::iter::from_fn(|| c.poll_transmit().map(|t| t.payload)).collect();
    assert_eq!(due.len(), 2);
    due.sort_by_key(|b| decode(b).method.number());
    let req = due.pop().unwrap();
    let m = decode(&req);
    assert_eq!(m.method, Method::CHANNEL_BIND);
    assert!(m.attributes.contains(&Attribute::ChannelNumber(0x4000)));
    assert_eq!(decode(&due[0]).method, Method::CREATE_PERMISSION);
    // A failed channel refresh removes the channel; data falls back to Send.
    c.handle_input(t3, SERVER, &error(&req, 400, &[])).unwrap();
    assert_eq!(
        events(&mut c),
        [Event::ChannelFailed {
            peer: PEER,
            channel: 0x4000,
            code: Some(400)
        }]
    );
    assert_eq!(c.channel(PEER), None);
    assert!(c.has_permission(PEER.ip()));

    assert!(c.remove_permission(PEER.ip()));
    assert!(!c.has_permission(PEER.ip()));
}

#[test]
fn channel_numbers_are_distinct_bounded_and_freed_on_failure() {
    let mut cfg = config(Transport::Udp);
    cfg.max_channels = 2;
    let (mut c, t0) = allocated(cfg);
    let a: SocketAddr = "198.51.100.1:1".parse().unwrap();
    let b: SocketAddr = "198.51.100.1:2".parse().unwrap();
    let d: SocketAddr = "198.51.100.1:3".parse().unwrap();
    assert_eq!(c.bind_channel(t0, a).unwrap(), 0x4000);
    let ra = take(&mut c);
    assert_eq!(c.bind_channel(t0, b).unwrap(), 0x4001);
    let _rb = take(&mut c);
    assert!(matches!(
        c.bind_channel(t0, d),
        Err(Error::Limit(Limit::Channels(2)))
    ));
    c.handle_input(t0, SERVER, &error(&ra, 400, &[])).unwrap();
    assert_eq!(
        c.bind_channel(t0, d).unwrap(),
        0x4000,
        "the number is free again"
    );
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

fn data_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
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
fn allocate_errors_bad_successes_and_timeouts_fail_cleanly() {
    let t0 = Instant::now();
    let mut c = client(config(Transport::Udp));
    c.allocate(t0).unwrap();
    let first = take(&mut c);
    c.handle_input(t0, SERVER, &challenge(&first, "n1"))
        .unwrap();
    let second = take(&mut c);
    c.handle_input(t0, SERVER, &error(&second, 486, &[]))
        .unwrap();
    assert_eq!(
        events(&mut c),
        [Event::AllocationFailed {
            code: Some(486),
            reason: "no".to_owned()
        }]
    );

    // A success without XOR-RELAYED-ADDRESS (no auth: the server skipped the 401).
    let mut c = client(config(Transport::Udp));
    c.allocate(t0).unwrap();
    let first = take(&mut c);
    let r = reply(&first, Class::Success, &[Attribute::Lifetime(600)], None);
    c.handle_input(t0, SERVER, &r).unwrap();
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::AllocationFailed { code: None, .. }]
    ));

    // A 401 without NONCE cannot be answered.
    let mut c = client(config(Transport::Udp));
    c.allocate(t0).unwrap();
    let first = take(&mut c);
    c.handle_input(t0, SERVER, &error(&first, 401, &[Attribute::Realm("r")]))
        .unwrap();
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::AllocationFailed {
            code: Some(401),
            ..
        }]
    ));

    // No answer at all: over TCP a single request and 39.5 s.
    let mut c = client(config(Transport::Tcp));
    c.allocate(t0).unwrap();
    let _ = take(&mut c);
    let deadline = c.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + Duration::from_millis(39_500));
    c.handle_timeout(deadline);
    assert!(c.poll_transmit().is_none());
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::AllocationFailed { code: None, .. }]
    ));
}

#[test]
fn even_port_reservation_token_and_families_are_requested_as_configured() {
    let t0 = Instant::now();
    let mut cfg = config(Transport::Udp);
    cfg.even_port = Some(true);
    cfg.family = Family::Dual;
    cfg.software = Some("chorus".to_owned());
    let mut c = client(cfg);
    c.allocate(t0).unwrap();
    let first = take(&mut c);
    let m = decode(&first);
    assert!(m.attributes.contains(&Attribute::EvenPort(true)));
    assert!(
        m.attributes
            .contains(&Attribute::AdditionalAddressFamily(AddressFamily::V6))
    );
    assert!(m.attributes.contains(&Attribute::Software("chorus")));
    let v6: SocketAddr = "[2001:db8::1]:50000".parse().unwrap();
    let r = reply(
        &first,
        Class::Success,
        &[
            Attribute::XorRelayedAddress(RELAYED),
            Attribute::XorRelayedAddress(v6),
            Attribute::Lifetime(600),
            Attribute::ReservationToken([9; 8]),
        ],
        None,
    );
    c.handle_input(t0, SERVER, &r).unwrap();
    assert_eq!(
        events(&mut c),
        [Event::Allocated {
            relayed: vec![RELAYED, v6],
            mapped: None,
            lifetime: Duration::from_secs(600),
            reservation_token: Some([9; 8]),
        }]
    );

    let mut cfg = config(Transport::Udp);
    cfg.reservation_token = Some([9; 8]);
    let mut c = client(cfg.clone());
    c.allocate(t0).unwrap();
    let req = take(&mut c);
    let m = decode(&req);
    assert!(m.attributes.contains(&Attribute::ReservationToken([9; 8])));
    assert!(!has(&m, types::EVEN_PORT));
    cfg.even_port = Some(false);
    assert!(Client::new(cfg, Box::new(SeededEntropy::new(1))).is_err());

    let mut cfg = config(Transport::Udp);
    cfg.family = Family::V6;
    let mut c = client(cfg);
    c.allocate(t0).unwrap();
    let req = take(&mut c);
    let m = decode(&req);
    assert!(
        m.attributes
            .contains(&Attribute::RequestedAddressFamily(AddressFamily::V6))
    );
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

#[test]
fn permission_and_channel_tables_are_bounded() {
    let mut cfg = config(Transport::Udp);
    cfg.max_permissions = 1;
    let (mut c, t0) = allocated(cfg);
    c.create_permission(t0, PEER.ip()).unwrap();
    c.create_permission(t0, PEER.ip()).unwrap();
    assert!(matches!(
        c.create_permission(t0, "198.51.100.8".parse().unwrap()),
        Err(Error::Limit(Limit::Permissions(1)))
    ));
    assert!(matches!(
        c.bind_channel(t0, "198.51.100.8:1".parse().unwrap()),
        Err(Error::Limit(Limit::Permissions(1)))
    ));
    // A channel to a peer whose IP is already permitted needs no new entry.
    c.bind_channel(t0, PEER).unwrap();
}

/// Cuts `stream` into chunks at `cuts` and runs them through a [`Deframer`].
fn deframe(stream: &[u8], cuts: &[usize]) -> Result<Vec<Bytes>, crate::DecodeError> {
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

#[test]
fn a_stripped_password_algorithms_offer_is_not_retried() {
    // RFC 8489 §9.2.5: the nonce says the server offered PASSWORD-ALGORITHMS, the 401
    // carries none: a man in the middle removed it to force MD5. No retry.
    let t0 = Instant::now();
    let mut c = client(config(Transport::Udp));
    c.allocate(t0).unwrap();
    let first = take(&mut c);
    let nonce = crate::stun::SecurityFeatures {
        password_algorithms: true,
        username_anonymity: false,
    }
    .nonce_prefix()
        + "xyz";
    c.handle_input(t0, SERVER, &challenge(&first, &nonce))
        .unwrap();
    assert!(c.poll_transmit().is_none(), "no downgraded retry");
    assert!(matches!(
        events(&mut c).as_slice(),
        [Event::AllocationFailed {
            code: Some(401),
            ..
        }]
    ));
    // The same cookie without the bit is an ordinary MD5 challenge.
    let mut c = client(config(Transport::Udp));
    c.allocate(t0).unwrap();
    let first = take(&mut c);
    let plain = crate::stun::SecurityFeatures::default().nonce_prefix() + "xyz";
    c.handle_input(t0, SERVER, &challenge(&first, &plain))
        .unwrap();
    assert!(c.poll_transmit().is_some(), "retried with credentials");
}
