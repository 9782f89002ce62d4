//! NAT scenarios in network namespaces (root only; skipped with the reason otherwise):
//! clients behind real Linux NATs (nftables masquerade, and fully-random masquerade as
//! a symmetric NAT) against the Chorus STUN server on a "public" namespace. The
//! discovery client must classify each NAT correctly, and two clients behind NATs must
//! connect with ICE: by hole punching where the NATs allow it (two port-restricted
//! cones), through a TURN relay in the public namespace where they do not (two
//! symmetric NATs), and through the relay over TCP when one side's UDP is blocked.
#![cfg(feature = "tokio")]
#![allow(clippy::field_reassign_with_default)]

use std::net::SocketAddr;
use std::time::Duration;

use chorus_framing::SeededEntropy;
use chorus_nat::client::Transport;
use chorus_nat::discovery::{
    Behaviour, Classic, Discovery, DiscoveryConfig, LifetimeConfig, LifetimeProbe, Report,
};
use chorus_nat::driver::{run_discovery, run_lifetime, run_server};
use chorus_nat::ice::PathKind;
use chorus_nat::server::{Server, ServerConfig};

mod netns;
use netns::{NatKind, SERVER_IPS, World};

fn skip() -> bool {
    if let Some(why) = netns::unavailable() {
        // CI runs as root with the tools installed: there, a skip is a failure.
        chorus_testkit::skip(&format!("NAT scenario: {why}"));
        return true;
    }
    false
}

/// Starts an RFC 5780 server (both IPs, ports 3478 and 3479) in the public namespace.
fn start_server(world: &World) -> tokio::task::JoinHandle<()> {
    let mut config = ServerConfig::default();
    config.primary = World::server(3478);
    config.alternate_ip = Some(SERVER_IPS[1].parse().unwrap());
    config.alternate_port = Some(3479);
    config.rate_limit = None;
    let server = Server::new(config).unwrap();
    let udp = server
        .addresses()
        .into_iter()
        .map(|a| world.public.udp(a))
        .collect();
    let tcp = vec![world.public.tcp_listener(World::server(3478))];
    tokio::spawn(async move {
        let r = run_server(server, udp, tcp).await;
        panic!("server stopped: {r:?}");
    })
}

fn quick() -> DiscoveryConfig {
    let mut config = DiscoveryConfig::default();
    config.client.rto = Duration::from_millis(100);
    config.client.max_sends = 3;
    config.client.last_wait_multiplier = 3;
    config
}

async fn discover(world: &World, site: usize, seed: u64) -> Report {
    let s = &world.sites[site];
    let local = SocketAddr::new(s.client_ip, 5000);
    let sock = s.client.udp(local);
    let mut d = Discovery::new(
        quick(),
        tokio::time::Instant::now().into_std(),
        local,
        World::server(3478),
        Box::new(SeededEntropy::new(seed)),
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(20), run_discovery(&mut d, &sock))
        .await
        .expect("discovery is bounded")
        .unwrap()
}

#[tokio::test]
async fn masquerade_is_a_port_restricted_cone_without_hairpinning() {
    if skip() {
        return;
    }
    let world = World::new(&[NatKind::Masquerade]);
    let server = start_server(&world);
    let report = discover(&world, 0, 1).await;
    assert_eq!(report.behind_nat, Some(true), "{report:?}");
    assert_eq!(
        report.mapped.map(|m| m.ip()),
        Some(world.sites[0].public_ip)
    );
    assert_eq!(report.mapping, Behaviour::EndpointIndependent, "{report:?}");
    assert_eq!(
        report.filtering,
        Behaviour::AddressAndPortDependent,
        "{report:?}"
    );
    assert_eq!(report.classic, Classic::PortRestrictedCone);
    // Linux does not loop a datagram to its own public address back to the LAN.
    assert_eq!(report.hairpinning, Some(false));
    server.abort();
}

#[tokio::test]
async fn fully_random_masquerade_is_symmetric() {
    if skip() {
        return;
    }
    let world = World::new(&[NatKind::Symmetric]);
    let server = start_server(&world);
    let report = discover(&world, 0, 2).await;
    assert_eq!(report.behind_nat, Some(true), "{report:?}");
    assert_eq!(
        report.mapping,
        Behaviour::AddressAndPortDependent,
        "{report:?}"
    );
    assert_eq!(report.classic, Classic::Symmetric);
    server.abort();
}

#[tokio::test]
async fn binding_lifetime_matches_the_routers_conntrack_timeout() {
    if skip() {
        return;
    }
    let world = World::new(&[NatKind::Masquerade]);
    let site = &world.sites[0];
    // conntrack's UDP timeouts are per namespace; the nat table loaded the module.
    site.router
        .sysctl("net.netfilter.nf_conntrack_udp_timeout=3");
    site.router
        .sysctl("net.netfilter.nf_conntrack_udp_timeout_stream=3");
    let server = start_server(&world);
    let (x, y) = (
        SocketAddr::new(site.client_ip, 6000),
        SocketAddr::new(site.client_ip, 6001),
    );
    let (sx, sy) = (site.client.udp(x), site.client.udp(y));
    let mut config = LifetimeConfig::default();
    config.client = quick().client;
    config.first = Duration::from_secs(1);
    config.max = Duration::from_secs(16);
    config.resolution = Duration::from_secs(1);
    let mut probe = LifetimeProbe::new(
        config,
        tokio::time::Instant::now().into_std(),
        (x, y),
        World::server(3478),
        Box::new(SeededEntropy::new(3)),
    )
    .unwrap();
    let lifetime =
        tokio::time::timeout(Duration::from_secs(60), run_lifetime(&mut probe, &sx, &sy))
            .await
            .expect("bounded")
            .unwrap();
    let expired = lifetime.expired_by.expect("the binding expired");
    assert!(!lifetime.server_lost, "{lifetime:?}");
    // conntrack's garbage collection may lag the timeout by a second or two.
    assert!(lifetime.at_least >= Duration::from_secs(2), "{lifetime:?}");
    assert!(expired <= Duration::from_secs(8), "{lifetime:?}");
    server.abort();
}

/// The TURN relay's port on the server's primary IP (the STUN server has 3478/3479).
const TURN_PORT: u16 = 3480;

/// The Chorus TURN server in the public namespace, relaying on the primary IP. Peers
/// in 203.0.113.0/24 (documentation space, special-purpose and so denied by default)
/// are allowed; the clients' private addresses stay denied (RFC 8656 §21.1.2), as on
/// any public relay.
fn start_turn_relay(world: &World) -> netns::NsTask {
    use chorus_nat::turn::server::{Cidr, StaticUsers};
    use chorus_nat::{TurnConfig, TurnServer};

    let ip: std::net::IpAddr = SERVER_IPS[0].parse().unwrap();
    let addr = SocketAddr::new(ip, TURN_PORT);
    let mut config = TurnConfig::default();
    config.realm = "example.org".to_owned();
    config.server_addresses = vec![addr];
    config.relay_ips = vec![ip];
    config.relay_ports = 50_000..=50_100;
    config.allowed_peers = vec![Cidr::new([203, 0, 113, 0].into(), 24).unwrap()];
    let mut users = StaticUsers::new("example.org");
    users.add("alice", "secret");
    let core = TurnServer::new(config, Box::new(users), Box::new(SeededEntropy::new(99))).unwrap();
    // Clients connect over TCP at once: return only when the server listens.
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let task = world.public.run(move || async move {
        let udp = tokio::net::UdpSocket::bind(addr).await.expect("TURN UDP");
        let tcp = tokio::net::TcpListener::bind(addr).await.expect("TURN TCP");
        let _ = ready_tx.send(());
        let r = chorus_nat::driver::turn_server::run(
            core,
            vec![udp],
            vec![tcp],
            std::future::pending(),
        )
        .await;
        panic!("TURN server stopped: {r:?}");
    });
    ready
        .recv_timeout(Duration::from_secs(10))
        .expect("TURN server listening");
    task
}

/// ICE between the clients of sites 0 and 1 (site 0 controlling), each with a host
/// socket, the STUN server for its server-reflexive candidate and, where `relays`
/// names a transport, a TURN allocation over it as its relayed candidate. Data crosses
/// both ways on the result.
async fn ice_between(world: &World, relays: [Option<Transport>; 2]) -> (PathKind, PathKind) {
    use bytes::Bytes;
    use chorus_nat::TurnClientConfig;
    use chorus_nat::driver::ice::{Signalling, connect};
    use chorus_nat::driver::turn_client::TurnHandle;
    use chorus_nat::ice::{Agent, IceConfig, Role};
    use tokio::sync::mpsc;

    let (a_tx, b_rx) = mpsc::channel(64);
    let (b_tx, a_rx) = mpsc::channel(64);
    let mut signalling = vec![
        Signalling { tx: a_tx, rx: a_rx },
        Signalling { tx: b_tx, rx: b_rx },
    ];
    let mut parties = Vec::new();
    for (i, sig) in signalling.drain(..).enumerate() {
        let site = &world.sites[i];
        let host = site.client.udp(SocketAddr::new(site.client_ip, 7000));
        let mut config = IceConfig::default();
        config.role = if i == 0 {
            Role::Controlling
        } else {
            Role::Controlled
        };
        config.stun_server = Some(World::server(3478));
        let agent = Agent::new(config, Box::new(SeededEntropy::new(10 + i as u64))).unwrap();
        let turn = SocketAddr::new(World::server(0).ip(), TURN_PORT);
        let entropy = Box::new(SeededEntropy::new(20 + i as u64));
        let handle = match relays[i] {
            Some(Transport::Udp) => {
                let sock = site.client.udp(SocketAddr::new(site.client_ip, 7001));
                let config = TurnClientConfig::new(turn, Transport::Udp, "alice", "secret");
                Some(TurnHandle::connect_udp(config, entropy, sock).await)
            }
            Some(Transport::Tcp) => {
                let stream = site.client.tcp_connect(turn);
                let config = TurnClientConfig::new(turn, Transport::Tcp, "alice", "secret");
                Some(TurnHandle::connect_tcp(config, entropy, stream).await)
            }
            None => None,
        };
        let channel = handle.map(|h| h.expect("TURN allocation").into_relay_channel().unwrap());
        parties.push((agent, vec![host], channel, sig));
    }
    let b = parties.pop().unwrap();
    let a = parties.pop().unwrap();
    let (a, b) = tokio::time::timeout(Duration::from_secs(40), async {
        tokio::join!(connect(a.0, a.1, a.2, a.3), connect(b.0, b.1, b.2, b.3))
    })
    .await
    .expect("ICE is bounded");
    let (mut a, mut b) = match (a, b) {
        (Ok(a), Ok(b)) => (a, b),
        other => panic!("ICE failed: {other:?}"),
    };
    tokio::time::timeout(Duration::from_secs(10), async {
        a.send(Bytes::from_static(&[0x80, 1])).await.unwrap();
        assert_eq!(b.recv().await.unwrap(), Bytes::from_static(&[0x80, 1]));
        b.send(Bytes::from_static(&[0x80, 2])).await.unwrap();
        assert_eq!(a.recv().await.unwrap(), Bytes::from_static(&[0x80, 2]));
    })
    .await
    .expect("data crosses the selected path");
    (a.kind(), b.kind())
}

#[tokio::test]
async fn two_port_restricted_cones_connect_by_hole_punching() {
    if skip() {
        return;
    }
    let world = World::new(&[NatKind::Masquerade, NatKind::Masquerade]);
    let server = start_server(&world);
    let kinds = ice_between(&world, [None, None]).await;
    assert_eq!(kinds, (PathKind::HolePunched, PathKind::HolePunched));
    server.abort();
}

#[tokio::test]
async fn two_symmetric_nats_connect_through_the_relay() {
    if skip() {
        return;
    }
    let world = World::new(&[NatKind::Symmetric, NatKind::Symmetric]);
    let server = start_server(&world);
    let _relay = start_turn_relay(&world);
    let kinds = ice_between(&world, [Some(Transport::Udp), Some(Transport::Udp)]).await;
    assert_eq!(kinds, (PathKind::Relayed, PathKind::Relayed));
    server.abort();
}

#[tokio::test]
async fn udp_blocked_reports_tcp_reachability() {
    if skip() {
        return;
    }
    let world = World::new(&[NatKind::UdpBlocked]);
    let server = start_server(&world);
    // The TCP probe opens its own connection: run the whole discovery inside the
    // client's namespace.
    let site = &world.sites[0];
    let local = SocketAddr::new(site.client_ip, 5000);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _task = site.client.run(move || async move {
        let sock = tokio::net::UdpSocket::bind(local).await.unwrap();
        let mut d = Discovery::new(
            quick(),
            tokio::time::Instant::now().into_std(),
            local,
            World::server(3478),
            Box::new(SeededEntropy::new(4)),
        )
        .unwrap();
        let _ = tx.send(run_discovery(&mut d, &sock).await.unwrap());
    });
    let report = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("bounded")
        .unwrap();
    assert_eq!(report.classic, Classic::UdpBlocked, "{report:?}");
    let tcp = report
        .tcp_mapped
        .expect("the STUN server is reachable over TCP");
    assert_eq!(tcp.ip(), site.public_ip);
    server.abort();
}

#[tokio::test]
async fn a_udp_blocked_client_connects_through_the_relay_over_tcp() {
    if skip() {
        return;
    }
    // Site 0 forwards no UDP: its only way out is TURN over TCP.
    let world = World::new(&[NatKind::UdpBlocked, NatKind::Masquerade]);
    let server = start_server(&world);
    let _relay = start_turn_relay(&world);
    let kinds = ice_between(&world, [Some(Transport::Tcp), None]).await;
    assert_eq!(kinds, (PathKind::RelayedTcp, PathKind::RelayedTcp));
    server.abort();
}
