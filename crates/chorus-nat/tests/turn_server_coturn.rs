//! Interoperability of the Chorus TURN server (core + tokio driver) with coturn's TURN
//! client `turnutils_uclient` (Debian package `coturn`), on loopback: long-term
//! credentials, allocations with EVEN-PORT reservations (uclient's RTP/RTCP pairs),
//! permissions, channels and Send/Data indications, over UDP and over TCP. The peer
//! is coturn's `turnutils_peer`, a UDP echo server; uclient counts the echoes.
//!
//! Without coturn the tests print why they skip, unless `CHORUS_REQUIRE_INTEROP=1`.
//! Every process started here is killed by a drop guard; every wait is bounded.
#![cfg(feature = "tokio")]
#![allow(clippy::field_reassign_with_default)]

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chorus_crypto::SystemEntropy;
use chorus_nat::driver::turn_server;
use chorus_nat::turn::server::StaticUsers;
use chorus_nat::{TurnConfig, TurnServer};
use tokio::net::{TcpListener, UdpSocket};

mod support;
use support::{Guard, ServerThread, TempDir, free_port, have};

/// Runs the Chorus TURN server on 127.0.0.1:`port` (UDP and TCP, or UDP only through
/// the batched driver) on its own thread and runtime while the test blocks on child
/// processes.
/// Returns it and the port it bound: it binds its own (a port checked free and then
/// bound by the server can be taken in between by a parallel test), retrying on
/// `AddrInUse`.
fn spawn_chorus_turn(relay_ips: Vec<std::net::IpAddr>, batched: bool) -> (ServerThread, u16) {
    ServerThread::spawn_with(move |ready| async move {
        let (udp, tcp, bind) = bind_free(batched).await;
        let mut config = TurnConfig::default();
        config.realm = "example.org".into();
        config.relay_ips = relay_ips;
        // Above Linux's ephemeral range, so other tests' sockets do not collide, and a
        // range of its own per server of this binary: servers of parallel tests
        // drawing from one range can pick the same port, and the core answers a
        // relay port it cannot bind with 508 rather than trying another.
        config.relay_ports = relay_range();
        config.server_addresses = vec![bind];
        config.allow_loopback_peers = true;
        // uclient picks channel numbers from RFC 5766's 0x4000-0x7FFF.
        config.rfc5766_channels = true;
        config.max_allocations_per_user = 100;
        let mut users = StaticUsers::new("example.org");
        users.add("alice", "secret");
        let core =
            TurnServer::new(config, Box::new(users), Box::new(SystemEntropy::new())).unwrap();
        ready.send(bind.port()).unwrap();
        let r = if batched {
            let config = chorus_framing::runtime::SocketConfig::default();
            turn_server::run_batched(core, vec![udp], config).await
        } else {
            turn_server::run(core, vec![udp], tcp, std::future::pending()).await
        };
        panic!("TURN server stopped: {r:?}");
    })
}

/// 200 relay ports of 61000-64999 for the next server of this test binary.
fn relay_range() -> std::ops::RangeInclusive<u16> {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 61_000 + NEXT.fetch_add(1, Ordering::Relaxed) % 20 * 200;
    start..=start + 199
}

/// A UDP socket (and, unless `udp_only`, a TCP listener) on one free port of
/// 127.0.0.1, retried on `AddrInUse` (at most 50 ports).
async fn bind_free(udp_only: bool) -> (UdpSocket, Vec<TcpListener>, SocketAddr) {
    for _ in 0..50 {
        let bind: SocketAddr = ([127, 0, 0, 1], free_port("127.0.0.1")).into();
        let Ok(udp) = UdpSocket::bind(bind).await else {
            continue;
        };
        if udp_only {
            return (udp, Vec::new(), bind);
        }
        if let Ok(tcp) = TcpListener::bind(bind).await {
            return (udp, vec![tcp], bind);
        }
    }
    panic!("no free port on 127.0.0.1 after 50 tries");
}

/// Starts `turnutils_peer` (a UDP echo server) on 127.0.0.1:`port` and waits, bounded,
/// until it echoes.
fn start_peer(ip: &str, port: u16) -> Guard {
    let guard = Guard(
        Command::new("turnutils_peer")
            .args(["-L", ip, "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_peer starts"),
    );
    let probe = StdUdpSocket::bind((ip, 0)).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 16];
    loop {
        probe.send_to(b"ping", (ip, port)).unwrap();
        if probe.recv_from(&mut buf).is_ok() {
            return guard;
        }
        assert!(Instant::now() < deadline, "turnutils_peer never echoed");
    }
}

/// Runs `turnutils_uclient` with `args`, bounded to 60 s; returns its exit success and
/// its output.
fn uclient(args: &[&str]) -> (bool, String) {
    let dir = TempDir::new(&format!(
        "uclient-{}",
        args.join("_").replace(['.', '-'], "")
    ));
    let out_path = dir.path().join("out.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let err = out.try_clone().unwrap();
    let mut guard = Guard(
        Command::new("turnutils_uclient")
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("turnutils_uclient starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = guard.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "turnutils_uclient did not finish:\n{}",
            std::fs::read_to_string(&out_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.success(),
        std::fs::read_to_string(&out_path).unwrap(),
    )
}

/// The totals of uclient's summary line `tot_send_msgs=N, tot_recv_msgs=M`.
fn totals(text: &str) -> Option<(u64, u64)> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("tot_send_msgs=") && !l.contains("msz="))?;
    let num = |key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((num("tot_send_msgs=")?, num("tot_recv_msgs=")?))
}

/// Relays through the Chorus server with uclient's `extra` flags and checks that every
/// message came back from the echo peer.
fn relay_round_trip(extra: &[&str]) {
    relay_round_trip_via("127.0.0.1", extra, false);
}

/// As [`relay_round_trip`], with the peer (and a relay address of its family) on
/// `peer_ip`.
fn relay_round_trip_via(peer_ip: &str, extra: &[&str], batched: bool) {
    if !have("turnutils_uclient") || !have("turnutils_peer") {
        return;
    }
    let peer_port = free_port(peer_ip);
    let _peer = start_peer(peer_ip, peer_port);
    let mut relay_ips = vec![[127, 0, 0, 1].into()];
    if peer_ip != "127.0.0.1" {
        relay_ips.push(peer_ip.parse().unwrap());
    }
    let (server, port) = spawn_chorus_turn(relay_ips, batched);
    let port_s = port.to_string();
    let peer_s = peer_port.to_string();
    let mut args = vec![
        "-u", "alice", "-w", "secret", "-e", peer_ip, "-r", &peer_s, "-p", &port_s, "-n", "10",
    ];
    args.extend_from_slice(extra);
    args.push("127.0.0.1");
    let (ok, text) = uclient(&args);
    server.stop();
    assert!(ok, "uclient failed:\n{text}");
    let (sent, received) = totals(&text).unwrap_or_else(|| panic!("no totals:\n{text}"));
    assert!(sent >= 10, "{text}");
    assert_eq!(sent, received, "{text}");
    assert!(text.contains("Total lost packets 0 ("), "{text}");
}

#[test]
fn coturn_uclient_relays_through_chorus_over_udp_with_channels() {
    relay_round_trip(&[]);
}

#[test]
fn coturn_uclient_relays_through_chorus_over_udp_with_send_indications() {
    relay_round_trip(&["-s"]);
}

#[test]
fn coturn_uclient_relays_through_chorus_over_tcp_with_padded_channel_data() {
    // -D: uclient pads its own ChannelData too (mandatory over TCP).
    relay_round_trip(&["-t", "-D"]);
}

#[test]
fn coturn_uclient_relays_through_chorus_over_tcp_with_send_indications() {
    relay_round_trip(&["-t", "-s"]);
}

#[test]
fn coturn_uclient_relays_through_an_ipv6_relayed_address() {
    // -x: REQUESTED-ADDRESS-FAMILY IPv6; the peer is on ::1. Skipped where the
    // loopback interface has no IPv6.
    if StdUdpSocket::bind("[::1]:0").is_err() {
        chorus_testkit::skip("no IPv6 loopback (::1)");
        return;
    }
    relay_round_trip_via("::1", &["-x"], false);
}

#[test]
fn coturn_uclient_relays_through_the_batched_driver() {
    // recvmmsg/sendmmsg/GSO on the listening socket and every relay socket.
    relay_round_trip_via("127.0.0.1", &[], true);
    relay_round_trip_via("127.0.0.1", &["-s"], true);
}

#[test]
fn coturn_uclient_with_a_wrong_password_is_refused() {
    if !have("turnutils_uclient") {
        return;
    }
    let (server, port) = spawn_chorus_turn(vec![[127, 0, 0, 1].into()], false);
    let port_s = port.to_string();
    let (ok, text) = uclient(&[
        "-u",
        "alice",
        "-w",
        "wrong",
        "-e",
        "127.0.0.1",
        "-r",
        "9",
        "-p",
        &port_s,
        "-n",
        "1",
        "127.0.0.1",
    ]);
    server.stop();
    assert!(!ok, "{text}");
    assert!(text.contains("Cannot complete Allocation"), "{text}");
    assert!(totals(&text).is_none_or(|(_, r)| r == 0), "{text}");
}
