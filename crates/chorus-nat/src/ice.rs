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
//! Inside, the agent is a hub over its subsystems: candidates, gathering and the
//! description exchange (`ice/gather.rs`), the check list of pairs and triggered
//! checks (`CheckList`, `ice/checklist.rs`), connectivity checks in both directions
//! (`ice/checks.rs`), and nomination, selection and consent (`Consent`,
//! `ice/nomination.rs`).
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
mod checklist;
mod checks;
#[cfg(any(test, feature = "_fuzz"))]
#[doc(hidden)]
pub mod fuzz;
mod gather;
mod nomination;
#[cfg(test)]
mod tests;

pub use candidate::{
    Candidate, CandidateKind, Description, Foundation, MAX_CREDENTIAL, MAX_EXTENSIONS,
    MAX_FOUNDATION, MAX_LINE, MAX_PRIORITY, pair_priority, priority,
};

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_framing::{Entropy, PacketKind, Transmit, classify};

use crate::client::{Client, ClientConfig};
use crate::error::{Error, Limit, UsageError, Violation};
use crate::stun::{Attribute, Class, Header, Key, Limits, Message, TransactionId};
use checklist::{CheckList, PairState};
use checks::Check;
use nomination::{Consent, Selected};

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

/// An ICE agent (RFC 8445) for one UDP component. Performs no I/O; see the module docs
/// for its run loop.
pub struct Agent {
    config: IceConfig,
    client: Client,
    role: Role,
    tiebreaker: u64,
    local_ufrag: String,
    local_key: Key,
    remote_ufrag: Option<String>,
    remote_key: Option<Key>,
    remote_complete: bool,
    local: Vec<Candidate>,
    remote: Vec<Candidate>,
    /// The check list: pairs and triggered checks.
    pairs: CheckList,
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
    consent: Consent,
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
            local_ufrag,
            remote_ufrag: None,
            remote_key: None,
            remote_complete: false,
            local: Vec::new(),
            remote: Vec::new(),
            pairs: CheckList::default(),
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
            consent: Consent::new(jitter),
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

    fn start_clock(&mut self, now: Instant) {
        if self.deadline.is_none() {
            self.deadline = Some(now + self.config.timeout);
            self.pace_at = Some(now);
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
    /// credentials ([`Violation::BadCredentials`], [`DecodeError::IntegrityMismatch`](crate::error::DecodeError::IntegrityMismatch)),
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

    fn push_event(&mut self, e: Event) -> Result<(), Error> {
        if self.events.len() >= self.config.max_queue {
            return Err(Limit::Queue(self.events.len()).into());
        }
        self.events.push_back(e);
        Ok(())
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
                if self.consent.expired(now) {
                    self.fail(FailReason::ConsentExpired);
                    return;
                }
                if self.consent.due(now)
                    && let Some(s) = self.selected
                    && let Some(r) = self.remote.get(s.remote).map(|r| r.addr)
                {
                    // RFC 7675 §5.1: a Binding request on the selected pair.
                    let _ = self.start_check(now, s.base, r, false, true);
                    self.consent.schedule(now, self.config.consent_interval);
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
                    && self.pairs.any_succeeded()
                {
                    min(self
                        .first_valid_at
                        .map(|f| f + self.config.nomination_delay));
                }
            }
            State::Connected => {
                min(self.consent.next_check());
                min(self.consent.until());
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
