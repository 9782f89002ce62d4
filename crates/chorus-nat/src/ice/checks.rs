//! Connectivity checks (RFC 8445 §7): the agent's own checks through its STUN client
//! (sent, answered, timed out, consent refreshes among them) and the peer's checks,
//! which it answers, learning peer-reflexive candidates and settling role conflicts.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use chorus_framing::Transmit;

use super::checklist::PairState;
use super::gather::{foundation_of, usable};
use super::{Agent, Candidate, CandidateKind, Event, MAX_PRIORITY, Role, priority};
use crate::client::{self, Transport};
use crate::error::{DecodeError, Error, Limit, Violation};
use crate::stun::{Attribute, Class, Header, Message, Method, types};

/// One of the agent's checks in flight, by transaction id.
#[derive(Debug, Clone, Copy)]
pub(super) struct Check {
    pub(super) base: SocketAddr,
    pub(super) remote: SocketAddr,
    /// The role the request claimed (for RFC 8445 §7.2.5.1).
    pub(super) controlling: bool,
    pub(super) nominate: bool,
    /// The PRIORITY sent: a peer-reflexive candidate learned from the response gets it.
    pub(super) priority: u32,
    /// A consent refresh (RFC 7675) on the selected pair, not a connectivity check.
    pub(super) consent: bool,
}

impl Agent {
    /// RFC 8445 §7.3: answers a connectivity check, learns a peer-reflexive candidate,
    /// settles role conflicts and triggers a check back.
    pub(super) fn handle_request(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let msg = Message::decode(bytes, &self.config.limits)?;
        if msg.method != Method::BINDING {
            return Err(Violation::UnsupportedMethod(msg.method.number()).into());
        }
        // RFC 8445 §7.3 / RFC 8489 §9.1.3: USERNAME "ours:theirs", integrity with our
        // password, FINGERPRINT (already checked by decode) required.
        let username = msg
            .find(|a| match a {
                Attribute::Username(u) => Some(*u),
                _ => None,
            })
            .ok_or(Violation::BadCredentials)?;
        let (ours, theirs) = username.split_once(':').ok_or(Violation::BadCredentials)?;
        if ours != self.local_ufrag || self.remote_ufrag.as_deref().is_some_and(|r| r != theirs) {
            return Err(Violation::BadCredentials.into());
        }
        if !msg.fingerprint {
            return Err(DecodeError::MissingIntegrity.into());
        }
        Message::verify(bytes, &self.local_key)?;
        let li = self
            .local
            .iter()
            .position(|c| {
                c.base == local && matches!(c.kind, CandidateKind::Host | CandidateKind::Relayed)
            })
            .ok_or(Violation::UnexpectedSource)?;
        let prio = msg
            .find(|a| match a {
                Attribute::Priority(p) => Some(*p),
                _ => None,
            })
            .ok_or(DecodeError::BadAttributeValue(types::PRIORITY))?
            .clamp(1, MAX_PRIORITY);
        let use_candidate = msg
            .find(|a| matches!(a, Attribute::UseCandidate).then_some(()))
            .is_some();
        if self.transmits.len() >= self.config.max_queue {
            return Err(Limit::Queue(self.transmits.len()).into());
        }
        self.start_clock(now);
        self.last_request_at = Some(now);
        // RFC 8445 §7.3.1.1: role conflict.
        let conflict = msg.find(|a| match a {
            Attribute::IceControlling(t) => Some((Role::Controlling, *t)),
            Attribute::IceControlled(t) => Some((Role::Controlled, *t)),
            _ => None,
        });
        if let Some((theirs, tb)) = conflict
            && theirs == self.role
        {
            let we_win = self.tiebreaker >= tb;
            match (self.role, we_win) {
                (Role::Controlling, true) | (Role::Controlled, false) => {
                    self.respond(local, from, &msg, Some(487))?;
                    return Ok(());
                }
                _ => self.switch_role(),
            }
        }
        self.respond(local, from, &msg, None)?;
        // RFC 8445 §7.3.1.3: an unknown source is a peer-reflexive candidate.
        let ri = match self.remote.iter().position(|r| r.addr == from) {
            Some(i) => Some(i),
            None => {
                let foundation = foundation_of(CandidateKind::PeerReflexive, from, None, false);
                let c = Candidate {
                    kind: CandidateKind::PeerReflexive,
                    addr: from,
                    base: from,
                    related: None,
                    priority: prio,
                    foundation,
                    via_tcp: false,
                };
                self.add_remote_candidate(c).ok().flatten()
            }
        };
        // RFC 8445 §7.3.1.4: the triggered check.
        let Some(ri) = ri else { return Ok(()) };
        let Some(pi) = self
            .find_pair(local, from)
            .or_else(|| self.add_pair(li, ri, PairState::Waiting))
        else {
            return Ok(());
        };
        let controlled = self.role == Role::Controlled;
        let mut select = false;
        if let Some(p) = self.pairs.get_mut(pi) {
            // RFC 8445 §7.3.1.5: the controlling agent nominated this pair.
            if use_candidate && controlled {
                p.nominated_by_peer = true;
            }
            match p.state {
                PairState::Succeeded => select = p.nominated_by_peer,
                // Its retransmissions continue; a response will come through the hole
                // this request just proved open.
                PairState::InProgress => {}
                PairState::Frozen | PairState::Waiting | PairState::Failed => {
                    p.state = PairState::Waiting;
                    self.pairs.trigger(local, from);
                }
            }
        }
        if select && self.may_select(pi) {
            self.select(now, pi);
        }
        self.after_change(now);
        Ok(())
    }

    pub(super) fn respond(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        req: &Message<'_>,
        error: Option<u16>,
    ) -> Result<(), Error> {
        let class = if error.is_some() {
            Class::Error
        } else {
            Class::Success
        };
        let mut m = Message::new(class, Method::BINDING, req.transaction_id);
        match error {
            Some(code) => m.attributes.push(Attribute::ErrorCode {
                code,
                reason: "Role Conflict",
            }),
            None => m.attributes.push(Attribute::XorMappedAddress(from)),
        }
        m.message_integrity = true;
        m.fingerprint = true;
        let mut out = BytesMut::with_capacity(m.encoded_len());
        m.encode(Some(&self.local_key), &mut out)?;
        self.transmits
            .push_back(Transmit::new(from, out.freeze()).with_src(local));
        Ok(())
    }

    pub(super) fn switch_role(&mut self) {
        self.role = self.role.flip();
        self.nominating = None;
        self.recompute_priorities();
        // Flips are driven by the peer's requests: bounded like data events.
        let _ = self.push_event(Event::RoleChanged(self.role));
    }

    /// Moves the client's datagrams to our queue with their source base, and handles
    /// its outcomes.
    pub(super) fn flush_client(&mut self, now: Instant) {
        while let Some(t) = self.client.poll_transmit() {
            let Ok(h) = Header::decode(&t.payload) else {
                continue;
            };
            let id = h.transaction_id;
            let src = self
                .checks
                .get(&id)
                .map(|c| c.base)
                .or_else(|| self.gathers.get(&id).copied());
            if let Some(src) = src {
                self.transmits.push_back(t.with_src(src));
            }
        }
        while let Some(e) = self.client.poll_event() {
            match e {
                client::Event::Response(r) => {
                    if let Some(base) = self.gathers.remove(&r.id) {
                        self.gathered(base, &r);
                    } else if let Some(c) = self.checks.remove(&r.id) {
                        self.check_response(now, c, &r);
                    }
                }
                client::Event::TimedOut { id, .. } => {
                    self.gathers.remove(&id);
                    if let Some(c) = self.checks.remove(&id) {
                        self.check_failed(&c);
                    }
                }
            }
        }
        self.check_gathering_done();
    }

    pub(super) fn check_failed(&mut self, c: &Check) {
        if c.consent {
            return;
        }
        // Another check of the same pair may still be running (a triggered one).
        let other = self
            .checks
            .values()
            .any(|o| o.base == c.base && o.remote == c.remote && !o.consent);
        if !other
            && let Some(i) = self.find_pair(c.base, c.remote)
            && self
                .pairs
                .get(i)
                .is_some_and(|p| p.state == PairState::InProgress)
        {
            self.set_pair_state(c.base, c.remote, PairState::Failed);
        }
        if c.nominate {
            self.nominating = None;
        }
        self.unfreeze();
    }

    /// RFC 8445 §7.2.5: processes the response to a connectivity check.
    pub(super) fn check_response(&mut self, now: Instant, c: Check, r: &client::Response) {
        // §7.2.5.2.1: the response must come from where the request went.
        let symmetric = r.from == c.remote;
        if c.consent {
            if symmetric && r.class == Class::Success {
                self.consent.confirm(now, self.config.consent_timeout);
            }
            return;
        }
        if !symmetric {
            self.check_failed(&c);
            return;
        }
        if r.class == Class::Error {
            let authentic = self
                .remote_key
                .as_ref()
                .is_some_and(|k| Message::verify(&r.bytes, k).is_ok());
            if r.error_code == Some(487) && authentic {
                // §7.2.5.1: switch roles if the request claimed our current role, then
                // try the pair again.
                if c.controlling == (self.role == Role::Controlling) {
                    self.switch_role();
                }
                self.set_pair_state(c.base, c.remote, PairState::Waiting);
                self.pairs.retrigger(c.base, c.remote);
                return;
            }
            self.check_failed(&c);
            return;
        }
        let Some(mapped) = r.mapped else {
            self.check_failed(&c);
            return;
        };
        let Some(pi) = self.set_pair_state(c.base, c.remote, PairState::Succeeded) else {
            return;
        };
        // §7.2.5.3.1: the mapped address names the valid pair's local candidate, a
        // peer-reflexive one if it is new.
        let valid_local = match self.local.iter().position(|l| l.addr == mapped) {
            Some(i) => i,
            None if usable(mapped) && self.local.len() < self.config.max_local_candidates => {
                self.local.push(Candidate {
                    kind: CandidateKind::PeerReflexive,
                    addr: mapped,
                    base: c.base,
                    related: Some(c.base),
                    priority: c.priority,
                    foundation: foundation_of(CandidateKind::PeerReflexive, c.base, None, false),
                    via_tcp: false,
                });
                self.local.len() - 1
            }
            None => self.pairs.get(pi).map_or(0, |p| p.local),
        };
        let mut select = c.nominate && self.role == Role::Controlling;
        if let Some(p) = self.pairs.get_mut(pi) {
            p.valid_local = Some(valid_local);
            select |= p.nominated_by_peer && self.role == Role::Controlled;
        }
        self.first_valid_at.get_or_insert(now);
        self.unfreeze();
        if select && self.may_select(pi) {
            self.select(now, pi);
        }
    }

    /// Starts a connectivity check on the pair (base, remote).
    pub(super) fn start_check(
        &mut self,
        now: Instant,
        base: SocketAddr,
        remote: SocketAddr,
        nominate: bool,
        consent: bool,
    ) -> Result<(), Error> {
        let (Some(ruf), Some(key)) = (self.remote_ufrag.clone(), self.remote_key.clone()) else {
            return Err(Violation::BadCredentials.into());
        };
        let local = self
            .local
            .iter()
            .find(|c| {
                c.base == base && matches!(c.kind, CandidateKind::Host | CandidateKind::Relayed)
            })
            .ok_or(Violation::UnexpectedSource)?;
        // RFC 8445 §7.1.1: PRIORITY as if the candidate were peer-reflexive.
        let prio = priority(
            CandidateKind::PeerReflexive,
            ((local.priority >> 8) & 0xffff) as u16,
        );
        let username = format!("{ruf}:{}", self.local_ufrag);
        let mut attrs = vec![Attribute::Username(&username), Attribute::Priority(prio)];
        attrs.push(match self.role {
            Role::Controlling => Attribute::IceControlling(self.tiebreaker),
            Role::Controlled => Attribute::IceControlled(self.tiebreaker),
        });
        if nominate {
            attrs.push(Attribute::UseCandidate);
        }
        let id = self.client.start_request(
            now,
            remote,
            Transport::Udp,
            Method::BINDING,
            &attrs,
            Some(&key),
        )?;
        self.checks.insert(
            id,
            Check {
                base,
                remote,
                controlling: self.role == Role::Controlling,
                nominate,
                priority: prio,
                consent,
            },
        );
        if !consent {
            self.set_pair_state(base, remote, PairState::InProgress);
        }
        self.flush_client(now);
        Ok(())
    }
}

/// The same subsystem seen through two agents on the simulated network of
/// `ice/tests.rs`.
#[cfg(test)]
mod behaviour {
    use std::time::Instant;

    use chorus_framing::SeededEntropy;

    use super::super::tests::*;
    use super::super::*;
    use crate::error::DecodeError;
    use crate::stun::{Attribute, Class, Key, Limits, Message};

    #[test]
    fn checks_with_wrong_credentials_are_rejected_without_a_response() {
        let mut a = Agent::new(IceConfig::default(), Box::new(SeededEntropy::new(1))).unwrap();
        let local = a.add_host_candidate(sa("192.0.2.1:5000")).unwrap().addr;
        let d = a.local_description();
        let (ufrag, pwd) = (d.ufrag.unwrap(), d.pwd.unwrap());
        let now = Instant::now();
        let peer = sa("192.0.2.2:1");
        let wrong_pwd = check_request(&ufrag, "peer", "not-the-password-at-all", &[]);
        assert_eq!(
            a.handle_input(now, local, peer, &wrong_pwd),
            Err(DecodeError::IntegrityMismatch.into())
        );
        let wrong_user = check_request("nobody", "peer", &pwd, &[]);
        assert_eq!(
            a.handle_input(now, local, peer, &wrong_user),
            Err(Violation::BadCredentials.into())
        );
        assert!(a.poll_transmit().is_none());
        assert!(a.remote_candidates().is_empty());
        // The right credentials get a response naming the source, and a prflx candidate.
        let good = check_request(&ufrag, "peer", &pwd, &[]);
        assert!(a.accepts(local, peer, &good));
        a.handle_input(now, local, peer, &good).unwrap();
        let t = a.poll_transmit().unwrap();
        assert_eq!((t.src, t.dst), (Some(local), peer));
        let resp = Message::decode(&t.payload, &Limits::default()).unwrap();
        assert_eq!(resp.mapped_address(), Some(peer));
        Message::verify(&t.payload, &Key::short_term(&pwd)).unwrap();
        assert_eq!(a.remote_candidates()[0].kind, CandidateKind::PeerReflexive);
        // Data from a stranger is not data.
        assert_eq!(
            a.handle_input(now, local, peer, &[0x80, 1, 2]),
            Err(Violation::UnexpectedSource.into())
        );
    }

    #[test]
    fn a_controlling_agent_with_the_larger_tiebreaker_answers_487() {
        let mut a = Agent::new(IceConfig::default(), Box::new(SeededEntropy::new(1))).unwrap();
        let local = a.add_host_candidate(sa("192.0.2.1:5000")).unwrap().addr;
        let d = a.local_description();
        let (ufrag, pwd) = (d.ufrag.unwrap(), d.pwd.unwrap());
        let smaller = a.tiebreaker().saturating_sub(1);
        let req = check_request(&ufrag, "peer", &pwd, &[Attribute::IceControlling(smaller)]);
        a.handle_input(Instant::now(), local, sa("192.0.2.2:1"), &req)
            .unwrap();
        let t = a.poll_transmit().unwrap();
        let resp = Message::decode(&t.payload, &Limits::default()).unwrap();
        assert_eq!(resp.class, Class::Error);
        assert_eq!(resp.error_code().map(|c| c.0), Some(487));
        assert_eq!(a.role(), Role::Controlling);
        // A larger tie-breaker makes it switch instead, and answer with success.
        let req = check_request(&ufrag, "peer", &pwd, &[Attribute::IceControlling(u64::MAX)]);
        if a.tiebreaker() != u64::MAX {
            a.handle_input(Instant::now(), local, sa("192.0.2.2:1"), &req)
                .unwrap();
            assert_eq!(a.role(), Role::Controlled);
            let t = a.poll_transmit().unwrap();
            let resp = Message::decode(&t.payload, &Limits::default()).unwrap();
            assert_eq!(resp.class, Class::Success);
        }
    }

    #[test]
    fn both_controlling_resolve_the_role_conflict() {
        let mut sim = Sim::pair(config(Role::Controlling), config(Role::Controlling));
        host(&mut sim, 0, "192.0.2.1:5000");
        host(&mut sim, 1, "192.0.2.2:6000");
        assert_eq!(sim.connect(), (PathKind::Direct, PathKind::Direct));
        let roles = [sim.sides[0].agent.role(), sim.sides[1].agent.role()];
        assert!(roles.contains(&Role::Controlling) && roles.contains(&Role::Controlled));
        // The larger tie-breaker stays controlling (RFC 8445 §7.3.1.1).
        let winner = usize::from(sim.sides[1].agent.tiebreaker() > sim.sides[0].agent.tiebreaker());
        assert_eq!(sim.sides[winner].agent.role(), Role::Controlling);
        assert!(
            sim.sides[1 - winner]
                .events
                .contains(&Event::RoleChanged(Role::Controlled))
        );
    }

    #[test]
    fn both_controlled_resolve_the_role_conflict() {
        let mut sim = Sim::pair(config(Role::Controlled), config(Role::Controlled));
        host(&mut sim, 0, "192.0.2.1:5000");
        host(&mut sim, 1, "192.0.2.2:6000");
        assert_eq!(sim.connect(), (PathKind::Direct, PathKind::Direct));
        let roles = [sim.sides[0].agent.role(), sim.sides[1].agent.role()];
        assert!(roles.contains(&Role::Controlling) && roles.contains(&Role::Controlled));
    }

    #[test]
    fn an_unsignalled_peer_is_learned_as_peer_reflexive() {
        let mut sim = Sim::pair(config(Role::Controlling), config(Role::Controlled));
        host(&mut sim, 0, "192.0.2.1:5000");
        host(&mut sim, 1, "192.0.2.2:6000");
        for s in &mut sim.sides {
            s.agent.start_gathering(sim.now).unwrap();
        }
        // A gets only B's credentials; B gets A's candidates.
        let mut db = sim.sides[1].agent.local_description();
        db.candidates.clear();
        let da = sim.sides[0].agent.local_description();
        let now = sim.now;
        sim.sides[0]
            .agent
            .apply_remote_description(now, &db)
            .unwrap();
        sim.sides[1]
            .agent
            .apply_remote_description(now, &da)
            .unwrap();
        assert!(sim.run_until(Sim::both_connected, 5000));
        let (_, remote, kind) = sim.connected(0).unwrap();
        assert_eq!(remote.kind, CandidateKind::PeerReflexive);
        assert_eq!(remote.addr, sa("192.0.2.2:6000"));
        assert_eq!(kind, PathKind::HolePunched);
        assert_eq!(sim.connected(1).unwrap().2, PathKind::Direct);
    }
}
