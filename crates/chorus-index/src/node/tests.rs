//! Tests of the node as a whole, and the harness the subsystem tests share: nodes
//! exchanging datagrams by hand on a virtual clock.
// Tests configure the way callers do (STYLE.md section 8).
#![allow(clippy::field_reassign_with_default)]

use super::*;
use crate::Limit;
use crate::id::{distance, word_key};
use crate::sim::SimVerifier;
use crate::table::TableConfig;
use chorus_framing::SeededEntropy;
use std::time::UNIX_EPOCH;

const EPOCH: u64 = 1_700_000_000;

/// Nodes exchanging datagrams by hand on a virtual clock, with a set of nodes
/// that are "down" (their datagrams vanish).
struct Net {
    nodes: Vec<Node>,
    verifier: Arc<SimVerifier>,
    now: Instant,
    down: Vec<bool>,
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 4000))
}

impl Net {
    fn new(n: usize, config: &Config) -> Self {
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
    fn settle(&mut self) -> Vec<(usize, Event)> {
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
    fn advance(&mut self, d: Duration) {
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
    fn holders(&self, name: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| !self.down[i] && self.nodes[i].record(name).is_some())
            .collect()
    }

    fn record(&self, name: &str, version: u64) -> PresenceRecord {
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

fn lookups(events: &[(usize, Event)]) -> Vec<&LookupOutcome> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Lookup(o) => Some(&**o),
            _ => None,
        })
        .collect()
}

#[test]
fn published_records_replicate_to_the_k_closest_and_are_found() {
    let mut config = Config::default();
    config.replication = 5;
    let mut net = Net::new(12, &config);
    let r = net.record("alice", 1);
    net.nodes[0].publish(net.now, r.clone()).unwrap();
    let events = net.settle();
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(e, Event::Published { replicas: 5, .. }))
    );
    let holders = net
        .nodes
        .iter()
        .filter(|n| n.record("alice").is_some())
        .count();
    assert_eq!(holders, 5);
    // The holders are the five closest to the key.
    let key = user_key("alice");
    let mut ids: Vec<NodeId> = net.nodes.iter().map(Node::id).collect();
    ids.sort_by_key(|id| distance(&key, id));
    for id in &ids[..5] {
        assert!(
            net.nodes
                .iter()
                .find(|n| n.id() == *id)
                .unwrap()
                .record("alice")
                .is_some()
        );
    }
    let lookup = net
        .nodes
        .iter()
        .position(|n| n.record("alice").is_none())
        .unwrap();
    net.nodes[lookup].find_user(net.now, "alice").unwrap();
    let events = net.settle();
    let found = lookups(&events);
    assert_eq!(found[0].record.as_ref(), Some(&r));
    assert_eq!(found[0].hops, Some(1));
}

#[test]
fn only_the_newest_version_is_kept_and_stale_ones_are_refused() {
    let mut config = Config::default();
    config.replication = 3;
    let mut net = Net::new(6, &config);
    let (v1, v2) = (net.record("bob", 1), net.record("bob", 2));
    let now = net.now;
    assert_eq!(
        net.nodes[1].accept_store(now, &v2.to_bytes(), None),
        Ok(true)
    );
    assert_eq!(
        net.nodes[1].accept_store(now, &v1.to_bytes(), None),
        Ok(false)
    );
    assert_eq!(net.nodes[1].record("bob").unwrap().version, 2);
    // Publishing an older version than one already published here is refused.
    net.nodes[0].publish(now, v2).unwrap();
    assert_eq!(net.nodes[0].publish(now, v1), Err(Violation::Stale.into()));
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
fn forged_node_certificates_are_refused() {
    let mut net = Net::new(2, &Config::default());
    let mut cert = net.verifier.node_cert(5).to_vec();
    cert[0] ^= 1;
    let from = spoofed(5);
    let cookie = net.nodes[0].validation.cookie_for(from);
    let msg = request(&cert, 1, None, Some(cookie), 0, Body::Ping);
    let now = net.now;
    assert_eq!(
        net.nodes[0].handle_input(now, from, &msg),
        Err(Violation::BadNodeCertificate.into())
    );
    assert!(net.nodes[0].poll_transmit().is_none());
    // From an address that has not proven itself, a request too short for any
    // answer gets a cookie before the certificate is even checked.
    let msg = request(&cert, 2, None, None, 0, Body::Ping);
    assert_eq!(net.nodes[0].handle_input(now, from, &msg), Ok(()));
    let out = net.nodes[0].poll_transmit().unwrap();
    assert_eq!(Message::decode(&out.payload).unwrap().body, Body::Cookie);
    assert!(out.payload.len() <= msg.len());
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
fn records_expire() {
    let mut net = Net::new(2, &Config::default());
    let r = net.record("dave", 1);
    let now = net.now;
    assert_eq!(
        net.nodes[0].accept_store(now, &r.to_bytes(), None),
        Ok(true)
    );
    let later = now + Duration::from_secs(73 * 3600);
    net.nodes[0].handle_timeout(later);
    assert!(net.nodes[0].record("dave").is_none());
    // An expired record is refused outright.
    assert_eq!(
        net.nodes[1].accept_store(later, &r.to_bytes(), None),
        Err(Violation::Expired.into())
    );
    // So is one claiming to live longer than 72 hours.
    let mut long = net.record("erin", 1);
    long.expires_at += 3600;
    net.verifier.sign(&mut long);
    assert_eq!(
        net.nodes[1].accept_store(now, &long.to_bytes(), None),
        Err(Violation::Expired.into())
    );
}

#[test]
fn lookups_route_around_dead_nodes_and_drop_them_after_timeouts() {
    let mut config = Config::default();
    config.replication = 4;
    let mut net = Net::new(10, &config);
    let r = net.record("frank", 1);
    net.nodes[0].publish(net.now, r.clone()).unwrap();
    net.settle();
    // Kill the closest holder; a lookup still finds the record.
    let key = user_key("frank");
    let closest = (0..10)
        .filter(|&i| i != 0)
        .min_by_key(|&i| distance(&key, &net.nodes[i].id()))
        .unwrap();
    net.down[closest] = true;
    let asker = (1..10)
        .find(|&i| i != closest && net.nodes[i].record("frank").is_none())
        .unwrap();
    let dead = net.nodes[closest].id();
    net.nodes[asker].find_user(net.now, "frank").unwrap();
    let events = net.settle();
    assert_eq!(lookups(&events)[0].record.as_ref(), Some(&r));
    // Two more lookups that try the dead node: after max_fails it is gone.
    for _ in 0..3 {
        net.nodes[asker].find_node(net.now, dead).unwrap();
        net.settle();
    }
    assert!(net.nodes[asker].table().get(&dead).is_none());
}

#[test]
fn store_requests_are_retried() {
    let mut config = Config::default();
    config.replication = 2;
    config.retries = 1;
    let mut net = Net::new(3, &config);
    let r = net.record("gina", 1);
    let now = net.now;
    net.nodes[0].published.insert(
        r.key(),
        Published {
            record: r,
            next: now,
        },
    );
    let targets = [Contact {
        id: net.nodes[1].id(),
        addr: addr(1),
    }];
    net.nodes[0].store_at(now, &user_key("gina"), &targets);
    let first = net.nodes[0].poll_transmit().unwrap();
    // Lost. After the request timeout the same datagram goes out again.
    net.nodes[0].handle_timeout(now + config.request_timeout);
    let again = net.nodes[0].poll_transmit().unwrap();
    assert_eq!(first, again);
    net.nodes[1]
        .handle_input(now, addr(0), &again.payload)
        .unwrap();
    let ack = net.nodes[1].poll_transmit().unwrap();
    net.nodes[0]
        .handle_input(now, addr(1), &ack.payload)
        .unwrap();
    assert!(matches!(
        net.nodes[0].poll_event(),
        Some(Event::Published { replicas, .. }) if replicas >= 1
    ));
}

#[test]
fn search_finds_users_by_display_name_words() {
    let mut config = Config::default();
    config.replication = 4;
    let mut net = Net::new(10, &config);
    let mut r = net.record("hana", 1);
    r.display_name = "Hana Sato".into();
    net.verifier.sign(&mut r);
    net.nodes[0].publish(net.now, r.clone()).unwrap();
    net.settle();
    net.nodes[5].search(net.now, "sato HANA").unwrap();
    let events = net.settle();
    assert_eq!(lookups(&events)[0].results, vec![r]);
    net.nodes[5].search(net.now, "sato tanaka").unwrap();
    let events = net.settle();
    assert!(lookups(&events)[0].results.is_empty());
    assert!(net.nodes[5].search(net.now, "!").is_err());
}

#[test]
fn verified_certificates_are_cached_until_their_ttl() {
    let mut config = Config::default();
    config.cert_cache = 2;
    let mut net = Net::new(4, &config);
    let ping = |i: u64, v: &SimVerifier| {
        Message {
            network: DEFAULT_NETWORK,
            txid: i,
            sender_cert: &v.node_cert(i),
            nonce: None,
            proof: None,
            cookie: None,
            // Long enough for an answer, so the certificate is checked.
            padding: 100,
            body: Body::Ping,
        }
        .to_bytes()
    };
    let now = net.now;
    for i in 1..4 {
        let m = ping(i, &net.verifier);
        net.nodes[0]
            .handle_input(now, addr(i as usize), &m)
            .unwrap();
    }
    assert_eq!(net.nodes[0].certs.len(), 2, "bounded");
    let later = now + config.cert_cache_ttl;
    let m = ping(1, &net.verifier);
    net.nodes[0].handle_input(later, addr(1), &m).unwrap();
    assert!(
        net.nodes[0]
            .certs
            .values()
            .all(|(_, at)| *at == later || *at == now)
    );
    assert!(net.nodes[0].certs.len() <= 2);
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
fn lookups_keep_alpha_requests_in_flight_per_path_on_disjoint_paths() {
    let mut config = Config::default();
    config.alpha = 2;
    config.disjoint_paths = 3;
    let mut net = Net::new(30, &config);
    let target = NodeId([0x5a; 32]);
    let now = net.now;
    net.nodes[0].find_node(now, target).unwrap();
    let sent: Vec<Transmit> = std::iter::from_fn(|| net.nodes[0].poll_transmit()).collect();
    assert_eq!(sent.len(), 6);
    let mut dsts: Vec<SocketAddr> = sent.iter().map(|t| t.dst).collect();
    dsts.sort();
    dsts.dedup();
    assert_eq!(dsts.len(), 6, "no node is asked twice");
    // A stalled request frees its slot: one more request per path goes out.
    net.nodes[0].handle_timeout(now + config.stall_timeout);
    let more = std::iter::from_fn(|| net.nodes[0].poll_transmit()).count();
    assert_eq!(more, 6);
    assert!(Node::accepts(&sent[0].payload));
    assert!(!Node::accepts(&[0x00, 0x01, 0, 0]));
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
fn stranger_net() -> (Net, NodeId) {
    let mut net = Net::new(3, &Config::default());
    let id2 = net.nodes[2].id();
    let now = net.now;
    net.nodes[0].table.remove(&id2, now);
    assert!(net.nodes[0].table().get(&id2).is_none());
    (net, id2)
}

#[test]
fn an_impostor_replaying_a_certificate_is_never_inserted_and_is_penalized() {
    let (mut net, id2) = stranger_net();
    let now = net.now;
    let impostor = SocketAddr::from(([10, 0, 0, 99], 4000));
    let cert2 = net.verifier.node_cert(2);
    // The impostor sends a request with node 2's (valid) certificate.
    let request = Message {
        network: DEFAULT_NETWORK,
        txid: 5,
        sender_cert: &cert2,
        nonce: None,
        proof: None,
        // A real attacker at its own address: it receives our cookies.
        cookie: Some(net.nodes[0].validation.cookie_for(impostor)),
        padding: 0,
        body: Body::FindNode {
            target: NodeId([3; 32]),
        },
    }
    .to_bytes();
    net.nodes[0].handle_input(now, impostor, &request).unwrap();
    assert!(
        net.nodes[0].table().get(&id2).is_none(),
        "not before a proof"
    );
    // Node 0 answers and challenges the sender: a Ping with a nonce.
    let out: Vec<Transmit> = std::iter::from_fn(|| net.nodes[0].poll_transmit()).collect();
    let challenge = out
        .iter()
        .map(|t| Message::decode(&t.payload).unwrap())
        .find(|m| m.body == Body::Ping)
        .expect("a challenge");
    let nonce = challenge.nonce.expect("the challenge carries a nonce");
    // Without node 2's key the impostor can only answer with a made-up proof
    // (or one node 2 made for another nonce or requester).
    let stolen = net.nodes[2]
        .proofs
        .signer
        .sign(&possession_message(&[1; 16], &net.nodes[0].id()))
        .unwrap();
    for (txid, proof) in [
        (challenge.txid, &b"forged"[..]),
        (challenge.txid, &stolen[..]),
    ] {
        let pong = Message {
            network: DEFAULT_NETWORK,
            txid,
            sender_cert: &cert2,
            nonce: None,
            proof: Some(proof),
            cookie: None,
            padding: 0,
            body: Body::Pong,
        }
        .to_bytes();
        let r = net.nodes[0].handle_input(now, impostor, &pong);
        assert!(
            r == Err(Violation::BadProof.into()) || r == Err(Violation::Unsolicited.into()),
            "{r:?}"
        );
    }
    assert!(net.nodes[0].table().get(&id2).is_none());
    assert_eq!(net.nodes[0].stats().penalized, 1);
    // The penalty empties the impostor's rate-limit bucket.
    assert_eq!(
        net.nodes[0].handle_input(now, impostor, &request),
        Err(Limit::RateLimited.into())
    );
    // A proof for the right nonce would have passed: node 2 signs it.
    assert!(nonce != [1; 16]);

    // The honest node 2 talks to node 0 from its own address: challenged (its
    // padded Ping leaves room for the challenge), it answers with its key and
    // enters the table.
    net.nodes[2].ping(net.now, addr(0));
    net.settle();
    assert_eq!(
        net.nodes[0].table().get(&id2).map(|e| e.contact.addr),
        Some(addr(2))
    );
    assert_eq!(net.nodes[0].stats().penalized, 1);
}

#[test]
fn an_impostor_answering_a_request_in_the_owners_name_is_rejected() {
    let (mut net, id2) = stranger_net();
    let now = net.now;
    let impostor = SocketAddr::from(([10, 0, 0, 99], 4000));
    // Node 0 bootstraps through an address that turns out to be the impostor.
    net.nodes[0].bootstrap(now, &[impostor]).unwrap();
    let t = net.nodes[0].poll_transmit().unwrap();
    let request = Message::decode(&t.payload).unwrap();
    assert!(request.nonce.is_some(), "an unknown node is challenged");
    let cert2 = net.verifier.node_cert(2);
    let answer = Message {
        network: DEFAULT_NETWORK,
        txid: request.txid,
        sender_cert: &cert2,
        nonce: None,
        proof: None,
        cookie: None,
        padding: 0,
        body: Body::Nodes { nodes: Vec::new() },
    }
    .to_bytes();
    assert_eq!(
        net.nodes[0].handle_input(now, impostor, &answer),
        Err(Violation::BadProof.into())
    );
    assert!(net.nodes[0].table().get(&id2).is_none());
    assert_eq!(net.nodes[0].stats().penalized, 1);
    // A replayed Leave in node 1's name from elsewhere does not evict node 1.
    let id1 = net.nodes[1].id();
    let leave = Message {
        network: DEFAULT_NETWORK,
        txid: 9,
        sender_cert: &net.verifier.node_cert(1),
        nonce: None,
        proof: None,
        cookie: None,
        padding: 0,
        body: Body::Leave,
    }
    .to_bytes();
    let elsewhere = SocketAddr::from(([10, 0, 0, 98], 4000));
    net.nodes[0].handle_input(now, elsewhere, &leave).unwrap();
    assert!(net.nodes[0].table().get(&id1).is_some());
}

#[test]
fn a_proof_is_signed_once_per_requester_and_nonce() {
    let (mut net, _) = stranger_net();
    let now = net.now;
    let ping = |txid| {
        Message {
            network: DEFAULT_NETWORK,
            txid,
            sender_cert: &net.verifier.node_cert(2),
            nonce: Some([4; 16]),
            proof: None,
            cookie: None,
            padding: 0,
            body: Body::Ping,
        }
        .to_bytes()
    };
    let (a, b) = (ping(1), ping(2));
    net.nodes[1].handle_input(now, addr(2), &a).unwrap();
    net.nodes[1].handle_input(now, addr(2), &b).unwrap();
    assert_eq!(net.nodes[1].proofs.len(), 1);
    let proofs: Vec<Vec<u8>> = std::iter::from_fn(|| net.nodes[1].poll_transmit())
        .filter_map(|t| {
            Message::decode(&t.payload)
                .ok()
                .and_then(|m| m.proof.map(<[u8]>::to_vec))
        })
        .collect();
    assert_eq!(proofs.len(), 2);
    assert_eq!(proofs[0], proofs[1]);
    let id2 = net.nodes[2].id();
    assert!(
        net.verifier
            .verify_possession(
                &net.verifier.node_cert(1),
                &possession_message(&[4; 16], &id2),
                &proofs[0],
                UNIX_EPOCH
            )
            .is_ok()
    );
}

/// Publishes a record, takes its publisher offline for good, then crashes two
/// of its online holders every 90 minutes, four times (9 of 24 nodes down).
/// Returns the online holders at the end and what a lookup finds.
fn replicas_after_churn(max_replications: usize) -> (usize, Option<PresenceRecord>) {
    let mut config = Config::default();
    config.replication = 4;
    config.max_replications = max_replications;
    let mut net = Net::new(24, &config);
    let r = net.record("kate", 1);
    net.nodes[0].publish(net.now, r).unwrap();
    net.settle();
    assert!(net.holders("kate").len() >= 4);
    net.down[0] = true;
    for _ in 0..4 {
        for h in net.holders("kate").into_iter().take(2) {
            net.down[h] = true;
        }
        net.advance(Duration::from_secs(90 * 60));
    }
    let holders = net.holders("kate").len();
    let asker = (1..24)
        .find(|&i| !net.down[i] && net.nodes[i].record("kate").is_none())
        .unwrap();
    net.nodes[asker].find_user(net.now, "kate").unwrap();
    let events = net.settle();
    let found = lookups(&events).first().and_then(|o| o.record.clone());
    (holders, found)
}

#[test]
fn holders_re_replicate_so_records_outlive_their_publisher_and_churn() {
    let (holders, found) = replicas_after_churn(Config::default().max_replications);
    assert!(holders >= 3, "{holders} online holders");
    assert_eq!(found.map(|r| r.username), Some("kate".to_owned()));
    // Without holder-side replication the same churn loses the record.
    let (holders, found) = replicas_after_churn(0);
    assert_eq!(holders, 0);
    assert_eq!(found, None);
}

#[test]
fn a_record_stored_again_by_someone_else_postpones_its_replication() {
    let mut net = Net::new(3, &Config::default());
    let r = net.record("liam", 1);
    let now = net.now;
    net.nodes[1].accept_store(now, &r.to_bytes(), None).unwrap();
    let first = net.nodes[1].store.get(&r.key()).unwrap().due;
    assert!(first >= now + Duration::from_secs(3600));
    assert!(first <= now + Duration::from_secs(4500));
    // Half an hour later another holder's replication stores it again.
    let later = now + Duration::from_secs(1800);
    net.nodes[1]
        .accept_store(later, &r.to_bytes(), None)
        .unwrap();
    assert!(net.nodes[1].store.get(&r.key()).unwrap().due >= later + Duration::from_secs(3600));
    // Before it is due, maintenance starts no replication lookup.
    net.nodes[1].handle_timeout(later + Duration::from_secs(60));
    assert!(
        !net.nodes[1]
            .lookups
            .values()
            .any(|l| l.kind == LookupKind::Replicate)
    );
}

/// `net.nodes[0]`'s view of a source: a request from `from` (not in any table).
fn request(
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
fn spoofed(i: usize) -> SocketAddr {
    SocketAddr::from(([198, 18 + (i >> 16) as u8, (i >> 8) as u8, i as u8], 4000))
}

/// 10,000 sources each send one request with a fresh nonce, 1,000 a second for
/// 10 simulated seconds; returns the proofs node 0 signed and what it sent.
fn flood(config: &Config, echo_cookies: bool) -> (u64, Stats) {
    let mut net = Net::new(3, config);
    let cert = net.verifier.node_cert(7);
    let start = net.now;
    for i in 0..10_000usize {
        let now = start + Duration::from_millis(i as u64);
        let from = spoofed(i);
        let cookie = echo_cookies.then(|| net.nodes[0].validation.cookie_for(from));
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let bytes = request(&cert, i as u64, Some(nonce), cookie, 1200, Body::Ping);
        let _ = net.nodes[0].handle_input(now, from, &bytes);
        while net.nodes[0].poll_transmit().is_some() {}
    }
    (net.nodes[0].stats().proofs_signed, net.nodes[0].stats())
}

#[test]
fn a_flood_of_fresh_nonces_from_10_000_sources_signs_at_the_global_budget() {
    let config = Config::default();
    let (rate, burst) = (config.proof_rate as u64, config.proof_burst as u64);
    // Spoofed sources (they never see our cookies) may use half the bucket.
    let (signed, stats) = flood(&config, false);
    assert!(signed <= burst / 2 + rate * 10 + 1, "{signed}");
    assert!(signed >= rate * 10 - 1, "the budget is used: {signed}");
    assert_eq!(stats.proofs_refused, 10_000 - signed);
    assert_eq!(stats.cookies_sent, 10_000 - signed, "the rest get a cookie");
    // Sources that echo cookies (a botnet) get the whole bucket, no more.
    let (signed, stats) = flood(&config, true);
    assert!(signed <= burst + rate * 10 + 1, "{signed}");
    assert!(signed >= burst / 2 + rate * 10, "{signed}");
    assert_eq!(stats.proofs_refused, 10_000 - signed, "dropped unanswered");
    assert_eq!(stats.cookies_sent, 0);
    // The per-IP rate limit alone would have signed for every source.
    let mut unbounded = config;
    unbounded.proof_rate = 100_000.0;
    unbounded.proof_burst = 1_000_000.0;
    assert_eq!(flood(&unbounded, true).0, 10_000);
}

/// 10,000 spoofed sources each send one padded Ping with a certificate never
/// seen (a cache miss each), 1,000 a second for 10 simulated seconds; what node 0
/// counted.
fn certificate_flood(config: &Config, echo_cookies: bool) -> Stats {
    let mut net = Net::new(3, config);
    let start = net.now;
    for i in 0..10_000usize {
        let now = start + Duration::from_millis(i as u64);
        let from = spoofed(i);
        let cookie = echo_cookies.then(|| net.nodes[0].validation.cookie_for(from));
        let cert = net.verifier.node_cert(1_000 + i as u64);
        let bytes = request(&cert, i as u64, None, cookie, 1200, Body::Ping);
        let _ = net.nodes[0].handle_input(now, from, &bytes);
        while net.nodes[0].poll_transmit().is_some() {}
    }
    net.nodes[0].stats()
}

#[test]
fn a_flood_of_new_certificates_from_10_000_sources_is_verified_at_the_global_budget() {
    let mut config = Config::default();
    config.verify_rate = 100.0;
    config.verify_burst = 400.0;
    let before = Net::new(3, &config).nodes[0].stats().certs_verified;
    // Spoofed sources (they never see our cookies) may use half the bucket; the
    // rest get a cookie, which costs no verification.
    let stats = certificate_flood(&config, false);
    let verified = stats.certs_verified - before;
    assert!(verified <= 200 + 1_000 + 1, "{verified}");
    assert!(verified >= 1_000 - 1, "the budget is used: {verified}");
    assert_eq!(stats.verifications_refused, 10_000 - verified);
    assert_eq!(stats.cookies_sent, 10_000 - verified);
    // Sources that echo cookies get the whole bucket, no more, and are dropped.
    let stats = certificate_flood(&config, true);
    let verified = stats.certs_verified - before;
    assert!(verified <= 400 + 1_000 + 1, "{verified}");
    assert!(verified >= 200 + 1_000, "{verified}");
    assert_eq!(stats.verifications_refused, 10_000 - verified);
    assert_eq!(stats.cookies_sent, 0);
    // The default budget (2,000 a second) covers this rate: every one verified.
    let stats = certificate_flood(&Config::default(), true);
    assert_eq!(stats.certs_verified - before, 10_000);
    assert_eq!(stats.verifications_refused, 0);
}

#[test]
fn a_store_request_pays_for_its_record_check() {
    let mut config = Config::default();
    config.verify_rate = 1.0;
    config.verify_burst = 2.0;
    let mut net = Net::new(3, &config);
    let mut r = net.record("alice", 1);
    net.verifier.sign(&mut r);
    let rec = r.to_bytes();
    let now = net.now;
    // A certificate not in the cache and the record: the whole bucket, for a
    // source that echoes its cookie.
    let cert = net.verifier.node_cert(1);
    let cookie = Some(net.nodes[0].validation.cookie_for(addr(1)));
    let store = request(&cert, 1, None, cookie, 0, Body::Store { record: &rec });
    net.nodes[0].certs.clear();
    net.nodes[0].handle_input(now, addr(1), &store).unwrap();
    net.nodes[0].certs.clear();
    assert_eq!(
        net.nodes[0].handle_input(now, addr(1), &store),
        Err(Limit::VerifyBudget.into())
    );
    assert_eq!(net.nodes[0].stats().verifications_refused, 1);
}

#[test]
fn known_peers_keep_the_reserved_half_of_the_budget_during_a_spoofed_flood() {
    let mut net = Net::new(3, &Config::default());
    let cert = net.verifier.node_cert(7);
    let now = net.now;
    for i in 0..1_000usize {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let b = request(&cert, i as u64, Some(nonce), None, 1200, Body::Ping);
        let _ = net.nodes[0].handle_input(now, spoofed(i), &b);
    }
    let signed = net.nodes[0].stats().proofs_signed;
    assert_eq!(signed, 200, "the upper half of the bucket");
    // Node 1 (in node 0's table) still gets its proof, from the reserve.
    let b = request(
        &net.verifier.node_cert(1),
        1,
        Some([9; NONCE_LEN]),
        None,
        0,
        Body::Ping,
    );
    net.nodes[0].handle_input(now, addr(1), &b).unwrap();
    assert_eq!(net.nodes[0].stats().proofs_signed, signed + 1);
}

#[test]
fn nothing_larger_than_the_request_goes_to_an_unvalidated_address() {
    // Node 0 knows 24 nodes (full Nodes answers) and holds a record and search
    // entries, so that every kind of answer it can give is as large as it gets.
    let mut net = Net::new(25, &Config::default());
    let mut r = net.record("alice", 1);
    r.display_name = "Alice Liddell".into();
    net.verifier.sign(&mut r);
    let now = net.now;
    net.nodes[0].accept_store(now, &r.to_bytes(), None).unwrap();
    let word = word_key("liddell");
    net.nodes[0]
        .accept_word(now, word, &r.to_bytes(), None)
        .unwrap();
    let rec = r.to_bytes();
    let stale_cookie = [0x5a; COOKIE_LEN];
    let certs = [net.verifier.node_cert(30), net.verifier.node_cert(1)];
    let mut sent_in: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    let mut got: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    let mut kinds: BTreeMap<u8, usize> = BTreeMap::new();
    let mut i = 0;
    let bodies = [
        Body::Ping,
        Body::FindNode {
            target: NodeId([3; 32]),
        },
        Body::FindValue {
            key: user_key("alice"),
        },
        Body::FindValue { key: word },
        Body::Store { record: &rec },
        Body::StoreWord {
            key: word,
            record: &rec,
        },
        Body::Leave,
        Body::Pong,
        Body::StoreAck { stored: true },
        Body::Nodes { nodes: Vec::new() },
    ];
    for cert in &certs {
        for body in &bodies {
            for nonce in [None, Some([1; NONCE_LEN])] {
                for cookie in [None, Some(stale_cookie)] {
                    for padding in [0, 200, 1200, 2048] {
                        let m = Message {
                            network: DEFAULT_NETWORK,
                            txid: i as u64,
                            sender_cert: cert,
                            nonce: nonce.filter(|_| body.is_request()),
                            proof: None,
                            cookie: cookie.filter(|_| *body != Body::Leave),
                            padding: if body.is_request() { padding } else { 0 },
                            body: body.clone(),
                        }
                        .to_bytes();
                        // Node 1's certificate from an address that is not node 1's.
                        let from = spoofed(i);
                        i += 1;
                        *sent_in.entry(from).or_default() += m.len();
                        let _ = net.nodes[0].handle_input(now, from, &m);
                    }
                }
            }
        }
    }
    // Whatever the node sends later (retried challenges, maintenance) counts too.
    let mut t = now;
    for step in 0..200 {
        t += Duration::from_millis(if step < 100 { 50 } else { 1000 });
        net.nodes[0].handle_timeout(t);
        while let Some(out) = net.nodes[0].poll_transmit() {
            if sent_in.contains_key(&out.dst) {
                *got.entry(out.dst).or_default() += out.payload.len();
                let kind = Message::decode(&out.payload).unwrap().body.kind();
                *kinds.entry(kind).or_default() += 1;
            }
        }
    }
    for (a, n) in &got {
        assert!(
            n <= &sent_in[a],
            "{n} bytes to {a}, which sent {}",
            sent_in[a]
        );
    }
    // Not vacuous: padded requests got full answers (Pong, Nodes, Value,
    // StoreAck) and challenges (Ping) where they fit, short ones a Cookie.
    for kind in [1, 2, 4, 6, 8, 11] {
        assert!(
            kinds.get(&kind).is_some_and(|&n| n > 0),
            "{kind}: {kinds:?}"
        );
    }
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

#[test]
fn budget_and_cookie_settings_out_of_bounds_are_refused() {
    for f in [
        (|c: &mut Config| c.proof_rate = 0.0) as fn(&mut Config),
        |c| c.proof_burst = 1.0,
        |c| c.verify_rate = 0.5,
        |c| c.verify_burst = 1.0,
        |c| c.cookie_lifetime = Duration::ZERO,
        |c| c.max_validated = 1,
        |c| c.pad_requests_to = 5000,
    ] {
        let mut c = Config::default();
        f(&mut c);
        assert!(c.validate().is_err());
    }
}
