//! Records held for the index: bounded in all and per peer, evicting the record
//! farthest from us when full, expired by maintenance.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use chorus_crypto::cert::NodeId;

use super::{Config, Node};
use crate::error::{Error, Limit};
use crate::id::{closer, distance};
use crate::record::PresenceRecord;

/// A verified record held here, with its encoding (sent as is in answers).
#[derive(Debug)]
pub(super) struct Stored {
    pub(super) record: PresenceRecord,
    pub(super) bytes: Bytes,
    pub(super) from: Option<NodeId>,
    /// When this holder re-replicates the record (presence records only).
    pub(super) due: Instant,
}

impl Stored {
    pub(super) fn new(record: PresenceRecord, from: Option<NodeId>, due: Instant) -> Self {
        Self {
            bytes: record.to_bytes(),
            record,
            from,
            due,
        }
    }
}

/// The presence records this node holds, by user key (`max_records` in all,
/// `max_records_per_peer` per peer that stored them).
#[derive(Debug)]
pub(super) struct Store {
    records: BTreeMap<NodeId, Stored>,
    per_peer: BTreeMap<NodeId, usize>,
    max_records: usize,
    max_per_peer: usize,
}

/// What the store holds of a record offered to it, before it is checked.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Held {
    /// Nothing, or an older version: the offer must be checked and admitted.
    Older,
    /// This very record (its replication timer was pushed back).
    Same,
    /// An equal or newer version.
    Newer,
}

impl Store {
    pub(super) fn new(config: &Config) -> Self {
        Self {
            records: BTreeMap::new(),
            per_peer: BTreeMap::new(),
            max_records: config.max_records,
            max_per_peer: config.max_records_per_peer,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    pub(super) fn get(&self, key: &NodeId) -> Option<&Stored> {
        self.records.get(key)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Stored)> {
        self.records.iter()
    }

    /// Up to `n` held records on either side of `id` in key order: those sharing
    /// the longest prefixes with it.
    pub(super) fn around(&self, id: NodeId, n: usize) -> impl Iterator<Item = (&NodeId, &Stored)> {
        let after = self.records.range(id..).take(n);
        let before = self.records.range(..id).rev().take(n);
        after.chain(before)
    }

    /// Keys whose re-replication is due at `now`, at most `n`, in key order.
    pub(super) fn due(&self, now: Instant, n: usize) -> Vec<NodeId> {
        self.records
            .iter()
            .filter(|(_, s)| s.due <= now)
            .map(|(k, _)| *k)
            .take(n)
            .collect()
    }

    /// Moves the re-replication of `key` to `due`.
    pub(super) fn set_due(&mut self, key: &NodeId, due: Instant) {
        if let Some(s) = self.records.get_mut(key) {
            s.due = due;
        }
    }

    /// Compares an offered `record` with the version held; holding this very
    /// record postpones its re-replication to `due` at the latest.
    pub(super) fn offer(&mut self, record: &PresenceRecord, due: Instant) -> Held {
        match self.records.get_mut(&record.key()) {
            Some(held) if held.record == *record => {
                // Someone else replicated it just now: our turn can wait.
                held.due = held.due.max(due);
                Held::Same
            }
            Some(held) if !record.supersedes(&held.record) => Held::Newer,
            _ => Held::Older,
        }
    }

    /// Stores a checked record, replacing the version held: within `from`'s
    /// share, and when full only in place of the record farthest from `own` if the
    /// new one is closer.
    pub(super) fn admit(
        &mut self,
        own: &NodeId,
        record: PresenceRecord,
        from: Option<NodeId>,
        due: Instant,
    ) -> Result<(), Error> {
        let key = record.key();
        if let Some(peer) = from {
            let count = self.per_peer.get(&peer).copied().unwrap_or(0);
            let replacing_own = self.records.get(&key).is_some_and(|s| s.from == Some(peer));
            if !replacing_own && count >= self.max_per_peer {
                return Err(Limit::PeerStoreFull {
                    max: self.max_per_peer,
                }
                .into());
            }
        }
        if !self.records.contains_key(&key) && self.records.len() >= self.max_records {
            // Full: evict the record farthest from us if the new one is closer.
            let farthest = self
                .records
                .keys()
                .max_by_key(|k| distance(own, k))
                .copied();
            match farthest {
                Some(f) if closer(own, &key, &f) => self.remove(&f),
                _ => {
                    return Err(Limit::StoreFull {
                        max: self.max_records,
                    }
                    .into());
                }
            }
        }
        self.remove(&key);
        if let Some(peer) = from {
            *self.per_peer.entry(peer).or_insert(0) += 1;
        }
        self.records.insert(key, Stored::new(record, from, due));
        Ok(())
    }

    /// Drops the record of `key`, if held, from its peer's share too.
    pub(super) fn remove(&mut self, key: &NodeId) {
        if let Some(old) = self.records.remove(key)
            && let Some(peer) = old.from
            && let Some(c) = self.per_peer.get_mut(&peer)
        {
            *c -= 1;
            if *c == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }

    /// Drops the records expired at `secs` (Unix time).
    pub(super) fn expire(&mut self, secs: u64) {
        let expired: Vec<NodeId> = self
            .records
            .iter()
            .filter(|(_, s)| s.record.is_expired(secs))
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            self.remove(&k);
        }
    }

    pub(super) fn memory_bytes(&self) -> usize {
        let records: usize = self
            .records
            .values()
            .map(|s| {
                96 + size_of::<Stored>()
                    + s.bytes.len()
                    + s.record.username.len()
                    + s.record.display_name.len()
                    + 32 * (s.record.super_nodes.len() + s.record.candidates.len())
            })
            .sum();
        records + self.per_peer.len() * 64
    }
}

impl Node {
    /// Stores a record a peer sent (or we publish). `Ok(false)`: not stored because
    /// we hold a newer one.
    pub(super) fn accept_store(
        &mut self,
        now: Instant,
        bytes: &[u8],
        from: Option<NodeId>,
    ) -> Result<bool, Error> {
        let record = PresenceRecord::decode(bytes)?;
        let due = self.replicate_due(now);
        match self.store.offer(&record, due) {
            Held::Same => return Ok(true),
            Held::Newer => return Ok(false),
            Held::Older => {}
        }
        self.check_record(&record, now)?;
        self.store.admit(&self.id, record, from, due)?;
        Ok(true)
    }
}

#[cfg(test)]
// Tests configure the way callers do (STYLE.md section 8).
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::node::tests::*;

    fn record(name: &str, version: u64) -> PresenceRecord {
        unsigned_record(name, name, version, 2000)
    }

    fn store(max_records: usize, max_records_per_peer: usize) -> Store {
        let mut config = Config::default();
        config.max_records = max_records;
        config.max_records_per_peer = max_records_per_peer;
        Store::new(&config)
    }

    #[test]
    fn an_offer_is_compared_with_the_version_held() {
        let now = Instant::now();
        let mut s = store(8, 8);
        assert_eq!(s.offer(&record("ann", 2), now), Held::Older, "nothing held");
        s.admit(&NodeId([0; 32]), record("ann", 2), None, now)
            .unwrap();
        assert_eq!(s.offer(&record("ann", 1), now), Held::Newer);
        assert_eq!(s.offer(&record("ann", 3), now), Held::Older);
        let later = now + std::time::Duration::from_secs(60);
        assert_eq!(s.offer(&record("ann", 2), later), Held::Same);
        assert_eq!(s.get(&record("ann", 2).key()).map(|h| h.due), Some(later));
    }

    #[test]
    fn a_peers_share_is_bounded_and_freed_when_its_records_go() {
        let now = Instant::now();
        let own = NodeId([0; 32]);
        let peer = Some(NodeId([7; 32]));
        let mut s = store(8, 1);
        s.admit(&own, record("ann", 1), peer, now).unwrap();
        assert_eq!(
            s.admit(&own, record("bob", 1), peer, now),
            Err(Limit::PeerStoreFull { max: 1 }.into())
        );
        // Replacing its own record is within its share.
        s.admit(&own, record("ann", 2), peer, now).unwrap();
        s.remove(&record("ann", 2).key());
        s.admit(&own, record("bob", 1), peer, now).unwrap();
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn a_full_store_evicts_the_farthest_record_for_a_closer_one() {
        let now = Instant::now();
        let names = ["ann", "bob", "cat"];
        let keys = names.map(|n| record(n, 1).key());
        // Our id is the key of "ann": it is the closest of the three.
        let own = keys[0];
        let farthest = *keys[1..].iter().max_by_key(|k| distance(&own, k)).unwrap();
        let nearer = *keys[1..].iter().find(|k| **k != farthest).unwrap();
        let name = |k: &NodeId| names[keys.iter().position(|x| x == k).unwrap()];
        let mut s = store(1, 8);
        s.admit(&own, record(name(&nearer), 1), None, now).unwrap();
        assert_eq!(
            s.admit(&own, record(name(&farthest), 1), None, now),
            Err(Limit::StoreFull { max: 1 }.into())
        );
        s.admit(&own, record("ann", 1), None, now).unwrap();
        assert!(s.get(&own).is_some() && s.get(&nearer).is_none());
    }

    #[test]
    fn expired_records_are_dropped() {
        let now = Instant::now();
        let mut s = store(8, 8);
        let peer = Some(NodeId([7; 32]));
        s.admit(&NodeId([0; 32]), record("ann", 1), peer, now)
            .unwrap();
        s.expire(2000);
        assert_eq!(s.len(), 1);
        s.expire(2001);
        assert_eq!(s.len(), 0);
        assert_eq!(s.memory_bytes(), 0, "the peer's share is gone too");
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
}
