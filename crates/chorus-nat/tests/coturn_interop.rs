//! Interoperability with coturn, an independent STUN/TURN implementation (Debian
//! package `coturn`), on loopback:
//! - the Chorus STUN client (tokio driver) against coturn's `turnserver`;
//! - coturn's `turnutils_stunclient` against the Chorus STUN server, plain and with
//!   RFC 5780 (two loopback IPs, two ports);
//! - the Chorus RFC 5780 discovery client against `turnserver`, and coturn's
//!   `turnutils_natdiscovery` against the Chorus server.
//!
//! Without coturn the tests print why they skip, unless `CHORUS_REQUIRE_INTEROP=1`
//! (set by `cargo xtask test` and CI), which makes them fail naming the package.
//! Every process started here is killed by a drop guard; every wait is bounded.
#![cfg(feature = "tokio")]
#![allow(clippy::field_reassign_with_default)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chorus_framing::SeededEntropy;
use chorus_nat::client::{Client, ClientConfig, Event};
use chorus_nat::discovery::{Behaviour, Classic, Discovery, DiscoveryConfig};
use chorus_nat::driver::{run_client, run_discovery, run_server};
use chorus_nat::server::{Server, ServerConfig};
use tokio::net::{TcpListener, UdpSocket};

mod support;
use support::{Guard, ServerThread, TempDir, free_port, free_rfc5780_ports, have};

/// Starts `turnserver` on 127.0.0.1:`port` (plus 127.0.0.2 and `alt_port` for RFC
/// 5780) with a temporary configuration file.
fn start_turnserver(dir: &TempDir, port: u16, alt_port: u16) -> Guard {
    let conf = dir.path().join("turnserver.conf");
    let log = dir.path().join("turnserver.log");
    let pid = dir.path().join("turnserver.pid");
    std::fs::write(
        &conf,
        format!(
            "listening-ip=127.0.0.1\nlistening-ip=127.0.0.2\nlistening-port={port}\n\
             alt-listening-port={alt_port}\nrelay-ip=127.0.0.1\nno-tls\nno-dtls\nno-cli\n\
             no-auth\nstun-only\nsimple-log\nlog-file={}\npidfile={}\n\
             userdb={}\n",
            log.display(),
            pid.display(),
            dir.path().join("turndb").display()
        ),
    )
    .unwrap();
    let child = Command::new("turnserver")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnserver starts");
    Guard(child)
}

fn quick_client(seed: u64) -> Client {
    let mut cfg = ClientConfig::default();
    cfg.rto = Duration::from_millis(100);
    cfg.max_sends = 3;
    cfg.last_wait_multiplier = 2;
    Client::new(cfg, Box::new(SeededEntropy::new(seed))).unwrap()
}

#[tokio::test]
async fn chorus_client_learns_its_mapped_address_from_coturn() {
    if !have("turnserver") {
        return;
    }
    let dir = TempDir::new("client");
    let (port, alt) = free_rfc5780_ports();
    let _server = start_turnserver(&dir, port, alt);
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Bounded polling until coturn answers (it takes a moment to bind).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seed = 0;
    let response = loop {
        seed += 1;
        let mut client = quick_client(seed);
        client
            .start_binding(tokio::time::Instant::now().into_std(), server)
            .unwrap();
        let events = run_client(&mut client, &sock).await.unwrap();
        if let [Event::Response(r)] = events.as_slice() {
            break r.clone();
        }
        let log = std::fs::read_to_string(dir.path().join("turnserver.log")).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "coturn never answered; its log:\n{log}"
        );
    };
    assert_eq!(response.mapped, Some(sock.local_addr().unwrap()));
    assert_eq!(response.from, server);
    // coturn is an RFC 5780 server here: it names its other address.
    assert_eq!(response.other_address, Some(([127, 0, 0, 2], alt).into()));
}

/// Runs the Chorus server on its own thread and runtime while the test blocks on a
/// child process.
fn spawn_chorus_server(config: ServerConfig) -> ServerThread {
    ServerThread::spawn(move |ready| async move {
        let server = Server::new(config.clone()).unwrap();
        let mut udp = Vec::new();
        for a in server.addresses() {
            udp.push(UdpSocket::bind(a).await.unwrap());
        }
        let tcp = vec![TcpListener::bind(config.primary).await.unwrap()];
        ready.send(()).unwrap();
        let r = run_server(server, udp, tcp).await;
        panic!("server stopped: {r:?}");
    })
}

/// Runs `turnutils_stunclient` with `args`, bounded to 20 s, and returns its stdout.
fn stunclient(args: &[String]) -> String {
    run_tool("turnutils_stunclient", args)
}

/// Runs a coturn tool with `args`, bounded to 20 s, and returns its stdout.
fn run_tool(tool: &str, args: &[String]) -> String {
    let dir = TempDir::new(&format!(
        "{tool}-{}",
        args.join("_").replace(['.', ':'], "-")
    ));
    let out_path = dir.path().join("out.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut guard = Guard(
        Command::new(tool)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("the coturn tool starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = guard.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "turnutils_stunclient did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&out_path).unwrap();
    assert!(status.success(), "{tool} failed:\n{text}");
    text
}

#[test]
fn coturn_stunclient_gets_its_reflexive_address_from_the_chorus_server() {
    if !have("turnutils_stunclient") {
        return;
    }
    let port = free_port("127.0.0.1");
    let mut config = ServerConfig::default();
    config.primary = ([127, 0, 0, 1], port).into();
    let server = spawn_chorus_server(config);
    let text = stunclient(&["-p".into(), port.to_string(), "127.0.0.1".into()]);
    server.stop();
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "{text}");
}

#[test]
fn coturn_stunclient_sees_rfc5780_change_request_answered_from_the_other_address() {
    if !have("turnutils_stunclient") {
        return;
    }
    let (port, alt) = free_rfc5780_ports();
    let mut config = ServerConfig::default();
    config.primary = ([127, 0, 0, 1], port).into();
    config.alternate_ip = Some([127, 0, 0, 2].into());
    config.alternate_port = Some(alt);
    let server = spawn_chorus_server(config);
    let text = stunclient(&[
        "-f".into(),
        "-p".into(),
        port.to_string(),
        "127.0.0.1".into(),
    ]);
    server.stop();
    let other = format!("127.0.0.2:{alt}");
    assert!(text.contains(&format!("Other addr: : {other}")), "{text}");
    // Its second request asks for a change of IP and port: answered from 127.0.0.2:alt.
    assert!(
        text.contains(&format!("Response origin: : {other}")),
        "{text}"
    );
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "{text}");
}

#[tokio::test]
async fn chorus_discovery_classifies_loopback_as_open_internet_against_coturn() {
    if !have("turnserver") {
        return;
    }
    let dir = TempDir::new("discovery");
    let (port, alt) = free_rfc5780_ports();
    let _server = start_turnserver(&dir, port, alt);
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Wait (bounded) until coturn answers a plain Binding request.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seed = 100;
    loop {
        seed += 1;
        let mut client = quick_client(seed);
        client
            .start_binding(tokio::time::Instant::now().into_std(), server)
            .unwrap();
        if let [Event::Response(_)] = run_client(&mut client, &sock).await.unwrap().as_slice() {
            break;
        }
        assert!(Instant::now() < deadline, "coturn never answered");
    }
    let local = sock.local_addr().unwrap();
    let mut d = Discovery::new(
        DiscoveryConfig::default(),
        tokio::time::Instant::now().into_std(),
        local,
        server,
        Box::new(SeededEntropy::new(7)),
    )
    .unwrap();
    let report = run_discovery(&mut d, &sock).await.unwrap();
    assert_eq!(report.mapped, Some(local));
    assert_eq!(report.behind_nat, Some(false));
    assert_eq!(
        report.filtering,
        Behaviour::EndpointIndependent,
        "{report:?}"
    );
    assert_eq!(report.classic, Classic::OpenInternet, "{report:?}");
}

#[test]
fn coturn_natdiscovery_finds_endpoint_independent_behaviour_at_the_chorus_server() {
    if !have("turnutils_natdiscovery") {
        return;
    }
    let (port, alt) = free_rfc5780_ports();
    let mut config = ServerConfig::default();
    config.primary = ([127, 0, 0, 1], port).into();
    config.alternate_ip = Some([127, 0, 0, 2].into());
    config.alternate_port = Some(alt);
    let server = spawn_chorus_server(config);
    let text = run_tool(
        "turnutils_natdiscovery",
        &[
            "-m".into(),
            "-f".into(),
            "-p".into(),
            port.to_string(),
            "127.0.0.1".into(),
        ],
    );
    server.stop();
    assert!(text.contains("Endpoint Independent Mapping"), "{text}");
    assert!(text.contains("Endpoint Independent Filtering"), "{text}");
}
