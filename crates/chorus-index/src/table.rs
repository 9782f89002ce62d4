//! The routing table: Kademlia buckets by shared-prefix length, with wide buckets at
//! the top levels.
//!
//! Bucket `i` holds contacts whose ids share exactly `i` leading bits with ours. Plain
//! Kademlia gives every bucket `k` = 20 slots. Chorus gives the first
//! [`TableConfig::wide_levels`] buckets (which between them cover 15/16 of the id
//! space with the default of 4) [`TableConfig::wide_bucket_size`] slots: a first hop
//! then lands log2(64) = 6 bits closer instead of log2(20) = 4.3, which is what takes
//! the median lookup to two hops at 10,000 nodes (`docs/index.md` has the numbers).
//!
//! Full buckets keep their oldest live contacts (long-lived nodes are the most likely
//! to stay, and an attacker cannot flush a bucket by flooding it); newcomers wait in a
//! small replacement cache and take the place of a contact that fails
//! [`TableConfig::max_fails`] requests in a row.

use std::time::Instant;

use chorus_crypto::cert::NodeId;

use crate::id::{common_prefix_len, distance};
use crate::message::Contact;

/// Sizes of the routing table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableConfig {
    /// Slots per bucket. Default 20 (Kademlia's k); 1-256.
    pub bucket_size: usize,
    /// How many of the top buckets are wide. Default 4; 0 gives plain Kademlia.
    pub wide_levels: usize,
    /// Slots in a wide bucket. Default 64; at least `bucket_size`, at most 1,024.
    pub wide_bucket_size: usize,
    /// Newcomers remembered per full bucket. Default 8; at most 64.
    pub replacements: usize,
    /// Consecutive failed requests after which a contact is dropped. Default 2; 1-16.
    pub max_fails: u8,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            bucket_size: 20,
            wide_levels: 4,
            wide_bucket_size: 64,
            replacements: 8,
            max_fails: 2,
        }
    }
}

impl TableConfig {
    /// Plain Kademlia: every bucket holds `k` contacts.
    #[must_use]
    pub fn kademlia(k: usize) -> Self {
        Self {
            bucket_size: k,
            wide_levels: 0,
            wide_bucket_size: k,
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if !(1..=256).contains(&self.bucket_size) {
            return Err("bucket_size must be 1-256");
        }
        if self.wide_bucket_size < self.bucket_size || self.wide_bucket_size > 1024 {
            return Err("wide_bucket_size must be bucket_size-1024");
        }
        if self.replacements > 64 {
            return Err("replacements must be at most 64");
        }
        if !(1..=16).contains(&self.max_fails) {
            return Err("max_fails must be 1-16");
        }
        Ok(())
    }

    fn capacity(&self, level: usize) -> usize {
        if level < self.wide_levels {
            self.wide_bucket_size
        } else {
            self.bucket_size
        }
    }
}

/// A contact in the table and what we know of its liveness (72 bytes: tables of
/// 100,000 simulated nodes must fit in memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The contact.
    pub contact: Contact,
    /// When it last answered or sent us a request, in seconds since the table's
    /// first insertion ([`RoutingTable::last_seen`] gives the instant).
    pub seen_secs: u32,
    /// Requests it failed in a row.
    pub fails: u8,
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    entries: Vec<Entry>,
    replacements: Vec<Contact>,
    last_lookup: Option<Instant>,
}

/// What [`RoutingTable::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// A new contact took a free slot.
    Added,
    /// The contact was already there; its liveness was refreshed.
    Updated,
    /// The id is in the table under another address; nothing changed.
    AddressConflict,
    /// The bucket is full; the contact waits in the replacement cache.
    Pending,
    /// Our own id: never inserted.
    Own,
}

/// The routing table of one node. Bounded: at most 256 buckets of at most
/// [`TableConfig::wide_bucket_size`] entries and [`TableConfig::replacements`]
/// replacements each.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    own: NodeId,
    config: TableConfig,
    buckets: Vec<Bucket>,
    len: usize,
    epoch: Option<Instant>,
}

impl RoutingTable {
    /// An empty table for node `own`.
    ///
    /// # Errors
    /// The reason, if `config` is out of its bounds.
    pub fn new(own: NodeId, config: TableConfig) -> Result<Self, &'static str> {
        config.validate()?;
        Ok(Self {
            own,
            config,
            buckets: Vec::new(),
            len: 0,
            epoch: None,
        })
    }

    /// Our own id.
    #[must_use]
    pub const fn own(&self) -> NodeId {
        self.own
    }

    /// The configuration.
    #[must_use]
    pub const fn config(&self) -> &TableConfig {
        &self.config
    }

    /// Contacts in the table (not counting replacements).
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the table has no contact.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of bucket levels allocated (one past the deepest non-empty level).
    #[must_use]
    pub fn levels(&self) -> usize {
        self.buckets.len()
    }

    fn level(&self, id: &NodeId) -> Option<usize> {
        let l = common_prefix_len(&self.own, id);
        (l < 256).then_some(l)
    }

    /// Every contact, bucket by bucket.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| b.entries.iter())
    }

    /// The entry for `id`, if present.
    #[must_use]
    pub fn get(&self, id: &NodeId) -> Option<&Entry> {
        let level = self.level(id)?;
        self.buckets
            .get(level)?
            .entries
            .iter()
            .find(|e| e.contact.id == *id)
    }

    fn secs(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        u32::try_from(now.saturating_duration_since(epoch).as_secs()).unwrap_or(u32::MAX)
    }

    /// Whether `id` would take a free slot (or is in the table already): `false` if
    /// its bucket is full and it could only wait as a replacement.
    #[must_use]
    pub fn has_room(&self, id: &NodeId) -> bool {
        let Some(level) = self.level(id) else {
            return false;
        };
        self.buckets.get(level).is_none_or(|b| {
            b.entries.len() < self.config.capacity(level)
                || b.entries.iter().any(|e| e.contact.id == *id)
        })
    }

    /// When `entry` was last seen.
    #[must_use]
    pub fn last_seen(&self, entry: &Entry) -> Option<Instant> {
        self.epoch
            .map(|e| e + std::time::Duration::from_secs(u64::from(entry.seen_secs)))
    }

    /// Records that `contact` is alive at `now`: refreshes it, adds it to a free
    /// slot, or queues it as a replacement.
    pub fn insert(&mut self, contact: Contact, now: Instant) -> Insert {
        let Some(level) = self.level(&contact.id) else {
            return Insert::Own;
        };
        let seen_secs = self.secs(now);
        if self.buckets.len() <= level {
            // A new bucket counts as looked up now: refresh starts from its creation.
            self.buckets.resize_with(level + 1, || Bucket {
                last_lookup: Some(now),
                ..Bucket::default()
            });
        }
        let capacity = self.config.capacity(level);
        let max_replacements = self.config.replacements;
        let Some(bucket) = self.buckets.get_mut(level) else {
            return Insert::Pending;
        };
        if let Some(e) = bucket
            .entries
            .iter_mut()
            .find(|e| e.contact.id == contact.id)
        {
            if e.contact.addr != contact.addr {
                // First binding wins while it answers: a node replaying another's
                // certificate from its own address cannot take over the entry. A
                // node whose address really changed gets back in once the old entry
                // has failed `max_fails` requests and been dropped.
                return Insert::AddressConflict;
            }
            e.seen_secs = seen_secs;
            e.fails = 0;
            return Insert::Updated;
        }
        if bucket.entries.len() < capacity {
            if bucket.entries.capacity() == 0 {
                bucket.entries.reserve_exact(capacity.min(32));
            }
            bucket.entries.push(Entry {
                contact,
                seen_secs,
                fails: 0,
            });
            bucket.replacements.retain(|c| c.id != contact.id);
            self.len += 1;
            return Insert::Added;
        }
        bucket.replacements.retain(|c| c.id != contact.id);
        if max_replacements > 0 {
            if bucket.replacements.len() == max_replacements {
                bucket.replacements.remove(0);
            }
            bucket.replacements.push(contact);
        }
        Insert::Pending
    }

    /// Records a failed request to `id`. Returns `true` if the contact was dropped
    /// (the newest replacement, if any, takes its place).
    pub fn record_failure(&mut self, id: &NodeId, now: Instant) -> bool {
        let max_fails = self.config.max_fails;
        let Some(level) = self.level(id) else {
            return false;
        };
        let Some(bucket) = self.buckets.get_mut(level) else {
            return false;
        };
        let Some(pos) = bucket.entries.iter().position(|e| e.contact.id == *id) else {
            bucket.replacements.retain(|c| c.id != *id);
            return false;
        };
        let drop = bucket.entries.get_mut(pos).is_some_and(|e| {
            e.fails = e.fails.saturating_add(1);
            e.fails >= max_fails
        });
        if drop {
            self.remove_at(level, pos, now);
        }
        drop
    }

    /// Removes `id` (it left, or misbehaved). Returns whether it was present.
    pub fn remove(&mut self, id: &NodeId, now: Instant) -> bool {
        let Some(level) = self.level(id) else {
            return false;
        };
        let Some(bucket) = self.buckets.get_mut(level) else {
            return false;
        };
        bucket.replacements.retain(|c| c.id != *id);
        match bucket.entries.iter().position(|e| e.contact.id == *id) {
            Some(pos) => {
                self.remove_at(level, pos, now);
                true
            }
            None => false,
        }
    }

    fn remove_at(&mut self, level: usize, pos: usize, now: Instant) {
        let seen_secs = self.secs(now);
        let Some(bucket) = self.buckets.get_mut(level) else {
            return;
        };
        if pos < bucket.entries.len() {
            bucket.entries.swap_remove(pos);
            self.len -= 1;
            if let Some(c) = bucket.replacements.pop() {
                bucket.entries.push(Entry {
                    contact: c,
                    seen_secs,
                    fails: 0,
                });
                self.len += 1;
            }
        }
    }

    /// The `n` contacts closest to `target`, closest first.
    ///
    /// Uses the bucket structure: with `c` the prefix `target` shares with us, bucket
    /// `c` holds the closest contacts, then every deeper bucket, then buckets `c-1`
    /// down to 0, each farther than the last. Only the buckets needed are sorted.
    #[must_use]
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<Contact> {
        let mut out: Vec<Contact> = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        let c = common_prefix_len(&self.own, target).min(self.buckets.len());
        let by_distance = |v: &mut Vec<Contact>| {
            v.sort_unstable_by_key(|x| distance(target, &x.id));
        };
        let mut group: Vec<Contact> = Vec::new();
        let take = |out: &mut Vec<Contact>, group: &mut Vec<Contact>| {
            let room = n - out.len();
            if group.len() > room {
                // Only the `room` closest need sorting.
                group.select_nth_unstable_by_key(room, |x| distance(target, &x.id));
                group.truncate(room);
            }
            by_distance(group);
            out.append(group);
        };
        if let Some(b) = self.buckets.get(c) {
            group.extend(b.entries.iter().map(|e| e.contact));
            take(&mut out, &mut group);
        }
        if out.len() < n {
            for b in self.buckets.iter().skip(c + 1) {
                group.extend(b.entries.iter().map(|e| e.contact));
            }
            take(&mut out, &mut group);
        }
        for level in (0..c).rev() {
            if out.len() >= n {
                break;
            }
            if let Some(b) = self.buckets.get(level) {
                group.extend(b.entries.iter().map(|e| e.contact));
                take(&mut out, &mut group);
            }
        }
        out
    }

    /// Marks the bucket `target` falls in as recently looked up.
    pub fn touch(&mut self, target: &NodeId, now: Instant) {
        if let Some(level) = self.level(target)
            && let Some(b) = self.buckets.get_mut(level)
        {
            b.last_lookup = Some(now);
        }
    }

    /// Levels whose bucket has not been looked up since `before` (nor ever), up to
    /// the deepest level that has contacts, shallowest first.
    #[must_use]
    pub fn stale_levels(&self, before: Instant) -> Vec<usize> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| b.last_lookup.is_none_or(|t| t < before))
            .map(|(i, _)| i)
            .collect()
    }

    /// Approximate heap bytes held (entries, replacements, bucket headers).
    #[must_use]
    pub fn memory_bytes(&self) -> usize {
        self.buckets
            .iter()
            .map(|b| {
                size_of::<Bucket>()
                    + b.entries.capacity() * size_of::<Entry>()
                    + b.replacements.capacity() * size_of::<Contact>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use std::net::SocketAddr;

    fn contact(id: [u8; 32]) -> Contact {
        Contact {
            id: NodeId(id),
            addr: SocketAddr::from(([10, 0, id[0], id[1]], 4000)),
        }
    }

    fn id_with_first(b: u8, rest: u8) -> [u8; 32] {
        let mut id = [rest; 32];
        id[0] = b;
        id
    }

    #[test]
    fn full_buckets_keep_old_contacts_and_queue_newcomers() {
        let now = Instant::now();
        let mut t = RoutingTable::new(NodeId([0; 32]), TableConfig::kademlia(2)).unwrap();
        // Level 0: first bit set.
        assert_eq!(
            t.insert(contact(id_with_first(0x80, 1)), now),
            Insert::Added
        );
        assert_eq!(
            t.insert(contact(id_with_first(0x81, 2)), now),
            Insert::Added
        );
        assert_eq!(
            t.insert(contact(id_with_first(0x82, 3)), now),
            Insert::Pending
        );
        assert_eq!(
            t.insert(contact(id_with_first(0x80, 1)), now),
            Insert::Updated
        );
        assert_eq!(t.insert(contact([0; 32]), now), Insert::Own);
        assert_eq!(t.len(), 2);
        // The first contact fails twice: the newcomer takes its slot.
        assert!(!t.record_failure(&NodeId(id_with_first(0x80, 1)), now));
        assert!(t.record_failure(&NodeId(id_with_first(0x80, 1)), now));
        assert_eq!(t.len(), 2);
        assert!(t.get(&NodeId(id_with_first(0x82, 3))).is_some());
        assert!(t.get(&NodeId(id_with_first(0x80, 1))).is_none());
    }

    #[test]
    fn an_existing_entry_keeps_its_address_until_it_fails() {
        let now = Instant::now();
        let mut t = RoutingTable::new(NodeId([0; 32]), TableConfig::kademlia(2)).unwrap();
        let real = contact(id_with_first(0x80, 1));
        let mut fake = real;
        fake.addr = SocketAddr::from(([203, 0, 113, 9], 4000));
        assert_eq!(t.insert(real, now), Insert::Added);
        assert_eq!(t.insert(fake, now), Insert::AddressConflict);
        assert_eq!(t.get(&real.id).unwrap().contact.addr, real.addr);
        t.record_failure(&real.id, now);
        t.record_failure(&real.id, now);
        assert_eq!(t.insert(fake, now), Insert::Added);
    }

    #[test]
    fn wide_levels_hold_more() {
        let now = Instant::now();
        let mut config = TableConfig::kademlia(2);
        config.wide_levels = 1;
        config.wide_bucket_size = 4;
        let mut t = RoutingTable::new(NodeId([0; 32]), config).unwrap();
        for i in 0..6 {
            t.insert(contact(id_with_first(0x80 | i, i)), now);
            t.insert(contact(id_with_first(0x40 | i, i)), now);
        }
        assert_eq!(t.len(), 4 + 2);
    }

    #[test]
    fn invalid_configs_are_refused() {
        let c = TableConfig {
            wide_bucket_size: 3,
            ..TableConfig::default()
        };
        assert!(RoutingTable::new(NodeId([0; 32]), c).is_err());
    }

    proptest! {
        #[test]
        fn closest_equals_brute_force(own in any::<[u8; 32]>(), ids in vec(any::<[u8; 32]>(), 0..300), target in any::<[u8; 32]>(), n in 0usize..40) {
            let now = Instant::now();
            let mut t = RoutingTable::new(NodeId(own), TableConfig::default()).unwrap();
            for id in &ids {
                t.insert(contact(*id), now);
            }
            let target = NodeId(target);
            let mut all: Vec<Contact> = t.iter().map(|e| e.contact).collect();
            all.sort_by_key(|c| distance(&target, &c.id));
            all.truncate(n);
            prop_assert_eq!(t.closest(&target, n), all);
            prop_assert!(t.len() <= 4 * 64 + 252 * 20);
        }
    }
}
