#![allow(clippy::field_reassign_with_default)] // as callers outside the crate must

use bytes::Bytes;
use chorus_framing::SeededEntropy;
use proptest::prelude::*;

use super::*;
use crate::stun::{AddressFamily, PasswordAlgorithm, userhash};

const REALM: &str = "example.org";

fn listen() -> SocketAddr {
    "192.0.2.1:3478".parse().unwrap()
}
fn client() -> SocketAddr {
    "203.0.113.5:40000".parse().unwrap()
}
fn peer() -> SocketAddr {
    "198.51.100.7:5000".parse().unwrap()
}
fn peer6() -> SocketAddr {
    "[2001:db8:99::7]:5000".parse().unwrap()
}

fn config() -> Config {
    let mut c = Config::default();
    c.realm = REALM.into();
    c.relay_ips = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
    c.relay_ports = 50000..=50099;
    c.server_addresses = vec![listen()];
    c
}

fn key(user: &str, pw: &str) -> Key {
    Key::long_term(user, REALM, pw, PasswordAlgorithm::Md5)
}

/// A server with a simulated client: builds authenticated requests, confirms relay
/// binds, and decodes what comes back.
struct H {
    s: Server,
    now: Instant,
    from: SocketAddr,
    transport: Transport,
    user: (&'static str, &'static str),
    nonce: String,
    seq: u32,
    /// How many of the next relay binds fail (`usize::MAX`: all of them).
    fail_binds: usize,
    opened: Vec<SocketAddr>,
    closed: Vec<SocketAddr>,
}

impl H {
    fn new(config: Config) -> Self {
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

    fn tid(&mut self) -> TransactionId {
        self.seq += 1;
        let mut t = [0u8; 12];
        t[..4].copy_from_slice(&self.seq.to_be_bytes());
        TransactionId::new(t)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let r = self
            .s
            .handle_input(self.now, listen(), self.from, self.transport, bytes);
        self.events();
        r
    }

    fn events(&mut self) {
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

    fn out(&mut self) -> Vec<(Transport, Transmit)> {
        std::iter::from_fn(|| self.s.poll_transmit()).collect()
    }

    /// Sends `msg` (integrity-protected when `auth`), returns the single reply.
    fn exchange(&mut self, original: Message<'_>, auth: bool) -> Bytes {
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

    fn login(&mut self) {
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

    fn request(&mut self, method: Method, attrs: Vec<Attribute<'_>>) -> Bytes {
        if self.nonce.is_empty() {
            self.login();
        }
        let tid = self.tid();
        let mut m = Message::new(Class::Request, method, tid);
        m.attributes = attrs;
        self.exchange(m, true)
    }

    fn allocate(&mut self, attrs: Vec<Attribute<'_>>) -> Bytes {
        let mut all = vec![Attribute::RequestedTransport(UDP)];
        all.extend(attrs);
        self.request(Method::ALLOCATE, all)
    }

    fn relayed(&mut self) -> SocketAddr {
        let r = self.allocate(vec![]);
        relayed_of(&r)[0]
    }

    fn permit(&mut self, p: SocketAddr) {
        let r = self.request(
            Method::CREATE_PERMISSION,
            vec![Attribute::XorPeerAddress(p)],
        );
        assert_eq!(code(&r), None);
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
        self.events();
    }
}

fn code(r: &[u8]) -> Option<u16> {
    Message::decode(r, &Limits::default())
        .unwrap()
        .error_code()
        .map(|c| c.0)
}

fn relayed_of(r: &[u8]) -> Vec<SocketAddr> {
    let m = Message::decode(r, &Limits::default()).unwrap();
    m.attributes
        .iter()
        .filter_map(|a| match a {
            Attribute::XorRelayedAddress(x) => Some(*x),
            _ => None,
        })
        .collect()
}

fn lifetime_of(r: &[u8]) -> Option<u32> {
    Message::decode(r, &Limits::default())
        .unwrap()
        .find(|a| match a {
            Attribute::Lifetime(l) => Some(*l),
            _ => None,
        })
}

fn send_indication(peer: SocketAddr, data: &[u8]) -> BytesMut {
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
fn allocate_answers_relayed_mapped_and_lifetime_once_the_relay_is_bound() {
    let mut h = H::new(config());
    h.login();
    // Without a bind report there is no answer yet.
    let tid = h.tid();
    let mut m = Message::new(Class::Request, Method::ALLOCATE, tid);
    m.attributes = vec![
        Attribute::RequestedTransport(UDP),
        Attribute::DontFragment,
        Attribute::Username("alice"),
        Attribute::Realm(REALM),
        Attribute::Nonce(&h.nonce),
    ];
    m.message_integrity = true;
    m.fingerprint = true;
    let mut w = BytesMut::new();
    m.encode(Some(&key("alice", "secret")), &mut w).unwrap();
    h.s.handle_input(h.now, listen(), client(), Transport::Udp, &w)
        .unwrap();
    assert!(h.s.poll_transmit().is_none());
    let Some(Event::OpenRelay(relay)) = h.s.poll_event() else {
        panic!("no OpenRelay")
    };
    assert_eq!(relay.ip(), "192.0.2.1".parse::<IpAddr>().unwrap());
    assert!((50000..=50099).contains(&relay.port()));
    // A retransmission while the bind is pending gets no second answer.
    h.s.handle_input(h.now, listen(), client(), Transport::Udp, &w)
        .unwrap();
    assert!(h.s.poll_transmit().is_none());
    h.s.handle_relay_bound(h.now, relay, true).unwrap();
    let (_, t) = h.s.poll_transmit().unwrap();
    Message::verify(&t.payload, &key("alice", "secret")).unwrap();
    let r = Message::decode(&t.payload, &Limits::default()).unwrap();
    assert_eq!(r.class, Class::Success);
    assert!(r.fingerprint, "FINGERPRINT mirrored");
    assert_eq!(relayed_of(&t.payload), vec![relay]);
    assert_eq!(lifetime_of(&t.payload), Some(600));
    assert_eq!(r.mapped_address(), Some(client()));
    // A retransmission after success gets the same success; a new request 437.
    h.s.handle_input(h.now, listen(), client(), Transport::Udp, &w)
        .unwrap();
    let (_, again) = h.s.poll_transmit().unwrap();
    assert_eq!(relayed_of(&again.payload), vec![relay]);
    assert_eq!(code(&h.allocate(vec![])), Some(437));
    assert_eq!(h.s.allocations(), 1);
    assert_eq!(
        h.s.relayed_addresses(client(), listen(), Transport::Udp),
        vec![relay]
    );
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
fn dual_allocation_gets_two_relayed_addresses_and_can_drop_one_family() {
    let mut h = H::new(config());
    let r = h.allocate(vec![Attribute::AdditionalAddressFamily(AddressFamily::V6)]);
    let relays = relayed_of(&r);
    assert_eq!(relays.len(), 2);
    assert!(relays[0].is_ipv4() && relays[1].is_ipv6());
    // Permissions for both families now work.
    h.permit(peer());
    h.permit(peer6());
    // Refresh naming a family deletes just that one (RFC 8656 §7.3).
    let r = h.request(
        Method::REFRESH,
        vec![
            Attribute::Lifetime(0),
            Attribute::RequestedAddressFamily(AddressFamily::V6),
        ],
    );
    assert_eq!(code(&r), None);
    assert_eq!(h.closed, vec![relays[1]]);
    assert_eq!(
        h.s.relayed_addresses(client(), listen(), Transport::Udp),
        vec![relays[0]]
    );
    let r = h.request(
        Method::REFRESH,
        vec![Attribute::RequestedAddressFamily(AddressFamily::V6)],
    );
    assert_eq!(code(&r), Some(443));
    let r = h.request(
        Method::CREATE_PERMISSION,
        vec![Attribute::XorPeerAddress(peer6())],
    );
    assert_eq!(code(&r), Some(443));
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
fn even_port_with_r_reserves_the_next_port_for_a_token() {
    let mut h = H::new(config());
    let r = h.allocate(vec![Attribute::EvenPort(true)]);
    let relay = relayed_of(&r)[0];
    assert_eq!(relay.port() % 2, 0);
    let token = Message::decode(&r, &Limits::default())
        .unwrap()
        .find(|a| match a {
            Attribute::ReservationToken(t) => Some(*t),
            _ => None,
        })
        .expect("RESERVATION-TOKEN");
    // Another client claims the reserved port with the token.
    h.from = "203.0.113.5:40001".parse().unwrap();
    h.login();
    let r = h.allocate(vec![Attribute::ReservationToken(token)]);
    assert_eq!(
        relayed_of(&r),
        vec![SocketAddr::new(relay.ip(), relay.port() + 1)]
    );
    // The token is single-use.
    h.from = "203.0.113.5:40002".parse().unwrap();
    h.login();
    assert_eq!(
        code(&h.allocate(vec![Attribute::ReservationToken(token)])),
        Some(508)
    );
    // EVEN-PORT without R: an even port, no token.
    let r = h.allocate(vec![Attribute::EvenPort(false)]);
    assert_eq!(relayed_of(&r)[0].port() % 2, 0);
    assert!(
        Message::decode(&r, &Limits::default())
            .unwrap()
            .find(|a| matches!(a, Attribute::ReservationToken(_)).then_some(()))
            .is_none()
    );
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
fn lifetime_negotiation_refresh_and_expiry() {
    let mut h = H::new(config());
    assert_eq!(
        lifetime_of(&h.allocate(vec![Attribute::Lifetime(100)])),
        Some(600)
    );
    let relay = h.s.relayed_addresses(client(), listen(), Transport::Udp)[0];
    let r = h.request(Method::REFRESH, vec![Attribute::Lifetime(5000)]);
    assert_eq!(lifetime_of(&r), Some(3600));
    let r = h.request(Method::REFRESH, vec![]);
    assert_eq!(lifetime_of(&r), Some(600));
    // Expiry after 600 s closes the relay.
    h.advance(Duration::from_secs(599));
    assert_eq!(h.s.allocations(), 1);
    assert!(h.s.poll_timeout().is_some());
    h.advance(Duration::from_secs(2));
    assert_eq!(h.s.allocations(), 0);
    assert_eq!(h.closed, vec![relay]);
    h.login();
    assert_eq!(code(&h.request(Method::REFRESH, vec![])), Some(437));
    // A fresh allocation with a long lifetime, deleted by LIFETIME 0.
    assert_eq!(
        lifetime_of(&h.allocate(vec![Attribute::Lifetime(1200)])),
        Some(1200)
    );
    let r = h.request(Method::REFRESH, vec![Attribute::Lifetime(0)]);
    assert_eq!(lifetime_of(&r), Some(0));
    assert_eq!(h.s.allocations(), 0);
    assert_eq!(h.closed.len(), 2);
    // Nothing left to expire but the rate-limit table: the timer stops eventually.
    h.advance(Duration::from_secs(10));
    assert_eq!(h.s.poll_timeout(), None);
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
fn create_permission_installs_several_peers_and_enforces_the_deny_list() {
    let mut h = H::new(config());
    h.allocate(vec![Attribute::AdditionalAddressFamily(AddressFamily::V6)]);
    let other: SocketAddr = "198.51.100.8:1".parse().unwrap();
    let r = h.request(
        Method::CREATE_PERMISSION,
        vec![
            Attribute::XorPeerAddress(peer()),
            Attribute::XorPeerAddress(other),
        ],
    );
    assert_eq!(code(&r), None);
    for denied in [
        "127.0.0.1:9",
        "10.0.0.1:9",
        "192.168.1.1:9",
        "169.254.0.1:9",
        "224.0.0.1:9",
        "0.0.0.0:9",
        "[fd00::1]:9",
        "[::1]:9",
        "[fe80::1]:9",
        "192.0.2.1:9", // the relay's own address
    ] {
        let p: SocketAddr = denied.parse().unwrap();
        let r = h.request(
            Method::CREATE_PERMISSION,
            vec![
                Attribute::XorPeerAddress(peer()),
                Attribute::XorPeerAddress(p),
            ],
        );
        assert_eq!(code(&r), Some(403), "{denied}");
    }
    assert_eq!(
        code(&h.request(Method::CREATE_PERMISSION, vec![])),
        Some(400)
    );
    // Loopback allowed by configuration.
    let mut cfg = config();
    cfg.allow_loopback_peers = true;
    cfg.allowed_peers = vec!["10.0.0.0/8".parse().unwrap()];
    let mut h = H::new(cfg);
    h.relayed();
    h.permit("127.0.0.1:9".parse().unwrap());
    h.permit("10.1.1.1:9".parse().unwrap());
    assert!(h.s.peer_allowed("::1".parse().unwrap()));
    assert!(!h.s.peer_allowed("192.168.0.1".parse().unwrap()));
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
fn channel_bind_rules_and_cooldown() {
    let mut h = H::new(config());
    h.relayed();
    let other: SocketAddr = "198.51.100.8:1".parse().unwrap();
    let bind = |h: &mut H, ch: u16, p: SocketAddr| {
        code(&h.request(
            Method::CHANNEL_BIND,
            vec![Attribute::ChannelNumber(ch), Attribute::XorPeerAddress(p)],
        ))
    };
    assert_eq!(bind(&mut h, 0x3fff, peer()), Some(400));
    assert_eq!(bind(&mut h, 0x5000, peer()), Some(400));
    assert_eq!(
        bind(&mut h, 0x4000, "10.0.0.1:1".parse().unwrap()),
        Some(403)
    );
    assert_eq!(bind(&mut h, 0x4000, peer6()), Some(443));
    assert_eq!(bind(&mut h, 0x4000, peer()), None);
    assert_eq!(bind(&mut h, 0x4000, peer()), None, "refresh");
    assert_eq!(bind(&mut h, 0x4000, other), Some(400), "channel taken");
    assert_eq!(bind(&mut h, 0x4001, peer()), Some(400), "peer taken");
    assert_eq!(
        code(&h.request(Method::CHANNEL_BIND, vec![Attribute::ChannelNumber(0x4002)])),
        Some(400)
    );
    // After expiry (600 s) the channel cools down for 300 s more.
    let r = h.request(Method::REFRESH, vec![Attribute::Lifetime(3600)]);
    assert_eq!(lifetime_of(&r), Some(3600));
    h.advance(Duration::from_secs(601));
    h.login();
    assert_eq!(bind(&mut h, 0x4000, other), Some(400));
    h.advance(Duration::from_secs(300));
    h.login();
    assert_eq!(bind(&mut h, 0x4000, other), None);
    assert_eq!(bind(&mut h, 0x4001, peer()), None);
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
fn a_failed_relay_bind_is_retried_on_another_port_and_the_port_is_not_offered_again() {
    let mut cfg = config();
    cfg.relay_ports = 50000..=50002;
    let mut h = H::new(cfg);
    // Held by another process: the first port drawn fails, the next one binds.
    h.fail_binds = 1;
    let first = h.relayed();
    assert_eq!(h.opened.len(), 2, "{:?}", h.opened);
    assert_eq!(first, h.opened[1]);
    assert_ne!(h.opened[0], h.opened[1]);
    assert_eq!(h.s.allocations(), 1);
    // The failed port is out of the pool and the first allocation holds another:
    // one port is left, and when it fails too nothing is left to try.
    h.from = "203.0.113.5:40001".parse().unwrap();
    h.login();
    h.fail_binds = usize::MAX;
    assert_eq!(code(&h.allocate(vec![])), Some(508));
    assert_eq!(h.opened.len(), 3);
    assert_eq!(h.s.allocations(), 1);
    for a in &h.opened {
        assert!((50000..=50002).contains(&a.port()));
    }
    assert_eq!(
        h.s.handle_relay_bound(h.now, h.opened[0], true),
        Err(UsageError::UnknownRelay.into()),
        "a replaced port no longer names the allocation"
    );
    assert_eq!(
        h.s.handle_relay_bound(h.now, "192.0.2.1:1".parse().unwrap(), true),
        Err(UsageError::UnknownRelay.into())
    );
}

#[test]
fn a_relay_bind_is_tried_on_four_ports_at_most() {
    let mut cfg = config();
    cfg.relay_ports = 50000..=50099;
    let mut h = H::new(cfg);
    h.fail_binds = usize::MAX;
    assert_eq!(code(&h.allocate(vec![])), Some(508));
    assert_eq!(h.opened.len(), 4);
    assert_eq!(h.s.allocations(), 0);
    h.fail_binds = 0;
    let relayed = h.relayed();
    assert!(!h.opened[..4].contains(&relayed), "failed ports stay out");
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
