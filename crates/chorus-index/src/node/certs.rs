//! The cache of verified node certificates: a known sender costs a hash instead of
//! an RSA verification.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chorus_crypto::cert::NodeId;

use super::{Config, Node};
use crate::error::Violation;

/// Node certificates verified in the last `cert_cache_ttl`, by SHA-256, with the
/// node id they give (`cert_cache` of them; 0 turns the cache off).
#[derive(Debug)]
pub(super) struct CertCache {
    entries: BTreeMap<[u8; 32], (NodeId, Instant)>,
    capacity: usize,
    ttl: Duration,
}

impl CertCache {
    pub(super) fn new(config: &Config) -> Self {
        Self {
            entries: BTreeMap::new(),
            capacity: config.cert_cache,
            ttl: config.cert_cache_ttl,
        }
    }

    /// The cache key of `cert`, `None` if the cache is off.
    pub(super) fn key(&self, cert: &[u8]) -> Option<[u8; 32]> {
        (self.capacity > 0).then(|| {
            let mut key = [0u8; 32];
            key.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, cert).as_ref());
            key
        })
    }

    /// The node id of the certificate cached under `key`, if verified within the TTL.
    pub(super) fn get(&self, key: &[u8; 32], now: Instant) -> Option<NodeId> {
        self.entries
            .get(key)
            .filter(|(_, at)| now < *at + self.ttl)
            .map(|(id, _)| *id)
    }

    /// Remembers a certificate verified `now`: when full, expired entries go first,
    /// then an arbitrary one.
    pub(super) fn insert(&mut self, key: [u8; 32], id: NodeId, now: Instant) {
        let ttl = self.ttl;
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, (_, at)| now < *at + ttl);
            if self.entries.len() >= self.capacity {
                // Keys are hashes: the first one is an arbitrary victim.
                self.entries.pop_first();
            }
        }
        self.entries.insert(key, (id, now));
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(super) fn clear(&mut self) {
        self.entries.clear();
    }

    #[cfg(test)]
    pub(super) fn values(&self) -> impl Iterator<Item = &(NodeId, Instant)> {
        self.entries.values()
    }
}

impl Node {
    /// The node id of a message's sender, from its certificate: found in the cache
    /// of certificates verified in the last `cert_cache_ttl` (keyed by the
    /// certificate's SHA-256), or verified (RSA in production). A request's check
    /// (`budget`: whether its source is unvalidated) is paid from the global
    /// verification budget; `None` when that is spent.
    pub(super) fn verify_sender(
        &mut self,
        cert: &[u8],
        now: Instant,
        budget: Option<bool>,
    ) -> Result<Option<NodeId>, Violation> {
        let key = self.certs.key(cert);
        if let Some(id) = key.and_then(|k| self.certs.get(&k, now)) {
            return Ok(Some(id));
        }
        if let Some(unvalidated) = budget
            && !self.take_verify_token(now, unvalidated)
        {
            return Ok(None);
        }
        self.stats.certs_verified += 1;
        let id = self.verifier.verify_node(cert, self.wall(now))?;
        if let Some(key) = key {
            self.certs.insert(key, id, now);
        }
        Ok(Some(id))
    }

    /// Takes a token from the global verification budget (a source that has not
    /// proven its address, `unvalidated`, only from the bucket's upper half);
    /// counts a refusal.
    pub(super) fn take_verify_token(&mut self, now: Instant, unvalidated: bool) -> bool {
        let (rate, burst) = (self.config.verify_rate, self.config.verify_burst);
        let ok = self.verify_tokens.take(now, rate, burst, unvalidated);
        if !ok {
            self.stats.verifications_refused += 1;
            tracing::debug!("verification budget spent: request refused");
        }
        ok
    }
}

#[cfg(test)]
// Tests configure the way callers do (STYLE.md section 8).
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::node::tests::*;

    fn cache(capacity: usize) -> CertCache {
        let mut config = Config::default();
        config.cert_cache = capacity;
        CertCache::new(&config)
    }

    #[test]
    fn a_cached_certificate_is_trusted_until_its_ttl() {
        let now = Instant::now();
        let mut c = cache(4);
        let key = c.key(b"cert").unwrap();
        assert_eq!(c.key(b"cert"), Some(key), "keyed by its hash");
        assert_ne!(c.key(b"other"), Some(key));
        c.insert(key, NodeId([1; 32]), now);
        assert_eq!(c.get(&key, now), Some(NodeId([1; 32])));
        let ttl = Config::default().cert_cache_ttl;
        assert_eq!(c.get(&key, now + ttl), None);
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first() {
        let now = Instant::now();
        let ttl = Config::default().cert_cache_ttl;
        let mut c = cache(2);
        let keys = [b"a", b"b", b"c"].map(|cert| c.key(cert).unwrap());
        c.insert(keys[0], NodeId([0; 32]), now);
        c.insert(keys[1], NodeId([1; 32]), now + ttl);
        c.insert(keys[2], NodeId([2; 32]), now + ttl);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&keys[1], now + ttl), Some(NodeId([1; 32])));
        assert_eq!(c.get(&keys[2], now + ttl), Some(NodeId([2; 32])));
    }

    #[test]
    fn a_cache_of_zero_is_off() {
        assert_eq!(cache(0).key(b"cert"), None);
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
}
