//! NAT scenarios in network namespaces (root only; skipped with the reason otherwise):
//! clients behind real Linux NATs (nftables masquerade, and fully-random masquerade as
//! a symmetric NAT) against the Chorus STUN server on a "public" namespace. The
//! discovery client must classify each NAT correctly.
#![cfg(feature = "tokio")]
#![allow(clippy::field_reassign_with_default)]

use std::net::SocketAddr;
use std::time::Duration;

use chorus_framing::SeededEntropy;
use chorus_nat::discovery::{
    Behaviour, Classic, Discovery, DiscoveryConfig, LifetimeConfig, LifetimeProbe, Report,
};
use chorus_nat::driver::{run_discovery, run_lifetime, run_server};
use chorus_nat::server::{Server, ServerConfig};

mod netns;
use netns::{NatKind, SERVER_IPS, World};

fn skip() -> bool {
    if let Some(why) = netns::unavailable() {
        // `cargo xtask test` runs as root installs the tools: then a skip is a failure.
        assert!(
            why.starts_with("not running as root")
                || std::env::var("CHORUS_REQUIRE_INTEROP").as_deref() != Ok("1"),
            "NAT scenarios cannot run: {why}"
        );
        eprintln!("skipping NAT scenario: {why}");
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
