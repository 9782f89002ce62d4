//! Replication: records this node publishes (stored on the `replication` closest
//! nodes and republished), records it holds for others (re-replicated on a jittered
//! timer), and hand-off to newcomers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chorus_crypto::cert::NodeId;

use super::lookup::LookupKind;
use super::requests::Purpose;
use super::{Event, Node};
use crate::id::{closer, word_key};
use crate::message::{Body, Contact};
use crate::record::PresenceRecord;

/// A record this node publishes.
#[derive(Debug)]
pub(super) struct Published {
    pub(super) record: PresenceRecord,
    /// When it is next republished.
    pub(super) next: Instant,
}

/// The stores of one publication in flight.
#[derive(Debug)]
struct StoreOp {
    username: String,
    acked: usize,
    outstanding: usize,
}

/// The records this node publishes, by user key, and the stores of each
/// publication in flight, by operation id.
#[derive(Debug, Default)]
pub(super) struct Publications {
    records: BTreeMap<NodeId, Published>,
    ops: BTreeMap<u64, StoreOp>,
}

impl Publications {
    pub(super) fn get(&self, key: &NodeId) -> Option<&Published> {
        self.records.get(key)
    }

    pub(super) fn insert(&mut self, key: NodeId, p: Published) {
        self.records.insert(key, p);
    }

    /// Stops republishing the record of `key`.
    pub(super) fn withdraw(&mut self, key: &NodeId) {
        self.records.remove(key);
    }

    /// Forgets every publication (the node left).
    pub(super) fn clear(&mut self) {
        self.records.clear();
        self.ops.clear();
    }

    /// Drops the records expired at `secs` (Unix time).
    pub(super) fn expire(&mut self, secs: u64) {
        self.records.retain(|_, p| !p.record.is_expired(secs));
    }

    /// Keys whose republishing is due at `now`, in key order.
    pub(super) fn due(&self, now: Instant) -> Vec<NodeId> {
        self.records
            .iter()
            .filter(|(_, p)| p.next <= now)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Moves the republishing of `key` to `next`; the display-name words of its
    /// record.
    pub(super) fn reschedule(&mut self, key: &NodeId, next: Instant) -> Vec<String> {
        self.records.get_mut(key).map_or_else(Vec::new, |p| {
            p.next = next;
            p.record.words()
        })
    }

    /// Waits for `outstanding` acknowledgements of publication `op` of
    /// `username`'s record, `acked` of them already in; the event if none is
    /// outstanding.
    fn start(
        &mut self,
        op: u64,
        username: String,
        acked: usize,
        outstanding: usize,
    ) -> Option<Event> {
        if outstanding == 0 {
            return Some(Event::Published {
                username,
                replicas: acked,
            });
        }
        self.ops.insert(
            op,
            StoreOp {
                username,
                acked,
                outstanding,
            },
        );
        None
    }

    /// A store of publication `op` ended (`stored` if acknowledged); the event
    /// when it was the last one.
    fn done(&mut self, op: u64, stored: bool) -> Option<Event> {
        let s = self.ops.get_mut(&op)?;
        s.outstanding = s.outstanding.saturating_sub(1);
        if stored {
            s.acked += 1;
        }
        if s.outstanding > 0 {
            return None;
        }
        let s = self.ops.remove(&op)?;
        Some(Event::Published {
            username: s.username,
            replicas: s.acked,
        })
    }
}

/// When a record stored at `now` is next re-replicated: `interval` plus a 0-25 %
/// jitter from `r` (a random `u64`), so holders do not all fire at once.
fn jittered(now: Instant, interval: Duration, r: u64) -> Instant {
    let jitter = interval.mul_f64((r >> 11) as f64 / (1u64 << 53) as f64 / 4.0);
    now + interval + jitter
}

impl Node {
    /// When a record stored now is next re-replicated (see [`jittered`]).
    pub(super) fn replicate_due(&mut self, now: Instant) -> Instant {
        let r = self.entropy.u64().unwrap_or(0);
        jittered(now, self.config.replicate_interval, r)
    }

    /// Starts one lookup per display-name word of the record published under `key`,
    /// to store it among that word's search entries.
    pub(super) fn publish_words(&mut self, now: Instant, key: NodeId, words: &[String]) {
        if !self.config.publish_words {
            return;
        }
        for w in words {
            let started = self.start_lookup_with(
                now,
                LookupKind::PublishWord,
                word_key(w),
                &[],
                Some(key),
                Vec::new(),
            );
            if started.is_err() {
                break;
            }
        }
    }

    /// Republishes the published records that are due (and their search entries).
    pub(super) fn republish_due(&mut self, now: Instant) {
        for key in self.published.due(now) {
            if self
                .start_lookup(now, LookupKind::Publish, key, &[])
                .is_err()
            {
                break;
            }
            let next = now + self.config.republish_interval;
            let words = self.published.reschedule(&key, next);
            self.publish_words(now, key, &words);
        }
    }

    /// Starts re-replication lookups for held records that are due: at most
    /// `max_replications` per round and at most half of `max_lookups` in all.
    pub(super) fn replicate_due_records(&mut self, now: Instant) {
        let running = self
            .lookups
            .values()
            .filter(|l| l.kind == LookupKind::Replicate)
            .count();
        let budget = self
            .config
            .max_replications
            .min((self.config.max_lookups / 2).saturating_sub(running));
        if budget == 0 {
            return;
        }
        for key in self.store.due(now, budget) {
            if self
                .start_lookup(now, LookupKind::Replicate, key, &[])
                .is_err()
            {
                break;
            }
            let next = self.replicate_due(now);
            self.store.set_due(&key, next);
        }
    }

    /// Stores a held record on the `replication` closest nodes a re-replication
    /// lookup found (those that hold it already just acknowledge).
    pub(super) fn replicate_to(&mut self, now: Instant, key: &NodeId, closest: &[Contact]) {
        let Some(bytes) = self.store.get(key).map(|s| s.bytes.clone()) else {
            return;
        };
        for c in closest.iter().take(self.config.replication) {
            let body = Body::Store { record: &bytes };
            let _ = self.send_request(now, c.addr, Some(c.id), body, Purpose::Store { op: None });
        }
    }

    /// Whether this node is among the `replication` closest to `key`, given the
    /// `closest` nodes a lookup found.
    fn among_closest(&self, key: &NodeId, closest: &[Contact]) -> bool {
        let own_rank = closest
            .iter()
            .filter(|c| closer(key, &c.id, &self.id))
            .count();
        own_rank < self.config.replication
    }

    /// Sends a published record to the `replication` closest nodes found.
    pub(super) fn store_at(&mut self, now: Instant, key: &NodeId, closest: &[Contact]) {
        let Some(p) = self.published.get(key) else {
            return;
        };
        let record = p.record.clone();
        let bytes = record.to_bytes();
        let k = self.config.replication;
        let mut acked = 0;
        // Store locally too if we are among the k closest.
        let local = self.among_closest(key, closest);
        if local && self.accept_store(now, &bytes, None).unwrap_or(false) {
            acked += 1;
        }
        let op = self.next_id;
        self.next_id += 1;
        let mut outstanding = 0;
        for c in closest.iter().take(k - usize::from(local)) {
            let body = Body::Store { record: &bytes };
            if self
                .send_request(
                    now,
                    c.addr,
                    Some(c.id),
                    body,
                    Purpose::Store { op: Some(op) },
                )
                .is_some()
            {
                outstanding += 1;
            }
        }
        if let Some(e) = self
            .published
            .start(op, record.username, acked, outstanding)
        {
            self.push_event(e);
        }
    }

    /// Sends the record published under `subject` to the closest nodes of word key
    /// `key` (and keeps it here if we are among them).
    pub(super) fn store_word_at(
        &mut self,
        now: Instant,
        key: &NodeId,
        subject: &NodeId,
        closest: &[Contact],
    ) {
        let Some(p) = self.published.get(subject) else {
            return;
        };
        let bytes = p.record.to_bytes();
        let k = self.config.replication;
        let local = self.among_closest(key, closest);
        if local {
            let _ = self.accept_word(now, *key, &bytes, None);
        }
        for c in closest.iter().take(k - usize::from(local)) {
            let body = Body::StoreWord {
                key: *key,
                record: &bytes,
            };
            let _ = self.send_request(now, c.addr, Some(c.id), body, Purpose::Store { op: None });
        }
    }

    /// A store request ended (`stored` if acknowledged).
    pub(super) fn store_done(&mut self, op: Option<u64>, stored: bool) {
        if let Some(e) = op.and_then(|op| self.published.done(op, stored)) {
            self.push_event(e);
        }
    }

    /// Replication on join: for each record we hold, if `newcomer` is among the
    /// `replication` closest to its key and we are the closest holder we know of,
    /// send it the record. Bounded: looks at 128 records and sends at most 64 per
    /// newcomer.
    pub(super) fn hand_off(&mut self, newcomer: Contact, now: Instant) {
        let k = self.config.replication;
        let mut sends = Vec::new();
        // Keys the newcomer may now be among the closest to share a long prefix
        // with its id, and keys sharing a prefix sit next to it in key order: look
        // at the 64 held keys on either side of its id, not at the whole store.
        for (key, s) in self.store.around(newcomer.id, 64) {
            if sends.len() == 64 {
                break;
            }
            if !closer(key, &newcomer.id, &self.id) {
                // Only nodes closer than us can have been missing from the set.
                continue;
            }
            let near = self.table.closest(key, k);
            let rank = near.iter().position(|c| c.id == newcomer.id);
            let we_are_first = near
                .iter()
                .filter(|c| c.id != newcomer.id)
                .all(|c| closer(key, &self.id, &c.id));
            if rank.is_some() && we_are_first {
                sends.push(s.bytes.clone());
            }
        }
        for bytes in sends {
            let body = Body::Store { record: &bytes };
            let _ = self.send_request(
                now,
                newcomer.addr,
                Some(newcomer.id),
                body,
                Purpose::Store { op: None },
            );
        }
    }
}

#[cfg(test)]
// Tests configure the way callers do (STYLE.md section 8).
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::node::tests::*;

    #[test]
    fn a_publication_is_reported_once_its_last_store_ends() {
        let mut p = Publications::default();
        assert_eq!(p.start(1, "ann".into(), 1, 2), None);
        assert_eq!(p.done(1, true), None);
        assert_eq!(
            p.done(1, false),
            Some(Event::Published {
                username: "ann".into(),
                replicas: 2
            })
        );
        assert_eq!(p.done(1, true), None, "forgotten");
        assert_eq!(
            p.start(2, "bob".into(), 1, 0),
            Some(Event::Published {
                username: "bob".into(),
                replicas: 1
            }),
            "nothing outstanding"
        );
    }

    #[test]
    fn replication_timers_are_jittered_by_up_to_a_quarter() {
        let now = Instant::now();
        let hour = Duration::from_secs(3600);
        assert_eq!(jittered(now, hour, 0), now + hour);
        let latest = jittered(now, hour, u64::MAX);
        assert!(latest > now + hour + hour / 5 && latest <= now + hour + hour / 4);
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
}
