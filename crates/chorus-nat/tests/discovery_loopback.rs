//! The discovery drivers on loopback against the Chorus server: the TCP reachability
//! probe when UDP is blocked, and the RFC 5780 §4.6 binding lifetime probe (no NAT on
//! loopback, so bindings never expire within the probe's maximum).
#![cfg(feature = "tokio")]
#![allow(clippy::field_reassign_with_default)]

use std::net::SocketAddr;
use std::time::Duration;

use chorus_framing::SeededEntropy;
use chorus_nat::discovery::{Classic, Discovery, DiscoveryConfig, LifetimeConfig, LifetimeProbe};
use chorus_nat::driver::{run_discovery, run_lifetime, run_server};
use chorus_nat::server::{Server, ServerConfig};
use tokio::net::{TcpListener, UdpSocket};

fn quick() -> DiscoveryConfig {
    let mut config = DiscoveryConfig::default();
    config.client.rto = Duration::from_millis(50);
    config.client.max_sends = 2;
    config.client.last_wait_multiplier = 2;
    config
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

#[tokio::test]
async fn udp_blocked_falls_back_to_a_tcp_probe() {
    // A UDP socket that never answers (a firewall dropping UDP), and the server's TCP
    // listener on the same port.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = silent.local_addr().unwrap();
    let listener = TcpListener::bind(server_addr).await.unwrap();
    let mut config = ServerConfig::default();
    config.primary = server_addr;
    let server = tokio::spawn(run_server(
        Server::new(config).unwrap(),
        vec![],
        vec![listener],
    ));

    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = sock.local_addr().unwrap();
    let mut d = Discovery::new(
        quick(),
        now(),
        local,
        server_addr,
        Box::new(SeededEntropy::new(1)),
    )
    .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(10), run_discovery(&mut d, &sock))
        .await
        .expect("bounded")
        .unwrap();
    assert_eq!(report.classic, Classic::UdpBlocked);
    let tcp = report.tcp_mapped.expect("reachable over TCP");
    assert_eq!(tcp.ip(), local.ip());
    server.abort();
    drop(silent);
}

#[tokio::test]
async fn udp_and_tcp_blocked_reports_neither() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr: SocketAddr = silent.local_addr().unwrap();
    // No TCP listener on that port: the connection is refused.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = sock.local_addr().unwrap();
    let mut d = Discovery::new(
        quick(),
        now(),
        local,
        server_addr,
        Box::new(SeededEntropy::new(2)),
    )
    .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(10), run_discovery(&mut d, &sock))
        .await
        .expect("bounded")
        .unwrap();
    assert_eq!(report.classic, Classic::UdpBlocked);
    assert_eq!(report.tcp_mapped, None);
}

#[tokio::test]
async fn lifetime_probe_sees_no_expiry_without_a_nat() {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = udp.local_addr().unwrap();
    let mut config = ServerConfig::default();
    config.primary = server_addr;
    let server = tokio::spawn(run_server(Server::new(config).unwrap(), vec![udp], vec![]));

    let x = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let y = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut lc = LifetimeConfig::default();
    lc.client = quick().client;
    lc.first = Duration::from_millis(100);
    lc.max = Duration::from_millis(400);
    let mut probe = LifetimeProbe::new(
        lc,
        now(),
        (x.local_addr().unwrap(), y.local_addr().unwrap()),
        server_addr,
        Box::new(SeededEntropy::new(3)),
    )
    .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), run_lifetime(&mut probe, &x, &y))
        .await
        .expect("bounded")
        .unwrap();
    // RESPONSE-PORT delivered every check to X: alive at 100, 200 and 400 ms.
    assert_eq!(result.expired_by, None, "{result:?}");
    assert_eq!(result.at_least, Duration::from_millis(400));
    assert!(!result.server_lost);
    server.abort();
}
