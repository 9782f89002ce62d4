//! ICE agents in a simulated network: two agents, optional NATs in front of each, a
//! STUN server and a relay, on a virtual clock that jumps to the next event. No
//! sockets, no sleeps, a bounded number of steps.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chorus_framing::{Entropy, SeededEntropy};
use proptest::prelude::*;

use super::*;
use crate::error::DecodeError;
use crate::stun::{Attribute, Class, Key, Limits, Message, Method, TransactionId};

pub(super) fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(super) const STUN: &str = "198.51.100.1:3478";
pub(super) const LATENCY: Duration = Duration::from_millis(10);

/// A NAT with endpoint-independent mapping (a "port-restricted cone") or
/// address-and-port-dependent mapping ("symmetric"); filtering is always
/// address-and-port dependent (RFC 4787 §4, §5).
#[derive(Debug)]
pub(super) struct Nat {
    pub(super) public: IpAddr,
    pub(super) symmetric: bool,
    /// Address-and-port-dependent filtering; else address-dependent.
    pub(super) port_filter: bool,
    pub(super) next_port: u16,
    pub(super) map: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    pub(super) back: HashMap<u16, SocketAddr>,
    pub(super) allowed: HashSet<(u16, SocketAddr)>,
}

impl Nat {
    pub(super) fn new(public: &str, symmetric: bool) -> Self {
        Self {
            public: public.parse().unwrap(),
            symmetric,
            port_filter: true,
            next_port: 40_000,
            map: HashMap::new(),
            back: HashMap::new(),
            allowed: HashSet::new(),
        }
    }
    pub(super) fn outbound(&mut self, src: SocketAddr, dst: SocketAddr) -> SocketAddr {
        let key = (src, self.symmetric.then_some(dst));
        let port = *self.map.entry(key).or_insert_with(|| {
            self.next_port += 1;
            self.next_port
        });
        self.back.insert(port, src);
        self.allowed.insert((port, dst));
        SocketAddr::new(self.public, port)
    }
    pub(super) fn inbound(&self, port: u16, from: SocketAddr) -> Option<SocketAddr> {
        let allowed = if self.port_filter {
            self.allowed.contains(&(port, from))
        } else {
            self.allowed
                .iter()
                .any(|(p, a)| *p == port && a.ip() == from.ip())
        };
        allowed.then(|| self.back.get(&port).copied()).flatten()
    }
}

pub(super) struct Side {
    pub(super) agent: Agent,
    pub(super) nat: Option<Nat>,
    pub(super) relay: Option<SocketAddr>,
    pub(super) events: Vec<Event>,
}

pub(super) struct Packet {
    pub(super) from_side: usize,
    pub(super) src: SocketAddr,
    pub(super) dst: SocketAddr,
    pub(super) payload: Bytes,
}

/// Drops a packet sent by side `.0` at time offset `.1`, if it returns true.
pub(super) type DropRule = Box<dyn FnMut(usize, Duration) -> bool>;

pub(super) struct Sim {
    pub(super) t0: Instant,
    pub(super) now: Instant,
    pub(super) sides: [Side; 2],
    pub(super) queue: BTreeMap<(Instant, u64), Packet>,
    pub(super) seq: u64,
    pub(super) drop: DropRule,
    /// Every datagram sent by an agent: when, by which side, to where.
    pub(super) sent: Vec<(Instant, usize, SocketAddr, Bytes)>,
}

pub(super) fn config(role: Role) -> IceConfig {
    IceConfig {
        role,
        stun_server: Some(sa(STUN)),
        ..IceConfig::default()
    }
}

impl Sim {
    pub(super) fn new(a: Agent, b: Agent) -> Self {
        let t0 = Instant::now();
        let side = |agent| Side {
            agent,
            nat: None,
            relay: None,
            events: Vec::new(),
        };
        Self {
            t0,
            now: t0,
            sides: [side(a), side(b)],
            queue: BTreeMap::new(),
            seq: 0,
            drop: Box::new(|_, _| false),
            sent: Vec::new(),
        }
    }

    pub(super) fn pair(ca: IceConfig, cb: IceConfig) -> Self {
        let a = Agent::new(ca, Box::new(SeededEntropy::new(11))).unwrap();
        let b = Agent::new(cb, Box::new(SeededEntropy::new(22))).unwrap();
        Self::new(a, b)
    }

    /// Gathering on both sides, then each side's description goes to the other.
    pub(super) fn exchange(&mut self) {
        let now = self.now;
        for s in &mut self.sides {
            s.agent.start_gathering(now).unwrap();
        }
        // Let gathering finish so srflx candidates are part of the descriptions.
        self.run_until(
            |sim| sim.sides.iter().all(|s| s.agent.gathering_reported),
            200,
        );
        let (da, db) = (
            self.sides[0].agent.local_description(),
            self.sides[1].agent.local_description(),
        );
        self.sides[0]
            .agent
            .apply_remote_description(now, &db)
            .unwrap();
        self.sides[1]
            .agent
            .apply_remote_description(now, &da)
            .unwrap();
    }

    pub(super) fn send(&mut self, from_side: usize, t: Transmit) {
        let side = &mut self.sides[from_side];
        let src = t.src.expect("ICE transmits name their source");
        let src = if side.relay == Some(src) {
            src // leaves from the relay's public address
        } else if let Some(nat) = &mut side.nat {
            nat.outbound(src, t.dst)
        } else {
            src
        };
        self.sent
            .push((self.now, from_side, t.dst, t.payload.clone()));
        if (self.drop)(from_side, self.now - self.t0) {
            return;
        }
        self.seq += 1;
        self.queue.insert(
            (self.now + LATENCY, self.seq),
            Packet {
                from_side,
                src,
                dst: t.dst,
                payload: t.payload,
            },
        );
    }

    pub(super) fn deliver(&mut self, p: Packet) {
        if p.dst == sa(STUN) {
            // The STUN server: a Binding success naming the packet's public source.
            let req = Message::decode(&p.payload, &Limits::default()).unwrap();
            let mut m = Message::new(Class::Success, Method::BINDING, req.transaction_id);
            m.attributes.push(Attribute::XorMappedAddress(p.src));
            let mut out = BytesMut::new();
            m.encode(None, &mut out).unwrap();
            self.seq += 1;
            self.queue.insert(
                (self.now + LATENCY, self.seq),
                Packet {
                    from_side: 9,
                    src: p.dst,
                    dst: p.src,
                    payload: out.freeze(),
                },
            );
            return;
        }
        for s in &mut self.sides {
            let local = if s.relay == Some(p.dst) {
                Some(p.dst)
            } else if let Some(nat) = &s.nat {
                (nat.public == p.dst.ip())
                    .then(|| nat.inbound(p.dst.port(), p.src))
                    .flatten()
            } else {
                s.agent
                    .local_candidates()
                    .iter()
                    .any(|c| c.kind == CandidateKind::Host && c.addr == p.dst)
                    .then_some(p.dst)
            };
            if let Some(local) = local {
                let _ = s.agent.handle_input(self.now, local, p.src, &p.payload);
                return;
            }
        }
        let _ = p.from_side;
    }

    pub(super) fn drain(&mut self) {
        for i in 0..2 {
            while let Some(t) = self.sides[i].agent.poll_transmit() {
                self.send(i, t);
            }
            while let Some(e) = self.sides[i].agent.poll_event() {
                self.sides[i].events.push(e);
            }
        }
    }

    /// Runs until `done` or `max_steps`; returns whether `done` held.
    pub(super) fn run_until(
        &mut self,
        mut done: impl FnMut(&Self) -> bool,
        max_steps: usize,
    ) -> bool {
        for _ in 0..max_steps {
            self.drain();
            if done(self) {
                return true;
            }
            let next_packet = self.queue.keys().next().map(|k| k.0);
            let next = [
                next_packet,
                self.sides[0].agent.poll_timeout(),
                self.sides[1].agent.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else { return done(self) };
            self.now = self.now.max(next);
            while let Some(entry) = self.queue.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let p = entry.remove();
                self.deliver(p);
            }
            let now = self.now;
            for s in &mut self.sides {
                s.agent.handle_timeout(now);
            }
        }
        self.drain();
        done(self)
    }

    pub(super) fn connected(&self, i: usize) -> Option<(Candidate, Candidate, PathKind)> {
        self.sides[i].events.iter().find_map(|e| match e {
            Event::Connected {
                local,
                remote,
                kind,
            } => Some((local.clone(), remote.clone(), *kind)),
            _ => None,
        })
    }

    pub(super) fn failed(&self, i: usize) -> Option<FailReason> {
        self.sides[i].events.iter().find_map(|e| match e {
            Event::Failed(r) => Some(*r),
            _ => None,
        })
    }

    pub(super) fn both_connected(&self) -> bool {
        self.connected(0).is_some() && self.connected(1).is_some()
    }

    pub(super) fn connect(&mut self) -> (PathKind, PathKind) {
        self.exchange();
        assert!(
            self.run_until(Self::both_connected, 5000),
            "not connected: {:?} / {:?}",
            self.sides[0].events,
            self.sides[1].events
        );
        (self.connected(0).unwrap().2, self.connected(1).unwrap().2)
    }

    /// Data both ways over the selected pair arrives as `Event::Data`.
    pub(super) fn assert_data_flows(&mut self) {
        for (from, to) in [(0, 1), (1, 0)] {
            let msg = Bytes::from(vec![0x80, 0x60, from as u8, to as u8]);
            let t = self.sides[from].agent.send(msg.clone()).unwrap();
            self.send(from, t);
            let got = self.run_until(
                |sim| {
                    sim.sides[to]
                        .events
                        .iter()
                        .any(|e| *e == Event::Data(msg.clone()))
                },
                100,
            );
            assert!(got, "data {from}->{to} did not arrive");
        }
    }
}

pub(super) fn host(sim: &mut Sim, i: usize, addr: &str) {
    sim.sides[i].agent.add_host_candidate(sa(addr)).unwrap();
}

pub(super) fn natted(sim: &mut Sim, i: usize, private: &str, public: &str, symmetric: bool) {
    host(sim, i, private);
    sim.sides[i].nat = Some(Nat::new(public, symmetric));
}

#[test]
fn invalid_configurations_are_refused() {
    let bad = [
        IceConfig {
            ta: Duration::from_millis(1),
            ..IceConfig::default()
        },
        IceConfig {
            max_pairs: 0,
            ..IceConfig::default()
        },
        IceConfig {
            check_max_sends: 0,
            ..IceConfig::default()
        },
        IceConfig {
            consent_timeout: Duration::from_secs(1),
            ..IceConfig::default()
        },
        IceConfig {
            max_queue: 1,
            ..IceConfig::default()
        },
    ];
    for c in bad {
        assert!(matches!(
            Agent::new(c, Box::new(SeededEntropy::new(1))),
            Err(Error::Usage(UsageError::InvalidConfig(_)))
        ));
    }
}

#[test]
fn public_hosts_connect_directly_and_exchange_data() {
    let mut sim = Sim::pair(config(Role::Controlling), config(Role::Controlled));
    host(&mut sim, 0, "192.0.2.1:5000");
    host(&mut sim, 1, "192.0.2.2:6000");
    assert_eq!(sim.connect(), (PathKind::Direct, PathKind::Direct));
    let (al, ar, _) = sim.connected(0).unwrap();
    let (bl, br, _) = sim.connected(1).unwrap();
    assert_eq!((al.addr, ar.addr), (br.addr, bl.addr));
    assert_eq!(sim.sides[0].agent.state(), State::Connected);
    sim.assert_data_flows();
}

#[test]
fn ipv6_hosts_connect_directly() {
    let mut sim = Sim::pair(config(Role::Controlling), config(Role::Controlled));
    host(&mut sim, 0, "[2001:db8::1]:5000");
    host(&mut sim, 1, "[2001:db8::2]:6000");
    assert_eq!(sim.connect(), (PathKind::Direct, PathKind::Direct));
}

#[test]
fn cone_nats_are_hole_punched() {
    let mut sim = Sim::pair(config(Role::Controlling), config(Role::Controlled));
    natted(&mut sim, 0, "10.0.0.1:5000", "203.0.113.1", false);
    natted(&mut sim, 1, "10.0.1.1:6000", "203.0.113.2", false);
    assert_eq!(
        sim.connect(),
        (PathKind::HolePunched, PathKind::HolePunched)
    );
    // Each side learned its server-reflexive candidate and signalled it.
    for s in &sim.sides {
        assert!(s.events.iter().any(
            |e| matches!(e, Event::LocalCandidate(c) if c.kind == CandidateKind::ServerReflexive)
        ));
    }
    let (_, remote, _) = sim.connected(0).unwrap();
    assert_eq!(remote.addr.ip(), "203.0.113.2".parse::<IpAddr>().unwrap());
    sim.assert_data_flows();
}

#[test]
fn restricted_cone_nat_against_symmetric_nat_is_hole_punched_with_peer_reflexive_candidates() {
    let mut sim = Sim::pair(config(Role::Controlling), config(Role::Controlled));
    natted(&mut sim, 0, "10.0.0.1:5000", "203.0.113.1", false);
    // Address-dependent filtering lets the symmetric side's new port in.
    sim.sides[0].nat.as_mut().unwrap().port_filter = false;
    natted(&mut sim, 1, "10.0.1.1:6000", "203.0.113.2", true);
    assert_eq!(
        sim.connect(),
        (PathKind::HolePunched, PathKind::HolePunched)
    );
    // The symmetric side's address toward A is not its srflx: A learned it as prflx.
    let (_, remote, _) = sim.connected(0).unwrap();
    assert_eq!(remote.kind, CandidateKind::PeerReflexive);
    sim.assert_data_flows();
}

pub(super) fn relayed_sim(via_tcp: bool) -> Sim {
    let mut sim = Sim::pair(config(Role::Controlling), config(Role::Controlled));
    natted(&mut sim, 0, "10.0.0.1:5000", "203.0.113.1", true);
    natted(&mut sim, 1, "10.0.1.1:6000", "203.0.113.2", true);
    let relayed = sa("198.51.100.2:50000");
    sim.sides[0]
        .agent
        .add_relayed_candidate(relayed, sa("203.0.113.1:1"), via_tcp)
        .unwrap();
    sim.sides[0].relay = Some(relayed);
    sim
}

#[test]
fn symmetric_nats_fall_back_to_the_relay() {
    let mut sim = relayed_sim(false);
    assert_eq!(sim.connect(), (PathKind::Relayed, PathKind::Relayed));
    let (local, _, _) = sim.connected(0).unwrap();
    assert_eq!(local.kind, CandidateKind::Relayed);
    // A's data leaves from the relayed address: the driver sends it through TURN.
    let t = sim.sides[0]
        .agent
        .send(Bytes::from_static(&[0x80]))
        .unwrap();
    assert_eq!(t.src, Some(sa("198.51.100.2:50000")));
    sim.assert_data_flows();
}

#[test]
fn a_relay_over_tcp_is_reported_on_both_sides() {
    let mut sim = relayed_sim(true);
    assert_eq!(sim.connect(), (PathKind::RelayedTcp, PathKind::RelayedTcp));
}

#[test]
fn hole_punching_survives_loss() {
    let mut entropy = SeededEntropy::new(99);
    let mut sim = Sim::pair(config(Role::Controlling), config(Role::Controlled));
    natted(&mut sim, 0, "10.0.0.1:5000", "203.0.113.1", false);
    natted(&mut sim, 1, "10.0.1.1:6000", "203.0.113.2", false);
    // 25% loss each way.
    sim.drop = Box::new(move |_, _| entropy.u32().unwrap() & 3 == 0);
    assert_eq!(
        sim.connect(),
        (PathKind::HolePunched, PathKind::HolePunched)
    );
}

/// A check request from `peer` (whose ufrag is `theirs`) to an agent with `ours`.
pub(super) fn check_request(
    ours: &str,
    theirs: &str,
    pwd: &str,
    extra: &[Attribute<'_>],
) -> Vec<u8> {
    let user = format!("{ours}:{theirs}");
    let mut m = Message::new(Class::Request, Method::BINDING, TransactionId::new([3; 12]));
    m.attributes.push(Attribute::Username(&user));
    m.attributes.push(Attribute::Priority(7));
    m.attributes.extend_from_slice(extra);
    m.message_integrity = true;
    m.fingerprint = true;
    let mut out = BytesMut::new();
    m.encode(Some(&Key::short_term(pwd)), &mut out).unwrap();
    out.to_vec()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_candidate_parser_never_panics_and_round_trips(
        data in proptest::collection::vec(any::<u8>(), 0..600)
    ) {
        super::fuzz::ice_candidate(&data);
    }

    #[test]
    fn mutated_candidate_lines_never_panic_and_round_trip(
        pos in 0usize..120, byte in any::<u8>(), cut in 0usize..130
    ) {
        let mut line = b"a=candidate:2 1 UDP 1694498815 192.0.2.3 45664 typ srflx raddr 10.0.1.1 rport 8998 relay-transport tcp\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\n".to_vec();
        if let Some(b) = line.get_mut(pos) { *b = byte; }
        line.truncate(cut.max(1));
        super::fuzz::ice_candidate(&line);
    }

    #[test]
    fn arbitrary_datagrams_never_panic_the_agent(
        data in proptest::collection::vec(any::<u8>(), 0..300), stun in any::<bool>()
    ) {
        let mut a = Agent::new(IceConfig::default(), Box::new(SeededEntropy::new(1))).unwrap();
        let local = a.add_host_candidate(sa("192.0.2.1:5000")).unwrap().addr;
        let mut data = data;
        if stun && data.len() >= 20 {
            // A plausible STUN header so decoding goes deeper.
            data[0] &= 0x01;
            data[4..8].copy_from_slice(&crate::stun::MAGIC_COOKIE.to_be_bytes());
            let len = (data.len() - 20) as u16 & !3;
            data[2..4].copy_from_slice(&len.to_be_bytes());
            data.truncate(20 + usize::from(len));
        }
        let _ = a.handle_input(Instant::now(), local, sa("192.0.2.2:1"), &data);
        a.handle_timeout(Instant::now());
        while a.poll_transmit().is_some() {}
    }
}

#[test]
fn descriptions_round_trip_and_parse_rfc_8839_examples() {
    let text = "a=ice-ufrag:8hhY\r\na=ice-pwd:asd88fgpdd777uzjYhagZg\r\n\
        a=candidate:1 1 UDP 2130706431 10.0.1.1 8998 typ host\r\n\
        a=candidate:2 1 UDP 1694498815 192.0.2.3 45664 typ srflx raddr 10.0.1.1 rport 8998\r\n\
        a=candidate:3 1 TCP 1 192.0.2.3 9 typ host tcptype active\r\n\
        a=candidate:4 2 UDP 1 192.0.2.3 9 typ host\r\n\
        a=candidate:5 1 UDP 10 2001:db8::7 3478 typ relay raddr 192.0.2.3 rport 1 relay-transport tcp\r\n\
        a=end-of-candidates\r\n";
    let d = Description::parse(text, 8).unwrap();
    assert_eq!(d.ufrag.as_deref(), Some("8hhY"));
    // TCP and component 2 are skipped.
    assert_eq!(d.candidates.len(), 3);
    assert_eq!(d.candidates[1].kind, CandidateKind::ServerReflexive);
    assert_eq!(d.candidates[1].related, Some(sa("10.0.1.1:8998")));
    assert!(d.candidates[2].via_tcp && d.candidates[2].addr.is_ipv6());
    assert!(d.end_of_candidates);
    assert_eq!(Description::parse(&d.encode(), 8).unwrap(), d);
    assert!(!format!("{d:?}").contains("asd88fgpdd777uzjYhagZg"));
    assert_eq!(
        Description::parse(text, 2),
        Err(Limit::Candidates(2).into())
    );
}

#[test]
fn hostile_candidate_lines_are_rejected() {
    let bad = [
        "candidate:1 1 UDP 1 host.example 1 typ host",
        "candidate:1 1 UDP 1 abcd.local 1 typ host",
        "candidate:1 1 UDP 0 192.0.2.1 1 typ host",
        "candidate:1 1 UDP 4294967296 192.0.2.1 1 typ host",
        "candidate:1 1 UDP 1 192.0.2.1 65536 typ host",
        "candidate:1 0 UDP 1 192.0.2.1 1 typ host",
        "candidate:1 1 UDP 1 192.0.2.1 1 typ bogus",
        "candidate:1 1 UDP 1 192.0.2.1 1 host",
        "candidate:1 1 UDP 1 192.0.2.1 1 typ host raddr 1.2.3.4",
        "candidate:1 1 UDP 1 192.0.2.1 1 typ host  raddr 1.2.3.4 rport 1",
        "candidate:1 1 UDP 1 192.0.2.1 1 typ host x",
        "candidate:ä 1 UDP 1 192.0.2.1 1 typ host",
        "candidate:123456789012345678901234567890123 1 UDP 1 192.0.2.1 1 typ host",
        "candidate:1 1 UDP 1 192.0.2.1 +1 typ host",
        "candidate:1 1 UDP 1 192.0.2.1 1 typ host a 1 b 2 c 3 d 4 e 5 f 6 g 7 h 8 i 9",
        "candidate:1 1 UDP 1 fe80::1%eth0 1 typ host",
    ];
    for line in bad {
        assert!(
            matches!(Candidate::parse(line), Err(DecodeError::BadCandidate(_))),
            "{line}"
        );
    }
    let long = format!(
        "candidate:1 1 UDP 1 192.0.2.1 1 typ host{}",
        " a b".repeat(200)
    );
    assert!(Candidate::parse(&long).is_err());
    assert!(Description::parse(&"a=x\n".repeat(100_000), 4).is_err());
    assert!(Description::parse("a=ice-pwd:short", 4).is_err());
    // Unusable addresses parse but the agent refuses them.
    let mut a = Agent::new(IceConfig::default(), Box::new(SeededEntropy::new(1))).unwrap();
    for addr in [
        "0.0.0.0 1",
        "224.0.0.1 1",
        "255.255.255.255 1",
        "192.0.2.1 0",
    ] {
        let d = Description::parse(&format!("a=candidate:1 1 UDP 1 {addr} typ host"), 4).unwrap();
        assert!(
            a.apply_remote_description(Instant::now(), &d).is_err(),
            "{addr}"
        );
    }
}

/// Answers every check `agent` sends as a peer with password `pwd` would, from the
/// address it was sent to.
pub(super) fn answer_checks(agent: &mut Agent, now: Instant, pwd: &str) -> usize {
    let mut answered = 0;
    while let Some(t) = agent.poll_transmit() {
        let req = Message::decode(&t.payload, &Limits::default()).unwrap();
        if req.class != Class::Request {
            continue;
        }
        let mut m = Message::new(Class::Success, Method::BINDING, req.transaction_id);
        m.attributes
            .push(Attribute::XorMappedAddress(t.src.unwrap()));
        m.message_integrity = true;
        m.fingerprint = true;
        let mut out = BytesMut::new();
        m.encode(Some(&Key::short_term(pwd)), &mut out).unwrap();
        agent
            .handle_input(now, t.src.unwrap(), t.dst, &out)
            .unwrap();
        answered += 1;
    }
    answered
}

/// NAT types for the property test: none, port-restricted cone, address-restricted
/// cone, symmetric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum NatKind {
    None,
    PortRestricted,
    AddressRestricted,
    Symmetric,
}

pub(super) fn nat_kind() -> impl Strategy<Value = NatKind> {
    prop_oneof![
        Just(NatKind::None),
        Just(NatKind::PortRestricted),
        Just(NatKind::AddressRestricted),
        Just(NatKind::Symmetric),
    ]
}

/// Whether two NATs can be hole punched without port prediction.
pub(super) fn traversable(a: NatKind, b: NatKind) -> bool {
    use NatKind::*;
    match (a, b) {
        (None, _) | (_, None) => true,
        (Symmetric, Symmetric) => false,
        (Symmetric, PortRestricted) | (PortRestricted, Symmetric) => false,
        _ => true,
    }
}

pub(super) fn place(sim: &mut Sim, i: usize, kind: NatKind) {
    let (private, public) = [
        ("10.0.0.1:5000", "203.0.113.1"),
        ("10.0.1.1:6000", "203.0.113.2"),
    ][i];
    match kind {
        NatKind::None => host(sim, i, &format!("192.0.2.{}:7000", i + 1)),
        NatKind::PortRestricted => natted(sim, i, private, public, false),
        NatKind::AddressRestricted => {
            natted(sim, i, private, public, false);
            sim.sides[i].nat.as_mut().unwrap().port_filter = false;
        }
        NatKind::Symmetric => natted(sim, i, private, public, true),
    }
}

pub(super) fn terminal(sim: &Sim, i: usize) -> bool {
    sim.connected(i).is_some() || sim.failed(i).is_some()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every combination of NATs, with or without a relay, with or without loss: both
    /// agents reach a verdict in bounded time; without loss the verdict is the one the
    /// NAT types predict, and the two selected pairs mirror each other.
    #[test]
    fn every_nat_combination_reaches_the_predicted_verdict(
        na in nat_kind(), nb in nat_kind(), relay in any::<bool>(),
        lossy in any::<bool>(), seed in any::<u64>(),
    ) {
        let a = Agent::new(config(Role::Controlling), Box::new(SeededEntropy::new(seed))).unwrap();
        let b = Agent::new(config(Role::Controlled), Box::new(SeededEntropy::new(!seed))).unwrap();
        let mut sim = Sim::new(a, b);
        place(&mut sim, 0, na);
        place(&mut sim, 1, nb);
        if relay {
            let relayed = sa("198.51.100.2:50000");
            let related = sim.sides[0].agent.local_candidates()[0].addr;
            sim.sides[0].agent.add_relayed_candidate(relayed, related, false).unwrap();
            sim.sides[0].relay = Some(relayed);
        }
        if lossy {
            let mut entropy = SeededEntropy::new(seed ^ 0x5555);
            sim.drop = Box::new(move |_, _| entropy.u32().unwrap() < u32::MAX / 5);
        }
        sim.exchange();
        prop_assert!(sim.run_until(|s| terminal(s, 0) && terminal(s, 1), 20_000));
        prop_assert!(sim.now - sim.t0 <= Duration::from_secs(31));
        if !lossy {
            let expect = traversable(na, nb) || relay;
            prop_assert_eq!(sim.connected(0).is_some(), expect, "{:?}", sim.sides[0].events);
            prop_assert_eq!(sim.connected(1).is_some(), expect, "{:?}", sim.sides[1].events);
            if expect {
                // Let any re-nomination settle, then compare the current selections.
                let t = sim.now;
                sim.run_until(|s| s.now - t > Duration::from_secs(1), 1000);
                let (al, ar, ak) = sim.sides[0].agent.selected().unwrap();
                let (bl, br, bk) = sim.sides[1].agent.selected().unwrap();
                prop_assert_eq!(ar.addr, bl.addr);
                prop_assert_eq!(al.addr, br.addr);
                let relayed = matches!(ak, PathKind::Relayed);
                prop_assert_eq!(relayed, matches!(bk, PathKind::Relayed));
                prop_assert_eq!(relayed, !traversable(na, nb));
            } else {
                prop_assert_eq!(sim.failed(0), Some(FailReason::AllPairsFailed));
            }
        }
    }
}
