// Tests configure the way callers outside the crate must (`#[non_exhaustive]`).
#![allow(clippy::field_reassign_with_default)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus_framing::Transmit;

use super::*;
use crate::stun::{Key, TransactionId};

const P: &str = "192.0.2.1:3478";
const CLIENT: &str = "203.0.113.7:50000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn rfc5780() -> Server {
    let mut c = ServerConfig::default();
    c.primary = addr(P);
    c.alternate_ip = Some("192.0.2.2".parse().unwrap());
    c.alternate_port = Some(3479);
    Server::new(c).unwrap()
}

fn plain() -> Server {
    let mut c = ServerConfig::default();
    c.primary = addr(P);
    Server::new(c).unwrap()
}

fn request(attrs: &[Attribute<'_>], fingerprint: bool) -> Vec<u8> {
    let mut m = Message::new(Class::Request, Method::BINDING, TransactionId::new([5; 12]));
    m.attributes.extend_from_slice(attrs);
    m.fingerprint = fingerprint;
    let mut out = BytesMut::new();
    m.encode(None, &mut out).unwrap();
    out.to_vec()
}

fn ask(s: &mut Server, local: &str, req: &[u8]) -> Transmit {
    s.handle_input(
        Instant::now(),
        addr(local),
        addr(CLIENT),
        Transport::Udp,
        req,
    )
    .unwrap();
    let t = s.poll_transmit().expect("a response");
    assert!(s.poll_transmit().is_none());
    t
}

#[test]
fn binding_response_carries_the_source_as_xor_mapped_address_and_is_small() {
    let mut s = plain();
    let req = request(&[], false);
    let t = ask(&mut s, P, &req);
    assert_eq!((t.src, t.dst), (Some(addr(P)), addr(CLIENT)));
    let m = Message::decode(&t.payload, &Limits::default()).unwrap();
    assert_eq!(m.class, Class::Success);
    assert_eq!(m.transaction_id, TransactionId::new([5; 12]));
    assert_eq!(
        m.attributes,
        vec![Attribute::XorMappedAddress(addr(CLIENT))]
    );
    assert_eq!(t.payload.len(), 32, "header + XOR-MAPPED-ADDRESS only");
    assert_eq!(s.stats().responses, 1);
}

#[test]
fn fingerprint_software_and_mapped_address_are_added_when_asked_for() {
    let mut c = ServerConfig::default();
    c.primary = addr(P);
    c.software = Some("chorus".into());
    c.mapped_address = true;
    let mut s = Server::new(c).unwrap();
    let t = ask(&mut s, P, &request(&[], true));
    let m = Message::decode(&t.payload, &Limits::default()).unwrap();
    assert!(m.fingerprint);
    assert!(
        m.attributes
            .contains(&Attribute::MappedAddress(addr(CLIENT)))
    );
    assert!(m.attributes.contains(&Attribute::Software("chorus")));
}

#[test]
fn change_request_is_answered_from_the_right_one_of_four_addresses() {
    let mut s = rfc5780();
    assert_eq!(s.addresses().len(), 4);
    let cases = [
        (P, false, false, "192.0.2.1:3478"),
        (P, true, false, "192.0.2.2:3478"),
        (P, false, true, "192.0.2.1:3479"),
        (P, true, true, "192.0.2.2:3479"),
        ("192.0.2.2:3479", true, true, "192.0.2.1:3478"),
        ("192.0.2.2:3478", false, true, "192.0.2.2:3479"),
    ];
    for (local, ip, port, want) in cases {
        let t = ask(
            &mut s,
            local,
            &request(&[Attribute::ChangeRequest { ip, port }], false),
        );
        assert_eq!(t.src, Some(addr(want)), "{local} ip={ip} port={port}");
        let m = Message::decode(&t.payload, &Limits::default()).unwrap();
        assert!(
            m.attributes
                .contains(&Attribute::ResponseOrigin(addr(want)))
        );
        // OTHER-ADDRESS differs from the receiving address in both IP and port.
        let other = m
            .find(|a| match a {
                Attribute::OtherAddress(o) => Some(*o),
                _ => None,
            })
            .unwrap();
        let local = addr(local);
        assert!(other.ip() != local.ip() && other.port() != local.port());
    }
}

#[test]
fn change_request_without_alternate_addresses_gets_420() {
    let mut s = plain();
    let t = ask(
        &mut s,
        P,
        &request(
            &[Attribute::ChangeRequest {
                ip: true,
                port: false,
            }],
            false,
        ),
    );
    let m = Message::decode(&t.payload, &Limits::default()).unwrap();
    assert_eq!(m.class, Class::Error);
    assert_eq!(m.error_code(), Some((420, "Unknown Attribute")));
    let listed: Vec<u16> = m
        .find(|a| match a {
            Attribute::UnknownAttributes(l) => Some(l.iter().collect()),
            _ => None,
        })
        .unwrap();
    assert_eq!(listed, [types::CHANGE_REQUEST]);
}

#[test]
fn unknown_comprehension_required_attributes_get_420_listing_them() {
    let mut s = plain();
    let mut raw = request(&[], false);
    raw.extend_from_slice(&[0x00, 0x7f, 0x00, 0x00]);
    raw[3] = 4;
    let t = ask(&mut s, P, &raw);
    let m = Message::decode(&t.payload, &Limits::default()).unwrap();
    assert_eq!(m.error_code().map(|e| e.0), Some(420));
    assert_eq!(s.stats().errors, 1);
}

#[test]
fn response_port_redirects_and_padding_never_amplifies() {
    let mut s = rfc5780();
    let t = ask(&mut s, P, &request(&[Attribute::ResponsePort(4000)], false));
    assert_eq!(t.dst, addr("203.0.113.7:4000"));

    let pad = [0u8; 400];
    let req = request(&[Attribute::Padding(&pad)], false);
    let t = ask(&mut s, P, &req);
    assert!(
        t.payload.len() <= req.len(),
        "{} > {}",
        t.payload.len(),
        req.len()
    );
    let m = Message::decode(&t.payload, &Limits::default()).unwrap();
    assert!(
        m.attributes
            .iter()
            .any(|a| matches!(a, Attribute::Padding(p) if p.len() > 300))
    );

    // PADDING together with RESPONSE-PORT is refused.
    let t = ask(
        &mut s,
        P,
        &request(
            &[Attribute::Padding(&pad), Attribute::ResponsePort(4000)],
            false,
        ),
    );
    assert_eq!(t.dst, addr(CLIENT));
    let m = Message::decode(&t.payload, &Limits::default()).unwrap();
    assert_eq!(m.error_code().map(|e| e.0), Some(400));
}

#[test]
fn change_request_over_tcp_is_refused() {
    let mut s = rfc5780();
    let req = request(
        &[Attribute::ChangeRequest {
            ip: true,
            port: true,
        }],
        false,
    );
    s.handle_input(Instant::now(), addr(P), addr(CLIENT), Transport::Tcp, &req)
        .unwrap();
    let t = s.poll_transmit().unwrap();
    let m = Message::decode(&t.payload, &Limits::default()).unwrap();
    assert_eq!(m.error_code().map(|e| e.0), Some(400));
}

#[test]
fn garbage_responses_indications_and_other_methods_are_handled_without_amplification() {
    let mut s = plain();
    let now = Instant::now();
    assert!(
        s.handle_input(
            now,
            addr(P),
            addr(CLIENT),
            Transport::Udp,
            b"GET / HTTP/1.1\r\n\r\n"
        )
        .is_err()
    );
    let mut m = Message::new(Class::Success, Method::BINDING, TransactionId::new([1; 12]));
    m.attributes.push(Attribute::Software("x"));
    let mut out = BytesMut::new();
    m.encode(None, &mut out).unwrap();
    assert_eq!(
        s.handle_input(now, addr(P), addr(CLIENT), Transport::Udp, &out),
        Err(Error::Protocol(Violation::UnexpectedClass))
    );
    // An authenticated request from someone we share no key with is still just a
    // Binding request: answered without integrity.
    let mut m = Message::new(
        Class::Request,
        Method::ALLOCATE,
        TransactionId::new([2; 12]),
    );
    m.message_integrity = true;
    let mut out = BytesMut::new();
    m.encode(Some(&Key::short_term("k")), &mut out).unwrap();
    s.handle_input(now, addr(P), addr(CLIENT), Transport::Udp, &out)
        .unwrap();
    let t = s.poll_transmit().unwrap();
    let r = Message::decode(&t.payload, &Limits::default()).unwrap();
    assert_eq!(r.error_code().map(|e| e.0), Some(400));
    assert!(s.poll_transmit().is_none());
    assert_eq!(s.stats().dropped, 2);
}

#[test]
fn each_source_is_held_to_its_rate_and_the_table_is_bounded() {
    let mut c = ServerConfig::default();
    c.primary = addr(P);
    c.rate_limit = Some(RateLimit {
        per_second: 10,
        burst: 5,
        max_sources: 2,
    });
    let mut s = Server::new(c).unwrap();
    let t0 = Instant::now();
    let req = request(&[], false);
    let send = |s: &mut Server, at: Instant, from: &str| {
        let r = s.handle_input(at, addr(P), addr(from), Transport::Udp, &req);
        while s.poll_transmit().is_some() {}
        r
    };
    for _ in 0..5 {
        send(&mut s, t0, CLIENT).unwrap();
    }
    assert_eq!(send(&mut s, t0, CLIENT), Err(Error::Limit(Limit::Rate)));
    // 100 ms later one token (10/s) has come back.
    send(&mut s, t0 + Duration::from_millis(100), CLIENT).unwrap();
    assert_eq!(
        send(&mut s, t0 + Duration::from_millis(100), CLIENT),
        Err(Error::Limit(Limit::Rate))
    );
    // Other sources have their own buckets, up to the table's bound.
    send(&mut s, t0, "198.51.100.1:1").unwrap();
    assert!(matches!(
        send(&mut s, t0, "198.51.100.2:1"),
        Err(Error::Limit(Limit::Sources(2)))
    ));
    // Once the others are idle (bucket refilled) they are purged to make room.
    send(&mut s, t0 + Duration::from_secs(5), "198.51.100.2:1").unwrap();
    assert!(s.poll_timeout().is_some());
    s.handle_timeout(t0 + Duration::from_secs(60));
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn invalid_configurations_are_refused() {
    let bad = |f: fn(&mut ServerConfig)| {
        let mut c = ServerConfig::default();
        c.primary = addr(P);
        f(&mut c);
        Server::new(c).is_err()
    };
    assert!(bad(|c| c.alternate_ip = Some("192.0.2.2".parse().unwrap())));
    assert!(bad(|c| {
        c.alternate_ip = Some("192.0.2.1".parse().unwrap());
        c.alternate_port = Some(1);
    }));
    assert!(bad(|c| {
        c.alternate_ip = Some("192.0.2.2".parse().unwrap());
        c.alternate_port = Some(3478);
    }));
    assert!(bad(|c| {
        c.primary = "0.0.0.0:3478".parse().unwrap();
        c.alternate_ip = Some("192.0.2.2".parse().unwrap());
        c.alternate_port = Some(1);
    }));
    assert!(bad(|c| c.rate_limit = Some(RateLimit {
        per_second: 0,
        burst: 1,
        max_sources: 1
    })));
    assert!(bad(|c| c.max_queued = 0));
    assert!(!bad(|_| {}));
}

#[test]
fn the_stun_client_core_and_server_core_agree_in_memory() {
    use crate::client::{Client, ClientConfig, Event};
    let mut server = rfc5780();
    let mut client = Client::new(
        ClientConfig::default(),
        Box::new(chorus_framing::SeededEntropy::new(3)),
    )
    .unwrap();
    let now = Instant::now();
    let id = client
        .start_request(
            now,
            addr(P),
            Transport::Udp,
            Method::BINDING,
            &[Attribute::ChangeRequest {
                ip: true,
                port: true,
            }],
            None,
        )
        .unwrap();
    let t = client.poll_transmit().unwrap();
    server
        .handle_input(now, t.dst, addr(CLIENT), Transport::Udp, &t.payload)
        .unwrap();
    let r = server.poll_transmit().unwrap();
    client
        .handle_input(now, r.src.unwrap(), &r.payload)
        .unwrap();
    match client.poll_event() {
        Some(Event::Response(resp)) => {
            assert_eq!(resp.id, id);
            assert_eq!(resp.mapped, Some(addr(CLIENT)));
            assert_eq!(resp.from, addr("192.0.2.2:3479"));
            assert_eq!(resp.response_origin, Some(addr("192.0.2.2:3479")));
            assert_eq!(resp.other_address, Some(addr("192.0.2.2:3479")));
        }
        other => panic!("{other:?}"),
    }
}

mod props {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic_and_never_amplify(b in vec(any::<u8>(), 0..600)) {
            let mut s = rfc5780();
            let _ = s.handle_input(Instant::now(), addr(P), addr(CLIENT), Transport::Udp, &b);
            while let Some(t) = s.poll_transmit() {
                // Answers to anything malformed are bounded error responses.
                prop_assert!(t.payload.len() <= b.len().max(20) + 80);
            }
        }
    }
}

#[test]
fn responses_are_carved_from_one_reused_buffer() {
    // Once the payloads handed out are dropped, responses reuse the same buffer: one
    // after another within it, and back at its start when it is full.
    let mut s = plain();
    s.rate = None;
    let req = request(&[], false);
    let first = ask(&mut s, P, &req).payload;
    let (start, len) = (first.as_ptr() as usize, first.len());
    drop(first);
    let second = ask(&mut s, P, &req).payload;
    assert_eq!(second.as_ptr() as usize, start + len);
    drop(second);
    let mut back_at_start = false;
    for _ in 0..2 * ARENA_CHUNK / len {
        let p = ask(&mut s, P, &req).payload;
        back_at_start |= p.as_ptr() as usize == start;
    }
    assert!(back_at_start);
}

#[test]
fn attribute_lists_keep_their_allocation_across_lifetimes() {
    let mut v = Vec::with_capacity(8);
    v.push(Attribute::Lifetime(1));
    let reused: Vec<Attribute<'static>> = reuse(v);
    assert!(reused.is_empty());
    assert!(reused.capacity() >= 8);
}
