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
    use crate::sim::SimVerifier;
    use chorus_framing::SeededEntropy;

    fn contact(i: u8) -> Contact {
        Contact {
            id: NodeId([i; 32]),
            addr: SocketAddr::from(([192, 0, 2, i], 4000)),
        }
    }

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
}
