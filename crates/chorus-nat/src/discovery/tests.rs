//! Discovery against the Chorus server core through a simulated NAT, on a virtual
//! clock: no sockets, no sleeps, a bounded number of steps.
#![allow(clippy::field_reassign_with_default)]

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use chorus_framing::SeededEntropy;

use super::*;
use crate::server::{Server, ServerConfig};

const LOCAL: &str = "10.0.0.2:5000";
const PUBLIC_IP: &str = "198.51.100.1";
const SERVER: &str = "192.0.2.1:3478";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A NAT with RFC 4787 mapping and filtering behaviours, or none at all.
struct Nat {
    translate: bool,
    mapping: Behaviour,
    filtering: Behaviour,
    /// Mapping key -> external port.
    ports: HashMap<Option<SocketAddr>, u16>,
    /// External port -> destinations sent to from it.
    sent: HashMap<u16, HashSet<SocketAddr>>,
    blocked: bool,
    /// Whether a datagram to the NAT's own public address loops back in.
    hairpin: bool,
}

impl Nat {
    fn new(translate: bool, mapping: Behaviour, filtering: Behaviour) -> Self {
        Self {
            translate,
            mapping,
            filtering,
            ports: HashMap::new(),
            sent: HashMap::new(),
            blocked: false,
            hairpin: false,
        }
    }

    fn outbound(&mut self, dst: SocketAddr) -> SocketAddr {
        let key = match self.mapping {
            Behaviour::AddressDependent => Some(SocketAddr::new(dst.ip(), 0)),
            Behaviour::AddressAndPortDependent => Some(dst),
            _ => None,
        };
        let (local, n) = (addr(LOCAL), self.ports.len() as u16);
        let port = if self.translate {
            *self.ports.entry(key).or_insert(40_000 + n)
        } else {
            local.port()
        };
        self.sent.entry(port).or_default().insert(dst);
        if self.translate {
            SocketAddr::new(PUBLIC_IP.parse::<IpAddr>().unwrap(), port)
        } else {
            local
        }
    }

    fn inbound(&self, from: SocketAddr, to: SocketAddr) -> bool {
        let Some(sent) = self.sent.get(&to.port()) else {
            return false;
        };
        match self.filtering {
            Behaviour::AddressDependent => sent.iter().any(|d| d.ip() == from.ip()),
            Behaviour::AddressAndPortDependent => sent.contains(&from),
            _ => true,
        }
    }
}

fn run(nat: &mut Nat, rfc5780: bool) -> Report {
    let mut cfg = ServerConfig::default();
    cfg.primary = addr(SERVER);
    if rfc5780 {
        cfg.alternate_ip = Some("192.0.2.2".parse().unwrap());
        cfg.alternate_port = Some(3479);
    }
    let mut server = Server::new(cfg).unwrap();
    let mut now = Instant::now();
    let local = addr(LOCAL);
    let mut d = Discovery::new(
        DiscoveryConfig::default(),
        now,
        local,
        addr(SERVER),
        Box::new(SeededEntropy::new(9)),
    )
    .unwrap();
    for _ in 0..1000 {
        while let Some(t) = d.poll_transmit() {
            if nat.blocked {
                continue;
            }
            let public = nat.outbound(t.dst);
            if t.dst.ip() == PUBLIC_IP.parse::<IpAddr>().unwrap() || t.dst == local {
                // To ourselves: only a hairpinning NAT (or no NAT) loops it back.
                if nat.hairpin || !nat.translate {
                    assert!(d.accepts(&t.payload), "its own request, looped back");
                    d.handle_input(now, public, &t.payload).unwrap();
                }
                continue;
            }
            let _ = server.handle_input(now, t.dst, public, Transport::Udp, &t.payload);
            while let Some(r) = server.poll_transmit() {
                let from = r.src.unwrap();
                if nat.inbound(from, r.dst) {
                    assert!(d.accepts(&r.payload), "a response to the current test");
                    d.handle_input(now, from, &r.payload).unwrap();
                }
            }
        }
        if let Some(report) = d.poll_event() {
            assert_eq!(d.poll_event(), None, "reported once");
            assert_eq!(d.report(), Some(report));
            return report;
        }
        assert_eq!(d.report(), None);
        now = d.poll_timeout().expect("a pending test");
        d.handle_timeout(now);
    }
    panic!("discovery did not finish");
}

#[test]
fn classifies_every_classic_nat_type_through_a_simulated_nat() {
    use Behaviour::*;
    let cases = [
        (
            true,
            EndpointIndependent,
            EndpointIndependent,
            Classic::FullCone,
        ),
        (
            true,
            EndpointIndependent,
            AddressDependent,
            Classic::RestrictedCone,
        ),
        (
            true,
            EndpointIndependent,
            AddressAndPortDependent,
            Classic::PortRestrictedCone,
        ),
        (
            true,
            AddressDependent,
            AddressAndPortDependent,
            Classic::Symmetric,
        ),
        (
            true,
            AddressAndPortDependent,
            AddressAndPortDependent,
            Classic::Symmetric,
        ),
        (
            false,
            EndpointIndependent,
            EndpointIndependent,
            Classic::OpenInternet,
        ),
        (
            false,
            EndpointIndependent,
            AddressAndPortDependent,
            Classic::SymmetricUdpFirewall,
        ),
    ];
    for (translate, mapping, filtering, classic) in cases {
        let mut nat = Nat::new(translate, mapping, filtering);
        let report = run(&mut nat, true);
        assert_eq!(
            report.classic, classic,
            "{mapping:?}/{filtering:?}: {report:?}"
        );
        assert_eq!(report.mapping, mapping, "{report:?}");
        assert_eq!(report.filtering, filtering, "{report:?}");
        assert_eq!(report.behind_nat, Some(translate));
        assert_eq!(
            report.super_node_eligible(),
            classic == Classic::OpenInternet
        );
    }
}

#[test]
fn reports_udp_blocked_when_nothing_answers() {
    let mut nat = Nat::new(
        true,
        Behaviour::EndpointIndependent,
        Behaviour::EndpointIndependent,
    );
    nat.blocked = true;
    let report = run(&mut nat, true);
    assert_eq!(report.classic, Classic::UdpBlocked);
    assert_eq!(report.mapped, None);
}

#[test]
fn a_server_without_rfc5780_yields_only_the_mapped_address() {
    let mut nat = Nat::new(
        true,
        Behaviour::EndpointIndependent,
        Behaviour::EndpointIndependent,
    );
    let report = run(&mut nat, false);
    assert_eq!(report.classic, Classic::Unknown);
    assert_eq!(report.mapped, Some(addr("198.51.100.1:40000")));
    assert_eq!(report.mapping, Behaviour::Unknown);
}

#[test]
fn mismatched_families_are_refused() {
    let r = Discovery::new(
        DiscoveryConfig::default(),
        Instant::now(),
        addr("[::1]:1"),
        addr(SERVER),
        Box::new(SeededEntropy::new(1)),
    );
    assert!(r.is_err());
}

#[test]
fn detects_hairpinning_only_behind_a_nat_that_loops_back() {
    for hairpin in [true, false] {
        let mut nat = Nat::new(
            true,
            Behaviour::EndpointIndependent,
            Behaviour::AddressAndPortDependent,
        );
        nat.hairpin = hairpin;
        let report = run(&mut nat, true);
        assert_eq!(report.classic, Classic::PortRestrictedCone);
        assert_eq!(report.hairpinning, Some(hairpin), "{report:?}");
    }
    // Without a NAT there is nothing to hairpin.
    let mut open = Nat::new(
        false,
        Behaviour::EndpointIndependent,
        Behaviour::EndpointIndependent,
    );
    assert_eq!(run(&mut open, true).hairpinning, None);
}

/// A NAT whose UDP bindings expire after `idle` without traffic (either direction
/// refreshes, as Linux conntrack does); a new binding gets a new port.
struct ExpiringNat {
    idle: std::time::Duration,
    /// Local address -> (public port, last activity).
    bindings: HashMap<SocketAddr, (u16, Instant)>,
    next_port: u16,
}

impl ExpiringNat {
    fn outbound(&mut self, now: Instant, local: SocketAddr) -> SocketAddr {
        let idle = self.idle;
        let fresh = self.next_port;
        let entry = self.bindings.entry(local).or_insert((fresh, now));
        if now.duration_since(entry.1) >= idle {
            *entry = (fresh, now);
        }
        entry.1 = now;
        if entry.0 == fresh {
            self.next_port += 1;
        }
        SocketAddr::new(PUBLIC_IP.parse().unwrap(), entry.0)
    }

    fn inbound(&mut self, now: Instant, public: SocketAddr) -> Option<SocketAddr> {
        let idle = self.idle;
        let (local, binding) = self
            .bindings
            .iter_mut()
            .find(|(_, (port, last))| *port == public.port() && now.duration_since(*last) < idle)?;
        binding.1 = now;
        Some(*local)
    }
}

fn probe_lifetime(idle_secs: u64, config: LifetimeConfig) -> (Lifetime, std::time::Duration) {
    let mut cfg = ServerConfig::default();
    cfg.primary = addr(SERVER);
    cfg.alternate_ip = Some("192.0.2.2".parse().unwrap());
    cfg.alternate_port = Some(3479);
    let mut server = Server::new(cfg).unwrap();
    let mut nat = ExpiringNat {
        idle: std::time::Duration::from_secs(idle_secs),
        bindings: HashMap::new(),
        next_port: 40_000,
    };
    let start = Instant::now();
    let mut now = start;
    let (x, y) = (addr("10.0.0.2:5000"), addr("10.0.0.2:5001"));
    let mut p = LifetimeProbe::new(
        config,
        now,
        (x, y),
        addr(SERVER),
        Box::new(SeededEntropy::new(3)),
    )
    .unwrap();
    for _ in 0..10_000 {
        while let Some(t) = p.poll_transmit() {
            let public = nat.outbound(now, t.src.unwrap());
            let _ = server.handle_input(now, t.dst, public, Transport::Udp, &t.payload);
            while let Some(r) = server.poll_transmit() {
                if nat.inbound(now, r.dst).is_some() {
                    p.handle_input(now, r.src.unwrap(), &r.payload).unwrap();
                }
            }
        }
        if let Some(result) = p.result() {
            return (result, now - start);
        }
        now = p.poll_timeout().expect("a pending step");
        p.handle_timeout(now);
    }
    panic!("lifetime probe did not finish");
}

#[test]
fn binding_lifetime_is_bracketed_to_the_configured_resolution() {
    use std::time::Duration;
    for idle in [7, 30, 61] {
        let (result, took) = probe_lifetime(idle, LifetimeConfig::default());
        let (lo, hi) = (result.at_least, result.expired_by.expect("expired"));
        assert!(!result.server_lost);
        assert!(
            lo < Duration::from_secs(idle) && Duration::from_secs(idle) <= hi,
            "{idle}: {result:?}"
        );
        assert!(hi - lo <= Duration::from_secs(5), "{result:?}");
        assert!(took < Duration::from_secs(idle * 8 + 60), "{took:?}");
    }
    // A binding that outlives the maximum.
    let mut config = LifetimeConfig::default();
    config.max = Duration::from_secs(20);
    let (result, _) = probe_lifetime(1000, config);
    assert_eq!(result.expired_by, None);
    assert_eq!(result.at_least, Duration::from_secs(20));
}

#[test]
fn lifetime_probe_refuses_bad_configuration() {
    let now = Instant::now();
    let e = || Box::new(SeededEntropy::new(1));
    let (x, y) = (addr("10.0.0.2:5000"), addr("10.0.0.2:5001"));
    let mut zero = LifetimeConfig::default();
    zero.first = std::time::Duration::ZERO;
    assert!(LifetimeProbe::new(zero, now, (x, y), addr(SERVER), e()).is_err());
    assert!(LifetimeProbe::new(LifetimeConfig::default(), now, (x, x), addr(SERVER), e()).is_err());
    let v6 = addr("[::1]:1");
    assert!(
        LifetimeProbe::new(LifetimeConfig::default(), now, (x, v6), addr(SERVER), e()).is_err()
    );
}

#[test]
fn lifetime_probe_reports_a_lost_server() {
    let now = Instant::now();
    let (x, y) = (addr("10.0.0.2:5000"), addr("10.0.0.2:5001"));
    let mut p = LifetimeProbe::new(
        LifetimeConfig::default(),
        now,
        (x, y),
        addr(SERVER),
        Box::new(SeededEntropy::new(1)),
    )
    .unwrap();
    let first = p.poll_transmit().unwrap();
    assert_eq!(first.src, Some(x));
    for _ in 0..10 {
        let Some(t) = p.poll_timeout() else { break };
        p.handle_timeout(t);
        while p.poll_transmit().is_some() {}
    }
    let result = p.result().expect("gave up");
    assert!(result.server_lost);
    assert_eq!(result.at_least, std::time::Duration::ZERO);
}
