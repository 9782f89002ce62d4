//! User search by display-name words: the search entries this node holds for
//! word keys, and the search lookups it runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use chorus_crypto::cert::NodeId;

use super::store::{Held, Stored};
use super::{Config, LookupId, Node};
use crate::error::{Error, Limit, UsageError, Violation};
use crate::id::word_key;
use crate::message::{Contact, MAX_RECORDS};
use crate::record::PresenceRecord;

/// Bytes of records one `Value` answer carries at most.
const MAX_ANSWER_RECORD_BYTES: usize = 12_000;

/// Search entries by word key: the newest version per user, at most
/// `max_entries_per_word` users per word and `max_word_entries` in all.
#[derive(Debug)]
pub(super) struct Words {
    entries: BTreeMap<NodeId, Vec<Stored>>,
    total: usize,
    max_per_word: usize,
    max_total: usize,
}

impl Words {
    pub(super) fn new(config: &Config) -> Self {
        Self {
            entries: BTreeMap::new(),
            total: 0,
            max_per_word: config.max_entries_per_word,
            max_total: config.max_word_entries,
        }
    }

    /// Whether this node holds entries for word key `key`.
    pub(super) fn contains_key(&self, key: &NodeId) -> bool {
        self.entries.contains_key(key)
    }

    /// Compares an offered `record` with the entry held for its user under `key`.
    pub(super) fn offer(&self, key: &NodeId, record: &PresenceRecord) -> Held {
        let held = self
            .entries
            .get(key)
            .and_then(|v| v.iter().find(|s| s.record.username == record.username));
        match held {
            Some(held) if held.record == *record => Held::Same,
            Some(held) if !record.supersedes(&held.record) => Held::Newer,
            _ => Held::Older,
        }
    }

    /// Adds a checked record to the entries of `key`, replacing its user's entry;
    /// when the word is full the least recently issued entry makes room, unless the
    /// new one is older (`Ok(false)`).
    pub(super) fn admit(
        &mut self,
        key: NodeId,
        record: PresenceRecord,
        from: Option<NodeId>,
        now: Instant,
    ) -> Result<bool, Error> {
        if self.total >= self.max_total {
            return Err(Limit::StoreFull {
                max: self.max_total,
            }
            .into());
        }
        let entries = self.entries.entry(key).or_default();
        let before = entries.len();
        entries.retain(|s| s.record.username != record.username);
        let mut removed = before - entries.len();
        if entries.len() >= self.max_per_word {
            // Full: the least recently issued entry makes room, unless it is newer.
            let oldest = entries
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.record.issued_at)
                .map(|(i, s)| (i, s.record.issued_at));
            match oldest {
                Some((i, issued)) if issued < record.issued_at => {
                    entries.swap_remove(i);
                    removed += 1;
                }
                _ => {
                    self.total = self.total.saturating_sub(removed);
                    return Ok(false);
                }
            }
        }
        entries.push(Stored::new(record, from, now));
        self.total = self.total.saturating_sub(removed) + 1;
        Ok(true)
    }

    /// The entries of `key` an answer carries: newest first, as many as fit in one
    /// datagram's record list.
    pub(super) fn newest(&self, key: &NodeId) -> Vec<Bytes> {
        let mut entries: Vec<&Stored> = self
            .entries
            .get(key)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        entries.sort_by_key(|s| core::cmp::Reverse(s.record.issued_at));
        let mut records: Vec<Bytes> = Vec::new();
        let mut size = 0;
        for e in entries.into_iter().take(MAX_RECORDS) {
            if size + e.bytes.len() > MAX_ANSWER_RECORD_BYTES {
                break;
            }
            size += e.bytes.len() + 2;
            records.push(e.bytes.clone());
        }
        records
    }

    /// Every entry, with its word key.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Stored)> {
        self.entries
            .iter()
            .flat_map(|(k, v)| v.iter().map(move |s| (k, s)))
    }

    /// Drops the entries expired at `secs` (Unix time).
    pub(super) fn expire(&mut self, secs: u64) {
        let mut removed = 0;
        for entries in self.entries.values_mut() {
            let before = entries.len();
            entries.retain(|s| !s.record.is_expired(secs));
            removed += before - entries.len();
        }
        self.total = self.total.saturating_sub(removed);
        self.entries.retain(|_, v| !v.is_empty());
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.entries
            .values()
            .map(|v| {
                64 + v
                    .iter()
                    .map(|s| 96 + size_of::<Stored>() + s.bytes.len())
                    .sum::<usize>()
            })
            .sum::<usize>()
    }
}

/// The records of a finished search whose display name has every query word, at
/// most `max`, by username.
pub(super) fn matches(
    results: BTreeMap<String, PresenceRecord>,
    query: &[String],
    max: usize,
) -> Vec<PresenceRecord> {
    results
        .into_values()
        .filter(|r| {
            let words = r.words();
            query.iter().all(|q| words.contains(q))
        })
        .take(max)
        .collect()
}

impl Node {
    /// Searches users by display-name words: looks up the entries of the first word
    /// and keeps the records whose display name has every word. Ends with
    /// [`Event::Lookup`](super::Event::Lookup) whose `results` are the matches.
    ///
    /// # Errors
    /// [`UsageError::InvalidRecord`] if the query has no word of 2-32 letters or
    /// digits; [`Limit::TooManyLookups`], [`UsageError::Left`].
    pub fn search(&mut self, now: Instant, query: &str) -> Result<LookupId, Error> {
        let probe = PresenceRecord {
            username: String::new(),
            display_name: query.chars().take(256).collect(),
            user_cert: Bytes::new(),
            super_nodes: Vec::new(),
            candidates: Vec::new(),
            nat_class: crate::record::NatClass::Unknown,
            version: 0,
            issued_at: 0,
            expires_at: 0,
            signature: Bytes::new(),
        };
        let words = probe.words();
        let Some(first) = words.first() else {
            return Err(UsageError::InvalidRecord(
                "a search needs a word of 2-32 letters or digits",
            )
            .into());
        };
        let key = word_key(first);
        self.start_lookup_with(now, super::LookupKind::Search, key, &[], None, words)
            .map(LookupId)
    }

    /// Adds a record to the search entries of word key `key`: it must verify and
    /// its display name must have the word. Keeps the newest version per user and
    /// at most `max_entries_per_word` users (the most recently issued).
    pub(super) fn accept_word(
        &mut self,
        now: Instant,
        key: NodeId,
        bytes: &[u8],
        from: Option<NodeId>,
    ) -> Result<bool, Error> {
        let record = PresenceRecord::decode(bytes)?;
        if !record.words().iter().any(|w| word_key(w) == key) {
            return Err(Violation::BadSignature.into());
        }
        match self.words.offer(&key, &record) {
            Held::Same => return Ok(true),
            Held::Newer => return Ok(false),
            Held::Older => {}
        }
        self.check_record(&record, now)?;
        self.words.admit(key, record, from, now)
    }

    /// Verifies the search entries a holder returned and merges them.
    pub(super) fn search_response(
        &mut self,
        now: Instant,
        lookup: u64,
        depth: u32,
        sender: Contact,
        from: SocketAddr,
        records: &[&[u8]],
    ) {
        let Some(target) = self.lookups.get(&lookup).map(|l| l.target) else {
            return;
        };
        let mut good = Vec::new();
        let mut bad = false;
        for bytes in records {
            let verdict = PresenceRecord::decode(bytes)
                .map_err(Error::from)
                .and_then(|r| {
                    if r.words().iter().any(|w| word_key(w) == target) {
                        Ok(r)
                    } else {
                        Err(Violation::BadSignature.into())
                    }
                })
                .and_then(|r| self.check_record(&r, now).map(|()| r));
            match verdict {
                Ok(r) => good.push(r),
                Err(Error::Protocol(Violation::Expired)) => {}
                Err(_) => bad = true,
            }
        }
        if bad {
            self.penalize(from, &sender.id, now);
        }
        let Some(l) = self.lookups.get_mut(&lookup) else {
            return;
        };
        l.holders += 1;
        if l.first_value.is_none() {
            l.first_value = Some((now, depth));
        }
        for r in good {
            let newer = l
                .results
                .get(&r.username)
                .is_none_or(|held| r.supersedes(held));
            if newer {
                l.results.insert(r.username.clone(), r);
            }
        }
    }
}

#[cfg(test)]
// Tests configure the way callers do (STYLE.md section 8).
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::node::tests::*;

    fn record(name: &str, display_name: &str, issued_at: u64) -> PresenceRecord {
        unsigned_record(name, display_name, issued_at, 5000)
    }

    fn words(max_entries_per_word: usize, max_word_entries: usize) -> Words {
        let mut config = Config::default();
        config.max_entries_per_word = max_entries_per_word;
        config.max_word_entries = max_word_entries;
        Words::new(&config)
    }

    #[test]
    fn a_full_word_keeps_the_most_recently_issued_entries() {
        let now = Instant::now();
        let key = word_key("sato");
        let mut w = words(2, 100);
        assert!(w.admit(key, record("a", "A Sato", 10), None, now).unwrap());
        assert!(w.admit(key, record("b", "B Sato", 20), None, now).unwrap());
        assert!(!w.admit(key, record("c", "C Sato", 5), None, now).unwrap());
        assert!(w.admit(key, record("d", "D Sato", 30), None, now).unwrap());
        let held: Vec<Bytes> = w.newest(&key);
        let expect = [30, 20].map(|t| {
            let name = if t == 30 { "d" } else { "b" };
            record(name, &format!("{} Sato", name.to_uppercase()), t).to_bytes()
        });
        assert_eq!(held, expect, "newest first");
    }

    #[test]
    fn a_users_entry_is_replaced_by_a_newer_version_only() {
        let now = Instant::now();
        let key = word_key("sato");
        let mut w = words(4, 100);
        let v2 = record("a", "A Sato", 20);
        w.admit(key, v2.clone(), None, now).unwrap();
        assert_eq!(w.offer(&key, &v2), Held::Same);
        assert_eq!(w.offer(&key, &record("a", "A Sato", 10)), Held::Newer);
        assert_eq!(w.offer(&key, &record("a", "A Sato", 30)), Held::Older);
        w.admit(key, record("a", "A Sato", 30), None, now).unwrap();
        assert_eq!(w.iter().count(), 1);
    }

    #[test]
    fn entries_are_bounded_in_all_and_expire() {
        let now = Instant::now();
        let mut w = words(4, 2);
        w.admit(word_key("ann"), record("a", "Ann", 10), None, now)
            .unwrap();
        w.admit(word_key("bob"), record("b", "Bob", 10), None, now)
            .unwrap();
        assert_eq!(
            w.admit(word_key("cat"), record("c", "Cat", 10), None, now),
            Err(Limit::StoreFull { max: 2 }.into())
        );
        w.expire(5001);
        assert!(!w.contains_key(&word_key("ann")));
        w.admit(word_key("cat"), record("c", "Cat", 10), None, now)
            .unwrap();
    }

    #[test]
    fn search_results_have_every_query_word() {
        let mut results = BTreeMap::new();
        for (name, display) in [
            ("a", "Hana Sato"),
            ("b", "Sato Taro"),
            ("c", "Hana Sato Jr"),
        ] {
            results.insert(name.to_owned(), record(name, display, 10));
        }
        let query = ["hana".to_owned(), "sato".to_owned()];
        let found: Vec<String> = matches(results.clone(), &query, 32)
            .into_iter()
            .map(|r| r.username)
            .collect();
        assert_eq!(found, ["a", "c"]);
        assert_eq!(matches(results, &query, 1).len(), 1);
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
}
