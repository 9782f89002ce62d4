//! Iterative lookups: `alpha` requests in flight per path over `disjoint_paths`
//! paths that never share a node (S/Kademlia), converging on the `replication`
//! closest nodes, a value quorum on distinct paths.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chorus_crypto::cert::NodeId;

use super::requests::Purpose;
use super::{Config, Event, LookupId, LookupOutcome, Node, search};
use crate::error::{Error, Limit, UsageError, Violation};
use crate::id::{distance, random_in_bucket};
use crate::message::{Body, Contact};
use crate::record::PresenceRecord;

/// What a lookup is for, which decides what it asks and what happens when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LookupKind {
    FindNode,
    FindValue,
    Publish,
    Refresh,
    Replicate,
    Join,
    Search,
    PublishWord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CandState {
    Fresh,
    Waiting,
    Stalled,
    Done,
    Failed,
}

#[derive(Debug, Clone)]
pub(super) struct Cand {
    pub(super) contact: Contact,
    pub(super) depth: u32,
    pub(super) state: CandState,
}

/// One of a lookup's disjoint paths: its candidates, closest first.
#[derive(Debug, Clone, Default)]
pub(super) struct Path {
    pub(super) cands: Vec<Cand>,
}

/// A lookup in progress.
#[derive(Debug)]
pub(super) struct Lookup {
    pub(super) kind: LookupKind,
    pub(super) target: NodeId,
    pub(super) paths: Vec<Path>,
    /// Every node put on a path: a node is on one path only.
    pub(super) seen: BTreeSet<NodeId>,
    pub(super) started: Instant,
    pub(super) messages: u32,
    pub(super) best: Option<PresenceRecord>,
    pub(super) holders: usize,
    /// Bit i: path i found a holder.
    pub(super) holder_paths: u8,
    pub(super) first_value: Option<(Instant, u32)>,
    /// PublishWord: the user key of the published record.
    pub(super) subject: Option<NodeId>,
    /// Search: the query words (lowercase).
    pub(super) query: Vec<String>,
    /// Search: results so far, by username.
    pub(super) results: BTreeMap<String, PresenceRecord>,
}

impl Lookup {
    /// A lookup of `target` started `now`: the `initial` contacts, closest first,
    /// dealt round-robin onto `paths` paths.
    pub(super) fn new(
        kind: LookupKind,
        target: NodeId,
        mut initial: Vec<Contact>,
        paths: usize,
        now: Instant,
    ) -> Self {
        initial.sort_by_key(|c| distance(&target, &c.id));
        let d = paths;
        let mut paths = vec![Path::default(); d];
        let mut seen = BTreeSet::new();
        for (i, c) in initial.into_iter().enumerate() {
            seen.insert(c.id);
            if let Some(p) = paths.get_mut(i % d) {
                p.cands.push(Cand {
                    contact: c,
                    depth: 1,
                    state: CandState::Fresh,
                });
            }
        }
        Self {
            kind,
            target,
            paths,
            seen,
            started: now,
            messages: 0,
            best: None,
            holders: 0,
            holder_paths: 0,
            first_value: None,
            subject: None,
            query: Vec::new(),
            results: BTreeMap::new(),
        }
    }

    /// The candidate `id` on path `path`.
    pub(super) fn cand_mut(&mut self, path: usize, id: &NodeId) -> Option<&mut Cand> {
        self.paths
            .get_mut(path)
            .and_then(|p| p.cands.iter_mut().find(|c| c.contact.id == *id))
    }

    /// The request this lookup sends each candidate.
    const fn request(&self) -> Body<'static> {
        match self.kind {
            LookupKind::FindValue | LookupKind::Search => Body::FindValue { key: self.target },
            _ => Body::FindNode {
                target: self.target,
            },
        }
    }

    /// Whether a value lookup has what it waits for. A quorum counts holders on
    /// distinct paths where there are several: a stale record replayed by
    /// attackers on one path cannot win alone. After `stall_timeout` a quorum on
    /// one path is accepted too, so a path that wanders does not hold the answer
    /// back.
    fn value_done(&self, now: Instant, config: &Config) -> bool {
        match self.kind {
            LookupKind::FindValue => {
                let q = config.value_quorum;
                self.holders >= q
                    && (self.holder_paths.count_ones() as usize >= q.min(self.paths.len())
                        || self
                            .first_value
                            .is_some_and(|(t, _)| now >= t + config.stall_timeout))
            }
            LookupKind::Search => self.holders >= config.search_holders,
            _ => false,
        }
    }

    /// When a value lookup with a quorum on one path accepts it (see
    /// [`Self::value_done`]).
    pub(super) fn ripe_at(&self, quorum: usize, stall_timeout: Duration) -> Option<Instant> {
        if self.kind == LookupKind::FindValue && self.holders >= quorum {
            self.first_value.map(|(found, _)| found + stall_timeout)
        } else {
            None
        }
    }

    /// The candidates path `pi` may ask now (within `alpha` in flight among its
    /// `k` closest live ones), and whether the path is done.
    fn sends(&self, pi: usize, k: usize, alpha: usize) -> (Vec<Contact>, bool) {
        let mut sends = Vec::new();
        let mut path_done = true;
        if let Some(p) = self.paths.get(pi) {
            let mut waiting = p
                .cands
                .iter()
                .filter(|c| c.state == CandState::Waiting)
                .count();
            for c in p
                .cands
                .iter()
                .filter(|c| c.state != CandState::Failed)
                .take(k)
            {
                match c.state {
                    CandState::Fresh => {
                        path_done = false;
                        if waiting < alpha {
                            sends.push(c.contact);
                            waiting += 1;
                        }
                    }
                    CandState::Waiting | CandState::Stalled => path_done = false,
                    CandState::Done | CandState::Failed => {}
                }
            }
        }
        (sends, path_done)
    }

    /// Whether no request of the lookup is still out.
    fn is_stuck(&self) -> bool {
        self.paths.iter().all(|p| {
            !p.cands
                .iter()
                .any(|c| matches!(c.state, CandState::Waiting | CandState::Stalled))
        })
    }

    /// The `k` closest nodes that answered, closest first.
    fn closest(&self, k: usize) -> Vec<Contact> {
        let mut closest: Vec<Contact> = self
            .paths
            .iter()
            .flat_map(|p| p.cands.iter())
            .filter(|c| c.state == CandState::Done)
            .map(|c| c.contact)
            .collect();
        closest.sort_by_key(|c| distance(&self.target, &c.id));
        closest.truncate(k);
        closest
    }

    /// A holder at `depth` on path `path` returned a verified record.
    fn add_holder(&mut self, path: usize, now: Instant, depth: u32, record: PresenceRecord) {
        self.holders += 1;
        self.holder_paths |= 1 << path.min(7);
        if self.first_value.is_none() {
            self.first_value = Some((now, depth));
        }
        if self.best.as_ref().is_none_or(|b| record.supersedes(b)) {
            self.best = Some(record);
        }
    }

    /// Puts the `nodes` an answer at `depth` named on its path (unless on a path
    /// already, or `own`), keeping at most `3k` never-queried candidates.
    fn add_nodes(&mut self, path: usize, depth: u32, nodes: &[Contact], own: &NodeId, k: usize) {
        let target = self.target;
        let mut added = false;
        for c in nodes {
            if c.id == *own || !self.seen.insert(c.id) {
                continue;
            }
            if let Some(p) = self.paths.get_mut(path) {
                p.cands.push(Cand {
                    contact: *c,
                    depth: depth.saturating_add(1),
                    state: CandState::Fresh,
                });
                added = true;
            }
        }
        if added && let Some(p) = self.paths.get_mut(path) {
            p.cands.sort_by_key(|c| distance(&target, &c.contact.id));
            // Bounded: drop the farthest never-queried candidates beyond 3k.
            let mut excess = p.cands.len().saturating_sub(3 * k);
            while excess > 0 {
                let Some(pos) = p.cands.iter().rposition(|c| c.state == CandState::Fresh) else {
                    break;
                };
                p.cands.remove(pos);
                excess -= 1;
            }
        }
    }

    /// The outcome of the finished lookup `id`.
    fn into_outcome(
        self,
        id: u64,
        now: Instant,
        closest: Vec<Contact>,
        results: Vec<PresenceRecord>,
    ) -> LookupOutcome {
        LookupOutcome {
            id: LookupId(id),
            target: self.target,
            record: self.best,
            closest,
            hops: self.first_value.map(|(_, h)| h),
            found_after: self
                .first_value
                .map(|(t, _)| t.saturating_duration_since(self.started)),
            duration: now.saturating_duration_since(self.started),
            messages: self.messages,
            results,
        }
    }

    pub(super) fn memory_bytes(&self) -> usize {
        size_of::<Self>()
            + self.seen.len() * 48
            + self
                .paths
                .iter()
                .map(|p| p.cands.capacity() * size_of::<Cand>())
                .sum::<usize>()
    }
}

impl Node {
    pub(super) fn start_lookup(
        &mut self,
        now: Instant,
        kind: LookupKind,
        target: NodeId,
        extra: &[Contact],
    ) -> Result<u64, Error> {
        self.start_lookup_with(now, kind, target, extra, None, Vec::new())
    }

    pub(super) fn start_lookup_with(
        &mut self,
        now: Instant,
        kind: LookupKind,
        target: NodeId,
        extra: &[Contact],
        subject: Option<NodeId>,
        query: Vec<String>,
    ) -> Result<u64, Error> {
        if self.left {
            return Err(UsageError::Left.into());
        }
        if self.lookups.len() >= self.config.max_lookups {
            return Err(Limit::TooManyLookups {
                max: self.config.max_lookups,
            }
            .into());
        }
        let k = self.config.replication;
        let d = self.config.disjoint_paths;
        let mut initial = self.table.closest(&target, k * d);
        for c in extra {
            if c.id != self.id && !initial.iter().any(|i| i.id == c.id) {
                initial.push(*c);
            }
        }
        let mut lookup = Lookup::new(kind, target, initial, d, now);
        lookup.subject = subject;
        lookup.query = query;
        self.table.touch(&target, now);
        let id = self.next_id;
        self.next_id += 1;
        self.lookups.insert(id, lookup);
        self.step_lookup(now, id);
        Ok(id)
    }

    /// Sends what each path may send, and finishes the lookup when it is done.
    pub(super) fn step_lookup(&mut self, now: Instant, id: u64) {
        let k = self.config.replication;
        let alpha = self.config.alpha;
        let Some(mut l) = self.lookups.remove(&id) else {
            return;
        };
        let value_done = l.value_done(now, &self.config);
        let mut all_done = true;
        if !value_done {
            for pi in 0..l.paths.len() {
                let (sends, mut path_done) = l.sends(pi, k, alpha);
                for contact in sends {
                    let purpose = Purpose::Lookup {
                        lookup: id,
                        path: pi,
                    };
                    let sent = self
                        .send_request(now, contact.addr, Some(contact.id), l.request(), purpose)
                        .is_some();
                    if sent {
                        l.messages += 1;
                    }
                    if let Some(c) = l.cand_mut(pi, &contact.id) {
                        c.state = if sent {
                            CandState::Waiting
                        } else {
                            CandState::Failed
                        };
                    }
                    if !sent {
                        path_done = false;
                    }
                }
                all_done &= path_done;
            }
        }
        // A failed send above may leave a path with nothing to do but not done:
        // re-check that no request is still out before finishing.
        if value_done || all_done || l.is_stuck() {
            self.finish_lookup(now, id, l);
        } else {
            self.lookups.insert(id, l);
        }
    }

    fn finish_lookup(&mut self, now: Instant, id: u64, mut l: Lookup) {
        // Forget requests still out for it: late answers are unsolicited.
        self.requests
            .retain(|p| !matches!(p.purpose, Purpose::Lookup { lookup, .. } if lookup == id));
        let closest = l.closest(self.config.replication);
        match l.kind {
            LookupKind::FindNode | LookupKind::FindValue => {
                let outcome = l.into_outcome(id, now, closest, Vec::new());
                self.push_event(Event::Lookup(Box::new(outcome)));
            }
            LookupKind::Search => {
                let found = core::mem::take(&mut l.results);
                let results = search::matches(found, &l.query, self.config.max_search_results);
                let outcome = l.into_outcome(id, now, closest, results);
                self.push_event(Event::Lookup(Box::new(outcome)));
            }
            LookupKind::PublishWord => {
                if let Some(subject) = l.subject {
                    self.store_word_at(now, &l.target, &subject, &closest);
                }
            }
            LookupKind::Publish => self.store_at(now, &l.target, &closest),
            LookupKind::Refresh => {}
            LookupKind::Replicate => self.replicate_to(now, &l.target, &closest),
            LookupKind::Join => {
                self.joining = false;
                if self.table.is_empty() {
                    self.push_event(Event::BootstrapFailed);
                } else {
                    // Refresh every bucket farther than our closest neighbour.
                    let levels = self.table.levels().min(24);
                    self.refresh_levels(now, 0..levels.saturating_sub(1));
                    let contacts = self.table.len();
                    self.push_event(Event::Bootstrapped { contacts });
                }
            }
        }
    }

    /// Starts a refresh lookup of a random id in each bucket level of `levels`
    /// (until the entropy source or the lookup limit fails).
    pub(super) fn refresh_levels(&mut self, now: Instant, levels: impl IntoIterator<Item = usize>) {
        for level in levels {
            let mut r = [0u8; 32];
            if self.entropy.fill(&mut r).is_err() {
                break;
            }
            let target = random_in_bucket(&self.id, level, r);
            if self
                .start_lookup(now, LookupKind::Refresh, target, &[])
                .is_err()
            {
                break;
            }
        }
    }

    /// An answer to lookup `lookup` from `sender` on path `path`: verifies the
    /// record or search entries it carries and puts the nodes it names on the path.
    pub(super) fn lookup_response(
        &mut self,
        now: Instant,
        lookup: u64,
        path: usize,
        sender: Contact,
        from: SocketAddr,
        body: &Body<'_>,
    ) {
        let own = self.id;
        let k = self.config.replication;
        let Some(l) = self.lookups.get_mut(&lookup) else {
            return;
        };
        let Some(depth) = l.cand_mut(path, &sender.id).map(|c| {
            c.state = CandState::Done;
            c.depth
        }) else {
            return;
        };
        let (nodes, record, records) = match body {
            Body::Nodes { nodes } => (nodes.as_slice(), None, &[][..]),
            Body::Value {
                record,
                nodes,
                records,
            } => (nodes.as_slice(), *record, records.as_slice()),
            _ => (&[][..], None, &[][..]),
        };
        if l.kind == LookupKind::Search && !records.is_empty() {
            self.search_response(now, lookup, depth, sender, from, records);
        }
        let Some(l) = self.lookups.get_mut(&lookup) else {
            return;
        };
        if let (Some(bytes), LookupKind::FindValue) = (record, l.kind) {
            let target = l.target;
            let verdict = PresenceRecord::decode(bytes)
                .map_err(Error::from)
                .and_then(|r| {
                    if r.key() == target {
                        Ok(r)
                    } else {
                        Err(Violation::BadSignature.into())
                    }
                })
                .and_then(|r| self.check_record(&r, now).map(|()| r));
            match verdict {
                Ok(r) => {
                    let Some(l) = self.lookups.get_mut(&lookup) else {
                        return;
                    };
                    l.add_holder(path, now, depth, r);
                }
                Err(Error::Protocol(Violation::Expired)) => {}
                Err(_) => {
                    // A record that does not verify: drop it and the node that sent it.
                    self.penalize(from, &sender.id, now);
                    if let Some(c) = self
                        .lookups
                        .get_mut(&lookup)
                        .and_then(|l| l.cand_mut(path, &sender.id))
                    {
                        c.state = CandState::Failed;
                    }
                    return;
                }
            }
        }
        if let Some(l) = self.lookups.get_mut(&lookup) {
            l.add_nodes(path, depth, nodes, &own, k);
        }
    }

    /// Value lookups whose quorum waited long enough for a second path.
    pub(super) fn ripen_lookups(&mut self, now: Instant) {
        let (quorum, stall) = (self.config.value_quorum, self.config.stall_timeout);
        let ripe: Vec<u64> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.ripe_at(quorum, stall).is_some_and(|t| now >= t))
            .map(|(id, _)| *id)
            .collect();
        for id in ripe {
            self.step_lookup(now, id);
        }
    }

    /// When the first value lookup with a quorum on one path accepts it.
    pub(super) fn next_ripe(&self) -> Option<Instant> {
        let (quorum, stall) = (self.config.value_quorum, self.config.stall_timeout);
        self.lookups
            .values()
            .filter_map(|l| l.ripe_at(quorum, stall))
            .min()
    }
}

#[cfg(test)]
// Tests configure the way callers do (STYLE.md section 8).
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::node::tests::*;

    fn lookup(kind: LookupKind, n: u8, paths: usize) -> Lookup {
        let initial = (1..=n).map(contact).collect();
        Lookup::new(kind, NodeId([0; 32]), initial, paths, Instant::now())
    }

    #[test]
    fn initial_contacts_are_dealt_closest_first_onto_disjoint_paths() {
        let l = lookup(LookupKind::FindNode, 5, 2);
        let ids = |p: &Path| {
            p.cands
                .iter()
                .map(|c| c.contact.id.0[0])
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&l.paths[0]), [1, 3, 5]);
        assert_eq!(ids(&l.paths[1]), [2, 4]);
        assert_eq!(l.seen.len(), 5);
    }

    #[test]
    fn a_path_keeps_alpha_requests_in_flight_among_its_k_closest() {
        let mut l = lookup(LookupKind::FindNode, 6, 1);
        let (sends, done) = l.sends(0, 4, 2);
        assert_eq!(sends, [contact(1), contact(2)]);
        assert!(!done);
        for c in &sends {
            l.cand_mut(0, &c.id).unwrap().state = CandState::Waiting;
        }
        assert!(l.sends(0, 4, 2).0.is_empty(), "alpha in flight");
        l.cand_mut(0, &contact(1).id).unwrap().state = CandState::Failed;
        l.cand_mut(0, &contact(2).id).unwrap().state = CandState::Done;
        // The failed one makes room for the fifth closest among the k = 4.
        assert_eq!(l.sends(0, 4, 2).0, [contact(3), contact(4)]);
        assert!(l.is_stuck(), "nothing in flight");
        assert_eq!(l.closest(4), [contact(2)]);
    }

    #[test]
    fn answers_add_unseen_nodes_and_bound_the_fresh_candidates() {
        let mut l = lookup(LookupKind::FindNode, 2, 1);
        let own = NodeId([9; 32]);
        let named: Vec<Contact> = (1..=9).map(contact).collect();
        l.add_nodes(0, 1, &named, &own, 2);
        // 1 and 2 were on the path, 9 is us; 3k = 6 candidates kept, closest first.
        let ids: Vec<u8> = l.paths[0].cands.iter().map(|c| c.contact.id.0[0]).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
        assert_eq!(l.paths[0].cands[2].depth, 2);
    }

    #[test]
    fn a_value_quorum_needs_distinct_paths_or_a_stall() {
        let config = Config::default();
        let now = Instant::now();
        let mut l = lookup(LookupKind::FindValue, 4, 2);
        let r = |v| unsigned_record("ann", "Ann", v, 100);
        l.add_holder(0, now, 1, r(2));
        l.add_holder(0, now, 2, r(1));
        assert_eq!(l.best.as_ref().map(|b| b.version), Some(2), "the newest");
        assert!(!l.value_done(now, &config), "one path");
        let ripe = l.ripe_at(config.value_quorum, config.stall_timeout);
        assert_eq!(ripe, Some(now + config.stall_timeout));
        assert!(l.value_done(now + config.stall_timeout, &config));
        l.add_holder(1, now, 1, r(2));
        assert!(l.value_done(now, &config), "two paths");
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
}
