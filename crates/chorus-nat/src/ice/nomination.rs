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
