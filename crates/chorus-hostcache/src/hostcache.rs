//! The host cache: super nodes this client has reached or heard of, ranked, bounded
//! and kept diverse.
//!
//! Skype kept at most 200 `(IP, port)` pairs of super nodes in `shared.xml` and
//! contacted them first at login. [`HostCache`] keeps the same bound
//! ([`CacheConfig::max_entries`]) with more per entry ([`Entry`]) so that it can rank:
//!
//! 1. nodes that answered within [`CacheConfig::recent`] (one day) come first;
//! 2. then fewer failures in a row;
//! 3. then a lower last round-trip time (unmeasured last);
//! 4. then longer-lived (seen first earlier);
//! 5. then more successes, and finally the address, so the order is total.
//!
//! **Diversity.** At most [`CacheConfig::max_per_subnet`] entries share an IPv4 /24
//! or an IPv6 /48 (configurable prefixes), so a cache of 200 spans at least 50
//! networks and one operator (or one attacker) cannot fill it. When a subnet or the
//! whole cache is full, a new entry replaces the worst-ranked entry of that subnet
//! (or of the cache) only if it ranks better; otherwise it is dropped.
//!
//! **Expiry.** [`HostCache::expire`] removes nodes that failed
//! [`CacheConfig::max_consecutive_failures`] times in a row, and nodes not seen alive
//! for [`CacheConfig::max_age`].
//!
//! **Refresh.** [`HostCache::refresh_due`] lists, best first, entries not contacted for
//! [`CacheConfig::refresh_interval`]; [`HostCache::next_refresh`] says when the next
//! one falls due, so a node can schedule its probes.
//!
//! Times are wall-clock [`SystemTime`] parameters (entries outlive the process), stored
//! with one-second resolution; round-trip times with one-millisecond resolution.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use chorus_hostcache::hostcache::{CacheConfig, GossipEntry, HostCache, Source};
//!
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let mut cache = HostCache::new(CacheConfig::default())?;
//! cache.insert("192.0.2.1:33033".parse()?, Source::Bootstrap, now)?;
//! cache.merge_gossip(
//!     [GossipEntry { addr: "198.51.100.7:40000".parse()?, last_seen: now }],
//!     now,
//! );
//! cache.record_success("198.51.100.7:40000".parse()?, Duration::from_millis(30), now)?;
//! let best: Vec<_> = cache.ranked(now).iter().map(|e| e.addr).collect();
//! assert_eq!(best[0], "198.51.100.7:40000".parse()?);
//! assert_eq!(cache.len(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use core::cmp::{Ordering, Reverse};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, UsageError};

/// Skype's bound, and the default [`CacheConfig::max_entries`].
pub const DEFAULT_MAX_ENTRIES: usize = 200;
/// The largest [`CacheConfig::max_entries`] accepted.
pub const MAX_MAX_ENTRIES: usize = 100_000;

/// How an entry entered the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Source {
    /// From the application's bootstrap list.
    Bootstrap,
    /// Learned from a super node (gossip).
    Gossip,
    /// Found by this node itself (it answered a probe or a connection).
    Probe,
    /// Added by the user or the application.
    Manual,
}

impl Source {
    /// The name used in `shared.xml`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bootstrap => "bootstrap",
            Self::Gossip => "gossip",
            Self::Probe => "probe",
            Self::Manual => "manual",
        }
    }

    /// The source named `s` in `shared.xml`.
    #[must_use]
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "bootstrap" => Self::Bootstrap,
            "gossip" => Self::Gossip,
            "probe" => Self::Probe,
            "manual" => Self::Manual,
            _ => return None,
        })
    }
}

/// One super node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its address (IPv4 or IPv6) and port.
    pub addr: SocketAddr,
    /// When it entered the cache.
    pub first_seen: SystemTime,
    /// When it was last known to be alive (answered us, or a super node vouched for it).
    pub last_seen: SystemTime,
    /// When it last answered us, if ever.
    pub last_success: Option<SystemTime>,
    /// When we last tried to reach it (success or failure), if ever.
    pub last_attempt: Option<SystemTime>,
    /// How many times it answered.
    pub successes: u32,
    /// How many times it did not.
    pub failures: u32,
    /// Failures since its last success.
    pub consecutive_failures: u32,
    /// Its last measured round-trip time.
    pub last_rtt: Option<Duration>,
    /// How it entered the cache.
    pub source: Source,
}

impl Entry {
    /// A fresh entry seen `now`, with no history.
    #[must_use]
    pub fn new(addr: SocketAddr, source: Source, now: SystemTime) -> Self {
        let now = truncate_time(now);
        Self {
            addr,
            first_seen: now,
            last_seen: now,
            last_success: None,
            last_attempt: None,
            successes: 0,
            failures: 0,
            consecutive_failures: 0,
            last_rtt: None,
            source,
        }
    }

    /// The ranking key: smaller is better. A total order over entries with distinct
    /// addresses.
    fn rank_key(&self, now: SystemTime, recent: Duration) -> impl Ord + use<> {
        let recently_ok = self
            .last_success
            .is_some_and(|t| now.duration_since(t).map_or(true, |age| age <= recent));
        (
            !recently_ok,
            self.consecutive_failures,
            self.last_rtt.map_or(u128::MAX, |r| r.as_micros()),
            self.first_seen,
            Reverse(self.successes),
            self.addr,
        )
    }
}

/// Host cache policy. Validated by [`HostCache::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Most entries kept. Default 200 (Skype's bound); 1 to 100,000.
    pub max_entries: usize,
    /// Most entries sharing one subnet (see the prefixes below). Default 4; at least 1.
    pub max_per_subnet: usize,
    /// IPv4 prefix length defining a subnet. Default 24; 8 to 32.
    pub ipv4_prefix: u8,
    /// IPv6 prefix length defining a subnet. Default 48; 16 to 128.
    pub ipv6_prefix: u8,
    /// An answer within this long counts as "recently successful" for ranking.
    /// Default one day.
    pub recent: Duration,
    /// Failures in a row after which [`HostCache::expire`] drops an entry. Default 5;
    /// at least 1.
    pub max_consecutive_failures: u32,
    /// Entries not seen alive for this long are dropped by [`HostCache::expire`].
    /// Default 30 days.
    pub max_age: Duration,
    /// Entries not contacted for this long are due for a refresh probe. Default one
    /// hour; at least one second.
    pub refresh_interval: Duration,
    /// Most entries taken from one gossip message; the rest are ignored. Default 50.
    pub max_gossip_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: DEFAULT_MAX_ENTRIES,
            max_per_subnet: 4,
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            recent: Duration::from_secs(24 * 3600),
            max_consecutive_failures: 5,
            max_age: Duration::from_secs(30 * 24 * 3600),
            refresh_interval: Duration::from_secs(3600),
            max_gossip_entries: 50,
        }
    }
}

/// An entry a super node told us about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GossipEntry {
    /// The super node's address.
    pub addr: SocketAddr,
    /// When the gossiping node last saw it alive (clamped to `now`).
    pub last_seen: SystemTime,
}

/// What happened to an entry offered to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Added; nothing had to go.
    Added,
    /// Added in place of the worse entry at this address.
    Replaced(SocketAddr),
    /// Already present; its record was updated.
    Updated,
    /// Not added: the cache or its subnet is full of better entries.
    Rejected,
}

/// The host cache. Performs no I/O; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCache {
    config: CacheConfig,
    entries: BTreeMap<SocketAddr, Entry>,
}

impl HostCache {
    /// An empty cache.
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] if a field is outside its documented bounds.
    pub fn new(config: CacheConfig) -> Result<Self, Error> {
        let bad = |what| Err(UsageError::InvalidConfig(what).into());
        if !(1..=MAX_MAX_ENTRIES).contains(&config.max_entries) {
            return bad("host cache max_entries must be 1 to 100,000");
        }
        if config.max_per_subnet == 0 {
            return bad("host cache max_per_subnet must be at least 1");
        }
        if !(8..=32).contains(&config.ipv4_prefix) || !(16..=128).contains(&config.ipv6_prefix) {
            return bad("host cache prefixes must be 8..=32 (IPv4) and 16..=128 (IPv6)");
        }
        if config.max_consecutive_failures == 0 {
            return bad("host cache max_consecutive_failures must be at least 1");
        }
        if config.refresh_interval < Duration::from_secs(1) {
            return bad("host cache refresh_interval must be at least one second");
        }
        Ok(Self {
            config,
            entries: BTreeMap::new(),
        })
    }

    /// A cache of `entries` (from `shared.xml`), admitted one by one under `config`, so
    /// the bounds hold whatever the file said. Entries that do not fit are dropped.
    ///
    /// # Errors
    /// As [`HostCache::new`]; [`UsageError::InvalidAddress`] for an entry no super node
    /// can have.
    pub fn from_entries(
        config: CacheConfig,
        entries: impl IntoIterator<Item = Entry>,
        now: SystemTime,
    ) -> Result<Self, Error> {
        let mut cache = Self::new(config)?;
        for e in entries {
            cache.admit(e, now)?;
        }
        Ok(cache)
    }

    /// The policy.
    #[must_use]
    pub const fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `addr`.
    #[must_use]
    pub fn get(&self, addr: SocketAddr) -> Option<&Entry> {
        self.entries.get(&addr)
    }

    /// All entries, by address.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Removes `addr`, returning its entry.
    pub fn remove(&mut self, addr: SocketAddr) -> Option<Entry> {
        self.entries.remove(&addr)
    }

    /// Compares two entries by rank at `now`: `Less` means `a` is better. A total order.
    #[must_use]
    pub fn compare(&self, a: &Entry, b: &Entry, now: SystemTime) -> Ordering {
        let r = self.config.recent;
        a.rank_key(now, r).cmp(&b.rank_key(now, r))
    }

    /// All entries, best first.
    #[must_use]
    pub fn ranked(&self, now: SystemTime) -> Vec<&Entry> {
        let r = self.config.recent;
        let mut v: Vec<&Entry> = self.entries.values().collect();
        v.sort_by_cached_key(|e| e.rank_key(now, r));
        v
    }

    /// The addresses of the best `n` entries, best first: the bootstrap candidates.
    #[must_use]
    pub fn best(&self, n: usize, now: SystemTime) -> Vec<SocketAddr> {
        self.ranked(now)
            .into_iter()
            .take(n)
            .map(|e| e.addr)
            .collect()
    }

    /// Adds a node first seen `now` (or refreshes `last_seen` if present).
    ///
    /// # Errors
    /// [`UsageError::InvalidAddress`] for an address no super node can have.
    pub fn insert(
        &mut self,
        addr: SocketAddr,
        source: Source,
        now: SystemTime,
    ) -> Result<Admission, Error> {
        if let Some(e) = self.entries.get_mut(&addr) {
            e.last_seen = e.last_seen.max(truncate_time(now));
            return Ok(Admission::Updated);
        }
        self.admit(Entry::new(addr, source, now), now)
    }

    /// Offers a complete entry; the cache keeps it if its bounds allow (see the module
    /// docs). An entry at an address already present replaces it.
    ///
    /// # Errors
    /// [`UsageError::InvalidAddress`] for an address no super node can have.
    pub fn admit(&mut self, entry: Entry, now: SystemTime) -> Result<Admission, Error> {
        validate_addr(entry.addr)?;
        let entry = normalize(entry);
        if let Some(old) = self.entries.get_mut(&entry.addr) {
            *old = entry;
            return Ok(Admission::Updated);
        }
        let subnet = self.subnet(entry.addr.ip());
        let r = self.config.recent;
        let key = entry.rank_key(now, r);
        // Subnet full: compete with the worst of that subnet.
        let same: Vec<&Entry> = self
            .entries
            .values()
            .filter(|e| self.subnet(e.addr.ip()) == subnet)
            .collect();
        let victim = if same.len() >= self.config.max_per_subnet {
            same.into_iter().max_by_key(|e| e.rank_key(now, r))
        } else if self.entries.len() >= self.config.max_entries {
            self.entries.values().max_by_key(|e| e.rank_key(now, r))
        } else {
            None
        };
        match victim.map(|v| (v.addr, v.rank_key(now, r))) {
            None => {
                self.entries.insert(entry.addr, entry);
                Ok(Admission::Added)
            }
            Some((addr, worst)) if key < worst => {
                self.entries.remove(&addr);
                self.entries.insert(entry.addr, entry);
                Ok(Admission::Replaced(addr))
            }
            Some(_) => Ok(Admission::Rejected),
        }
    }

    /// Records that `addr` answered after `rtt`. Adds it (source [`Source::Probe`]) if
    /// it was not cached.
    ///
    /// # Errors
    /// [`UsageError::InvalidAddress`] for an address no super node can have.
    pub fn record_success(
        &mut self,
        addr: SocketAddr,
        rtt: Duration,
        now: SystemTime,
    ) -> Result<Admission, Error> {
        let now = truncate_time(now);
        let mut entry = self
            .entries
            .get(&addr)
            .cloned()
            .unwrap_or_else(|| Entry::new(addr, Source::Probe, now));
        entry.last_seen = entry.last_seen.max(now);
        entry.last_success = Some(now);
        entry.last_attempt = Some(now);
        entry.successes = entry.successes.saturating_add(1);
        entry.consecutive_failures = 0;
        entry.last_rtt = Some(truncate_rtt(rtt));
        self.admit(entry, now)
    }

    /// Records that `addr` did not answer. Unknown addresses are ignored.
    pub fn record_failure(&mut self, addr: SocketAddr, now: SystemTime) {
        if let Some(e) = self.entries.get_mut(&addr) {
            e.last_attempt = Some(truncate_time(now));
            e.failures = e.failures.saturating_add(1);
            e.consecutive_failures = e.consecutive_failures.saturating_add(1);
        }
    }

    /// Merges super nodes learned from gossip: new ones are offered with source
    /// [`Source::Gossip`]; known ones only get a later `last_seen` (gossip never
    /// changes our own measurements). At most [`CacheConfig::max_gossip_entries`] are
    /// taken; invalid addresses are skipped. Returns how many entries were added.
    pub fn merge_gossip(
        &mut self,
        entries: impl IntoIterator<Item = GossipEntry>,
        now: SystemTime,
    ) -> usize {
        let mut added = 0;
        for g in entries.into_iter().take(self.config.max_gossip_entries) {
            let seen = truncate_time(g.last_seen.min(now));
            if let Some(e) = self.entries.get_mut(&g.addr) {
                e.last_seen = e.last_seen.max(seen);
                continue;
            }
            let mut entry = Entry::new(g.addr, Source::Gossip, now);
            entry.last_seen = seen;
            if matches!(
                self.admit(entry, now),
                Ok(Admission::Added | Admission::Replaced(_))
            ) {
                added += 1;
            }
        }
        added
    }

    /// Drops dead entries (too many failures in a row, or not seen alive for
    /// [`CacheConfig::max_age`]). Returns the addresses removed.
    pub fn expire(&mut self, now: SystemTime) -> Vec<SocketAddr> {
        let (max_fail, max_age) = (self.config.max_consecutive_failures, self.config.max_age);
        let dead: Vec<SocketAddr> = self
            .entries
            .values()
            .filter(|e| {
                e.consecutive_failures >= max_fail
                    || now
                        .duration_since(e.last_seen)
                        .is_ok_and(|age| age > max_age)
            })
            .map(|e| e.addr)
            .collect();
        for a in &dead {
            self.entries.remove(a);
        }
        dead
    }

    /// Entries not contacted for [`CacheConfig::refresh_interval`], best first, at most
    /// `max`: the ones to probe now.
    #[must_use]
    pub fn refresh_due(&self, now: SystemTime, max: usize) -> Vec<SocketAddr> {
        self.ranked(now)
            .into_iter()
            .filter(|e| self.due_at(e) <= now)
            .take(max)
            .map(|e| e.addr)
            .collect()
    }

    /// When the next entry falls due for a refresh (possibly in the past), or `None`
    /// for an empty cache.
    #[must_use]
    pub fn next_refresh(&self) -> Option<SystemTime> {
        self.entries.values().map(|e| self.due_at(e)).min()
    }

    fn due_at(&self, e: &Entry) -> SystemTime {
        e.last_attempt
            .map_or(UNIX_EPOCH, |t| t + self.config.refresh_interval)
    }

    /// The subnet `ip` belongs to, for the diversity bound.
    fn subnet(&self, ip: IpAddr) -> (bool, u128) {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.config.ipv4_prefix))
                    .unwrap_or(0);
                (false, u128::from(bits & mask))
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => self.subnet(IpAddr::V4(v4)),
                None => {
                    let mask = u128::MAX
                        .checked_shl(128 - u32::from(self.config.ipv6_prefix))
                        .unwrap_or(0);
                    (true, u128::from(v6) & mask)
                }
            },
        }
    }

    /// How many entries share each subnet (for tests and diagnostics): the largest.
    #[must_use]
    pub fn largest_subnet(&self) -> usize {
        let mut counts: BTreeMap<(bool, u128), usize> = BTreeMap::new();
        for e in self.entries.values() {
            *counts.entry(self.subnet(e.addr.ip())).or_default() += 1;
        }
        counts.into_values().max().unwrap_or(0)
    }
}

/// Refuses addresses no super node can have: port 0, unspecified, multicast and the
/// IPv4 broadcast address.
///
/// # Errors
/// [`UsageError::InvalidAddress`].
pub fn validate_addr(addr: SocketAddr) -> Result<(), Error> {
    let ip = addr.ip();
    let bad = addr.port() == 0
        || ip.is_unspecified()
        || ip.is_multicast()
        || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if bad {
        Err(UsageError::InvalidAddress(addr).into())
    } else {
        Ok(())
    }
}

/// `t` rounded down to whole seconds since the Unix epoch (earlier times become the
/// epoch): the resolution of `shared.xml`.
#[must_use]
pub fn truncate_time(t: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix_secs(t))
}

/// Whole seconds since the Unix epoch (0 for earlier times).
#[must_use]
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `rtt` rounded down to whole milliseconds, at most `u32::MAX` ms.
#[must_use]
pub fn truncate_rtt(rtt: Duration) -> Duration {
    Duration::from_millis(
        u64::try_from(rtt.as_millis())
            .unwrap_or(u64::MAX)
            .min(u64::from(u32::MAX)),
    )
}

fn normalize(mut e: Entry) -> Entry {
    e.first_seen = truncate_time(e.first_seen);
    e.last_seen = truncate_time(e.last_seen);
    e.last_success = e.last_success.map(truncate_time);
    e.last_attempt = e.last_attempt.map(truncate_time);
    e.last_rtt = e.last_rtt.map(truncate_rtt);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn recently_successful_low_rtt_nodes_rank_first() {
        let mut c = HostCache::new(CacheConfig::default()).unwrap();
        c.insert(a("10.0.0.1:1"), Source::Bootstrap, t(0)).unwrap();
        c.record_success(a("10.0.1.1:1"), Duration::from_millis(90), t(10))
            .unwrap();
        c.record_success(a("10.0.2.1:1"), Duration::from_millis(20), t(10))
            .unwrap();
        c.record_success(a("10.0.3.1:1"), Duration::from_millis(5), t(10))
            .unwrap();
        c.record_failure(a("10.0.3.1:1"), t(11));
        assert_eq!(
            c.best(4, t(20)),
            vec![
                a("10.0.2.1:1"),
                a("10.0.1.1:1"),
                a("10.0.3.1:1"),
                a("10.0.0.1:1")
            ]
        );
    }

    #[test]
    fn long_lived_nodes_win_ties() {
        let mut c = HostCache::new(CacheConfig::default()).unwrap();
        c.insert(a("10.0.1.1:1"), Source::Gossip, t(5)).unwrap();
        c.insert(a("10.0.2.1:1"), Source::Gossip, t(1)).unwrap();
        assert_eq!(c.best(2, t(9)), vec![a("10.0.2.1:1"), a("10.0.1.1:1")]);
    }

    #[test]
    fn one_subnet_cannot_fill_the_cache() {
        let mut c = HostCache::new(CacheConfig::default()).unwrap();
        for i in 1..=250u16 {
            c.insert(
                SocketAddr::from(([203, 0, 113, i as u8], 1000 + i)),
                Source::Gossip,
                t(u64::from(i)),
            )
            .unwrap();
        }
        assert_eq!(c.len(), 4);
        assert_eq!(c.largest_subnet(), 4);
        // IPv6: one /48 too, and v4-mapped addresses count as IPv4.
        for i in 1..=10u16 {
            c.insert(
                SocketAddr::new(format!("2001:db8:1:{i}::1").parse().unwrap(), 1),
                Source::Gossip,
                t(0),
            )
            .unwrap();
        }
        assert_eq!(c.len(), 8);
        let mapped = c
            .insert(a("[::ffff:203.0.113.77]:5"), Source::Gossip, t(300))
            .unwrap();
        assert_eq!(mapped, Admission::Rejected);
    }

    #[test]
    fn full_cache_evicts_the_worst_for_a_better_entry() {
        let cfg = CacheConfig {
            max_entries: 3,
            ..CacheConfig::default()
        };
        let mut c = HostCache::new(cfg).unwrap();
        for i in 1..=3u8 {
            c.insert(
                SocketAddr::from(([10, i, 0, 1], 1)),
                Source::Gossip,
                t(u64::from(i)),
            )
            .unwrap();
        }
        assert_eq!(
            c.insert(a("10.9.0.1:1"), Source::Gossip, t(10)).unwrap(),
            Admission::Rejected
        );
        let r = c
            .record_success(a("10.9.0.1:1"), Duration::from_millis(10), t(10))
            .unwrap();
        assert_eq!(r, Admission::Replaced(a("10.3.0.1:1")));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn gossip_adds_new_nodes_but_never_rewrites_measurements() {
        let mut c = HostCache::new(CacheConfig::default()).unwrap();
        c.record_success(a("10.0.0.1:1"), Duration::from_millis(10), t(0))
            .unwrap();
        let added = c.merge_gossip(
            [
                GossipEntry {
                    addr: a("10.0.0.1:1"),
                    last_seen: t(50),
                },
                GossipEntry {
                    addr: a("10.1.0.1:1"),
                    last_seen: t(1_000_000),
                },
                GossipEntry {
                    addr: a("0.0.0.0:1"),
                    last_seen: t(0),
                },
            ],
            t(100),
        );
        assert_eq!(added, 1);
        let known = c.get(a("10.0.0.1:1")).unwrap();
        assert_eq!((known.successes, known.last_seen), (1, t(50)));
        let new = c.get(a("10.1.0.1:1")).unwrap();
        assert_eq!(
            (new.source, new.last_seen),
            (Source::Gossip, t(100)),
            "future clamped to now"
        );
    }

    #[test]
    fn gossip_takes_at_most_the_configured_number() {
        let mut c = HostCache::new(CacheConfig::default()).unwrap();
        let many = (0..200u8).map(|i| GossipEntry {
            addr: SocketAddr::from(([10, i, 0, 1], 1)),
            last_seen: t(0),
        });
        assert_eq!(c.merge_gossip(many, t(0)), 50);
    }

    #[test]
    fn dead_entries_expire() {
        let mut c = HostCache::new(CacheConfig::default()).unwrap();
        c.insert(a("10.0.0.1:1"), Source::Gossip, t(0)).unwrap();
        c.insert(a("10.1.0.1:1"), Source::Gossip, t(0)).unwrap();
        for i in 0..5 {
            c.record_failure(a("10.0.0.1:1"), t(i));
        }
        c.record_failure(a("10.9.9.9:1"), t(0));
        assert_eq!(c.expire(t(10)), vec![a("10.0.0.1:1")]);
        assert_eq!(c.expire(t(31 * 24 * 3600)), vec![a("10.1.0.1:1")]);
        assert!(c.is_empty());
    }

    #[test]
    fn refresh_schedule_follows_last_attempts() {
        let mut c = HostCache::new(CacheConfig::default()).unwrap();
        assert_eq!(c.next_refresh(), None);
        c.record_success(a("10.0.0.1:1"), Duration::from_millis(1), t(0))
            .unwrap();
        c.insert(a("10.1.0.1:1"), Source::Gossip, t(0)).unwrap();
        assert_eq!(c.refresh_due(t(1), 10), vec![a("10.1.0.1:1")]);
        c.record_failure(a("10.1.0.1:1"), t(100));
        assert_eq!(c.next_refresh(), Some(t(3600)));
        assert!(c.refresh_due(t(3599), 10).is_empty());
        assert_eq!(c.refresh_due(t(3700), 1), vec![a("10.0.0.1:1")]);
    }

    #[test]
    fn invalid_addresses_and_configs_are_refused() {
        let mut c = HostCache::new(CacheConfig::default()).unwrap();
        for bad in [
            "0.0.0.0:1",
            "10.0.0.1:0",
            "224.0.0.1:1",
            "255.255.255.255:1",
            "[::]:1",
            "[ff02::1]:1",
        ] {
            assert_eq!(
                c.insert(a(bad), Source::Manual, t(0)).unwrap_err(),
                Error::Usage(UsageError::InvalidAddress(a(bad)))
            );
        }
        for f in [
            |c: &mut CacheConfig| c.max_entries = 0,
            |c: &mut CacheConfig| c.max_per_subnet = 0,
            |c: &mut CacheConfig| c.ipv4_prefix = 33,
            |c: &mut CacheConfig| c.ipv6_prefix = 8,
            |c: &mut CacheConfig| c.max_consecutive_failures = 0,
            |c: &mut CacheConfig| c.refresh_interval = Duration::ZERO,
        ] {
            let mut cfg = CacheConfig::default();
            f(&mut cfg);
            assert!(matches!(
                HostCache::new(cfg),
                Err(Error::Usage(UsageError::InvalidConfig(_)))
            ));
        }
    }

    #[test]
    fn times_before_the_epoch_and_huge_rtts_are_clamped() {
        assert_eq!(
            truncate_time(UNIX_EPOCH - Duration::from_secs(5)),
            UNIX_EPOCH
        );
        assert_eq!(
            truncate_rtt(Duration::from_secs(u64::MAX)),
            Duration::from_millis(u64::from(u32::MAX))
        );
    }
}
