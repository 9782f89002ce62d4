//! The check list (RFC 8445 §6.1.2): candidate pairs, their states, the frozen
//! algorithm and the triggered-check queue. [`CheckList`] holds the pairs and the
//! queue; the agent's methods here form pairs from its candidates (which it owns) and
//! pick the next check.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;

use super::{Agent, Candidate, CandidateKind, Foundation, Role, pair_priority};

/// RFC 8445 §6.1.2.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PairState {
    Frozen,
    Waiting,
    InProgress,
    Succeeded,
    Failed,
}

/// A candidate pair.
#[derive(Debug)]
pub(super) struct Pair {
    /// Index into the agent's local candidates: a host or relayed candidate (RFC 8445
    /// §6.1.2.4 replaces reflexive local candidates by their bases).
    pub(super) local: usize,
    /// Index into the agent's remote candidates.
    pub(super) remote: usize,
    pub(super) priority: u64,
    pub(super) state: PairState,
    /// The local candidate of the valid pair this pair produced (RFC 8445 §7.2.5.3.2).
    pub(super) valid_local: Option<usize>,
    /// Controlled side: the peer nominated this pair (RFC 8445 §7.3.1.5).
    pub(super) nominated_by_peer: bool,
}

impl Pair {
    /// A pair of local candidate `local` and remote candidate `remote`.
    pub(super) fn new(local: usize, remote: usize, priority: u64, state: PairState) -> Self {
        Self {
            local,
            remote,
            priority,
            state,
            valid_local: None,
            nominated_by_peer: false,
        }
    }
}

/// A triggered check: (base, remote, nominate).
type Triggered = (SocketAddr, SocketAddr, bool);

/// The pairs of one component and the triggered-check queue (RFC 8445 §6.1.4.1).
#[derive(Debug, Default)]
pub(super) struct CheckList {
    pairs: Vec<Pair>,
    /// Served before ordinary checks.
    triggered: VecDeque<Triggered>,
}

impl CheckList {
    /// How many pairs it holds.
    pub(super) fn len(&self) -> usize {
        self.pairs.len()
    }

    /// The pairs, in no particular order.
    pub(super) fn iter(&self) -> core::slice::Iter<'_, Pair> {
        self.pairs.iter()
    }

    /// Pair `i`.
    pub(super) fn get(&self, i: usize) -> Option<&Pair> {
        self.pairs.get(i)
    }

    /// Pair `i`, to change.
    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut Pair> {
        self.pairs.get_mut(i)
    }

    /// Adds `pair`, capping the list at `max` (RFC 8445 §6.1.2.5): when full, the
    /// lowest-priority pair not yet checked makes room if its priority is lower (or
    /// the new pair is a triggered one, already waiting). Returns the new index.
    pub(super) fn insert(&mut self, pair: Pair, max: usize) -> Option<usize> {
        if self.pairs.len() >= max {
            let victim = self
                .pairs
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    matches!(
                        p.state,
                        PairState::Frozen | PairState::Waiting | PairState::Failed
                    )
                })
                .min_by_key(|(_, p)| p.priority)
                .map(|(i, p)| (i, p.priority));
            match victim {
                Some((i, p)) if p < pair.priority || pair.state == PairState::Waiting => {
                    self.pairs.swap_remove(i);
                }
                _ => return None,
            }
        }
        self.pairs.push(pair);
        Some(self.pairs.len() - 1)
    }

    /// Queues a triggered check of (base, remote) unless one is queued already.
    pub(super) fn trigger(&mut self, base: SocketAddr, remote: SocketAddr) {
        if !self.triggered.contains(&(base, remote, false)) {
            self.triggered.push_back((base, remote, false));
        }
    }

    /// Queues a triggered check of (base, remote) again (after a role conflict).
    pub(super) fn retrigger(&mut self, base: SocketAddr, remote: SocketAddr) {
        self.triggered.push_back((base, remote, false));
    }

    /// Queues the nominating check of (base, remote) ahead of everything else.
    pub(super) fn nominate(&mut self, base: SocketAddr, remote: SocketAddr) {
        self.triggered.push_front((base, remote, true));
    }

    /// The next triggered check, if any.
    pub(super) fn next_triggered(&mut self) -> Option<Triggered> {
        self.triggered.pop_front()
    }

    /// Whether a triggered check is queued.
    pub(super) fn has_triggered(&self) -> bool {
        !self.triggered.is_empty()
    }

    /// Drops every queued triggered check (checking ended).
    pub(super) fn clear_triggered(&mut self) {
        self.triggered.clear();
    }

    /// Whether a pair waits for its check.
    pub(super) fn has_waiting(&self) -> bool {
        self.pairs.iter().any(|p| p.state == PairState::Waiting)
    }

    /// The highest-priority waiting pair.
    pub(super) fn best_waiting(&self) -> Option<&Pair> {
        self.pairs
            .iter()
            .filter(|p| p.state == PairState::Waiting)
            .max_by_key(|p| p.priority)
    }

    /// The highest-priority succeeded pair and its priority.
    pub(super) fn best_succeeded(&self) -> Option<(usize, u64)> {
        self.pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state == PairState::Succeeded)
            .max_by_key(|(_, p)| p.priority)
            .map(|(i, p)| (i, p.priority))
    }

    /// Whether a pair of higher priority than `priority` may still succeed.
    pub(super) fn better_pending(&self, priority: u64) -> bool {
        self.pairs.iter().any(|p| {
            p.priority > priority
                && matches!(
                    p.state,
                    PairState::Frozen | PairState::Waiting | PairState::InProgress
                )
        })
    }

    /// Whether a pair succeeded.
    pub(super) fn any_succeeded(&self) -> bool {
        self.pairs.iter().any(|p| p.state == PairState::Succeeded)
    }

    /// Whether every pair failed (true for an empty list).
    pub(super) fn all_failed(&self) -> bool {
        self.pairs.iter().all(|p| p.state == PairState::Failed)
    }
}

impl Agent {
    pub(super) fn pair_priority_of(&self, l: &Candidate, r: &Candidate) -> u64 {
        match self.role {
            Role::Controlling => pair_priority(l.priority, r.priority),
            Role::Controlled => pair_priority(r.priority, l.priority),
        }
    }

    /// Forms the pair (RFC 8445 §6.1.2.2) if the families match and the local candidate
    /// is a base, pruning redundant pairs (§6.1.2.4) and capping the list (§6.1.2.5).
    /// Returns its index.
    pub(super) fn add_pair(&mut self, li: usize, ri: usize, state: PairState) -> Option<usize> {
        let (l, r) = (self.local.get(li)?, self.remote.get(ri)?);
        if !matches!(l.kind, CandidateKind::Host | CandidateKind::Relayed)
            || l.addr.is_ipv4() != r.addr.is_ipv4()
        {
            return None;
        }
        let (base, raddr) = (l.base, r.addr);
        if let Some(i) = self.find_pair(base, raddr) {
            return Some(i);
        }
        let priority = self.pair_priority_of(l, r);
        self.pairs
            .insert(Pair::new(li, ri, priority, state), self.config.max_pairs)
    }

    pub(super) fn find_pair(&self, base: SocketAddr, remote: SocketAddr) -> Option<usize> {
        self.pairs.iter().position(|p| {
            self.local.get(p.local).is_some_and(|l| l.base == base)
                && self.remote.get(p.remote).is_some_and(|r| r.addr == remote)
        })
    }

    pub(super) fn recompute_priorities(&mut self) {
        for i in 0..self.pairs.len() {
            let Some(p) = self.pairs.get(i) else { continue };
            let (Some(l), Some(r)) = (self.local.get(p.local), self.remote.get(p.remote)) else {
                continue;
            };
            let prio = self.pair_priority_of(l, r);
            if let Some(p) = self.pairs.get_mut(i) {
                p.priority = prio;
            }
        }
    }

    pub(super) fn foundation_key(&self, p: &Pair) -> Option<(Foundation, Foundation)> {
        Some((
            self.local.get(p.local)?.foundation.clone(),
            self.remote.get(p.remote)?.foundation.clone(),
        ))
    }

    /// RFC 8445 §6.1.2.6 and §7.2.5.3.3: of the frozen pairs, a foundation's best pair
    /// waits unless one of that foundation is already waiting or in progress; every
    /// pair of a foundation that succeeded waits.
    pub(super) fn unfreeze(&mut self) {
        let mut active = HashSet::new();
        let mut succeeded = HashSet::new();
        for p in self.pairs.iter() {
            match p.state {
                PairState::Waiting | PairState::InProgress => {
                    active.extend(self.foundation_key(p));
                }
                PairState::Succeeded => {
                    succeeded.extend(self.foundation_key(p));
                }
                _ => {}
            }
        }
        let mut order: Vec<usize> = (0..self.pairs.len()).collect();
        order.sort_by_key(|&i| core::cmp::Reverse(self.pairs.get(i).map_or(0, |p| p.priority)));
        for i in order {
            let Some(p) = self.pairs.get(i) else { continue };
            if p.state != PairState::Frozen {
                continue;
            }
            let Some(key) = self.foundation_key(p) else {
                continue;
            };
            let thaw = succeeded.contains(&key) || !active.contains(&key);
            if thaw {
                active.insert(key);
                if let Some(p) = self.pairs.get_mut(i) {
                    p.state = PairState::Waiting;
                }
            }
        }
    }

    pub(super) fn set_pair_state(
        &mut self,
        base: SocketAddr,
        remote: SocketAddr,
        state: PairState,
    ) -> Option<usize> {
        let i = self.find_pair(base, remote)?;
        if let Some(p) = self.pairs.get_mut(i) {
            p.state = state;
        }
        Some(i)
    }

    /// The next check to send (RFC 8445 §6.1.4.2): a triggered one, else the
    /// highest-priority waiting pair.
    pub(super) fn next_check(&mut self) -> Option<(SocketAddr, SocketAddr, bool)> {
        self.remote_key.as_ref()?;
        while let Some((base, remote, nominate)) = self.pairs.next_triggered() {
            let Some(p) = self.find_pair(base, remote).and_then(|i| self.pairs.get(i)) else {
                continue;
            };
            if nominate || p.state != PairState::InProgress {
                return Some((base, remote, nominate));
            }
        }
        let p = self.pairs.best_waiting()?;
        Some((
            self.local.get(p.local)?.base,
            self.remote.get(p.remote)?.addr,
            false,
        ))
    }

    pub(super) fn has_work(&self) -> bool {
        self.remote_key.is_some() && (self.pairs.has_triggered() || self.pairs.has_waiting())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn a_full_list_evicts_its_lowest_unchecked_pair_for_a_better_one() {
        let mut list = CheckList::default();
        assert_eq!(
            list.insert(Pair::new(0, 0, 10, PairState::Frozen), 2),
            Some(0)
        );
        assert_eq!(
            list.insert(Pair::new(0, 1, 20, PairState::InProgress), 2),
            Some(1)
        );
        // Lower than every unchecked pair: refused.
        assert_eq!(list.insert(Pair::new(0, 2, 5, PairState::Frozen), 2), None);
        // Higher: the frozen pair of priority 10 makes room.
        assert!(
            list.insert(Pair::new(0, 3, 30, PairState::Frozen), 2)
                .is_some()
        );
        let mut prios: Vec<u64> = list.iter().map(|p| p.priority).collect();
        prios.sort_unstable();
        assert_eq!(prios, [20, 30]);
        // A triggered (waiting) pair always gets a place if one is unchecked.
        assert!(
            list.insert(Pair::new(0, 4, 1, PairState::Waiting), 2)
                .is_some()
        );
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn a_list_of_checked_pairs_refuses_more() {
        let mut list = CheckList::default();
        list.insert(Pair::new(0, 0, 10, PairState::Succeeded), 1);
        assert_eq!(
            list.insert(Pair::new(0, 1, 99, PairState::Waiting), 1),
            None
        );
    }

    #[test]
    fn triggered_checks_are_deduplicated_and_nominations_jump_the_queue() {
        let mut list = CheckList::default();
        list.trigger(addr(1), addr(2));
        list.trigger(addr(1), addr(2));
        list.nominate(addr(3), addr(4));
        list.retrigger(addr(1), addr(2));
        assert!(list.has_triggered());
        assert_eq!(list.next_triggered(), Some((addr(3), addr(4), true)));
        assert_eq!(list.next_triggered(), Some((addr(1), addr(2), false)));
        assert_eq!(list.next_triggered(), Some((addr(1), addr(2), false)));
        assert_eq!(list.next_triggered(), None);
        list.trigger(addr(1), addr(2));
        list.clear_triggered();
        assert!(!list.has_triggered());
    }

    #[test]
    fn pair_state_queries() {
        let mut list = CheckList::default();
        assert!(list.all_failed() && !list.has_waiting() && !list.any_succeeded());
        list.insert(Pair::new(0, 0, 10, PairState::Succeeded), 8);
        list.insert(Pair::new(0, 1, 30, PairState::Waiting), 8);
        list.insert(Pair::new(0, 2, 20, PairState::Waiting), 8);
        list.insert(Pair::new(0, 3, 40, PairState::Failed), 8);
        assert_eq!(list.best_waiting().map(|p| p.remote), Some(1));
        assert_eq!(list.best_succeeded(), Some((0, 10)));
        assert!(list.better_pending(10) && !list.better_pending(30));
        assert!(list.any_succeeded() && !list.all_failed());
        for i in 0..list.len() {
            list.get_mut(i).unwrap().state = PairState::Failed;
        }
        assert!(list.all_failed() && list.get(3).is_some());
    }
}

/// The same subsystem seen through two agents on the simulated network of
/// `ice/tests.rs`.
#[cfg(test)]
mod behaviour {
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use super::super::checklist::PairState;
    use super::super::tests::*;
    use super::super::*;
    use crate::stun::{Class, Limits, Message};

    #[test]
    fn checks_are_paced_by_ta() {
        let mut sim = Sim::pair(config(Role::Controlling), config(Role::Controlled));
        // Distinct addresses, distinct foundations: all 16 pairs wait at once.
        for i in 1..=4 {
            host(&mut sim, 0, &format!("192.0.2.{i}:5000"));
            host(&mut sim, 1, &format!("192.0.2.{}:6000", 10 + i));
        }
        sim.exchange();
        // B is silent for a second: A walks through its checklist at Ta.
        let quiet_until = sim.now - sim.t0 + Duration::from_secs(1);
        sim.drop = Box::new(move |side, t| side == 1 && t < quiet_until);
        sim.connect();
        let mut seen = HashSet::new();
        let starts: Vec<Instant> = sim
            .sent
            .iter()
            .filter(|(_, side, dst, _)| *side == 0 && *dst != sa(STUN))
            .filter_map(|(at, _, _, payload)| {
                let m = Message::decode(payload, &Limits::default()).ok()?;
                (m.class == Class::Request && seen.insert(m.transaction_id)).then_some(*at)
            })
            .collect();
        assert!(starts.len() >= 10, "{starts:?}");
        for w in starts.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(50), "{starts:?}");
        }
    }

    #[test]
    fn the_pair_list_stays_within_its_cap() {
        let mut ca = config(Role::Controlling);
        ca.max_pairs = 10;
        ca.max_remote_candidates = 32;
        let mut sim = Sim::pair(ca, config(Role::Controlled));
        for port in 1..=4 {
            host(&mut sim, 0, &format!("192.0.2.1:{port}"));
        }
        let remote: Vec<Candidate> = (1..=32)
            .map(|p| Candidate {
                kind: CandidateKind::Host,
                addr: SocketAddr::new("192.0.2.9".parse().unwrap(), p),
                base: SocketAddr::new("192.0.2.9".parse().unwrap(), p),
                related: None,
                priority: priority(CandidateKind::Host, p),
                foundation: Foundation::from_number(u32::from(p)),
                via_tcp: false,
            })
            .collect();
        let mut d = sim.sides[1].agent.local_description();
        d.candidates = remote.clone();
        let now = sim.now;
        sim.sides[0]
            .agent
            .apply_remote_description(now, &d)
            .unwrap();
        assert_eq!(sim.sides[0].agent.pair_count(), 10);
        // The highest-priority pairs were kept.
        let min_kept = sim.sides[0]
            .agent
            .pairs
            .iter()
            .map(|p| p.priority)
            .min()
            .unwrap();
        assert!(
            sim.sides[0]
                .agent
                .pairs
                .iter()
                .all(|p| p.priority >= min_kept)
        );
        let top_remote = sim.sides[0]
            .agent
            .remote
            .iter()
            .position(|r| r.addr.port() == 32)
            .unwrap();
        assert!(
            sim.sides[0]
                .agent
                .pairs
                .iter()
                .any(|p| p.remote == top_remote)
        );
        // One more remote candidate than the table holds is refused.
        let mut extra = remote[0].clone();
        extra.addr.set_port(999);
        let d = Description {
            candidates: vec![extra],
            ..Description::default()
        };
        assert_eq!(
            sim.sides[0].agent.apply_remote_description(now, &d),
            Err(Limit::Candidates(32).into())
        );
    }

    #[test]
    fn a_check_that_failed_early_is_retried_by_a_triggered_check() {
        // A's single-send checks all fail while A->B is blocked; B's later checks trigger
        // new ones from A, which succeed once the path opens.
        let mut ca = config(Role::Controlling);
        ca.check_max_sends = 1;
        let mut sim = Sim::pair(ca, config(Role::Controlled));
        host(&mut sim, 0, "192.0.2.1:5000");
        host(&mut sim, 1, "192.0.2.2:6000");
        sim.drop = Box::new(|side, t| {
            side == 0 && t >= Duration::from_millis(30) && t < Duration::from_secs(2)
        });
        sim.exchange();
        let ok = sim.run_until(|s| s.now - s.t0 > Duration::from_millis(1500), 5000);
        assert!(
            ok,
            "{:?} {:?} {:?}",
            sim.now - sim.t0,
            sim.sides[0].events,
            sim.sides[1].events
        );
        assert!(
            sim.sides[0]
                .agent
                .pairs
                .iter()
                .all(|p| p.state != PairState::Succeeded)
        );
        assert!(sim.run_until(Sim::both_connected, 5000));
        assert!(sim.now - sim.t0 < Duration::from_secs(5));
    }
}
