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
        }
        ok
    }
}

#[cfg(test)]
// Tests configure the way callers do (STYLE.md section 8).
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

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
}
