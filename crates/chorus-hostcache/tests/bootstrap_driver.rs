//! The tokio driver on loopback, with tokio's paused clock: a UDP super node that
//! answers, a TCP-only super node, and nothing at all.
#![cfg(feature = "tokio")]

use std::net::SocketAddr;
use std::time::Duration;

use chorus_framing::SeededEntropy;
use chorus_hostcache::bootstrap::{
    Bootstrap, BootstrapConfig, Outcome, Transport, Unreachable, probe_reply,
};
use chorus_hostcache::driver::{DriverError, bootstrap};
use tokio::net::{TcpListener, UdpSocket};

fn core() -> Bootstrap {
    Bootstrap::new(BootstrapConfig::default(), Box::new(SeededEntropy::new(5))).unwrap()
}

async fn udp_super_node() -> SocketAddr {
    let node = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = node.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 256];
        while let Ok((n, from)) = node.recv_from(&mut buf).await {
            if let Some(reply) = probe_reply(&buf[..n]) {
                let _ = node.send_to(&reply, from).await;
            }
        }
    });
    addr
}

/// A bound UDP socket that never answers (kept alive by the returned value).
async fn silent_udp() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

#[tokio::test(start_paused = true)]
async fn a_loopback_super_node_answers_the_udp_probe() {
    let (_silent, dead) = silent_udp().await;
    let live = udp_super_node().await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let report = bootstrap(core(), &socket, vec![dead, live], vec![])
        .await
        .unwrap();
    assert_eq!((report.addr, report.transport), (live, Transport::Udp));
    assert!(report.tcp.is_none());
    assert!(
        report.attempts.iter().any(|(a, t, o)| *a == live
            && *t == Transport::Udp
            && matches!(o, Outcome::Answered(_)))
    );
}

#[tokio::test(start_paused = true)]
async fn a_tcp_only_super_node_is_reached_after_the_probe_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _silent = UdpSocket::bind(addr).await.unwrap(); // same port, never answers
    tokio::spawn(async move {
        let _kept = listener.accept().await;
        std::future::pending::<()>().await;
    });
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let start = tokio::time::Instant::now();
    let report = bootstrap(core(), &socket, vec![addr], vec![])
        .await
        .unwrap();
    assert_eq!((report.addr, report.transport), (addr, Transport::Tcp));
    assert!(report.tcp.is_some(), "the driver hands over the connection");
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "UDP was given its timeout first"
    );
}

#[tokio::test(start_paused = true)]
async fn the_bootstrap_list_is_used_when_the_cache_is_dead() {
    let (_silent, dead) = silent_udp().await;
    let seed = udp_super_node().await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let report = bootstrap(core(), &socket, vec![dead], vec![seed])
        .await
        .unwrap();
    assert_eq!(report.addr, seed);
}

#[tokio::test(start_paused = true)]
async fn nothing_answering_is_reported_as_unreachable_after_every_round() {
    let (_silent, dead) = silent_udp().await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let start = tokio::time::Instant::now();
    let err = bootstrap(core(), &socket, vec![dead], vec![])
        .await
        .unwrap_err();
    let DriverError::Core(e) = &err else {
        panic!("{err}")
    };
    let report = e
        .downcast_ref::<Unreachable>()
        .expect("the unreachable report");
    assert_eq!(report.rounds, 3);
    assert_eq!(report.tried.len(), 2, "UDP and TCP to the one node");
    assert!(e.to_string().starts_with("network unreachable"));
    // Three rounds of at least the 2 s probe timeout, with 6 s pauses between them.
    assert!(start.elapsed() >= Duration::from_secs(12 + 3 * 2));
}
