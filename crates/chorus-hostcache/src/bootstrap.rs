//! The bootstrap procedure: finding one live super node, as a sans-IO state machine.
//!
//! Each **round** runs up to four phases, in order, until a super node answers:
//!
//! 1. UDP probes to the cached super nodes (best first), [`BootstrapConfig::parallel`]
//!    in flight at once, each given [`BootstrapConfig::probe_timeout`];
//! 2. if none answered, TCP connects to the same nodes ([`Event::ConnectTcp`]; the
//!    driver connects and reports with [`Bootstrap::handle_tcp_result`]), each given
//!    [`BootstrapConfig::tcp_timeout`];
//! 3. UDP probes to the application's bootstrap list (the examples ship seven entries,
//!    as Skype did);
//! 4. TCP connects to the bootstrap list.
//!
//! When [`BootstrapConfig::alternative_ports`] is set (Skype's 80 and 443), every
//! address is also tried on those ports. If a round ends with no answer, the machine
//! waits [`BootstrapConfig::round_delay`] (6 seconds) and starts again; after
//! [`BootstrapConfig::max_rounds`] it emits [`Event::Failed`] with an [`Unreachable`]
//! report listing everything it tried.
//!
//! A probe is a Chorus `Probe` datagram (connection id 0, a random 64-bit nonce as its
//! sequence number, no payload); the answer is a `ProbeReply` from the probed address
//! echoing the nonce ([`probe_reply`] builds it, for super nodes).
//!
//! # Run loop
//! 1. Create with [`Bootstrap::new`], then call [`Bootstrap::start`].
//! 2. After `start` and after every `handle_*`, drain [`Bootstrap::poll_transmit`] and
//!    [`Bootstrap::poll_event`] until `None`, then read [`Bootstrap::poll_timeout`].
//! 3. Feed received datagrams to [`Bootstrap::handle_input`], TCP outcomes to
//!    [`Bootstrap::handle_tcp_result`] and expired timers to
//!    [`Bootstrap::handle_timeout`]. `now` never goes backwards; an early
//!    `handle_timeout` is a harmless no-op.
//! 4. The machine ends with exactly one [`Event::Connected`] or [`Event::Failed`];
//!    [`Event::Attempted`] events along the way carry each node's outcome for the host
//!    cache.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use chorus_crypto::SystemEntropy;
//! use chorus_hostcache::bootstrap::{probe_reply, Bootstrap, BootstrapConfig, Event, Transport};
//!
//! let node = "192.0.2.1:33033".parse()?;
//! let mut b = Bootstrap::new(BootstrapConfig::default(), Box::new(SystemEntropy::new()))?;
//! let t0 = Instant::now();
//! b.start(t0, vec![node], vec![])?;
//! let probe = b.poll_transmit().expect("a probe");
//! assert_eq!(probe.dst, node);
//! // The super node answers 40 ms later.
//! let reply = probe_reply(&probe.payload).expect("a valid probe");
//! b.handle_input(t0 + Duration::from_millis(40), node, &reply)?;
//! let mut connected = None;
//! while let Some(e) = b.poll_event() {
//!     if let Event::Connected { addr, transport, .. } = e {
//!         connected = Some((addr, transport));
//!     }
//! }
//! assert_eq!(connected, Some((node, Transport::Udp)));
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

use core::fmt;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_framing::{Datagram, DatagramHeader, DatagramType, Entropy, Transmit};

use crate::error::{Error, UsageError, Violation};

/// Bootstrap policy. Validated by [`Bootstrap::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BootstrapConfig {
    /// Probes or connects in flight at once. Default 4; 1 to 64.
    pub parallel: usize,
    /// How long a UDP probe waits for its answer. Default 2 seconds.
    pub probe_timeout: Duration,
    /// How long a TCP connect may take. Default 5 seconds.
    pub tcp_timeout: Duration,
    /// Pause between rounds. Default 6 seconds (as Skype).
    pub round_delay: Duration,
    /// Rounds before giving up. Default 3; 1 to 1,000.
    pub max_rounds: u32,
    /// Most cached nodes tried per round (the best ones). Default 16.
    pub max_cached: usize,
    /// Extra ports to try every address on, such as `[443, 80]`. Default none; at most 4.
    pub alternative_ports: Vec<u16>,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            parallel: 4,
            probe_timeout: Duration::from_secs(2),
            tcp_timeout: Duration::from_secs(5),
            round_delay: Duration::from_secs(6),
            max_rounds: 3,
            max_cached: 16,
            alternative_ports: Vec::new(),
        }
    }
}

/// How a node was reached: a UDP probe was answered, or a TCP connection was
/// established (chorus-framing's, shared by every crate).
pub use chorus_framing::Transport;

/// Where a candidate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// The host cache.
    Cache,
    /// The application's bootstrap list.
    BootstrapList,
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer in time.
    Timeout,
    /// The TCP connection was refused or failed (reported by the driver).
    Refused,
}

/// The result of one attempt, for the host cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered after this round-trip time.
    Answered(Duration),
    /// Did not answer.
    Failed(Failure),
}

/// Identifies one TCP connect attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId(pub u64);

/// What the caller must do or know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Open a TCP connection to `addr` and report with
    /// [`Bootstrap::handle_tcp_result`].
    ConnectTcp {
        /// The attempt.
        attempt: AttemptId,
        /// Where to connect.
        addr: SocketAddr,
    },
    /// Abandon a TCP attempt (timed out, or another node answered first).
    CancelTcp {
        /// The attempt.
        attempt: AttemptId,
    },
    /// One attempt finished: update the host cache.
    Attempted {
        /// The node.
        addr: SocketAddr,
        /// How.
        transport: Transport,
        /// What happened.
        outcome: Outcome,
    },
    /// A super node answered: bootstrap is done.
    Connected {
        /// The node.
        addr: SocketAddr,
        /// How it was reached (over TCP, the driver keeps that connection).
        transport: Transport,
        /// For TCP, the attempt whose connection to keep.
        attempt: Option<AttemptId>,
        /// The round-trip (UDP) or connect (TCP) time.
        rtt: Duration,
    },
    /// Every round failed.
    Failed(Unreachable),
}

/// One address tried, and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    /// The address.
    pub addr: SocketAddr,
    /// The transport.
    pub transport: Transport,
    /// Where the address came from.
    pub origin: Origin,
    /// How many times it was tried.
    pub attempts: u32,
    /// The last failure.
    pub last_failure: Failure,
}

/// "Network unreachable": no super node answered in any round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    /// Rounds run.
    pub rounds: u32,
    /// Everything tried, in the order first tried.
    pub tried: Vec<Tried>,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "network unreachable: no super node answered in {} rounds",
            self.rounds
        )?;
        if self.tried.is_empty() {
            return f.write_str(" (no host cache entries and no bootstrap nodes to try)");
        }
        f.write_str("; tried")?;
        for (i, t) in self.tried.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            let origin = match t.origin {
                Origin::Cache => "cached",
                Origin::BootstrapList => "bootstrap",
            };
            let how = match t.last_failure {
                Failure::Timeout => "timeout",
                Failure::Refused => "refused",
            };
            write!(
                f,
                "{sep}{} over {:?} ({origin}, {}x, {how})",
                t.addr, t.transport, t.attempts
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Unreachable {}

/// A phase of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Phase {
    transport: Transport,
    origin: Origin,
}

const PHASES: [Phase; 4] = [
    Phase {
        transport: Transport::Udp,
        origin: Origin::Cache,
    },
    Phase {
        transport: Transport::Tcp,
        origin: Origin::Cache,
    },
    Phase {
        transport: Transport::Udp,
        origin: Origin::BootstrapList,
    },
    Phase {
        transport: Transport::Tcp,
        origin: Origin::BootstrapList,
    },
];

#[derive(Debug, Clone)]
struct InFlight {
    addr: SocketAddr,
    nonce: u64,
    attempt: AttemptId,
    sent: Instant,
    deadline: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Idle,
    Running { phase: usize },
    Waiting { until: Instant },
    Done,
}

/// The bootstrap state machine. Performs no I/O; see the [module docs](self).
pub struct Bootstrap {
    config: BootstrapConfig,
    entropy: Box<dyn Entropy>,
    cached: Vec<SocketAddr>,
    list: Vec<SocketAddr>,
    state: State,
    round: u32,
    queue: VecDeque<SocketAddr>,
    in_flight: Vec<InFlight>,
    next_attempt: u64,
    tried: Vec<Tried>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bootstrap")
            .field("state", &self.state)
            .field("round", &self.round)
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl Bootstrap {
    /// A machine under `config`, drawing probe nonces from `entropy`.
    ///
    /// # Errors
    /// [`UsageError::InvalidConfig`] if a field is outside its documented bounds.
    pub fn new(config: BootstrapConfig, entropy: Box<dyn Entropy>) -> Result<Self, Error> {
        let bad = |what| Err(UsageError::InvalidConfig(what).into());
        if !(1..=64).contains(&config.parallel) {
            return bad("bootstrap parallel must be 1 to 64");
        }
        if !(1..=1000).contains(&config.max_rounds) {
            return bad("bootstrap max_rounds must be 1 to 1,000");
        }
        if config.probe_timeout.is_zero() || config.tcp_timeout.is_zero() {
            return bad("bootstrap timeouts must be positive");
        }
        if config.alternative_ports.len() > 4 || config.alternative_ports.contains(&0) {
            return bad("bootstrap alternative_ports: at most 4 non-zero ports");
        }
        Ok(Self {
            config,
            entropy,
            cached: Vec::new(),
            list: Vec::new(),
            state: State::Idle,
            round: 0,
            queue: VecDeque::new(),
            in_flight: Vec::new(),
            next_attempt: 0,
            tried: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// Starts round 1 with `cached` (host cache addresses, best first; the first
    /// [`BootstrapConfig::max_cached`] are used) and the application's bootstrap
    /// `list`.
    ///
    /// # Errors
    /// [`UsageError::WrongState`] if already started; [`Error::Entropy`].
    pub fn start(
        &mut self,
        now: Instant,
        cached: Vec<SocketAddr>,
        list: Vec<SocketAddr>,
    ) -> Result<(), Error> {
        if self.state != State::Idle {
            return Err(UsageError::WrongState("bootstrap already started").into());
        }
        self.cached = self.expand(cached.into_iter().take(self.config.max_cached));
        self.list = self.expand(list.into_iter().take(1024));
        self.round = 1;
        self.enter_phase(now, 0)
    }

    /// Each address, then the same host on each alternative port, without duplicates.
    fn expand(&self, addrs: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for a in addrs {
            let alts = self
                .config
                .alternative_ports
                .iter()
                .map(|&p| SocketAddr::new(a.ip(), p));
            for c in core::iter::once(a).chain(alts) {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        out
    }

    fn enter_phase(&mut self, now: Instant, phase: usize) -> Result<(), Error> {
        let mut phase = phase;
        loop {
            let Some(p) = PHASES.get(phase) else {
                return self.end_round(now);
            };
            let addrs = match p.origin {
                Origin::Cache => &self.cached,
                Origin::BootstrapList => &self.list,
            };
            if addrs.is_empty() {
                phase += 1;
                continue;
            }
            self.queue = addrs.iter().copied().collect();
            self.state = State::Running { phase };
            return self.fill(now);
        }
    }

    fn end_round(&mut self, now: Instant) -> Result<(), Error> {
        if self.round >= self.config.max_rounds {
            self.state = State::Done;
            self.events.push_back(Event::Failed(Unreachable {
                rounds: self.round,
                tried: core::mem::take(&mut self.tried),
            }));
        } else {
            self.state = State::Waiting {
                until: now + self.config.round_delay,
            };
        }
        Ok(())
    }

    /// Starts attempts until `parallel` are in flight or the phase's queue is empty.
    fn fill(&mut self, now: Instant) -> Result<(), Error> {
        let State::Running { phase } = self.state else {
            return Ok(());
        };
        let Some(p) = PHASES.get(phase).copied() else {
            return Ok(());
        };
        while self.in_flight.len() < self.config.parallel {
            let Some(addr) = self.queue.pop_front() else {
                break;
            };
            let attempt = AttemptId(self.next_attempt);
            self.next_attempt += 1;
            let (nonce, timeout) = match p.transport {
                Transport::Udp => {
                    let nonce = self.entropy.u64()?;
                    let header = DatagramHeader::new(DatagramType::Probe, 0, nonce);
                    let bytes = Datagram::new(header, Bytes::new())
                        .to_bytes()
                        .map_err(|_| UsageError::WrongState("probe encoding"))?;
                    self.transmits.push_back(Transmit::new(addr, bytes));
                    (nonce, self.config.probe_timeout)
                }
                Transport::Tcp => {
                    self.events.push_back(Event::ConnectTcp { attempt, addr });
                    (0, self.config.tcp_timeout)
                }
            };
            self.in_flight.push(InFlight {
                addr,
                nonce,
                attempt,
                sent: now,
                deadline: now + timeout,
            });
        }
        if self.in_flight.is_empty() && self.queue.is_empty() {
            return self.enter_phase(now, phase + 1);
        }
        Ok(())
    }

    fn phase(&self) -> Option<Phase> {
        match self.state {
            State::Running { phase } => PHASES.get(phase).copied(),
            _ => None,
        }
    }

    fn record_failure(&mut self, addr: SocketAddr, failure: Failure) {
        let Some(p) = self.phase() else { return };
        self.events.push_back(Event::Attempted {
            addr,
            transport: p.transport,
            outcome: Outcome::Failed(failure),
        });
        match self
            .tried
            .iter_mut()
            .find(|t| t.addr == addr && t.transport == p.transport && t.origin == p.origin)
        {
            Some(t) => {
                t.attempts = t.attempts.saturating_add(1);
                t.last_failure = failure;
            }
            None => self.tried.push(Tried {
                addr,
                transport: p.transport,
                origin: p.origin,
                attempts: 1,
                last_failure: failure,
            }),
        }
    }

    fn succeed(&mut self, now: Instant, index: usize) {
        let Some(p) = self.phase() else { return };
        if index >= self.in_flight.len() {
            return;
        }
        let won = self.in_flight.swap_remove(index);
        let rtt = now.saturating_duration_since(won.sent);
        self.events.push_back(Event::Attempted {
            addr: won.addr,
            transport: p.transport,
            outcome: Outcome::Answered(rtt),
        });
        if p.transport == Transport::Tcp {
            for other in self.in_flight.drain(..) {
                self.events.push_back(Event::CancelTcp {
                    attempt: other.attempt,
                });
            }
        }
        self.in_flight.clear();
        self.queue.clear();
        self.state = State::Done;
        self.events.push_back(Event::Connected {
            addr: won.addr,
            transport: p.transport,
            attempt: (p.transport == Transport::Tcp).then_some(won.attempt),
            rtt,
        });
    }

    /// Whether `bytes` from `from` are meant for this machine (a `ProbeReply` from a
    /// probed address), for routing when a socket serves several cores.
    #[must_use]
    pub fn accepts(&self, from: SocketAddr, bytes: &[u8]) -> bool {
        matches!(
            DatagramHeader::decode(bytes),
            Ok((h, _)) if h.datagram_type == DatagramType::ProbeReply
                && self.in_flight.iter().any(|f| f.addr == from && f.nonce == h.sequence)
        )
    }

    /// One received datagram.
    ///
    /// # Errors
    /// [`Error::Decode`] for bytes that are not a Chorus datagram;
    /// [`Violation::UnexpectedType`] for other types; [`Violation::Unsolicited`] for a
    /// reply that matches no probe in flight (a late reply, or a forgery). State is
    /// unchanged on error.
    pub fn handle_input(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let (header, _) = DatagramHeader::decode(bytes)?;
        if header.datagram_type != DatagramType::ProbeReply {
            return Err(Violation::UnexpectedType(header.datagram_type as u8).into());
        }
        let udp = self.phase().is_some_and(|p| p.transport == Transport::Udp);
        let index = self
            .in_flight
            .iter()
            .position(|f| f.addr == from && f.nonce == header.sequence)
            .filter(|_| udp)
            .ok_or(Violation::Unsolicited)?;
        self.succeed(now, index);
        Ok(())
    }

    /// The driver's report on TCP attempt `attempt`: `true` if connected.
    ///
    /// # Errors
    /// [`UsageError::UnknownAttempt`] if the attempt is not in flight (already timed
    /// out or cancelled: the driver then closes that connection).
    pub fn handle_tcp_result(
        &mut self,
        now: Instant,
        attempt: AttemptId,
        connected: bool,
    ) -> Result<(), Error> {
        let tcp = self.phase().is_some_and(|p| p.transport == Transport::Tcp);
        let index = self
            .in_flight
            .iter()
            .position(|f| f.attempt == attempt)
            .filter(|_| tcp)
            .ok_or(UsageError::UnknownAttempt(attempt.0))?;
        if connected {
            self.succeed(now, index);
            return Ok(());
        }
        let failed = self.in_flight.swap_remove(index);
        self.record_failure(failed.addr, Failure::Refused);
        self.fill(now)
    }

    /// Timers: expired attempts fail; the pause between rounds ends.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Entropy failure leaves the machine where it is; the next call retries.
        let _ = self.try_timeout(now);
    }

    fn try_timeout(&mut self, now: Instant) -> Result<(), Error> {
        match self.state {
            State::Waiting { until } if now >= until => {
                self.round += 1;
                self.enter_phase(now, 0)
            }
            State::Running { .. } => {
                let tcp = self.phase().is_some_and(|p| p.transport == Transport::Tcp);
                let (expired, live): (Vec<_>, Vec<_>) =
                    self.in_flight.drain(..).partition(|f| f.deadline <= now);
                self.in_flight = live;
                if expired.is_empty() {
                    return Ok(());
                }
                for f in expired {
                    if tcp {
                        self.events
                            .push_back(Event::CancelTcp { attempt: f.attempt });
                    }
                    self.record_failure(f.addr, Failure::Timeout);
                }
                self.fill(now)
            }
            _ => Ok(()),
        }
    }

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Bootstrap::handle_timeout`] must next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Waiting { until } => Some(until),
            State::Running { .. } => self.in_flight.iter().map(|f| f.deadline).min(),
            State::Idle | State::Done => None,
        }
    }

    /// Whether the machine has finished (connected or failed).
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The round in progress (from 1), or 0 before `start`.
    #[must_use]
    pub const fn round(&self) -> u32 {
        self.round
    }
}

/// A super node's answer to a probe: `Some(reply)` if `probe` is a valid `Probe`.
#[must_use]
pub fn probe_reply(probe: &[u8]) -> Option<Bytes> {
    let (h, _) = DatagramHeader::decode(probe).ok()?;
    if h.datagram_type != DatagramType::Probe {
        return None;
    }
    let reply = DatagramHeader::new(DatagramType::ProbeReply, 0, h.sequence);
    Datagram::new(reply, Bytes::new()).to_bytes().ok()
}

// The bootstrap procedure as a datagram core: it takes replies to its probes.
chorus_framing::datagram_core! {
    impl for Bootstrap {
        type Event = Event;
        type Error = Error;
        fn accepts(&self, _local, from, bytes) {
            Self::accepts(self, from, bytes)
        }
        fn handle_datagram(&mut self, now, _local, from, bytes) {
            self.handle_input(now, from, bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_framing::SeededEntropy;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn machine(config: BootstrapConfig) -> Bootstrap {
        Bootstrap::new(config, Box::new(SeededEntropy::new(7))).unwrap()
    }

    fn drain(b: &mut Bootstrap) -> (Vec<Transmit>, Vec<Event>) {
        let t = core::iter::from_fn(|| b.poll_transmit()).collect();
        let e = core::iter::from_fn(|| b.poll_event()).collect();
        (t, e)
    }

    /// Runs timers only (nothing answers) until done; returns all events.
    fn run_silent(b: &mut Bootstrap, mut now: Instant) -> (Vec<Event>, Instant) {
        let mut all = Vec::new();
        for _ in 0..10_000 {
            let (_, e) = drain(b);
            for ev in &e {
                if let Event::ConnectTcp { attempt, .. } = ev {
                    // Leave TCP attempts hanging: they time out.
                    let _ = attempt;
                }
            }
            all.extend(e);
            match b.poll_timeout() {
                Some(t) => {
                    now = now.max(t);
                    b.handle_timeout(now);
                }
                None => break,
            }
        }
        (all, now)
    }

    #[test]
    fn a_udp_answer_ends_bootstrap() {
        let mut b = machine(BootstrapConfig::default());
        let t0 = Instant::now();
        let nodes: Vec<_> = (1..=6).map(|i| a(&format!("10.0.0.{i}:1"))).collect();
        b.start(t0, nodes.clone(), vec![]).unwrap();
        let (tx, _) = drain(&mut b);
        assert_eq!(tx.len(), 4, "four probes in parallel");
        let reply = probe_reply(&tx[2].payload).unwrap();
        assert!(b.accepts(tx[2].dst, &reply));
        assert!(!b.accepts(tx[1].dst, &reply), "nonce is per probe");
        // The same through the shared datagram contract, as a one-port driver routes.
        let local = a("10.9.9.9:9");
        assert!(chorus_framing::DatagramCore::accepts(
            &b, local, tx[2].dst, &reply
        ));
        assert!(!chorus_framing::DatagramCore::accepts(
            &b, local, tx[1].dst, &reply
        ));
        assert_eq!(
            b.handle_input(t0, tx[1].dst, &reply).unwrap_err(),
            Error::Protocol(Violation::Unsolicited)
        );
        let later = t0 + Duration::from_millis(25);
        chorus_framing::DatagramCore::handle_datagram(&mut b, later, local, tx[2].dst, &reply)
            .unwrap();
        let (_, ev) = drain(&mut b);
        assert!(ev.contains(&Event::Connected {
            addr: nodes[2],
            transport: Transport::Udp,
            attempt: None,
            rtt: Duration::from_millis(25)
        }));
        assert!(b.is_done());
        assert_eq!(b.poll_timeout(), None);
        assert!(
            b.handle_input(t0, tx[2].dst, &reply).is_err(),
            "late replies are unsolicited"
        );
    }

    #[test]
    fn probes_slide_through_the_cache_as_earlier_ones_time_out() {
        let mut b = machine(BootstrapConfig::default());
        let t0 = Instant::now();
        let nodes: Vec<_> = (1..=6).map(|i| a(&format!("10.0.0.{i}:1"))).collect();
        b.start(t0, nodes.clone(), vec![]).unwrap();
        let _ = drain(&mut b);
        b.handle_timeout(t0 + Duration::from_secs(1)); // early: no-op
        assert!(drain(&mut b).0.is_empty());
        b.handle_timeout(t0 + Duration::from_secs(2));
        let (tx, ev) = drain(&mut b);
        assert_eq!(
            tx.iter().map(|t| t.dst).collect::<Vec<_>>(),
            nodes[4..].to_vec()
        );
        assert_eq!(
            ev.iter()
                .filter(|e| matches!(e, Event::Attempted { .. }))
                .count(),
            4
        );
    }

    #[test]
    fn tcp_is_tried_when_no_probe_is_answered() {
        let mut b = machine(BootstrapConfig::default());
        let t0 = Instant::now();
        let node = a("10.0.0.1:1");
        b.start(t0, vec![node], vec![]).unwrap();
        let _ = drain(&mut b);
        b.handle_timeout(t0 + Duration::from_secs(2));
        let (tx, ev) = drain(&mut b);
        assert!(tx.is_empty());
        let attempt = ev
            .iter()
            .find_map(|e| match e {
                Event::ConnectTcp { attempt, addr } if *addr == node => Some(*attempt),
                _ => None,
            })
            .expect("a TCP connect");
        // A UDP reply arriving now is not accepted: the UDP phase is over.
        assert!(
            b.handle_input(
                t0,
                node,
                &probe_reply(&[9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap()
            )
            .is_err()
        );
        assert_eq!(
            b.handle_tcp_result(t0, AttemptId(999), true).unwrap_err(),
            Error::Usage(UsageError::UnknownAttempt(999))
        );
        b.handle_tcp_result(t0 + Duration::from_secs(3), attempt, true)
            .unwrap();
        let (_, ev) = drain(&mut b);
        assert!(ev.contains(&Event::Connected {
            addr: node,
            transport: Transport::Tcp,
            attempt: Some(attempt),
            rtt: Duration::from_secs(1)
        }));
    }

    #[test]
    fn the_bootstrap_list_follows_a_dead_cache_and_a_refused_tcp() {
        let mut b = machine(BootstrapConfig::default());
        let t0 = Instant::now();
        let (cached, seed) = (a("10.0.0.1:1"), a("192.0.2.1:33033"));
        b.start(t0, vec![cached], vec![seed]).unwrap();
        let _ = drain(&mut b);
        b.handle_timeout(t0 + Duration::from_secs(2));
        let (_, ev) = drain(&mut b);
        let Some(Event::ConnectTcp { attempt, .. }) = ev
            .iter()
            .find(|e| matches!(e, Event::ConnectTcp { .. }))
            .cloned()
        else {
            panic!("no TCP attempt");
        };
        b.handle_tcp_result(t0 + Duration::from_secs(2), attempt, false)
            .unwrap();
        let (tx, _) = drain(&mut b);
        assert_eq!(tx.len(), 1);
        assert_eq!(tx[0].dst, seed, "bootstrap list probed over UDP");
        b.handle_input(
            t0 + Duration::from_secs(2),
            seed,
            &probe_reply(&tx[0].payload).unwrap(),
        )
        .unwrap();
        assert!(b.is_done());
    }

    #[test]
    fn rounds_repeat_after_six_seconds_then_report_everything_tried() {
        let cfg = BootstrapConfig {
            alternative_ports: vec![443, 80],
            ..BootstrapConfig::default()
        };
        let mut b = machine(cfg);
        let t0 = Instant::now();
        b.start(t0, vec![a("10.0.0.1:1")], vec![a("192.0.2.1:443")])
            .unwrap();
        let (events, _) = run_silent(&mut b, t0);
        let Some(Event::Failed(report)) = events.last() else {
            panic!("no failure: {events:?}");
        };
        assert_eq!(report.rounds, 3);
        // 3 cached addresses (port 1, 443, 80) + 2 bootstrap (443, 80), each over UDP and TCP.
        assert_eq!(report.tried.len(), 10);
        assert!(
            report
                .tried
                .iter()
                .all(|t| t.attempts == 3 && t.last_failure == Failure::Timeout)
        );
        let text = report.to_string();
        assert!(text.starts_with("network unreachable: no super node answered in 3 rounds; tried 10.0.0.1:1 over Udp (cached, 3x, timeout)"), "{text}");
        assert!(text.contains("192.0.2.1:80 over Tcp (bootstrap, 3x, timeout)"));
        assert!(events.iter().any(|e| matches!(e, Event::CancelTcp { .. })));
        assert!(b.is_done());
    }

    #[test]
    fn the_pause_between_rounds_is_the_configured_delay() {
        let mut b = machine(BootstrapConfig::default());
        let t0 = Instant::now();
        b.start(t0, vec![a("10.0.0.1:1")], vec![]).unwrap();
        b.handle_timeout(t0 + Duration::from_secs(2)); // UDP phase over
        b.handle_timeout(t0 + Duration::from_secs(7)); // TCP phase over
        assert_eq!(b.poll_timeout(), Some(t0 + Duration::from_secs(13)));
        b.handle_timeout(t0 + Duration::from_secs(12));
        assert_eq!(b.round(), 1);
        let _ = drain(&mut b);
        b.handle_timeout(t0 + Duration::from_secs(13));
        assert_eq!(b.round(), 2);
        assert_eq!(drain(&mut b).0.len(), 1, "round 2 probes again");
    }

    #[test]
    fn nothing_to_try_fails_clearly_after_the_rounds() {
        let mut b = machine(BootstrapConfig::default());
        let t0 = Instant::now();
        b.start(t0, vec![], vec![]).unwrap();
        assert_eq!(b.poll_timeout(), Some(t0 + Duration::from_secs(6)));
        let (events, end) = run_silent(&mut b, t0);
        assert_eq!(end, t0 + Duration::from_secs(12));
        let Some(Event::Failed(r)) = events.last() else {
            panic!()
        };
        assert!(
            r.to_string()
                .contains("no host cache entries and no bootstrap nodes")
        );
        assert!(b.start(t0, vec![], vec![]).is_err());
    }

    #[test]
    fn foreign_datagrams_and_bad_configs_are_refused() {
        let mut b = machine(BootstrapConfig::default());
        let t0 = Instant::now();
        b.start(t0, vec![a("10.0.0.1:1")], vec![]).unwrap();
        assert!(matches!(
            b.handle_input(t0, a("10.0.0.1:1"), b"\x00\x01"),
            Err(Error::Decode(_))
        ));
        let close = Datagram::new(DatagramHeader::new(DatagramType::Close, 0, 0), Bytes::new())
            .to_bytes()
            .unwrap();
        assert_eq!(
            b.handle_input(t0, a("10.0.0.1:1"), &close).unwrap_err(),
            Error::Protocol(Violation::UnexpectedType(7))
        );
        assert_eq!(probe_reply(&close), None);
        for f in [
            |c: &mut BootstrapConfig| c.parallel = 0,
            |c: &mut BootstrapConfig| c.max_rounds = 0,
            |c: &mut BootstrapConfig| c.probe_timeout = Duration::ZERO,
            |c: &mut BootstrapConfig| c.alternative_ports = vec![0],
        ] {
            let mut cfg = BootstrapConfig::default();
            f(&mut cfg);
            assert!(Bootstrap::new(cfg, Box::new(SeededEntropy::new(1))).is_err());
        }
    }
}
