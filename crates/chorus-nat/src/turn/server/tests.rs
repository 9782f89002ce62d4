#![allow(clippy::field_reassign_with_default)] // as callers outside the crate must

use bytes::Bytes;
use chorus_framing::SeededEntropy;
use proptest::prelude::*;

use super::*;
use crate::stun::{AddressFamily, PasswordAlgorithm, userhash};

pub(super) const REALM: &str = "example.org";

pub(super) fn listen() -> SocketAddr {
    "192.0.2.1:3478".parse().unwrap()
}
pub(super) fn client() -> SocketAddr {
    "203.0.113.5:40000".parse().unwrap()
}
pub(super) fn peer() -> SocketAddr {
    "198.51.100.7:5000".parse().unwrap()
}
pub(super) fn peer6() -> SocketAddr {
    "[2001:db8:99::7]:5000".parse().unwrap()
}

pub(super) fn config() -> Config {
    let mut c = Config::default();
    c.realm = REALM.into();
    c.relay_ips = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
    c.relay_ports = 50000..=50099;
    c.server_addresses = vec![listen()];
    c
}

pub(super) fn key(user: &str, pw: &str) -> Key {
    Key::long_term(user, REALM, pw, PasswordAlgorithm::Md5)
}

/// A server with a simulated client: builds authenticated requests, confirms relay
/// binds, and decodes what comes back.
pub(super) struct H {
    pub(super) s: Server,
    pub(super) now: Instant,
    pub(super) from: SocketAddr,
    pub(super) transport: Transport,
    pub(super) user: (&'static str, &'static str),
    pub(super) nonce: String,
    pub(super) seq: u32,
    /// How many of the next relay binds fail (`usize::MAX`: all of them).
    pub(super) fail_binds: usize,
    pub(super) opened: Vec<SocketAddr>,
    pub(super) closed: Vec<SocketAddr>,
}

impl H {
    pub(super) fn new(config: Config) -> Self {
        let mut users = StaticUsers::new(REALM);
        users.add("alice", "secret");
        users.add("bob", "pw");
        let s = Server::new(config, Box::new(users), Box::new(SeededEntropy::new(3))).unwrap();
        Self {
            s,
            now: Instant::now(),
            from: client(),
            transport: Transport::Udp,
            user: ("alice", "secret"),
            nonce: String::new(),
            seq: 0,
            fail_binds: 0,
            opened: Vec::new(),
            closed: Vec::new(),
        }
    }

    pub(super) fn tid(&mut self) -> TransactionId {
        self.seq += 1;
        let mut t = [0u8; 12];
        t[..4].copy_from_slice(&self.seq.to_be_bytes());
        TransactionId::new(t)
    }

    pub(super) fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let r = self
            .s
            .handle_input(self.now, listen(), self.from, self.transport, bytes);
        self.events();
        r
    }

    pub(super) fn events(&mut self) {
        while let Some(e) = self.s.poll_event() {
            match e {
                Event::OpenRelay(a) => {
                    self.opened.push(a);
                    let ok = self.fail_binds == 0;
                    self.fail_binds = self.fail_binds.saturating_sub(1);
                    let _ = self.s.handle_relay_bound(self.now, a, ok);
                }
                Event::CloseRelay(a) => self.closed.push(a),
            }
        }
    }

    pub(super) fn out(&mut self) -> Vec<(Transport, Transmit)> {
        std::iter::from_fn(|| self.s.poll_transmit()).collect()
    }

    /// Sends `msg` (integrity-protected when `auth`), returns the single reply.
    pub(super) fn exchange(&mut self, original: Message<'_>, auth: bool) -> Bytes {
        let k = key(self.user.0, self.user.1);
        let nonce = self.nonce.clone();
        let mut msg = Message::new(original.class, original.method, original.transaction_id);
        msg.attributes = original.attributes.clone();
        msg.message_integrity = original.message_integrity;
        msg.message_integrity_sha256 = original.message_integrity_sha256;
        msg.fingerprint = original.fingerprint;
        if auth {
            msg.attributes.push(Attribute::Username(self.user.0));
            msg.attributes.push(Attribute::Realm(REALM));
            msg.attributes.push(Attribute::Nonce(&nonce));
            msg.message_integrity = true;
        }
        let mut wire = BytesMut::new();
        msg.encode(Some(&k), &mut wire).unwrap();
        self.send(&wire).unwrap();
        let mut out = self.out();
        assert_eq!(out.len(), 1, "{out:?}");
        let (transport, t) = out.pop().unwrap();
        assert_eq!(
            (transport, t.dst, t.src),
            (self.transport, self.from, Some(listen()))
        );
        let m = Message::decode(&t.payload, &Limits::default()).unwrap();
        assert_eq!(m.transaction_id, msg.transaction_id);
        if auth && m.error_code().is_none_or(|(c, _)| c != 401 && c != 438) {
            Message::verify(&t.payload, &k).expect("responses are integrity-protected");
        }
        t.payload
    }

    pub(super) fn login(&mut self) {
        let tid = self.tid();
        let mut m = Message::new(Class::Request, Method::ALLOCATE, tid);
        m.attributes.push(Attribute::RequestedTransport(UDP));
        let r = self.exchange(m, false);
        let m = Message::decode(&r, &Limits::default()).unwrap();
        assert_eq!(m.error_code().unwrap().0, 401);
        self.nonce = m
            .find(|a| match a {
                Attribute::Nonce(n) => Some(n.to_string()),
                _ => None,
            })
            .unwrap();
    }

    pub(super) fn request(&mut self, method: Method, attrs: Vec<Attribute<'_>>) -> Bytes {
        if self.nonce.is_empty() {
            self.login();
        }
        let tid = self.tid();
        let mut m = Message::new(Class::Request, method, tid);
        m.attributes = attrs;
        self.exchange(m, true)
    }

    pub(super) fn allocate(&mut self, attrs: Vec<Attribute<'_>>) -> Bytes {
        let mut all = vec![Attribute::RequestedTransport(UDP)];
        all.extend(attrs);
        self.request(Method::ALLOCATE, all)
    }

    pub(super) fn relayed(&mut self) -> SocketAddr {
        let r = self.allocate(vec![]);
        relayed_of(&r)[0]
    }

    pub(super) fn permit(&mut self, p: SocketAddr) {
        let r = self.request(
            Method::CREATE_PERMISSION,
            vec![Attribute::XorPeerAddress(p)],
        );
        assert_eq!(code(&r), None);
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
        self.events();
    }
}

pub(super) fn code(r: &[u8]) -> Option<u16> {
    Message::decode(r, &Limits::default())
        .unwrap()
        .error_code()
        .map(|c| c.0)
}

pub(super) fn relayed_of(r: &[u8]) -> Vec<SocketAddr> {
    let m = Message::decode(r, &Limits::default()).unwrap();
    m.attributes
        .iter()
        .filter_map(|a| match a {
            Attribute::XorRelayedAddress(x) => Some(*x),
            _ => None,
        })
        .collect()
}

pub(super) fn lifetime_of(r: &[u8]) -> Option<u32> {
    Message::decode(r, &Limits::default())
        .unwrap()
        .find(|a| match a {
            Attribute::Lifetime(l) => Some(*l),
            _ => None,
        })
}

pub(super) fn send_indication(peer: SocketAddr, data: &[u8]) -> BytesMut {
    let mut m = Message::new(Class::Indication, Method::SEND, TransactionId::new([9; 12]));
    m.attributes.push(Attribute::XorPeerAddress(peer));
    m.attributes.push(Attribute::Data(data));
    let mut w = BytesMut::new();
    m.encode(None, &mut w).unwrap();
    w
}

#[test]
fn allocate_without_credentials_is_challenged_with_realm_and_nonce() {
    let mut h = H::new(config());
    h.login();
    assert_eq!(h.nonce.len(), auth::NONCE_LEN);
    // The challenge carries REALM and is not integrity-protected.
    assert_eq!(h.s.allocations(), 0);
    assert_eq!(h.s.stats().errors, 1);
}

#[test]
fn wrong_password_unknown_user_and_missing_attributes_are_refused() {
    let mut h = H::new(config());
    h.login();
    h.user = ("alice", "wrong");
    assert_eq!(code(&h.allocate(vec![])), Some(401));
    h.user = ("mallory", "x");
    assert_eq!(code(&h.allocate(vec![])), Some(401));
    // Integrity present but no REALM/NONCE: 400.
    let tid = h.tid();
    let mut m = Message::new(Class::Request, Method::ALLOCATE, tid);
    m.attributes = vec![
        Attribute::RequestedTransport(UDP),
        Attribute::Username("alice"),
    ];
    m.message_integrity = true;
    assert_eq!(code(&h.exchange(m, false)), Some(400));
    // A REALM other than ours: 401.
    let tid = h.tid();
    let nonce = h.nonce.clone();
    let mut m = Message::new(Class::Request, Method::ALLOCATE, tid);
    m.attributes = vec![
        Attribute::RequestedTransport(UDP),
        Attribute::Username("alice"),
        Attribute::Realm("other.org"),
        Attribute::Nonce(&nonce),
    ];
    m.message_integrity = true;
    assert_eq!(code(&h.exchange(m, false)), Some(401));
    assert_eq!(h.s.allocations(), 0);
}

#[test]
fn expired_and_forged_nonces_get_438_and_a_fresh_nonce_works() {
    let mut h = H::new(config());
    h.login();
    h.advance(Duration::from_secs(601));
    let r = h.allocate(vec![]);
    assert_eq!(code(&r), Some(438));
    let m = Message::decode(&r, &Limits::default()).unwrap();
    let fresh = m
        .find(|a| match a {
            Attribute::Nonce(n) => Some(n.to_string()),
            _ => None,
        })
        .unwrap();
    assert_ne!(fresh, h.nonce);
    // A forged nonce (one digit changed) is stale too.
    let mut forged = fresh.clone().into_bytes();
    forged[39] = if forged[39] == b'0' { b'1' } else { b'0' };
    h.nonce = String::from_utf8(forged).unwrap();
    assert_eq!(code(&h.allocate(vec![])), Some(438));
    // A nonce issued to another client address is not valid here.
    h.nonce = fresh.clone();
    h.from = "203.0.113.6:40000".parse().unwrap();
    assert_eq!(code(&h.allocate(vec![])), Some(438));
    h.from = client();
    assert_eq!(code(&h.allocate(vec![])), None);
}

#[test]
fn message_integrity_sha256_requests_get_sha256_protected_answers() {
    let mut h = H::new(config());
    h.login();
    let tid = h.tid();
    let nonce = h.nonce.clone();
    let mut m = Message::new(Class::Request, Method::ALLOCATE, tid);
    m.attributes = vec![
        Attribute::RequestedTransport(UDP),
        Attribute::Username("alice"),
        Attribute::Realm(REALM),
        Attribute::Nonce(&nonce),
    ];
    m.message_integrity_sha256 = true;
    let r = h.exchange(m, false);
    let d = Message::decode(&r, &Limits::default()).unwrap();
    assert!(d.message_integrity_sha256 && !d.message_integrity);
    Message::verify(&r, &key("alice", "secret")).unwrap();
}

#[test]
fn userhash_identifies_the_user_without_a_username() {
    let mut h = H::new(config());
    h.login();
    let tid = h.tid();
    let nonce = h.nonce.clone();
    let mut m = Message::new(Class::Request, Method::ALLOCATE, tid);
    m.attributes = vec![
        Attribute::RequestedTransport(UDP),
        Attribute::UserHash(userhash("alice", REALM)),
        Attribute::Realm(REALM),
        Attribute::Nonce(&nonce),
    ];
    m.message_integrity = true;
    let r = h.exchange(m, false);
    assert_eq!(code(&r), None);
    Message::verify(&r, &key("alice", "secret")).unwrap();
}

#[test]
fn transport_family_and_attribute_combination_errors() {
    let mut cfg = config();
    cfg.relay_ips = vec!["192.0.2.1".parse().unwrap()];
    let mut h = H::new(cfg);
    assert_eq!(
        code(&h.request(Method::ALLOCATE, vec![Attribute::RequestedTransport(6)])),
        Some(442)
    );
    assert_eq!(code(&h.request(Method::ALLOCATE, vec![])), Some(400));
    assert_eq!(
        code(&h.allocate(vec![Attribute::RequestedAddressFamily(AddressFamily::V6)])),
        Some(440)
    );
    assert_eq!(
        code(&h.allocate(vec![Attribute::AdditionalAddressFamily(AddressFamily::V4)])),
        Some(400)
    );
    assert_eq!(
        code(&h.allocate(vec![
            Attribute::RequestedAddressFamily(AddressFamily::V4),
            Attribute::AdditionalAddressFamily(AddressFamily::V6)
        ])),
        Some(400)
    );
    assert_eq!(
        code(&h.allocate(vec![
            Attribute::EvenPort(false),
            Attribute::AdditionalAddressFamily(AddressFamily::V6)
        ])),
        Some(400)
    );
    assert_eq!(
        code(&h.allocate(vec![
            Attribute::ReservationToken([1; 8]),
            Attribute::EvenPort(false)
        ])),
        Some(400)
    );
    // Dual allocation without an IPv6 relay: IPv4 only, ADDRESS-ERROR-CODE 440.
    let r = h.allocate(vec![Attribute::AdditionalAddressFamily(AddressFamily::V6)]);
    assert_eq!(code(&r), None);
    assert_eq!(relayed_of(&r).len(), 1);
    let m = Message::decode(&r, &Limits::default()).unwrap();
    assert_eq!(
        m.find(|a| match a {
            Attribute::AddressErrorCode { family, code, .. } => Some((*family, *code)),
            _ => None,
        }),
        Some((AddressFamily::V6, 440))
    );
}

#[test]
fn ipv6_only_allocation_when_asked() {
    let mut h = H::new(config());
    let r = h.allocate(vec![Attribute::RequestedAddressFamily(AddressFamily::V6)]);
    let relays = relayed_of(&r);
    assert_eq!(relays.len(), 1);
    assert!(relays[0].is_ipv6());
}

#[test]
fn quotas_and_capacity_limits_answer_486_and_508() {
    let mut cfg = config();
    cfg.max_allocations_per_user = 1;
    let mut h = H::new(cfg);
    assert_eq!(code(&h.allocate(vec![])), None);
    h.from = "203.0.113.5:40001".parse().unwrap();
    h.login();
    assert_eq!(code(&h.allocate(vec![])), Some(486));
    h.user = ("bob", "pw");
    assert_eq!(code(&h.allocate(vec![])), None);

    let mut cfg = config();
    cfg.max_allocations = 2;
    let mut h = H::new(cfg);
    for port in [40000, 40001] {
        h.from = SocketAddr::new(client().ip(), port);
        h.login();
        assert_eq!(code(&h.allocate(vec![])), None);
    }
    h.from = SocketAddr::new(client().ip(), 40002);
    h.login();
    h.user = ("bob", "pw");
    assert_eq!(code(&h.allocate(vec![])), Some(508));

    // An empty port pool: 508.
    let mut cfg = config();
    cfg.relay_ports = 50000..=50000;
    let mut h = H::new(cfg);
    assert_eq!(code(&h.allocate(vec![])), None);
    h.from = "203.0.113.5:40001".parse().unwrap();
    h.login();
    assert_eq!(code(&h.allocate(vec![])), Some(508));
}

#[test]
fn reservation_tokens_expire_and_release_their_port() {
    let mut cfg = config();
    cfg.relay_ports = 50000..=50001;
    let mut h = H::new(cfg);
    let r = h.allocate(vec![Attribute::EvenPort(true)]);
    let token = Message::decode(&r, &Limits::default())
        .unwrap()
        .find(|a| match a {
            Attribute::ReservationToken(t) => Some(*t),
            _ => None,
        })
        .unwrap();
    h.from = "203.0.113.5:40001".parse().unwrap();
    h.login();
    // Both ports taken (one allocated, one reserved): no room.
    assert_eq!(code(&h.allocate(vec![])), Some(508));
    h.advance(Duration::from_secs(31));
    assert_eq!(
        code(&h.allocate(vec![Attribute::ReservationToken(token)])),
        Some(508)
    );
    // The reserved port went back to the pool.
    assert_eq!(relayed_of(&h.allocate(vec![]))[0].port(), 50001);
}

#[test]
fn requests_on_another_users_allocation_get_441_and_without_one_437() {
    let mut h = H::new(config());
    assert_eq!(
        code(&h.request(
            Method::CREATE_PERMISSION,
            vec![Attribute::XorPeerAddress(peer())]
        )),
        Some(437)
    );
    h.relayed();
    h.user = ("bob", "pw");
    assert_eq!(code(&h.request(Method::REFRESH, vec![])), Some(441));
}

#[test]
fn permission_table_is_bounded_and_permissions_expire() {
    let mut cfg = config();
    cfg.max_permissions = 2;
    let mut h = H::new(cfg);
    let relay = h.relayed();
    h.permit(peer());
    h.permit("198.51.100.8:1".parse().unwrap());
    h.permit(peer()); // refreshing an existing one is fine
    let r = h.request(
        Method::CREATE_PERMISSION,
        vec![Attribute::XorPeerAddress("198.51.100.9:1".parse().unwrap())],
    );
    assert_eq!(code(&r), Some(508));
    // Data flows while the permission lives, and not after 300 s.
    h.s.handle_input(h.now, relay, peer(), Transport::Udp, b"hi")
        .unwrap();
    assert_eq!(h.out().len(), 1);
    h.advance(Duration::from_secs(301));
    assert_eq!(
        h.s.handle_input(h.now, relay, peer(), Transport::Udp, b"hi"),
        Err(Violation::NoPermission.into())
    );
}

#[test]
fn channel_table_is_bounded() {
    let mut cfg = config();
    cfg.max_channels = 1;
    let mut h = H::new(cfg);
    h.relayed();
    let r = h.request(
        Method::CHANNEL_BIND,
        vec![
            Attribute::ChannelNumber(0x4000),
            Attribute::XorPeerAddress(peer()),
        ],
    );
    assert_eq!(code(&r), None);
    let r = h.request(
        Method::CHANNEL_BIND,
        vec![
            Attribute::ChannelNumber(0x4001),
            Attribute::XorPeerAddress("198.51.100.8:1".parse().unwrap()),
        ],
    );
    assert_eq!(code(&r), Some(508));
}

#[test]
fn binding_requests_get_the_reflexive_address_and_odd_inputs_are_dropped() {
    let mut h = H::new(config());
    let tid = h.tid();
    let r = h.exchange(Message::new(Class::Request, Method::BINDING, tid), false);
    let m = Message::decode(&r, &Limits::default()).unwrap();
    assert_eq!(m.mapped_address(), Some(client()));
    // Unknown method: 400. Unknown comprehension-required attribute: 420.
    let tid = h.tid();
    let r = h.exchange(
        Message::new(Class::Request, Method::new(0x0ff).unwrap(), tid),
        false,
    );
    assert_eq!(code(&r), Some(400));
    let mut raw = BytesMut::new();
    let tid = h.tid();
    Message::new(Class::Request, Method::ALLOCATE, tid)
        .encode(None, &mut raw)
        .unwrap();
    raw[3] = 8;
    raw.extend_from_slice(&[0x7f, 0x01, 0, 4, 1, 2, 3, 4]);
    h.send(&raw).unwrap();
    let out = h.out();
    assert_eq!(code(&out[0].1.payload), Some(420));
    // Responses, other indications, garbage: dropped without an answer.
    let mut resp = BytesMut::new();
    Message::new(Class::Success, Method::BINDING, tid)
        .encode(None, &mut resp)
        .unwrap();
    assert!(h.send(&resp).is_err());
    assert!(h.send(&[]).is_err());
    assert!(h.send(&[0xff; 30]).is_err());
    assert!(h.out().is_empty());
}

#[test]
fn unauthenticated_requests_are_rate_limited_per_source() {
    let mut cfg = config();
    cfg.rate_limit = Some(RateLimit {
        per_second: 1,
        burst: 2,
        max_sources: 10,
    });
    let mut h = H::new(cfg);
    let mut m = BytesMut::new();
    Message::new(Class::Request, Method::BINDING, TransactionId::new([1; 12]))
        .encode(None, &mut m)
        .unwrap();
    h.send(&m).unwrap();
    h.send(&m).unwrap();
    assert_eq!(h.send(&m), Err(Limit::Rate.into()));
    h.now += Duration::from_secs(1);
    h.send(&m).unwrap();
    assert_eq!(h.out().len(), 3);
}

#[test]
fn a_closed_tcp_connection_ends_its_allocation() {
    let mut h = H::new(config());
    h.transport = Transport::Tcp;
    let relay = h.relayed();
    h.s.handle_connection_closed(listen(), "203.0.113.9:1".parse().unwrap());
    assert_eq!(h.s.allocations(), 1);
    h.s.handle_connection_closed(listen(), client());
    assert_eq!(h.s.allocations(), 0);
    h.events();
    assert_eq!(h.closed, vec![relay]);
}

#[test]
fn the_outgoing_queue_is_bounded() {
    let mut cfg = config();
    cfg.max_queued = 4;
    let mut h = H::new(cfg);
    let relay = h.relayed();
    h.permit(peer());
    for _ in 0..4 {
        h.s.handle_input(h.now, relay, peer(), Transport::Udp, b"x")
            .unwrap();
    }
    assert_eq!(
        h.s.handle_input(h.now, relay, peer(), Transport::Udp, b"x"),
        Err(Limit::Queue(4).into())
    );
    assert_eq!(h.out().len(), 4);
}

#[test]
fn invalid_configurations_are_refused() {
    let bad = [
        {
            let mut c = config();
            c.relay_ips = vec![];
            c
        },
        {
            let mut c = config();
            c.relay_ips = vec!["0.0.0.0".parse().unwrap()];
            c
        },
        {
            let mut c = config();
            c.relay_ips = vec!["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()];
            c
        },
        {
            let mut c = config();
            c.max_lifetime = Duration::from_secs(1);
            c
        },
        {
            let mut c = config();
            c.max_channels = 0;
            c
        },
        {
            let mut c = config();
            c.realm = String::new();
            c
        },
        {
            let mut c = config();
            c.relay_ports = 0..=10;
            c
        },
    ];
    for c in bad {
        let users = StaticUsers::new(REALM);
        assert!(Server::new(c, Box::new(users), Box::new(SeededEntropy::new(1))).is_err());
    }
}

fn arb_attr() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![0x00, 0x19, 0, 4, 17, 0, 0, 0]),
        Just(vec![0x00, 0x18, 0, 1, 0x80, 0, 0, 0]),
        Just(vec![0x00, 0x0d, 0, 4, 0, 0, 0, 0]),
        Just(vec![0x80, 0x00, 0, 4, 2, 0, 0, 0]),
        Just(vec![0x00, 0x0c, 0, 4, 0x40, 0, 0, 0]),
        proptest::collection::vec(any::<u8>(), 0..24),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_output_stays_bounded(
        inputs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..20),
        tcp in any::<bool>(),
    ) {
        let mut cfg = config();
        cfg.max_queued = 8;
        let mut h = H::new(cfg);
        if tcp { h.transport = Transport::Tcp; }
        let relay = h.relayed();
        h.permit(peer());
        for (i, b) in inputs.iter().enumerate() {
            let _ = h.send(b);
            let _ = h.s.handle_input(h.now, relay, peer(), Transport::Udp, b);
            if i % 3 == 0 { h.advance(Duration::from_secs(97)); }
            let out = h.out();
            prop_assert!(out.len() <= 8);
            for (_, t) in out {
                prop_assert!(t.payload.len() <= 200 + 64);
            }
        }
    }

    #[test]
    fn random_requests_from_structured_attributes_never_panic(
        method in 0u16..16,
        attrs in proptest::collection::vec(arb_attr(), 0..8),
    ) {
        let mut h = H::new(config());
        let mut body: Vec<u8> = attrs.concat();
        body.truncate(body.len() & !3);
        let mut w = vec![0, 0, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        let t = (method & 0xf) as u8;
        w[1] = t;
        w[2..4].copy_from_slice(&(body.len() as u16).to_be_bytes());
        w.extend_from_slice(&[7; 12]);
        w.extend_from_slice(&body);
        let _ = h.send(&w);
        prop_assert!(h.out().len() <= 1);
    }

    #[test]
    fn fuzz_entry_point_holds_its_oracles(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz::turn_server_input(&data);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Allocate { even: u8, dual: bool, life: u16 },
    Refresh(u16),
    Permit(u8),
    Bind(u8, u8),
    Send(u8),
    PeerData(u8),
    Channel(u8),
    Advance(u16),
    Client(u8),
    Close,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3, any::<bool>(), any::<u16>()).prop_map(|(even, dual, life)| Op::Allocate {
            even,
            dual,
            life
        }),
        any::<u16>().prop_map(Op::Refresh),
        (0u8..4).prop_map(Op::Permit),
        (0u8..4, 0u8..4).prop_map(|(c, p)| Op::Bind(c, p)),
        (0u8..4).prop_map(Op::Send),
        (0u8..4).prop_map(Op::PeerData),
        (0u8..4).prop_map(Op::Channel),
        (0u16..900).prop_map(Op::Advance),
        (0u8..3).prop_map(Op::Client),
        Just(Op::Close),
    ]
}

fn op_peer(i: u8) -> SocketAddr {
    [
        peer(),
        peer6(),
        "198.51.100.8:7".parse().unwrap(),
        "10.0.0.1:7".parse().unwrap(),
    ][usize::from(i % 4)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_operation_sequences_keep_relays_balanced_and_tables_bounded(
        ops in proptest::collection::vec(arb_op(), 1..40),
        tcp in any::<bool>(),
    ) {
        let mut cfg = config();
        cfg.relay_ports = 50000..=50007;
        cfg.max_allocations = 4;
        cfg.max_permissions = 2;
        cfg.max_channels = 2;
        let mut h = H::new(cfg);
        if tcp { h.transport = Transport::Tcp; }
        for op in ops {
            match op {
                Op::Allocate { even, dual, life } => {
                    let mut attrs = vec![Attribute::Lifetime(u32::from(life))];
                    match even { 1 => attrs.push(Attribute::EvenPort(false)), 2 => attrs.push(Attribute::EvenPort(true)), _ => {} }
                    if dual && even == 0 { attrs.push(Attribute::AdditionalAddressFamily(AddressFamily::V6)); }
                    h.allocate(attrs);
                }
                Op::Refresh(l) => { h.request(Method::REFRESH, vec![Attribute::Lifetime(u32::from(l % 3) * 400)]); }
                Op::Permit(p) => { h.request(Method::CREATE_PERMISSION, vec![Attribute::XorPeerAddress(op_peer(p))]); }
                Op::Bind(c, p) => {
                    h.request(Method::CHANNEL_BIND, vec![Attribute::ChannelNumber(0x4000 + u16::from(c)), Attribute::XorPeerAddress(op_peer(p))]);
                }
                Op::Send(p) => { let _ = h.send(&send_indication(op_peer(p), b"x")); }
                Op::PeerData(p) => {
                    for r in h.s.relayed_addresses(h.from, listen(), h.transport) {
                        let _ = h.s.handle_input(h.now, r, op_peer(p), Transport::Udp, b"y");
                    }
                }
                Op::Channel(c) => { let _ = h.send(&[0x40, c, 0, 1, 0x7a, 0, 0, 0]); }
                Op::Advance(s) => {
                    h.advance(Duration::from_secs(u64::from(s)));
                    // Nonces expire too: fetch a fresh one.
                    h.login();
                }
                Op::Client(i) => {
                    h.from = SocketAddr::new(client().ip(), 40000 + u16::from(i));
                    h.login();
                }
                Op::Close => h.s.handle_connection_closed(listen(), h.from),
            }
            h.events();
            prop_assert!(h.s.allocations() <= 4);
            prop_assert!(h.out().len() <= 4);
        }
        // Everything expires: every relay opened is closed exactly once.
        h.advance(Duration::from_secs(3700));
        h.advance(Duration::from_secs(3700));
        prop_assert_eq!(h.s.allocations(), 0);
        let (mut opened, mut closed) = (h.opened.clone(), h.closed.clone());
        opened.sort();
        closed.sort();
        prop_assert_eq!(opened, closed);
        prop_assert_eq!(h.s.poll_timeout(), None);
    }
}

#[test]
fn challenges_offer_password_algorithms_and_the_chorus_client_takes_sha256() {
    use crate::turn::client::Event as ClientEvent;
    use crate::{TurnClient, TurnClientConfig};

    let mut h = H::new(config());
    let cfg = TurnClientConfig::new(listen(), Transport::Udp, "alice", "secret");
    let mut c = TurnClient::new(cfg, Box::new(SeededEntropy::new(5))).unwrap();
    c.allocate(h.now).unwrap();
    let mut chosen = Vec::new();
    for _ in 0..4 {
        while let Some(t) = c.poll_transmit() {
            let m = Message::decode(&t.payload, &Limits::default()).unwrap();
            if let Some(alg) = m.find(|a| match a {
                Attribute::PasswordAlgorithm(e) => Some(e.algorithm),
                _ => None,
            }) {
                assert!(m.message_integrity_sha256, "SHA-256 key, SHA-256 MAC");
                chosen.push(alg);
            }
            h.send(&t.payload).unwrap();
        }
        for (_, t) in h.out() {
            let m = Message::decode(&t.payload, &Limits::default()).unwrap();
            if m.error_code().map(|(c, _)| c) == Some(401) {
                // RFC 8489 §9.2.4: the nonce cookie announces the offer.
                let nonce = m.find(|a| match a {
                    Attribute::Nonce(n) => Some(*n),
                    _ => None,
                });
                let features = crate::stun::SecurityFeatures::from_nonce(nonce.unwrap());
                assert!(features.is_some_and(|f| f.password_algorithms));
            }
            c.handle_input(h.now, listen(), &t.payload).unwrap();
        }
    }
    assert_eq!(chosen, [PasswordAlgorithm::Sha256.number()]);
    assert!(matches!(
        c.poll_event(),
        Some(ClientEvent::Allocated { .. })
    ));
}

#[test]
fn password_algorithm_attributes_must_match_the_offer() {
    let mut h = H::new(config());
    h.login();
    let sha = [0u8, 2, 0, 0];
    let md5 = [0u8, 1, 0, 0];
    let offered = [0u8, 2, 0, 0, 0, 1, 0, 0];
    let tampered = [0u8, 1, 0, 0];
    let attempt = |h: &mut H, list: Option<&[u8]>, pick: Option<&[u8]>| {
        let tid = h.tid();
        let mut m = Message::new(Class::Request, Method::ALLOCATE, tid);
        m.attributes.push(Attribute::RequestedTransport(UDP));
        if let Some(l) = list {
            m.attributes.push(Attribute::PasswordAlgorithms(
                AlgorithmList::from_wire(l).unwrap(),
            ));
        }
        if let Some(p) = pick {
            let entry = AlgorithmList::from_wire(p).unwrap().iter().next().unwrap();
            m.attributes.push(Attribute::PasswordAlgorithm(entry));
        }
        let nonce = h.nonce.clone();
        m.attributes.push(Attribute::Username("alice"));
        m.attributes.push(Attribute::Realm(REALM));
        m.attributes.push(Attribute::Nonce(&nonce));
        m.message_integrity = true;
        let mut wire = BytesMut::new();
        m.encode(Some(&key("alice", "secret")), &mut wire).unwrap();
        h.send(&wire).unwrap();
        let out = h.out();
        assert_eq!(out.len(), 1);
        code(&out[0].1.payload)
    };
    // A list that is not what the server sent (a bid-down), or one attribute without
    // the other: 400 (RFC 8489 §9.2.4).
    assert_eq!(attempt(&mut h, Some(&tampered), Some(&md5)), Some(400));
    assert_eq!(attempt(&mut h, None, Some(&md5)), Some(400));
    assert_eq!(attempt(&mut h, Some(&offered), None), Some(400));
    // MD5 chosen from the genuine offer: the MD5 key (which `exchange` uses) verifies.
    assert_eq!(attempt(&mut h, Some(&offered), Some(&md5)), None);
    // SHA-256 chosen, but the request was keyed with MD5: 401 (authentication comes
    // before the allocation checks).
    assert_eq!(attempt(&mut h, Some(&offered), Some(&sha)), Some(401));
}
