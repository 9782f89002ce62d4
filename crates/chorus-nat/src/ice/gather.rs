//! Candidates and signalling (RFC 8445 §5, RFC 8839): local candidates (host,
//! relayed, server-reflexive from gathering), remote candidates from the peer's
//! [`Description`], and the description the agent signals.

use std::net::SocketAddr;
use std::time::Instant;

use super::checklist::PairState;
use super::{Agent, Candidate, CandidateKind, Description, Event, Foundation, priority};
use crate::client;
use crate::error::{DecodeError, Error, Limit, UsageError, Violation};
use crate::stun::{Class, Key, types};

/// FNV-1a, for foundations: equal inputs give equal foundations (RFC 8445 §5.1.1.3).
pub(super) fn foundation_of(
    kind: CandidateKind,
    base: SocketAddr,
    server: Option<SocketAddr>,
    tcp: bool,
) -> Foundation {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
    };
    eat(kind.as_str().as_bytes());
    eat(base.ip().to_string().as_bytes());
    if let Some(s) = server {
        eat(s.ip().to_string().as_bytes());
    }
    eat(&[u8::from(tcp)]);
    Foundation::from_number(h)
}

/// Whether `addr` can be a candidate: not unspecified, multicast, broadcast or port 0.
pub(super) fn usable(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && ip != std::net::Ipv4Addr::BROADCAST
}

impl Agent {
    /// Adds a host candidate: an address on a local interface that the caller receives
    /// on (RFC 8445 §5.1.1.1). IPv6 addresses get a higher local preference (RFC 8421).
    ///
    /// # Errors
    /// [`Limit::Candidates`] when full, [`UsageError::InvalidValue`] for an unspecified,
    /// multicast or port-0 address.
    pub fn add_host_candidate(&mut self, addr: SocketAddr) -> Result<Candidate, Error> {
        let n = self.local.len() as u16;
        let pref = if addr.is_ipv6() {
            65535 - n
        } else {
            65535 - 1024 - n
        };
        let c = Candidate {
            kind: CandidateKind::Host,
            addr,
            base: addr,
            related: None,
            priority: priority(CandidateKind::Host, pref),
            foundation: foundation_of(CandidateKind::Host, addr, None, false),
            via_tcp: false,
        };
        self.add_local(c)
    }

    /// Adds a relayed candidate (RFC 8445 §5.1.1.2): `relayed` is a TURN allocation's
    /// relayed address, which the caller owns; `related` is the TURN client's local
    /// address (signalled as `raddr`); `via_tcp` says the allocation runs over TCP/TLS.
    /// Transmits from `relayed` must go through that allocation (see the module docs).
    ///
    /// # Errors
    /// As [`Agent::add_host_candidate`].
    pub fn add_relayed_candidate(
        &mut self,
        relayed: SocketAddr,
        related: SocketAddr,
        via_tcp: bool,
    ) -> Result<Candidate, Error> {
        let n = self.local.len() as u16;
        // A relay over UDP is preferred to one over TCP.
        let pref = if via_tcp { 32767 - n } else { 65535 - n };
        let c = Candidate {
            kind: CandidateKind::Relayed,
            addr: relayed,
            base: relayed,
            related: Some(related),
            priority: priority(CandidateKind::Relayed, pref),
            foundation: foundation_of(CandidateKind::Relayed, related, Some(relayed), via_tcp),
            via_tcp,
        };
        self.add_local(c)
    }

    pub(super) fn add_local(&mut self, c: Candidate) -> Result<Candidate, Error> {
        if !usable(c.addr) {
            return Err(UsageError::InvalidValue(types::XOR_MAPPED_ADDRESS).into());
        }
        if let Some(existing) = self.local.iter().find(|l| l.addr == c.addr) {
            return Ok(existing.clone());
        }
        if self.local.len() >= self.config.max_local_candidates {
            return Err(Limit::Candidates(self.local.len()).into());
        }
        self.local.push(c.clone());
        let li = self.local.len() - 1;
        for ri in 0..self.remote.len() {
            if self
                .remote
                .get(ri)
                .is_some_and(|r| r.kind != CandidateKind::PeerReflexive)
            {
                self.add_pair(li, ri, PairState::Frozen);
            }
        }
        self.unfreeze();
        Ok(c)
    }

    /// Sends a Binding request to the configured STUN server from every host address
    /// of its family (RFC 8445 §5.1.1.2); each answer becomes an
    /// [`Event::LocalCandidate`], and [`Event::GatheringComplete`] follows the last.
    /// Also starts the overall timeout.
    ///
    /// # Errors
    /// [`Error::Entropy`] or a [`Limit`] from the transaction table.
    pub fn start_gathering(&mut self, now: Instant) -> Result<(), Error> {
        self.start_clock(now);
        if self.gathering_started {
            return Ok(());
        }
        self.gathering_started = true;
        if let Some(server) = self.config.stun_server {
            let bases: Vec<SocketAddr> = self
                .local
                .iter()
                .filter(|c| c.kind == CandidateKind::Host && c.addr.is_ipv4() == server.is_ipv4())
                .map(|c| c.addr)
                .collect();
            for base in bases {
                let id = self.client.start_binding(now, server)?;
                self.gathers.insert(id, base);
            }
        }
        self.flush_client(now);
        self.check_gathering_done();
        Ok(())
    }

    /// What to signal to the peer now: credentials, the local candidates (host,
    /// server-reflexive and relayed) and `end-of-candidates` once gathering finished.
    #[must_use]
    pub fn local_description(&self) -> Description {
        Description {
            ufrag: Some(self.local_ufrag.clone()),
            // The key of a short-term credential is the password (RFC 8489 §9.1.1).
            pwd: Some(String::from_utf8_lossy(self.local_key.expose()).into_owned()),
            candidates: self
                .local
                .iter()
                .filter(|c| c.kind != CandidateKind::PeerReflexive)
                .cloned()
                .collect(),
            end_of_candidates: self.gathering_reported,
        }
    }

    /// Applies (part of) the peer's description: credentials, candidates (trickled or
    /// not, at any time) and `end-of-candidates`. Candidates already known are
    /// skipped; a signalled candidate replaces a peer-reflexive one at its address.
    ///
    /// # Errors
    /// [`Violation::BadCredentials`] if the credentials differ from earlier ones (ICE
    /// restarts are not supported), [`Limit::Candidates`] when the remote table is full
    /// (the candidates before it were applied), [`DecodeError::BadCandidate`] for an
    /// unusable address (unspecified, multicast, broadcast, port 0).
    pub fn apply_remote_description(&mut self, now: Instant, d: &Description) -> Result<(), Error> {
        self.start_clock(now);
        let ufrag_changed = matches!((&self.remote_ufrag, &d.ufrag), (Some(k), Some(n)) if k != n);
        let pwd_changed =
            matches!((&self.remote_key, &d.pwd), (Some(k), Some(n)) if *k != Key::short_term(n));
        if ufrag_changed || pwd_changed {
            return Err(Violation::BadCredentials.into());
        }
        if let Some(u) = &d.ufrag {
            self.remote_ufrag = Some(u.clone());
        }
        if let Some(p) = &d.pwd {
            self.remote_key = Some(Key::short_term(p));
        }
        for c in &d.candidates {
            self.add_remote_candidate(c.clone())?;
        }
        if d.end_of_candidates {
            self.remote_complete = true;
        }
        Ok(())
    }

    pub(super) fn add_remote_candidate(
        &mut self,
        mut c: Candidate,
    ) -> Result<Option<usize>, Error> {
        if !usable(c.addr) {
            return Err(DecodeError::BadCandidate("unusable address").into());
        }
        c.base = c.addr;
        if let Some(i) = self.remote.iter().position(|r| r.addr == c.addr) {
            if let Some(r) = self.remote.get_mut(i)
                && r.kind == CandidateKind::PeerReflexive
                && c.kind != CandidateKind::PeerReflexive
            {
                *r = c;
                self.recompute_priorities();
            }
            return Ok(Some(i));
        }
        if self.remote.len() >= self.config.max_remote_candidates {
            return Err(Limit::Candidates(self.remote.len()).into());
        }
        let learned = c.kind == CandidateKind::PeerReflexive;
        self.remote.push(c);
        let ri = self.remote.len() - 1;
        if !learned {
            for li in 0..self.local.len() {
                self.add_pair(li, ri, PairState::Frozen);
            }
            self.unfreeze();
        }
        Ok(Some(ri))
    }

    pub(super) fn gathered(&mut self, base: SocketAddr, r: &client::Response) {
        let Some(mapped) = r.mapped.filter(|_| r.class == Class::Success) else {
            return;
        };
        if !usable(mapped)
            || self.local.iter().any(|c| c.addr == mapped)
            || self.local.len() >= self.config.max_local_candidates
        {
            return;
        }
        let Some(host) = self.local.iter().find(|c| c.addr == base) else {
            return;
        };
        let pref = ((host.priority >> 8) & 0xffff) as u16;
        let c = Candidate {
            kind: CandidateKind::ServerReflexive,
            addr: mapped,
            base,
            related: Some(base),
            priority: priority(CandidateKind::ServerReflexive, pref),
            foundation: foundation_of(CandidateKind::ServerReflexive, base, Some(r.server), false),
            via_tcp: false,
        };
        // Server-reflexive candidates are signalled but never paired locally
        // (RFC 8445 §6.1.2.4: their base, the host candidate, stands in).
        self.local.push(c.clone());
        self.events.push_back(Event::LocalCandidate(c));
    }

    pub(super) fn check_gathering_done(&mut self) {
        if self.gathering_started && self.gathers.is_empty() && !self.gathering_reported {
            self.gathering_reported = true;
            self.events.push_back(Event::GatheringComplete);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn foundations_are_equal_exactly_for_equal_inputs() {
        let base = addr("192.0.2.1:5000");
        let server = Some(addr("198.51.100.1:3478"));
        let f = |kind, base, server, tcp| foundation_of(kind, base, server, tcp);
        let host = f(CandidateKind::Host, base, None, false);
        // The port plays no part: one interface, one foundation.
        assert_eq!(
            host,
            f(CandidateKind::Host, addr("192.0.2.1:6000"), None, false)
        );
        assert_ne!(
            host,
            f(CandidateKind::Host, addr("192.0.2.2:5000"), None, false)
        );
        assert_ne!(host, f(CandidateKind::ServerReflexive, base, server, false));
        assert_ne!(
            f(CandidateKind::Relayed, base, server, false),
            f(CandidateKind::Relayed, base, server, true)
        );
    }

    #[test]
    fn only_unicast_addresses_with_a_port_are_usable() {
        assert!(usable(addr("192.0.2.1:5000")));
        assert!(usable(addr("[2001:db8::1]:5000")));
        for bad in [
            "0.0.0.0:5000",
            "192.0.2.1:0",
            "224.0.0.1:5000",
            "255.255.255.255:5000",
            "[::]:5000",
            "[ff02::1]:5000",
        ] {
            assert!(!usable(addr(bad)), "{bad}");
        }
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

    #[test]
    fn candidate_priorities_follow_rfc_8445_formulas() {
        // RFC 8445 §5.1.2.1 with type preference 126 and local preference 65535.
        assert_eq!(priority(CandidateKind::Host, 65535), 2_130_706_431);
        assert_eq!(priority(CandidateKind::Relayed, 0), 255);
        assert_eq!(priority(CandidateKind::ServerReflexive, 1), 0x6400_01ff);
        // §6.1.2.3: 2^32*MIN(G,D) + 2*MAX(G,D) + (G>D?1:0).
        assert_eq!(pair_priority(5, 3), (3u64 << 32) + 10 + 1);
        assert_eq!(pair_priority(3, 5), (3u64 << 32) + 10);
        let max = u64::from(MAX_PRIORITY);
        assert_eq!(
            pair_priority(MAX_PRIORITY, MAX_PRIORITY),
            (max << 32) + 2 * max
        );
        // Out-of-range priorities are clamped, never overflow.
        assert_eq!(pair_priority(u32::MAX, u32::MAX), (max << 32) + 2 * max);
    }

    #[test]
    fn host_candidates_get_distinct_priorities_and_ipv6_is_preferred() {
        let mut a = Agent::new(IceConfig::default(), Box::new(SeededEntropy::new(1))).unwrap();
        let v4 = a.add_host_candidate(sa("192.0.2.1:1")).unwrap();
        let v6 = a.add_host_candidate(sa("[2001:db8::1]:1")).unwrap();
        assert!(v6.priority > v4.priority);
        assert_ne!(v4.foundation, v6.foundation);
        let relay = a
            .add_relayed_candidate(sa("198.51.100.7:9"), sa("192.0.2.1:1"), false)
            .unwrap();
        let relay_tcp = a
            .add_relayed_candidate(sa("198.51.100.7:10"), sa("192.0.2.1:1"), true)
            .unwrap();
        assert!(relay.priority < v4.priority && relay_tcp.priority < relay.priority);
        // Same address twice is one candidate.
        assert_eq!(a.add_host_candidate(sa("192.0.2.1:1")).unwrap(), v4);
        assert_eq!(a.local_candidates().len(), 4);
        assert!(a.add_host_candidate(sa("0.0.0.0:1")).is_err());
        assert!(a.add_host_candidate(sa("192.0.2.1:0")).is_err());
    }

    #[test]
    fn changed_remote_credentials_are_refused() {
        let mut a = Agent::new(IceConfig::default(), Box::new(SeededEntropy::new(1))).unwrap();
        let b = Agent::new(IceConfig::default(), Box::new(SeededEntropy::new(2))).unwrap();
        let c = Agent::new(IceConfig::default(), Box::new(SeededEntropy::new(3))).unwrap();
        let now = Instant::now();
        a.apply_remote_description(now, &b.local_description())
            .unwrap();
        assert_eq!(
            a.apply_remote_description(now, &c.local_description()),
            Err(Violation::BadCredentials.into())
        );
    }
}
