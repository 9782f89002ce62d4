//! chorus-nat's cores driven only through the shared contract
//! (`chorus_framing::DatagramCore`): one generic pump moves datagrams between two
//! cores, routing each by `accepts`, as a driver or a one-port demultiplexer would.
#![allow(clippy::field_reassign_with_default)] // as callers outside the crate must

use std::net::SocketAddr;
use std::time::Instant;

use chorus_framing::{DatagramCore, SeededEntropy};
use chorus_nat::client::Transport;
use chorus_nat::client::{Client, ClientConfig, Event as StunEvent};
use chorus_nat::server::{Server, ServerConfig};
use chorus_nat::turn::client::Event as TurnEvent;
use chorus_nat::turn::server::{Event as RelayEvent, StaticUsers};
use chorus_nat::{TurnClient, TurnClientConfig};
use chorus_nat::{TurnConfig, TurnServer};

/// Moves every queued datagram between `a` (at `a_addr`) and `b` (at `b_addr`) until
/// both are quiet. Each datagram must be for its destination's core: `accepts` says
/// yes and `handle_datagram` takes it. Returns the datagrams moved.
fn pump<A: DatagramCore, B: DatagramCore>(
    now: Instant,
    (a, a_addr): (&mut A, SocketAddr),
    (b, b_addr): (&mut B, SocketAddr),
) -> usize {
    let mut moved = 0;
    for _ in 0..100 {
        let mut round = 0;
        while let Some(t) = a.poll_transmit() {
            assert_eq!(t.dst, b_addr);
            assert!(b.accepts(b_addr, a_addr, &t.payload), "routed to b");
            b.handle_datagram(now, b_addr, a_addr, &t.payload).unwrap();
            round += 1;
        }
        while let Some(t) = b.poll_transmit() {
            assert_eq!(t.dst, a_addr);
            assert!(a.accepts(a_addr, b_addr, &t.payload), "routed to a");
            a.handle_datagram(now, a_addr, b_addr, &t.payload).unwrap();
            round += 1;
        }
        if round == 0 {
            return moved;
        }
        moved += round;
    }
    panic!("the cores never went quiet");
}

fn addrs() -> (SocketAddr, SocketAddr) {
    (
        "198.51.100.7:5000".parse().unwrap(),
        "192.0.2.1:3478".parse().unwrap(),
    )
}

#[test]
fn a_stun_binding_through_the_contract() {
    let (client_addr, server_addr) = addrs();
    let now = Instant::now();
    let mut cfg = ServerConfig::default();
    cfg.primary = server_addr;
    let mut server = Server::new(cfg).unwrap();
    let mut client = Client::new(ClientConfig::default(), Box::new(SeededEntropy::new(1))).unwrap();
    let id = client.start_binding(now, server_addr).unwrap();
    // Nothing is in flight yet that a response could match.
    assert!(!DatagramCore::accepts(
        &client,
        client_addr,
        server_addr,
        &[0; 20]
    ));
    assert_eq!(
        pump(now, (&mut client, client_addr), (&mut server, server_addr)),
        2
    );
    match DatagramCore::poll_event(&mut client) {
        Some(StunEvent::Response(r)) => {
            assert_eq!(r.id, id);
            assert_eq!(r.mapped, Some(client_addr));
        }
        other => panic!("{other:?}"),
    }
    assert!(DatagramCore::poll_event(&mut server).is_none());
}

#[test]
fn a_turn_allocation_through_the_contract() {
    let (client_addr, server_addr) = addrs();
    let now = Instant::now();
    let mut cfg = TurnConfig::default();
    cfg.realm = "example.org".into();
    cfg.relay_ports = 50_000..=50_099;
    let mut users = StaticUsers::new("example.org");
    users.add("alice", "secret");
    let mut server =
        TurnServer::new(cfg, Box::new(users), Box::new(SeededEntropy::new(2))).unwrap();
    let config = TurnClientConfig::new(server_addr, Transport::Udp, "alice", "secret");
    let mut client = TurnClient::new(config, Box::new(SeededEntropy::new(3))).unwrap();
    client.allocate(now).unwrap();
    // The challenge round trip, then the Allocate waits for the relay socket.
    pump(now, (&mut client, client_addr), (&mut server, server_addr));
    let Some(RelayEvent::OpenRelay(relay)) = DatagramCore::poll_event(&mut server) else {
        panic!("the server asks for a relay socket");
    };
    server.handle_relay_bound(now, relay, true).unwrap();
    pump(now, (&mut client, client_addr), (&mut server, server_addr));
    match DatagramCore::poll_event(&mut client) {
        Some(TurnEvent::Allocated { relayed, .. }) => assert_eq!(relayed, vec![relay]),
        other => panic!("{other:?}"),
    }
    // A stranger's datagram is not the client's to take.
    let stranger: SocketAddr = "203.0.113.9:1".parse().unwrap();
    assert!(!DatagramCore::accepts(
        &client,
        client_addr,
        stranger,
        b"\x40\x00\x00\x00"
    ));
}

#[test]
fn two_ice_agents_connect_through_the_contract() {
    use chorus_nat::ice::{Agent, Event, IceConfig, PathKind, Role};
    let (a_addr, b_addr) = addrs();
    let mut config = IceConfig::default();
    let mut a = Agent::new(config.clone(), Box::new(SeededEntropy::new(4))).unwrap();
    config.role = Role::Controlled;
    let mut b = Agent::new(config, Box::new(SeededEntropy::new(5))).unwrap();
    a.add_host_candidate(a_addr).unwrap();
    b.add_host_candidate(b_addr).unwrap();
    let mut now = Instant::now();
    a.start_gathering(now).unwrap();
    b.start_gathering(now).unwrap();
    a.apply_remote_description(now, &b.local_description())
        .unwrap();
    b.apply_remote_description(now, &a.local_description())
        .unwrap();
    let mut connected = 0;
    for _ in 0..1000 {
        pump(now, (&mut a, a_addr), (&mut b, b_addr));
        for agent in [&mut a, &mut b] {
            while let Some(e) = DatagramCore::poll_event(agent) {
                if let Event::Connected { kind, .. } = e {
                    assert_eq!(kind, PathKind::Direct);
                    connected += 1;
                }
            }
        }
        if connected == 2 {
            break;
        }
        let next = [a.poll_timeout(), b.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        now = next.map_or(now, |t| t.max(now));
        DatagramCore::handle_timeout(&mut a, now);
        DatagramCore::handle_timeout(&mut b, now);
    }
    assert_eq!(connected, 2);
    // Data on the selected pair is the agent's; from elsewhere it is not.
    let data = a.send(b"hello"[..].into()).unwrap();
    assert!(DatagramCore::accepts(&b, b_addr, a_addr, &data.payload));
    let stranger: SocketAddr = "203.0.113.9:1".parse().unwrap();
    assert!(!DatagramCore::accepts(&b, b_addr, stranger, &data.payload));
}
