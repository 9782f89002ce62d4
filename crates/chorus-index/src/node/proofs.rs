//! Proof of possession (S/Kademlia): the proofs this node signs for peers that
//! challenge it, within a global signing budget, and the peers that proved to us
//! that they hold the key their certificate names.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_crypto::cert::NodeId;
use chorus_framing::Entropy;

use super::{Config, Node, Stats};
use crate::error::Error;
use crate::message::{Contact, NONCE_LEN, possession_message};
use crate::rate::GlobalBudget;
use crate::record::Signer;

/// The proofs this node signs: once per requester and nonce (RSA costs about
/// 0.5 ms), then from a bounded cache, and no more than the global budget
/// (`proof_rate`, `proof_burst`) allows.
pub(super) struct Proofs {
    pub(super) signer: Arc<dyn Signer>,
    /// Proofs made for (requester, nonce), oldest first for eviction.
    made: BTreeMap<(NodeId, [u8; NONCE_LEN]), Bytes>,
    order: VecDeque<(NodeId, [u8; NONCE_LEN])>,
    capacity: usize,
    budget: GlobalBudget,
    rate: f32,
    burst: f32,
    /// The length of our signatures (to know whether an answer with a proof fits
    /// before signing it).
    sig_len: usize,
}

impl Proofs {
    pub(super) fn new(
        signer: Arc<dyn Signer>,
        sig_len: usize,
        config: &Config,
        now: Instant,
    ) -> Self {
        Self {
            signer,
            made: BTreeMap::new(),
            order: VecDeque::new(),
            capacity: config.proof_cache,
            budget: GlobalBudget::new(config.proof_burst, now),
            rate: config.proof_rate,
            burst: config.proof_burst,
            sig_len,
        }
    }

    /// Proofs in the cache.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.made.len()
    }

    /// The length of the proof for `requester`'s `nonce`.
    pub(super) fn len_for(&self, requester: NodeId, nonce: [u8; NONCE_LEN]) -> usize {
        self.made
            .get(&(requester, nonce))
            .map_or(self.sig_len, Bytes::len)
    }

    /// The length of our signatures.
    pub(super) const fn sig_len(&self) -> usize {
        self.sig_len
    }

    /// Our proof of key possession for `requester`'s `nonce`: signed once (counted
    /// in `stats`), then answered from the cache. `None` if a signature is needed
    /// and the global budget has none left (for a source that has not proven its
    /// address, `unvalidated`, none in the bucket's upper half).
    pub(super) fn prove(
        &mut self,
        now: Instant,
        requester: NodeId,
        nonce: [u8; NONCE_LEN],
        unvalidated: bool,
        stats: &mut Stats,
    ) -> Result<Option<Bytes>, Error> {
        if let Some(p) = self.made.get(&(requester, nonce)) {
            return Ok(Some(p.clone()));
        }
        if !self.budget.take(now, self.rate, self.burst, unvalidated) {
            return Ok(None);
        }
        let sig = self.signer.sign(&possession_message(&nonce, &requester))?;
        stats.proofs_signed += 1;
        while self.made.len() >= self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.made.remove(&old);
        }
        self.made.insert((requester, nonce), sig.clone());
        self.order.push_back((requester, nonce));
        Ok(Some(sig))
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.made.values().map(|p| 128 + p.len()).sum::<usize>()
    }
}

/// The challenges this node sends and the contacts that answered them: which
/// peers proved possession of their certified key, at which address, and when.
pub(super) struct Proven {
    /// Keys the possession challenges (nonces) this node sends.
    secret: [u8; 32],
    /// Contacts that proved possession of their key: id -> (address, when).
    contacts: BTreeMap<NodeId, (SocketAddr, Instant)>,
    capacity: usize,
    ttl: Duration,
}

impl Proven {
    /// Draws the challenge secret from `entropy`.
    pub(super) fn new(config: &Config, entropy: &mut dyn Entropy) -> Result<Self, Error> {
        let mut secret = [0u8; 32];
        entropy.fill(&mut secret)?;
        Ok(Self {
            secret,
            contacts: BTreeMap::new(),
            capacity: config.max_verified,
            ttl: config.cert_cache_ttl,
        })
    }

    /// The nonce we challenge the node at `addr` with, `elapsed` after the node
    /// started: a keyed hash of the address and a 10-minute window, so parallel
    /// requests to one peer share a nonce (and the peer signs once) while a proof
    /// made for another address is worthless.
    pub(super) fn nonce_for(&self, addr: SocketAddr, elapsed: Duration) -> [u8; NONCE_LEN] {
        let window = elapsed.as_secs() / 600;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.secret);
        match addr.ip() {
            std::net::IpAddr::V4(ip) => ctx.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => ctx.update(&ip.octets()),
        }
        ctx.update(&addr.port().to_be_bytes());
        ctx.update(&window.to_be_bytes());
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(
            ctx.finish()
                .as_ref()
                .get(..NONCE_LEN)
                .unwrap_or(&[0; NONCE_LEN]),
        );
        n
    }

    /// Whether `id` proved possession at `addr` within `cert_cache_ttl`.
    pub(super) fn contains(&self, id: &NodeId, addr: SocketAddr, now: Instant) -> bool {
        self.contacts
            .get(id)
            .is_some_and(|(a, at)| *a == addr && now < *at + self.ttl)
    }

    /// Remembers that `contact` proved possession `now` (bounded by `max_verified`:
    /// expired entries go first, then an arbitrary one).
    pub(super) fn insert(&mut self, contact: Contact, now: Instant) {
        if self.contacts.len() >= self.capacity && !self.contacts.contains_key(&contact.id) {
            let ttl = self.ttl;
            self.contacts.retain(|_, (_, at)| now < *at + ttl);
            if self.contacts.len() >= self.capacity {
                // Keys are hashes: the first one is an arbitrary victim.
                self.contacts.pop_first();
            }
        }
        self.contacts.insert(contact.id, (contact.addr, now));
    }

    /// Forgets `id` if it proved possession at `from`.
    pub(super) fn forget(&mut self, id: &NodeId, from: SocketAddr) {
        if self.contacts.get(id).is_some_and(|(a, _)| *a == from) {
            self.contacts.remove(id);
        }
    }

    /// Proofs older than `cert_cache_ttl` no longer count: forgets them.
    pub(super) fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.contacts.retain(|_, (_, at)| now < *at + ttl);
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.contacts.len() * 96
    }
}

impl Node {
    /// Whether `id` at `addr` has proved possession of its key: it is in the routing
    /// table at that address (entries are proven before they are inserted, or added
    /// by the caller), or it proved it within `cert_cache_ttl`.
    pub(super) fn is_proven(&self, id: &NodeId, addr: SocketAddr, now: Instant) -> bool {
        self.table.get(id).is_some_and(|e| e.contact.addr == addr)
            || self.proven.contains(id, addr, now)
    }

    /// The nonce we challenge the node at `addr` with (see [`Proven::nonce_for`]).
    pub(super) fn nonce_for(&self, addr: SocketAddr, now: Instant) -> [u8; NONCE_LEN] {
        self.proven
            .nonce_for(addr, now.saturating_duration_since(self.anchor.0))
    }
}

#[cfg(test)]
// Tests configure the way callers do (STYLE.md section 8).
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::node::tests::*;
    use crate::sim::SimVerifier;
    use chorus_framing::SeededEntropy;

    #[test]
    fn a_proof_is_signed_once_and_within_the_budget() {
        let now = Instant::now();
        let mut config = Config::default();
        config.proof_burst = 4.0;
        config.proof_cache = 2;
        let signer = SimVerifier::new(1).node_key(0);
        let mut proofs = Proofs::new(signer, 64, &config, now);
        let mut stats = Stats::default();
        let a = proofs.prove(now, NodeId([1; 32]), [1; 16], false, &mut stats);
        let again = proofs.prove(now, NodeId([1; 32]), [1; 16], true, &mut stats);
        assert_eq!(a.unwrap(), again.unwrap());
        assert_eq!(stats.proofs_signed, 1);
        // An unvalidated source may use the upper half of the bucket only: 2 of 4.
        let p = proofs.prove(now, NodeId([2; 32]), [1; 16], true, &mut stats);
        assert!(p.unwrap().is_some());
        let p = proofs.prove(now, NodeId([3; 32]), [1; 16], true, &mut stats);
        assert_eq!(p.unwrap(), None);
        let p = proofs.prove(now, NodeId([3; 32]), [1; 16], false, &mut stats);
        assert!(p.unwrap().is_some());
        assert_eq!(proofs.len(), 2, "bounded cache");
        assert_eq!(stats.proofs_signed, 3);
    }

    #[test]
    fn nonces_depend_on_the_address_and_the_ten_minute_window() {
        let mut entropy = SeededEntropy::new(5);
        let proven = Proven::new(&Config::default(), &mut entropy).unwrap();
        let (a, b) = (contact(1).addr, contact(2).addr);
        let n = proven.nonce_for(a, Duration::from_secs(10));
        assert_eq!(proven.nonce_for(a, Duration::from_secs(599)), n);
        assert_ne!(proven.nonce_for(b, Duration::from_secs(10)), n);
        assert_ne!(proven.nonce_for(a, Duration::from_secs(600)), n);
    }

    #[test]
    fn proven_contacts_count_at_their_address_until_the_ttl() {
        let now = Instant::now();
        let mut config = Config::default();
        config.max_verified = 16;
        let ttl = config.cert_cache_ttl;
        let mut proven = Proven::new(&config, &mut SeededEntropy::new(5)).unwrap();
        let c = contact(1);
        proven.insert(c, now);
        assert!(proven.contains(&c.id, c.addr, now));
        assert!(!proven.contains(&c.id, contact(2).addr, now), "elsewhere");
        assert!(!proven.contains(&c.id, c.addr, now + ttl));
        proven.forget(&c.id, contact(2).addr);
        assert!(proven.contains(&c.id, c.addr, now), "only at its address");
        proven.forget(&c.id, c.addr);
        assert!(!proven.contains(&c.id, c.addr, now));
        for i in 0..40 {
            proven.insert(contact(i), now);
        }
        assert_eq!(proven.memory_bytes(), 16 * 96, "bounded");
        proven.expire(now + ttl);
        assert_eq!(proven.memory_bytes(), 0);
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
}
