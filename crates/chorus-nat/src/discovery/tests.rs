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
            let _ = server.handle_input(now, t.dst, public, Transport::Udp, &t.payload);
            while let Some(r) = server.poll_transmit() {
                let from = r.src.unwrap();
                if nat.inbound(from, r.dst) {
                    d.handle_input(now, from, &r.payload).unwrap();
                }
            }
        }
        if let Some(report) = d.report() {
            return report;
        }
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
