//! Return routability (RFC 9000 §8.1, RFC 6347 §4.2.1): the cookies this node
//! hands out, the addresses that showed they receive where they claim to be, and
//! the cookies responders gave us for our requests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_framing::{Entropy, Transmit};

use super::{Config, Node};
use crate::error::Error;
use crate::message::{Body, COOKIE_LEN, Message, with_cookie, with_padding};

/// The keys of address-validation cookies: the current window's and the previous
/// one's, each drawn from the entropy source when its window starts.
struct CookieKeys {
    window: u64,
    current: ring::hmac::Key,
    previous: Option<ring::hmac::Key>,
}

impl CookieKeys {
    fn new(entropy: &mut dyn Entropy, window: u64) -> Result<Self, Error> {
        Ok(Self {
            window,
            current: Self::draw(entropy)?,
            previous: None,
        })
    }

    fn draw(entropy: &mut dyn Entropy) -> Result<ring::hmac::Key, Error> {
        let mut secret = [0u8; 32];
        entropy.fill(&mut secret)?;
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        secret.fill(0);
        Ok(key)
    }

    /// The cookie `key` makes for `addr`: HMAC-SHA256 over the address, truncated.
    fn make(key: &ring::hmac::Key, addr: SocketAddr) -> [u8; COOKIE_LEN] {
        let mut ctx = ring::hmac::Context::with_key(key);
        match addr.ip() {
            std::net::IpAddr::V4(ip) => {
                ctx.update(&[4]);
                ctx.update(&ip.octets());
            }
            std::net::IpAddr::V6(ip) => {
                ctx.update(&[6]);
                ctx.update(&ip.octets());
            }
        }
        ctx.update(&addr.port().to_be_bytes());
        let mut c = [0u8; COOKIE_LEN];
        for (d, s) in c.iter_mut().zip(ctx.sign().as_ref()) {
            *d = *s;
        }
        c
    }
}

/// Which addresses receive where they claim to be, both ways: cookies we make
/// (valid for one to two `cookie_lifetime`s), addresses that answered our
/// requests, and the cookies responders gave us (each map bounded by
/// `max_validated`).
pub(super) struct AddressValidation {
    keys: CookieKeys,
    /// Addresses that answered one of our requests (so they receive there): when.
    pub(super) validated: BTreeMap<SocketAddr, Instant>,
    /// Cookies responders gave us for our address: responder -> (cookie, when).
    pub(super) cookies: BTreeMap<SocketAddr, ([u8; COOKIE_LEN], Instant)>,
    lifetime: Duration,
    capacity: usize,
    pad_to: usize,
}

impl AddressValidation {
    /// Draws the first cookie key from `entropy`.
    pub(super) fn new(config: &Config, entropy: &mut dyn Entropy) -> Result<Self, Error> {
        Ok(Self {
            keys: CookieKeys::new(entropy, 0)?,
            validated: BTreeMap::new(),
            cookies: BTreeMap::new(),
            lifetime: config.cookie_lifetime,
            capacity: config.max_validated,
            pad_to: config.pad_requests_to,
        })
    }

    /// Starts a new cookie window if `cookie_lifetime` has passed (`elapsed` since
    /// the node started): a fresh key from `entropy`; the last window's key stays
    /// good for one more window.
    pub(super) fn rotate(&mut self, entropy: &mut dyn Entropy, elapsed: Duration) {
        let life = self.lifetime.as_millis().max(1);
        let window = elapsed.as_millis() / life;
        let window = u64::try_from(window).unwrap_or(u64::MAX);
        if window == self.keys.window {
            return;
        }
        // A failing entropy source keeps the current key (tried again next time).
        let Ok(key) = CookieKeys::draw(entropy) else {
            return;
        };
        let old = core::mem::replace(&mut self.keys.current, key);
        self.keys.previous = (window == self.keys.window + 1).then_some(old);
        self.keys.window = window;
    }

    /// The cookie we hand `addr` now.
    pub(super) fn cookie_for(&self, addr: SocketAddr) -> [u8; COOKIE_LEN] {
        CookieKeys::make(&self.keys.current, addr)
    }

    /// Whether `cookie` is one we made for `addr` in this window or the last
    /// (compared in constant time).
    pub(super) fn cookie_valid(&self, addr: SocketAddr, cookie: &[u8; COOKIE_LEN]) -> bool {
        let k = &self.keys;
        chorus_crypto::ct_eq(&CookieKeys::make(&k.current, addr), cookie)
            | k.previous
                .as_ref()
                .is_some_and(|p| chorus_crypto::ct_eq(&CookieKeys::make(p, addr), cookie))
    }

    /// Whether `addr` answered one of our requests within `cookie_lifetime`.
    pub(super) fn is_validated(&self, addr: SocketAddr, now: Instant) -> bool {
        self.validated
            .get(&addr)
            .is_some_and(|at| now < *at + self.lifetime)
    }

    /// Remembers that `addr` answered one of our requests (bounded by
    /// `max_validated`; expired entries go first, then an arbitrary one).
    pub(super) fn remember_validated(&mut self, addr: SocketAddr, now: Instant) {
        let life = self.lifetime;
        bounded_insert(&mut self.validated, addr, now, self.capacity, |at| {
            now < *at + life
        });
    }

    /// Remembers the cookie `addr` gave us, for our next requests to it.
    pub(super) fn remember_cookie(
        &mut self,
        addr: SocketAddr,
        cookie: [u8; COOKIE_LEN],
        now: Instant,
    ) {
        let life = self.lifetime;
        bounded_insert(
            &mut self.cookies,
            addr,
            (cookie, now),
            self.capacity,
            |(_, at)| now < *at + life,
        );
    }

    /// A request as sent to `to`: with the cookie `to` gave us, if we hold a fresh
    /// one, else padded to `pad_requests_to` so that a full answer fits in it.
    pub(super) fn dress(&self, to: SocketAddr, request: &Bytes, now: Instant) -> Bytes {
        match self.cookies.get(&to) {
            Some((c, at)) if now < *at + self.lifetime => with_cookie(request, c),
            _ if self.pad_to > 0 => with_padding(request, self.pad_to),
            _ => request.clone(),
        }
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.validated.len() * 64 + self.cookies.len() * 80
    }
}

/// Inserts into a map bounded by `max`: when full, entries that are no longer
/// `fresh` are dropped, then (if still full) the first one, an arbitrary victim.
fn bounded_insert<K: Ord, V>(
    map: &mut BTreeMap<K, V>,
    key: K,
    value: V,
    max: usize,
    fresh: impl Fn(&V) -> bool,
) {
    if map.len() >= max && !map.contains_key(&key) {
        map.retain(|_, v| fresh(v));
        if map.len() >= max {
            map.pop_first();
        }
    }
    map.insert(key, value);
}

impl Node {
    /// Starts a new cookie window if `cookie_lifetime` has passed.
    pub(super) fn rotate_cookie_keys(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.anchor.0);
        self.validation.rotate(&mut *self.entropy, elapsed);
    }

    /// Answers request `txid` from an address that has not proven it receives there
    /// with a `Cookie` (41 bytes; RFC 9000 §8.1.2 Retry, RFC 6347 §4.2.1
    /// HelloVerifyRequest), if that is no larger than the request (`limit` bytes);
    /// else with nothing.
    pub(super) fn send_cookie(&mut self, to: SocketAddr, txid: u64, limit: usize) {
        let payload = Message {
            network: self.config.network,
            txid,
            sender_cert: &[],
            nonce: None,
            proof: None,
            cookie: Some(self.validation.cookie_for(to)),
            padding: 0,
            body: Body::Cookie,
        }
        .to_bytes();
        if payload.len() <= limit {
            self.stats.cookies_sent += 1;
            self.queue(Transmit::new(to, payload));
        }
    }
}

#[cfg(test)]
// Tests configure the way callers do (STYLE.md section 8).
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::node::tests::*;
    use chorus_framing::SeededEntropy;

    fn validation(pad_requests_to: usize) -> (AddressValidation, SeededEntropy) {
        let mut config = Config::default();
        config.max_validated = 16;
        config.pad_requests_to = pad_requests_to;
        let mut entropy = SeededEntropy::new(3);
        (
            AddressValidation::new(&config, &mut entropy).unwrap(),
            entropy,
        )
    }

    fn at_port(i: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], i))
    }

    #[test]
    fn a_cookie_lasts_one_to_two_windows() {
        let (mut v, mut entropy) = validation(0);
        let life = Config::default().cookie_lifetime;
        let c = v.cookie_for(at_port(1));
        assert_ne!(v.cookie_for(at_port(2)), c, "bound to the port too");
        v.rotate(&mut entropy, life - Duration::from_millis(1));
        assert_eq!(v.cookie_for(at_port(1)), c, "same window");
        v.rotate(&mut entropy, life);
        assert!(v.cookie_valid(at_port(1), &c));
        v.rotate(&mut entropy, life * 2);
        assert!(!v.cookie_valid(at_port(1), &c));
    }

    #[test]
    fn requests_carry_a_fresh_cookie_or_padding() {
        let now = Instant::now();
        let life = Config::default().cookie_lifetime;
        let request = Bytes::from_static(&[0; 40]);
        let (mut v, _) = validation(100);
        assert_eq!(
            v.dress(at_port(1), &request, now),
            with_padding(&request, 100)
        );
        v.remember_cookie(at_port(1), [7; COOKIE_LEN], now);
        assert_eq!(
            v.dress(at_port(1), &request, now),
            with_cookie(&request, &[7; COOKIE_LEN])
        );
        assert_eq!(
            v.dress(at_port(1), &request, now + life),
            with_padding(&request, 100),
            "expired"
        );
        let (v, _) = validation(0);
        assert_eq!(v.dress(at_port(1), &request, now), request, "padding off");
    }

    #[test]
    fn validated_addresses_expire_and_expired_ones_make_room_first() {
        let now = Instant::now();
        let life = Config::default().cookie_lifetime;
        let (mut v, _) = validation(0);
        v.remember_validated(at_port(0), now);
        assert!(v.is_validated(at_port(0), now));
        assert!(!v.is_validated(at_port(0), now + life));
        for i in 1..16 {
            v.remember_validated(at_port(i), now + life);
        }
        v.remember_validated(at_port(16), now + life);
        assert_eq!(v.validated.len(), 16);
        assert!(
            !v.validated.contains_key(&at_port(0)),
            "the expired one went"
        );
        assert!((1..=16).all(|i| v.is_validated(at_port(i), now + life)));
    }

    #[test]
    fn a_first_contact_echoes_a_cookie_once_and_then_gets_its_answer() {
        let mut config = Config::default();
        config.pad_requests_to = 0;
        let (mut net, id2) = stranger_net();
        net.nodes[2] = Node::new(
            config,
            NodeIdentity {
                cert: net.verifier.node_cert(2),
                key: net.verifier.node_key(2),
            },
            net.verifier.clone(),
            Box::new(SeededEntropy::new(2)),
            net.now,
            UNIX_EPOCH + Duration::from_secs(EPOCH),
        )
        .unwrap();
        // Node 2 (unknown to node 0, unpadded) pings node 0: too short for a Pong
        // with a proof, it gets a cookie, echoes it, then gets the Pong.
        net.nodes[2].ping(net.now, addr(0));
        net.settle();
        assert_eq!(net.nodes[0].stats().cookies_sent, 1);
        let id0 = net.nodes[0].id();
        assert!(net.nodes[2].table().get(&id0).is_some(), "answered");
        // Node 0 challenged node 2 once it echoed the cookie: now in its table.
        assert!(net.nodes[0].table().get(&id2).is_some());
        // Later requests carry the cookie: no second round trip.
        net.nodes[2].ping(net.now, addr(0));
        net.settle();
        assert_eq!(net.nodes[0].stats().cookies_sent, 1);
    }

    #[test]
    fn padded_first_requests_get_full_answers_without_a_cookie() {
        let (mut net, id2) = stranger_net();
        net.nodes[2].table = RoutingTable::new(id2, TableConfig::default()).unwrap();
        net.nodes[2].bootstrap(net.now, &[addr(0)]).unwrap();
        let events = net.settle();
        assert!(
            events
                .iter()
                .any(|(i, e)| *i == 2 && matches!(e, Event::Bootstrapped { .. })),
            "{events:?}"
        );
        assert_eq!(net.nodes[0].stats().cookies_sent, 0);
    }

    #[test]
    fn a_challenge_that_overtakes_its_answer_is_answered_without_a_cookie() {
        let (mut net, id2) = stranger_net();
        net.nodes[2].table = RoutingTable::new(id2, TableConfig::default()).unwrap();
        let now = net.now;
        net.nodes[2].ping(now, addr(0));
        let ping = net.nodes[2].poll_transmit().unwrap();
        net.nodes[0]
            .handle_input(now, addr(2), &ping.payload)
            .unwrap();
        let out: Vec<Transmit> = std::iter::from_fn(|| net.nodes[0].poll_transmit()).collect();
        let kinds: Vec<u8> = out
            .iter()
            .map(|t| Message::decode(&t.payload).unwrap().body.kind())
            .collect();
        assert_eq!(kinds, [2, 1], "the Pong, then the challenge");
        // The challenge arrives first: node 2 has not seen node 0 answer yet, so
        // its Pong (with a proof) must fit in the challenge, which is padded for it.
        net.nodes[2]
            .handle_input(now, addr(0), &out[1].payload)
            .unwrap();
        let pong = net.nodes[2].poll_transmit().unwrap();
        let m = Message::decode(&pong.payload).unwrap();
        assert_eq!(m.body, Body::Pong);
        assert!(m.proof.is_some());
        assert!(pong.payload.len() <= out[1].payload.len());
        assert_eq!(net.nodes[2].stats().cookies_sent, 0);
        // Node 0 accepts the proof: node 2 enters its table.
        net.nodes[0]
            .handle_input(now, addr(2), &pong.payload)
            .unwrap();
        assert!(net.nodes[0].table().get(&id2).is_some());
    }

    #[test]
    fn cookies_are_bound_to_the_address_and_last_one_to_two_lifetimes() {
        let mut net = Net::new(1, &Config::default());
        let life = net.nodes[0].config().cookie_lifetime;
        let t0 = net.now;
        let (a, b) = (spoofed(1), spoofed(2));
        let c = net.nodes[0].validation.cookie_for(a);
        assert!(net.nodes[0].validation.cookie_valid(a, &c));
        assert!(
            !net.nodes[0].validation.cookie_valid(b, &c),
            "another address"
        );
        net.nodes[0].rotate_cookie_keys(t0 + life);
        assert!(
            net.nodes[0].validation.cookie_valid(a, &c),
            "the previous window's key"
        );
        assert_ne!(net.nodes[0].validation.cookie_for(a), c, "a fresh key");
        net.nodes[0].rotate_cookie_keys(t0 + life * 2);
        assert!(
            !net.nodes[0].validation.cookie_valid(a, &c),
            "two windows later"
        );
        let c = net.nodes[0].validation.cookie_for(a);
        net.nodes[0].rotate_cookie_keys(t0 + life * 9);
        assert!(
            !net.nodes[0].validation.cookie_valid(a, &c),
            "after a long silence"
        );
    }

    #[test]
    fn the_validated_address_and_cookie_maps_are_bounded() {
        let mut config = Config::default();
        config.max_validated = 16;
        let mut net = Net::new(1, &config);
        let now = net.now;
        for i in 0..100 {
            net.nodes[0].validation.remember_validated(spoofed(i), now);
            net.nodes[0]
                .validation
                .remember_cookie(spoofed(i), [0; COOKIE_LEN], now);
        }
        assert_eq!(net.nodes[0].validation.validated.len(), 16);
        assert_eq!(net.nodes[0].validation.cookies.len(), 16);
        // The newest is kept.
        assert!(net.nodes[0].validation.validated.contains_key(&spoofed(99)));
    }
}
