//! Nomination, selection and consent (RFC 8445 §8, RFC 7675): the controlling side
//! nominates the best valid pair, either side selects a nominated pair, the agent
//! fails when every pair failed, and [`Consent`] keeps the selected pair alive.

use std::time::{Duration, Instant};

use super::{Agent, Event, FAIL_GRACE, FailReason, PathKind, Role, State};

/// The pair carrying data once connected.
#[derive(Debug, Clone, Copy)]
pub(super) struct Selected {
    pub(super) local: usize,
    pub(super) remote: usize,
    pub(super) base: std::net::SocketAddr,
}

/// Consent freshness on the selected pair (RFC 7675): when the next refresh is sent,
/// and until when the last answered one keeps the pair usable.
#[derive(Debug)]
pub(super) struct Consent {
    /// xorshift state for the interval's jitter, seeded from the entropy source.
    jitter: u64,
    next_check: Option<Instant>,
    until: Option<Instant>,
}

impl Consent {
    /// Nothing scheduled; `seed` (odd, nonzero) drives the jitter.
    pub(super) fn new(seed: u64) -> Self {
        Self {
            jitter: seed,
            next_check: None,
            until: None,
        }
    }

    /// RFC 7675 §5.1: the interval, randomized to 0.8..1.2 of `base`.
    pub(super) fn interval(&mut self, base: Duration) -> Duration {
        let mut x = self.jitter;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter = x;
        let permille = 800 + (x % 401) as u32;
        base * permille / 1000
    }

    /// A pair was selected at `now`: refreshes start, consent lasts `timeout`.
    pub(super) fn start(&mut self, now: Instant, base: Duration, timeout: Duration) {
        self.schedule(now, base);
        self.confirm(now, timeout);
    }

    /// A refresh was answered: consent lasts `timeout` from `now`.
    pub(super) fn confirm(&mut self, now: Instant, timeout: Duration) {
        self.until = Some(now + timeout);
    }

    /// The next refresh goes out one jittered interval after `now`.
    pub(super) fn schedule(&mut self, now: Instant, base: Duration) {
        self.next_check = Some(now + self.interval(base));
    }

    /// Whether consent has run out at `now`.
    pub(super) fn expired(&self, now: Instant) -> bool {
        self.until.is_some_and(|t| now >= t)
    }

    /// Whether a refresh is due at `now`.
    pub(super) fn due(&self, now: Instant) -> bool {
        self.next_check.is_some_and(|t| now >= t)
    }

    /// When the next refresh is due.
    pub(super) fn next_check(&self) -> Option<Instant> {
        self.next_check
    }

    /// When consent runs out.
    pub(super) fn until(&self) -> Option<Instant> {
        self.until
    }
}

impl Agent {
    /// Whether pair `pi` may become the selected pair: any nominated pair while
    /// checking; later, on the controlled side, a different pair the controlling agent
    /// nominated (RFC 8445 §8.1.1: the controlling agent may nominate again when a
    /// nomination fails after the controlled agent already accepted it).
    pub(super) fn may_select(&self, pi: usize) -> bool {
        match self.state {
            State::Checking => true,
            State::Connected => {
                self.role == Role::Controlled
                    && self.pairs.get(pi).is_some_and(|p| {
                        self.selected.is_some_and(|s| {
                            s.remote != p.remote
                                || self.local.get(p.local).is_none_or(|l| l.base != s.base)
                        })
                    })
            }
            State::Failed => false,
        }
    }

    pub(super) fn select(&mut self, now: Instant, pi: usize) {
        let Some(p) = self.pairs.get(pi) else { return };
        let local = p.valid_local.unwrap_or(p.local);
        let (Some(l), Some(r), Some(base)) = (
            self.local.get(local),
            self.remote.get(p.remote),
            self.local.get(p.local).map(|c| c.base),
        ) else {
            return;
        };
        let kind = PathKind::of(l, r);
        self.events.push_back(Event::Connected {
            local: l.clone(),
            remote: r.clone(),
            kind,
        });
        self.selected = Some(Selected {
            local,
            remote: p.remote,
            base,
        });
        self.state = State::Connected;
        // RFC 8445 §8.1.2: checking ends; in-flight checks are left to finish.
        self.pairs.clear_triggered();
        self.consent.start(
            now,
            self.config.consent_interval,
            self.config.consent_timeout,
        );
    }

    pub(super) fn fail(&mut self, reason: FailReason) {
        self.state = State::Failed;
        self.selected = None;
        self.pairs.clear_triggered();
        self.events.push_back(Event::Failed(reason));
    }

    /// After input or a timer: nominate (controlling side) and detect failure.
    pub(super) fn after_change(&mut self, now: Instant) {
        if self.state != State::Checking {
            return;
        }
        // RFC 8445 §8.1.1: regular nomination of the best valid pair, once no better
        // pair can still succeed or after `nomination_delay`.
        if self.role == Role::Controlling
            && self.nominating.is_none()
            && let Some((pi, best)) = self.pairs.best_succeeded()
        {
            let better_pending = self.pairs.better_pending(best);
            let waited = self
                .first_valid_at
                .is_some_and(|t| now >= t + self.config.nomination_delay);
            if (!better_pending || waited)
                && let Some(p) = self.pairs.get(pi)
                && let Some(base) = self.local.get(p.local).map(|c| c.base)
                && let Some(raddr) = self.remote.get(p.remote).map(|c| c.addr)
            {
                self.nominating = Some((base, raddr));
                self.pairs.nominate(base, raddr);
            }
        }
        if self.all_failed_at().is_some_and(|t| now >= t) {
            self.fail(FailReason::AllPairsFailed);
        }
    }

    /// When the agent may conclude that every pair failed (RFC 8445 §8.1.2): both sides
    /// finished gathering, nothing is pending, and the peer's checks, which could
    /// still trigger a successful check, stopped (or never came) [`FAIL_GRACE`] ago.
    pub(super) fn all_failed_at(&self) -> Option<Instant> {
        let done = self.pairs.all_failed()
            && self.remote_complete
            && self.gathering_reported
            && !self.pairs.has_triggered()
            && self.checks.values().all(|c| c.consent);
        if !done {
            return None;
        }
        match self.last_request_at {
            Some(t) => Some(t + FAIL_GRACE),
            // No check from the peer yet: give its first ones the same grace from the
            // start (with no pairs of its own, an agent relies on peer-reflexive ones).
            None => self
                .deadline
                .and_then(|d| d.checked_sub(self.config.timeout))
                .map(|start| start + FAIL_GRACE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_intervals_are_jittered_within_a_fifth_of_the_base() {
        let mut c = Consent::new(0x1234_5678_9abc_def1);
        let base = Duration::from_secs(5);
        let gaps: Vec<Duration> = (0..64).map(|_| c.interval(base)).collect();
        assert!(
            gaps.iter()
                .all(|g| *g >= base * 4 / 5 && *g <= base * 6 / 5)
        );
        assert!(gaps.iter().any(|g| *g != gaps[0]));
    }

    #[test]
    fn consent_is_due_and_expires_on_schedule() {
        let now = Instant::now();
        let mut c = Consent::new(1);
        assert!(!c.due(now) && !c.expired(now));
        assert_eq!((c.next_check(), c.until()), (None, None));
        c.start(now, Duration::from_secs(5), Duration::from_secs(30));
        let next = c.next_check().unwrap();
        assert!(!c.due(now) && c.due(next));
        assert!(!c.expired(now + Duration::from_secs(29)));
        assert!(c.expired(now + Duration::from_secs(30)));
        c.confirm(now + Duration::from_secs(20), Duration::from_secs(30));
        assert_eq!(c.until(), Some(now + Duration::from_secs(50)));
        c.schedule(next, Duration::from_secs(5));
        assert!(c.next_check().unwrap() > next);
    }
}

/// The same subsystem seen through two agents on the simulated network of
/// `ice/tests.rs`.
#[cfg(test)]
mod behaviour {
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use chorus_framing::SeededEntropy;

    use super::super::tests::*;
    use super::super::*;
    use crate::stun::{Attribute, Class, Limits, Message};

    #[test]
    fn consent_expires_when_the_peer_goes_silent() {
        let mut sim = Sim::pair(config(Role::Controlling), config(Role::Controlled));
        host(&mut sim, 0, "192.0.2.1:5000");
        host(&mut sim, 1, "192.0.2.2:6000");
        sim.connect();
        // Consent checks keep the pair alive for a while...
        let t = sim.now;
        assert!(sim.run_until(|s| s.now - t > Duration::from_secs(60), 2000));
        assert_eq!(sim.failed(0), None);
        assert_eq!(sim.sides[0].agent.state(), State::Connected);
        // RFC 7675 §5.1: one check every 5 s, randomized to 4..6 s.
        let mut seen = HashSet::new();
        let checks: Vec<Instant> = sim
            .sent
            .iter()
            .filter(|(at, side, _, _)| *side == 0 && *at > t)
            .filter_map(|(at, _, _, payload)| {
                let m = Message::decode(payload, &Limits::default()).ok()?;
                (m.class == Class::Request && seen.insert(m.transaction_id)).then_some(*at)
            })
            .collect();
        let gaps: Vec<Duration> = checks.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.len() >= 9, "{gaps:?}");
        assert!(
            gaps.iter()
                .all(|g| *g >= Duration::from_secs(4) && *g <= Duration::from_secs(6))
        );
        assert!(gaps.iter().any(|g| *g != gaps[0]), "jittered: {gaps:?}");
        // ...until the peer disappears.
        sim.drop = Box::new(|side, _| side == 1);
        let t = sim.now;
        assert!(sim.run_until(|s| s.failed(0).is_some(), 5000));
        assert_eq!(sim.failed(0), Some(FailReason::ConsentExpired));
        let waited = sim.now - t;
        assert!(
            waited >= Duration::from_secs(25) && waited <= Duration::from_secs(31),
            "{waited:?}"
        );
    }

    #[test]
    fn a_controlled_agent_follows_a_later_nomination_of_another_pair() {
        let config = IceConfig {
            role: Role::Controlled,
            ..IceConfig::default()
        };
        let mut b = Agent::new(config, Box::new(SeededEntropy::new(5))).unwrap();
        let local = b.add_host_candidate(sa("192.0.2.2:6000")).unwrap().addr;
        let mine = b.local_description();
        let (ufrag, pwd) = (mine.ufrag.unwrap(), mine.pwd.unwrap());
        let text = "a=ice-ufrag:peer\na=ice-pwd:peerpassword0123456789\n\
            a=candidate:1 1 UDP 2130706431 192.0.2.1 1 typ host\n\
            a=candidate:2 1 UDP 2130706175 192.0.2.1 2 typ host\na=end-of-candidates\n";
        let peer_pwd = "peerpassword0123456789";
        let mut now = Instant::now();
        b.start_gathering(now).unwrap();
        b.apply_remote_description(now, &Description::parse(text, 4).unwrap())
            .unwrap();
        let mut answered = 0;
        for _ in 0..20 {
            b.handle_timeout(now);
            answered += answer_checks(&mut b, now, peer_pwd);
            now += Duration::from_millis(50);
        }
        assert_eq!(answered, 2);
        assert_eq!(
            b.state(),
            State::Checking,
            "the controlled side waits for nomination"
        );
        let nominate = |port: u16, b: &mut Agent| {
            let req = check_request(
                &ufrag,
                "peer",
                &pwd,
                &[Attribute::IceControlling(1), Attribute::UseCandidate],
            );
            let from = SocketAddr::new("192.0.2.1".parse().unwrap(), port);
            b.handle_input(now, local, from, &req).unwrap();
            while b.poll_transmit().is_some() {}
            std::iter::from_fn(|| b.poll_event()).find_map(|e| match e {
                Event::Connected { remote, .. } => Some(remote.addr),
                _ => None,
            })
        };
        assert_eq!(nominate(1, &mut b), Some(sa("192.0.2.1:1")));
        assert_eq!(b.send(Bytes::new()).unwrap().dst, sa("192.0.2.1:1"));
        // The same nomination again changes nothing; another pair's replaces it.
        assert_eq!(nominate(1, &mut b), None);
        assert_eq!(nominate(2, &mut b), Some(sa("192.0.2.1:2")));
        assert_eq!(b.send(Bytes::new()).unwrap().dst, sa("192.0.2.1:2"));
    }

    #[test]
    fn silence_ends_in_the_overall_timeout() {
        let mut c = config(Role::Controlling);
        c.timeout = Duration::from_secs(7);
        let mut sim = Sim::pair(c, config(Role::Controlled));
        host(&mut sim, 0, "192.0.2.1:5000");
        host(&mut sim, 1, "192.0.2.2:6000");
        sim.drop = Box::new(|_, _| true);
        sim.sides[0].agent.start_gathering(sim.now).unwrap();
        // B's description without end-of-candidates: A cannot conclude "all failed".
        let mut d = sim.sides[1].agent.local_description();
        d.end_of_candidates = false;
        sim.sides[0]
            .agent
            .apply_remote_description(sim.now, &d)
            .unwrap();
        assert!(sim.run_until(|s| s.failed(0).is_some(), 5000));
        assert_eq!(sim.failed(0), Some(FailReason::Timeout));
        assert_eq!(sim.now - sim.t0, Duration::from_secs(7));
    }

    #[test]
    fn symmetric_nats_without_a_relay_fail_once_all_pairs_failed() {
        let mut sim = Sim::pair(config(Role::Controlling), config(Role::Controlled));
        natted(&mut sim, 0, "10.0.0.1:5000", "203.0.113.1", true);
        natted(&mut sim, 1, "10.0.1.1:6000", "203.0.113.2", true);
        sim.exchange();
        assert!(sim.run_until(|s| s.failed(0).is_some() && s.failed(1).is_some(), 5000));
        assert_eq!(sim.failed(0), Some(FailReason::AllPairsFailed));
        // Well before the overall timeout.
        assert!(sim.now - sim.t0 < Duration::from_secs(15));
        assert!(sim.connected(0).is_none());
        assert!(matches!(
            sim.sides[0].agent.send(Bytes::new()),
            Err(Error::Usage(UsageError::NotConnected))
        ));
    }
}
