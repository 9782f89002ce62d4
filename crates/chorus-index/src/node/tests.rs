//! Tests of the node as a whole, and the harness the subsystems' tests share
//! (`use crate::node::tests::*`): nodes exchanging datagrams by hand on a virtual
//! clock, and requests made by hand.
// Tests configure the way callers do (STYLE.md section 8).
#![allow(clippy::field_reassign_with_default)]

pub(super) use super::*;
pub(super) use crate::Limit;
pub(super) use crate::id::{distance, word_key};
pub(super) use crate::sim::SimVerifier;
pub(super) use crate::table::TableConfig;
pub(super) use chorus_framing::SeededEntropy;
pub(super) use std::time::UNIX_EPOCH;

pub(super) const EPOCH: u64 = 1_700_000_000;

/// Nodes exchanging datagrams by hand on a virtual clock, with a set of nodes
/// that are "down" (their datagrams vanish).
pub(super) struct Net {
    pub(super) nodes: Vec<Node>,
    pub(super) verifier: Arc<SimVerifier>,
    pub(super) now: Instant,
    pub(super) down: Vec<bool>,
}

pub(super) fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 4000))
}

impl Net {
    pub(super) fn new(n: usize, config: &Config) -> Self {
        let verifier = Arc::new(SimVerifier::new(9));
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(EPOCH);
        let nodes = (0..n)
            .map(|i| {
                Node::new(
                    config.clone(),
                    NodeIdentity {
                        cert: verifier.node_cert(i as u64),
                        key: verifier.node_key(i as u64),
                    },
                    verifier.clone(),
                    Box::new(SeededEntropy::new(i as u64)),
                    now,
                    wall,
                )
                .unwrap()
            })
            .collect();
        let mut net = Self {
            nodes,
            verifier,
            now,
            down: vec![false; n],
        };
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    let id = net.nodes[j].id();
                    net.nodes[i].add_contact(Contact { id, addr: addr(j) }, now);
                }
            }
        }
        net
    }

    /// Delivers datagrams until none are left (each hop takes 10 ms).
    pub(super) fn settle(&mut self) -> Vec<(usize, Event)> {
        let mut events = Vec::new();
        for _ in 0..1000 {
            let mut moved = false;
            self.now += Duration::from_millis(10);
            for i in 0..self.nodes.len() {
                while let Some(e) = self.nodes[i].poll_event() {
                    events.push((i, e));
                }
                while let Some(t) = self.nodes[i].poll_transmit() {
                    moved = true;
                    let to = usize::from(
                        t.dst
                            .ip()
                            .to_string()
                            .rsplit('.')
                            .next()
                            .unwrap()
                            .parse::<u8>()
                            .unwrap(),
                    ) - 1;
                    if !self.down[to] && !self.down[i] {
                        let _ = self.nodes[to].handle_input(self.now, addr(i), &t.payload);
                    }
                }
            }
            for n in &mut self.nodes {
                n.handle_timeout(self.now);
            }
            if !moved && self.nodes.iter().all(|n| n.requests.is_empty()) {
                break;
            }
        }
        for i in 0..self.nodes.len() {
            while let Some(e) = self.nodes[i].poll_event() {
                events.push((i, e));
            }
        }
        events
    }

    /// Runs the network for `d` of virtual time, a timer round every 30 s.
    pub(super) fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_secs(30);
            let now = self.now;
            for n in &mut self.nodes {
                n.handle_timeout(now);
            }
            self.settle();
        }
    }

    /// Online nodes holding `name`'s record.
    pub(super) fn holders(&self, name: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| !self.down[i] && self.nodes[i].record(name).is_some())
            .collect()
    }

    pub(super) fn record(&self, name: &str, version: u64) -> PresenceRecord {
        let issued = EPOCH + version;
        let mut r = PresenceRecord {
            username: name.into(),
            display_name: format!("Display {name}"),
            user_cert: Bytes::new(),
            super_nodes: vec![addr(0)],
            candidates: Vec::new(),
            nat_class: crate::record::NatClass::Open,
            version,
            issued_at: issued,
            expires_at: issued + 72 * 3600,
            signature: Bytes::new(),
        };
        self.verifier.sign(&mut r);
        r
    }
}

/// Contact `i`: id `[i; 32]` at 192.0.2.`i` (RFC 5737 documentation range).
pub(super) fn contact(i: u8) -> Contact {
    Contact {
        id: NodeId([i; 32]),
        addr: SocketAddr::from(([192, 0, 2, i], 4000)),
    }
}

/// A record that is not signed (for the subsystems' tests, which check none):
/// issued at `version`, with a certificate and a signature left empty.
pub(super) fn unsigned_record(
    username: &str,
    display_name: &str,
    version: u64,
    expires_at: u64,
) -> PresenceRecord {
    PresenceRecord {
        username: username.into(),
        display_name: display_name.into(),
        user_cert: Bytes::new(),
        super_nodes: Vec::new(),
        candidates: Vec::new(),
        nat_class: crate::record::NatClass::Open,
        version,
        issued_at: version,
        expires_at,
        signature: Bytes::new(),
    }
}

pub(super) fn lookups(events: &[(usize, Event)]) -> Vec<&LookupOutcome> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Lookup(o) => Some(&**o),
            _ => None,
        })
        .collect()
}

#[test]
fn records_that_do_not_verify_are_dropped_and_the_sender_penalized() {
    let net = Net::new(3, &Config::default());
    let mut forged = net.record("carol", 1);
    forged.version = 9; // signature no longer matches
    let mut sender = Net::new(3, &Config::default());
    let mut target = sender.nodes.remove(1);
    let msg = Message {
        network: DEFAULT_NETWORK,
        txid: 1,
        sender_cert: &net.verifier.node_cert(0),
        nonce: None,
        proof: None,
        cookie: None,
        padding: 0,
        body: Body::Store {
            record: &forged.to_bytes(),
        },
    }
    .to_bytes();
    let now = net.now;
    assert!(target.table().get(&net.nodes[0].id()).is_some());
    assert_eq!(
        target.handle_input(now, addr(0), &msg),
        Err(Violation::BadSignature.into())
    );
    assert!(target.record("carol").is_none());
    assert!(
        target.table().get(&net.nodes[0].id()).is_none(),
        "sender dropped"
    );
    assert_eq!(target.stats().penalized, 1);
    // And it is rate-limited for a while.
    assert_eq!(
        target.handle_input(now, addr(0), &msg),
        Err(Limit::RateLimited.into())
    );
}

#[test]
fn the_node_takes_index_datagrams_through_the_shared_contract() {
    use chorus_framing::DatagramCore;
    let mut net = Net::new(2, &Config::default());
    let from = spoofed(6);
    let local = addr(0);
    let cookie = net.nodes[0].validation.cookie_for(from);
    let ping = request(
        &net.verifier.node_cert(6),
        1,
        None,
        Some(cookie),
        0,
        Body::Ping,
    );
    assert!(DatagramCore::accepts(&net.nodes[0], local, from, &ping));
    let stun = [
        0u8, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert!(!DatagramCore::accepts(&net.nodes[0], local, from, &stun));
    let now = net.now;
    DatagramCore::handle_datagram(&mut net.nodes[0], now, local, from, &ping).unwrap();
    let out = DatagramCore::poll_transmit(&mut net.nodes[0]).unwrap();
    assert_eq!(out.dst, from);
    assert!(matches!(
        Message::decode(&out.payload).unwrap().body,
        Body::Pong { .. }
    ));
    assert!(DatagramCore::handle_datagram(&mut net.nodes[0], now, local, from, &stun).is_err());
}

#[test]
fn joins_through_the_host_cache() {
    use chorus_hostcache::hostcache::{CacheConfig, HostCache, Source};
    let mut net = Net::new(3, &Config::default());
    let wall = UNIX_EPOCH + Duration::from_secs(EPOCH);
    let mut cache = HostCache::new(CacheConfig::default()).unwrap();
    cache.insert(addr(1), Source::Bootstrap, wall).unwrap();
    let now = net.now;
    net.nodes[0].bootstrap_from_host_cache(now, &cache).unwrap();
    let probe = net.nodes[0].poll_transmit().unwrap();
    assert_eq!(probe.dst, addr(1));
    let events = net.settle();
    assert!(
        events
            .iter()
            .any(|(i, e)| *i == 0 && matches!(e, Event::Bootstrapped { .. }))
    );
}

#[test]
fn unsolicited_responses_are_rejected() {
    let mut net = Net::new(2, &Config::default());
    let msg = Message {
        network: DEFAULT_NETWORK,
        txid: 77,
        sender_cert: &net.verifier.node_cert(1),
        nonce: None,
        proof: None,
        cookie: None,
        padding: 0,
        body: Body::Pong,
    }
    .to_bytes();
    let now = net.now;
    assert_eq!(
        net.nodes[0].handle_input(now, addr(1), &msg),
        Err(Violation::Unsolicited.into())
    );
}

#[test]
fn graceful_leave_hands_records_on_and_leaves_tables() {
    let mut config = Config::default();
    config.replication = 3;
    let mut net = Net::new(8, &config);
    let r = net.record("ivan", 1);
    net.nodes[0].publish(net.now, r).unwrap();
    net.settle();
    let holder = (1..8)
        .find(|&i| net.nodes[i].record("ivan").is_some())
        .unwrap();
    let gone = net.nodes[holder].id();
    let now = net.now;
    net.nodes[holder].leave(now);
    net.settle();
    assert_eq!(
        net.nodes
            .iter()
            .filter(|n| !n.has_left() && n.record("ivan").is_some())
            .count(),
        3
    );
    // The nodes it told (its closest) dropped it.
    let forgot = net
        .nodes
        .iter()
        .filter(|n| !n.has_left() && n.table().get(&gone).is_none())
        .count();
    assert!(forgot >= 3, "{forgot}");
}

/// Node 0 of a 3-node network where node 0 does not know node 2 yet; returns
/// the network and node 2's id.
pub(super) fn stranger_net() -> (Net, NodeId) {
    let mut net = Net::new(3, &Config::default());
    let id2 = net.nodes[2].id();
    let now = net.now;
    net.nodes[0].table.remove(&id2, now);
    assert!(net.nodes[0].table().get(&id2).is_none());
    (net, id2)
}

/// `net.nodes[0]`'s view of a source: a request from `from` (not in any table).
pub(super) fn request(
    cert: &[u8],
    txid: u64,
    nonce: Option<[u8; NONCE_LEN]>,
    cookie: Option<[u8; COOKIE_LEN]>,
    padding: u16,
    body: Body<'_>,
) -> Bytes {
    Message {
        network: DEFAULT_NETWORK,
        txid,
        sender_cert: cert,
        nonce,
        proof: None,
        cookie,
        padding,
        body,
    }
    .to_bytes()
}

/// A spoofed source address: 198.18.0.0/15 (RFC 2544 benchmarking).
pub(super) fn spoofed(i: usize) -> SocketAddr {
    SocketAddr::from(([198, 18 + (i >> 16) as u8, (i >> 8) as u8, i as u8], 4000))
}
