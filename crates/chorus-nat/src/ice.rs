//! ICE connectivity establishment (RFC 8445) for one UDP component, as a sans-IO agent.
//!
//! The [`Agent`] gathers candidates (host addresses it is given, server-reflexive ones
//! learned from a STUN server, relayed ones the caller obtained from a TURN
//! allocation), exchanges them with the peer as a [`Description`] over any signalling
//! channel, pairs them, runs paced STUN connectivity checks with short-term
//! credentials, answers the peer's checks, discovers peer-reflexive candidates, settles
//! role conflicts, nominates a pair (regular nomination) and then carries application
//! data on it, refreshing consent (RFC 7675) while it is used. Design, coverage and
//! deviations are described in `docs/ice.md`.
//!
//! The run loop:
//! 1. Create an agent with [`Agent::new`]; add its addresses with
//!    [`Agent::add_host_candidate`] and [`Agent::add_relayed_candidate`]; call
//!    [`Agent::start_gathering`] (Binding requests to the STUN server, if configured).
//! 2. Send [`Agent::local_description`] to the peer, then every
//!    [`Event::LocalCandidate`] and [`Event::GatheringComplete`] as they come (trickle).
//!    Apply what the peer sends with [`Agent::apply_remote_description`], whenever it
//!    arrives.
//! 3. After every `handle_*`, command or `apply_*`, drain [`Agent::poll_transmit`]
//!    (send each datagram from the socket bound to its `src`) and [`Agent::poll_event`]
//!    until `None`, then call [`Agent::handle_timeout`] at [`Agent::poll_timeout`]. An
//!    early call is a harmless no-op; `now` never goes backwards.
//! 4. Feed every datagram received on one of the agent's addresses to
//!    [`Agent::handle_input`] with the local address it arrived on. `Err` means it was
//!    rejected and nothing changed.
//! 5. After [`Event::Connected`], [`Agent::send`] wraps application data for the
//!    selected pair; non-STUN datagrams arriving on it come out as [`Event::Data`].
//!
//! **Relayed candidates.** A transmit whose `src` is a relayed address (one given to
//! [`Agent::add_relayed_candidate`]) must be sent through the TURN allocation that owns
//! that address (to the peer `dst`), and datagrams the allocation delivers from a peer
//! are fed to [`Agent::handle_input`] with `local` set to the relayed address.
//!
//! Two agents wired together by hand:
//!
//! ```
//! use std::time::Instant;
//! use chorus_crypto::SystemEntropy;
//! use chorus_nat::ice::{Agent, Event, IceConfig, PathKind, Role};
//!
//! let mut config = IceConfig::default();
//! let mut a = Agent::new(config.clone(), Box::new(SystemEntropy::new()))?;
//! config.role = Role::Controlled;
//! let mut b = Agent::new(config, Box::new(SystemEntropy::new()))?;
//! a.add_host_candidate("192.0.2.1:5000".parse()?)?;
//! b.add_host_candidate("192.0.2.2:6000".parse()?)?;
//! let mut now = Instant::now();
//! a.start_gathering(now)?;
//! b.start_gathering(now)?;
//! a.apply_remote_description(now, &b.local_description())?;
//! b.apply_remote_description(now, &a.local_description())?;
//!
//! // The "network": every datagram arrives at once, at the address it was sent to.
//! fn pump(from: &mut Agent, to: &mut Agent, now: Instant) {
//!     while let Some(t) = from.poll_transmit() {
//!         let _ = to.handle_input(now, t.dst, t.src.expect("ICE names the source"), &t.payload);
//!     }
//! }
//! let mut connected = 0;
//! for _ in 0..1000 {
//!     pump(&mut a, &mut b, now);
//!     pump(&mut b, &mut a, now);
//!     for agent in [&mut a, &mut b] {
//!         while let Some(e) = agent.poll_event() {
//!             if let Event::Connected { kind, .. } = e {
//!                 assert_eq!(kind, PathKind::Direct);
//!                 connected += 1;
//!             }
//!         }
//!     }
//!     if connected == 2 {
//!         break;
//!     }
//!     let next = [a.poll_timeout(), b.poll_timeout()].into_iter().flatten().min();
//!     now = next.map_or(now, |t| t.max(now));
//!     a.handle_timeout(now);
//!     b.handle_timeout(now);
//! }
//! assert_eq!(connected, 2);
//! let datagram = a.send(b"hello"[..].into())?;
//! b.handle_input(now, datagram.dst, datagram.src.expect("src"), &datagram.payload)?;
//! assert_eq!(b.poll_event(), Some(Event::Data(b"hello"[..].into())));
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

mod candidate;
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub mod fuzz;
#[cfg(test)]
mod tests;

pub use candidate::{
    Candidate, CandidateKind, Description, Foundation, MAX_CREDENTIAL, MAX_EXTENSIONS,
    MAX_FOUNDATION, MAX_LINE, MAX_PRIORITY, pair_priority, priority,
};

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chorus_framing::{Entropy, PacketKind, Transmit, classify};

use crate::client::{self, Client, ClientConfig, Transport};
use crate::error::{DecodeError, Error, Limit, UsageError, Violation};
use crate::stun::{Attribute, Class, Header, Key, Limits, Message, Method, TransactionId, types};

/// Which side decides the nominated pair (RFC 8445 §6.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Nominates (sends USE-CANDIDATE).
    Controlling,
    /// Follows the controlling agent's nomination.
    Controlled,
}

impl Role {
    const fn flip(self) -> Self {
        match self {
            Self::Controlling => Self::Controlled,
            Self::Controlled => Self::Controlling,
        }
    }
}

/// Which kind of path won, judged from the selected pair's candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathKind {
    /// Host to host: no NAT translated the addresses.
    Direct,
    /// At least one side's address was server- or peer-reflexive: a NAT was traversed
    /// (hole punched by the simultaneous checks).
    HolePunched,
    /// Through a TURN relay over UDP.
    Relayed,
    /// Through a TURN relay whose allocation runs over TCP or TLS.
    RelayedTcp,
}

impl PathKind {
    fn of(local: &Candidate, remote: &Candidate) -> Self {
        let relayed = |c: &Candidate| c.kind == CandidateKind::Relayed;
        match (relayed(local), relayed(remote)) {
            (true, _) if local.via_tcp => Self::RelayedTcp,
            (false, true) if remote.via_tcp => Self::RelayedTcp,
            (true, _) | (_, true) => Self::Relayed,
            _ if local.kind == CandidateKind::Host && remote.kind == CandidateKind::Host => {
                Self::Direct
            }
            _ => Self::HolePunched,
        }
    }
}

/// Why ICE gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailReason {
    /// No pair was selected within [`IceConfig::timeout`].
    Timeout,
    /// Both sides finished gathering and every pair failed (RFC 8445 §8.1.2).
    AllPairsFailed,
    /// The selected pair's consent expired (RFC 7675 §5.1): the peer went away.
    ConsentExpired,
}

impl core::fmt::Display for FailReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Timeout => "no pair was selected in time",
            Self::AllPairsFailed => "every candidate pair failed",
            Self::ConsentExpired => "consent on the selected pair expired",
        })
    }
}

/// What the agent reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A server-reflexive candidate was gathered: signal it to the peer.
    LocalCandidate(Candidate),
    /// Gathering finished: signal `end-of-candidates` to the peer.
    GatheringComplete,
    /// A role conflict (RFC 8445 §7.3.1.1) switched this agent's role.
    RoleChanged(Role),
    /// A pair was selected (nominated). Data can flow. A controlled agent reports
    /// this again if the controlling agent later nominates another pair; the latest
    /// report names the pair [`Agent::send`] uses.
    Connected {
        /// The local candidate of the selected (valid) pair.
        local: Candidate,
        /// The remote candidate.
        remote: Candidate,
        /// Which kind of path it is.
        kind: PathKind,
    },
    /// A non-STUN datagram arrived on the selected pair.
    Data(Bytes),
    /// ICE failed; the agent stays failed.
    Failed(FailReason),
}

/// The agent's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Checking (or waiting for the peer's candidates).
    Checking,
    /// A pair is selected.
    Connected,
    /// Gave up; see [`Event::Failed`].
    Failed,
}

/// Agent configuration; validated by [`Agent::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IceConfig {
    /// The initial role. Default [`Role::Controlling`]; a role conflict may change it.
    pub role: Role,
    /// A STUN server for server-reflexive candidates (RFC 8445 §5.1.1.2). Default none.
    pub stun_server: Option<SocketAddr>,
    /// Ta, the pacing of new checks (RFC 8445 §14.2). Default 50 ms; at least 5 ms.
    pub ta: Duration,
    /// Initial retransmission timeout of a check (RFC 8445 §14.3). Default 250 ms; at
    /// least 10 ms.
    pub check_rto: Duration,
    /// Requests sent per check (and per Binding to the STUN server) before it fails;
    /// the last waits 4 RTOs. Default 5 (a check fails after 4.75 s); 1..=16.
    pub check_max_sends: u32,
    /// After the first pair succeeds, how long the controlling agent waits for a
    /// higher-priority pair before nominating. Default 200 ms.
    pub nomination_delay: Duration,
    /// Overall time from the first call that passes `now` until a pair must be selected;
    /// then [`FailReason::Timeout`]. Default 30 s; at least 1 s.
    pub timeout: Duration,
    /// Interval of consent checks on the selected pair (RFC 7675 §5.1: 5 s, which also
    /// keeps NAT bindings alive). Default 5 s; at least 100 ms.
    pub consent_interval: Duration,
    /// Consent lapses when no check succeeded for this long (RFC 7675 §5.1: 30 s).
    /// Default 30 s; greater than `consent_interval`.
    pub consent_timeout: Duration,
    /// Local candidates at most (host, server-reflexive, relayed, peer-reflexive).
    /// Default 16; 1..=64.
    pub max_local_candidates: usize,
    /// Remote candidates at most, learned or signalled. Default 32; 1..=256.
    pub max_remote_candidates: usize,
    /// Candidate pairs at most (RFC 8445 §6.1.2.5 suggests 100): beyond, the
    /// lowest-priority unchecked pair is dropped. Default 100; 1..=1000.
    pub max_pairs: usize,
    /// Unread events and unsent datagrams at most, each; [`Limit::Queue`] beyond.
    /// Default 256; at least 16.
    pub max_queue: usize,
    /// Decode limits for STUN messages.
    pub limits: Limits,
}

impl Default for IceConfig {
    fn default() -> Self {
        Self {
            role: Role::Controlling,
            stun_server: None,
            ta: Duration::from_millis(50),
            check_rto: Duration::from_millis(250),
            check_max_sends: 5,
            nomination_delay: Duration::from_millis(200),
            timeout: Duration::from_secs(30),
            consent_interval: Duration::from_secs(5),
            consent_timeout: Duration::from_secs(30),
            max_local_candidates: 16,
            max_remote_candidates: 32,
            max_pairs: 100,
            max_queue: 256,
            limits: Limits::default(),
        }
    }
}

impl IceConfig {
    fn validate(&self) -> Result<(), Error> {
        let bad = |what| Err(UsageError::InvalidConfig(what).into());
        if self.ta < Duration::from_millis(5) {
            return bad("ta below 5 ms");
        }
        if self.check_rto < Duration::from_millis(10) {
            return bad("check_rto below 10 ms");
        }
        if !(1..=16).contains(&self.check_max_sends) {
            return bad("check_max_sends outside 1..=16");
        }
        if self.timeout < Duration::from_secs(1) {
            return bad("timeout below 1 s");
        }
        if self.consent_interval < Duration::from_millis(100)
            || self.consent_timeout <= self.consent_interval
        {
            return bad("consent_interval below 100 ms or not below consent_timeout");
        }
        if !(1..=64).contains(&self.max_local_candidates) {
            return bad("max_local_candidates outside 1..=64");
        }
        if !(1..=256).contains(&self.max_remote_candidates) {
            return bad("max_remote_candidates outside 1..=256");
        }
        if !(1..=1000).contains(&self.max_pairs) {
            return bad("max_pairs outside 1..=1000");
        }
        if self.max_queue < 16 {
            return bad("max_queue below 16");
        }
        Ok(())
    }
}

/// RFC 8445 §6.1.2.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PairState {
    Frozen,
    Waiting,
    InProgress,
    Succeeded,
    Failed,
}

#[derive(Debug)]
struct Pair {
    /// Index into `local`: a host or relayed candidate (RFC 8445 §6.1.2.4 replaces
    /// reflexive local candidates by their bases).
    local: usize,
    remote: usize,
    priority: u64,
    state: PairState,
    /// The local candidate of the valid pair this pair produced (RFC 8445 §7.2.5.3.2).
    valid_local: Option<usize>,
    /// Controlled side: the peer nominated this pair (RFC 8445 §7.3.1.5).
    nominated_by_peer: bool,
}

#[derive(Debug, Clone, Copy)]
struct Check {
    base: SocketAddr,
    remote: SocketAddr,
    /// The role the request claimed (for RFC 8445 §7.2.5.1).
    controlling: bool,
    nominate: bool,
    /// The PRIORITY sent: a peer-reflexive candidate learned from the response gets it.
    priority: u32,
    consent: bool,
}

#[derive(Debug, Clone, Copy)]
struct Selected {
    local: usize,
    remote: usize,
    base: SocketAddr,
}

/// An ICE agent (RFC 8445) for one UDP component. Performs no I/O; see the module docs
/// for its run loop.
pub struct Agent {
    config: IceConfig,
    client: Client,
    role: Role,
    tiebreaker: u64,
    /// xorshift state for consent-check jitter, seeded from the entropy source.
    jitter: u64,
    local_ufrag: String,
    local_key: Key,
    remote_ufrag: Option<String>,
    remote_key: Option<Key>,
    remote_complete: bool,
    local: Vec<Candidate>,
    remote: Vec<Candidate>,
    pairs: Vec<Pair>,
    /// RFC 8445 §6.1.4.1: (base, remote, nominate), served before ordinary checks.
    triggered: VecDeque<(SocketAddr, SocketAddr, bool)>,
    checks: HashMap<TransactionId, Check>,
    gathers: HashMap<TransactionId, SocketAddr>,
    gathering_started: bool,
    gathering_reported: bool,
    state: State,
    deadline: Option<Instant>,
    pace_at: Option<Instant>,
    first_valid_at: Option<Instant>,
    /// The last authenticated check from the peer.
    last_request_at: Option<Instant>,
    nominating: Option<(SocketAddr, SocketAddr)>,
    selected: Option<Selected>,
    next_consent_check: Option<Instant>,
    consent_until: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl core::fmt::Debug for Agent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Agent")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("local", &self.local.len())
            .field("remote", &self.remote.len())
            .field("pairs", &self.pairs.len())
            .finish_non_exhaustive()
    }
}

/// After the peer's last check, how long an agent whose own pairs all failed keeps
/// listening: the peer may still be retransmitting, and its checks trigger new ones.
pub const FAIL_GRACE: Duration = Duration::from_secs(5);

/// Characters of a generated ufrag / password: 6 random bits each (RFC 8445 §5.3: at
/// least 24 bits for the ufrag, 128 for the password).
const UFRAG_LEN: usize = 8;
const PWD_LEN: usize = 24;
const ICE_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn random_text(entropy: &mut dyn Entropy, len: usize) -> Result<String, Error> {
    let mut bytes = vec![0u8; len];
    entropy.fill(&mut bytes)?;
    Ok(bytes
        .iter()
        .map(|b| char::from(ICE_CHARS.get(usize::from(b & 63)).copied().unwrap_or(b'A')))
        .collect())
}

/// FNV-1a, for foundations: equal inputs give equal foundations (RFC 8445 §5.1.1.3).
fn foundation_of(
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

fn usable(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && ip != std::net::Ipv4Addr::BROADCAST
}

impl Agent {
    /// An agent with fresh credentials and tie-breaker drawn from `entropy`.
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] for a value outside its documented bounds,
    /// [`Error::Entropy`] if the source fails.
    pub fn new(config: IceConfig, mut entropy: Box<dyn Entropy>) -> Result<Self, Error> {
        config.validate()?;
        let local_ufrag = random_text(&mut *entropy, UFRAG_LEN)?;
        // Kept only as a key: zeroized on drop, redacted in Debug.
        let local_key = Key::short_term(&random_text(&mut *entropy, PWD_LEN)?);
        let tiebreaker = entropy.u64()?;
        let jitter = entropy.u64()? | 1;
        let cc = ClientConfig {
            rto: config.check_rto,
            max_sends: config.check_max_sends,
            last_wait_multiplier: 4,
            max_transactions: config.max_pairs + config.max_local_candidates + 4,
            limits: config.limits.clone(),
            ..ClientConfig::default()
        };
        let client = Client::new(cc, entropy)?;
        Ok(Self {
            role: config.role,
            local_key,
            config,
            client,
            tiebreaker,
            jitter,
            local_ufrag,
            remote_ufrag: None,
            remote_key: None,
            remote_complete: false,
            local: Vec::new(),
            remote: Vec::new(),
            pairs: Vec::new(),
            triggered: VecDeque::new(),
            checks: HashMap::new(),
            gathers: HashMap::new(),
            gathering_started: false,
            gathering_reported: false,
            state: State::Checking,
            deadline: None,
            pace_at: None,
            first_valid_at: None,
            last_request_at: None,
            nominating: None,
            selected: None,
            next_consent_check: None,
            consent_until: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// The current role.
    #[must_use]
    pub const fn role(&self) -> Role {
        self.role
    }

    /// The current state.
    #[must_use]
    pub const fn state(&self) -> State {
        self.state
    }

    /// This agent's tie-breaker (RFC 8445 §7.3.1.1).
    #[must_use]
    pub const fn tiebreaker(&self) -> u64 {
        self.tiebreaker
    }

    /// The local username fragment.
    #[must_use]
    pub fn local_ufrag(&self) -> &str {
        &self.local_ufrag
    }

    /// The local candidates, in the order they were added or learned.
    #[must_use]
    pub fn local_candidates(&self) -> &[Candidate] {
        &self.local
    }

    /// The remote candidates, signalled or learned.
    #[must_use]
    pub fn remote_candidates(&self) -> &[Candidate] {
        &self.remote
    }

    /// How many candidate pairs the checklist holds (at most [`IceConfig::max_pairs`]).
    #[must_use]
    pub fn pair_count(&self) -> usize {
        self.pairs.len()
    }

    /// The selected pair: local candidate, remote candidate and path kind.
    #[must_use]
    pub fn selected(&self) -> Option<(&Candidate, &Candidate, PathKind)> {
        let s = self.selected?;
        let (l, r) = (self.local.get(s.local)?, self.remote.get(s.remote)?);
        Some((l, r, PathKind::of(l, r)))
    }

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

    fn add_local(&mut self, c: Candidate) -> Result<Candidate, Error> {
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

    fn add_remote_candidate(&mut self, mut c: Candidate) -> Result<Option<usize>, Error> {
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

    fn start_clock(&mut self, now: Instant) {
        if self.deadline.is_none() {
            self.deadline = Some(now + self.config.timeout);
            self.pace_at = Some(now);
        }
    }

    fn pair_priority_of(&self, l: &Candidate, r: &Candidate) -> u64 {
        match self.role {
            Role::Controlling => pair_priority(l.priority, r.priority),
            Role::Controlled => pair_priority(r.priority, l.priority),
        }
    }

    /// Forms the pair (RFC 8445 §6.1.2.2) if the families match and the local candidate
    /// is a base, pruning redundant pairs (§6.1.2.4) and capping the list (§6.1.2.5).
    /// Returns its index.
    fn add_pair(&mut self, li: usize, ri: usize, state: PairState) -> Option<usize> {
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
        if self.pairs.len() >= self.config.max_pairs {
            // Drop the lowest-priority pair that has not been checked, if lower.
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
                Some((i, p)) if p < priority || state == PairState::Waiting => {
                    self.pairs.swap_remove(i);
                }
                _ => return None,
            }
        }
        self.pairs.push(Pair {
            local: li,
            remote: ri,
            priority,
            state,
            valid_local: None,
            nominated_by_peer: false,
        });
        Some(self.pairs.len() - 1)
    }

    fn find_pair(&self, base: SocketAddr, remote: SocketAddr) -> Option<usize> {
        self.pairs.iter().position(|p| {
            self.local.get(p.local).is_some_and(|l| l.base == base)
                && self.remote.get(p.remote).is_some_and(|r| r.addr == remote)
        })
    }

    fn recompute_priorities(&mut self) {
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

    fn foundation_key(&self, p: &Pair) -> Option<(Foundation, Foundation)> {
        Some((
            self.local.get(p.local)?.foundation.clone(),
            self.remote.get(p.remote)?.foundation.clone(),
        ))
    }

    /// RFC 8445 §6.1.2.6 and §7.2.5.3.3: of the frozen pairs, a foundation's best pair
    /// waits unless one of that foundation is already waiting or in progress; every
    /// pair of a foundation that succeeded waits.
    fn unfreeze(&mut self) {
        let mut active = HashSet::new();
        let mut succeeded = HashSet::new();
        for p in &self.pairs {
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

    /// Whether `bytes` arriving on `local` from `from` are for this agent: a response to
    /// one of its transactions, a Binding request naming its ufrag, or data on the
    /// selected pair (for sharing a socket with other cores).
    #[must_use]
    pub fn accepts(&self, local: SocketAddr, from: SocketAddr, bytes: &[u8]) -> bool {
        if classify(bytes) != PacketKind::Stun {
            return self.selected.is_some_and(|s| {
                s.base == local && self.remote.get(s.remote).is_some_and(|r| r.addr == from)
            });
        }
        let Ok(h) = Header::decode(bytes) else {
            return false;
        };
        match h.class {
            Class::Success | Class::Error => self.client.accepts(bytes),
            Class::Request | Class::Indication => Message::decode(bytes, &self.config.limits)
                .ok()
                .and_then(|m| {
                    m.find(|a| match a {
                        Attribute::Username(u) => {
                            Some(u.split(':').next() == Some(&self.local_ufrag))
                        }
                        _ => None,
                    })
                })
                .unwrap_or(false),
        }
    }

    /// One datagram received on local address `local` (a host address, or a relayed
    /// address for data from the TURN allocation) from `from`.
    ///
    /// # Errors
    /// Rejected, state unchanged: not a valid STUN message, a check with the wrong
    /// credentials ([`Violation::BadCredentials`], [`DecodeError::IntegrityMismatch`]),
    /// an unknown transaction, data not on the selected pair
    /// ([`Violation::UnexpectedSource`]) or a full queue ([`Limit::Queue`]).
    pub fn handle_input(
        &mut self,
        now: Instant,
        local: SocketAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        if classify(bytes) != PacketKind::Stun {
            let on_selected = self.selected.is_some_and(|s| {
                s.base == local && self.remote.get(s.remote).is_some_and(|r| r.addr == from)
            });
            if !on_selected {
                return Err(Violation::UnexpectedSource.into());
            }
            return self.push_event(Event::Data(Bytes::copy_from_slice(bytes)));
        }
        let header = Header::decode(bytes)?;
        match header.class {
            Class::Request => self.handle_request(now, local, from, bytes),
            Class::Success | Class::Error => {
                let id = header.transaction_id;
                let expected = self
                    .checks
                    .get(&id)
                    .map(|c| c.base)
                    .or_else(|| self.gathers.get(&id).copied());
                // A response must arrive on the base its request left from.
                if expected.is_some_and(|b| b != local) {
                    return Err(Violation::UnexpectedSource.into());
                }
                self.client.handle_input(now, from, bytes)?;
                self.flush_client(now);
                self.after_change(now);
                Ok(())
            }
            // Binding indications are keepalives (RFC 8445 §11): nothing to do.
            Class::Indication => Ok(()),
        }
    }

    /// RFC 8445 §7.3: answers a connectivity check, learns a peer-reflexive candidate,
    /// settles role conflicts and triggers a check back.
    fn handle_request(
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
                    if !self.triggered.contains(&(local, from, false)) {
                        self.triggered.push_back((local, from, false));
                    }
                }
            }
        }
        if select && self.may_select(pi) {
            self.select(now, pi);
        }
        self.after_change(now);
        Ok(())
    }

    fn respond(
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

    fn switch_role(&mut self) {
        self.role = self.role.flip();
        self.nominating = None;
        self.recompute_priorities();
        // Flips are driven by the peer's requests: bounded like data events.
        let _ = self.push_event(Event::RoleChanged(self.role));
    }

    fn push_event(&mut self, e: Event) -> Result<(), Error> {
        if self.events.len() >= self.config.max_queue {
            return Err(Limit::Queue(self.events.len()).into());
        }
        self.events.push_back(e);
        Ok(())
    }

    /// Moves the client's datagrams to our queue with their source base, and handles
    /// its outcomes.
    fn flush_client(&mut self, now: Instant) {
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

    fn gathered(&mut self, base: SocketAddr, r: &client::Response) {
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

    fn check_gathering_done(&mut self) {
        if self.gathering_started && self.gathers.is_empty() && !self.gathering_reported {
            self.gathering_reported = true;
            self.events.push_back(Event::GatheringComplete);
        }
    }

    fn set_pair_state(
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

    fn check_failed(&mut self, c: &Check) {
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
    fn check_response(&mut self, now: Instant, c: Check, r: &client::Response) {
        // §7.2.5.2.1: the response must come from where the request went.
        let symmetric = r.from == c.remote;
        if c.consent {
            if symmetric && r.class == Class::Success {
                self.consent_until = Some(now + self.config.consent_timeout);
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
                self.triggered.push_back((c.base, c.remote, false));
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

    /// Whether pair `pi` may become the selected pair: any nominated pair while
    /// checking; later, on the controlled side, a different pair the controlling agent
    /// nominated (RFC 8445 §8.1.1: the controlling agent may nominate again when a
    /// nomination fails after the controlled agent already accepted it).
    fn may_select(&self, pi: usize) -> bool {
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

    fn select(&mut self, now: Instant, pi: usize) {
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
        self.triggered.clear();
        self.next_consent_check = Some(now + self.consent_interval());
        self.consent_until = Some(now + self.config.consent_timeout);
    }

    /// RFC 7675 §5.1: the interval, randomized to 0.8..1.2 of the configured one.
    fn consent_interval(&mut self) -> Duration {
        let mut x = self.jitter;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter = x;
        let permille = 800 + (x % 401) as u32;
        self.config.consent_interval * permille / 1000
    }

    fn fail(&mut self, reason: FailReason) {
        self.state = State::Failed;
        self.selected = None;
        self.triggered.clear();
        self.events.push_back(Event::Failed(reason));
    }

    /// After input or a timer: nominate (controlling side) and detect failure.
    fn after_change(&mut self, now: Instant) {
        if self.state != State::Checking {
            return;
        }
        // RFC 8445 §8.1.1: regular nomination of the best valid pair, once no better
        // pair can still succeed or after `nomination_delay`.
        if self.role == Role::Controlling
            && self.nominating.is_none()
            && let Some((pi, best)) = self
                .pairs
                .iter()
                .enumerate()
                .filter(|(_, p)| p.state == PairState::Succeeded)
                .max_by_key(|(_, p)| p.priority)
                .map(|(i, p)| (i, p.priority))
        {
            let better_pending = self.pairs.iter().any(|p| {
                p.priority > best
                    && matches!(
                        p.state,
                        PairState::Frozen | PairState::Waiting | PairState::InProgress
                    )
            });
            let waited = self
                .first_valid_at
                .is_some_and(|t| now >= t + self.config.nomination_delay);
            if (!better_pending || waited)
                && let Some(p) = self.pairs.get(pi)
                && let Some(base) = self.local.get(p.local).map(|c| c.base)
                && let Some(raddr) = self.remote.get(p.remote).map(|c| c.addr)
            {
                self.nominating = Some((base, raddr));
                self.triggered.push_front((base, raddr, true));
            }
        }
        if self.all_failed_at().is_some_and(|t| now >= t) {
            self.fail(FailReason::AllPairsFailed);
        }
    }

    /// When the agent may conclude that every pair failed (RFC 8445 §8.1.2): both sides
    /// finished gathering, nothing is pending, and the peer's checks, which could
    /// still trigger a successful check, stopped (or never came) [`FAIL_GRACE`] ago.
    fn all_failed_at(&self) -> Option<Instant> {
        let done = self.pairs.iter().all(|p| p.state == PairState::Failed)
            && self.remote_complete
            && self.gathering_reported
            && self.triggered.is_empty()
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

    /// Starts a connectivity check on the pair (base, remote).
    fn start_check(
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

    /// The next check to send (RFC 8445 §6.1.4.2): a triggered one, else the
    /// highest-priority waiting pair.
    fn next_check(&mut self) -> Option<(SocketAddr, SocketAddr, bool)> {
        self.remote_key.as_ref()?;
        while let Some((base, remote, nominate)) = self.triggered.pop_front() {
            let Some(p) = self.find_pair(base, remote).and_then(|i| self.pairs.get(i)) else {
                continue;
            };
            if nominate || p.state != PairState::InProgress {
                return Some((base, remote, nominate));
            }
        }
        let p = self
            .pairs
            .iter()
            .filter(|p| p.state == PairState::Waiting)
            .max_by_key(|p| p.priority)?;
        Some((
            self.local.get(p.local)?.base,
            self.remote.get(p.remote)?.addr,
            false,
        ))
    }

    fn has_work(&self) -> bool {
        self.remote_key.is_some()
            && (!self.triggered.is_empty()
                || self.pairs.iter().any(|p| p.state == PairState::Waiting))
    }

    /// Retransmits, paces checks, nominates, refreshes consent and times out what is
    /// due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.client.handle_timeout(now);
        self.flush_client(now);
        match self.state {
            State::Checking => {
                if self.deadline.is_some_and(|d| now >= d) {
                    self.fail(FailReason::Timeout);
                    return;
                }
                self.after_change(now);
                if self.state == State::Checking
                    && self.pace_at.is_some_and(|t| now >= t)
                    && let Some((base, remote, nominate)) = self.next_check()
                {
                    if self
                        .start_check(now, base, remote, nominate, false)
                        .is_err()
                    {
                        // The transaction table is full: fail this pair rather than spin.
                        self.set_pair_state(base, remote, PairState::Failed);
                        if nominate {
                            self.nominating = None;
                        }
                    }
                    self.pace_at = Some(now + self.config.ta);
                }
                self.after_change(now);
            }
            State::Connected => {
                if self.consent_until.is_some_and(|t| now >= t) {
                    self.fail(FailReason::ConsentExpired);
                    return;
                }
                if self.next_consent_check.is_some_and(|t| now >= t)
                    && let Some(s) = self.selected
                    && let Some(r) = self.remote.get(s.remote).map(|r| r.addr)
                {
                    // RFC 7675 §5.1: a Binding request on the selected pair.
                    let _ = self.start_check(now, s.base, r, false, true);
                    self.next_consent_check = Some(now + self.consent_interval());
                }
            }
            State::Failed => {}
        }
    }

    /// Wraps application data for the selected pair: send `payload` from `src` (a host
    /// or relayed address) to `dst`.
    ///
    /// # Errors
    /// [`UsageError::NotConnected`] before [`Event::Connected`] or after
    /// [`Event::Failed`].
    pub fn send(&self, payload: Bytes) -> Result<Transmit, Error> {
        let s = self.selected.ok_or(UsageError::NotConnected)?;
        let r = self.remote.get(s.remote).ok_or(UsageError::NotConnected)?;
        Ok(Transmit::new(r.addr, payload).with_src(s.base))
    }

    /// The next datagram to send, from its `src`.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Agent::handle_timeout`] should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.client.poll_timeout();
        let mut min = |x: Option<Instant>| {
            t = match (t, x) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        };
        match self.state {
            State::Checking => {
                min(self.deadline);
                if self.has_work() {
                    min(self.pace_at);
                }
                min(self.all_failed_at());
                // Only while a valid pair waits for nomination: a stale instant would
                // make the caller spin.
                if self.role == Role::Controlling
                    && self.nominating.is_none()
                    && self.pairs.iter().any(|p| p.state == PairState::Succeeded)
                {
                    min(self
                        .first_valid_at
                        .map(|f| f + self.config.nomination_delay));
                }
            }
            State::Connected => {
                min(self.next_consent_check);
                min(self.consent_until);
            }
            State::Failed => {}
        }
        t
    }
}

// The ICE agent as a datagram core: checks for its ufrag, responses to its checks
// and data on its selected pair.
chorus_framing::datagram_core! {
    impl for Agent {
        type Event = Event;
        type Error = Error;
        fn accepts(&self, local, from, bytes) {
            Self::accepts(self, local, from, bytes)
        }
        fn handle_datagram(&mut self, now, local, from, bytes) {
            self.handle_input(now, local, from, bytes)
        }
    }
}
